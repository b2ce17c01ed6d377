"""A Python 3.9 to run kiln-node with, as the oldest images do (Amazon Linux 2023's python3)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def python39() -> tuple[str, dict[str, str]]:
    """The interpreter and the environment it needs; skips the test, saying why, when there is
    none (KILN_PYTHON39 names one; otherwise python3.9 on PATH, through pyenv where that is it)."""
    exe = os.environ.get("KILN_PYTHON39") or shutil.which("python3.9")
    if not exe:
        pytest.skip("no python3.9 on PATH (set KILN_PYTHON39 to one) to run kiln_node as old images do")
    env: dict[str, str] = {}
    if shutil.which("pyenv") and not os.environ.get("KILN_PYTHON39"):
        # A pyenv shim runs 3.9 only when that version is selected.
        bare = subprocess.run(["pyenv", "versions", "--bare"], capture_output=True, text=True, check=False)
        versions = [v for v in bare.stdout.split() if v.startswith("3.9")]
        if versions:
            env["PYENV_VERSION"] = versions[-1]
    probe = subprocess.run([exe, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                           text=True, env={**os.environ, **env}, check=False)
    if probe.stdout.strip() != "(3, 9)":
        pytest.skip(f"{exe} does not run Python 3.9 here: {probe.stdout.strip()} {probe.stderr.strip()}")
    return exe, env
