"""Running kiln's tasks as a user does (`python -m invoke` in a subprocess, on a copy of the
tree) and checking a refusal: exit code 2, one short message, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kiln.paths import REPO_ROOT, Paths

INVOKE = [sys.executable, "-m", "invoke", "--search-root", str(REPO_ROOT)]


def invoke(tree: Paths, *args: str, env: dict[str, str] | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`invoke ARGS` on `tree`, without the caller's AWS settings or proxies."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and "proxy" not in k.lower()}
    full = {**base, "KILN_ROOT": str(tree.root), **(env or {})}
    return subprocess.run([*INVOKE, *args], capture_output=True, text=True, env=full, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root with its size and mtime: a file written or touched changes it."""
    out = {}
    for path in root.rglob("*"):
        st = path.lstat()
        out[str(path.relative_to(root))] = (st.st_size if not path.is_dir() else 0, st.st_mtime_ns)
    return out


def assert_refused(result: subprocess.CompletedProcess[str], phrases: tuple[str, ...],
                   max_lines: int = 3) -> None:
    """Exit code 2, no traceback, an `error:` line first, at most `max_lines` lines of at most
    400 characters, and every phrase in them."""
    text = result.stdout + result.stderr
    assert result.returncode == 2, text
    assert "Traceback" not in text, text
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert lines and lines[0].startswith("error:"), result.stderr
    assert len(lines) <= max_lines, result.stderr
    assert all(len(ln) <= 400 for ln in lines), result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, f"{phrase!r} not in:\n{result.stderr}"
