"""The bake-time scripts in provision/: real shellcheck (following lib.sh) and `bash -n`, plus the
shape every component script must have (notes/CONVENTIONS.md, "Provisioning contract")."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kiln.paths import REPO_ROOT

PROVISION = REPO_ROOT / "provision"
COMPONENTS = ("base", "java", "zookeeper", "mesos", "marathon", "docker", "haproxy", "qemu-kvm",
              "rancher", "node", "cleanup", "manifest")
SCRIPTS = sorted(PROVISION.glob("*.sh"))
SOURCE_LINE = '. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"'


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def test_every_component_has_a_script() -> None:
    present = {p.stem for p in SCRIPTS}
    assert "lib" in present
    assert sorted(set(COMPONENTS) - present) == []


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck is not installed (apt-get install shellcheck)")
@pytest.mark.parametrize("cwd", [REPO_ROOT, PROVISION], ids=["from-repo-root", "from-provision"])
@pytest.mark.parametrize("script", SCRIPTS, ids=_ids(SCRIPTS))
def test_shellcheck_clean(script: Path, cwd: Path) -> None:
    # kiln validate runs shellcheck from provision/, people run it from the repo root: lib.sh
    # must be found (SC1091) from both.
    result = subprocess.run(["shellcheck", "-x", "-f", "gcc", str(script.relative_to(cwd))], cwd=cwd,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=_ids(SCRIPTS))
def test_bash_syntax(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", [p for p in SCRIPTS if p.stem != "lib"],
                         ids=_ids([p for p in SCRIPTS if p.stem != "lib"]))
def test_component_script_shape(script: Path) -> None:
    lines = script.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert "set -Eeuo pipefail" in lines[:12]
    assert SOURCE_LINE in lines, "components source lib.sh relative to themselves"
    assert lines.index("set -Eeuo pipefail") < lines.index(SOURCE_LINE)


def test_lib_is_sourced_not_executed() -> None:
    lib = PROVISION / "lib.sh"
    assert lib.read_text().startswith("# shellcheck shell=bash\n")
    assert not lib.stat().st_mode & 0o111
