"""What routing needs, and Marathon's /v2/apps?embed=apps.tasks document reduced to it.

Two levels of trust, because the parts of an answer come from different places:
- The document and each app (id, ports, labels) come from app definitions Marathon validated
  itself. Anything there that does not have the documented shape raises BadResponse and the
  whole answer is refused, so a half-broken answer never turns into a config that silently
  drops apps.
- Each task is what one agent reported (its `host` is the agent's --hostname). A task that
  does not have the documented shape is left out and named in Routes.dropped (app and task),
  so one bad agent cannot hold back every later routing change.

Every value that ends up in haproxy.cfg is checked whole with re.fullmatch: a `^...$` pattern
with re.match accepts "x\\n", and a newline inside haproxy.cfg ends the line.

Which ports an app is routed on (its service ports):
- An app with container networking (Marathon 1.5+: `networks` mode `container` or
  `container/bridge`; before: Docker `network` BRIDGE or USER) takes them from its port
  mappings, `container.portMappings` (1.5+) or `container.docker.portMappings`. So does an app
  whose mode is not stated when it has port mappings and no non-zero port definition: Marathon
  adds a default `{"port": 0}` definition to apps that never declared one, and that must not
  hide the mappings' service ports.
- Any other app takes them from `portDefinitions`, or the older `ports`.
A task's n-th host port belongs to the n-th port definition; with port mappings, to the n-th
mapping that has a host port. Every mapping has one in bridge networking (a missing hostPort
means 0, i.e. any); in `container` mode only mappings that declare a hostPort do, and the others
get no listener: their tasks are reachable only on the container network. Ports whose protocol
does not include tcp (udp) get no listener either; HAProxy here proxies TCP.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

VHOST_LABEL = "HAPROXY_0_VHOST"
# Marathon's own rule for app id segments; it also keeps ids safe inside haproxy names.
SEGMENT = r"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?"
APP_ID_RE = re.compile(r"/?%s(?:/%s)*" % (SEGMENT, SEGMENT))
# Host names (DNS labels of 1-63 characters, at most 253 in all) and IPv4 addresses: whatever
# lands in haproxy.cfg must be one plain token that haproxy can resolve ('a..b' it refuses).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOST_RE = re.compile(r"(?=.{1,253}\Z)%s(?:\.%s)*" % (_LABEL, _LABEL), re.DOTALL)
# App ids (and the haproxy names made of them) longer than this are refused: Marathon's own ids
# are path names a person chose, and a multi-megabyte one would only bloat every config line.
MAX_APP_ID = 500
# Longer numbers than this never occur in these documents; Python 3.9 converts huge ones in
# quadratic time, so they are refused before conversion.
MAX_DIGITS = 30


class BadResponse(ValueError):
    """The answer is not a valid document of the expected kind."""


class Task(NamedTuple):
    host: str
    ports: Tuple[int, ...]  # 0: this task has no port at that index


class App(NamedTuple):
    app_id: str
    service_ports: Tuple[Tuple[int, int], ...]  # (task port index, service port), routed ports only
    vhosts: Tuple[str, ...]
    tasks: Tuple[Task, ...]  # only the tasks that may take traffic, sorted

    @property
    def name(self) -> str:
        """The app id as a haproxy name part ('/api/v1' -> 'api_v1'); '_' never occurs in ids."""
        return self.app_id.strip("/").replace("/", "_")


class Routes(NamedTuple):
    apps: Tuple[App, ...]
    dropped: Tuple[str, ...]  # one line per task left out, naming its app and the task


def is_host(text: Any) -> bool:
    return isinstance(text, str) and HOST_RE.fullmatch(text) is not None


def is_app_id(text: Any) -> bool:
    return isinstance(text, str) and len(text) <= MAX_APP_ID and APP_ID_RE.fullmatch(text) is not None


def show(value: Any, limit: int = 60) -> str:
    """A short, one-line, printable description of any JSON value, for messages."""
    if isinstance(value, str):
        return repr(value[:limit]) + ("... (%d characters)" % len(value) if len(value) > limit else "")
    if isinstance(value, (bool, float)) or value is None:
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "a %s" % type(value).__name__


# --- JSON that cannot hurt -----------------------------------------------------------------------


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise ValueError("a number with %d digits" % len(text.lstrip("-")))
    return int(text)


def _float(text: str) -> float:
    if len(text) > 2 * MAX_DIGITS:
        raise ValueError("a number written with %d characters" % len(text))
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("%s is out of range" % text)
    return value


def _constant(name: str) -> Any:
    raise ValueError("%s is not a JSON value" % name)


def load_json(body: bytes) -> Any:
    """The JSON document in an HTTP body; BadResponse for anything that is not plain UTF-8 JSON
    (NaN, Infinity, numbers that do not fit, nesting deep enough to exhaust the stack)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = body[exc.start:exc.start + 8].hex()
        raise BadResponse("not UTF-8 (at byte %d: %s...)" % (exc.start, bad)) from None
    try:
        return json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except RecursionError:
        raise BadResponse("not JSON: nested too deeply") from None
    except ValueError as exc:
        snippet = text[:60].replace("\n", " ")
        raise BadResponse("not JSON (%s): %s" % (exc, show(snippet))) from None


# --- small checks ----------------------------------------------------------------------------------


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


def _optional_dict(raw: Dict[str, Any], key: str, where: str) -> Dict[str, Any]:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadResponse("%s.%s must be an object" % (where, key))
    return value


def routes_tcp(protocol: Any, where: str) -> bool:
    """Whether a port's protocol ('tcp', 'udp', 'udp,tcp'; missing means tcp) includes TCP."""
    if protocol is None:
        return True
    if not isinstance(protocol, str):
        raise BadResponse("%s.protocol must be a string, got %s" % (where, show(protocol)))
    return "tcp" in [part.strip().lower() for part in protocol.split(",")]


# --- Marathon apps --------------------------------------------------------------------------------


class _Port(NamedTuple):
    service: int
    tcp: bool
    host_port: bool  # whether tasks hold a host port for it (and so one more entry in task ports)


def _port_definitions(raw: Dict[str, Any], where: str) -> List[_Port]:
    if raw.get("portDefinitions") is not None:
        defs = _list_of_dicts(raw["portDefinitions"], where + ".portDefinitions")
        ports = _ports([d.get("port", 0) for d in defs], where + ".portDefinitions[].port", 0)
        return [_Port(ports[i], routes_tcp(d.get("protocol"), "%s.portDefinitions[%d]" % (where, i)), True)
                for i, d in enumerate(defs)]
    legacy = _ports(raw.get("ports") or [], where + ".ports", 0)
    return [_Port(port, True, True) for port in legacy]


def _network_mode(raw: Dict[str, Any], docker: Dict[str, Any], where: str) -> Optional[str]:
    """'host', 'bridge', 'container' or None when the app does not say."""
    networks = raw.get("networks")
    if networks is not None:
        modes = [n.get("mode") for n in _list_of_dicts(networks, where + ".networks")]
        if not all(isinstance(m, str) for m in modes):
            raise BadResponse("%s.networks[].mode must be a string" % where)
        if modes:
            return {"container/bridge": "bridge", "container": "container"}.get(modes[0], "host")
    network = docker.get("network")
    if network is not None and not isinstance(network, str):
        raise BadResponse("%s.container.docker.network must be a string, got %s" % (where, show(network)))
    return {"BRIDGE": "bridge", "USER": "container", "HOST": "host"}.get(network or "")


def _port_mappings(raw: Dict[str, Any], container: Dict[str, Any], docker: Dict[str, Any],
                   mode: Optional[str], where: str) -> List[_Port]:
    mappings = container.get("portMappings")
    at = where + ".container.portMappings"
    if mappings is None:
        mappings, at = docker.get("portMappings"), where + ".container.docker.portMappings"
    if mappings is None:
        return []
    maps = _list_of_dicts(mappings, at)
    services = _ports([m.get("servicePort", 0) for m in maps], at + "[].servicePort", 0)
    out = []
    for i, mapping in enumerate(maps):
        host_port = mapping.get("hostPort")
        if host_port is not None and not _is_int(host_port, 0, 65535):
            raise BadResponse("%s[%d].hostPort must be an integer 0-65535, got %s" % (at, i, show(host_port)))
        has_host_port = host_port is not None or mode != "container"
        out.append(_Port(services[i], routes_tcp(mapping.get("protocol"), "%s[%d]" % (at, i)), has_host_port))
    return out


def _service_ports(raw: Dict[str, Any], where: str) -> Tuple[Tuple[int, int], ...]:
    container = _optional_dict(raw, "container", where)
    docker = _optional_dict(container, "docker", where + ".container")
    mode = _network_mode(raw, docker, where)
    definitions = _port_definitions(raw, where)
    mappings = _port_mappings(raw, container, docker, mode, where)
    if mode in ("bridge", "container") or (mode is None and mappings
                                            and not any(p.service for p in definitions)):
        chosen = mappings
    else:
        chosen = definitions
    out = []
    index = 0
    for port in chosen:
        if port.host_port:
            if port.service and port.tcp:
                out.append((index, port.service))
            index += 1
    return tuple(out)


def _vhosts(raw: Dict[str, Any], where: str) -> Tuple[str, ...]:
    labels = raw.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise BadResponse("%s.labels must be an object of strings" % where)
    return parse_vhosts(labels.get(VHOST_LABEL, ""), where)


def parse_vhosts(text: str, where: str) -> Tuple[str, ...]:
    hosts = set()
    for host in text.split(","):
        host = host.strip().lower()
        if host and not is_host(host):
            raise BadResponse("%s: %s holds %s, which is not a host name" % (where, VHOST_LABEL, show(host)))
        if host:
            hosts.add(host)
    return tuple(sorted(hosts))


def _usable(task: Dict[str, Any]) -> bool:
    """Running (when Marathon reports a state) and passing every health check it reports.
    Raises BadResponse when the task's state or health results are malformed."""
    state = task.get("state")
    if state is not None and not isinstance(state, str):
        raise BadResponse("state must be a string, got %s" % show(state))
    checks = task.get("healthCheckResults")
    checks = [] if checks is None else _list_of_dicts(checks, "healthCheckResults")
    if not all(isinstance(c.get("alive"), bool) for c in checks):
        raise BadResponse("healthCheckResults[].alive must be true or false")
    return state in (None, "TASK_RUNNING") and all(c["alive"] for c in checks)


def _task(task: Any) -> Optional[Task]:
    """The task if it may take traffic, None if it may not; BadResponse if it is malformed."""
    if not isinstance(task, dict):
        raise BadResponse("must be an object, got %s" % show(task))
    host = task.get("host")
    if not is_host(host):
        raise BadResponse("host must be a host name or IPv4 address, got %s" % show(host))
    ports = _ports(task.get("ports") or [], "ports", 1)
    return Task(host, tuple(ports)) if _usable(task) else None


def task_name(task: Any, fallback: str) -> str:
    """How a message names a task: its id when it has a printable one, else its place."""
    task_id = task.get("id") if isinstance(task, dict) else None
    if isinstance(task_id, str) and task_id.isprintable() and 0 < len(task_id) <= 200:
        return "%s (%s)" % (task_id, fallback)
    return fallback


def _tasks(raw: Dict[str, Any], where: str, app_id: str, dropped: List[str]) -> Tuple[Task, ...]:
    tasks = raw.get("tasks")
    if tasks is None:
        return ()
    if not isinstance(tasks, list):
        raise BadResponse("%s.tasks must be a list of objects" % where)
    usable = set()
    for j, task in enumerate(tasks):
        try:
            found = _task(task)
        except BadResponse as exc:
            dropped.append("dropped task %s of %s: %s" % (task_name(task, "tasks[%d]" % j), app_id, exc))
            continue
        if found is not None:
            usable.add(found)
    return tuple(sorted(usable))


def parse_app(raw: Any, index: int, dropped: Optional[List[str]] = None) -> App:
    where = "apps[%d]" % index
    if not isinstance(raw, dict):
        raise BadResponse("%s must be an object" % where)
    app_id = raw.get("id")
    if not is_app_id(app_id):
        raise BadResponse("%s.id must be a Marathon app id such as /group/app, got %s"
                          % (where, show(app_id)))
    app_id = "/" + app_id.strip("/")
    where = "%s (%s)" % (where, app_id)
    notes: List[str] = [] if dropped is None else dropped
    return App(app_id, _service_ports(raw, where), _vhosts(raw, where), _tasks(raw, where, app_id, notes))


def check_apps(apps: List[App]) -> List[App]:
    """Sorted by id; BadResponse when an id occurs twice or two apps claim one service port."""
    apps = sorted(apps)
    owners: Dict[int, str] = {}
    previous: Optional[str] = None
    for app in apps:
        if app.app_id == previous:
            raise BadResponse("app id %s occurs twice" % app.app_id)
        previous = app.app_id
        for _, port in app.service_ports:
            if port in owners:
                if owners[port] == app.app_id:
                    raise BadResponse("service port %d occurs twice in %s" % (port, app.app_id))
                raise BadResponse("service port %d belongs to both %s and %s"
                                  % (port, owners[port], app.app_id))
            owners[port] = app.app_id
    return apps


def parse_marathon(document: Any) -> Routes:
    """The routes of a /v2/apps document; BadResponse when the document or an app is malformed."""
    if not isinstance(document, dict) or not isinstance(document.get("apps"), list):
        raise BadResponse("expected a JSON object with an 'apps' list")
    dropped: List[str] = []
    apps = check_apps([parse_app(raw, i, dropped) for i, raw in enumerate(document["apps"])])
    return Routes(tuple(apps), tuple(dropped))


def parse_apps(document: Any) -> List[App]:
    """The apps of a /v2/apps document, sorted by id (malformed tasks left out)."""
    return list(parse_marathon(document).apps)


def parse_body(body: bytes) -> List[App]:
    """An HTTP body (or file contents) as apps; BadResponse when it is not JSON or not valid."""
    return parse_apps(load_json(body))
