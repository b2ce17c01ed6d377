"""kiln_infra.wait_until, the suites' poll, run by real testinfra on its local backend: it returns as
soon as the command succeeds, and its bound is time, so a slow command is tried fewer times."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import testinfra

from kiln.paths import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests" / "infra"))
import kiln_infra


def test_it_returns_the_first_success(tmp_path: Path) -> None:
    flag = tmp_path / "ready"
    later = subprocess.Popen(["sh", "-c", f"sleep 2; echo up > {flag}"])
    try:
        out = kiln_infra.wait_until(testinfra.get_host("local://"), f"cat {flag}", seconds=30)
    finally:
        later.wait(timeout=30)
    assert out.rc == 0 and out.stdout.strip() == "up"


def test_a_slow_failing_command_is_bounded_by_time_not_by_attempts(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    command = f"echo x >> {runs}; sleep 2; false"
    out = kiln_infra.wait_until(testinfra.get_host("local://"), command, seconds=3)
    assert out.rc != 0
    # Within 3 s there is room for one or two 2-second tries, then the final one. Counting
    # attempts instead (3 tries of 2 s + a 1 s pause each) would have run it 4 times.
    assert 2 <= len(runs.read_text().splitlines()) <= 3
