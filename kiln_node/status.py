"""`kiln-node status`: is each service of this node's role up and doing its job?

The host side (`invoke up`, `invoke status`) runs this on every node over SSH and decides
from the answers whether the cluster is ready: a ZooKeeper ensemble with a leader, a leading
Mesos master with every agent active (and every master's replica of the registry log caught up,
so that any of them can take over), Marathon answering. Which units a role runs and how each
is probed come from the image's component catalog (a probe kind of PROBE_KINDS and its port).
Each probe is small and bounded (a few seconds), uses only the standard library, never follows
redirects (a Mesos master that is not the leader answers with one, naming the leader), and
reports facts, not just a verdict:

    {"name": "m1", "role": "master", "ip": "10.141.141.10", "ready": false,
     "units": [{"unit": "zookeeper", "active": true, "ready": false,
                "detail": "not serving requests (no quorum?)", "facts": {}}, ...]}
"""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.error
import urllib.request
from typing import Any, Callable, Dict, Optional, Tuple

from kiln_node import catalog as catalogmod
from kiln_node import services

TIMEOUT = 3.0
Probe = Callable[[Dict[str, Any], Dict[str, Any]], Tuple[bool, str, Dict[str, Any]]]


# -- parsing what the services answer (pure, unit tested) -------------------------------------

def parse_srvr(text: str) -> Tuple[bool, str, Dict[str, Any]]:
    """ZooKeeper's `srvr` four-letter word: serving when it reports a Mode."""
    facts: Dict[str, Any] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("Mode", "Zxid", "Node count", "Zookeeper version"):
            facts[key.strip().lower().replace(" ", "_")] = value.strip()
    mode = facts.get("mode")
    if mode in ("leader", "follower", "standalone", "observer"):
        return True, mode, facts
    if "not currently serving" in text:
        return False, "not serving requests (no quorum yet?)", facts
    if "not in the whitelist" in text:
        return False, "srvr is not whitelisted (4lw.commands.whitelist)", facts
    first = text.strip().splitlines()[0] if text.strip() else "no answer"
    return False, "unexpected answer: {}".format(first[:80]), facts


def leader_address(pid: str) -> str:
    """A libprocess PID 'master@HOST:PORT' -> 'HOST:PORT'."""
    return pid.split("@", 1)[-1] if pid else ""


def parse_master_state(state: Dict[str, Any]) -> Tuple[bool, str, Dict[str, Any]]:
    """The /state a Mesos master answers itself (HTTP 200), which only the leading master does:
    the others redirect (see parse_master_redirect). Ready when it names itself the leader; its
    facts list the agents it has active, the only registration that counts."""
    leader = leader_address(str(state.get("leader") or ""))
    own = leader_address(str(state.get("pid") or ""))
    agents = state.get("slaves") if isinstance(state.get("slaves"), list) else []
    active = sorted(str(a.get("hostname") or "") for a in agents if isinstance(a, dict) and a.get("active"))
    facts = {"leader": leader, "is_leader": leader != "" and (leader == own or not own),
             "activated_agents": len(active), "active_agents": active}
    if not leader:
        return False, "no leading master elected", facts
    if facts["is_leader"]:
        return True, "leading master, {} agent(s) active".format(len(active)), facts
    return True, "follows leader {}".format(leader), facts


def parse_master_redirect(location: str) -> Tuple[bool, str, Dict[str, Any]]:
    """A non-leading master answers /state with a redirect to the leader: '//HOST:PORT/...'."""
    rest = location.split("//", 1)[-1]
    leader = rest.split("/", 1)[0]
    facts = {"leader": leader, "is_leader": False, "activated_agents": 0, "active_agents": []}
    if not leader:
        return False, "redirected without a leader ({!r})".format(location[:80]), facts
    return True, "follows leader {}".format(leader), facts


LOG_RECOVERED = "registrar/log/recovered"


def parse_log_recovered(metrics: Dict[str, Any]) -> Optional[bool]:
    """A master's `registrar/log/recovered` gauge (from /metrics/snapshot): whether its replica of
    the registry's replicated log has caught up with the other masters'. A master whose replica
    has not cannot take over from the leader (if the leader then goes, the survivors lack a
    quorum of caught-up replicas and the new leader's recovery fails). None: the master has no
    replicated log (--registry=in_memory) or did not say."""
    value = metrics.get(LOG_RECOVERED)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value >= 1


def with_log_state(answer: Tuple[bool, str, Dict[str, Any]], recovered: Optional[bool]
                   ) -> Tuple[bool, str, Dict[str, Any]]:
    """A master's /state verdict, amended by whether its replica of the registry log caught up."""
    ready, detail, facts = answer
    facts = dict(facts, log_recovered=recovered)
    if ready and recovered is False:
        return False, "{}, but its replica of the registry log has not caught up yet".format(detail), facts
    return ready, detail, facts


def parse_agent_state(state: Dict[str, Any]) -> Tuple[bool, str, Dict[str, Any]]:
    """Mesos agent /state: registered when it names its master."""
    master = str(state.get("master_hostname") or "")
    facts = {"master": master, "id": str(state.get("id") or "")}
    if master and facts["id"]:
        return True, "registered with {}".format(master), facts
    return False, "not registered with a master yet", facts


# -- probes (talk to this node's services) -----------------------------------------------------

def four_letter_word(word: str, port: int, host: str = "127.0.0.1") -> str:
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
        sock.sendall(word.encode("ascii"))
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            data = sock.recv(4096)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks).decode("utf-8", "replace")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects are answers here (a Mesos master names its leader with one), not detours."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects())


def http_get(url: str) -> Tuple[int, str, str]:
    """(status, body, Location header) of a GET that does not follow redirects."""
    try:
        with _OPENER.open(url, timeout=TIMEOUT) as response:
            return response.status, response.read(1 << 22).decode("utf-8", "replace"), ""
    except urllib.error.HTTPError as exc:
        return exc.code, "", exc.headers.get("Location", "") if exc.headers else ""


def _zookeeper(spec: Dict[str, Any], probe: Dict[str, Any]) -> Tuple[bool, str, Dict[str, Any]]:
    return parse_srvr(four_letter_word("srvr", int(probe["port"])))


def _parse_json(url: str, body: str, parse: Callable[[Dict[str, Any]], Tuple[bool, str, Dict[str, Any]]]
                ) -> Tuple[bool, str, Dict[str, Any]]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return False, "{} answered something that is not JSON".format(url), {}
    if not isinstance(data, dict):
        return False, "{} answered JSON that is not an object".format(url), {}
    return parse(data)


def _url(spec: Dict[str, Any], probe: Dict[str, Any], path: str) -> str:
    return "http://{}:{}{}".format(spec["ip"], int(probe["port"]), probe.get("path") or path)


def _mesos_master(spec: Dict[str, Any], probe: Dict[str, Any]) -> Tuple[bool, str, Dict[str, Any]]:
    url = _url(spec, probe, "/state")
    code, body, location = http_get(url)
    if code in (301, 302, 303, 307, 308):
        answer = parse_master_redirect(location)
    elif code == 503:
        return False, "no leading master elected ({} answered HTTP 503)".format(url), {}
    elif code != 200:
        return False, "{} answered HTTP {}".format(url, code), {}
    else:
        answer = _parse_json(url, body, parse_master_state)
    # Only a master that is otherwise ready is asked about its log: one request less for the rest.
    return with_log_state(answer, _log_recovered(spec, probe) if answer[0] else None)


def _log_recovered(spec: Dict[str, Any], probe: Dict[str, Any]) -> Optional[bool]:
    """Whether the master's replica of the registry log caught up; None when it cannot tell (no
    answer in time counts as not knowing, not as a failure: only a 0 holds the master back)."""
    url = "http://{}:{}/metrics/snapshot?timeout=2secs".format(spec["ip"], int(probe["port"]))
    try:
        code, body, _ = http_get(url)
        metrics = json.loads(body) if code == 200 else None
    except (OSError, ValueError, RecursionError):
        return None
    return parse_log_recovered(metrics) if isinstance(metrics, dict) else None


def _mesos_agent(spec: Dict[str, Any], probe: Dict[str, Any]) -> Tuple[bool, str, Dict[str, Any]]:
    url = _url(spec, probe, "/state")
    code, body, _ = http_get(url)
    if code != 200:
        return False, "{} answered HTTP {}".format(url, code), {}
    return _parse_json(url, body, parse_agent_state)


def _http(spec: Dict[str, Any], probe: Dict[str, Any]) -> Tuple[bool, str, Dict[str, Any]]:
    url = _url(spec, probe, "/")
    code, _, _ = http_get(url)
    if code == 200:
        return True, "answers {}".format(probe.get("path") or "/"), {}
    return False, "{} answered HTTP {}".format(url, code), {}


# The probe kinds a catalog unit may name, and whether each needs a port.
PROBE_KINDS: Dict[str, bool] = {"zookeeper": True, "mesos-master": True, "mesos-agent": True, "http": True}
PROBES: Dict[str, Probe] = {
    "zookeeper": _zookeeper,
    "mesos-master": _mesos_master,
    "mesos-agent": _mesos_agent,
    "http": _http,
}


def unit_active(unit: str) -> bool:
    done = subprocess.run(["systemctl", "is-active", "--quiet", unit], check=False)
    return done.returncode == 0


# -- the node's status ------------------------------------------------------------------------

def unit_status(entry: Dict[str, Any], spec: Dict[str, Any], active: Callable[[str], bool] = unit_active,
                probes: Optional[Dict[str, Probe]] = None) -> Dict[str, Any]:
    """One catalog unit: active in systemd, and doing its job by its catalog probe."""
    probes = PROBES if probes is None else probes
    unit = entry["unit"]
    if not active(unit):
        return {"unit": unit, "active": False, "ready": False, "detail": "unit is not active", "facts": {}}
    probe = entry.get("probe")
    if not probe:
        return {"unit": unit, "active": True, "ready": True, "detail": "active", "facts": {}}
    run = probes.get(probe["kind"])
    if run is None:
        return {"unit": unit, "active": True, "ready": False, "facts": {},
                "detail": "probe kind {!r} unknown to this kiln-node".format(probe["kind"])}
    try:
        ready, detail, facts = run(spec, probe)
    except (OSError, ValueError) as exc:
        ready, detail, facts = False, "no answer ({})".format(_reason(exc)), {}
    return {"unit": unit, "active": True, "ready": ready, "detail": detail, "facts": facts}


def node_status(spec: Dict[str, Any], root: str = "/", active: Callable[[str], bool] = unit_active,
                probes: Optional[Dict[str, Probe]] = None) -> Dict[str, Any]:
    catalog = catalogmod.load(root)
    units, skipped = services.present(services.role_units(spec, catalog), services.read_manifest(root),
                                      catalog)
    entries = {e["unit"]: e for e in catalog["units"]}
    checked = [unit_status(entries[u], spec, active, probes) for u in units]
    return {
        "name": spec["name"],
        "role": spec["role"],
        "ip": spec["ip"],
        "ready": all(u["ready"] for u in checked),
        "units": checked,
        "skipped": skipped,
    }


def table(status: Dict[str, Any]) -> str:
    lines = ["{} {} ({}): {}".format(status["name"], status["ip"], status["role"],
                                     "READY" if status["ready"] else "NOT READY")]
    for u in status["units"]:
        lines.append("  {:<24} {:<5} {}".format(u["unit"], "ok" if u["ready"] else "wait", u["detail"]))
    for line in status["skipped"]:
        lines.append("  " + line)
    return "\n".join(lines)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, socket.timeout):
        return "timed out"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def applied_spec(root: str) -> Optional[Dict[str, Any]]:
    from kiln_node import state

    spec = state.load(root)["spec"]
    return spec if isinstance(spec, dict) else None


def print_status(root: str, as_json: bool, out: Any) -> int:
    spec = applied_spec(root)
    if spec is None:
        print("kiln-node: no node spec applied yet (run kiln-node apply SPEC.json)", file=out)
        return 1
    try:
        status = node_status(spec, root)
    except services.ManifestError as exc:
        print("kiln-node: error: {}".format(exc), file=out)
        return 1
    print(json.dumps(status, indent=2, sort_keys=True) if as_json else table(status), file=out)
    return 0 if status["ready"] else 3

