"""Address picking and the security group policy, without AWS."""

from __future__ import annotations

import pytest

from kiln.aws.network import free_addresses, ingress_rules
from kiln.config import catalog
from kiln.config.load import load_config
from kiln.errors import UserError
from kiln.paths import REPO_ROOT, Paths

PORTS = catalog.load(REPO_ROOT).port_rules(load_config(Paths(REPO_ROOT)).data)


def test_free_addresses_skip_the_aws_reserved_and_the_used_ones() -> None:
    assert free_addresses("172.31.0.0/20", [], 3) == ["172.31.0.4", "172.31.0.5", "172.31.0.6"]
    assert free_addresses("172.31.0.0/20", ["172.31.0.4", "172.31.0.6"], 3) == [
        "172.31.0.5", "172.31.0.7", "172.31.0.8"]


def test_free_addresses_never_hand_out_the_broadcast_address() -> None:
    # /28: 16 addresses, .0-.3 and .15 reserved -> .4-.14 usable (11)
    picked = free_addresses("10.0.0.0/28", [], 11)
    assert picked[0] == "10.0.0.4" and picked[-1] == "10.0.0.14"
    with pytest.raises(UserError) as info:
        free_addresses("10.0.0.0/28", ["10.0.0.9"], 11)
    assert "subnet 10.0.0.0/28 has 10 free address(es), the cluster needs 11" in str(info.value)
    assert "aws.subnet_id" in str(info.value)


def _flat(rules: list[dict]) -> set[tuple[int, int, str]]:
    out = set()
    for r in rules:
        assert r["IpProtocol"] == "tcp"
        out |= {(r["FromPort"], r["ToPort"], p["GroupId"]) for p in r.get("UserIdGroupPairs", [])}
        out |= {(r["FromPort"], r["ToPort"], c["CidrIp"]) for c in r.get("IpRanges", [])}
    return out


def test_members_reach_the_cluster_ports_admins_only_ssh_and_uis() -> None:
    rules = _flat(ingress_rules("sg-1", "198.51.100.0/24", PORTS))
    members = {(a, b) for a, b, src in rules if src == "sg-1"}
    assert {(2181, 2181), (2888, 2888), (3888, 3888), (5050, 5050), (5051, 5051), (8080, 8080), (80, 80),
            (10000, 10100), (15101, 15101), (22, 22), (31000, 32000)} == members
    assert {(a, b) for a, b, src in rules if src == "198.51.100.0/24"} == {
        (22, 22), (80, 80), (5050, 5050), (8080, 8080)}


def test_the_vhost_port_follows_the_haproxy_setting() -> None:
    moved = catalog.load(REPO_ROOT).port_rules(
        load_config(Paths(REPO_ROOT), sets=["components.haproxy.vhost_port=8888"]).data)
    rules = _flat(ingress_rules("sg-1", "198.51.100.0/24", moved))
    assert (8888, 8888, "198.51.100.0/24") in rules and (80, 80, "sg-1") not in rules


def test_no_admin_cidr_means_no_rule_from_outside_the_group() -> None:
    rules = ingress_rules("sg-1", "", PORTS)
    assert all("IpRanges" not in r for r in rules)
    assert {src for _, _, src in _flat(rules)} == {"sg-1"}
    assert not any("0.0.0.0/0" in str(r) for r in rules)
