"""benchmarks/*.py end in one clean error, never a traceback, for bad options and missing tools, and
check all of it before they make anything (no namespace, VM, copy or directory). Only refusals run
here: a benchmark that got past its checks would boot VMs or build images, so every run gets a PATH
without the tools it needs as well, and a wrongly accepted option still stops at the tool check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kiln.paths import REPO_ROOT

BENCH = REPO_ROOT / "benchmarks"


def bench(script: str, *args: str, path: str = "/nonexistent") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path}
    return subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                          timeout=60, env=env, stdin=subprocess.DEVNULL, cwd=REPO_ROOT)


def assert_clean_error(done: subprocess.CompletedProcess[str], *phrases: str) -> None:
    text = done.stdout + done.stderr
    assert done.returncode == 2, text
    assert "Traceback" not in text, text
    last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    assert "error:" in done.stderr and len(done.stderr.strip().splitlines()) <= 3, done.stderr
    for phrase in phrases:
        assert phrase in done.stderr, (phrase, last)


@pytest.mark.parametrize(("args", "phrase"), [
    (("--shapes", "3x"), "argument --shapes: bad shape '3x'"),
    (("--shapes", ","), "argument --shapes: ',': an empty name"),
    (("--shapes", ""), "argument --shapes: '': an empty name"),
    (("--shapes", "1,3m\n"), "bad shape '3m\\n'"),
    (("--shapes", "1, 3m"), "bad shape ' 3m'"),
    (("--shapes", "1,1"), "'1,1': a shape named twice"),
    (("--accel", "fast"), "argument --accel: invalid choice: 'fast'"),
    (("--bogus",), "unrecognized arguments: --bogus"),
], ids=["bad-shape", "comma", "empty", "newline", "space", "twice", "accel", "unknown-option"])
def test_cluster_up_refuses_bad_options(args: tuple[str, ...], phrase: str) -> None:
    assert_clean_error(bench("cluster_up.py", *args), phrase)


def test_cluster_up_without_its_tools_says_which_before_anything(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    done = bench("cluster_up.py", "--shapes", "1", path=str(empty))
    if os.geteuid() != 0:
        assert_clean_error(done, "cannot run the benchmark here: needs root")
    else:
        assert_clean_error(done, "cannot run the benchmark here: ip is not installed")


def test_rebuild_refuses_bad_options_and_keep_dirs_it_did_not_make(tmp_path: Path) -> None:
    assert_clean_error(bench("rebuild.py", "--bogus"), "unrecognized arguments: --bogus")
    other = tmp_path / "someone-elses"
    other.mkdir()
    (other / "notes.txt").write_text("mine\n", encoding="utf-8")
    done = bench("rebuild.py", "--keep", str(other))
    assert_clean_error(done, f"--keep {other}: holds files this benchmark did not make")
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    inside = REPO_ROOT / "benchmarks" / "work"
    assert_clean_error(bench("rebuild.py", "--keep", str(inside)), "inside the checkout it copies")
    assert not inside.exists()
    a_file = tmp_path / "file"
    a_file.write_text("x", encoding="utf-8")
    assert_clean_error(bench("rebuild.py", "--keep", str(a_file)), "exists and is not a directory")


def test_rebuild_without_build_tools_says_which_and_copies_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    keep = tmp_path / "work"
    done = bench("rebuild.py", "--keep", str(keep), path=str(empty))
    if os.geteuid() != 0:
        assert_clean_error(done, "run the benchmark as root")
    else:
        assert_clean_error(done, "missing tools for a build: packer (apt-get install packer)",
                           "mkfs.ext4 (apt-get install e2fsprogs)")
    assert not keep.exists()
