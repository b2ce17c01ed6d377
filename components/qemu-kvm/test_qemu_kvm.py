"""What the Rancher Mesos executor needs: qemu, a br0 bridge, bridge.conf, nested KVM."""

from __future__ import annotations

from kiln_infra import boot_only, require


def test_qemu_and_bridge_config(host, components) -> None:
    require(components, "qemu-kvm")
    assert host.exists("qemu-system-x86_64") or host.file("/usr/libexec/qemu-kvm").exists
    assert "allow br0" in host.file("/etc/qemu/bridge.conf").content_string.split("\n")
    assert "nested=1" in host.file("/etc/modprobe.d/kiln-nested.conf").content_string


def test_br0_exists_at_boot(host, components, phase) -> None:
    require(components, "qemu-kvm")
    boot_only(phase)
    assert host.interface("br0").exists
