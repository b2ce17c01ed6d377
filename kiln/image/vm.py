"""Boot a built qcow2 under QEMU for verification: a throwaway overlay, SSH forwarded on
127.0.0.1 only, serial console to a log, and the QEMU process stopped by PID at the end.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kiln import sshconfig
from kiln.errors import KilnError
from kiln.image import accel as accel_mod
from kiln.image.boximage import BoxImage, qemu_filename
from kiln.runner import finish, run, start, which

QEMU_HINT = "apt-get install qemu-system-x86 qemu-utils"


@dataclass(frozen=True)
class RunningVM:
    name: str
    pid: int
    ssh_port: int
    ssh_config: Path
    serial_log: Path

    def ssh(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ssh", "-F", str(self.ssh_config), self.name, command],
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_ssh(vm: RunningVM, proc: subprocess.Popen[bytes], timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise KilnError(f"QEMU exited with {proc.returncode} before SSH came up; "
                            f"serial log: {vm.serial_log}")
        try:
            if vm.ssh("true", timeout=20).returncode == 0:
                return time.monotonic() - started
        except subprocess.TimeoutExpired:
            pass
        time.sleep(2)
    raise KilnError(f"no SSH on 127.0.0.1:{vm.ssh_port} after {timeout:.0f}s; serial log: {vm.serial_log}")


@dataclass(frozen=True)
class Hardware:
    """The virtual disk controller and NIC a guest boots on."""

    name: str
    image_format: str = "qcow2"  # of the image booted (its overlay is qcow2 either way)
    mac: str = ""

    def args(self, overlay: Path) -> list[str]:
        if self.name == "virtio":
            return ["-drive", f"file={overlay},if=virtio,format=qcow2", "-device", "virtio-net-pci,netdev=n0"]
        # What VirtualBox gives a box made by kiln: a SATA/AHCI disk and an e1000 NIC, no virtio.
        mac = f",mac={self.mac}" if self.mac else ""
        return ["-drive", f"file={overlay},if=none,id=d0,format=qcow2", "-device", "ahci,id=ahci",
                "-device", "ide-hd,drive=d0,bus=ahci.0", "-device", f"e1000,netdev=n0{mac}"]


VIRTIO = Hardware("virtio")


@contextmanager
def booted(image: Path | BoxImage, workdir: Path, *, key: Path, user: str, accel: str, name: str = "kiln-vm",
           memory_mb: int = 2048, cpus: int = 2, ssh_timeout: float = 300,
           hardware: Hardware | None = None) -> Iterator[RunningVM]:
    """Boot `image` (left untouched) and yield once SSH answers; always stop QEMU. The guest's
    network is QEMU's user network with `restrict=on`: it reaches nothing but SSH from 127.0.0.1."""
    qemu = which("qemu-system-x86_64", QEMU_HINT)
    workdir.mkdir(parents=True, exist_ok=True)
    overlay = workdir / f"{name}.overlay.qcow2"
    overlay.unlink(missing_ok=True)
    hardware = hardware or VIRTIO
    run([which("qemu-img", QEMU_HINT), "create", "-q", "-f", "qcow2", "-F", hardware.image_format, "-b",
         qemu_filename(image), str(overlay)], step="qemu-img overlay", quiet=True)
    port = free_port()
    serial = workdir / f"{name}.serial.log"
    argv = [qemu, *accel_mod.qemu_accel_args(accel), "-m", str(memory_mb), "-smp", str(cpus),
            "-display", "none", "-nodefaults", "-serial", f"file:{serial}",
            "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
            *hardware.args(overlay)]
    cfg = sshconfig.write(workdir / f"{name}.ssh_config",
                          [sshconfig.SshHost(name, "127.0.0.1", port, user, key)],
                          control_dir=workdir / "ssh-control")
    qemu_log = workdir / f"{name}.qemu.log"
    qemu_log.unlink(missing_ok=True)
    # runner.start: its own process group, ended with kiln (even a SIGKILLed one) and in the run
    # record from the first instant, not only once SSH answers.
    proc = start(argv, step=f"QEMU of {name}", log=qemu_log)
    vm = RunningVM(name, proc.pid, port, cfg, serial)
    try:
        took = wait_for_ssh(vm, proc, ssh_timeout)
        print(f"==> {name}: SSH up on 127.0.0.1:{port} after {took:.1f}s (pid {proc.pid})", flush=True)
        yield vm
    finally:
        sshconfig.close_master(cfg, name)
        finish(proc)
        overlay.unlink(missing_ok=True)
