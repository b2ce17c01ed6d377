"""`kiln-node status`: is each service of this node's role up and doing its job?

The host side (`invoke up`, `invoke status`) runs this on every node over SSH and decides
from the answers whether the cluster is ready: a ZooKeeper ensemble with a leader, a leading
Mesos master with every agent registered, Marathon answering. Each probe is small and bounded
(a few seconds), uses only the standard library, and reports facts, not just a verdict:

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

from kiln_node import render, services

TIMEOUT = 3.0
Probe = Callable[[Dict[str, Any]], Tuple[bool, str, Dict[str, Any]]]


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
    """'master@10.141.141.11:5050' -> '10.141.141.11:5050'."""
    return pid.split("@", 1)[-1] if pid else ""


def parse_master_state(state: Dict[str, Any]) -> Tuple[bool, str, Dict[str, Any]]:
    """Mesos master /state: ready when a leader is elected; the leader knows the agents."""
    leader = leader_address(str(state.get("leader") or ""))
    facts = {"leader": leader, "is_leader": bool(state.get("elected_time")) and leader != "",
             "activated_agents": int(state.get("activated_slaves", 0) or 0)}
    if not leader:
        return False, "no leading master elected", facts
    if facts["is_leader"]:
        return True, "leading master, {} agent(s) registered".format(facts["activated_agents"]), facts
    return True, "follows leader {}".format(leader), facts


def parse_agent_state(state: Dict[str, Any]) -> Tuple[bool, str, Dict[str, Any]]:
    """Mesos agent /state: registered when it names its master."""
    master = str(state.get("master_hostname") or "")
    facts = {"master": master, "id": str(state.get("id") or "")}
    if master and facts["id"]:
        return True, "registered with {}".format(master), facts
    return False, "not registered with a master yet", facts


# -- probes (talk to this node's services) -----------------------------------------------------

def four_letter_word(word: str, port: int = 2181, host: str = "127.0.0.1") -> str:
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


def http_get(url: str) -> Tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return response.status, response.read(1 << 22).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def _zookeeper(spec: Dict[str, Any]) -> Tuple[bool, str, Dict[str, Any]]:
    return parse_srvr(four_letter_word("srvr"))


def _json_probe(url: str, parse: Callable[[Dict[str, Any]], Tuple[bool, str, Dict[str, Any]]]
                ) -> Tuple[bool, str, Dict[str, Any]]:
    code, body = http_get(url)
    if code != 200:
        return False, "{} answered HTTP {}".format(url, code), {}
    try:
        data = json.loads(body)
    except ValueError:
        return False, "{} answered something that is not JSON".format(url), {}
    if not isinstance(data, dict):
        return False, "{} answered JSON that is not an object".format(url), {}
    return parse(data)


def _mesos_master(spec: Dict[str, Any]) -> Tuple[bool, str, Dict[str, Any]]:
    return _json_probe("http://{}:5050/state".format(spec["ip"]), parse_master_state)


def _mesos_agent(spec: Dict[str, Any]) -> Tuple[bool, str, Dict[str, Any]]:
    return _json_probe("http://{}:5051/state".format(spec["ip"]), parse_agent_state)


def _marathon(spec: Dict[str, Any]) -> Tuple[bool, str, Dict[str, Any]]:
    code, _ = http_get("http://{}:{}/ping".format(spec["ip"], render.MARATHON_PORT))
    if code == 200:
        return True, "answers /ping", {}
    return False, "/ping answered HTTP {}".format(code), {}


PROBES: Dict[str, Probe] = {
    "zookeeper": _zookeeper,
    "mesos-master": _mesos_master,
    "mesos-agent": _mesos_agent,
    "marathon": _marathon,
}


def unit_active(unit: str) -> bool:
    done = subprocess.run(["systemctl", "is-active", "--quiet", unit], check=False)
    return done.returncode == 0


# -- the node's status ------------------------------------------------------------------------

def unit_status(unit: str, spec: Dict[str, Any], active: Callable[[str], bool] = unit_active,
                probes: Optional[Dict[str, Probe]] = None) -> Dict[str, Any]:
    probes = PROBES if probes is None else probes
    is_active = active(unit)
    if not is_active:
        return {"unit": unit, "active": False, "ready": False, "detail": "unit is not active", "facts": {}}
    probe = probes.get(unit)
    if probe is None:
        return {"unit": unit, "active": True, "ready": True, "detail": "active", "facts": {}}
    try:
        ready, detail, facts = probe(spec)
    except (OSError, ValueError) as exc:
        ready, detail, facts = False, "no answer ({})".format(_reason(exc)), {}
    return {"unit": unit, "active": True, "ready": ready, "detail": detail, "facts": facts}


def node_status(spec: Dict[str, Any], root: str = "/", active: Callable[[str], bool] = unit_active,
                probes: Optional[Dict[str, Probe]] = None) -> Dict[str, Any]:
    units, skipped = services.present(services.role_units(spec), services.read_manifest(root))
    checked = [unit_status(u, spec, active, probes) for u in units]
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
    status = node_status(spec, root)
    print(json.dumps(status, indent=2, sort_keys=True) if as_json else table(status), file=out)
    return 0 if status["ready"] else 3

