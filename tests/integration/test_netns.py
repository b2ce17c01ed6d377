"""kiln.vagrant.netns for real: a namespace with its own libvirtd, /dev/kvm masked from it when its
guests run under TCG, and nothing left behind (processes by PID, the namespace, the routes)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kiln.paths import Paths
from kiln.vagrant import netns

DEV_NULL = (1, 3)
DOMAIN = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
<os><type arch='x86_64'>hvm</type></os><cpu mode='host-model'/>
<devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices></domain>"""


def test_libvirtd_sees_kvm_only_when_its_guests_use_it(tmp_path: Path) -> None:
    device = tmp_path / "kvm"
    device.touch()
    assert netns.libvirtd_argv(kvm=True, device=str(device)) == ["libvirtd"]
    masked = netns.libvirtd_argv(kvm=False, device=str(device))
    assert masked[:4] == ["unshare", "--mount", "--propagation", "private"]
    assert masked[-1] == f"mount --bind /dev/null {device} && exec libvirtd"
    assert netns.libvirtd_argv(kvm=False, device=str(tmp_path / "absent")) == ["libvirtd"]


def _device_numbers(pid: int, path: str) -> tuple[int, int]:
    out = subprocess.run(["nsenter", "-t", str(pid), "-m", "stat", "-c", "%t %T", path],
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0], 16), int(out[1], 16)


@pytest.mark.skipif(netns.problem() is not None, reason=f"no private libvirtd here: {netns.problem()}")
@pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="this machine has no /dev/kvm to mask")
def test_a_tcg_namespace_masks_kvm_from_libvirtd_and_leaves_nothing(tmp_path: Path) -> None:
    name = f"kiln-it-{os.getpid()}"
    with netns.libvirt_namespace(name, tmp_path / "logs", kvm=False) as ns:
        libvirtd = ns.processes[-1]
        assert Path(f"/proc/{libvirtd.pid}/comm").read_text().strip() == "libvirtd", "PID kept is the daemon"
        assert _device_numbers(libvirtd.pid, "/dev/kvm") == DEV_NULL
        assert _device_numbers(os.getpid(), "/dev/kvm") != DEV_NULL, "the host's /dev/kvm is untouched"
        domain = tmp_path / "domain.xml"
        domain.write_text(DOMAIN.format(name=name))
        ns.virsh("define", str(domain), check=True)
        try:
            assert "<domain type='qemu'" in ns.virsh("dumpxml", name, check=True).stdout
        finally:
            ns.virsh("undefine", name)
        pids = [p.pid for p in ns.processes]
    assert name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    routes = subprocess.run(["ip", "route", "show"], capture_output=True, text=True).stdout
    assert "unreachable 10.141.141.0/24" not in routes
    assert not (netns.state_dir() / f"{name}.json").exists()


# -- guard routes and what killed runs leave --------------------------------------------------------

NEEDS_ROOT_IP = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                                   reason="guard routes need root and iproute2")
NET = "10.199.77.0/24"  # a network no test machine uses; only unreachable routes are added for it


def _guards(net: str) -> list[tuple[int, int]]:
    """(metric, proto) of the unreachable routes to `net` in the host's main table."""
    out = subprocess.run(["ip", "-j", "route", "show", "table", "main"], capture_output=True, text=True,
                         check=True).stdout
    routes = json.loads(out)
    found = []
    for route in routes:
        if route.get("dst") == net and route.get("type") == "unreachable":
            proto = subprocess.run(["ip", "route", "show", "table", "main", "exact", net, "metric",
                                    str(route["metric"])], capture_output=True, text=True).stdout
            found.append((int(route["metric"]), netns.GUARD_PROTO if f"proto {netns.GUARD_PROTO}" in proto
                          else 0))
    return sorted(found)


def test_guard_networks_follow_the_config(tree: Paths) -> None:
    config = json.loads(tree.config.read_text())
    config["cluster"]["network_prefix"] = "10.55.66"
    config["trial"]["ip_address"] = "172.30.9.10"
    assert netns.guard_networks(config) == ["10.55.66.0/24", "172.30.9.0/24", *netns.LIBVIRT_NETWORKS]


GUARD_CHILD = """
import sys
from kiln.vagrant import netns
with netns.guard_routes(sys.argv[1], [sys.argv[2]]) as guards:
    print("GUARDED", guards[0].metric, flush=True)
    sys.stdin.read()
"""


def _guard_child(name: str, net: str, *prefix: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*prefix, sys.executable, "-c", GUARD_CHILD, name, net], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _record(name: str) -> Path:
    return netns.state_dir() / f"{name}.json"


@NEEDS_ROOT_IP
def test_two_runs_at_once_each_remove_only_their_own_guard() -> None:
    first = _guard_child("kiln-it-guard-a", NET)
    second = None
    try:
        assert first.stdout is not None and first.stdout.readline().split() == ["GUARDED", "4000"]
        second = _guard_child("kiln-it-guard-b", NET)
        assert second.stdout is not None and second.stdout.readline().split() == ["GUARDED", "4001"]
        assert _guards(NET) == [(4000, netns.GUARD_PROTO), (4001, netns.GUARD_PROTO)]
        first.communicate("", timeout=30)  # the first run ends: its guard goes, the second's stays
        assert first.returncode == 0
        assert _guards(NET) == [(4001, netns.GUARD_PROTO)]
        second.communicate("", timeout=30)
        assert _guards(NET) == []
        assert not _record("kiln-it-guard-a").exists() and not _record("kiln-it-guard-b").exists()
    finally:
        for child in (first, second):
            if child is not None and child.poll() is None:
                child.kill()
                child.wait()
        netns.reap_stale()


@NEEDS_ROOT_IP
def test_a_guard_that_cannot_be_installed_stops_the_run() -> None:
    # The same root, without CAP_NET_ADMIN: `ip route add` is refused.
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    child = _guard_child("kiln-it-guard-refused", NET, "setpriv", "--bounding-set", "-net_admin",
                         "--inh-caps", "-net_admin", "--")
    out, err = child.communicate("", timeout=60)
    assert child.returncode != 0 and "GUARDED" not in out
    assert "cannot install the guard route" in err and NET in err, err
    assert _guards(NET) == []
    assert not _record("kiln-it-guard-refused").exists()


@NEEDS_ROOT_IP
def test_a_killed_runs_guard_is_reaped_and_a_live_runs_is_not() -> None:
    live = _guard_child("kiln-it-guard-live", NET)
    killed = None
    try:
        assert live.stdout is not None and live.stdout.readline().startswith("GUARDED 4000")
        killed = _guard_child("kiln-it-guard-killed", NET)
        assert killed.stdout is not None and killed.stdout.readline().startswith("GUARDED 4001")
        killed.kill()  # SIGKILL: nothing of its own cleanup runs
        killed.wait()
        assert _guards(NET) == [(4000, netns.GUARD_PROTO), (4001, netns.GUARD_PROTO)]
        lines = [line for line in netns.reap_stale() if NET in line]
        assert len(lines) == 1 and f"metric 4001, left by kiln process {killed.pid}" in lines[0], lines
        assert _guards(NET) == [(4000, netns.GUARD_PROTO)], "the live run's guard stays"
        assert _record("kiln-it-guard-live").exists() and not _record("kiln-it-guard-killed").exists()
    finally:
        for child in (live, killed):
            if child is not None and child.poll() is None:
                child.communicate("", timeout=30)
        netns.reap_stale()
    assert _guards(NET) == []


LIBVIRT = pytest.mark.skipif(netns.problem() is not None,
                             reason=f"no private libvirtd here: {netns.problem()}")


@LIBVIRT
def test_the_guard_routes_exist_while_the_namespace_lives(tmp_path: Path, tree: Paths) -> None:
    config = json.loads(tree.config.read_text())
    config["cluster"]["network_prefix"] = "10.199.78"
    networks = netns.guard_networks(config)
    name = f"kiln-it-guards-{os.getpid()}"
    with netns.libvirt_namespace(name, tmp_path / "logs", kvm=False, networks=networks) as ns:
        assert sorted(g.net for g in ns.guards) == sorted(networks)
        for net in networks:
            assert [proto for _, proto in _guards(net)] == [netns.GUARD_PROTO], f"no guard for {net}"
        # What a command run outside the namespace by mistake meets: no route to the VMs' networks.
        probe = subprocess.run(["ip", "route", "get", "10.199.78.10"], capture_output=True, text=True)
        assert probe.returncode != 0 or "unreachable" in probe.stdout, probe
        record = json.loads((netns.state_dir() / f"{name}.json").read_text())
        assert record["owner"]["pid"] == os.getpid() and record["namespace"] is True
        assert {p["what"] for p in record["processes"]} == {"virtlogd", "libvirtd"}
    for net in networks:
        assert _guards(net) == [], f"guard for {net} left behind"
    assert not (netns.state_dir() / f"{name}.json").exists()


NAMESPACE_CHILD = """
import sys
from pathlib import Path
from kiln.vagrant import netns
with netns.libvirt_namespace(sys.argv[1], Path(sys.argv[2]), kvm=False, networks=[sys.argv[3]]) as ns:
    print("READY", " ".join(str(p.pid) for p in ns.processes), flush=True)
    sys.stdin.read()
"""


@LIBVIRT
def test_a_sigkilled_owner_leaves_nothing_the_next_run_does_not_remove(tmp_path: Path) -> None:
    name = f"kiln-it-killed-{os.getpid()}"
    child = subprocess.Popen([sys.executable, "-c", NAMESPACE_CHILD, name, str(tmp_path / "logs"), NET],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    ready = child.stdout.readline().split()
    assert ready[0] == "READY", ready
    daemons = [int(p) for p in ready[1:]]
    child.kill()  # SIGKILL: no finally of its runs
    child.wait()
    deadline = time.monotonic() + 30
    while any(_running(p) for p in daemons) and time.monotonic() < deadline:
        time.sleep(0.2)
    took = 30 - (deadline - time.monotonic())
    print(f"libvirtd and virtlogd ended {took:.1f}s after their owner was SIGKILLed")
    assert not any(_running(p) for p in daemons), "the daemons die with their owner"
    assert name in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert _guards(NET) == [(4000, netns.GUARD_PROTO)], "left for the next run"
    lines = netns.reap_stale()
    print("\n".join(lines))
    assert any(f"deleted network namespace {name}" in line and str(child.pid) in line for line in lines)
    assert any(f"removed guard route unreachable {NET} metric 4000" in line for line in lines)
    assert name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert _guards(NET) == []
    assert not (netns.state_dir() / f"{name}.json").exists()
    assert netns.reap_stale() == []


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
