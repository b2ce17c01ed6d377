"""Run the testinfra suites (tests/infra) against hosts reachable over SSH."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from kiln.paths import Paths
from kiln.runner import Result, run


def run_suites(paths: Paths, *, ssh_config: Path, hosts: Sequence[str], phase: str, report: Path,
               role: str = "auto", log: Path | None = None, quiet: bool = False,
               extra: Sequence[str] = ()) -> Result:
    """pytest tests/infra over SSH; JUnit XML in `report`. Never raises on failing checks."""
    report.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pytest", str(paths.root / "tests" / "infra"),
            "-p", "no:cacheprovider", "-q", "-rfEs",
            f"--hosts={','.join(f'ssh://{h}' for h in hosts)}", f"--ssh-config={ssh_config}",
            f"--kiln-phase={phase}", f"--kiln-role={role}", f"--junitxml={report}", *extra]
    if len(hosts) > 1:
        argv += ["-n", str(min(len(hosts), 4))]
    return run(argv, step=f"testinfra ({phase})", cwd=paths.root, log=log, quiet=quiet, check=False,
               timeout=1800)
