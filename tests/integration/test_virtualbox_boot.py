"""The VirtualBox box, for real but without VirtualBox: `vagrant box add` takes it, and its VMDK
boots on VirtualBox-like hardware under QEMU (AHCI disk, e1000 NIC with the box's MAC, no virtio
device, TCG) until kiln's build user, and Vagrant's user with its insecure key, get in over SSH.

The base image carries Debian's generic kernel (linux-image-amd64 in kiln/image/base.py's
PACKAGES): the cloud kernel is built without AHCI and e1000 (CONFIG_SATA_AHCI and CONFIG_E1000
unset) and stopped in the initramfs on VirtualBox's hardware ("ALERT! LABEL=root does not exist").
The test checks the base image's kernel and initramfs for both drivers, then boots a box made
from a copy of the base image to which Vagrant's `vagrant` user (Vagrant's insecure public key,
password-less sudo) was added, to show that the default insecure-key flow of `vagrant up` works
against this sshd.

Network: SSH only through QEMU's user-mode forward on 127.0.0.1, with `restrict=on` so the
guest reaches nothing outside. QEMU is stopped by PID whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from bake_samples import fake_bake

from kiln import sshconfig
from kiln.image import ovf, virtualbox
from kiln.image.vm import RunningVM, free_port, wait_for_ssh
from kiln.paths import REPO_ROOT, Paths
from kiln.runner import run, stop_group

TARGET = "debian-12"
VERSION = "0.1.0.20261201120000"
PART_OFFSET = 2048 * 512  # kiln.image.base: one MBR partition at 1 MiB
INSECURE_KEY = Path("/usr/share/rubygems-integration/all/gems/vagrant-2.3.4/keys/vagrant")
BOOT_TIMEOUT = 420.0
VAGRANT_ENV = {"VAGRANT_CHECKPOINT_DISABLE": "1", "CHECKPOINT_DISABLE": "1"}
F = TypeVar("F", bound=Callable[..., Any])

needs_vagrant = pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant is not installed")
needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img is not installed")
VM = [
    pytest.mark.vm,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="building and editing the base image needs root"),
    pytest.mark.skipif(shutil.which("mmdebstrap") is None, reason="mmdebstrap is not installed"),
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86 is not installed"),
    needs_qemu_img,
]


def vm_test(func: F) -> F:
    """Marked vm and slow, and skipped where the base image cannot be built or booted."""
    for mark in reversed(VM):
        func = mark(func)
    return func


SPEC = virtualbox.BoxSpec(TARGET, "debian", "kiln/mesos-debian-12", "kiln", project={"version": "0.1.0"})


# --- vagrant box add -------------------------------------------------------------------------------------

@contextlib.contextmanager
def vagrant_home(parent: Path) -> Iterator[dict[str, str]]:
    """A throwaway VAGRANT_HOME, so nothing reaches ~/.vagrant.d; removed afterwards."""
    home = parent / "vagrant.d"
    home.mkdir()
    try:
        yield {**VAGRANT_ENV, "VAGRANT_HOME": str(home)}
    finally:
        shutil.rmtree(home, ignore_errors=True)


def vagrant(env: dict[str, str], *args: str) -> str:
    return run(["vagrant", *args], step=f"vagrant {args[0]}", env=env, quiet=True, timeout=300).output


def check_vagrant_accepts(result: virtualbox.BoxResult, parent: Path) -> None:
    with vagrant_home(parent) as env:
        vagrant(env, "box", "add", "--name", "kiln-test", "--provider", "virtualbox", str(result.box))
        vagrant(env, "box", "add", "--provider", "virtualbox", str(result.directory / "box-catalog.json"))
        listing = vagrant(env, "box", "list")
        assert re.search(r"^kiln-test\s+\(virtualbox, 0\)$", listing, re.M), listing
        assert re.search(rf"^kiln/mesos-debian-12\s+\(virtualbox, {re.escape(result.version)}\)$", listing,
                         re.M), listing
        unpacked = Path(env["VAGRANT_HOME"]) / "boxes" / "kiln-test" / "0" / "virtualbox"
        assert sorted(p.name for p in unpacked.iterdir()) == sorted(
            [virtualbox.OVF_NAME, virtualbox.DISK_NAME, virtualbox.BOX_METADATA, virtualbox.BOX_VAGRANTFILE])
        assert json.loads((unpacked / "metadata.json").read_text()) == {"provider": "virtualbox"}
        vagrant(env, "box", "remove", "--force", "--provider", "virtualbox", "kiln-test")
    assert not (parent / "vagrant.d").exists()


@needs_vagrant
@needs_qemu_img
def test_vagrant_box_add_accepts_a_small_box_and_its_catalog(tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    with raw.open("wb") as fh:
        fh.truncate(32 << 20)
        fh.write(b"kiln" * 4096)
    qcow2 = tmp_path / "disk.qcow2"
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)], step="qcow2", quiet=True)
    artifacts = tmp_path / "artifacts"
    fake_bake(artifacts, qcow2, {"base": {"version": "1"}}, version=VERSION)
    check_vagrant_accepts(virtualbox.make_box(SPEC, artifacts), tmp_path)


# --- the base image and a copy with the generic kernel -----------------------------------------------------

@dataclass
class Mounted:
    root: Path
    raw: Path

    def chroot(self, script: str, step: str) -> str:
        return run(["chroot", str(self.root), "/bin/sh", "-eu", "-c", script], step=step, quiet=True,
                   env={"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}, timeout=900).output

    def facts(self) -> dict[str, object]:
        """Kernel, module tree, initramfs and used space of the root file system."""
        stat = os.statvfs(self.root)
        kernels = sorted(p.name for p in (self.root / "lib/modules").iterdir())
        modules = run(["du", "-sb", str(self.root / "lib/modules")], step="du", quiet=True).output.split()[0]
        initrds = sorted((self.root / "boot").glob("initrd.img-*"))
        return {"kernels": kernels, "modules_mb": round(int(modules) / 2**20),
                "initrd_mb": round(sum(p.stat().st_size for p in initrds) / 2**20, 1),
                "used_mb": round((stat.f_blocks - stat.f_bfree) * stat.f_frsize / 2**20)}


@contextlib.contextmanager
def mounted_copy(qcow2: Path, work: Path, *, system: bool = False) -> Iterator[Mounted]:
    """A raw copy of `qcow2` with its root partition mounted (and /dev, /proc, /sys when
    `system`, for package scripts); unmounted and detached whatever happens."""
    work.mkdir(parents=True, exist_ok=True)
    raw, mnt = work / "disk.raw", work / "mnt"
    run(["qemu-img", "convert", "-O", "raw", str(qcow2), str(raw)], step="qemu-img convert raw", quiet=True)
    loop = run(["losetup", "--find", "--show", "--offset", str(PART_OFFSET), str(raw)], step="losetup",
               quiet=True).output.strip()
    mounts: list[Path] = []
    try:
        mnt.mkdir()
        run(["mount", loop, str(mnt)], step="mount", quiet=True)
        mounts.append(mnt)
        if system:
            for args, where in ((["--bind", "/dev"], "dev"), (["-t", "proc", "proc"], "proc"),
                                (["-t", "sysfs", "sys"], "sys")):
                run(["mount", *args, str(mnt / where)], step=f"mount {where}", quiet=True)
                mounts.append(mnt / where)
        yield Mounted(mnt, raw)
    finally:
        for point in reversed(mounts):
            if run(["umount", str(point)], step="umount", quiet=True, check=False).returncode != 0:
                run(["umount", "-l", str(point)], step="umount -l", quiet=True, check=False)
        run(["losetup", "-d", loop], step="losetup -d", quiet=True, check=False)


VAGRANT_USER = """
id -u vagrant >/dev/null 2>&1 || useradd --create-home --shell /bin/bash vagrant
install -d -m 0700 -o vagrant -g vagrant /home/vagrant/.ssh
install -m 0600 -o vagrant -g vagrant /tmp/vagrant.pub /home/vagrant/.ssh/authorized_keys
rm -f /tmp/vagrant.pub
printf 'vagrant ALL=(ALL) NOPASSWD:ALL\\n' > /etc/sudoers.d/90-vagrant
chmod 0440 /etc/sudoers.d/90-vagrant
visudo -cqf /etc/sudoers.d/90-vagrant
"""


@dataclass
class Images:
    base: Path
    fixed: Path  # the base image with Vagrant's user added
    facts: dict[str, object]
    seconds: dict[str, float] = field(default_factory=dict)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    from kiln.config.load import load_config
    from kiln.image.base import build_base

    paths = Paths(root=REPO_ROOT)
    target = load_config(paths)["targets"][TARGET]
    base = build_base(TARGET, target, paths.build, log=paths.logs / f"base-{TARGET}.log").path
    work = tmp_path_factory.mktemp("vagrant-user")
    started = time.monotonic()
    with mounted_copy(base, work / "edit", system=True) as image:
        facts = image.facts()
        if INSECURE_KEY.with_suffix(".pub").exists():
            shutil.copyfile(INSECURE_KEY.with_suffix(".pub"), image.root / "tmp/vagrant.pub")
            image.chroot(VAGRANT_USER, "add Vagrant's user")
        run(["fstrim", str(image.root)], step="fstrim", quiet=True, check=False)
        raw = image.raw
    fixed = work / "with-vagrant-user.qcow2"
    run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(fixed)], step="qemu-img convert", quiet=True)
    raw.unlink()
    seconds = {"copy with Vagrant's user": round(time.monotonic() - started, 1)}
    print(f"\nbase image {base.stat().st_size / 2**20:.0f} MiB: {facts}; {seconds}")
    return Images(base, fixed, facts, seconds)


@vm_test
def test_the_base_image_kernel_has_ahci_in_its_initramfs_and_e1000(images: Images, tmp_path: Path) -> None:
    with mounted_copy(images.base, tmp_path / "base", system=True) as image:
        (kernel,) = images.facts["kernels"]  # type: ignore[misc]
        config = (image.root / "boot" / f"config-{kernel}").read_text()
        modules = {p.name for p in (image.root / "lib/modules" / kernel).rglob("*.ko*")}
        script = f"lsinitramfs /boot/initrd.img-{kernel} | grep -E '/(ahci|e1000)\\.ko' || true"
        listing = image.chroot(script, "lsinitramfs")
    assert not kernel.endswith("-cloud-amd64"), kernel
    assert "CONFIG_SATA_AHCI=m" in config and "CONFIG_E1000=m" in config
    assert {m.split(".ko")[0] for m in modules} >= {"ahci", "e1000"}
    # MODULES=most puts the AHCI driver into the initramfs: the root disk needs it; e1000 is
    # loaded from the root file system later.
    assert re.search(r"/ahci\.ko", listing), "ahci.ko is not in the initramfs"


# --- booting on VirtualBox-like hardware --------------------------------------------------------------------

def vbox_like_argv(disk: Path, serial: Path, port: int, mac: str, cpus: int, memory_mb: int) -> list[str]:
    """VirtualBox's hardware as QEMU has it: PIIX3 chipset, the disk on an AHCI controller, an
    Intel 82540EM (e1000) on NAT, nothing virtio; TCG."""
    return ["qemu-system-x86_64", "-accel", "tcg", "-machine", "pc", "-smp", str(cpus), "-m", str(memory_mb),
            "-display", "none", "-nodefaults", "-no-user-config", "-serial", f"file:{serial}",
            "-drive", f"id=d,file={disk},if=none,format=qcow2",
            "-device", "ahci,id=ahci", "-device", "ide-hd,drive=d,bus=ahci.0",
            "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
            "-device", f"e1000,netdev=n0,mac={ovf.mac_colons(mac)}"]


def overlay(backing: Path, fmt: str, out: Path) -> Path:
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt, "-b", str(backing), str(out)],
        step="qemu-img overlay", quiet=True)
    return out


@contextlib.contextmanager
def qemu(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """QEMU in its own process group, stopped by PID at the end (also on SIGTERM to pytest)."""
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    with log.open("wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                start_new_session=True)
    try:
        yield proc
    finally:
        stop_group(proc, 20)
        signal.signal(signal.SIGTERM, previous)


@dataclass
class Box:
    result: virtualbox.BoxResult
    artifacts: Path
    disk: Path  # the VMDK, taken out of the box
    ovf: bytes


@pytest.fixture(scope="module")
def box(images: Images, tmp_path_factory: pytest.TempPathFactory) -> Box:
    work = tmp_path_factory.mktemp("vbox")
    artifacts = work / "artifacts"
    fake_bake(artifacts, images.fixed, {"base": {"version": "1"}, "qemu-kvm": {"version": "7.2"}},
              version=VERSION)
    result = virtualbox.make_box(SPEC, artifacts)
    print(f"\nbox: {result.seconds}, sizes MiB: "
          f"{ {k: round(v / 2**20) for k, v in result.sizes.items()} }")
    with tarfile.open(result.box) as tar:
        tar.extractall(work / "unpacked", filter="data")
    return Box(result, artifacts, work / "unpacked" / virtualbox.DISK_NAME,
               (work / "unpacked" / virtualbox.OVF_NAME).read_bytes())


@vm_test
@needs_vagrant
def test_vagrant_box_add_accepts_the_box_made_from_the_image(box: Box, tmp_path: Path) -> None:
    check_vagrant_accepts(box.result, tmp_path)


@dataclass
class Guest:
    vm: RunningVM
    mac: str
    boot_seconds: float

    def sh(self, command: str, host: str | None = None) -> str:
        done = subprocess.run(["ssh", "-F", str(self.vm.ssh_config), host or self.vm.name, command],
                              capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
        return done.stdout.strip()


@pytest.fixture(scope="module")
def guest(box: Box, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    work = tmp_path_factory.mktemp("guest")
    doc = box.ovf.decode()
    mac = re.search(r'MACAddress="([0-9A-F]{12})"', doc).group(1)  # type: ignore[union-attr]
    cpus = int(re.search(r'<CPU count="(\d+)"', doc).group(1))  # type: ignore[union-attr]
    memory = int(re.search(r'<Memory RAMSize="(\d+)"', doc).group(1))  # type: ignore[union-attr]
    port, serial = free_port(), work / "serial.log"
    key = Paths(root=REPO_ROOT).keys / "kiln_ed25519"
    insecure = work / "vagrant_insecure_key"
    hosts = [sshconfig.SshHost("vbox", "127.0.0.1", port, "kiln", key)]
    if INSECURE_KEY.exists():
        shutil.copyfile(INSECURE_KEY, insecure)
        insecure.chmod(0o600)
        hosts.append(sshconfig.SshHost("vbox-vagrant", "127.0.0.1", port, "vagrant", insecure))
    cfg = sshconfig.write(work / "ssh_config", hosts)
    argv = vbox_like_argv(overlay(box.disk, "vmdk", work / "disk.qcow2"), serial, port, mac, cpus, memory)
    with qemu(argv, work / "qemu.log") as proc:
        vm = RunningVM("vbox", proc.pid, port, cfg, serial)
        took = wait_for_ssh(vm, proc, BOOT_TIMEOUT)
        print(f"\nVirtualBox-like hardware (AHCI, e1000, TCG, {cpus} CPUs, {memory} MB): "
              f"SSH after {took:.1f}s")
        yield Guest(vm, mac, took)


@vm_test
def test_the_box_boots_to_ssh_on_ahci_and_e1000(guest: Guest) -> None:
    assert guest.sh("id -un") == "kiln"
    assert guest.boot_seconds < BOOT_TIMEOUT
    assert re.fullmatch(r"6\.\d+\.\d+-\d+-amd64", guest.sh("uname -r"))


@vm_test
def test_the_root_disk_hangs_off_the_ahci_controller(guest: Guest) -> None:
    assert guest.sh("findmnt -no SOURCE /") == "/dev/sda1"
    path = guest.sh("readlink -f /sys/block/sda/device")
    pci = re.search(r"/(0000:00:[0-9a-f]{2}\.[0-7])/ata\d+/", path)
    assert pci, path
    assert guest.sh(f"basename $(readlink -f /sys/bus/pci/devices/{pci.group(1)}/driver)") == "ahci"


@vm_test
def test_eth0_is_the_e1000_with_the_box_mac_brought_up_by_ifupdown(guest: Guest) -> None:
    assert guest.sh("basename $(readlink -f /sys/class/net/eth0/device/driver)") == "e1000"
    assert guest.sh("cat /sys/class/net/eth0/address") == ovf.mac_colons(guest.mac)
    assert "inet 10.0.2.15/24" in guest.sh("ip -4 -o addr show dev eth0")
    assert guest.sh("cat /run/network/ifstate.eth0") == "eth0"


@vm_test
def test_nothing_virtio_is_there(guest: Guest) -> None:
    assert guest.sh("ls /sys/bus/virtio/devices | wc -l") == "0"


@vm_test
def test_vagrants_insecure_key_logs_in_with_password_less_sudo(guest: Guest) -> None:
    if not INSECURE_KEY.exists():
        pytest.skip(f"Vagrant's insecure key is not at {INSECURE_KEY} (another Vagrant version?)")
    assert guest.sh("sudo -n id -un", host="vbox-vagrant") == "root"
