"""The GitHub workflows parse, call only documented tasks and scripts, and tear AWS down always."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from kiln.paths import REPO_ROOT

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed: pip install -e '.[test]'")

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
# Tasks the nightly work adds; the README's task table documents the others.
NEW_TASKS = {"nightly", "ami.build", "ami.launch", "ami.destroy", "test", "validate", "report"}
# What a `run:` line may start with: a documented task or script, or the runner's KVM switch.
ALLOWED_PROGRAMS = ("scripts/setup", "scripts/test", ".venv/bin/invoke ", 'echo "configured=')


def _load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict), name
    # YAML 1.1 reads the key `on` as True.
    data["on"] = data.pop(True, data.get("on"))
    return data


def _steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def _run_lines(workflow: dict[str, Any]) -> list[str]:
    return [line.strip() for step in _steps(workflow) for line in step.get("run", "").splitlines()
            if line.strip()]


def _readme_tasks() -> set[str]:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    return set(re.findall(r"^\| `invoke ([\w.-]+)", text, re.M))


@pytest.mark.parametrize("name", ["ci.yml", "nightly.yml"])
def test_workflow_calls_only_documented_tasks_and_scripts(name: str) -> None:
    lines = _run_lines(_load(name))
    assert lines
    known = _readme_tasks() | NEW_TASKS
    assert {"validate", "build", "test"} <= known  # the README table was read
    for line in lines:
        assert line.startswith(ALLOWED_PROGRAMS), f"{name}: logic in YAML: {line}"
        assert not re.search(r"&&|\|\||;|\bif\b|\bfor\b", line), f"{name}: logic in YAML: {line}"
        for task in re.findall(r"\binvoke\s+([\w.-]+)", line):
            assert task in known, f"{name}: `invoke {task}` is neither in the README nor a nightly task"
        script = line.split()[0]
        if script.startswith("scripts/"):
            assert os.access(REPO_ROOT / script, os.X_OK), script


def test_ci_runs_on_pushes_and_pull_requests_lint_tests_and_validate() -> None:
    ci = _load("ci.yml")
    assert set(ci["on"]) == {"push", "pull_request"}
    lines = _run_lines(ci)
    assert lines[0] == "scripts/setup"
    tests = next(line for line in lines if line.startswith("scripts/test"))
    assert "tests/unit" in tests.split() and "tests/integration/test_report_browser.py" in tests.split()
    assert ".venv/bin/invoke validate" in lines
    script = (REPO_ROOT / "scripts" / "test").read_text(encoding="utf-8")
    assert "ruff check" in script and "shellcheck" in script  # the lint the step's name promises


def test_nightly_is_scheduled_enables_kvm_and_uploads_the_report() -> None:
    nightly = _load("nightly.yml")
    assert "workflow_dispatch" in nightly["on"] and nightly["on"]["schedule"][0]["cron"]
    images = nightly["jobs"]["images"]
    assert images["container"]["image"] == "debian:12"
    assert "--device /dev/kvm" in images["container"]["options"]
    assert "--privileged" in images["container"]["options"]  # network namespaces for libvirtd
    steps = images["steps"]
    runs = [s.get("run", "") for s in steps]
    night = next(i for i, r in enumerate(runs) if "invoke nightly --report-dir build/reports" in r)
    assert runs.index("scripts/setup") < night
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()"
    assert {"build/reports/", "build/artifacts/*/kiln-metadata.json"} <= set(upload["with"]["path"].split())
    for path in ("build/reports/nightly.json", "/var/cache/kiln/packages"):  # last report, compiled packages
        restore = next(s for s in steps if s.get("uses", "").startswith("actions/cache/restore@")
                       and path in s["with"]["path"].split())
        save = next(s for s in steps if s.get("uses", "").startswith("actions/cache/save@")
                    and path in s["with"]["path"].split())
        assert restore["with"]["path"] == save["with"]["path"]
        assert save["if"] == "always()" and steps.index(restore) < night < steps.index(save)
    assert steps[night]["env"]["KILN_CACHE_DIR"] == "/var/cache/kiln"


def test_ami_job_runs_only_with_credentials_and_always_tears_down() -> None:
    jobs = _load("nightly.yml")["jobs"]
    gate = jobs["aws-credentials"]
    assert "secrets.AWS_ACCESS_KEY_ID" in str(gate)
    ami = jobs["ami"]
    assert ami["needs"] == "aws-credentials"
    assert ami["if"] == "needs.aws-credentials.outputs.configured == 'true'"
    assert ami["env"]["AWS_ACCESS_KEY_ID"] == "${{ secrets.AWS_ACCESS_KEY_ID }}"
    runs = [(s.get("run", ""), s.get("if", "")) for s in ami["steps"]]
    order = [next(i for i, (r, _) in enumerate(runs) if f"invoke {task}" in r)
             for task in ("ami.build", "ami.launch --shape 3m", "test --aws", "ami.destroy")]
    assert order == sorted(order)
    destroy_run, destroy_if = runs[order[-1]]
    assert "always()" in destroy_if and '"$CLUSTER"' in destroy_run
    assert ami["env"]["CLUSTER"] == "nightly-${{ github.run_id }}"


def test_workflows_are_all_checked() -> None:
    assert sorted(p.name for p in Path(WORKFLOWS).glob("*.y*ml")) == ["ci.yml", "nightly.yml"]
