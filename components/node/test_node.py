"""The node configurator baked into the image."""

from __future__ import annotations

from kiln_infra import boot_only, require


def test_kiln_node_runs(host, components) -> None:
    require(components, "node")
    out = host.run("sudo kiln-node --help")
    assert out.rc == 0
    assert "apply" in out.stdout


def test_second_apply_changes_nothing(host, components, phase) -> None:
    require(components, "node")
    boot_only(phase)
    out = host.run("sudo kiln-node apply /etc/kiln/node.json")
    assert out.rc == 0, out.stderr
    assert "no change" in out.stdout.lower()
