"""The offline debian-12 base image, for real: built with mmdebstrap from Debian's mirror into
the repository's build/ (so reruns and `invoke build` reuse it), served from its fingerprint
cache, and booted under QEMU with the probed accelerator until the build user gets in over
SSH, with sudo, python3, a resolvable hostname, a grown root file system and a working apt.

Network: SSH only through QEMU's user-mode forward on 127.0.0.1; the guest's own traffic
(apt) leaves through QEMU's NAT, as every Packer build of this image does.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kiln.config.load import load_config
from kiln.image import accel, base
from kiln.image.base import BaseImage, build_base
from kiln.keys import ensure_build_key
from kiln.paths import REPO_ROOT, Paths
from kiln.runner import stop_group

pytestmark = [
    pytest.mark.vm,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="building the base image needs root (loop devices, mount)"),
    pytest.mark.skipif(shutil.which("mmdebstrap") is None, reason="mmdebstrap is not installed"),
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86 is not installed"),
]

TARGET = "debian-12"
GROWN_DISK_MB = base.DISK_MB + 2048
SSH_OPTIONS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
               "-o", "LogLevel=ERROR"]


@dataclass(frozen=True)
class Built:
    paths: Paths
    target: dict[str, object]
    image: BaseImage


@pytest.fixture(scope="module")
def built() -> Built:
    paths = Paths(root=REPO_ROOT)
    target = load_config(paths)["targets"][TARGET]
    image = build_base(TARGET, target, paths.build, log=paths.logs / f"base-{TARGET}.log")
    if image.cached:
        print(f"\nbase image: cached {image.path} ({image.size_bytes / 2**20:.0f} MiB)")
    else:
        print(f"\nbase image: built {image.path} ({image.size_bytes / 2**20:.0f} MiB); "
              f"timings: {image.seconds}")
    return Built(paths, target, image)


def test_build_left_a_complete_image_and_no_work_dirs(built: Built) -> None:
    image = built.image
    assert image.path == REPO_ROOT / "build/base/debian-12/debian-12-base.qcow2"
    assert image.path.read_bytes()[:4] == b"QFI\xfb"
    assert base.stamp_path(image.path).read_text().strip() == image.fingerprint
    assert list(image.path.parent.glob(f"{base.WORK_PREFIX}*")) == []


def test_second_call_is_served_from_the_fingerprint_cache(built: Built) -> None:
    started = time.monotonic()
    again = build_base(TARGET, built.target, built.paths.build)
    took = time.monotonic() - started
    print(f"\ncached call: {took:.3f}s")
    assert took < 2
    assert again.cached
    assert (again.path, again.fingerprint) == (built.image.path, built.image.fingerprint)


def test_fingerprint_follows_every_input() -> None:
    args = {"suite": "bookworm", "mirror": "http://deb.debian.org/debian", "user": "kiln",
            "public_key": "ssh-ed25519 AAAAkey kiln-build"}
    reference = base.fingerprint(**args)
    assert reference == base.fingerprint(**{**args, "public_key": "ssh-ed25519 AAAAkey other-comment"})
    for name, value in (("suite", "trixie"), ("mirror", "http://mirror.example/debian"), ("user", "admin"),
                        ("public_key", "ssh-ed25519 BBBBkey kiln-build")):
        assert base.fingerprint(**{**args, name: value}) != reference, name
    assert base.fingerprint(**args, packages=(*base.PACKAGES, "vim")) != reference


def test_apt_sources_add_security_only_where_known() -> None:
    assert base.apt_sources("bookworm", "http://deb.debian.org/debian/") == [
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
    ]
    assert base.apt_sources("bookworm", "http://ftp.de.debian.org/debian") == [
        "deb http://ftp.de.debian.org/debian bookworm main",
        "deb http://ftp.de.debian.org/debian bookworm-updates main",
    ]


def _mounted(path: Path) -> bool:
    return subprocess.run(["mountpoint", "-q", str(path)]).returncode == 0


def test_stale_mounts_and_loop_devices_of_a_killed_build_are_released(tmp_path: Path) -> None:
    work = tmp_path / f"{base.WORK_PREFIX}killed"
    (work / "mnt").mkdir(parents=True)
    raw = work / "disk.raw"
    subprocess.run(["truncate", "-s", "64M", str(raw)], check=True)
    loop = subprocess.run(["losetup", "--find", "--show", str(raw)], check=True, capture_output=True,
                          text=True).stdout.strip()
    try:
        subprocess.run(["mkfs.ext4", "-q", loop], check=True)
        subprocess.run(["mount", loop, str(work / "mnt")], check=True)
        tools = {name: shutil.which(name) or name for name in base.TOOLS}
        base._release_stale(tmp_path, tools, None)
        assert not work.exists()
        listed = subprocess.run(["losetup", loop], capture_output=True, text=True)
        assert listed.returncode != 0 or str(raw) not in listed.stdout
    finally:
        if _mounted(work / "mnt"):
            subprocess.run(["umount", "-l", str(work / "mnt")], check=False)
        subprocess.run(["losetup", "-d", loop], capture_output=True, check=False)


def test_sigterm_during_a_build_leaves_nothing_that_looks_complete(built: Built, tmp_path: Path) -> None:
    out = tmp_path / "img" / "base.qcow2"
    target = {**built.target, "base": {**built.target["base"], "path": str(out)}}  # type: ignore[dict-item]
    script = ("import json, sys; from pathlib import Path; from kiln.image.base import build_base; "
              "build_base('debian-12', json.loads(sys.argv[1]), Path(sys.argv[2]), force=True)")
    proc = subprocess.Popen([sys.executable, "-c", script, json.dumps(target), str(tmp_path / "build")],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    mmdebstrap = ["pgrep", "-f", f"mmdebstrap .*{out.parent}/{base.WORK_PREFIX}"]
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(mmdebstrap, capture_output=True).returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline, "mmdebstrap never started"
            time.sleep(0.5)
        time.sleep(3)  # well inside mmdebstrap (apt-get update, downloads)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    print(output[-800:])
    assert proc.returncode != 0
    assert "(received SIGTERM); its processes were stopped" in output
    assert not out.exists() and not base.stamp_path(out).exists()
    assert list(out.parent.glob(f"{base.WORK_PREFIX}*")) == []
    assert subprocess.run(mmdebstrap, capture_output=True).returncode == 1, "mmdebstrap still runs"


# --- booting the image ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


@dataclass
class Guest:
    port: int
    key: Path
    user: str
    proc: subprocess.Popen[bytes]
    serial: Path

    def ssh(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ssh", *SSH_OPTIONS, "-i", str(self.key), "-p", str(self.port),
                               f"{self.user}@127.0.0.1", command],
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def wait_for_ssh(self, timeout: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            assert self.proc.poll() is None, f"QEMU exited with {self.proc.returncode}; see {self.serial}"
            with contextlib.suppress(subprocess.TimeoutExpired):
                if self.ssh("true", timeout=30).returncode == 0:
                    return time.monotonic() - started
            time.sleep(2)
        raise AssertionError(f"no SSH after {timeout:.0f}s; serial log: {self.serial}")


@contextlib.contextmanager
def booted(image: Path, workdir: Path, key: Path, user: str, accel_name: str) -> Iterator[Guest]:
    overlay = workdir / "overlay.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image),
                    str(overlay), f"{GROWN_DISK_MB}M"], check=True)
    port, serial = _free_port(), workdir / "serial.log"
    argv = ["qemu-system-x86_64", *accel.qemu_accel_args(accel_name), "-m", "1024", "-smp", "2",
            "-nodefaults", "-display", "none", "-serial", f"file:{serial}",
            "-drive", f"file={overlay},if=virtio,format=qcow2",
            "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",
            "-device", "virtio-net-pci,netdev=n0"]
    with (workdir / "qemu.log").open("wb") as qemu_log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=qemu_log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        yield Guest(port, key, user, proc, serial)
    finally:
        stop_group(proc, grace=20)


def test_image_boots_and_lets_the_build_user_in(built: Built, tmp_path: Path) -> None:
    verdict = accel.probe(built.paths.cache)
    print(f"\naccelerator: {verdict.accel} ({verdict.reason}; cached={verdict.cached})")
    assert verdict.accel in accel.ACCELS
    key = ensure_build_key(built.paths.build)
    user = str(built.target["ssh_username"])
    with booted(built.image.path, tmp_path, key, user, verdict.accel) as guest:
        boot_to_ssh = guest.wait_for_ssh(timeout=300)
        print(f"boot to SSH: {boot_to_ssh:.1f}s (pid {guest.proc.pid}, port {guest.port})")

        assert guest.ssh("sudo -n true").returncode == 0
        version = guest.ssh("python3 --version")
        assert version.stdout.startswith("Python 3.11"), version
        fqdn = guest.ssh("hostname -f && getent hosts \"$(hostname -f)\"")
        assert fqdn.returncode == 0, fqdn.stderr
        assert fqdn.stdout.splitlines()[0] == "kiln"
        # Only the build user's key: nothing else may log in.
        keys = guest.ssh("cat ~/.ssh/authorized_keys").stdout.strip().splitlines()
        assert keys == [Path(f"{key}.pub").read_text().strip()]
        assert guest.ssh("sudo passwd -S root").stdout.split()[1] == "L"
        state = guest.ssh("systemctl is-system-running --wait; systemctl --failed --no-legend", timeout=180)
        assert state.stdout.splitlines()[0] == "running", state.stdout
        # kiln-growroot grew / to the (resized) disk: Packer's disk_size takes effect.
        root_mb = int(guest.ssh("df --output=size -BM / | tail -1").stdout.strip().rstrip("M"))
        assert root_mb > base.DISK_MB + 1024, f"/ is {root_mb} MiB on a {GROWN_DISK_MB} MiB disk"
        # The guest reaches Debian's mirror through QEMU's user-mode NAT.
        started = time.monotonic()
        update = guest.ssh("sudo apt-get update -q", timeout=300)
        assert update.returncode == 0, update.stdout + update.stderr
        print(f"apt-get update in the guest: {time.monotonic() - started:.1f}s")

        guest.ssh("sudo systemctl poweroff", timeout=30)
        try:
            guest.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("the guest did not power off within 120s")
        pid = guest.proc.pid
    assert not _alive(pid)
    serial = (tmp_path / "serial.log").read_text(errors="replace")
    assert "Linux version" in serial  # console=ttyS0 reaches the serial log
