"""The component catalog (components/*/component.json): loaded and checked, and what the other
parts of kiln derive from it: unit order, ports, endpoints, kiln-node's baked copy, the config
schema. Broken catalogs are made in a copy of the tree (the `tree` fixture)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kiln.config import catalog
from kiln.config.load import load_config
from kiln.errors import ConfigError
from kiln.paths import REPO_ROOT, Paths

OFFLINE = ["docker", "haproxy", "java", "node", "qemu-kvm", "zookeeper"]
FULL = [*OFFLINE, "marathon", "mesos"]


def _edit(tree: Paths, component: str, change: Any) -> None:
    path = tree.root / "components" / component / "component.json"
    facts = json.loads(path.read_text())
    change(facts)
    path.write_text(json.dumps(facts))


def _problems(tree: Paths) -> list[str]:
    with pytest.raises(ConfigError) as info:
        catalog.load(tree.root)
    return info.value.problems


def test_the_repository_catalog_loads_and_orders_every_unit_after_what_it_talks_to() -> None:
    cat = catalog.load(REPO_ROOT)
    order = cat.unit_order()
    assert set(order) == {"zookeeper", "docker", "mesos-master", "mesos-agent", "marathon", "haproxy",
                          "kiln-haproxy-bridge", "rancher-mesos-scheduler", "rancher-mesos-executor"}
    for unit, facts in ((u, f) for c in cat.components.values() for u, f in c.units.items()):
        assert all(order.index(other) < order.index(unit) for other in facts.get("after", [])), unit
    assert cat.bake_order(["marathon", "mesos", "java", "zookeeper"]) == ["mesos", "java", "marathon",
                                                                          "zookeeper"]


def test_unknown_unit_in_an_order_is_an_error(tree: Paths) -> None:
    _edit(tree, "marathon", lambda f: f["units"]["marathon"].update(after=["mesos-mastr"]))
    assert any("units.marathon.after names unknown unit 'mesos-mastr'" in p for p in _problems(tree))


def test_a_port_declared_twice_is_an_error(tree: Paths) -> None:
    _edit(tree, "docker", lambda f: f.update(ports={"api": {"port": 5050, "reach": ["cluster"], "why": "x"}}))
    assert any("port 5050/tcp" in p and "declared twice" in p for p in _problems(tree))


def test_overlapping_port_ranges_clash_too(tree: Paths) -> None:
    _edit(tree, "docker", lambda f: f.update(ports={"r": {"port": 31999, "last": 32010, "reach": ["cluster"],
                                                          "why": "x"}}))
    assert any("declared twice" in p and "mesos.tasks" in p for p in _problems(tree))


def test_a_probe_kind_the_configurator_does_not_know_is_an_error(tree: Paths) -> None:
    _edit(tree, "zookeeper", lambda f: f["units"]["zookeeper"]["probe"].update(kind="telepathy"))
    assert any("probe.kind 'telepathy'" in p and "kiln-node status knows" in p for p in _problems(tree))


def test_a_condition_the_configurator_does_not_know_is_an_error(tree: Paths) -> None:
    _edit(tree, "docker", lambda f: f["units"]["docker"].update(when="full-moon"))
    assert any("when 'full-moon'" in p for p in _problems(tree))


def test_references_to_undeclared_ports_and_components_are_errors(tree: Paths) -> None:
    _edit(tree, "mesos", lambda f: f["endpoints"][0].update(port="ui"))
    _edit(tree, "marathon", lambda f: f.update(depends=["java", "cassandra"]))
    problems = _problems(tree)
    assert any("endpoint 'Mesos' names port 'ui'" in p for p in problems)
    assert any("depends on unknown component 'cassandra'" in p for p in problems)


def test_schema_problems_name_the_file_and_a_dependency_cycle_is_found(tree: Paths) -> None:
    _edit(tree, "java", lambda f: f.update(depends=["marathon"]))
    _edit(tree, "node", lambda f: f.update(colour="blue"))
    problems = _problems(tree)
    assert any(p.startswith("components/node/component.json: $.colour: unknown key") for p in problems)
    (tree.root / "components/node/component.json").write_text('{"description": "n", "config": {}}')
    assert any("depends: cycle among" in p for p in _problems(tree))


def test_a_component_without_its_bake_script_is_an_error(tree: Paths) -> None:
    (tree.root / "components/docker/bake.sh").unlink()
    assert "components/docker: no bake.sh" in _problems(tree)


def test_component_settings_are_checked_against_the_component_s_own_schema(tree: Paths) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tree, sets=["components.haproxy.poll_seconds=0", "components.toy={}"])
    text = str(info.value)
    assert "$.components.haproxy.poll_seconds: expected minimum 1" in text
    assert "$.components.toy: unknown key" in text


def test_endpoint_addresses() -> None:
    assert catalog.address("http", 5050) == "http://{ip}:5050"
    assert catalog.address("http", 80) == "http://{ip}/"
    assert catalog.address("", 2181) == "{ip}:2181"
    assert catalog.address("https", 443, "/ui") == "https://{ip}/ui"


def test_an_offline_image_lists_no_mesos_or_marathon(node_catalog: dict[str, Any]) -> None:
    assert catalog.endpoints(node_catalog, "standalone", "10.141.141.10", OFFLINE) == [
        ("HAProxy", "http://10.141.141.10/"), ("ZooKeeper", "10.141.141.10:2181")]
    assert catalog.one_line(node_catalog, "agent", "10.0.0.5", OFFLINE) == "(no service UI in this image)"


def test_a_full_image_lists_every_service_of_the_role(node_catalog: dict[str, Any]) -> None:
    assert [label for label, _ in catalog.endpoints(node_catalog, "standalone", "10.0.0.1", FULL)] == [
        "HAProxy", "Marathon", "Mesos", "Mesos agent", "ZooKeeper"]
    assert catalog.endpoints(node_catalog, "agent", "10.0.0.5", FULL) == [("Mesos agent", "http://10.0.0.5:5051")]
    assert catalog.endpoints(node_catalog, "master", "10.0.0.1", None) == \
        catalog.endpoints(node_catalog, "master", "10.0.0.1", FULL)


def test_the_node_catalog_resolves_ports_from_the_config(tree: Paths) -> None:
    config = load_config(tree, sets=["components.haproxy.vhost_port=8088"]).data
    node = catalog.load(tree.root).node_catalog(config)
    assert node["ports"]["haproxy"]["vhosts"] == 8088
    assert ("HAProxy", "http://10.0.0.1:8088") in catalog.endpoints(node, "master", "10.0.0.1", None)
    zk = next(u for u in node["units"] if u["unit"] == "zookeeper")
    assert zk["probe"] == {"kind": "zookeeper", "port": 2181, "path": ""}


@pytest.mark.skipif(shutil.which("ruby") is None,
                    reason="ruby is not installed (it comes with Debian's vagrant package)")
@pytest.mark.parametrize("components", [OFFLINE, FULL, None, []])
@pytest.mark.parametrize("role", ["standalone", "master", "agent"])
def test_the_vagrantfile_lists_what_the_rendered_json_holds(node_catalog: dict[str, Any], role: str,
                                                           components: list[str] | None) -> None:
    cluster = {"box": {"components": components}, "catalog": node_catalog}
    script = (f"require {json.dumps(str(REPO_ROOT / 'vagrant' / 'kiln.rb'))}; "
              "puts JSON.generate(Kiln.endpoints(JSON.parse(ARGV[0]), ARGV[1], ARGV[2]))")
    done = subprocess.run(["ruby", "-e", script, "--", json.dumps(cluster), role, "10.1.2.3"],
                          capture_output=True, text=True, check=True)
    assert [tuple(pair) for pair in json.loads(done.stdout)] == \
        catalog.endpoints(node_catalog, role, "10.1.2.3", components)


def test_kiln_rb_holds_no_table_of_facts() -> None:
    ruby = (REPO_ROOT / "vagrant" / "kiln.rb").read_text()
    for fact in ("5050", "8080", "2181", "qemu", "standalone", "BUILDER_FOR_PROVIDER", "accel-probe"):
        assert fact not in ruby, fact


def test_ports_are_written_once_outside_tests_and_their_component() -> None:
    """Every port number of the catalog appears, in code and templates, only in its component's
    folder (bake script included): nowhere else in the tree outside tests."""
    cat = catalog.load(REPO_ROOT)
    files = [p for p in REPO_ROOT.rglob("*") if p.suffix in (".py", ".rb", ".sh", ".j2")
             and p.is_file() and not _ignored(p)]
    for rule in cat.port_rules():
        if rule.first < 1000:
            continue  # 22 and 80 appear as ordinary numbers everywhere
        number = re.compile(rf"(?<![0-9A-Za-z]){rule.first}(?![0-9])")
        holders = sorted({str(p.relative_to(REPO_ROOT)) for p in files
                          if number.search(p.read_text(errors="replace"))
                          and not p.is_relative_to(REPO_ROOT / "components" / rule.component)})
        assert holders == [], f"{rule.component}.{rule.name} ({rule.first}) also written in {holders}"


def _ignored(path: Path) -> bool:
    rel = path.relative_to(REPO_ROOT).parts
    return rel[0] in ("tests", "build", ".venv", ".git") or "__pycache__" in rel
