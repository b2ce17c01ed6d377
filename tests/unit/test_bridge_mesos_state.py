"""kiln_bridge's Mesos source: a master's /master/state reduced to routes (kiln_bridge/mesos.py).

tests/fixtures/mesos/state.json was captured from a real Mesos 1.11 master (tests/mesos_local.py:
one master, two agents, tasks launched with mesos-execute), with the task ports and the agents'
host names then rewritten to fixed values. Its tasks:
  web-1         running, discovery port "http" (31004), HAPROXY_0_PORT=10001, HAPROXY_0_VHOST, agent S0
  plain-2       running, no discovery, ports resource [31001, 31003], HAPROXY_1_PORT=10002, agent S1
  unlabelled-3  running, no labels: not routed
  dns-4         running, discovery port udp with HAPROXY_0_PORT=10053: left out, named
  done-5        finished (a completed framework)
  sick-6        running, its health check failing (healthy: false): not routed
The live behaviour (leader, redirects, fail-over, real traffic) is tested against real masters in
tests/integration/test_bridge_mesos.py.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from typing import Any

import pytest

from kiln.paths import REPO_ROOT
from kiln_bridge.cli import main
from kiln_bridge.fetch import Waiting
from kiln_bridge.mesos import MesosSource, check_leading, leader_url, name_part, parse_state
from kiln_bridge.model import App, BadResponse, Task
from kiln_bridge.render import render

STATE = REPO_ROOT / "tests" / "fixtures" / "mesos" / "state.json"
WEB = "/mesos-execute-instance/web"
PLAIN = "/mesos-execute-instance/plain-2"
SICK = "/mesos-execute-instance/sick-6"
S0, S1 = "10.141.141.11", "10.141.141.12"


def state() -> dict[str, Any]:
    return json.loads(STATE.read_text())


def task(document: dict[str, Any], task_id: str) -> dict[str, Any]:
    for framework in document["frameworks"]:
        for found in framework["tasks"]:
            if found["id"] == task_id:
                return found
    raise KeyError(task_id)


def agent_of(document: dict[str, Any], task_id: str) -> dict[str, Any]:
    return next(a for a in document["slaves"] if a["id"] == task(document, task_id)["slave_id"])


def port_ranges(document: dict[str, Any], text: str) -> None:
    """web-1 without discovery info, holding `text` as its ports resource."""
    task(document, "web-1").update(discovery=None, resources={"ports": text})


def labels(document: dict[str, Any], task_id: str, **values: str) -> None:
    task(document, task_id)["labels"] = [{"key": k, "value": v} for k, v in values.items()]


EXPECTED_APPS = (
    App(PLAIN, ((1, 10002),), (), (Task(S1, (31001, 31003)),)),
    App(WEB, ((1, 10001),), ("web.example.test",), (Task(S0, (31004, 31004)),)),
)
DNS_NOTE = ("dropped task dns-4 (frameworks[3].tasks[0]) of framework 'mesos-execute instance': "
            "HAPROXY_0_PORT names a port that is not tcp")


def test_routes_in_a_real_master_state() -> None:
    routes = parse_state(state())
    assert routes.apps == EXPECTED_APPS
    assert routes.dropped == (DNS_NOTE,)


def test_the_render_command_reads_a_master_state(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["render", "--source", "mesos", "--from-file", str(STATE), "--vhost-port", "8080"]
    assert main(argv, env={}) == 0
    out, err = capsys.readouterr()
    assert err == f"kiln-haproxy-bridge: {DNS_NOTE}\n"
    name = "mesos-execute-instance_web"
    assert (f"  acl vhost_{name} hdr(host),field(1,:) -i web.example.test\n"
            f"  use_backend vhost_{name} if vhost_{name}\n\nbackend vhost_{name}\n  mode http\n"
            f"  balance roundrobin\n  option forwardfor\n  server {S0}:31004 {S0}:31004 check\n") in out
    assert (f"listen tcp_mesos-execute-instance_plain-2_10002\n  bind 0.0.0.0:10002\n  mode tcp\n"
            f"  balance leastconn\n  server {S1}:31003 {S1}:31003 check\n") in out
    assert f"listen tcp_{name}_10001\n  bind 0.0.0.0:10001\n  mode tcp\n  balance leastconn\n" \
           f"  server {S0}:31004 {S0}:31004 check\n" in out
    assert out.count("\nlisten ") == 2, "unlabelled, unhealthy, finished and udp tasks get no listener"


def test_the_marathon_source_refuses_a_master_state(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "--from-file", str(STATE)], env={}) == 2
    assert "expected a JSON object with an 'apps' list" in capsys.readouterr().err


def test_the_source_comes_from_the_environment(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "--from-file", str(STATE)], env={"KILN_BRIDGE_SOURCE": "mesos"}) == 0
    assert "listen tcp_mesos-execute-instance_web_10001" in capsys.readouterr().out


# --- the rule, one case at a time ------------------------------------------------------------------


def test_a_port_label_picks_the_task_port_by_index() -> None:
    doc = state()
    labels(doc, "plain-2", HAPROXY_0_PORT="10020", HAPROXY_1_PORT="10021")
    (plain,) = [app for app in parse_state(doc).apps if app.app_id == PLAIN]
    assert plain.service_ports == ((1, 10020), (2, 10021))
    assert plain.tasks == (Task(S1, (31001, 31001, 31003)),)
    text = render([plain])
    assert "listen tcp_mesos-execute-instance_plain-2_10020\n  bind 0.0.0.0:10020\n  mode tcp\n" \
           f"  balance leastconn\n  server {S1}:31001 {S1}:31001 check\n" in text
    assert f"_10021\n  bind 0.0.0.0:10021\n  mode tcp\n  balance leastconn\n  server {S1}:31003 " in text


def test_discovery_ports_win_over_the_ports_resource() -> None:
    doc = state()
    web = task(doc, "web-1")
    web["resources"]["ports"] = "[31004-31006]"
    web["discovery"]["ports"]["ports"] = [{"number": 31006, "protocol": "tcp"}, {"number": 31004}]
    (app,) = [a for a in parse_state(doc).apps if a.app_id == WEB]
    assert app.tasks == (Task(S0, (31006, 31006)),)


def test_a_task_without_labels_or_with_failing_health_is_not_routed() -> None:
    doc = state()
    for task_id in ("unlabelled-3", "sick-6"):
        assert task_id not in json.dumps(parse_state(doc).apps)
    task(doc, "sick-6")["statuses"][-1]["healthy"] = True
    ids = [app.app_id for app in parse_state(doc).apps]
    assert ids == [PLAIN, SICK, WEB]


def test_tasks_of_one_service_with_different_labels_each_serve_what_they_ask() -> None:
    doc = state()
    framework = next(f for f in doc["frameworks"] if f["tasks"][0]["id"] == "web-1")
    newer = copy.deepcopy(framework["tasks"][0])
    newer.update(id="web-1b", slave_id=task(doc, "plain-2")["slave_id"],
                 labels=[{"key": "HAPROXY_0_PORT", "value": "10011"}])
    newer["discovery"]["ports"]["ports"][0]["number"] = 31007
    framework["tasks"].append(newer)
    (app,) = [a for a in parse_state(doc).apps if a.app_id == WEB]
    assert app.service_ports == ((1, 10001), (2, 10011))
    assert app.tasks == (Task(S0, (31004, 31004, 0)), Task(S1, (31007, 0, 31007)))
    text = render([app])
    assert f"_10001\n  bind 0.0.0.0:10001\n  mode tcp\n  balance leastconn\n  server {S0}:31004 " \
           f"{S0}:31004 check\n\n" in text
    assert text.endswith(f"_10011\n  bind 0.0.0.0:10011\n  mode tcp\n  balance leastconn\n"
                         f"  server {S1}:31007 {S1}:31007 check\n")


def test_a_service_port_is_served_once_and_never_on_the_vhost_port() -> None:
    doc = state()
    labels(doc, "plain-2", HAPROXY_0_PORT="10001")  # web-1 has it, and /…/plain-2 sorts first
    labels(doc, "sick-6", HAPROXY_0_PORT="80")
    task(doc, "sick-6")["statuses"][-1]["healthy"] = True
    routes = parse_state(doc, reserved_ports=(80,))
    assert routes.dropped == (DNS_NOTE, f"service port 80 of {SICK} is the vhost port: not routed",
                              f"service port 10001 of {WEB} is {PLAIN}'s already: not routed")
    ports = {app.app_id: app.service_ports for app in routes.apps}
    assert ports == {PLAIN: ((1, 10001),), SICK: (), WEB: ()}
    text = render(routes.apps, vhost_port=80)
    assert text.count("bind 0.0.0.0:10001\n") == 1


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: labels(d, "web-1", HAPROXY_0_PORT="http"),
     "label HAPROXY_0_PORT='http' is not a port 1-65535"),
    (lambda d: labels(d, "web-1", HAPROXY_0_PORT="70000"), "label HAPROXY_0_PORT='70000' is not a port"),
    (lambda d: labels(d, "web-1", HAPROXY_0_PORT="10001\n"),
     r"label HAPROXY_0_PORT='10001\\n' is not a port"),
    (lambda d: labels(d, "web-1", HAPROXY_0_PORT="0"), "label HAPROXY_0_PORT='0' is not a port"),
    (lambda d: labels(d, "web-1", HAPROXY_0_PORT="10001", HAPROXY_1_PORT="10001"),
     "two HAPROXY_<n>_PORT labels name the same service port"),
    (lambda d: labels(d, "web-1", HAPROXY_3_PORT="10001"),
     "HAPROXY_3_PORT names its port 3, but it has 1 port"),
    (lambda d: labels(d, "web-1", HAPROXY_0_VHOST="a..b"), "HAPROXY_0_VHOST holds 'a..b'"),
    (lambda d: task(d, "web-1").update(labels={"HAPROXY_0_PORT": "1"}), "labels must be a list of"),
    (lambda d: task(d, "web-1").update(labels=[{"key": "HAPROXY_0_PORT", "value": 10001}]), "labels must be"),
    (lambda d: task(d, "web-1").update(slave_id="gone-S9"),
     "its agent 'gone-S9' is not in the state's slaves"),
    (lambda d: task(d, "web-1").update(slave_id=None), "its agent None is not in"),
    (lambda d: agent_of(d, "web-1").update(hostname="10.141.141.11\n"),
     r"its agent's hostname '10.141.141.11\\n' is not a host name"),
    (lambda d: agent_of(d, "web-1").update(hostname="agent..example"),
     "its agent's hostname 'agent..example'"),
    (lambda d: task(d, "web-1").update(discovery="web"), "discovery must be an object"),
    (lambda d: task(d, "web-1")["discovery"].update(name=7), "discovery.name must be a string, got 7"),
    (lambda d: task(d, "web-1")["discovery"]["ports"].update(ports={"number": 1}),
     "discovery.ports.ports must be a list of objects"),
    (lambda d: task(d, "web-1")["discovery"]["ports"]["ports"][0].update(number="31004"),
     r"discovery.ports.ports\[0\].number must be a port 1-65535, got '31004'"),
    (lambda d: task(d, "web-1")["discovery"]["ports"]["ports"][0].update(number=True), "got True"),
    (lambda d: task(d, "web-1")["discovery"]["ports"]["ports"][0].update(protocol=6),
     r"discovery.ports.ports\[0\].protocol must be a string, got 6"),
    (lambda d: task(d, "web-1").update(statuses="TASK_RUNNING"), "statuses must be a list of objects"),
    (lambda d: task(d, "web-1")["statuses"][-1].update(healthy="yes"), "healthy must be true or false"),
    (lambda d: port_ranges(d, "31004"),
     r"resources.ports must be ranges such as \[4000-4005\], got '31004'"),
    (lambda d: port_ranges(d, "[31004-31004]\n"), "must be ranges"),
    (lambda d: port_ranges(d, "[0-5]"), "a range outside 1-65535"),
    (lambda d: port_ranges(d, "[9-1]"), "a range outside 1-65535"),
    (lambda d: port_ranges(d, "[1-65535], [1-65535]"), "must be ranges"),
    (lambda d: port_ranges(d, "[1-65535, 1-65535]"), "holds more than 65536 ports"),
    (lambda d: task(d, "web-1").update(discovery=None, resources=[]), "resources must be an object"),
], ids=lambda value: "" if callable(value) else re.sub(r"\W+", "-", value)[:40])
def test_a_malformed_task_is_left_out_and_named(change: Any, message: str) -> None:
    doc = state()
    change(doc)
    routes = parse_state(doc)
    assert [app for app in routes.apps if app.app_id != WEB] == [EXPECTED_APPS[0]], "the rest is routed"
    assert WEB not in [app.app_id for app in routes.apps]
    notes = [note for note in routes.dropped if note != DNS_NOTE]
    assert len(notes) == 1, notes
    assert notes[0].startswith("dropped task web-1 (frameworks[")
    assert re.search(message, notes[0]), notes[0]


def test_a_task_that_is_not_an_object_is_named_by_its_place() -> None:
    doc = state()
    doc["frameworks"][0]["tasks"].append(["web-9"])
    routes = parse_state(doc)
    assert routes.apps == EXPECTED_APPS
    assert "dropped task frameworks[0].tasks[1]: must be an object, got a list" in routes.dropped


@pytest.mark.parametrize(("document", "message"), [
    ([], "expected a Mesos master's state"),
    ({"frameworks": []}, "expected a Mesos master's state"),
    ({"frameworks": {}, "slaves": []}, "expected a Mesos master's state"),
    ({"frameworks": ["x"], "slaves": []}, r"frameworks\[0\] must be an object"),
    ({"frameworks": [{"tasks": {}}], "slaves": []}, r"frameworks\[0\]\.tasks must be a list"),
])
def test_what_is_no_master_state_is_refused(document: Any, message: str) -> None:
    with pytest.raises(BadResponse, match=message):
        parse_state(document)


@pytest.mark.parametrize(("name", "part"), [
    ("mesos-execute instance", "mesos-execute-instance"), ("Marathon", "marathon"), ("web", "web"),
    ("My_Service v2!", "my-service-v2"), ("a.b", "a.b"), ("..x..", "x"), ("", None), ("___", None),
    (7, None), (None, None), ("x" * 300, "x" * 100), ("web\n", "web"),
])
def test_framework_and_service_names_become_id_segments(name: Any, part: str | None) -> None:
    assert name_part(name) == part


# --- finding the leader ------------------------------------------------------------------------------


@pytest.mark.parametrize(("location", "leader"), [
    ("//127.0.0.1:5051/master/state", "http://127.0.0.1:5051"),
    ("http://10.141.141.11:5050/master/state", "http://10.141.141.11:5050"),
    ("//m2.cluster.example:5050/", "http://m2.cluster.example:5050"),
])
def test_the_leader_a_redirect_names(location: str, leader: str) -> None:
    assert leader_url("http://127.0.0.1:5050", location) == leader


@pytest.mark.parametrize("location", [None, "", "/master/state", "//a..b:5050/", "//host/", "//h:99999/",
                                      "//h:0/", "//user@h:5050/", "//h:5050\n/", "//[::1]:5050/", "//h :1/"])
def test_a_redirect_that_names_no_leader_is_refused(location: Any) -> None:
    with pytest.raises(BadResponse, match="redirected"):
        leader_url("http://127.0.0.1:5050", location)


def test_only_the_state_of_the_leading_master_counts() -> None:
    assert check_leading(state())["pid"].startswith("master@")
    for document in ({"pid": "master@127.0.0.1:1", "leader": "master@127.0.0.1:2"}, {"pid": "m"}, [], None):
        with pytest.raises(BadResponse):
            check_leading(document)


def test_after_a_fail_over_the_config_waits_for_the_agents_but_not_forever() -> None:
    doc = state()
    doc["recovered_slaves"] = [{"id": "S7"}]
    source = MesosSource(["http://127.0.0.1:5050"], recovery_grace=3600)
    with pytest.raises(Waiting, match=r"waits for 1 agent\(s\) to re-register after a fail-over"):
        source._wait_for_recovery("http://127.0.0.1:5050", doc)
    source = MesosSource(["http://127.0.0.1:5050"], recovery_grace=0)
    source._wait_for_recovery("http://127.0.0.1:5050", doc)  # the grace is over: routing goes on
    doc["recovered_slaves"] = []
    MesosSource(["http://127.0.0.1:5050"], recovery_grace=3600)._wait_for_recovery("http://x", doc)


# --- the command line ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "env", "message"), [
    (["run", "--source", "mesos"], {}, "no Mesos master URL: pass --mesos or set KILN_BRIDGE_MESOS_URLS "
     "(the source is mesos)"),
    (["run"], {"KILN_BRIDGE_SOURCE": "mesos", "KILN_BRIDGE_MARATHON_URLS": "http://m:8080"},
     "no Mesos master URL: pass --mesos or set KILN_BRIDGE_MESOS_URLS (the source is mesos)"),
    (["run", "--source", "chronos"], {}, "--source='chronos' is not a valid source"),
    (["run"], {"KILN_BRIDGE_SOURCE": "Mesos"}, "KILN_BRIDGE_SOURCE='Mesos' is not a valid source"),
    (["run", "--source", "mesos", "--mesos", "10.0.0.1:5050"], {},
     "Mesos master URL '10.0.0.1:5050' must start with http:// or https://"),
    (["run", "--source", "mesos", "--mesos", "http://m:5050/ x"], {},
     "Mesos master URL 'http://m:5050/ x' is not a plain http(s)://host[:port][/path] URL"),
    (["run", "--marathon", "http://m\x00:8080"], {},
     "Marathon URL 'http://m\\x00:8080' is not a plain http(s)://host[:port][/path] URL"),
    (["run", "--marathon", "http://m", "--timeout", "0"], {}, "--timeout='0' is not a valid timeout"),
    (["run", "--marathon", "http://m"], {"KILN_BRIDGE_TIMEOUT_SECONDS": "nan"},
     "KILN_BRIDGE_TIMEOUT_SECONDS='nan' is not a valid timeout"),
    (["run", "--marathon", "http://m", "--poll", "inf"], {}, "--poll='inf' is not a valid poll"),
    (["run", "--marathon", "http://m", "--vhost-port", "8_0"], {},
     "--vhost-port='8_0' is not a valid vhost port"),
    (["render", "--from-file", "x", "--haproxy-user", "haproxy\n"], {},
     "--haproxy-user='haproxy\\n' is not a valid haproxy user"),
    (["render", "--from-file", "x", "--chroot", "/var/lib/haproxy\n"], {},
     "--chroot='/var/lib/haproxy\\n' is not a valid chroot"),
])
def test_bad_settings_exit_2_with_one_line(argv: list[str], env: dict[str, str], message: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv, env=env) == 2
    assert capsys.readouterr().err == f"kiln-haproxy-bridge: {message}\n"


def test_help_names_the_sources_and_their_settings() -> None:
    done = subprocess.run([sys.executable, "-m", "kiln_bridge", "run", "--help"], capture_output=True,
                          text=True, cwd=REPO_ROOT, check=True)
    for text in ("--source {marathon,mesos}", "KILN_BRIDGE_SOURCE", "--mesos URL,URL",
                 "KILN_BRIDGE_MESOS_URLS", "KILN_BRIDGE_TIMEOUT_SECONDS", "without following redirects"):
        assert text in " ".join(done.stdout.split()), text
    top = subprocess.run([sys.executable, "-m", "kiln_bridge", "--help"], capture_output=True, text=True,
                         cwd=REPO_ROOT, check=True).stdout
    assert "HAPROXY_<n>_PORT" in top and "KILN_BRIDGE_MESOS_URLS" in top
