"""kiln_bridge: parsing Marathon's /v2/apps?embed=apps.tasks and rendering haproxy.cfg.

Marathon itself cannot run here; tests/fixtures/marathon/apps.json is a stand-in for its
answer, written after Marathon's documented app and task JSON (both the portDefinitions of
Marathon >= 0.16 and the older `ports`, plus a Docker BRIDGE app's portMappings).
"""

from __future__ import annotations

import ast
import copy
import glob
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kiln.paths import REPO_ROOT
from kiln_bridge.cli import main
from kiln_bridge.marathon import SYNC_EVENTS, event_type, events_url, read_events
from kiln_bridge.model import App, BadResponse, Task, parse_apps, parse_body, parse_marathon
from kiln_bridge.render import IMAGE_DEFAULTS, GlobalSettings, render

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "marathon"
APPS_JSON = FIXTURES / "apps.json"

EXPECTED = """\
# Written by kiln-haproxy-bridge; local edits are overwritten.
global
  maxconn 4096
  user haproxy
  group haproxy
  chroot /var/lib/haproxy
  stats socket /run/haproxy/admin.sock mode 660 level admin expose-fd listeners
  stats timeout 30s
  log /dev/log local0 notice

defaults
  log global
  option dontlognull
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  # An agent name that does not resolve disables that one server instead of failing the config.
  default-server init-addr libc,none

frontend vhosts
  bind 0.0.0.0:80
  mode http
  timeout http-request 10s
  acl vhost_api_v1 hdr(host),field(1,:) -i api.example.test api2.example.test
  use_backend vhost_api_v1 if vhost_api_v1
  acl vhost_web hdr(host),field(1,:) -i web.example.test
  use_backend vhost_web if vhost_web

backend vhost_api_v1
  mode http
  balance roundrobin
  option forwardfor
  server 10.0.0.11:31010 10.0.0.11:31010 check

backend vhost_web
  mode http
  balance roundrobin
  option forwardfor
  server 10.0.0.11:31001 10.0.0.11:31001 check
  server 10.0.0.12:31002 10.0.0.12:31002 check

listen tcp_api_v1_10002
  bind 0.0.0.0:10002
  mode tcp
  balance leastconn
  server 10.0.0.11:31010 10.0.0.11:31010 check

listen tcp_api_v1_10003
  bind 0.0.0.0:10003
  mode tcp
  balance leastconn
  server 10.0.0.11:31011 10.0.0.11:31011 check

listen tcp_cache_10005
  bind 0.0.0.0:10005
  mode tcp
  balance leastconn
  server 10.0.0.14:31040 10.0.0.14:31040 check

listen tcp_db_10004
  bind 0.0.0.0:10004
  mode tcp
  balance leastconn
  server 10.0.0.12:31030 10.0.0.12:31030 check

listen tcp_web_10001
  bind 0.0.0.0:10001
  mode tcp
  balance leastconn
  server 10.0.0.11:31001 10.0.0.11:31001 check
  server 10.0.0.12:31002 10.0.0.12:31002 check
"""


def fixture() -> dict[str, Any]:
    return json.loads(APPS_JSON.read_text())


def by_id(document: dict[str, Any]) -> dict[str, App]:
    return {app.app_id: app for app in parse_apps(document)}


# --- rendering ---------------------------------------------------------------------------------


def test_renders_service_port_listeners_and_vhost_routing_exactly() -> None:
    assert render(parse_apps(fixture())) == EXPECTED


def test_vhost_port_and_bind_address_are_used_everywhere() -> None:
    text = render(parse_apps(fixture()), vhost_port=18080, bind="127.0.0.1")
    binds = [line.strip() for line in text.splitlines() if line.strip().startswith("bind ")]
    assert binds == ["bind 127.0.0.1:18080", "bind 127.0.0.1:10002", "bind 127.0.0.1:10003",
                     "bind 127.0.0.1:10005", "bind 127.0.0.1:10004", "bind 127.0.0.1:10001"]


def test_rendering_is_deterministic_whatever_the_order_marathon_answers_in() -> None:
    doc = fixture()
    shuffled = copy.deepcopy(doc)
    shuffled["apps"].reverse()
    for app in shuffled["apps"]:
        app.get("tasks", []).reverse()
    labels = shuffled["apps"][3]["labels"]  # /api/v1 after the reverse
    labels["HAPROXY_0_VHOST"] = "API2.example.test ,api.example.test,api.example.test"
    assert render(parse_apps(shuffled)) == render(parse_apps(doc)) == EXPECTED


def test_global_section_settings_are_data_and_none_leaves_a_line_out() -> None:
    apps = parse_apps(fixture())
    bare = GlobalSettings(user=None, group=None, chroot=None, stats_socket=None, log=None, maxconn=64)
    text = render(apps, settings=bare)
    assert text.startswith(f"{EXPECTED.splitlines()[0]}\nglobal\n  maxconn 64\n\ndefaults\n")
    # Everything after the global section is the same whatever the settings.
    assert text.split("\ndefaults\n", 1)[1] == EXPECTED.split("\ndefaults\n", 1)[1]
    moved = IMAGE_DEFAULTS._replace(stats_socket="/tmp/t/admin.sock", user="nobody", log="127.0.0.1:514")
    head = render(apps, settings=moved).split("\ndefaults\n", 1)[0].splitlines()
    assert head[3:] == ["  user nobody", "  group haproxy", "  chroot /var/lib/haproxy",
                        "  stats socket /tmp/t/admin.sock mode 660 level admin expose-fd listeners",
                        "  stats timeout 30s", "  log 127.0.0.1:514 local0 notice"]
    assert render(apps, settings=moved) == render(apps, settings=moved)


def test_directories_haproxy_needs_but_does_not_check() -> None:
    assert IMAGE_DEFAULTS.directories() == ["/var/lib/haproxy", "/run/haproxy"]
    assert GlobalSettings(chroot=None, stats_socket="/tmp/x/a.sock").directories() == ["/tmp/x"]
    assert GlobalSettings(chroot=None, stats_socket=None).directories() == []


def test_no_apps_still_gives_a_vhost_frontend_that_answers_503() -> None:
    text = render(parse_apps({"apps": []}), vhost_port=8088)
    assert text.endswith("frontend vhosts\n  bind 0.0.0.0:8088\n  mode http\n  timeout http-request 10s\n")
    assert "\nbackend " not in text and "\nlisten " not in text


def test_an_app_without_running_tasks_keeps_its_listener_with_no_server() -> None:
    doc = {"apps": [{"id": "/idle", "portDefinitions": [{"port": 10009}], "tasks": [
        {"host": "10.0.0.1", "ports": [31000], "state": "TASK_STAGING"}]}]}
    assert render(parse_apps(doc)).endswith(
        "listen tcp_idle_10009\n  bind 0.0.0.0:10009\n  mode tcp\n  balance leastconn\n")


def test_a_service_port_on_the_vhost_port_is_refused() -> None:
    doc = {"apps": [{"id": "/web", "ports": [80]}]}
    with pytest.raises(BadResponse, match="service port 80 of /web is the vhost port"):
        render(parse_apps(doc), vhost_port=80)
    assert "bind 0.0.0.0:80\n" in render(parse_apps(doc), vhost_port=8080)


# --- filtering ---------------------------------------------------------------------------------


def test_only_running_and_healthy_tasks_get_traffic() -> None:
    apps = by_id(fixture())
    # web: staging task and the one failing its health check are left out
    assert apps["/web"].tasks == (Task("10.0.0.11", (31001,)), Task("10.0.0.12", (31002,)))
    # api (no `state`, as older Marathon): one of two health checks failing is enough to drop it
    assert apps["/api/v1"].tasks == (Task("10.0.0.11", (31010, 31011)),)
    # db: TASK_KILLING is not running
    assert apps["/db"].tasks == (Task("10.0.0.12", (31030,)),)
    assert apps["/batch/report"] == App("/batch/report", (), (), ())


@pytest.mark.parametrize("state", ["TASK_STAGING", "TASK_STARTING", "TASK_KILLING", "TASK_LOST",
                                   "TASK_UNREACHABLE", "TASK_FINISHED", "TASK_FAILED"])
def test_tasks_in_any_other_state_are_skipped(state: str) -> None:
    doc = {"apps": [{"id": "/a", "ports": [10001], "tasks": [
        {"host": "10.0.0.1", "ports": [31000], "state": state},
        {"host": "10.0.0.2", "ports": [31000], "state": "TASK_RUNNING"}]}]}
    assert by_id(doc)["/a"].tasks == (Task("10.0.0.2", (31000,)),)


def test_tasks_without_health_results_are_taken_as_healthy() -> None:
    doc = {"apps": [{"id": "/a", "ports": [10001], "tasks": [
        {"host": "10.0.0.1", "ports": [31000], "healthCheckResults": []},
        {"host": "10.0.0.2", "ports": [31000]}]}]}
    assert len(by_id(doc)["/a"].tasks) == 2


# --- where service ports come from --------------------------------------------------------------


@pytest.mark.parametrize("app", [
    {"portDefinitions": [{"port": 10001}, {"port": 10002}], "ports": [1, 2]},
    {"ports": [10001, 10002]},
    {"portDefinitions": [], "container": {"docker": {"portMappings": [
        {"containerPort": 80, "servicePort": 10001}, {"containerPort": 81, "servicePort": 10002}]}}},
    {"container": {"type": "DOCKER", "portMappings": [
        {"containerPort": 80, "servicePort": 10001}, {"containerPort": 81, "servicePort": 10002}]}},
], ids=["portDefinitions", "ports", "docker.portMappings", "container.portMappings"])
def test_service_port_sources(app: dict[str, Any]) -> None:
    doc = {"apps": [dict(app, id="/a", tasks=[{"host": "h1", "ports": [31000, 31001]}])]}
    text = render(parse_apps(doc))
    assert "listen tcp_a_10001\n  bind 0.0.0.0:10001\n  mode tcp\n  balance leastconn\n" \
           "  server h1:31000 h1:31000 check\n" in text
    assert "listen tcp_a_10002\n  bind 0.0.0.0:10002\n  mode tcp\n  balance leastconn\n" \
           "  server h1:31001 h1:31001 check\n" in text


def test_a_zero_service_port_gets_no_listener_and_keeps_the_task_port_index() -> None:
    doc = {"apps": [{"id": "/a", "portDefinitions": [{"port": 0}, {"port": 10002}],
                     "tasks": [{"host": "h1", "ports": [31000, 31001]}, {"host": "h2", "ports": [31005]}]}]}
    text = render(parse_apps(doc))
    assert "listen tcp_a_0" not in text
    # h2 has no second port, so it serves nothing on the second service port
    assert text.endswith("listen tcp_a_10002\n  bind 0.0.0.0:10002\n  mode tcp\n  balance leastconn\n"
                         "  server h1:31001 h1:31001 check\n")


def test_vhost_backend_uses_port_index_zero() -> None:
    doc = {"apps": [{"id": "/a", "labels": {"HAPROXY_0_VHOST": "a.test"},
                     "tasks": [{"host": "h1", "ports": [31000, 31001]}, {"host": "h2", "ports": []}]}]}
    text = render(parse_apps(doc))
    assert text.endswith("backend vhost_a\n  mode http\n  balance roundrobin\n  option forwardfor\n"
                         "  server h1:31000 h1:31000 check\n")


# Marathon's documented app shapes (tests/fixtures/marathon/docker-bridge.json: Docker BRIDGE apps
# as answered before 1.5, with the default {"port": 0} definition beside the port mappings;
# networking-1.5.json: the 1.5 `networks` API).
@pytest.mark.parametrize(("name", "expected"), [
    ("docker-bridge.json", {
        "/bridged-webapp": ((0, 9000),),  # the udp mapping (9001) gets no listener
        "/fixed-ports": ((0, 2000), (1, 2001)),
        "/host-mode": ((0, 10000), (1, 10001), (2, 10002)),
    }),
    ("networking-1.5.json", {
        "/web/nginx-bridge": ((0, 10080),),
        # container mode: 10090's mapping has no hostPort, so the task's only host port is 10091's
        "/web/overlay": ((0, 10091),),
        "/ops/host-app": ((0, 10100), (1, 10101)),
    }),
])
def test_marathon_documented_apps_get_their_service_ports(name: str, expected: dict[str, Any]) -> None:
    apps = by_id(json.loads((FIXTURES / name).read_text()))
    assert {app_id: app.service_ports for app_id, app in apps.items()} == expected
    assert all(app.tasks for app in apps.values())


def test_a_bridge_app_with_a_zero_port_definition_routes_its_mappings() -> None:
    text = render(parse_body((FIXTURES / "docker-bridge.json").read_bytes()))
    assert ("listen tcp_bridged-webapp_9000\n  bind 0.0.0.0:9000\n  mode tcp\n  balance leastconn\n"
            "  server 10.141.141.10:31500 10.141.141.10:31500 check\n"
            "  server 10.141.141.11:31510 10.141.141.11:31510 check\n") in text
    assert "backend vhost_bridged-webapp\n  mode http\n  balance roundrobin\n  option forwardfor\n" \
           "  server 10.141.141.10:31500 10.141.141.10:31500 check\n" in text
    assert ":9001" not in text and ":3000" not in text, "udp ports get no TCP listener"
    assert "listen tcp_fixed-ports_2001\n  bind 0.0.0.0:2001\n  mode tcp\n  balance leastconn\n" \
           "  server 10.141.141.11:31521 10.141.141.11:31521 check\n" in text


@pytest.mark.parametrize(("app", "service_ports"), [
    # mode unknown, mappings present, definitions all zero: the mappings
    ({"portDefinitions": [{"port": 0}], "container": {"portMappings": [{"servicePort": 10001}]}},
     ((0, 10001),)),
    # a non-zero definition and no mode: the definitions (Marathon ignores mappings in host mode)
    ({"portDefinitions": [{"port": 10002}], "container": {"portMappings": [{"servicePort": 10001}]}},
     ((0, 10002),)),
    # host mode said outright: the definitions, even when they are zero
    ({"networks": [{"mode": "host"}], "portDefinitions": [{"port": 0}],
      "container": {"portMappings": [{"servicePort": 10001}]}}, ()),
    # bridge: a mapping without hostPort still has one (0 means any)
    ({"networks": [{"mode": "container/bridge"}], "container": {"portMappings": [
        {"servicePort": 10001}, {"servicePort": 10002}]}}, ((0, 10001), (1, 10002))),
    ({"container": {"docker": {"network": "USER", "portMappings": [
        {"servicePort": 10001}, {"hostPort": 0, "servicePort": 10002}]}}}, ((0, 10002),)),
    ({"portDefinitions": [{"port": 10001, "protocol": "udp,tcp"}, {"port": 10002, "protocol": "udp"}]},
     ((0, 10001),)),
])
def test_which_ports_an_app_is_routed_on(app: dict[str, Any], service_ports: tuple[Any, ...]) -> None:
    assert parse_apps({"apps": [dict(app, id="/a")]})[0].service_ports == service_ports


def test_two_tasks_at_one_address_give_one_server() -> None:
    doc = {"apps": [{"id": "/a", "ports": [10001, 10002], "tasks": [
        {"host": "h1", "ports": [31000, 31001]}, {"host": "h1", "ports": [31000, 31002]}]}]}
    text = render(parse_apps(doc))
    assert text.count("server h1:31000 h1:31000 check\n") == 1
    assert "server h1:31001 h1:31001 check\n  server h1:31002 h1:31002 check\n" in text


def test_many_host_names_are_spread_over_acl_lines() -> None:
    hosts = [f"h{i:03d}.example.test" for i in range(120)]
    doc = {"apps": [{"id": "/a", "labels": {"HAPROXY_0_VHOST": ",".join(hosts)}}]}
    lines = [line for line in render(parse_apps(doc)).splitlines() if line.startswith("  acl vhost_a ")]
    assert len(lines) == 3
    assert [len(line.split()) for line in lines] == [54, 54, 24]  # haproxy reads up to 64 words a line
    assert sorted(word for line in lines for word in line.split()[4:]) == hosts


# --- malformed answers ---------------------------------------------------------------------------


def app(**fields: Any) -> dict[str, Any]:
    return {"apps": [dict({"id": "/a"}, **fields)]}


@pytest.mark.parametrize(("document", "message"), [
    ([], "expected a JSON object with an 'apps' list"),
    ({}, "expected a JSON object with an 'apps' list"),
    ({"apps": {"id": "/a"}}, "expected a JSON object with an 'apps' list"),
    ({"message": "Leader election in progress"}, "'apps' list"),
    ({"apps": ["/a"]}, r"apps\[0\] must be an object"),
    ({"apps": [{"ports": [1]}]}, r"apps\[0\]\.id must be a Marathon app id"),
    (app(id="/Web"), "must be a Marathon app id"),
    (app(id="/a_b"), "must be a Marathon app id"),
    (app(id="/a//b"), "must be a Marathon app id"),
    (app(id="/a b"), "must be a Marathon app id"),
    ({"apps": [{"id": "/a"}, {"id": "a"}]}, "app id /a occurs twice"),
    (app(ports=["10001"]), r"\.ports must be a list of integers 0-65535"),
    (app(ports=[True]), r"\.ports must be a list of integers"),
    (app(ports=[70000]), r"\.ports must be a list of integers"),
    (app(ports=10001), r"\.ports must be a list of integers"),
    (app(portDefinitions={"port": 1}), r"portDefinitions must be a list of objects"),
    (app(portDefinitions=[{"port": -1}]), r"portDefinitions\[\]\.port must be"),
    (app(container="docker"), "container must be an object"),
    (app(container={"docker": {"portMappings": [{"servicePort": "x"}]}}), "servicePort must be"),
    ({"apps": [{"id": "/a", "ports": [10001]}, {"id": "/b", "portDefinitions": [{"port": 10001}]}]},
     "service port 10001 belongs to both /a and /b"),
    (app(labels=["HAPROXY_0_VHOST"]), "labels must be an object of strings"),
    (app(labels={"HAPROXY_0_VHOST": 1}), "labels must be an object of strings"),
    (app(labels={"HAPROXY_0_VHOST": "bad host!"}), "HAPROXY_0_VHOST holds 'bad host!'"),
    (app(labels={"HAPROXY_0_VHOST": "a.test if TRUE"}), "is not a host name"),
    (app(tasks={"host": "h"}), r"tasks must be a list of objects"),
    (app(id="/web\n"), "must be a Marathon app id"),
    (app(id="web\x00"), "must be a Marathon app id"),
    (app(portDefinitions=[{"port": 10001}, {"port": 10001}]), "service port 10001 occurs twice in /a"),
    (app(portDefinitions=[{"port": 10001, "protocol": 6}]),
     r"portDefinitions\[0\]\.protocol must be a string"),
    (app(networks="host"), r"networks must be a list of objects"),
    (app(networks=[{"mode": None}]), r"networks\[\]\.mode must be a string"),
    (app(container={"docker": {"network": 1}}), r"docker\.network must be a string"),
    (app(container={"portMappings": [{"hostPort": -1}]}), r"portMappings\[0\]\.hostPort must be an integer"),
    (app(labels={"HAPROXY_0_VHOST": "a.test\nb.test"}), r"HAPROXY_0_VHOST holds 'a.test\\nb.test'"),
    (app(labels={"HAPROXY_0_VHOST": "a..test"}), "HAPROXY_0_VHOST holds 'a..test'"),
])
def test_malformed_documents_are_rejected(document: object, message: str) -> None:
    with pytest.raises(BadResponse, match=message):
        parse_apps(document)


@pytest.mark.parametrize(("task", "message"), [
    ({"ports": [31000]}, r"host must be a host name or IPv4 address, got None"),
    ({"host": "10.0.0.1 backup", "ports": [31000]},
     r"host must be a host name or IPv4 address, got '10.0.0.1 backup'"),
    ({"host": "10.0.0.1\n", "ports": [31000]}, r"got '10.0.0.1\\n'"),
    ({"host": "a..b", "ports": [31000]}, r"got 'a..b'"),
    ({"host": "h_1", "ports": [31000]}, r"got 'h_1'"),
    ({"host": "h", "ports": [0]}, r"ports must be a list of integers 1-65535"),
    ({"host": "h", "ports": "31000"}, r"ports must be a list of integers 1-65535"),
    ({"host": "h", "state": 1}, r"state must be a string, got 1"),
    ({"host": "h", "healthCheckResults": {"alive": True}}, "healthCheckResults must be a list"),
    ({"host": "h", "healthCheckResults": [{"alive": "yes"}]}, "alive must be true or false"),
])
def test_a_malformed_task_is_dropped_with_a_note_and_the_rest_routed(task: dict[str, Any],
                                                                     message: str) -> None:
    good = {"id": "a.2", "host": "10.0.0.2", "ports": [31000]}
    routes = parse_marathon(app(ports=[10001], tasks=[dict(task, id="a.1"), good]))
    (only,) = routes.apps
    assert only.tasks == (Task("10.0.0.2", (31000,)),)
    (note,) = routes.dropped
    assert note.startswith("dropped task a.1 (tasks[0]) of /a: ")
    assert re.search(message, note), note
    assert "\n" not in note


def test_a_task_that_is_not_an_object_is_named_by_its_place() -> None:
    routes = parse_marathon(app(ports=[10001], tasks=["10.0.0.1:31000", {"host": "h", "ports": [1]}]))
    assert routes.dropped == ("dropped task tasks[0] of /a: must be an object, got '10.0.0.1:31000'",)
    assert routes.apps[0].tasks == (Task("h", (1,)),)


@pytest.mark.parametrize(("body", "message"), [
    (b"<html><body>502 Bad Gateway</body></html>", "not JSON"),
    (b"", "not JSON"),
    (b'{"apps": [', "not JSON"),
    (b"\xff\xfe", "not UTF-8"),
    (b"null", "'apps' list"),
])
def test_bodies_that_are_not_an_apps_document_are_rejected(body: bytes, message: str) -> None:
    with pytest.raises(BadResponse, match=message):
        parse_body(body)


def test_a_single_bad_app_rejects_the_whole_answer() -> None:
    doc = fixture()
    doc["apps"][2]["portDefinitions"][0]["port"] = None
    with pytest.raises(BadResponse, match=r"apps\[2\] \(/db\)\.portDefinitions\[\]\.port must be"):
        parse_apps(doc)


def test_a_single_bad_task_costs_only_that_task() -> None:
    doc = fixture()
    doc["apps"][2]["tasks"][0]["ports"] = [None]  # /db's only running task
    routes = parse_marathon(doc)
    assert routes.dropped == ("dropped task db.1 (tasks[0]) of /db: ports must be a list of integers "
                              "1-65535",)
    expected = by_id(fixture())
    assert expected["/db"].tasks == (Task("10.0.0.12", (31030,)),)
    without = expected["/db"]._replace(tasks=())
    assert {app.app_id: app for app in routes.apps} == dict(expected, **{"/db": without})


# --- Marathon's event stream (text/event-stream framing) ----------------------------------------


def test_event_stream_parsing() -> None:
    stream = [
        b"event: event_stream_attached\r\n", b'data: {"remoteAddress":"10.0.0.5"}\r\n', b"\r\n",
        b": keep-alive comment\n", b"\n",
        b"event: status_update_event\n", b'data: {"eventType":"status_update_event",\n',
        b'data: "taskStatus":"TASK_RUNNING"}\n', b"\n",
        b'data: {"eventType":"health_status_changed_event","alive":false}\n', b"\n",
        b"event: deployment_info\n", b"data:{}\n", b"\n",
        b"event: truncated_at_end\n",
    ]
    events = list(read_events(stream))
    assert events == [
        ("event_stream_attached", '{"remoteAddress":"10.0.0.5"}'),
        ("status_update_event", '{"eventType":"status_update_event",\n"taskStatus":"TASK_RUNNING"}'),
        ("message", '{"eventType":"health_status_changed_event","alive":false}'),
        ("deployment_info", "{}"),
    ]
    kinds = [event_type(name, data) for name, data in events]
    assert kinds == ["event_stream_attached", "status_update_event", "health_status_changed_event",
                     "deployment_info"]
    assert [k in SYNC_EVENTS for k in kinds] == [False, True, True, False]


def test_events_url_asks_for_the_events_that_matter() -> None:
    url = events_url("http://10.0.0.1:8080/")
    assert url.startswith("http://10.0.0.1:8080/v2/events?event_type=event_stream_attached&")
    for kind in ("status_update_event", "api_post_event", "health_status_changed_event"):
        assert f"event_type={kind}" in url


# --- the command line ------------------------------------------------------------------------


def test_render_command_prints_the_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "--from-file", str(APPS_JSON)], env={}) == 0
    assert capsys.readouterr().out == EXPECTED


def test_render_command_takes_the_vhost_port_from_env_unless_flagged(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "--from-file", str(APPS_JSON)], env={"KILN_BRIDGE_VHOST_PORT": "8081"}) == 0
    assert "  bind 0.0.0.0:8081\n  mode http\n" in capsys.readouterr().out
    assert main(["render", "--from-file", str(APPS_JSON), "--vhost-port", "8082"],
                env={"KILN_BRIDGE_VHOST_PORT": "8081"}) == 0
    assert "  bind 0.0.0.0:8082\n  mode http\n" in capsys.readouterr().out


def test_global_settings_come_from_flags_over_env_over_image_defaults(
        capsys: pytest.CaptureFixture[str]) -> None:
    env = {"KILN_BRIDGE_HAPROXY_USER": "none", "KILN_BRIDGE_HAPROXY_GROUP": "none",
           "KILN_BRIDGE_HAPROXY_CHROOT": "/srv/jail", "KILN_BRIDGE_HAPROXY_STATS_SOCKET": "/tmp/s/a.sock",
           "KILN_BRIDGE_HAPROXY_LOG": "none"}
    assert main(["render", "--from-file", str(APPS_JSON), "--chroot", "none"], env=env) == 0
    head = capsys.readouterr().out.split("\ndefaults\n", 1)[0]
    assert head.splitlines()[1:] == ["global", "  maxconn 4096",
                                     "  stats socket /tmp/s/a.sock mode 660 level admin expose-fd listeners",
                                     "  stats timeout 30s"]
    assert main(["render", "--from-file", str(APPS_JSON), "--haproxy-user", "www-data",
                 "--log-target", "[::1]:514"], env={}) == 0
    head = capsys.readouterr().out.split("\ndefaults\n", 1)[0]
    assert "  user www-data\n  group haproxy\n  chroot /var/lib/haproxy\n" in head
    assert head.endswith("  log [::1]:514 local0 notice\n")


@pytest.mark.parametrize(("argv", "env", "message"), [
    (["run"], {}, "no Marathon URL: pass --marathon or set KILN_BRIDGE_MARATHON_URLS"),
    (["run"], {"KILN_BRIDGE_MARATHON_URLS": " , "},
     "no Marathon URL: pass --marathon or set KILN_BRIDGE_MARATHON_URLS"),
    (["run", "--marathon", "10.0.0.1:8080"], {},
     "Marathon URL '10.0.0.1:8080' must start with http:// or https://"),
    (["run"], {"KILN_BRIDGE_MARATHON_URLS": "http://m:8080", "KILN_BRIDGE_POLL_SECONDS": "soon"},
     "KILN_BRIDGE_POLL_SECONDS='soon' is not a valid poll"),
    (["run", "--marathon", "http://m", "--poll", "0"], {}, "--poll='0' is not a valid poll"),
    (["run", "--marathon", "http://m"], {"KILN_BRIDGE_VHOST_PORT": "70000"},
     "KILN_BRIDGE_VHOST_PORT='70000' is not a valid vhost port"),
    (["render", "--from-file", "x", "--bind-address", "localhost"], {},
     "--bind-address='localhost' is not a valid bind address"),
    (["render", "--from-file", "x"], {"KILN_BRIDGE_HAPROXY_CHROOT": "var/lib/haproxy"},
     "KILN_BRIDGE_HAPROXY_CHROOT='var/lib/haproxy' is not a valid chroot"),
    (["render", "--from-file", "x", "--stats-socket", "/run/a b.sock"], {},
     "--stats-socket='/run/a b.sock' is not a valid stats socket"),
    (["render", "--from-file", "x"], {"KILN_BRIDGE_HAPROXY_USER": "haproxy\n  daemon"},
     "KILN_BRIDGE_HAPROXY_USER='haproxy\\n  daemon' is not a valid haproxy user"),
    (["render", "--from-file", "x", "--haproxy-group", "Root#"], {},
     "--haproxy-group='Root#' is not a valid haproxy group"),
    (["render", "--from-file", "x", "--log-target", "/dev/log local7"], {},
     "--log-target='/dev/log local7' is not a valid log target"),
])
def test_bad_settings_exit_2_with_one_line(argv: list[str], env: dict[str, str], message: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv, env=env) == 2
    err = capsys.readouterr().err
    assert err == f"kiln-haproxy-bridge: {message}\n"


def test_render_command_rejects_a_malformed_file(tmp_path: Path) -> None:
    bad = tmp_path / "apps.json"
    bad.write_text('{"apps": [{"id": "/a", "ports": [0, "x"], "tasks": [{"host": "h", "ports": [1]}]}]}')
    done = subprocess.run([sys.executable, "-m", "kiln_bridge", "render", "--from-file", str(bad)],
                          capture_output=True, text=True, cwd=REPO_ROOT, check=False)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"kiln-haproxy-bridge: cannot render {bad}: apps[0] (/a).ports must be")


def test_render_command_names_each_task_it_leaves_out(tmp_path: Path) -> None:
    doc = tmp_path / "apps.json"
    doc.write_text('{"apps": [{"id": "/a", "ports": [10001], "tasks": [{"id": "a.1", "host": "h\\n", '
                   '"ports": [31000]}, {"id": "a.2", "host": "h", "ports": [31001]}]}]}')
    done = subprocess.run([sys.executable, "-m", "kiln_bridge", "render", "--from-file", str(doc)],
                          capture_output=True, text=True, cwd=REPO_ROOT, check=False)
    assert done.returncode == 0
    assert done.stderr == ("kiln-haproxy-bridge: dropped task a.1 (tasks[0]) of /a: host must be a host name "
                           "or IPv4 address, got 'h\\n'\n")
    assert done.stdout.endswith("listen tcp_a_10001\n  bind 0.0.0.0:10001\n  mode tcp\n  balance leastconn\n"
                                "  server h:31001 h:31001 check\n")


# --- Python 3.9, the oldest python3 on the images -------------------------------------------------


def test_bridge_source_is_python_3_9_syntax() -> None:
    for path in sorted((REPO_ROOT / "kiln_bridge").glob("*.py")):
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))


def python39() -> str | None:
    """A real 3.9 interpreter (pyenv shims on PATH may name one that is not selected)."""
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9")))
    probe = "import sys; assert sys.version_info[:2] == (3, 9)"
    for candidate in [*candidates, shutil.which("python3.9")]:
        if candidate and subprocess.run([candidate, "-c", probe], capture_output=True,
                                        check=False).returncode == 0:
            return candidate
    return None


@pytest.mark.skipif(python39() is None, reason="no python3.9 interpreter on PATH or under ~/.pyenv")
def test_bridge_runs_on_python_3_9(tmp_path: Path) -> None:
    interpreter = python39()
    assert interpreter
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO_ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([interpreter, "-m", "kiln_bridge", "render", "--from-file", str(APPS_JSON)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == EXPECTED
    imports = ("import kiln_bridge.apply, kiln_bridge.cli, kiln_bridge.fetch, kiln_bridge.marathon, "
               "kiln_bridge.mesos; print('ok')")
    done = subprocess.run([interpreter, "-c", imports], capture_output=True, text=True, cwd=tmp_path,
                          env=env, check=False)
    assert done.stdout == "ok\n", done.stderr
