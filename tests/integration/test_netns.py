"""kiln.vagrant.netns for real: a namespace with its own libvirtd, /dev/kvm masked from it when its
guests run under TCG, and nothing left behind (processes by PID, the namespace, the routes)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

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
