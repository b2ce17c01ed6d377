"""`kiln-node status`: parsing of what ZooKeeper and Mesos answer, the per-unit verdicts, and the
CLI's exit codes. Real ZooKeeper answers are checked in the VM tests (tests/e2e); Mesos cannot be
installed here, so its /state answers come from a local HTTP server replaying the documented
JSON fields (a stand-in, named as such)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from kiln_node import cli, state, status

SRVR_FOLLOWER = """Zookeeper version: 3.8.4-9316c2a7a97e1666d8f4593f34dd6fc36ecc436c, built on 2024-02-12
Latency min/avg/max: 0/0.0/0
Received: 3
Sent: 2
Connections: 1
Outstanding: 0
Zxid: 0x100000002
Mode: follower
Node count: 5
"""


def test_srvr_modes_that_serve_and_ones_that_do_not() -> None:
    ready, detail, facts = status.parse_srvr(SRVR_FOLLOWER)
    assert (ready, detail) == (True, "follower")
    assert facts == {"zookeeper_version": "3.8.4-9316c2a7a97e1666d8f4593f34dd6fc36ecc436c, built on "
                                          "2024-02-12", "zxid": "0x100000002", "mode": "follower",
                     "node_count": "5"}
    assert status.parse_srvr(SRVR_FOLLOWER.replace("follower", "leader"))[:2] == (True, "leader")
    assert status.parse_srvr("This ZooKeeper instance is not currently serving requests\n")[:2] == (
        False, "not serving requests (no quorum yet?)")
    assert status.parse_srvr("srvr is not executed because it is not in the whitelist.\n")[0] is False
    assert status.parse_srvr("")[:2] == (False, "unexpected answer: no answer")


def test_master_state_leader_follower_and_no_election() -> None:
    leading = {"leader": "master@10.141.141.10:5050", "elected_time": 1700000000.1, "activated_slaves": 2}
    assert status.parse_master_state(leading) == (
        True, "leading master, 2 agent(s) registered",
        {"leader": "10.141.141.10:5050", "is_leader": True, "activated_agents": 2})
    following = {"leader": "master@10.141.141.11:5050", "activated_slaves": 0}
    assert status.parse_master_state(following)[:2] == (True, "follows leader 10.141.141.11:5050")
    assert status.parse_master_state({})[:2] == (False, "no leading master elected")


def test_agent_state_registered_or_not() -> None:
    assert status.parse_agent_state({"id": "a-S0", "master_hostname": "10.141.141.10"})[:2] == (
        True, "registered with 10.141.141.10")
    assert status.parse_agent_state({"id": "", "master_hostname": ""})[0] is False


SPEC = {"cluster": "kiln", "role": "master", "node_id": 1, "name": "m1", "ip": "127.0.0.1",
        "masters": ["127.0.0.1", "127.0.0.2", "127.0.0.3"], "options": {}}


def _manifest(root: Path, components: list[str]) -> None:
    path = root / "etc" / "kiln" / "manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"components": {c: {"version": "1"} for c in components}}))


def test_node_status_checks_the_role_units_the_image_has(tmp_path: Path) -> None:
    _manifest(tmp_path, ["zookeeper", "haproxy", "docker"])
    probes = {"zookeeper": lambda spec: status.parse_srvr("This ZooKeeper instance is not currently "
                                                          "serving requests")}
    result = status.node_status(SPEC, str(tmp_path), active=lambda unit: unit != "kiln-haproxy-bridge",
                                probes=probes)
    assert result["ready"] is False
    by_unit = {u["unit"]: (u["active"], u["ready"], u["detail"]) for u in result["units"]}
    assert by_unit == {
        "zookeeper": (True, False, "not serving requests (no quorum yet?)"),
        "haproxy": (True, True, "active"),
        "kiln-haproxy-bridge": (False, False, "unit is not active"),
    }
    assert result["skipped"] == ["mesos not in this image: skipping mesos-master",
                                 "marathon not in this image: skipping marathon"]


def test_a_probe_that_cannot_connect_is_not_ready_with_the_reason(tmp_path: Path) -> None:
    _manifest(tmp_path, ["zookeeper"])
    refused = status.unit_status("zookeeper", SPEC, active=lambda unit: True,
                                 probes={"zookeeper": lambda spec: status.parse_srvr(
                                     status.four_letter_word("srvr", port=_closed_port()))})
    assert refused["ready"] is False
    assert refused["detail"].startswith("no answer (")


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _MesosStandIn(http.server.BaseHTTPRequestHandler):
    """Stand-in for a Mesos master's /state (Mesos binaries cannot be installed offline)."""

    answers: ClassVar[dict[str, Any]] = {}

    def do_GET(self) -> None:
        body = self.answers.get(self.path)
        if body is None:
            self.send_error(404)
            return
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def mesos_stand_in() -> Iterator[tuple[int, type[_MesosStandIn]]]:
    handler = type("Handler", (_MesosStandIn,), {"answers": {}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


def test_json_probe_over_http_reads_state_and_rejects_garbage(mesos_stand_in) -> None:
    port, handler = mesos_stand_in
    base = f"http://127.0.0.1:{port}"
    handler.answers["/state"] = {"leader": "master@127.0.0.1:5050", "elected_time": 1.0,
                                 "activated_slaves": 1}
    assert status._json_probe(f"{base}/state", status.parse_master_state)[:2] == (
        True, "leading master, 1 agent(s) registered")
    handler.answers["/state"] = "<html>not json</html>"
    assert status._json_probe(f"{base}/state", status.parse_master_state)[:2] == (
        False, f"{base}/state answered something that is not JSON")
    assert status._json_probe(f"{base}/missing", status.parse_master_state)[:2] == (
        False, f"{base}/missing answered HTTP 404")


def test_cli_status_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status", "--root", str(tmp_path)]) == 1
    assert "no node spec applied yet" in capsys.readouterr().out
    _manifest(tmp_path, [])  # an image with none of the role's components: nothing to wait for
    state.save(str(tmp_path), state.dump(SPEC, {}, []))
    assert cli.main(["status", "--root", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["name"], out["role"], out["ready"], out["units"]) == ("m1", "master", True, [])
