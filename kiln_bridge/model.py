"""Marathon's /v2/apps?embed=apps.tasks document, checked strictly and reduced to what routing needs.

Anything that does not have the documented shape raises BadResponse, so a half-broken answer
never turns into a config that silently drops apps.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

VHOST_LABEL = "HAPROXY_0_VHOST"
# Marathon's own rule for app id segments; it also keeps ids safe inside haproxy names.
_SEGMENT = r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?"
APP_ID_RE = re.compile(r"^/?%s(/%s)*$" % (_SEGMENT, _SEGMENT))
# Host names and IPv4 addresses only: whatever lands in haproxy.cfg must be one plain token.
HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


class BadResponse(ValueError):
    """Marathon answered something that is not a valid apps document."""


class Task(NamedTuple):
    host: str
    ports: Tuple[int, ...]


class App(NamedTuple):
    app_id: str
    service_ports: Tuple[Tuple[int, int], ...]  # (port index, service port), zero ports left out
    vhosts: Tuple[str, ...]
    tasks: Tuple[Task, ...]  # only the tasks that may take traffic, sorted

    @property
    def name(self) -> str:
        """The app id as a haproxy name part ('/api/v1' -> 'api_v1'); '_' never occurs in ids."""
        return self.app_id.strip("/").replace("/", "_")


def _is_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _ports(value: Any, where: str, low: int) -> List[int]:
    if not isinstance(value, list) or not all(_is_int(p, low, 65535) for p in value):
        raise BadResponse("%s must be a list of integers %d-65535" % (where, low))
    return list(value)


def _list_of_dicts(value: Any, where: str) -> List[Dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise BadResponse("%s must be a list of objects" % where)
    return value


def _port_definitions(raw: Dict[str, Any], where: str) -> List[int]:
    if "portDefinitions" not in raw or raw["portDefinitions"] is None:
        return []
    defs = _list_of_dicts(raw["portDefinitions"], where + ".portDefinitions")
    return _ports([d.get("port", 0) for d in defs], where + ".portDefinitions[].port", 0)


def _port_mappings(raw: Dict[str, Any], where: str) -> List[int]:
    """servicePorts of container networking (Docker BRIDGE/USER), where portDefinitions stay empty."""
    container = raw.get("container")
    if container is None:
        return []
    if not isinstance(container, dict):
        raise BadResponse("%s.container must be an object" % where)
    docker = container.get("docker")
    if docker is not None and not isinstance(docker, dict):
        raise BadResponse("%s.container.docker must be an object" % where)
    mappings = container.get("portMappings")
    if mappings is None and docker is not None:
        mappings = docker.get("portMappings")
    if mappings is None:
        return []
    maps = _list_of_dicts(mappings, where + ".container.portMappings")
    return _ports([m.get("servicePort", 0) for m in maps], where + ".container.portMappings[].servicePort", 0)


def _service_ports(raw: Dict[str, Any], where: str) -> Tuple[Tuple[int, int], ...]:
    defs = _port_definitions(raw, where)
    mappings = _port_mappings(raw, where)
    legacy = _ports(raw.get("ports") or [], where + ".ports", 0)
    chosen = defs or mappings or legacy
    return tuple((index, port) for index, port in enumerate(chosen) if port)


def _vhosts(raw: Dict[str, Any], where: str) -> Tuple[str, ...]:
    labels = raw.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise BadResponse("%s.labels must be an object of strings" % where)
    hosts = set()
    for host in labels.get(VHOST_LABEL, "").split(","):
        host = host.strip().lower()
        if host and not HOST_RE.match(host):
            raise BadResponse("%s: %s holds %r, which is not a host name" % (where, VHOST_LABEL, host))
        if host:
            hosts.add(host)
    return tuple(sorted(hosts))


def _usable(task: Dict[str, Any], where: str) -> bool:
    """Running (when Marathon reports a state) and passing every health check it reports."""
    state = task.get("state")
    if state is not None and not isinstance(state, str):
        raise BadResponse("%s.state must be a string" % where)
    checks = task.get("healthCheckResults")
    checks = [] if checks is None else _list_of_dicts(checks, where + ".healthCheckResults")
    if not all(isinstance(c.get("alive"), bool) for c in checks):
        raise BadResponse("%s.healthCheckResults[].alive must be true or false" % where)
    return state in (None, "TASK_RUNNING") and all(c["alive"] for c in checks)


def _tasks(raw: Dict[str, Any], where: str) -> Tuple[Task, ...]:
    tasks = raw.get("tasks")
    if tasks is None:
        return ()
    usable = set()
    for j, task in enumerate(_list_of_dicts(tasks, where + ".tasks")):
        at = "%s.tasks[%d]" % (where, j)
        host = task.get("host")
        if not isinstance(host, str) or not HOST_RE.match(host):
            raise BadResponse("%s.host must be a host name or IPv4 address, got %r" % (at, host))
        ports = _ports(task.get("ports") or [], at + ".ports", 1)
        if _usable(task, at):
            usable.add(Task(host, tuple(ports)))
    return tuple(sorted(usable))


def parse_app(raw: Any, index: int) -> App:
    where = "apps[%d]" % index
    if not isinstance(raw, dict):
        raise BadResponse("%s must be an object" % where)
    app_id = raw.get("id")
    if not isinstance(app_id, str) or not APP_ID_RE.match(app_id):
        raise BadResponse("%s.id must be a Marathon app id such as /group/app, got %r" % (where, app_id))
    where = "%s (%s)" % (where, app_id)
    return App("/" + app_id.strip("/"), _service_ports(raw, where), _vhosts(raw, where), _tasks(raw, where))


def parse_apps(document: Any) -> List[App]:
    """The apps of a /v2/apps document, sorted by id; BadResponse for anything malformed."""
    if not isinstance(document, dict) or not isinstance(document.get("apps"), list):
        raise BadResponse("expected a JSON object with an 'apps' list")
    apps = sorted(parse_app(raw, i) for i, raw in enumerate(document["apps"]))
    owners: Dict[int, str] = {}
    previous: Optional[str] = None
    for app in apps:
        if app.app_id == previous:
            raise BadResponse("app id %s occurs twice" % app.app_id)
        previous = app.app_id
        for _, port in app.service_ports:
            if port in owners:
                raise BadResponse("service port %d belongs to both %s and %s"
                                  % (port, owners[port], app.app_id))
            owners[port] = app.app_id
    return apps


def parse_body(body: bytes) -> List[App]:
    """An HTTP body (or file contents) as apps; BadResponse when it is not JSON or not valid."""
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        snippet = body[:60].decode("utf-8", "replace").replace("\n", " ")
        raise BadResponse("not JSON (%s): %r" % (exc, snippet)) from None
    return parse_apps(document)
