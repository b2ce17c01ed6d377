"""The component catalog: components/<name>/component.json, one folder per component.

Each component's facts (packages per family, units per role and what they talk to, ports and
who may reach them, UI endpoints, readiness probe, the schema of its config entry) are written
once, there. Everything else reads them from here: the config schema of components.<name>, the
bake order, kiln.env, the node configurator (the catalog is baked into the image as one JSON
file, `node_catalog`), the endpoint list (Python, and the Vagrant side through rendered JSON),
the AWS security-group rules, readiness, and which testinfra suites run.

The catalog is checked when loaded: schema first, then what a schema cannot say (a unit ordered
after a unit nobody declares, a port declared twice, a probe kind or condition kiln-node does
not know, a dependency cycle). Every problem is reported at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from kiln.config.schema import schema_problems
from kiln.errors import ConfigError
from kiln_node.services import CONDITIONS
from kiln_node.status import PROBE_KINDS

FACTS = "component.json"
BAKE_SCRIPT = "bake.sh"
SCHEMA = "component.schema.json"
NODE_CATALOG_VERSION = 1


@dataclass(frozen=True)
class Component:
    name: str
    folder: Path
    facts: dict[str, Any]

    @property
    def depends(self) -> list[str]:
        return list(self.facts.get("depends", []))

    @property
    def units(self) -> dict[str, dict[str, Any]]:
        return dict(self.facts.get("units", {}))

    @property
    def ports(self) -> dict[str, dict[str, Any]]:
        return dict(self.facts.get("ports", {}))

    @property
    def endpoints(self) -> list[dict[str, Any]]:
        return list(self.facts.get("endpoints", []))

    def packages(self, family: str) -> list[str]:
        return list(self.facts.get("packages", {}).get(family, []))

    @property
    def bake_script(self) -> Path:
        return self.folder / BAKE_SCRIPT

    @property
    def suites(self) -> list[Path]:
        """The component's testinfra suites (test_*.py in its folder)."""
        return sorted(self.folder.glob("test_*.py"))


@dataclass(frozen=True)
class PortRule:
    component: str
    name: str
    first: int
    last: int
    protocol: str
    reach: tuple[str, ...]
    why: str


@dataclass(frozen=True)
class Catalog:
    components: dict[str, Component]

    def __contains__(self, name: object) -> bool:
        return name in self.components

    def __getitem__(self, name: str) -> Component:
        return self.components[name]

    def names(self) -> list[str]:
        return sorted(self.components)

    # -- order -------------------------------------------------------------------------------

    def bake_order(self, wanted: Sequence[str]) -> list[str]:
        """`wanted` with each component after the ones it depends on (stable otherwise)."""
        return _ordered(list(wanted), lambda n: [d for d in self[n].depends if d in wanted])

    def unit_order(self) -> list[str]:
        """Every unit, each after the units it talks to; ties keep catalog order."""
        units = {u: facts for c in self.components.values() for u, facts in c.units.items()}
        return _ordered(list(units), lambda u: list(units[u].get("after", [])))

    # -- ports -------------------------------------------------------------------------------

    def port_rules(self, config: Mapping[str, Any] | None = None) -> list[PortRule]:
        """Every declared port; ports taken from the config need `config` (else left out)."""
        rules = []
        for comp in self.components.values():
            for name, port in comp.ports.items():
                number = _port_number(comp.name, port, config)
                if number is None:
                    continue
                rules.append(PortRule(comp.name, name, number, int(port.get("last", number)),
                                      port.get("protocol", "tcp"), tuple(port["reach"]), port["why"]))
        return rules

    def port(self, component: str, name: str, config: Mapping[str, Any] | None = None) -> int:
        number = _port_number(component, self[component].ports[name], config)
        if number is None:
            raise KeyError(f"{component}.{name} is taken from the config: pass the config")
        return number

    # -- endpoints ---------------------------------------------------------------------------

    def endpoint_list(self, config: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every endpoint with its address template ({ip} for the machine's address)."""
        out = []
        for comp in self.components.values():
            for ep in comp.endpoints:
                port = _port_number(comp.name, comp.ports[ep["port"]], config)
                if port is None:
                    continue
                out.append({"label": ep["label"], "component": comp.name, "roles": list(ep["roles"]),
                            "address": address(ep.get("scheme", ""), port, ep.get("path", ""))})
        return out

    # -- what the image carries ---------------------------------------------------------------

    def node_catalog(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The catalog as kiln-node reads it (/etc/kiln/catalog.json): units in start order with
        resolved probe ports, every port by component and name, and the endpoints."""
        units = []
        for unit in self.unit_order():
            comp = next(c for c in self.components.values() if unit in c.units)
            facts = comp.units[unit]
            probe = None
            if "probe" in facts:
                probe = {"kind": facts["probe"]["kind"], "path": facts["probe"].get("path", "")}
                if "port" in facts["probe"]:
                    probe["port"] = self.port(comp.name, facts["probe"]["port"], config)
            units.append({"unit": unit, "component": comp.name, "roles": list(facts["roles"]),
                          "when": facts.get("when", ""), "part": facts.get("part", ""),
                          "probe": probe, "reads": list(facts.get("reads", []))})
        ports = {c.name: {n: self.port(c.name, n, config) for n in c.ports}
                 for c in self.components.values() if c.ports}
        return {"version": NODE_CATALOG_VERSION, "units": units, "ports": ports,
                "endpoints": self.endpoint_list(config)}

    def config_schema(self, base: Mapping[str, Any]) -> dict[str, Any]:
        """config.schema.json with each component's own entry schema under components.<name>."""
        schema = json.loads(json.dumps(base))
        section = schema["properties"]["components"]
        section.setdefault("properties", {})
        for comp in self.components.values():
            section["properties"][comp.name] = comp.facts["config"]
        section["additionalProperties"] = False
        names = schema.setdefault("$defs", {}).setdefault("component_name", {})
        names.clear()
        names["enum"] = self.names()
        return schema


def address(scheme: str, port: int, path: str = "") -> str:
    """http + port P -> 'http://{ip}:P'; http + 80 -> 'http://{ip}/'; no scheme -> '{ip}:P'."""
    if not scheme:
        return f"{{ip}}:{port}{path}"
    default = {"http": 80, "https": 443}[scheme]
    if port == default:
        return f"{scheme}://{{ip}}{path or '/'}"
    return f"{scheme}://{{ip}}:{port}{path}"


def endpoints(node_catalog: Mapping[str, Any], role: str, ip: str,
              components: Sequence[str] | None) -> list[tuple[str, str]]:
    """(label, address) of each service `role` runs that the image holds (all when unknown)."""
    return [(e["label"], e["address"].format(ip=ip)) for e in node_catalog["endpoints"]
            if role in e["roles"] and (components is None or e["component"] in components)]


def one_line(node_catalog: Mapping[str, Any], role: str, ip: str, components: Sequence[str] | None) -> str:
    found = endpoints(node_catalog, role, ip, components)
    return "  ".join(f"{label} {addr}" for label, addr in found) or "(no service UI in this image)"


def _port_number(component: str, port: Mapping[str, Any], config: Mapping[str, Any] | None) -> int | None:
    if "port" in port:
        return int(port["port"])
    if config is None:
        return None
    return int(config["components"][component][port["config"]])


def _ordered(items: list[str], before: Any) -> list[str]:
    """Kahn's algorithm; among the items that may come next, the one listed first wins."""
    pending = list(items)
    done: list[str] = []
    while pending:
        ready = next((i for i in pending if all(b in done for b in before(i))), None)
        if ready is None:
            raise ValueError(f"cycle among {', '.join(pending)}")
        done.append(ready)
        pending.remove(ready)
    return done


# -- loading and checking -----------------------------------------------------------------------

def load(root: Path) -> Catalog:
    """The catalog under root/components; ConfigError listing every problem."""
    folder = root / "components"
    schema = json.loads((folder / SCHEMA).read_text(encoding="utf-8"))
    problems: list[str] = []
    found: dict[str, Component] = {}
    for path in sorted(folder.glob(f"*/{FACTS}")):
        name = path.parent.name
        where = f"components/{name}/{FACTS}"
        try:
            facts = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            problems.append(f"{where}: unreadable ({exc})")
            continue
        own = schema_problems(facts, schema)
        problems += [f"{where}: {p}" for p in own]
        if not own:
            found[name] = Component(name, path.parent, facts)
    if not found and not problems:
        problems.append(f"{folder}: no component folders (components/<name>/{FACTS})")
    problems += cross_problems(found)
    if problems:
        raise ConfigError(problems, source="component catalog")
    return Catalog(found)


@cache
def load_cached(root: Path) -> Catalog:
    return load(root)


def cross_problems(components: Mapping[str, Component]) -> list[str]:
    """What the schema cannot check; see the module docstring."""
    problems: list[str] = []
    owner: dict[str, str] = {}
    for comp in components.values():
        where = f"components/{comp.name}/{FACTS}"
        if not comp.bake_script.is_file():
            problems.append(f"components/{comp.name}: no {BAKE_SCRIPT}")
        for dep in comp.depends:
            if dep not in components:
                problems.append(f"{where}: depends on unknown component {dep!r}")
        for unit in comp.units:
            if unit in owner:
                problems.append(f"{where}: unit {unit} is declared by {owner[unit]} too")
            owner.setdefault(unit, comp.name)
        for unit, facts in comp.units.items():
            when = facts.get("when")
            if when and when not in CONDITIONS:
                problems.append(f"{where}: units.{unit}.when {when!r}: kiln-node knows "
                                f"{', '.join(sorted(CONDITIONS))}")
            probe = facts.get("probe")
            if probe:
                if probe["kind"] not in PROBE_KINDS:
                    problems.append(f"{where}: units.{unit}.probe.kind {probe['kind']!r}: kiln-node status "
                                    f"knows {', '.join(sorted(PROBE_KINDS))}")
                elif PROBE_KINDS[probe["kind"]] and "port" not in probe:
                    problems.append(f"{where}: units.{unit}.probe: a {probe['kind']} probe needs a port")
                if "port" in probe and probe["port"] not in comp.ports:
                    problems.append(f"{where}: units.{unit}.probe.port {probe['port']!r} is not in ports")
        for ep in comp.endpoints:
            if ep["port"] not in comp.ports:
                problems.append(f"{where}: endpoint {ep['label']!r} names port {ep['port']!r}, "
                                "which is not in ports")
        for name, port in comp.ports.items():
            if "config" in port and port["config"] not in comp.facts["config"].get("properties", {}):
                problems.append(f"{where}: ports.{name}.config {port['config']!r} is not a key of "
                                "its config entry")
            if "last" in port and "port" in port and port["last"] < port["port"]:
                problems.append(f"{where}: ports.{name}: last {port['last']} is below port {port['port']}")
    for comp in components.values():
        for unit, facts in comp.units.items():
            for other in facts.get("after", []):
                if other not in owner:
                    problems.append(f"components/{comp.name}/{FACTS}: units.{unit}.after names unknown "
                                    f"unit {other!r}")
    problems += _port_clashes(Catalog(dict(components)).port_rules())
    if not problems:
        catalog = Catalog(dict(components))
        for what, order in (("units", catalog.unit_order), ("depends", lambda: catalog.bake_order(
                list(components)))):
            try:
                order()
            except ValueError as exc:
                problems.append(f"component catalog: {what}: {exc}")
    return problems


def port_clashes(rules: Iterable[PortRule]) -> list[str]:
    return _port_clashes(rules)


def _port_clashes(rules: Iterable[PortRule]) -> list[str]:
    problems = []
    seen: list[PortRule] = []
    for rule in rules:
        for other in seen:
            if rule.protocol == other.protocol and rule.first <= other.last and other.first <= rule.last:
                problems.append(f"port {rule.first}/{rule.protocol} ({rule.component}.{rule.name}) is "
                                f"declared twice: also {other.component}.{other.name}")
        seen.append(rule)
    return problems
