"""The offline debian-12 base image: built with mmdebstrap from Debian's mirror, cached by
fingerprint, and booted under QEMU (the probed accelerator) to prove Packer can use it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kiln import accel
from kiln.base import build_base, fingerprint
from kiln.config import load_config
from kiln.keys import ensure_build_key
from kiln.paths import REPO_ROOT, Paths
from kiln.vm import booted

pytestmark = [pytest.mark.vm, pytest.mark.slow,
              pytest.mark.skipif(shutil.which("mmdebstrap") is None,
                                 reason="mmdebstrap not installed (scripts/setup installs it)")]


@pytest.fixture(scope="module")
def base_image():
    # The repository's build/ is used on purpose: the image is cached there for builds and CI.
    paths = Paths(root=REPO_ROOT)
    cfg = load_config(paths)
    target = cfg["targets"]["debian-12"]
    first = build_base("debian-12", target, paths.build, log=paths.logs / "base-debian-12.log")
    print("base image stages:", first.seconds or "cached")
    return paths, target, first


def test_second_call_is_served_from_the_cache(base_image) -> None:
    paths, target, first = base_image
    again = build_base("debian-12", target, paths.build)
    assert again.cached
    assert again.path == first.path
    assert again.fingerprint == first.fingerprint


def test_fingerprint_follows_its_inputs() -> None:
    a = fingerprint("bookworm", "http://deb.debian.org/debian", "kiln", "ssh-ed25519 AAAA k")
    assert a == fingerprint("bookworm", "http://deb.debian.org/debian", "kiln", "ssh-ed25519 AAAA k")
    assert a != fingerprint("trixie", "http://deb.debian.org/debian", "kiln", "ssh-ed25519 AAAA k")
    assert a != fingerprint("bookworm", "http://deb.debian.org/debian", "kiln", "ssh-ed25519 BBBB k")


def test_image_boots_and_lets_the_build_user_in(base_image, tmp_path: Path) -> None:
    paths, target, first = base_image
    verdict = accel.probe(paths.cache)
    key = ensure_build_key(paths.build)
    with booted(first.path, tmp_path, key=key, user=target["ssh_username"], accel=verdict.accel,
                name="base-test", memory_mb=1024, cpus=1) as vm:
        assert vm.ssh("sudo -n true").returncode == 0
        assert vm.ssh("python3 --version").stdout.startswith("Python 3.11")
        assert vm.ssh("getent hosts $(hostname)").returncode == 0
        assert vm.ssh("systemctl is-system-running --wait; sudo systemctl is-active ssh").stdout \
            .strip().endswith("active")
        assert vm.ssh("busctl status >/dev/null && echo bus-ok").stdout.strip() == "bus-ok"
        # The guest reaches Debian's mirror through QEMU's user-mode NAT.
        update = vm.ssh("sudo apt-get update -q", timeout=300)
        assert update.returncode == 0, update.stdout + update.stderr
        pid = vm.pid
    assert subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode != 0
