"""The bake-time scripts (components/*/bake.sh, provision/): real shellcheck (following lib.sh) and
`bash -n`, plus the shape every script must have (docs/CONTRIBUTING.md, "Provisioning contract")."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kiln.image.validate import bake_scripts
from kiln.paths import REPO_ROOT, Paths

PROVISION = REPO_ROOT / "provision"
SCRIPTS = bake_scripts(Paths(REPO_ROOT))
STEP_SOURCE = '. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"'
COMPONENT_SOURCE = '. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../../provision" && pwd)/lib.sh"'


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(REPO_ROOT)) for p in paths]


def test_every_component_and_step_has_a_script() -> None:
    present = {str(p.relative_to(REPO_ROOT)) for p in SCRIPTS}
    assert {"provision/lib.sh", "provision/cleanup.sh", "provision/manifest.sh"} <= present
    components = {p.parent.name for p in (REPO_ROOT / "components").glob("*/component.json")}
    assert {f"components/{c}/bake.sh" for c in components} <= present


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck is not installed (apt-get install shellcheck)")
@pytest.mark.parametrize("where", ["repo-root", "script-dir"])
@pytest.mark.parametrize("script", SCRIPTS, ids=_ids(SCRIPTS))
def test_shellcheck_clean(script: Path, where: str) -> None:
    # kiln validate runs shellcheck from each script's folder, people run it from the repo root:
    # lib.sh must be found (SC1091) from both.
    cwd = REPO_ROOT if where == "repo-root" else script.parent
    result = subprocess.run(["shellcheck", "-x", "-f", "gcc", str(script.relative_to(cwd))], cwd=cwd,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=_ids(SCRIPTS))
def test_bash_syntax(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


SOURCING = [p for p in SCRIPTS if p.stem != "lib" and p.parent.name != "package"]


@pytest.mark.parametrize("script", SOURCING, ids=_ids(SOURCING))
def test_component_script_shape(script: Path) -> None:
    lines = script.read_text().splitlines()
    source = STEP_SOURCE if script.parent == PROVISION else COMPONENT_SOURCE
    assert lines[0] == "#!/usr/bin/env bash"
    assert "set -Eeuo pipefail" in lines[:12]
    assert source in lines, "scripts source provision/lib.sh relative to themselves"
    assert lines.index("set -Eeuo pipefail") < lines.index(source)


def test_lib_is_sourced_not_executed() -> None:
    lib = PROVISION / "lib.sh"
    assert lib.read_text().startswith("# shellcheck shell=bash\n")
    assert not lib.stat().st_mode & 0o111
