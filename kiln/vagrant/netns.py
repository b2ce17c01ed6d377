"""A private network namespace with its own libvirtd, for VM tests and benchmarks.

Vagrant's libvirt networks (the management network 192.168.121.0/24, private networks such
as 10.141.141.0/24) and the VMs on them then exist only inside the namespace: nothing a test
starts can reach, or be reached from, the host's own networks. Everything that talks to the
VMs (vagrant, ssh, kiln itself) runs inside too: `ns.argv([...])` wraps a command in
`ip netns exec`. While the namespace exists, the host namespace gets `unreachable` routes for
those ranges, so that a command run outside by mistake fails at once instead of leaving
through the default gateway.

libvirtd and virtlogd run in the foreground under our PIDs; at the end every process left in
the namespace (dnsmasq included) is stopped by PID and the namespace is deleted.

Where KVM does not run guests (kiln's probe says TCG), libvirtd is started with /dev/kvm
masked (/dev/null bound over it in a mount namespace of its own). libvirt otherwise probes
QEMU's KVM capabilities again on every domain definition and waits out its 30 s monitor
timeout on a /dev/kvm that cannot run guests: measured here, 32 s per `virsh define`
(vagrant-libvirt makes several per machine, one at a time) against 0.02 s with it masked.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kiln.errors import UserError
from kiln.runner import capture

GUARDED = ("10.141.141.0/24", "192.168.121.0/24", "192.168.122.0/24")
POOL_DIR = "/var/lib/libvirt/images"
HINT = "apt-get install libvirt-daemon-system iproute2 dnsmasq-base (needs root)"
KVM_DEVICE = "/dev/kvm"


@dataclass
class LibvirtNamespace:
    name: str
    log_dir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    routes: list[str] = field(default_factory=list)

    def argv(self, command: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *command]

    def virsh(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(["virsh", "-c", "qemu:///system", *args]), capture_output=True,
                              text=True, timeout=120, check=check, stdin=subprocess.DEVNULL)

    def pids(self) -> list[int]:
        out = capture(["ip", "netns", "pids", self.name]) or ""
        return [int(p) for p in out.split()]


def problem() -> str | None:
    """Why a namespace with libvirtd cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root (ip netns, libvirtd)"
    for tool in ("ip", "libvirtd", "virtlogd", "virsh", "dnsmasq"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed ({HINT})"
    if capture(["pgrep", "-x", "libvirtd"]):
        return "a libvirtd is already running on this machine (kiln needs its own, inside the namespace)"
    return None


def libvirtd_argv(kvm: bool, device: str = KVM_DEVICE) -> list[str]:
    """libvirtd, with `device` masked unless its guests are to use KVM (see the module docstring)."""
    if kvm or not os.path.exists(device):
        return ["libvirtd"]
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f"mount --bind /dev/null {device} && exec libvirtd"]


@contextlib.contextmanager
def libvirt_namespace(name: str, log_dir: Path, *, kvm: bool, start_timeout: float = 60
                      ) -> Iterator[LibvirtNamespace]:
    """The namespace with libvirtd running; `kvm`: whether its guests use KVM (else TCG)."""
    why = problem()
    if why is not None:
        raise UserError(f"cannot create a libvirt network namespace: {why}", HINT)
    log_dir.mkdir(parents=True, exist_ok=True)
    ns = LibvirtNamespace(name, log_dir)
    _delete(ns)  # a namespace of that name left by a killed run
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(ns.argv(["ip", "link", "set", "lo", "up"]), check=True)
        for net in GUARDED:
            if subprocess.run(["ip", "route", "add", "unreachable", net, "metric", "4000"],
                              capture_output=True, check=False).returncode == 0:
                ns.routes.append(net)
        for daemon, argv in (("virtlogd", ["virtlogd"]), ("libvirtd", libvirtd_argv(kvm))):
            log = (log_dir / f"{daemon}.log").open("ab")
            # `ip netns exec`, unshare and sh all exec: the PID kept is the daemon's own.
            ns.processes.append(subprocess.Popen(ns.argv(argv), stdin=subprocess.DEVNULL, stdout=log,
                                                 stderr=log, start_new_session=True))
        _wait_for_libvirtd(ns, start_timeout)
        _ensure_pool(ns)
        yield ns
    finally:
        _teardown(ns)


def _wait_for_libvirtd(ns: LibvirtNamespace, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ns.virsh("version").returncode == 0:
            return
        if any(p.poll() is not None for p in ns.processes):
            break
        time.sleep(0.5)
    raise UserError(f"libvirtd did not start in namespace {ns.name}; see {ns.log_dir}/libvirtd.log")


def _ensure_pool(ns: LibvirtNamespace) -> None:
    """vagrant-libvirt uploads boxes into the pool named 'default'."""
    if ns.virsh("pool-info", "default").returncode == 0:
        if "running" not in ns.virsh("pool-info", "default").stdout:
            ns.virsh("pool-start", "default", check=True)
        return
    Path(POOL_DIR).mkdir(parents=True, exist_ok=True)
    ns.virsh("pool-define-as", "default", "dir", "--target", POOL_DIR, check=True)
    ns.virsh("pool-start", "default", check=True)


def _teardown(ns: LibvirtNamespace) -> None:
    with contextlib.suppress(Exception):
        # Networks first: libvirtd stops the dnsmasq it started for each.
        active = ns.virsh("net-list", "--name").stdout.split()
        for net in active:
            ns.virsh("net-destroy", net)
    for proc in reversed(ns.processes):
        _stop(proc)
    _delete(ns)
    for net in ns.routes:
        subprocess.run(["ip", "route", "del", "unreachable", net, "metric", "4000"], capture_output=True,
                       check=False)


def _stop(proc: subprocess.Popen[bytes], grace: float = 15) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _delete(ns: LibvirtNamespace) -> None:
    """Stop whatever still runs in the namespace (by PID), then delete it."""
    if not Path(f"/run/netns/{ns.name}").exists():
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = ns.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if _alive(p)]
            time.sleep(0.2)
        if not pids:
            break
    subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, check=False)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    if state == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # ours to reap: the host has no init that does
        return False
    return True
