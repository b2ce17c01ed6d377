"""Cluster shapes and the node specs made from them (checked by both validators, then applied)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kiln.config.shapes import Shape, node_specs, parse_shape, specs_for_addresses, validate_spec
from kiln.paths import REPO_ROOT
from kiln_node import apply as node_apply
from kiln_node import services
from kiln_node import spec as specmod


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    return json.loads((REPO_ROOT / "config.json").read_text())["cluster"]


@pytest.mark.parametrize(("text", "masters", "agents", "standalone", "name", "nodes"), [
    ("1", 1, 0, True, "1", 1),
    ("1m", 1, 0, False, "1m", 1),
    ("3m", 3, 0, False, "3m", 3),
    ("3m2a", 3, 2, False, "3m2a", 5),
    ("3m0a", 3, 0, False, "3m", 3),
    ("12m34a", 12, 34, False, "12m34a", 46),
])
def test_parse_shape(text: str, masters: int, agents: int, standalone: bool, name: str, nodes: int) -> None:
    shape = parse_shape(text)
    assert (shape.masters, shape.agents, shape.standalone) == (masters, agents, standalone)
    assert (shape.name, shape.nodes) == (name, nodes)
    assert parse_shape(shape.name) == shape or text == "3m0a"


@pytest.mark.parametrize("text", ["", "0m", "3x", "2m-1a", "m", "3", "3m2", "a3m", " 3m", "3M2A", "01m", "2a",
                                  "0", "1m1a1", "100m",
                                  # `$` matches before a final newline in Python: the pattern is full-match
                                  "3m\n", "3m2a\n", "1\n", "3m\r", "3m\x00", "3m\u2028"])
def test_parse_shape_rejects(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_shape(text)
    message = str(info.value)
    assert f"bad shape {text!r}" in message
    assert "'1' (one standalone node), 'Nm' (N masters) or 'NmMa' (N masters, M agents)" in message


def test_shape_is_frozen() -> None:
    shape = parse_shape("3m2a")
    with pytest.raises(AttributeError):
        shape.masters = 5  # type: ignore[misc]
    assert shape == Shape(masters=3, agents=2)


def test_node_specs_for_3m2a(cluster: dict[str, Any]) -> None:
    specs = node_specs(parse_shape("3m2a"), cluster, {"marathon": True})
    masters = ["10.141.141.10", "10.141.141.11", "10.141.141.12"]
    assert [(s["role"], s["node_id"], s["name"], s["ip"]) for s in specs] == [
        ("master", 1, "m1", "10.141.141.10"),
        ("master", 2, "m2", "10.141.141.11"),
        ("master", 3, "m3", "10.141.141.12"),
        ("agent", 4, "a1", "10.141.141.13"),
        ("agent", 5, "a2", "10.141.141.14"),
    ]
    for spec in specs:
        assert spec["masters"] == masters
        assert spec["cluster"] == "kiln"
        assert spec["options"] == {"marathon": True}
        assert specmod.quorum(spec) == 2
        assert validate_spec(spec) == []
        assert specmod.check(spec) == ([], [])
    # Specs share nothing: editing one node's spec leaves the others alone.
    specs[0]["masters"].append("10.0.0.1")
    specs[0]["options"]["marathon"] = False
    assert specs[1]["masters"] == masters and specs[1]["options"] == {"marathon": True}


def test_standalone_spec(cluster: dict[str, Any]) -> None:
    (spec,) = node_specs(parse_shape("1"), cluster)
    assert spec == {"cluster": "kiln", "role": "standalone", "node_id": 1, "name": "mesos",
                    "ip": "10.141.141.10", "masters": ["10.141.141.10"], "options": {}}
    assert validate_spec(spec) == []


def test_masters_only_and_other_network(cluster: dict[str, Any]) -> None:
    specs = node_specs(parse_shape("5m"), {**cluster, "network_prefix": "192.168.56", "first_host": 100})
    assert [s["ip"] for s in specs] == [f"192.168.56.{100 + i}" for i in range(5)]
    assert {specmod.quorum(s) for s in specs} == {3}
    assert all(validate_spec(s) == [] for s in specs)


def test_shape_beyond_the_address_range(cluster: dict[str, Any]) -> None:
    assert node_specs(parse_shape("3m2a"), {**cluster, "first_host": 250})[-1]["ip"] == "10.141.141.254"
    with pytest.raises(ValueError, match=r"shape 3m2a needs host numbers 251\.\.255 of 10\.141\.141\.x; "
                                         r"expected at most 254"):
        node_specs(parse_shape("3m2a"), {**cluster, "first_host": 251})


def test_options_reach_every_spec_and_stay_valid(cluster: dict[str, Any]) -> None:
    options = {"haproxy": False, "agent": {"attributes": {"rack": "r1"}, "resources": {"cpus": 2}},
               "rancher": {"cattle_url": "http://10.141.141.2:8080/v1", "access_key": "a", "secret_key": "b",
                           "ip_cidr": ""}}
    specs = node_specs(parse_shape("1m1a"), cluster, options)
    assert all(s["options"] == options for s in specs)
    assert all(validate_spec(s) == [] for s in specs)


@pytest.mark.parametrize(("change", "expected"), [
    ({"role": "boss"}, '$.role: expected one of "standalone", "master", "agent", got "boss"'),
    ({"ip": "10.141.141.300"}, '$.ip: expected an IPv4 address such as 10.141.141.10, got "10.141.141.300"'),
    ({"node_id": 2},
     "$.node_id: this master is $.masters[0] (10.141.141.10), so its node_id must be 1, got 2"),
    ({"ip": "10.141.141.99"}, "$.ip: a master's ip must be one of $.masters"),
    ({"extra": 1}, "$.extra: unknown key (allowed: cluster, ip, masters, name, node_id, options, role)"),
    ({"options": {"rancher": {"access_key": "a"}}}, "$.options.rancher.cattle_url: required once any"),
])
def test_validate_spec_reports_problems(cluster: dict[str, Any], change: dict[str, Any],
                                        expected: str) -> None:
    spec = {**node_specs(parse_shape("3m"), cluster)[0], **change}
    problems = validate_spec(spec)
    assert any(p.startswith(expected) for p in problems), problems


def test_even_masters_is_no_problem_for_validate_spec(cluster: dict[str, Any]) -> None:
    spec = node_specs(parse_shape("2m"), cluster)[0]
    assert validate_spec(spec) == []
    assert specmod.check(spec)[1][0].startswith("$.masters: 2 masters is an even number")


def test_specs_of_a_shape_apply_to_one_consistent_cluster(tmp_path: Path, cluster: dict[str, Any],
                                                          node_root: Callable[[Path], Path]) -> None:
    class Recorder(services.ServiceManager):
        def __init__(self) -> None:
            super().__init__(io.StringIO())
            self.calls: list[tuple[str, str]] = []

        def run(self, action: str, unit: str) -> None:
            self.calls.append((action, unit))

    units = {}
    for spec in node_specs(parse_shape("3m2a"), cluster):
        recorder = Recorder()
        root = node_root(tmp_path / spec["name"])
        rc = node_apply.apply(spec, root=str(root), manager=recorder, out=io.StringIO())
        assert rc == 0
        units[spec["name"]] = [u for a, u in recorder.calls if a == "start"]

    def read(node: str, path: str) -> str:
        return (tmp_path / node / path).read_text()

    zoo = {read(m, "etc/zookeeper/conf/zoo.cfg") for m in ("m1", "m2", "m3")}
    assert len(zoo) == 1 and "server.3=10.141.141.12:2888:3888\n" in zoo.pop()
    assert [read(m, "var/lib/zookeeper/myid") for m in ("m1", "m2", "m3")] == ["1\n", "2\n", "3\n"]
    assert {read(n, "etc/mesos/zk") for n in units} == {
        "zk://10.141.141.10:2181,10.141.141.11:2181,10.141.141.12:2181/mesos\n"}
    assert {read(m, "etc/mesos-master/quorum") for m in ("m1", "m2", "m3")} == {"2\n"}
    assert units == {
        **{m: ["zookeeper", "mesos-master", "marathon", "haproxy", "kiln-haproxy-bridge"]
           for m in ("m1", "m2", "m3")},
        **{a: ["docker", "mesos-agent"] for a in ("a1", "a2")},
    }


def test_specs_for_addresses_match_node_specs_and_take_any_addresses(cluster: dict[str, Any]) -> None:
    shape = parse_shape("3m2a")
    numbered = node_specs(shape, cluster, {"marathon": True})
    assert specs_for_addresses(shape, cluster["name"], [s["ip"] for s in numbered], {"marathon": True}) \
        == numbered
    picked = ["172.31.7.9", "172.31.0.4", "172.31.3.30", "172.31.0.5", "172.31.9.1"]
    specs = specs_for_addresses(shape, "aws-demo", picked)
    assert [(s["name"], s["ip"], s["masters"]) for s in specs] == [
        ("m1", "172.31.7.9", picked[:3]), ("m2", "172.31.0.4", picked[:3]), ("m3", "172.31.3.30", picked[:3]),
        ("a1", "172.31.0.5", picked[:3]), ("a2", "172.31.9.1", picked[:3])]
    assert all(validate_spec(s) == [] for s in specs)
    (alone,) = specs_for_addresses(parse_shape("1"), "aws-demo", ["10.0.0.4"])
    assert (alone["role"], alone["masters"]) == ("standalone", ["10.0.0.4"])
    with pytest.raises(ValueError, match="has 5 node"):
        specs_for_addresses(shape, "aws-demo", picked[:4])
