"""`kiln-node status`: parsing of what ZooKeeper and Mesos answer, the per-unit verdicts driven by
the image's catalog, and the CLI's exit codes. Real ZooKeeper answers are checked in the VM tests
(tests/e2e), real Mesos masters and agents in tests/integration/test_mesos_status.py. Here, HTTP
behaviour the probes rely on (no redirects followed, status codes) is shown with a plain local
HTTP server, which stands in for nothing but an HTTP peer."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

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


def test_master_state_of_the_leader_lists_its_active_agents() -> None:
    leading = {"leader": "master@10.141.141.10:5050", "pid": "master@10.141.141.10:5050",
               "elected_time": 1700000000.1, "activated_slaves": 2,
               "slaves": [{"hostname": "10.141.141.13", "active": True},
                          {"hostname": "10.141.141.14", "active": False}]}
    assert status.parse_master_state(leading) == (
        True, "leading master, 1 agent(s) active",
        {"leader": "10.141.141.10:5050", "is_leader": True, "activated_agents": 1,
         "active_agents": ["10.141.141.13"]})
    assert status.parse_master_state({})[:2] == (False, "no leading master elected")


def test_a_redirect_names_the_leader() -> None:
    assert status.parse_master_redirect("//10.141.141.11:5050/master/state") == (
        True, "follows leader 10.141.141.11:5050",
        {"leader": "10.141.141.11:5050", "is_leader": False, "activated_agents": 0, "active_agents": []})
    assert status.parse_master_redirect("")[0] is False


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


def test_node_status_checks_the_role_units_the_image_has(tmp_path: Path, node_root) -> None:
    node_root(tmp_path)
    _manifest(tmp_path, ["zookeeper", "haproxy", "docker"])
    seen = []

    def zookeeper(spec, probe):
        seen.append(probe)
        return status.parse_srvr("This ZooKeeper instance is not currently serving requests")

    result = status.node_status(SPEC, str(tmp_path), active=lambda unit: unit != "kiln-haproxy-bridge",
                                probes={"zookeeper": zookeeper})
    assert result["ready"] is False
    assert seen == [{"kind": "zookeeper", "port": 2181, "path": ""}], "the probe gets the catalog's port"
    by_unit = {u["unit"]: (u["active"], u["ready"], u["detail"]) for u in result["units"]}
    assert by_unit == {
        "zookeeper": (True, False, "not serving requests (no quorum yet?)"),
        "haproxy": (True, True, "active"),
        "kiln-haproxy-bridge": (False, False, "unit is not active"),
    }
    assert result["skipped"] == ["mesos not in this image: skipping mesos-master",
                                 "marathon not in this image: skipping marathon"]


def test_a_probe_that_cannot_connect_is_not_ready_with_the_reason() -> None:
    entry = {"unit": "zookeeper", "probe": {"kind": "zookeeper", "port": _closed_port()}}
    refused = status.unit_status(entry, SPEC, active=lambda unit: True)
    assert refused["ready"] is False
    assert refused["detail"].startswith("no answer (")


def test_a_probe_kind_this_kiln_node_does_not_know_is_not_ready() -> None:
    entry = {"unit": "x", "probe": {"kind": "telepathy", "port": 1}}
    assert status.unit_status(entry, SPEC, active=lambda unit: True)["detail"] == \
        "probe kind 'telepathy' unknown to this kiln-node"


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _HttpPeer(http.server.BaseHTTPRequestHandler):
    """A plain HTTP peer: path -> (status, body, Location)."""

    answers: ClassVar[dict[str, tuple[int, str, str]]] = {}

    def do_GET(self) -> None:
        code, body, location = self.answers.get(self.path, (404, "", ""))
        data = body.encode()
        self.send_response(code)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_peer() -> Iterator[tuple[int, type[_HttpPeer]]]:
    handler = type("Handler", (_HttpPeer,), {"answers": {}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


def test_the_master_probe_reads_a_redirect_as_the_leader_s_name(http_peer) -> None:
    port, handler = http_peer
    spec = {**SPEC, "ip": "127.0.0.1"}
    probe = {"kind": "mesos-master", "port": port}
    handler.answers["/state"] = (307, "", "//10.141.141.12:5050/master/state")
    assert status.PROBES["mesos-master"](spec, probe)[:2] == (True, "follows leader 10.141.141.12:5050")
    handler.answers["/state"] = (503, "No leader elected", "")
    assert status.PROBES["mesos-master"](spec, probe)[0] is False
    handler.answers["/state"] = (200, "<html>not json</html>", "")
    assert status.PROBES["mesos-master"](spec, probe)[1].endswith("answered something that is not JSON")
    handler.answers["/state"] = (200, "[" * 100000, "")
    assert status.PROBES["mesos-master"](spec, probe)[1].endswith("answered something that is not JSON")


def test_a_master_whose_registry_log_has_not_caught_up_is_not_ready(http_peer) -> None:
    """Leader or follower, a master is ready only once its replica of the registry log caught up
    (registrar/log/recovered = 1); no metric (in-memory registry) or no answer does not hold it back."""
    port, handler = http_peer
    spec = {**SPEC, "ip": "127.0.0.1"}
    probe = {"kind": "mesos-master", "port": port}
    metrics = "/metrics/snapshot?timeout=2secs"
    handler.answers["/state"] = (307, "", "//10.141.141.12:5050/master/state")
    handler.answers[metrics] = (200, json.dumps({"registrar/log/recovered": 0.0, "master/elected": 0.0}), "")
    ready, detail, facts = status.PROBES["mesos-master"](spec, probe)
    assert (ready, facts["log_recovered"]) == (False, False)
    assert detail == ("follows leader 10.141.141.12:5050, "
                      "but its replica of the registry log has not caught up yet")
    handler.answers[metrics] = (200, json.dumps({"registrar/log/recovered": 1.0}), "")
    assert status.PROBES["mesos-master"](spec, probe)[0] is True
    leading = {"leader": "master@127.0.0.1:5050", "pid": "master@127.0.0.1:5050", "slaves": []}
    handler.answers["/state"] = (200, json.dumps(leading), "")
    handler.answers[metrics] = (200, json.dumps({"registrar/log/recovered": 0}), "")
    assert status.PROBES["mesos-master"](spec, probe)[0] is False
    for answer in ((200, json.dumps({"master/elected": 1.0}), ""), (404, "", ""), (200, "not json", ""),
                   (200, json.dumps({"registrar/log/recovered": True}), "")):
        handler.answers[metrics] = answer
        ready, _, facts = status.PROBES["mesos-master"](spec, probe)
        assert (ready, facts["log_recovered"]) == (True, None), answer


def test_the_http_probe_wants_200_on_its_path(http_peer) -> None:
    port, handler = http_peer
    probe = {"kind": "http", "port": port, "path": "/ping"}
    handler.answers["/ping"] = (200, "pong", "")
    assert status.PROBES["http"]({**SPEC, "ip": "127.0.0.1"}, probe)[:2] == (True, "answers /ping")
    handler.answers["/ping"] = (302, "", "/elsewhere")
    assert status.PROBES["http"]({**SPEC, "ip": "127.0.0.1"}, probe)[0] is False


def test_cli_status_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str], node_root) -> None:
    node_root(tmp_path)
    assert cli.main(["status", "--root", str(tmp_path)]) == 1
    assert "no node spec applied yet" in capsys.readouterr().out
    _manifest(tmp_path, [])  # an image with none of the role's components: nothing to wait for
    state.save(str(tmp_path), state.dump(SPEC, {}, []))
    assert cli.main(["status", "--root", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["name"], out["role"], out["ready"], out["units"]) == ("m1", "master", True, [])
