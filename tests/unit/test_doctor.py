"""invoke doctor: real tool checks, and a missing tool reported with its fix."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from kiln import doctor
from kiln.paths import Paths


def test_doctor_reports_the_tools_found_here(tree: Paths) -> None:
    started = time.monotonic()
    findings = {f.name: f for f in doctor.run_checks(tree)}
    print(f"doctor took {time.monotonic() - started:.2f}s")
    assert {"packer", "qemu-system-x86_64", "accelerator", "vagrant", "aws credentials"} <= set(findings)
    if shutil.which("packer"):
        assert findings["packer"].status == "found"
        assert "builders built in" in findings["packer"].detail or "packer init" in findings["packer"].detail
    table = doctor.table(list(findings.values()))
    assert table.splitlines()[0].split() == ["tool", "status", "detail", "how", "to", "fix"]


def test_missing_tools_are_reported_with_how_to_install(tree: Paths, monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    findings = {f.name: f for f in doctor.run_checks(tree, goal="build")}
    assert findings["packer"].status == "missing"
    assert findings["packer"].fix == "apt-get install packer"
    blocking = {f.name for f in doctor.needed(list(findings.values()), "build")}
    assert {"packer", "qemu-img", "mmdebstrap"} <= blocking
    aws = {f.name: f for f in doctor.run_checks(tree, goal="aws")}["aws credentials"]
    assert aws.status == "missing" and "aws configure" in aws.fix
    assert os.environ.get("AWS_EC2_METADATA_DISABLED") == "true"  # never asks the metadata service
