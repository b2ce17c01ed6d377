"""VirtualBox's own check of a box kiln made, on machines that have VirtualBox.

`VBoxManage import --dry-run` first (VirtualBox reads the OVF and says what it would create),
then a real boot: the box is imported as a throwaway VM (its own name, its files in a
temporary base folder), SSH is forwarded from 127.0.0.1 on the NAT adapter, the VM starts
headless and the check waits until the box's user logs in with kiln's build key. Whatever
happens, the VM is powered off and unregistered with its files.

Without VirtualBox (this project's CI machines) the build says which of these did not run;
tests/unit/test_vboxcheck.py drives the sequence against a recording VBoxManage stand-in,
since VirtualBox cannot be installed there.
"""

from __future__ import annotations

import os
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kiln import sshconfig
from kiln.errors import KilnError
from kiln.image.vm import free_port
from kiln.runner import run

IMPORT_TIMEOUT = 600.0
SSH_TIMEOUT = 600.0
POWEROFF_WAIT = 60.0
OVF = "box.ovf"


@dataclass(frozen=True)
class Check:
    vboxmanage: str
    box: Path
    name: str  # the pair's name, e.g. debian-12-virtualbox
    user: str
    key: Path
    log: Path


def ssh_answers(config: Path, alias: str) -> bool:
    try:
        done = subprocess.run(["ssh", "-F", str(config), alias, "true"], capture_output=True,
                              timeout=30, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def import_and_boot(check: Check, *, ssh_timeout: float = SSH_TIMEOUT,
                    reach: Callable[[Path, str], bool] = ssh_answers,
                    say: Callable[[str], None] = print) -> float:
    """Dry-run import, then import, boot and log in (the seconds that took are returned); the
    VM is removed on every path."""
    with tempfile.TemporaryDirectory(prefix="kiln-vbox-") as tmp:
        work = Path(tmp)
        with tarfile.open(check.box) as tar:
            tar.extractall(work / "box", filter="data")
        ovf = work / "box" / OVF
        _vbox(check, ["import", str(ovf), "--dry-run"], "import --dry-run")
        say(f"==> [{check.name}] VirtualBox accepted the box (VBoxManage import --dry-run)")
        vm = f"kiln-check-{check.name}-{os.getpid()}"
        _vbox(check, ["import", str(ovf), "--vsys", "0", "--vmname", vm, "--basefolder", str(work / "vms")],
              "import")
        try:
            port = free_port()
            _vbox(check, ["modifyvm", vm, "--natpf1", f"kiln-ssh,tcp,127.0.0.1,{port},,22"], "modifyvm")
            _vbox(check, ["startvm", vm, "--type", "headless"], "startvm")
            config = sshconfig.write(work / "ssh_config",
                                     [sshconfig.SshHost(vm, "127.0.0.1", port, check.user, check.key)])
            seconds = _wait(lambda: reach(config, vm), ssh_timeout,
                            f"{check.name}: no SSH from the VirtualBox VM {vm} on 127.0.0.1:{port} "
                            f"after {ssh_timeout:.0f}s (VirtualBox's log: {work / 'vms' / vm / 'Logs'})")
            say(f"==> [{check.name}] VirtualBox booted the box: {check.user} logged in over SSH after "
                f"{seconds:.0f}s")
            return seconds
        finally:
            _remove(check, vm)


def _vbox(check: Check, args: list[str], what: str, *, must: bool = True) -> int:
    done = run([check.vboxmanage, *args], step=f"{check.name}: VBoxManage {what}", log=check.log,
               quiet=True, check=must, timeout=IMPORT_TIMEOUT)
    return done.returncode


def _wait(ready: Callable[[], bool], timeout: float, message: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if ready():
            return time.monotonic() - started
        time.sleep(2)
    raise KilnError(message)


def _remove(check: Check, vm: str) -> None:
    """Power off (if running), wait until VirtualBox lets go of the VM, unregister and delete."""
    _vbox(check, ["controlvm", vm, "poweroff"], "controlvm poweroff", must=False)
    deadline = time.monotonic() + POWEROFF_WAIT
    while time.monotonic() < deadline:
        info = subprocess.run([check.vboxmanage, "showvminfo", vm, "--machinereadable"],
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        if info.returncode != 0 or 'VMState="running"' not in info.stdout:
            break
        time.sleep(1)
    _vbox(check, ["unregistervm", vm, "--delete"], "unregistervm --delete", must=False)
