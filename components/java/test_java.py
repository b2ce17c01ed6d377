from __future__ import annotations

from kiln_infra import require


def test_a_jre_is_installed(host, components) -> None:
    require(components, "java")
    out = host.run("java -version 2>&1")
    assert out.rc == 0
    assert "openjdk" in out.stdout.lower() or "corretto" in out.stdout.lower()
