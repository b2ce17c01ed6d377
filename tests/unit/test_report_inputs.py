"""`invoke report` against hostile JSON: files that are not a nightly report, or not even text.

Every case runs the real command line (`python -m invoke report --from FILE --report-dir DIR`,
some with `--previous FILE`) and checks what a person at the console sees: exit code 2 (a
UserError), one error line naming the file with what is wrong (and at most its `fix:` line), no
traceback, and nothing written: the test's directory is the same afterwards and the report
directory was not even made.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from report_samples import sample_run

from kiln.paths import REPO_ROOT
from kiln.report.store import MAX_REPORT_BYTES, run_to_dict

TIMEOUT = 60  # a FIFO opened for reading without a writer would block forever


@dataclass(frozen=True)
class Env:
    tmp: Path
    given: Path  # the file passed to --from (or --previous)
    good: Path  # a real report
    out: Path  # --report-dir: must not come into being


def make_env(tmp: Path) -> Env:
    env = Env(tmp, tmp / "given.json", tmp / "good.json", tmp / "reports")
    env.good.write_text(json.dumps(run_to_dict(sample_run())))
    return env


@dataclass(frozen=True)
class Hostile:
    id: str
    prepare: Callable[[Env], list[str]]  # makes the files, returns the task's options
    names: Callable[[Env], str]  # the input the message must name
    says: str


def from_file(make: Callable[[Path], None]) -> Callable[[Env], list[str]]:
    def prepare(env: Env) -> list[str]:
        make(env.given)
        return ["--from", str(env.given), "--report-dir", str(env.out)]
    return prepare


def previous_file(make: Callable[[Path], None]) -> Callable[[Env], list[str]]:
    def prepare(env: Env) -> list[str]:
        make(env.given)
        return ["--from", str(env.good), "--previous", str(env.given), "--report-dir", str(env.out)]
    return prepare


def text(content: str | bytes) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return make


def report(change: Callable[[dict[str, Any]], None]) -> Callable[[Env], list[str]]:
    """--from a real report, changed in place by `change`."""
    def make(path: Path) -> None:
        data = run_to_dict(sample_run())
        change(data)
        path.write_text(json.dumps(data))
    return from_file(make)


def report_text(replace: tuple[str, str]) -> Callable[[Env], list[str]]:
    """--from a real report with one piece of its JSON text replaced (what json.dumps cannot write)."""
    def make(path: Path) -> None:
        source = json.dumps(run_to_dict(sample_run()))
        assert replace[0] in source
        path.write_text(source.replace(replace[0], replace[1], 1))
    return from_file(make)


def huge(path: Path) -> None:
    with path.open("wb") as f:
        f.truncate(MAX_REPORT_BYTES + 1)  # sparse: quick to make, still that many bytes to read


def given(env: Env) -> str:
    return str(env.given)


def report_dir_is_a_file(env: Env) -> list[str]:
    env.given.write_text("x")
    return ["--from", str(env.good), "--report-dir", str(env.given)]


SECONDS = '"seconds": 92.4'
NOT_UTF8 = b'{"schema": "kiln-nightly-report", "host": "caf\xe9"}'

CASES = [
    Hostile("not-utf8", from_file(text(NOT_UTF8)), given,
            f"not UTF-8 text (byte 0xe9 at offset {NOT_UTF8.index(0xE9)}); save it as UTF-8"),
    Hostile("utf16", from_file(lambda p: p.write_text(json.dumps(run_to_dict(sample_run())),
                                                      encoding="utf-16")),
            given, "not UTF-8 text (byte 0xff at offset 0)"),
    Hostile("directory", from_file(lambda p: p.mkdir()), given,
            "cannot read: a directory, not a regular file; pass a JSON file"),
    Hostile("fifo", from_file(lambda p: os.mkfifo(p)), given,
            "cannot read: a FIFO, not a regular file; pass a JSON file"),
    Hostile("device", lambda env: ["--from", "/dev/zero", "--report-dir", str(env.out)],
            lambda env: "/dev/zero", "cannot read: a character device, not a regular file"),
    Hostile("huge", from_file(huge), given,
            f"larger than {MAX_REPORT_BYTES} bytes, too large for a nightly report"),
    Hostile("missing", lambda env: ["--from", str(env.given), "--report-dir", str(env.out)], given,
            "file not found (check the path)"),
    Hostile("empty", from_file(text("")), given, "is not JSON: Expecting value"),
    Hostile("not-json", from_file(text('{"schema": "kiln-nightly-report",')), given, "is not JSON"),
    Hostile("nested-100000", from_file(text("[" * 100_000 + "]" * 100_000)), given,
            "nested more than 32 levels deep; a nightly report nests 5"),
    Hostile("nested-500", report_text(('"tools": {', '"deep": ' + "[" * 500 + "]" * 500 + ', "tools": {')),
            given, "nested more than 32 levels deep; a nightly report nests 5"),
    Hostile("nan", report_text((SECONDS, '"seconds": NaN')), given,
            "NaN is not a JSON number; give a finite number"),
    Hostile("infinity", report_text((SECONDS, '"seconds": Infinity')), given,
            "Infinity is not a JSON number"),
    Hostile("400-digits", report_text((SECONDS, '"seconds": ' + "9" * 400)), given,
            "has 400 characters; give one of at most 32"),
    Hostile("5000-digits", report_text((SECONDS, '"seconds": ' + "9" * 5000)), given,
            "has 5000 characters; give one of at most 32"),
    Hostile("float-overflow", report_text((SECONDS, '"seconds": 1e400')), given,
            "the number 1e400 is beyond a float's range; give a finite number"),
    Hostile("duplicate-key", report_text(('"verdict": ', '"verdict": "pass", "verdict": ')), given,
            'the key "verdict" appears twice in one object; keep one'),
    Hostile("lone-surrogate", report_text(('"kiln_version": "', '"kiln_version": "\\ud800')), given,
            "kiln_version is not text (it holds a lone surrogate such as \\ud800); give real text"),
    Hostile("top-array", from_file(text("[]")), given, "is not a kiln nightly report"),
    Hostile("other-version", report(lambda d: d.update(schema_version=2)), given,
            "has report schema version 2"),
    Hostile("entries-string", report(lambda d: d.update(entries="none")), given,
            "is not a valid kiln nightly report: entries: 'none' is not of type 'array'"),
    Hostile("entries-huge-object", report(lambda d: d.update(entries={"x": "y" * 100_000})), given,
            "is not a valid kiln nightly report: entries: {'x': 'yyyy"),
    Hostile("check-seconds-string", report(lambda d: d["entries"][1]["checks"][0].update(seconds="fast")),
            given, "entries/1/checks/0/seconds: 'fast' is not of type 'number'"),
    Hostile("stage-seconds-bool", report(lambda d: d["entries"][0]["stages_seconds"].update(render=True)),
            given, "entries/0/stages_seconds/render: True is not of type 'number'"),
    Hostile("missing-tools", report(lambda d: d.pop("tools")), given,
            "(top): 'tools' is a required property"),
    Hostile("entry-missing-checks", report(lambda d: d["entries"][0].pop("checks")), given,
            "entries/0: 'checks' is a required property"),
    Hostile("time-out-of-range", report(lambda d: d.update(finished="9999-12-31T23:59:59-05:00")), given,
            "'9999-12-31T23:59:59-05:00' is out of range in UTC"),
    Hostile("time-not-a-time", report(lambda d: d.update(started="yesterday")), given,
            "'yesterday' is not an ISO 8601 time"),
    # --previous is read as strictly, and before the report directory is made.
    Hostile("previous-fifo", previous_file(lambda p: os.mkfifo(p)), given,
            "cannot read: a FIFO, not a regular file; pass a JSON file"),
    Hostile("previous-not-utf8", previous_file(text(b"\xff")), given,
            "not UTF-8 text (byte 0xff at offset 0)"),
    Hostile("previous-nested", previous_file(text("{" + '"a": {' * 5000 + "}" * 5001)), given,
            "nested more than 32 levels deep; a nightly report nests 5"),
    # Where the reports would go.
    Hostile("report-dir-is-a-file", report_dir_is_a_file, given, "is not a directory"),
]


def run_report(args: list[str]) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(REPO_ROOT), "report", *args],
                          capture_output=True, text=True, env=environment, timeout=TIMEOUT, check=False)


def tree(top: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under `top`: type, and for regular files their size and mtime (FIFOs are not read)."""
    out: dict[str, tuple[Any, ...]] = {}
    for directory, dirs, names in os.walk(top, followlinks=False):
        for name in dirs + names:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            out[os.path.relpath(path, top)] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_report_is_one_user_error_and_nothing_is_written(tmp_path: Path, case: Hostile) -> None:
    env = make_env(tmp_path)
    args = case.prepare(env)
    before = tree(tmp_path)
    result = run_report(args)
    where = f"{case.id}: invoke report {' '.join(args)}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr, where
    assert result.returncode == 2, where
    first, *rest = result.stderr.splitlines()
    assert first.startswith("error: "), where
    assert case.names(env) in first and case.says in first, where
    assert all(line.startswith("  fix: ") for line in rest) and len(rest) <= 1, where
    assert result.stdout == "", where
    assert tree(tmp_path) == before, where
    assert not env.out.exists(), where


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 12
    assert len({c.id for c in CASES}) == len(CASES)


def test_the_same_command_writes_the_reports_from_a_good_file(tmp_path: Path) -> None:
    """The harness sees writes: a real report through the same command makes the three files."""
    env = make_env(tmp_path)
    before = tree(tmp_path)
    result = run_report(["--from", str(env.good), "--report-dir", str(env.out)])
    assert result.returncode == 0, result.stderr
    assert tree(tmp_path) != before
    assert sorted(p.name for p in env.out.iterdir()) == ["nightly.html", "nightly.json", "nightly.xml"]


def test_a_report_file_in_the_way_stops_before_anything_is_written(tmp_path: Path) -> None:
    """nightly.html as a directory: found before nightly.xml is written, not when renaming onto it."""
    env = make_env(tmp_path)
    (env.out / "nightly.html").mkdir(parents=True)
    before = tree(tmp_path)
    result = run_report(["--from", str(env.good), "--report-dir", str(env.out)])
    assert "Traceback" not in result.stderr and result.returncode == 2, result.stderr
    in_the_way = env.out / "nightly.html"
    assert result.stderr.splitlines()[0] == (
        f"error: {in_the_way} is in the way: not a regular file, where a report is written")
    assert tree(tmp_path) == before


def test_a_flood_of_report_problems_prints_a_bounded_summary(tmp_path: Path) -> None:
    """5000 malformed entries: the first 20 problems and how many more, not 5000 lines."""
    env = make_env(tmp_path)
    data = run_to_dict(sample_run())
    data["entries"] = [{"name": i} for i in range(5000)]
    env.given.write_text(json.dumps(data))
    before = tree(tmp_path)
    result = run_report(["--from", str(env.given), "--report-dir", str(env.out)])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == f"error: {env.given} is not a valid kiln nightly report: "
    assert len(lines) == 1 + 20 + 1 + 1 and len(result.stderr) < 10_000, result.stderr[:3000]
    assert lines[-2].startswith("  ... and ") and lines[-2].endswith(" more")
    assert lines[-1].startswith("  fix: ")
    assert tree(tmp_path) == before and not env.out.exists()
