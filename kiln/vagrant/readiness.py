"""Is a cluster ready? A verdict from every node's `kiln-node status --json`.

Ready means: every node answered and every service of its role is up. Then, by probe kind
(from the component catalog): the ZooKeeper servers form one ensemble with exactly one leader;
where the image has Mesos, every master names the same leader, that leader answered as the
leader, and it lists every agent node as active (an agent that only says it found a master
does not count); any other probed service is counted as answering. Anything else is "not
ready" with one line per reason, naming the node and the service, which is what `invoke up`
prints when it gives up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class NodeReport:
    name: str
    role: str
    status: dict[str, Any] | None  # kiln-node status --json, or None when the node did not answer
    error: str = ""
    ip: str = ""

    def unit(self, name: str) -> dict[str, Any] | None:
        if self.status is None:
            return None
        return next((u for u in self.status.get("units", []) if u.get("unit") == name), None)

    @property
    def address(self) -> str:
        return self.ip or str((self.status or {}).get("ip", ""))


@dataclass
class Verdict:
    ready: bool
    summary: list[str] = field(default_factory=list)  # what holds, one line per service kind
    problems: list[str] = field(default_factory=list)  # what does not, "node: service: why"

    def line(self) -> str:
        return "; ".join(self.summary + self.problems)


def probe_kinds(node_catalog: Mapping[str, Any]) -> dict[str, str]:
    """unit -> probe kind, for the units that have a probe."""
    return {u["unit"]: u["probe"]["kind"] for u in node_catalog["units"] if u.get("probe")}


def verdict(reports: Sequence[NodeReport], kinds: Mapping[str, str]) -> Verdict:
    problems: list[str] = []
    summary: list[str] = []
    for r in reports:
        if r.status is None:
            problems.append(f"{r.name}: no status ({r.error or 'no answer'})")
            continue
        for u in r.status.get("units", []):
            if not u.get("ready"):
                problems.append(f"{r.name}: {u.get('unit')}: {u.get('detail')}")
    by_kind: dict[str, list[str]] = {}
    for unit, kind in kinds.items():
        by_kind.setdefault(kind, []).append(unit)
    for unit in by_kind.get("zookeeper", []):
        summary += _ensemble(reports, unit, problems)
    masters = by_kind.get("mesos-master", [])
    if masters:
        summary += _mesos(reports, masters[0], by_kind.get("mesos-agent", []), problems)
    for kind, units in sorted(by_kind.items()):
        if kind not in ("zookeeper", "mesos-master", "mesos-agent"):
            summary += [line for unit in units for line in _plain(reports, unit)]
    missing = sorted({line.split(" ", 1)[0] for r in reports if r.status
                      for line in r.status.get("skipped", [])})
    if missing:
        summary.append(f"not in this image: {', '.join(missing)}")
    return Verdict(ready=not problems, summary=summary, problems=problems)


def _ensemble(reports: Sequence[NodeReport], unit: str, problems: list[str]) -> list[str]:
    servers = [(r, r.unit(unit)) for r in reports]
    servers = [(r, u) for r, u in servers if u is not None]
    if not servers:
        return []
    serving = [(r, u["facts"].get("mode", "")) for r, u in servers if u.get("ready")]
    leaders = [r.name for r, mode in serving if mode == "leader"]
    text = f"{unit}: {len(serving)}/{len(servers)} serving"
    if len(servers) > 1:
        if len(serving) == len(servers) and len(leaders) != 1:
            problems.append(f"{unit}: expected one leader among {len(servers)} servers, "
                            f"got {len(leaders)} ({', '.join(leaders) or 'none'})")
        text += f", leader {leaders[0]}" if len(leaders) == 1 else ", no leader yet"
    return [text]


def _mesos(reports: Sequence[NodeReport], master_unit: str, agent_units: Sequence[str],
           problems: list[str]) -> list[str]:
    masters = [(r, r.unit(master_unit)) for r in reports]
    masters = [(r, u) for r, u in masters if u is not None]
    agents = [r for r in reports if any(r.unit(a) is not None for a in agent_units)]
    if not masters:
        return []
    named = {u["facts"].get("leader") for _, u in masters if u.get("ready") and u["facts"].get("leader")}
    if len(named) > 1:
        problems.append(f"mesos: masters disagree on the leader: {', '.join(sorted(named))}")
        return ["mesos: leader disputed"]
    if not named:
        return ["mesos: no leading master yet"]
    (leader,) = named
    leading = [(r, u) for r, u in masters if u["facts"].get("is_leader")]
    if not leading:
        problems.append(f"mesos: the masters name {leader} the leader, but no master answered as it")
        return [f"mesos: leader {leader} not among the answers"]
    active = set(leading[0][1]["facts"].get("active_agents", []))
    missing = [r.name for r in agents if r.address not in active]
    if missing:
        problems.append(f"mesos: the leader {leader} has {len(agents) - len(missing)}/{len(agents)} agents "
                        f"active; not yet: {', '.join(missing)}")
    return [f"mesos: leader {leader}, {len(agents) - len(missing)}/{len(agents)} agents active"]


def _plain(reports: Sequence[NodeReport], unit: str) -> list[str]:
    found = [r.unit(unit) for r in reports]
    found = [u for u in found if u is not None]
    if not found:
        return []
    return [f"{unit}: {sum(1 for u in found if u.get('ready'))}/{len(found)} answering"]
