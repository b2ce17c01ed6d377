"""The invoke command line as a user types it: help, exit codes, nothing half-written."""

from __future__ import annotations

from pathlib import Path

from cli_support import invoke

from kiln.paths import Paths


def test_list_shows_every_task_with_one_line_help(tree: Paths) -> None:
    out = invoke(tree, "--list").stdout
    for name in ("render", "validate", "build", "base", "doctor", "pin", "clean"):
        line = next((ln for ln in out.splitlines() if ln.strip().startswith(name + " ")), "")
        assert len(line.split(None, 1)) == 2, f"{name} has no help line in:\n{out}"


def test_task_help_explains_every_option(tree: Paths) -> None:
    out = invoke(tree, "build", "--help").stdout
    for option in ("--target", "--builder", "--config", "--set", "--profile", "--parallel",
                   "--accel", "--quiet", "--force-base"):
        assert option in out
    assert "Bake images with Packer" in out


def test_bad_config_exits_2_with_every_problem_and_writes_nothing(tree: Paths) -> None:
    result = invoke(tree, "render", "--set", 'trial.cpus="x"', "--set", "trial.ip_address=1.2.3")
    assert result.returncode == 2
    assert "$.trial.cpus: expected integer" in result.stderr
    assert "$.trial.ip_address: expected an ipv4 address" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tree.root / "build").exists()


def test_unknown_target_exits_2(tree: Paths) -> None:
    result = invoke(tree, "render", "--target", "fedora-40")
    assert result.returncode == 2
    assert "unknown target 'fedora-40'" in result.stderr
    assert not (tree.root / "build" / "packer").exists()


def test_render_writes_every_pair_and_the_cluster_vagrantfiles(tree: Paths) -> None:
    result = invoke(tree, "render")
    assert result.returncode == 0, result.stderr
    rendered = sorted(p.name for p in (tree.root / "build" / "packer").iterdir())
    assert len(rendered) == 11
    assert (tree.root / "build" / "vagrant" / "kiln-3m2a" / "Vagrantfile").exists()


def test_doctor_rejects_an_unknown_goal(tree: Path) -> None:
    result = invoke(tree, "doctor", "--goal", "mars")  # type: ignore[arg-type]
    assert result.returncode == 2
    assert "expected one of build, vagrant, aws, all" in result.stderr
