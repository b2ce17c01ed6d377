"""The leading Mesos master's state (/master/state) as a routing source, framework-neutral, as
mesos-dns read it.

Which tasks: every task in TASK_RUNNING of every framework in the state (Marathon's, Aurora's,
mesos-execute's, ...), except one whose latest status reports a failing health check
(`healthy: false`). Its address: the `hostname` of its agent (the state's `slaves`, joined on
`slave_id`), the address mesos-dns gave out by default. Its ports: those of its discovery info
(`discovery.ports.ports[].number`, in order), or, without discovery ports, those of its `ports`
resource in ascending order.

Service ports, the rule: Mesos has no service ports (Marathon invents them and keeps them to
itself), so a task asks for a listener with a task label `HAPROXY_<n>_PORT=<port>`: its n-th port
(counted as above) is then served on that port, and `HAPROXY_0_VHOST=<host names>` routes those
Host headers on the vhost port to its first port. These are the labels marathon-lb reads on
Marathon apps, and Marathon copies app labels to its tasks, so they work from there too.
Why a label and not a discovery port's own number: that number is where the task listens on its
agent, a different one for each task of a service (ports come from offers), so it names no single
address for the service; and on a node that runs an agent and HAProxy together (the one-node
trial), HAProxy would bind the very port the task holds. Tasks without such a label are not
routed: HAProxy listens only where a task asked for it. Discovery ports whose protocol is not tcp
get no listener.

Tasks that belong together: same framework name and same service name (the discovery name, else
the task name). haproxy.cfg names them /<framework>/<service>, lower-cased with other characters
turned into '-', as mesos-dns made DNS names of them. Their ports are lined up by service port, so
tasks of one service launched with different labels (a change rolling out) each serve what they
declare. A service port is served for one service only; a later claim (by service name order),
or one on the vhost port, is left out and logged.

Tasks are what agents and frameworks report: a malformed task, one on an unknown agent or one
whose labels make no sense is left out and named in Routes.dropped; only an answer that is not a
master's state at all is refused as a whole.

Finding the leading master: a non-leading master answers with HTTP 307 to the leader, and urllib
would follow that silently, wherever it points. So every request goes out with redirects
disabled. Each configured master is asked first for its health through the operator API
(POST /api/v1 GET_HEALTH): 200 means it leads and has recovered; a 307's Location gives the
leader's host:port, which is asked once, also without redirects. Only then comes the state, from
that master, and it counts only when it says this master leads (`pid` is `leader`). The leader
found is asked first next time.

Fail-over, measured on Mesos 1.11 here: a newly elected leader answers /master/state at once,
with no agents, no tasks and an empty `recovered_slaves`, while it is still reading its registry;
only its operator API says so (503 "Master has not finished recovery"), hence the health check
before the state. After that it lists the agents it knows from the registry in `recovered_slaves`
until they re-register with their tasks; its state then lacks tasks that run fine. In both cases
the current config stays: until the agents are back, or for RECOVERY_GRACE seconds at most.

Mesos has no event stream this bridge reads: it polls.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.parse
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from kiln_bridge.fetch import HTTPStatus, Unavailable, Waiting, get
from kiln_bridge.log import log
from kiln_bridge.model import (
    VHOST_LABEL,
    App,
    BadResponse,
    Routes,
    Task,
    check_apps,
    is_app_id,
    is_host,
    load_json,
    parse_vhosts,
    routes_tcp,
    show,
    task_name,
)

STATE_PATH = "/master/state"
API_PATH = "/api/v1"
HEALTH_CALL = b'{"type": "GET_HEALTH"}'
RECOVERY_GRACE = 60.0
PORT_LABEL_RE = re.compile(r"HAPROXY_(0|[1-9][0-9]{0,2})_PORT")
SERVICE_PORT_RE = re.compile(r"[1-9][0-9]{0,4}")
# How the state renders a ranges resource: "[4000-4005, 4010-4010]".
RANGES_RE = re.compile(r"\[(?:[0-9]{1,5}-[0-9]{1,5}(?:, ?[0-9]{1,5}-[0-9]{1,5})*)?\]")
RANGE_RE = re.compile(r"([0-9]{1,5})-([0-9]{1,5})")
NETLOC_RE = re.compile(r"([^:/@\s\[\]]+):([0-9]{1,5})")
MAX_TASK_PORTS = 65536
MAX_NAME = 100


def name_part(text: Any) -> Optional[str]:
    """A framework or service name as one segment of an app id, or None if nothing is left."""
    if not isinstance(text, str):
        return None
    part = re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-.")[:MAX_NAME].strip("-.")
    return part if part and is_app_id(part) else None


def _labels(task: Dict[str, Any]) -> Dict[str, str]:
    """The task's labels; the state renders them as a list of {"key", "value"}."""
    raw = task.get("labels")
    if raw is None:
        return {}
    if not isinstance(raw, list) or not all(isinstance(item, dict) and isinstance(item.get("key"), str)
                                            and isinstance(item.get("value", ""), str) for item in raw):
        raise BadResponse("labels must be a list of {key, value} strings")
    return {item["key"]: item.get("value", "") for item in raw}


def _wanted(labels: Dict[str, str]) -> Dict[int, int]:
    """{task port index: service port} from HAPROXY_<n>_PORT labels."""
    wanted = {}
    for key, value in labels.items():
        match = PORT_LABEL_RE.fullmatch(key)
        if match is None:
            continue
        if SERVICE_PORT_RE.fullmatch(value) is None or int(value) > 65535:
            raise BadResponse("label %s=%s is not a port 1-65535" % (key, show(value)))
        wanted[int(match.group(1))] = int(value)
    if len(set(wanted.values())) != len(wanted):
        raise BadResponse("two HAPROXY_<n>_PORT labels name the same service port")
    return wanted


def _healthy(task: Dict[str, Any]) -> bool:
    statuses = task.get("statuses")
    if statuses is None or statuses == []:
        return True
    if not isinstance(statuses, list) or not isinstance(statuses[-1], dict):
        raise BadResponse("statuses must be a list of objects")
    healthy = statuses[-1].get("healthy")
    if healthy is not None and not isinstance(healthy, bool):
        raise BadResponse("statuses[-1].healthy must be true or false, got %s" % show(healthy))
    return healthy is not False


def _resource_ports(task: Dict[str, Any]) -> List[Tuple[int, bool]]:
    resources = task.get("resources")
    if resources is None:
        return []
    if not isinstance(resources, dict):
        raise BadResponse("resources must be an object")
    text = resources.get("ports")
    if text is None:
        return []
    if not isinstance(text, str) or RANGES_RE.fullmatch(text) is None:
        raise BadResponse("resources.ports must be ranges such as [4000-4005], got %s" % show(text))
    ranges = sorted((int(a), int(b)) for a, b in RANGE_RE.findall(text))
    if any(not 1 <= a <= b <= 65535 for a, b in ranges):
        raise BadResponse("resources.ports holds a range outside 1-65535: %s" % show(text))
    if sum(b - a + 1 for a, b in ranges) > MAX_TASK_PORTS:
        raise BadResponse("resources.ports holds more than %d ports" % MAX_TASK_PORTS)
    return [(port, True) for a, b in ranges for port in range(a, b + 1)]


def _discovery(task: Dict[str, Any]) -> Tuple[Optional[str], List[Tuple[int, bool]]]:
    """The discovery name and its ports as (number, carries tcp)."""
    discovery = task.get("discovery")
    if discovery is None:
        return None, []
    if not isinstance(discovery, dict):
        raise BadResponse("discovery must be an object")
    name = discovery.get("name")
    if name is not None and not isinstance(name, str):
        raise BadResponse("discovery.name must be a string, got %s" % show(name))
    ports = discovery.get("ports")
    if ports is None:
        return name, []
    entries = ports.get("ports") if isinstance(ports, dict) else None
    if entries is None and isinstance(ports, dict):
        return name, []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise BadResponse("discovery.ports.ports must be a list of objects")
    out = []
    for i, entry in enumerate(entries):
        number = entry.get("number")
        if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= 65535:
            raise BadResponse("discovery.ports.ports[%d].number must be a port 1-65535, got %s"
                              % (i, show(number)))
        out.append((number, routes_tcp(entry.get("protocol"), "discovery.ports.ports[%d]" % i)))
    return name, out


class _Served(NamedTuple):
    host: str
    first_port: int
    by_service_port: Dict[int, int]
    vhosts: Tuple[str, ...]


def _task(task: Dict[str, Any], agents: Dict[str, Any]) -> Optional[Tuple[Optional[str], _Served]]:
    """(service name, what it serves) for a running task that asks to be routed, None for others;
    BadResponse when the task is malformed."""
    labels = _labels(task)
    wanted = _wanted(labels)
    vhosts = parse_vhosts(labels.get(VHOST_LABEL, ""), "label")
    if not wanted and not vhosts:
        return None
    if not _healthy(task):
        return None
    agent = task.get("slave_id")
    if not isinstance(agent, str) or agent not in agents:
        raise BadResponse("its agent %s is not in the state's slaves" % show(agent))
    host = agents[agent]
    if not is_host(host):
        raise BadResponse("its agent's hostname %s is not a host name or IPv4 address" % show(host))
    service, ports = _discovery(task)
    if not ports:
        ports = _resource_ports(task)
    served = {}
    for index, service_port in sorted(wanted.items()):
        if index >= len(ports):
            raise BadResponse("HAPROXY_%d_PORT names its port %d, but it has %d port(s)"
                              % (index, index, len(ports)))
        number, tcp = ports[index]
        if not tcp:
            raise BadResponse("HAPROXY_%d_PORT names a port that is not tcp" % index)
        served[service_port] = number
    if vhosts and not ports:
        raise BadResponse("%s asks for Host-header routing, but it has no port" % VHOST_LABEL)
    return (service if service is not None else task.get("name")), _Served(
        host, ports[0][0] if ports else 0, served, vhosts)


class _Service:
    def __init__(self) -> None:
        self.tasks: List[_Served] = []


def _collect(document: Dict[str, Any], dropped: List[str]) -> Dict[str, _Service]:
    agents = {s["id"]: s.get("hostname") for s in document["slaves"]
              if isinstance(s, dict) and isinstance(s.get("id"), str)}
    services: Dict[str, _Service] = {}
    for i, framework in enumerate(document["frameworks"]):
        if not isinstance(framework, dict):
            raise BadResponse("frameworks[%d] must be an object" % i)
        tasks = framework.get("tasks")
        if tasks is None:
            continue
        if not isinstance(tasks, list):
            raise BadResponse("frameworks[%d].tasks must be a list" % i)
        framework_name = name_part(framework.get("name"))
        for j, task in enumerate(tasks):
            place = "frameworks[%d].tasks[%d]" % (i, j)
            if not isinstance(task, dict):
                dropped.append("dropped task %s: must be an object, got %s" % (place, show(task)))
                continue
            if task.get("state") != "TASK_RUNNING":
                continue
            owner = "framework %s" % show(framework.get("name"))
            try:
                found = _task(task, agents)
                if found is None:
                    continue
                service_name, served = found
                service = name_part(service_name)
                if framework_name is None or service is None:
                    raise BadResponse("framework name %s and service name %s make no app id"
                                      % (show(framework.get("name")), show(service_name)))
                app_id = "/%s/%s" % (framework_name, service)
            except BadResponse as exc:
                dropped.append("dropped task %s of %s: %s" % (task_name(task, place), owner, exc))
                continue
            services.setdefault(app_id, _Service()).tasks.append(served)
    return services


def _apps(services: Dict[str, _Service], reserved: Sequence[int], dropped: List[str]) -> List[App]:
    owners: Dict[int, str] = {}
    apps = []
    for app_id in sorted(services):
        tasks = services[app_id].tasks
        ports: List[int] = []
        for port in sorted({p for t in tasks for p in t.by_service_port}):
            if port in reserved:
                dropped.append("service port %d of %s is the vhost port: not routed" % (port, app_id))
            elif port in owners:
                dropped.append("service port %d of %s is %s's already: not routed"
                               % (port, app_id, owners[port]))
            else:
                owners[port] = app_id
                ports.append(port)
        # Index 0 is each task's first port (the vhost backend's); index k >= 1 serves ports[k - 1].
        lined_up = {Task(t.host, (t.first_port, *(t.by_service_port.get(p, 0) for p in ports)))
                    for t in tasks}
        vhosts = tuple(sorted({h for t in tasks for h in t.vhosts}))
        service_ports = tuple((k + 1, p) for k, p in enumerate(ports))
        apps.append(App(app_id, service_ports, vhosts, tuple(sorted(lined_up))))
    return apps


def parse_state(document: Any, reserved_ports: Sequence[int] = ()) -> Routes:
    """The routes in a master's state; BadResponse when it is not a master's state at all."""
    if not isinstance(document, dict) or not isinstance(document.get("frameworks"), list) \
            or not isinstance(document.get("slaves"), list):
        raise BadResponse("expected a Mesos master's state: an object with 'frameworks' and 'slaves' lists")
    dropped: List[str] = []
    services = _collect(document, dropped)
    apps = check_apps(_apps(services, reserved_ports, dropped))
    return Routes(tuple(apps), tuple(dropped))


def leader_url(asked: str, location: Any) -> str:
    """The base URL of the master a redirect's Location names (Mesos sends '//host:port/path')."""
    if not isinstance(location, str):
        raise BadResponse("redirected without a Location")
    # urlsplit would quietly drop tabs and line breaks; such a Location names nothing.
    plain = location.isprintable() and not any(c.isspace() for c in location)
    netloc = urllib.parse.urlsplit(location).netloc if plain else ""
    match = NETLOC_RE.fullmatch(netloc)
    if match is None or not is_host(match.group(1)) or not 1 <= int(match.group(2)) <= 65535:
        raise BadResponse("redirected to %s, which names no host:port" % show(location))
    return "%s://%s" % (urllib.parse.urlsplit(asked).scheme or "http", netloc)


def check_leading(document: Any) -> Dict[str, Any]:
    """The state, if it is the state of the leading master; BadResponse otherwise."""
    if not isinstance(document, dict):
        raise BadResponse("expected a Mesos master's state, got %s" % show(document))
    pid, leader = document.get("pid"), document.get("leader")
    if not isinstance(pid, str) or pid != leader:
        raise BadResponse("answered, but its state does not say it leads (pid %s, leader %s)"
                          % (show(pid), show(leader)))
    return document


class MesosSource:
    """Routing from the leading Mesos master's state (see the module docstring)."""

    name = "Mesos master"
    answer = "the Mesos master's answer"

    def __init__(self, urls: Sequence[str], timeout: float = 10.0, reserved_ports: Sequence[int] = (),
                 recovery_grace: float = RECOVERY_GRACE) -> None:
        self.urls = [u.rstrip("/") for u in urls]
        self.timeout = timeout
        self.reserved_ports = tuple(reserved_ports)
        self.recovery_grace = recovery_grace
        self.leader: Optional[str] = None
        self._recovering: Optional[Tuple[str, float]] = None

    def describe(self) -> str:
        return "mesos %s" % ",".join(self.urls)

    def follow(self, wake: threading.Event, stop: threading.Event, retry_seconds: float) -> None:
        """Nothing to follow: the loop polls."""

    def fetch(self) -> Routes:
        leader, document = self.leader_state()
        self._wait_for_recovery(leader, document)
        return parse_state(document, self.reserved_ports)

    def _healthy_leader(self, base: str) -> str:
        """`base` if it leads and has recovered, the leader's URL if it redirects there; Waiting
        while it leads but still recovers."""
        try:
            answer = get(base + API_PATH, self.timeout, follow_redirects=False, max_body=64 * 1024,
                         data=HEALTH_CALL)
        except HTTPStatus as exc:
            if exc.status == 503 and "recovery" in exc.detail:
                raise Waiting("leading Mesos master %s has not finished recovering its registry"
                              % base) from None
            raise
        if 300 <= answer.status < 400:
            return leader_url(base, answer.location)
        if answer.status != 200:
            raise BadResponse("answered HTTP %d to GET_HEALTH" % answer.status)
        return base

    def _ask(self, base: str) -> Tuple[str, Dict[str, Any]]:
        """(the leader's base URL, its state), asking `base` first (see the module docstring)."""
        leader = self._healthy_leader(base)
        if leader != base:
            try:
                if self._healthy_leader(leader) != leader:
                    raise BadResponse("which sent us on again")
            except Waiting:
                raise
            except BadResponse as exc:
                raise BadResponse("sent us to %s: %s" % (leader, exc)) from None
            except Unavailable as exc:
                raise Unavailable("sent us to %s: %s" % (leader, exc)) from None
        answer = get(leader + STATE_PATH, self.timeout, follow_redirects=False)
        if answer.status != 200:
            raise BadResponse("%s answered HTTP %d for its state" % (leader, answer.status))
        return leader, check_leading(load_json(answer.body))

    def leader_state(self) -> Tuple[str, Dict[str, Any]]:
        """(leader's base URL, its state); Waiting while the leader recovers, BadResponse when
        masters answered but none led, Unavailable when none answered."""
        problems = []
        answered = False
        order = [self.leader] if self.leader else []
        order += [u for u in self.urls if u != self.leader]
        for base in order:
            try:
                leader, document = self._ask(base)
            except Waiting:
                raise
            except BadResponse as exc:
                answered = True
                problems.append("%s: %s" % (base, exc))
                continue
            except Unavailable as exc:
                problems.append("%s: %s" % (base, exc))
                continue
            if leader != self.leader:
                via = "" if leader == base else " (%s sent us there)" % base
                log("leading Mesos master: %s%s" % (leader, via))
                self.leader = leader
            return leader, document
        self.leader = None
        summary = "; ".join(problems) or "no Mesos master URL configured"
        raise BadResponse(summary) if answered else Unavailable(summary)

    def _wait_for_recovery(self, leader: str, document: Dict[str, Any]) -> None:
        recovered = document.get("recovered_slaves")
        waiting = len(recovered) if isinstance(recovered, list) else 0
        if not waiting:
            self._recovering = None
            return
        now = time.monotonic()
        if self._recovering is None or self._recovering[0] != leader:
            self._recovering = (leader, now)
        if now - self._recovering[1] < self.recovery_grace:
            raise Waiting("leading Mesos master %s waits for %d agent(s) to re-register after a fail-over"
                          % (leader, waiting))
