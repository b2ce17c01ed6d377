"""Cluster shapes ('1', '3m', '3m2a') and the node specs of every node in a shape.

A node spec is what kiln-node applies at boot; its structure is kiln_node/spec.schema.json,
shared with the node side, which checks it with the standard library only.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from kiln.paths import REPO_ROOT

SHAPE_FORMS = "'1' (one standalone node), 'Nm' (N masters) or 'NmMa' (N masters, M agents), e.g. 3m2a"
# A cluster's name becomes a directory, a Vagrant machine prefix and AWS tags and resource names.
CLUSTER_NAME = re.compile(r"[a-z][a-z0-9-]{0,38}[a-z0-9]")
CLUSTER_NAME_RULE = "2-40 lower-case letters, digits and '-', starting with a letter and not ending in '-'"


def valid_cluster_name(name: str) -> bool:
    return CLUSTER_NAME.fullmatch(name) is not None


# Applied with fullmatch: `^...$` with re.match would take "3m\n" ($ matches before a final newline).
_SHAPE = re.compile(r"(?P<masters>[1-9][0-9]?)m(?:(?P<agents>[0-9]{1,2})a)?")


@dataclass(frozen=True)
class Shape:
    """`masters` masters and `agents` agents; '1' is one standalone node (master and agent at once)."""

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
    """'1' -> standalone, 'Nm' -> N masters, 'NmMa' -> N masters and M agents (N >= 1, M >= 0)."""
    if text == "1":
        return Shape(masters=1, agents=0, standalone=True)
    m = _SHAPE.fullmatch(text) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"bad shape {text!r}: expected {SHAPE_FORMS}")
    return Shape(masters=int(m.group("masters")), agents=int(m.group("agents") or 0))


def node_specs(
    shape: Shape, cluster: dict[str, Any], options: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """One node spec per node: masters m1..mN get the first addresses, agents a1..aM the next."""
    prefix, first = cluster["network_prefix"], int(cluster["first_host"])
    last = first + shape.nodes - 1
    if last > 254:
        raise ValueError(f"shape {shape.name} needs host numbers {first}..{last} of {prefix}.x; "
                         "expected at most 254 (lower cluster.first_host)")
    addresses = [f"{prefix}.{first + i}" for i in range(shape.nodes)]
    return specs_for_addresses(shape, cluster["name"], addresses, options)


def specs_for_addresses(
    shape: Shape, cluster_name: str, addresses: list[str], options: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Like node_specs, with the nodes' addresses given in node order (masters first): for networks
    where addresses are picked, not numbered, such as an EC2 subnet."""
    if len(addresses) != shape.nodes:
        raise ValueError(f"shape {shape.name} has {shape.nodes} node(s), got {len(addresses)} address(es)")

    def spec(role: str, node_id: int, name: str, ip: str, masters: list[str]) -> dict[str, Any]:
        # Each spec owns its lists and options: callers may edit one node's spec.
        return {"cluster": cluster_name, "role": role, "node_id": node_id, "name": name, "ip": ip,
                "masters": list(masters), "options": copy.deepcopy(dict(options or {}))}

    if shape.standalone:
        return [spec("standalone", 1, "mesos", addresses[0], addresses[:1])]
    masters = addresses[:shape.masters]
    specs = [spec("master", i + 1, f"m{i + 1}", ip, masters) for i, ip in enumerate(masters)]
    specs += [spec("agent", shape.masters + i + 1, f"a{i + 1}", ip, masters)
              for i, ip in enumerate(addresses[shape.masters:])]
    return specs


@cache
def _spec_schema() -> dict[str, Any]:
    return json.loads((REPO_ROOT / "kiln_node" / "spec.schema.json").read_text())


def validate_spec(spec: Any) -> list[str]:
    """Problems of a node spec, '$.path: message' each: the shared JSON Schema (jsonschema), then the
    node side's cross-field rules. Warnings (an even number of masters) are not problems."""
    from kiln.config.schema import schema_problems
    from kiln_node.spec import semantic_problems

    problems = schema_problems(spec, _spec_schema())
    return problems + semantic_problems(spec)[0]
