"""Cluster checks that need no AWS: names, shapes, targets, tags, URLs, the --region override."""

from __future__ import annotations

import pytest

from kiln.aws.bake import ami_targets, with_region
from kiln.aws.cluster import Node, Teardown, check_name, check_shape, check_target, cluster_tags, ui_urls
from kiln.config import catalog
from kiln.config.load import load_config
from kiln.errors import UserError
from kiln.paths import REPO_ROOT, Paths


@pytest.mark.parametrize("name", ["kiln-3m2a", "ab", "a" * 40])
def test_good_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "a", "A1", "1abc", "bad_name", "ends-", "a" * 41, "x y"])
def test_bad_names_are_user_errors(name: str) -> None:
    with pytest.raises(UserError, match="expected 2-40 lower-case"):
        check_name(name)


def test_bad_shape_and_amiless_target(tree: Paths) -> None:
    with pytest.raises(UserError, match="bad shape '3x'"):
        check_shape("3x")
    config = load_config(tree)
    check_target(config, "amazonlinux-2023")
    with pytest.raises(UserError) as info:
        check_target(config, "debian-12")
    assert "has no AMIs (targets with an `ami` block: amazonlinux-2023, ubuntu-22.04, ubuntu-24.04)" in str(
        info.value)


def test_kiln_tags_win_over_configured_ones(tree: Paths) -> None:
    config = load_config(tree, sets=['aws.tags={"project": "x", "kiln:cluster": "spoofed"}'])
    assert cluster_tags(config, "c1", Name="c1-m1") == {"project": "x", "kiln:cluster": "c1", "Name": "c1-m1"}


def test_ui_urls_list_each_role_s_uis_for_nodes_with_an_address() -> None:
    nodes = [Node("m1", "master", "i-1", "running", "172.31.0.4", "203.0.113.9", "ubuntu-24.04"),
             Node("m2", "master", "i-2", "running", "172.31.0.5", "", "ubuntu-24.04"),
             Node("a1", "agent", "i-3", "running", "172.31.0.6", "203.0.113.10", "ubuntu-24.04")]
    node_catalog = catalog.load(REPO_ROOT).node_catalog(load_config(Paths(REPO_ROOT)).data)
    assert ui_urls(nodes, node_catalog) == [
        "m1: HAProxy http://203.0.113.9/  Marathon http://203.0.113.9:8080  Mesos http://203.0.113.9:5050  "
        "ZooKeeper 203.0.113.9:2181",
        "m2: HAProxy http://172.31.0.5/  Marathon http://172.31.0.5:8080  Mesos http://172.31.0.5:5050  "
        "ZooKeeper 172.31.0.5:2181",
        "a1: Mesos agent http://203.0.113.10:5051"]


def test_teardown_summary() -> None:
    assert Teardown(["i-1", "i-2"], ["sg-1"], ["kiln-c"]).summary() == (
        "2 instance(s) i-1 i-2, security group sg-1, key pair kiln-c")
    assert Teardown().summary() == "0 instance(s)"


def test_region_override_is_not_also_a_copy_target(tree: Paths) -> None:
    config = load_config(tree, sets=['aws.extra_regions=["eu-west-1", "us-west-2"]'])
    moved = with_region(config, "eu-west-1")
    assert moved["aws"]["region"] == "eu-west-1" and moved["aws"]["extra_regions"] == ["us-west-2"]
    assert with_region(config, None) is config
    assert ami_targets(config) == ["ubuntu-24.04", "ubuntu-22.04", "amazonlinux-2023"]
