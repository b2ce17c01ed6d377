"""A private network namespace with its own libvirtd, for VM tests and benchmarks.

Vagrant's libvirt networks (the management network 192.168.121.0/24, private networks such
as 10.141.141.0/24) and the VMs on them then exist only inside the namespace: nothing a test
starts can reach, or be reached from, the host's own networks. Everything that talks to the
VMs (vagrant, ssh, kiln itself) runs inside too: `ns.argv([...])` wraps a command in
`ip netns exec`. While the namespace exists, the host namespace gets `unreachable` guard
routes for every network the config uses (cluster.network_prefix, trial.ip_address, libvirt's
management and default networks), so that a command run outside by mistake fails at once
instead of leaving through the default gateway. A guard that cannot be installed stops the run.

Guard routes carry kiln's route protocol (GUARD_PROTO) and a metric of their own run's
(4000, 4001, ... per network): two runs at once each remove exactly their own.

libvirtd and virtlogd run in the foreground under our PIDs (kiln.runner.start: they end with
kiln, even a SIGKILLed one); at the end every process left in the namespace (dnsmasq included)
is stopped by PID and the namespace is deleted.

What a run made is recorded in STATE_DIR/<name>.json (owner PID and start time, guard routes,
daemons) before it is made. The next namespace (or `invoke clean`) removes what the records of
runs that are gone list, one line each (`reap_stale`); a run that still runs is never touched.
STATE_DIR is under /run, which, like namespaces and routes, does not outlive a reboot.

Where KVM does not run guests (kiln's probe says TCG), libvirtd is started with /dev/kvm
masked (/dev/null bound over it in a mount namespace of its own). libvirt otherwise probes
QEMU's KVM capabilities again on every domain definition and waits out its 30 s monitor
timeout on a /dev/kvm that cannot run guests: measured here, 32 s per `virsh define`
(vagrant-libvirt makes several per machine, one at a time) against 0.02 s with it masked.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln import runner
from kiln.errors import UserError
from kiln.fileutil import locked, write_atomic
from kiln.output import say
from kiln.runner import capture

# vagrant-libvirt's management network and libvirt's own default network (virbr0).
LIBVIRT_NETWORKS = ("192.168.121.0/24", "192.168.122.0/24")
GUARD_PROTO = 203  # kiln's guard routes (`ip route ... proto 203`; no routing daemon uses 203)
GUARD_METRIC = 4000
POOL_DIR = "/var/lib/libvirt/images"
HINT = "apt-get install libvirt-daemon-system iproute2 dnsmasq-base (needs root)"
KVM_DEVICE = "/dev/kvm"
IP_TIMEOUT = 30.0


def state_dir() -> Path:
    return Path(os.environ.get("KILN_NETNS_STATE") or "/run/kiln/netns")


@dataclass(frozen=True)
class Guard:
    """One guard route: `unreachable NET metric METRIC proto GUARD_PROTO` in the host namespace."""

    net: str
    metric: int

    def argv(self, action: str) -> list[str]:
        return ["ip", "route", action, "unreachable", self.net, "metric", str(self.metric),
                "proto", str(GUARD_PROTO)]


@dataclass
class LibvirtNamespace:
    name: str
    log_dir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    guards: list[Guard] = field(default_factory=list)
    volumes_at_start: frozenset[str] = frozenset()

    @property
    def routes(self) -> list[str]:
        return [g.net for g in self.guards]

    def argv(self, command: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *command]

    def virsh(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(["virsh", "-c", "qemu:///system", *args]), capture_output=True,
                              text=True, timeout=120, check=check, stdin=subprocess.DEVNULL)

    def pids(self) -> list[int]:
        return namespace_pids(self.name)

    def volumes(self) -> list[str]:
        """The volumes of libvirt's default pool (a directory shared with every other libvirtd)."""
        self.virsh("pool-refresh", "default")
        listing = self.virsh("vol-list", "--pool", "default").stdout.splitlines()
        return [line.split()[0] for line in listing[2:] if line.strip()]

    def new_volumes(self) -> list[str]:
        """The pool's volumes that were not there when this namespace's libvirtd came up."""
        return [v for v in self.volumes() if v not in self.volumes_at_start]


def namespace_pids(name: str) -> list[int]:
    out = capture(["ip", "netns", "pids", name]) or ""
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


def guard_networks(config: Mapping[str, Any]) -> list[str]:
    """Every network the config puts VMs on: the cluster's private network, the trial machine's,
    and libvirt's management and default networks."""
    nets = {ipaddress.ip_network(n) for n in LIBVIRT_NETWORKS}
    nets.add(ipaddress.ip_network(f"{config['cluster']['network_prefix']}.0/24", strict=False))
    nets.add(ipaddress.ip_interface(f"{config['trial']['ip_address']}/24").network)
    return sorted(str(n) for n in nets)


def default_networks() -> list[str]:
    """guard_networks of the configuration at KILN_ROOT (config.json, no overlay)."""
    from kiln.config.load import load_config
    from kiln.paths import Paths

    return guard_networks(load_config(Paths()).data)


# -- records --------------------------------------------------------------------------------------

def _record_path(name: str) -> Path:
    return state_dir() / f"{name}.json"


def _me() -> dict[str, Any]:
    return {"pid": os.getpid(), "start": runner.process_start(os.getpid()), "argv": sys.argv[:6],
            "started": time.time()}


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) and "owner" in data else None
    except (OSError, ValueError):
        return None


def _save(data: dict[str, Any]) -> None:
    write_atomic(_record_path(data["name"]), json.dumps(data, indent=1) + "\n")


def _owner_alive(data: Mapping[str, Any]) -> bool:
    owner = data.get("owner", {})
    return runner.alive(int(owner.get("pid", 0)), owner.get("start"))


@contextlib.contextmanager
def _state_lock() -> Iterator[None]:
    state_dir().mkdir(parents=True, exist_ok=True)
    with locked(state_dir() / ".lock"):
        yield


def _kiln_routes() -> list[Guard]:
    out = capture(["ip", "-j", "route", "show", "table", "main", "proto", str(GUARD_PROTO)]) or "[]"
    try:
        routes = json.loads(out)
    except ValueError:
        return []
    return [Guard(r["dst"], int(r.get("metric", 0))) for r in routes if r.get("type") == "unreachable"]


def _metrics_to(network: str) -> set[int]:
    """Metrics of every route to exactly `network` in the main table, whoever added it (a route is
    known by its destination and metric: a foreign one with our metric would refuse ours)."""
    out = capture(["ip", "-j", "route", "show", "table", "main"]) or "[]"
    try:
        routes = json.loads(out)
    except ValueError:
        return set()
    return {int(r.get("metric", 0)) for r in routes if r.get("dst") == network}


def _ip(argv: list[str], step: str) -> runner.Result:
    return runner.run(argv, step=step, quiet=True, check=False, timeout=IP_TIMEOUT)


def install_guards(name: str, networks: Sequence[str]) -> list[Guard]:
    """Add the guard routes of `networks` for the run recorded as `name` (its record must exist):
    each recorded before it is added. A route that cannot be added is a UserError."""
    added: list[Guard] = []
    with _state_lock():
        data = _load(_record_path(name))
        if data is None:
            raise UserError(f"no record of {name} in {state_dir()}: guard routes are recorded first")
        for net in networks:
            network = str(ipaddress.ip_network(net, strict=False))
            taken = _metrics_to(network)
            metric = next(m for m in range(GUARD_METRIC, GUARD_METRIC + 1000) if m not in taken)
            guard = Guard(network, metric)
            data["routes"].append({"net": guard.net, "metric": guard.metric})
            _save(data)
            done = _ip(guard.argv("add"), f"guard route {guard.net}")
            if done.returncode != 0:
                data["routes"].pop()
                _save(data)
                raise UserError(f"cannot install the guard route `{' '.join(guard.argv('add'))}`: "
                                f"{done.output.strip() or 'exit ' + str(done.returncode)}",
                                "kiln stops rather than run VMs whose networks could leak to the host's")
            added.append(guard)
    return added


def remove_guards(name: str, guards: Sequence[Guard]) -> None:
    """Remove exactly these guard routes (another run's, on the same networks, stay)."""
    with _state_lock():
        for guard in guards:
            _ip(guard.argv("del"), f"remove guard route {guard.net}")
        data = _load(_record_path(name))
        if data is not None:
            gone = {(g.net, g.metric) for g in guards}
            data["routes"] = [r for r in data["routes"] if (r["net"], r["metric"]) not in gone]
            _save(data)


def _begin(name: str, namespace: bool) -> None:
    """Record a new run named `name` (after removing what a run that is gone left under that name)."""
    with _state_lock():
        path = _record_path(name)
        old = _load(path)
        if old is not None and _owner_alive(old):
            owner = old["owner"]
            raise UserError(f"{name} belongs to kiln process {owner['pid']}, which still runs",
                            "choose another name, or wait for that run to end")
        if old is not None:  # a killed run of that name (a reused PID): what it left goes first
            for line in _reap_one(path, old):
                say(f"==> {line}")
        _save({"name": name, "namespace": namespace, "owner": _me(), "routes": [], "processes": []})


def _end(name: str) -> None:
    with _state_lock():
        _record_path(name).unlink(missing_ok=True)


@contextlib.contextmanager
def guard_routes(name: str, networks: Sequence[str]) -> Iterator[list[Guard]]:
    """Guard routes for `networks` while the block runs, recorded as `name` (a run that is killed
    leaves them to reap_stale)."""
    _begin(name, namespace=False)
    guards: list[Guard] = []
    try:
        guards = install_guards(name, networks)
        yield guards
    finally:
        remove_guards(name, guards)
        _end(name)


def reap_stale() -> list[str]:
    """Remove what runs that are gone left: their daemons, namespaces (and every process in them)
    and guard routes, as their records list them. One line per thing removed. A route is always
    recorded before it is added, so none is left without a record; routes no record lists (another
    tool's, or a run's recorded elsewhere) are never touched."""
    if not state_dir().is_dir():
        return []
    lines: list[str] = []
    with _state_lock():
        for path in sorted(state_dir().glob("*.json")):
            data = _load(path)
            if data is None:
                continue  # being written (write_atomic makes that rare) or not ours: left alone
            if not _owner_alive(data):
                lines += _reap_one(path, data)
    return lines


def _reap_one(path: Path, data: dict[str, Any]) -> list[str]:
    """What the record of a run that is gone lists; the caller holds the state lock."""
    lines = []
    who = f"kiln process {data['owner'].get('pid')} ({' '.join(data['owner'].get('argv', [])[:3])})"
    for proc in data.get("processes", []):
        if runner.alive(int(proc["pid"]), proc.get("start")):
            _kill(int(proc["pid"]))
            lines.append(f"stopped {proc.get('what', 'process')} (pid {proc['pid']}), left by {who}")
    if data.get("namespace") and Path(f"/run/netns/{data['name']}").exists():
        stopped = _delete(data["name"])
        lines.append(f"deleted network namespace {data['name']}"
                     + (f" and stopped {stopped} process(es) in it" if stopped else "")
                     + f", left by {who}")
    routes = _kiln_routes()
    for route in data.get("routes", []):
        guard = Guard(route["net"], int(route["metric"]))
        if guard in routes:
            _ip(guard.argv("del"), f"remove guard route {guard.net}")
            lines.append(f"removed guard route unreachable {guard.net} metric {guard.metric}, left by {who}")
    path.unlink(missing_ok=True)
    return lines


def _kill(pid: int, grace: float = 10) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while runner.alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not runner.alive(pid):
            return


# -- the namespace --------------------------------------------------------------------------------

@contextlib.contextmanager
def libvirt_namespace(name: str, log_dir: Path, *, kvm: bool, start_timeout: float = 60,
                      networks: Sequence[str] | None = None) -> Iterator[LibvirtNamespace]:
    """The namespace with libvirtd running; `kvm`: whether its guests use KVM (else TCG).
    `networks`: what the guard routes cover (default: default_networks())."""
    if os.geteuid() == 0:  # first what killed runs left (a libvirtd among it would block problem())
        for line in reap_stale():
            say(f"==> {line}")
    why = problem()
    if why is not None:
        raise UserError(f"cannot create a libvirt network namespace: {why}", HINT)
    nets = list(networks) if networks is not None else default_networks()
    log_dir.mkdir(parents=True, exist_ok=True)
    ns = LibvirtNamespace(name, log_dir)
    _begin(name, namespace=True)
    try:
        if Path(f"/run/netns/{name}").exists():
            _delete(name)  # of that name, and no live run's (_begin checked): left by a killed run
        _ip_checked(["ip", "netns", "add", name], f"ip netns add {name}")
        _ip_checked(ns.argv(["ip", "link", "set", "lo", "up"]), f"lo up in {name}")
        ns.guards = install_guards(name, nets)
        for daemon, argv in (("virtlogd", ["virtlogd"]), ("libvirtd", libvirtd_argv(kvm))):
            # `ip netns exec`, unshare and sh all exec: the PID kept is the daemon's own.
            proc = runner.start(ns.argv(argv), step=f"{daemon} in {name}", log=log_dir / f"{daemon}.log")
            ns.processes.append(proc)
            _add_process(name, proc.pid, daemon)
        _wait_for_libvirtd(ns, start_timeout)
        _ensure_pool(ns)
        ns.volumes_at_start = frozenset(ns.volumes())
        yield ns
    finally:
        _teardown(ns)


def _ip_checked(argv: list[str], step: str) -> None:
    done = _ip(argv, step)
    if done.returncode != 0:
        raise UserError(f"{step} failed: {done.output.strip()}", HINT)


def _add_process(name: str, pid: int, what: str) -> None:
    with _state_lock():
        data = _load(_record_path(name))
        if data is not None:
            data["processes"].append({"pid": pid, "start": runner.process_start(pid), "what": what})
            _save(data)


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
        if ns.processes:
            active = ns.virsh("net-list", "--name").stdout.split()
            for net in active:
                ns.virsh("net-destroy", net)
    for proc in reversed(ns.processes):
        runner.finish(proc)
    if Path(f"/run/netns/{ns.name}").exists():
        _delete(ns.name)
    remove_guards(ns.name, ns.guards)
    _end(ns.name)


def _delete(name: str) -> int:
    """Stop whatever still runs in the namespace (by PID), then delete it; how many were stopped."""
    stopped: set[int] = set()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = namespace_pids(name)
        stopped |= set(pids)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if _alive(p)]
            time.sleep(0.2)
        if not pids:
            break
    _ip(["ip", "netns", "del", name], f"ip netns del {name}")
    return len(stopped)


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
