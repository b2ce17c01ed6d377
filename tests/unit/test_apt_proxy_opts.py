"""provision/lib.sh gives apt kiln's package cache per host: the hosts of the base's sources
(KILN_APT_PROXY_HOSTS) go through it, every other repository is fetched directly."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from kiln.paths import REPO_ROOT

LIB = REPO_ROOT / "provision" / "lib.sh"
ENV = ("KILN_TARGET=debian-12\nKILN_DISTRO=debian\nKILN_RELEASE=12\nKILN_CODENAME=bookworm\n"
       "KILN_FAMILY=apt\n")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="provision/lib.sh refuses to run as non-root")


def _proxy_opts(tmp_path: Path, extra: str, proxy: str) -> str:
    env_file = tmp_path / "kiln.env"
    env_file.write_text(ENV + extra)
    done = subprocess.run(["bash", "-c", f". {LIB}; printf '%s\\n' \"${{_KILN_APT_PROXY_OPTS[@]}}\""],
                          env={"PATH": os.environ["PATH"], "KILN_ENV": str(env_file),
                               "KILN_APT_PROXY": proxy},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_only_the_listed_hosts_go_through_the_cache(tmp_path: Path) -> None:
    out = _proxy_opts(tmp_path, "KILN_APT_PROXY_HOSTS='deb.debian.org mirror.example'\n", "http://10.0.2.2:3142/")
    assert out.splitlines() == ["-o", "Acquire::http::Proxy::deb.debian.org=http://10.0.2.2:3142/",
                                "-o", "Acquire::http::Proxy::mirror.example=http://10.0.2.2:3142/"]


def test_without_a_host_list_every_host_goes_through_it(tmp_path: Path) -> None:
    assert _proxy_opts(tmp_path, "", "http://10.0.2.2:3142/").splitlines() == [
        "-o", "Acquire::http::Proxy=http://10.0.2.2:3142/"]


def test_without_a_cache_apt_gets_no_proxy(tmp_path: Path) -> None:
    assert _proxy_opts(tmp_path, "KILN_APT_PROXY_HOSTS=deb.debian.org\n", "") == "\n"
