"""The node configurator baked into the image."""

from __future__ import annotations

from conftest import require


def test_kiln_node_runs(host, components) -> None:
    require(components, "node")
    out = host.run("kiln-node --help")
    assert out.rc == 0
    assert "apply" in out.stdout
