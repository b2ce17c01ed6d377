"""HAProxy and kiln's Marathon bridge."""

from __future__ import annotations

from conftest import require, unit_enabled


def test_haproxy_and_bridge_installed(host, components, phase) -> None:
    require(components, "haproxy")
    assert host.exists("haproxy")
    assert host.file("/usr/local/sbin/kiln-haproxy-bridge").mode & 0o111
    assert host.file("/etc/systemd/system/kiln-haproxy-bridge.service").exists
    assert host.run("PYTHONPATH=/opt/kiln/lib python3 -m kiln_bridge --help").rc == 0
    if phase == "bake":
        assert not unit_enabled(host, "haproxy")
        assert not unit_enabled(host, "kiln-haproxy-bridge")
