"""Run the testinfra suites against hosts reachable over SSH: the image-wide suites in
tests/infra/ and each catalog component's components/<name>/test_*.py, with the suites' plugin
(tests/infra/kiln_infra.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from kiln.config import catalog
from kiln.paths import Paths
from kiln.runner import Result, run

PLUGIN = "kiln_infra"


def suites(paths: Paths, components: Sequence[str] | None = None) -> list[Path]:
    """tests/infra/ and the suites of `components` (every catalog component when None)."""
    cat = catalog.load_cached(paths.root)
    names = cat.names() if components is None else [c for c in components if c in cat]
    return [paths.root / "tests" / "infra", *(s for n in names for s in cat[n].suites)]


def pytest_command(paths: Paths, *, ssh_config: Path, hosts: Sequence[str], phase: str, report: Path,
                   role: str = "auto", extra: Sequence[str] = (), expect: Sequence[str] = ()
                   ) -> tuple[list[str], dict[str, str]]:
    """(argv, environment additions) of a suite run; see run_suites."""
    argv = [sys.executable, "-m", "pytest", *map(str, suites(paths)), "-p", PLUGIN,
            "-p", "no:cacheprovider", "-q", "-rfEs",
            f"--hosts={','.join(f'ssh://{h}' for h in hosts)}", f"--ssh-config={ssh_config}",
            f"--kiln-phase={phase}", f"--kiln-role={role}", f"--junitxml={report}", *extra]
    if expect:
        argv.append(f"--kiln-expect={','.join(expect)}")
    if len(hosts) > 1:
        argv += ["-n", str(min(len(hosts), 4))]
    plugin_dir = str(paths.root / "tests" / "infra")
    env = {"PYTHONPATH": os.pathsep.join(p for p in (plugin_dir, os.environ.get("PYTHONPATH", "")) if p)}
    return argv, env


def run_suites(paths: Paths, *, ssh_config: Path, hosts: Sequence[str], phase: str, report: Path,
               role: str = "auto", log: Path | None = None, quiet: bool = False,
               extra: Sequence[str] = (), expect: Sequence[str] = ()) -> Result:
    """pytest over SSH; JUnit XML in `report`. Never raises on failing checks. `expect` names the
    components the image must hold: a missing one fails instead of being skipped."""
    report.parent.mkdir(parents=True, exist_ok=True)
    argv, env = pytest_command(paths, ssh_config=ssh_config, hosts=hosts, phase=phase, report=report,
                               role=role, extra=extra, expect=expect)
    return run(argv, step=f"testinfra ({phase})", cwd=paths.root, log=log, quiet=quiet, check=False,
               timeout=1800, env=env)
