"""Is a cluster ready? A verdict from every node's `kiln-node status --json`.

Ready means: every node answered and every service of its role is up; the masters' ZooKeeper
servers form one ensemble with exactly one leader; where the image has Mesos, all masters
agree on one leading master and it has every agent registered; Marathon answers on every
master that runs it. Anything else is "not ready" with one line per reason, naming the node
and the service, which is what `invoke up` prints when it gives up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class NodeReport:
    name: str
    role: str
    status: dict[str, Any] | None  # kiln-node status --json, or None when the node did not answer
    error: str = ""

    def unit(self, name: str) -> dict[str, Any] | None:
        if self.status is None:
            return None
        return next((u for u in self.status.get("units", []) if u.get("unit") == name), None)


@dataclass
class Verdict:
    ready: bool
    summary: list[str] = field(default_factory=list)  # what holds, one line per service kind
    problems: list[str] = field(default_factory=list)  # what does not, "node: service: why"

    def line(self) -> str:
        return "; ".join(self.summary + self.problems)


def verdict(reports: Sequence[NodeReport]) -> Verdict:
    problems: list[str] = []
    summary: list[str] = []
    for r in reports:
        if r.status is None:
            problems.append(f"{r.name}: no status ({r.error or 'no answer'})")
            continue
        for u in r.status.get("units", []):
            if not u.get("ready"):
                problems.append(f"{r.name}: {u.get('unit')}: {u.get('detail')}")
    summary += _zookeeper(reports, problems)
    summary += _mesos(reports, problems)
    summary += _plain(reports, "marathon", "marathon")
    missing = sorted({line.split(" ", 1)[0] for r in reports if r.status
                      for line in r.status.get("skipped", [])})
    if missing:
        summary.append(f"not in this image: {', '.join(missing)}")
    return Verdict(ready=not problems, summary=summary, problems=problems)


def _zookeeper(reports: Sequence[NodeReport], problems: list[str]) -> list[str]:
    servers = [(r, r.unit("zookeeper")) for r in reports if r.role in ("master", "standalone")]
    servers = [(r, u) for r, u in servers if u is not None]
    if not servers:
        return []
    serving = [(r, u["facts"].get("mode", "")) for r, u in servers if u.get("ready")]
    leaders = [r.name for r, mode in serving if mode == "leader"]
    text = f"zookeeper: {len(serving)}/{len(servers)} serving"
    if len(servers) > 1:
        if len(serving) == len(servers) and len(leaders) != 1:
            problems.append(f"zookeeper: expected one leader among {len(servers)} servers, "
                            f"got {len(leaders)} ({', '.join(leaders) or 'none'})")
        text += f", leader {leaders[0]}" if len(leaders) == 1 else ", no leader yet"
    return [text]


def _mesos(reports: Sequence[NodeReport], problems: list[str]) -> list[str]:
    masters = [(r, r.unit("mesos-master")) for r in reports if r.role in ("master", "standalone")]
    masters = [(r, u) for r, u in masters if u is not None]
    agents = [(r, r.unit("mesos-agent")) for r in reports if r.role in ("agent", "standalone")]
    agents = [(r, u) for r, u in agents if u is not None]
    if not masters:
        return []
    seen = {u["facts"].get("leader") for _, u in masters if u.get("ready") and u["facts"].get("leader")}
    if len(seen) > 1:
        problems.append(f"mesos: masters disagree on the leader: {', '.join(sorted(seen))}")
        return ["mesos: leader disputed"]
    if not seen:
        return ["mesos: no leading master yet"]
    (leader,) = seen
    leading = [u for _, u in masters if u["facts"].get("is_leader")]
    registered = int(leading[0]["facts"].get("activated_agents", 0)) if leading else 0
    if len(agents) and registered < len(agents):
        problems.append(f"mesos: {registered}/{len(agents)} agents registered with the leader {leader}")
    return [f"mesos: leader {leader}, {registered}/{len(agents)} agents registered"]


def _plain(reports: Sequence[NodeReport], unit: str, label: str) -> list[str]:
    found = [r.unit(unit) for r in reports]
    found = [u for u in found if u is not None]
    if not found:
        return []
    return [f"{label}: {sum(1 for u in found if u.get('ready'))}/{len(found)} answering"]
