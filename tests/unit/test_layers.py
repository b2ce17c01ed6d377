"""Layer keys: deterministic, changed by (and only by) what can change a layer's content; the
system layer untouched by kiln's own programs and by payload settings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kiln.config import catalog
from kiln.config.load import load_config
from kiln.config.targets import select_pairs
from kiln.image import layers
from kiln.image.render import provision_env
from kiln.paths import Paths

SOURCES = {"deb http://deb.debian.org/debian bookworm main": "a" * 64}
TOOLS = {"packer": "1.6.6", "qemu": "QEMU emulator version 7.2.0"}


def _plan(tree: Paths, *, sets: tuple[str, ...] = (), sources=SOURCES, packages=None, tools=TOOLS,
          base: str = "base-key") -> dict[str, layers.LayerPlan]:
    catalog.load_cached.cache_clear()
    config = load_config(tree, sets=list(sets), profile="offline")
    (pair,) = select_pairs(config.data, ["debian-12"], ["qemu"])
    cat = catalog.load(tree.root)
    env = provision_env(config, pair, config.components_for("debian-12"), "rev-1", cat)
    ctx = layers.KeyContext(tree.root, env, packages or {"mesos": "b" * 64}, sources, tools)
    return {p.name: p for p in layers.plan(config, pair, base, ctx)}


def _keys(plans: dict[str, layers.LayerPlan]) -> tuple[str, str]:
    return plans["system"].key, plans["payload"].key


def test_keys_are_deterministic_and_chain(tree: Paths) -> None:
    first, second = _plan(tree), _plan(tree)
    assert _keys(first) == _keys(second)
    assert first["payload"].parent == first["system"].key
    assert first["system"].parent == "base-key"
    assert _keys(_plan(tree, base="other-base"))[0] != first["system"].key


def test_the_checkout_s_path_and_the_git_revision_do_not_matter(tree: Paths, tmp_path: Path) -> None:
    moved = Paths(tmp_path / "elsewhere")
    shutil.copytree(tree.root, moved.root)
    assert _keys(_plan(tree)) == _keys(_plan(moved))
    catalog.load_cached.cache_clear()
    config = load_config(tree, profile="offline")
    (pair,) = select_pairs(config.data, ["debian-12"], ["qemu"])
    cat = catalog.load(tree.root)
    envs = [provision_env(config, pair, config.components_for("debian-12"), rev, cat) for rev in ("r1", "r2")]
    assert envs[0] != envs[1]
    keyed = [layers.env_lines(env, cat, ["zookeeper"], packages_of_all=True) for env in envs]
    assert keyed[0] == keyed[1]


def test_dict_order_does_not_matter() -> None:
    assert layers.digest({"a": 1, "b": [1, 2]}) == layers.digest({"b": [1, 2], "a": 1})
    assert layers.digest({"a": [1, 2]}) != layers.digest({"a": [2, 1]})


def test_a_kiln_node_file_changes_only_the_payload_layer(tree: Paths) -> None:
    before = _keys(_plan(tree))
    path = tree.root / "kiln_node" / "render.py"
    path.write_text(path.read_text() + "\n# changed\n")
    after = _keys(_plan(tree))
    assert after[0] == before[0] and after[1] != before[1]


def test_a_payload_component_setting_changes_only_the_payload_layer(tree: Paths) -> None:
    before = _keys(_plan(tree))
    after = _keys(_plan(tree, sets=("components.haproxy.poll_seconds=9",)))
    assert after[0] == before[0] and after[1] != before[1]


@pytest.mark.parametrize("change", [
    ("components.zookeeper.version=3.9.9",),
    ("components.base.nofile_limit=4096",),
    ("build.disk_size_mb=20000",),
])
def test_system_inputs_change_both_layers(tree: Paths, change: tuple[str, ...]) -> None:
    before = _keys(_plan(tree))
    after = _keys(_plan(tree, sets=change))
    assert after[0] != before[0] and after[1] != before[1]


def test_an_added_package_a_new_mesos_package_sources_and_tools_change_the_system_layer(tree: Paths) -> None:
    base = _plan(tree)["system"].key
    path = tree.root / "components" / "haproxy" / "component.json"
    path.write_text(path.read_text().replace('"haproxy",', '"haproxy", "socat",', 1))
    assert _plan(tree)["system"].key != base
    path.write_text(path.read_text().replace('"haproxy", "socat",', '"haproxy",', 1))
    assert _plan(tree)["system"].key == base
    assert _plan(tree, packages={"mesos": "c" * 64})["system"].key != base
    assert _plan(tree, sources={**SOURCES, "deb http://deb.debian.org/debian bookworm main": "d" * 64})[
        "system"].key != base
    assert _plan(tree, tools={**TOOLS, "packer": "1.7.0"})["system"].key != base


def test_explain_names_the_changed_inputs() -> None:
    old = {"env": ["KILN_A=1"], "scripts": {"x.sh": "1", "y.sh": "2"}, "kiln": "0.1.0"}
    new = {"env": ["KILN_A=2"], "scripts": {"x.sh": "1", "y.sh": "3", "z.sh": "4"}, "kiln": "0.1.0"}
    assert layers.explain(old, new) == ['env: ["KILN_A=1"] -> ["KILN_A=2"]', 'scripts.y.sh: "2" -> "3"',
                                        "scripts.z.sh: new"]


def test_a_second_target_with_the_same_distribution_shares_the_system_layer(tree: Paths) -> None:
    config = json.loads(tree.config.read_text())
    config["targets"]["debian-13"] = dict(config["targets"]["debian-12"])
    tree.config.write_text(json.dumps(config))
    catalog.load_cached.cache_clear()
    loaded = load_config(tree, profile="offline")
    cat = catalog.load(tree.root)
    plans = {}
    for name in ("debian-12", "debian-13"):
        (pair,) = select_pairs(loaded.data, [name], ["qemu"])
        env = provision_env(loaded, pair, loaded.components_for(name), "rev", cat)
        ctx = layers.KeyContext(tree.root, env, {"mesos": "b" * 64}, SOURCES, TOOLS)
        plans[name] = {p.name: p.key for p in layers.plan(loaded, pair, "base-key", ctx)}
    assert plans["debian-12"]["system"] == plans["debian-13"]["system"]
    assert plans["debian-12"]["payload"] != plans["debian-13"]["payload"]


def _add_package(tree: Paths, component: str, package: str) -> None:
    path = tree.root / "components" / component / "component.json"
    facts = json.loads(path.read_text())
    facts["packages"]["apt"].append(package)
    path.write_text(json.dumps(facts, indent=2))


def _cached(plan: layers.LayerPlan, base: str = "base-key", used: float = 1.0) -> layers.Candidate:
    return layers.Candidate(plan.key, plan.inputs, base, plan.parent, used)


def test_an_added_package_changes_the_system_inputs_in_their_package_lists_only(tree: Paths) -> None:
    before = _plan(tree)["system"]
    _add_package(tree, "zookeeper", "jq")  # a system component's facts
    after = _plan(tree)["system"]
    assert after.key != before.key
    changed = layers.explain(before.inputs, after.inputs)
    assert [line.split(":")[0] for line in changed] == ["package_lists.zookeeper"], changed
    assert layers.package_set(after.inputs) - layers.package_set(before.inputs) == {"jq"}


def test_a_package_layer_goes_on_the_cached_system_layer_that_lacks_only_packages(tree: Paths) -> None:
    old = _plan(tree)
    _add_package(tree, "haproxy", "jq")
    new = _plan(tree)
    parent = layers.package_parent(new["system"], "base-key", [_cached(old["system"])])
    assert parent is not None and parent.key == old["system"].key
    system, payload = layers.with_package_layer([new["system"], new["payload"]], parent)
    assert system.added == ("jq",) and system.template_name == "packages"
    assert [s.script for s in system.steps] == ["provision/packages.sh"]
    assert system.parent == old["system"].key and payload.parent == system.key
    # keyed by the layer it stands on: the same addition to the same layer, the same key
    again = layers.with_package_layer([_plan(tree)["system"], _plan(tree)["payload"]], parent)
    assert [p.key for p in again] == [system.key, payload.key]
    assert system.key != new["system"].key  # not the key of a system layer built whole
    # a later build finds the package layer itself: it holds every package, so it is reused
    built = layers.Candidate(system.key, system.inputs, "base-key", system.parent, 2.0)
    reuse = layers.package_parent(new["system"], "base-key", [_cached(old["system"]), built])
    assert reuse == built
    again = layers.with_package_layer([new["system"], new["payload"]], built)
    assert again[0].key == system.key and not again[0].added and again[1].key == payload.key


def test_no_package_layer_when_anything_but_packages_changed_or_a_package_went(tree: Paths) -> None:
    old = _plan(tree)
    bigger = _plan(tree, sources={**SOURCES, "deb http://deb.debian.org/debian bookworm main": "c" * 64})
    assert layers.package_parent(bigger["system"], "base-key", [_cached(old["system"])]) is None
    _add_package(tree, "zookeeper", "jq")
    with_jq = _plan(tree)
    path = tree.root / "components" / "zookeeper" / "bake.sh"
    path.write_text(path.read_text() + "\n# changed\n")
    script_changed = _plan(tree)
    assert layers.package_parent(script_changed["system"], "base-key", [_cached(old["system"])]) is None
    # a package removed: the old layer holds more than wanted
    assert layers.package_parent(old["system"], "base-key", [_cached(with_jq["system"])]) is None
    # another base
    assert layers.package_parent(with_jq["system"], "other-base", [_cached(old["system"])]) is None
