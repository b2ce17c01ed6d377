"""config.json loading, overlays, --set, and every class of config error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kiln.config.load import deep_merge, load_config, parse_set
from kiln.errors import ConfigError
from kiln.paths import Paths


def problems_of(paths: Paths, **kwargs) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(paths, **kwargs)
    assert info.value.exit_code == 2
    return info.value.problems


def write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_shipped_config_is_valid_with_playa_mesos_defaults(tree: Paths) -> None:
    cfg = load_config(tree)
    assert cfg["trial"]["ip_address"] == "10.141.141.10"
    assert cfg["trial"]["cpus"] == 2
    assert cfg["trial"]["memory_mb"] == 2048
    assert cfg["aws"]["imdsv2_required"] is True
    assert cfg["aws"]["ebs"]["encrypted"] is True
    assert cfg["components"]["rancher"]["executor_url"] == ""
    assert set(cfg["targets"]) == {"ubuntu-24.04", "ubuntu-22.04", "amazonlinux-2023", "debian-12"}


def test_schema_reference_points_at_the_schema_file(tree: Paths) -> None:
    data = json.loads(tree.config.read_text())
    assert (tree.root / data["$schema"]).resolve() == tree.schema.resolve()


def test_overlays_apply_in_order_and_later_wins(tree: Paths, tmp_path: Path) -> None:
    a = write(tmp_path / "a.json", {"trial": {"cpus": 4, "memory_mb": 4096}})
    b = write(tmp_path / "b.json", {"trial": {"cpus": 8}})
    cfg = load_config(tree, overlays=[a, b])
    assert cfg["trial"]["cpus"] == 8
    assert cfg["trial"]["memory_mb"] == 4096
    assert cfg["trial"]["ip_address"] == "10.141.141.10"
    assert cfg.sources[-2:] == (str(a), str(b))


def test_set_wins_over_overlays_and_parses_json(tree: Paths, tmp_path: Path) -> None:
    a = write(tmp_path / "a.json", {"trial": {"cpus": 4}})
    cfg = load_config(tree, overlays=[a], sets=["trial.cpus=6", 'build.builders=["qemu"]',
                                              "trial.vm_name=demo"])
    assert cfg["trial"]["cpus"] == 6
    assert cfg["build"]["builders"] == ["qemu"]
    assert cfg["trial"]["vm_name"] == "demo"


def test_set_keys_may_contain_dotted_names(tree: Paths) -> None:
    cfg = load_config(tree, sets=["targets.ubuntu-24.04.ssh_username=admin"])
    assert cfg["targets"]["ubuntu-24.04"]["ssh_username"] == "admin"


def test_profile_offline_builds_mesos_and_leaves_marathon_out_with_the_reason(tree: Paths) -> None:
    cfg = load_config(tree, profile="offline")
    assert cfg["build"]["targets"] == ["debian-12"]
    assert set(cfg.excluded) == {"marathon"}
    assert "Java (JNI) bindings" in cfg.excluded["marathon"]
    assert "mesos" in cfg.components_for("debian-12")
    assert cfg["components"]["mesos"]["source"] == "build"


def test_all_errors_are_reported_at_once_with_paths_and_expected_vs_got(tree: Paths) -> None:
    problems = problems_of(tree, sets=[
        'trial.cpus="two"',            # wrong type
        "trial.colour=blue",           # unknown key
        "trial.ip_address=10.141.141.300",  # bad IP
        "cluster.default_shape=3x",    # bad shape string
        "build.accelerator=fast",      # not in enum
    ])
    joined = "\n".join(problems)
    assert '$.trial.cpus: expected integer, got string "two"' in joined
    assert "$.trial.colour: unknown key" in joined
    assert '$.trial.ip_address: expected an ipv4 address, got "10.141.141.300"' in joined
    assert "$.cluster.default_shape: expected '1' = one standalone node" in joined
    assert '$.build.accelerator: expected one of "auto", "kvm", "tcg", got "fast"' in joined
    assert len(problems) >= 5


def test_missing_required_key(tree: Paths) -> None:
    data = json.loads(tree.config.read_text())
    del data["trial"]["memory_mb"]
    del data["aws"]
    write(tree.config, data)
    problems = problems_of(tree)
    assert "$.trial: missing required key 'memory_mb'" in problems
    assert "$: missing required key 'aws'" in problems


def test_semantic_problems(tree: Paths) -> None:
    problems = problems_of(tree, sets=[
        'build.targets=["debian-12", "fedora-40"]',
        'aws.share_with_accounts=["123456789012"]',
        "components.rancher.executor_url=https://example.invalid/executor",
        'cluster.shapes=["1", "3m"]',
        "cluster.default_shape=3m2a",
    ])
    joined = "\n".join(problems)
    assert "$.build.targets[1]: expected a key of $.targets" in joined
    assert "cannot be shared; set $.aws.ebs.kms_key_id" in joined
    assert "$.components.rancher.executor_sha256: expected the sha256" in joined
    assert "$.cluster.default_shape: expected one of $.cluster.shapes" in joined


def test_shapes_that_do_not_fit_the_address_range(tree: Paths) -> None:
    problems = problems_of(tree, sets=["cluster.first_host=240", 'cluster.shapes=["9m9a"]',
                                       "cluster.default_shape=9m9a"])
    assert problems == ["$.cluster.shapes[0]: shape 9m9a needs host numbers up to 257; "
                        "expected at most 254 (lower cluster.first_host)"]


def test_unreadable_inputs_are_reported_together(tree: Paths, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json", encoding="utf-8")
    problems = problems_of(tree, overlays=[bad, tmp_path / "missing.json"],
                           sets=["no-equals-sign"], profile="nosuch")
    joined = "\n".join(problems)
    assert f"{bad}:1:3: invalid JSON" in joined
    assert "missing.json: file not found" in joined
    assert "--set 'no-equals-sign': expected KEY.PATH=VALUE" in joined
    assert "--profile nosuch: no such profile (known: offline)" in joined


def test_both_image_and_base_in_a_target_is_an_error(tree: Paths) -> None:
    problems = problems_of(tree, sets=[
        'targets.debian-12.image={"url": "https://x.invalid/a.img", '
        '"checksum_url": "https://x.invalid/SUMS", "sha256": ""}'])
    assert "$.targets.debian-12: expected either 'image' or 'base', got both" in problems


def test_parse_set_and_deep_merge_helpers() -> None:
    assert parse_set("a.b=1", {}) == (["a", "b"], 1)
    assert parse_set("a.b=x y", {}) == (["a", "b"], "x y")
    with pytest.raises(ValueError, match="empty key segment"):
        parse_set("a..b=1", {})
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    merged = deep_merge(base, {"a": {"c": [3]}, "e": 2})
    assert merged == {"a": {"b": 1, "c": [3]}, "d": 1, "e": 2}
    assert base["a"]["c"] == [1, 2]  # inputs are not modified
