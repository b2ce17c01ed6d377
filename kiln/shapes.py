"""Cluster shapes ('1', '3m', '3m2a') and the node specs of every node in a shape."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

SHAPE_FORMS = "'1' (one standalone node), 'Nm' (N masters) or 'NmMa' (N masters, M agents), e.g. 3m2a"
_SHAPE = re.compile(r"^(?P<masters>[1-9][0-9]?)m(?:(?P<agents>[0-9]{1,2})a)?$")


@dataclass(frozen=True)
class Shape:
    masters: int
    agents: int
    standalone: bool = False

    @property
    def name(self) -> str:
        if self.standalone:
            return "1"
        return f"{self.masters}m{self.agents}a" if self.agents else f"{self.masters}m"

    @property
    def nodes(self) -> int:
        return 1 if self.standalone else self.masters + self.agents

    @property
    def quorum(self) -> int:
        return self.masters // 2 + 1


def parse_shape(text: str) -> Shape:
    if text == "1":
        return Shape(masters=1, agents=0, standalone=True)
    m = _SHAPE.match(text or "")
    if not m:
        raise ValueError(f"bad shape {text!r}: expected {SHAPE_FORMS}")
    return Shape(masters=int(m.group("masters")), agents=int(m.group("agents") or 0))


def node_specs(
    shape: Shape, cluster: dict[str, Any], options: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """One node spec per node: masters m1..mN get the first addresses, agents a1..aM the next."""
    prefix, first = cluster["network_prefix"], int(cluster["first_host"])
    opts = dict(options or {})
    if shape.standalone:
        ip = f"{prefix}.{first}"
        return [{"cluster": cluster["name"], "role": "standalone", "node_id": 1, "name": "mesos",
                 "ip": ip, "masters": [ip], "options": opts}]
    masters = [f"{prefix}.{first + i}" for i in range(shape.masters)]
    specs = [{"cluster": cluster["name"], "role": "master", "node_id": i + 1, "name": f"m{i + 1}",
              "ip": ip, "masters": masters, "options": opts} for i, ip in enumerate(masters)]
    specs += [{"cluster": cluster["name"], "role": "agent", "node_id": shape.masters + i + 1,
               "name": f"a{i + 1}", "ip": f"{prefix}.{first + shape.masters + i}", "masters": masters,
               "options": opts} for i in range(shape.agents)]
    return specs
