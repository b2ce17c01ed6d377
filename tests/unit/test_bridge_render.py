"""The Marathon -> HAProxy bridge's parsing and rendering (Marathon's /v2/apps JSON comes
from tests/fixtures/marathon/, a stand-in for a live Marathon)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from kiln.paths import REPO_ROOT
from kiln_bridge.bridge import BadResponse, parse_apps, render

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "marathon" / "apps.json"


def fixture(port_a: int = 18081, port_b: int = 18082) -> dict:
    text = FIXTURE.read_text().replace("PORT_A", str(port_a)).replace("PORT_B", str(port_b))
    return json.loads(text)


def test_renders_tcp_listeners_and_vhost_routing_exactly() -> None:
    cfg = render(parse_apps(fixture()), vhost_port=80, bind="0.0.0.0")
    body = cfg.split("\n\n", 2)[2]
    assert body == (
        "frontend kiln_vhosts\n"
        "  bind 0.0.0.0:80\n"
        "  mode http\n"
        "  acl host_api_v1 hdr(host),field(1,:) -i api.example.test api2.example.test\n"
        "  use_backend vhost_api_v1 if host_api_v1\n"
        "  acl host_web hdr(host),field(1,:) -i web.example.test\n"
        "  use_backend vhost_web if host_web\n"
        "\n"
        "backend vhost_api_v1\n  mode http\n  balance roundrobin\n"
        "  server api_v1_0 127.0.0.1:18082 check\n\n"
        "backend vhost_web\n  mode http\n  balance roundrobin\n"
        "  server web_0 127.0.0.1:18081 check\n\n"
        "listen api_v1_10002\n  bind 0.0.0.0:10002\n  mode tcp\n  balance leastconn\n"
        "  server api_v1_10002_0 127.0.0.1:18082 check\n\n"
        "listen web_10001\n  bind 0.0.0.0:10001\n  mode tcp\n  balance leastconn\n"
        "  server web_10001_0 127.0.0.1:18081 check\n"
    )


def test_staging_and_unhealthy_tasks_get_no_traffic() -> None:
    apps = {a.app_id: a for a in parse_apps(fixture())}
    assert apps["/web"].tasks == (("127.0.0.1", (18081,)),)
    assert apps["/api/v1"].tasks == (("127.0.0.1", (18082,)),)


def test_rendering_is_deterministic_whatever_the_order() -> None:
    doc = fixture()
    reversed_doc = {"apps": list(reversed(doc["apps"]))}
    assert render(parse_apps(doc)) == render(parse_apps(reversed_doc))


@pytest.mark.parametrize("document, message", [
    ("not a dict", "expected an object with an 'apps' list"),
    ({"apps": "x"}, "expected an object with an 'apps' list"),
    ({"apps": [{"ports": [1]}]}, "string 'id'"),
    ({"apps": [{"id": "/a", "ports": ["80"]}]}, "service ports must be integers"),
    ({"apps": [{"id": "/a", "labels": {"HAPROXY_0_VHOST": "bad host!"}}]}, "bad HAPROXY_0_VHOST"),
    ({"apps": [{"id": "/a", "tasks": [{"host": "h", "ports": [0]}]}]}, "ports must be integers 1-65535"),
])
def test_malformed_documents_are_rejected(document: object, message: str) -> None:
    with pytest.raises(BadResponse, match=message):
        parse_apps(document)


def test_bridge_code_runs_on_python_3_9() -> None:
    for path in (REPO_ROOT / "kiln_bridge").glob("*.py"):
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))


def test_render_cli(tmp_path: Path) -> None:
    import subprocess
    import sys

    doc = tmp_path / "apps.json"
    doc.write_text(json.dumps(fixture()))
    out = subprocess.run([sys.executable, "-m", "kiln_bridge", "render", "--from-file", str(doc)],
                         capture_output=True, text=True, cwd=REPO_ROOT)
    assert out.returncode == 0
    assert "listen web_10001" in out.stdout
    doc.write_text("{}")
    bad = subprocess.run([sys.executable, "-m", "kiln_bridge", "render", "--from-file", str(doc)],
                         capture_output=True, text=True, cwd=REPO_ROOT)
    assert bad.returncode == 2 and "cannot render" in bad.stderr
