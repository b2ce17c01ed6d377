"""`invoke package mesos` for real, in the test session's own cache: a Debian 12 build root made
with mmdebstrap, the recipe's prebuilt installed tree (Apache Mesos 1.11.x compiled from the same
source and patches) packaged into a .deb whose dependencies package.sh checked, the programs run
from the package, and a second call that does nothing. Compiling from source takes an hour here:
that is run by hand and reported, not in this suite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kiln.config.load import load_config
from kiln.errors import UserError
from kiln.packages import build, recipe
from kiln.paths import REPO_ROOT, Paths

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="mmdebstrap and the build root's namespaces need root"),
    pytest.mark.skipif(shutil.which("mmdebstrap") is None, reason="mmdebstrap is not installed"),
]


def _prebuilt() -> Path:
    try:
        return recipe.prebuilt(recipe.load(REPO_ROOT / "components" / "mesos"), REPO_ROOT, "debian-12").path
    except UserError as exc:
        pytest.skip(f"no prebuilt Mesos tree on this machine: {exc}")


@pytest.fixture(scope="module")
def packaged() -> tuple[build.Built, float]:
    _prebuilt()
    config = load_config(Paths(REPO_ROOT), sets=["components.mesos.build.tree=prebuilt"])
    started = time.monotonic()
    made = build.ensure(config.data, Paths(REPO_ROOT), "mesos", "debian-12", say=print)
    return made, time.monotonic() - started


def _field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_the_package_holds_the_daemons_units_and_wrapper(packaged: tuple[build.Built, float]) -> None:
    made, seconds = packaged
    print(f"build root + package: {seconds:.0f}s, {made.meta['size'] / 2**20:.1f} MiB")
    deb = made.path
    assert _field(deb, "Package") == "mesos"
    assert _field(deb, "Version") == "1.11.1-1+kiln.debian12.prebuilt"
    depends = _field(deb, "Depends")
    for library in ("libgrpc++1.51", "libprotobuf32", "libzookeeper-mt2", "libsvn1", "libcurl4"):
        assert library in depends
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    for path in ("./usr/local/sbin/mesos-master", "./usr/local/sbin/mesos-agent",
                 "./usr/local/bin/mesos-execute", "./usr/local/lib/libmesos-1.11.1.so",
                 "./lib/systemd/system/mesos-master.service", "./lib/systemd/system/mesos-agent.service",
                 "./usr/local/libexec/kiln/mesos-init-wrapper", "./usr/local/libexec/mesos/mesos-executor"):
        assert path in listing, path
    assert made.meta["files"] and made.meta["tree"]["origin"].startswith("prebuilt ")
    assert made.meta["sha256"] == recipe.sha256_file(deb)


def test_the_packaged_programs_run(packaged: tuple[build.Built, float], tmp_path: Path) -> None:
    made, _ = packaged
    subprocess.run(["dpkg-deb", "-x", str(made.path), str(tmp_path)], check=True)
    env = {**os.environ, "LD_LIBRARY_PATH": str(tmp_path / "usr/local/lib")}
    for program, flag, says in (("sbin/mesos-master", "--version", "mesos 1.11.1"),
                                ("sbin/mesos-agent", "--version", "mesos 1.11.1"),
                                ("bin/mesos-execute", "--help", "Usage: mesos-execute")):
        out = subprocess.run([str(tmp_path / "usr/local" / program), flag], capture_output=True,
                             text=True, env=env, timeout=60)
        if "error while loading shared libraries" in out.stderr:
            pytest.skip(f"this host lacks Mesos's runtime libraries ({out.stderr.strip()}); "
                        "scripts/setup installs them")
        assert out.returncode == 0 and says in out.stdout + out.stderr, out.stdout + out.stderr
    unit = (tmp_path / "lib/systemd/system/mesos-agent.service").read_text()
    assert "ExecStart=/usr/local/libexec/kiln/mesos-init-wrapper agent" in unit


def test_a_second_call_is_a_no_op(packaged: tuple[build.Built, float]) -> None:
    made, _ = packaged
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(REPO_ROOT), "package",
                           "mesos", "--set", "components.mesos.build.tree=prebuilt"], capture_output=True,
                          text=True, cwd=REPO_ROOT, timeout=600)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert f"{made.path} (cached;" in done.stdout
    print(f"second invoke package mesos: {seconds:.1f}s")


def test_the_init_wrapper_turns_flag_files_into_flags(packaged: tuple[build.Built, float],
                                                      tmp_path: Path) -> None:
    """The wrapper the units start (the daemon itself is replaced by a printer of its arguments,
    in a copy of the wrapper: what is tested is how flag files become a command line)."""
    made, _ = packaged
    subprocess.run(["dpkg-deb", "-x", str(made.path), str(tmp_path / "pkg")], check=True)
    wrapper = (tmp_path / "pkg/usr/local/libexec/kiln/mesos-init-wrapper").read_text()
    etc = tmp_path / "etc"
    for d in ("mesos", "mesos-master"):
        (etc / d).mkdir(parents=True)
    (etc / "mesos/zk").write_text("zk://10.0.0.1:2181/mesos\n")
    (etc / "mesos-master/quorum").write_text("2\n")
    (etc / "mesos-master/work_dir").write_text("/var/lib/mesos/master\n")
    (etc / "mesos-master/notes.txt").write_text("ignored\n")
    printer = tmp_path / "sbin/mesos-master"
    printer.parent.mkdir()
    printer.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    printer.chmod(0o755)
    script = tmp_path / "wrapper"
    script.write_text(wrapper.replace("/usr/local/sbin", str(tmp_path / "sbin")).replace("/etc/", f"{etc}/"))
    out = subprocess.run(["sh", str(script), "master"], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["--zk=zk://10.0.0.1:2181/mesos", "--quorum=2",
                                "--work_dir=/var/lib/mesos/master"]
    refused = subprocess.run(["sh", str(script), "both"], capture_output=True, text=True)
    assert refused.returncode == 64 and "usage" in refused.stderr
