"""Report samples hold only checks the suites have: every check id in the sample nightly runs
(tests/report_samples.py), and every id in the report tests and docs that names a real suite file,
names a test function of that suite. A sample that shows a check no suite runs would show a report
that cannot happen (and hide the real ids a reader looks for)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from report_samples import MESOS_CHECK, SUITE, all_passing_run, failing_entry, passing_entry, sample_run

from kiln.paths import REPO_ROOT

CHECK_ID = re.compile(r"(?:(?:bake|boot)/)?(test_[a-z0-9_]+\.py)::([A-Za-z0-9_:]+)(?:\[[^\]]*\])?")


def suite_tests() -> dict[str, set[str]]:
    """{suite file name: {"test_x", "TestY::test_z"}} of the suites kiln.image.verify runs."""
    files = [*REPO_ROOT.glob("components/*/test_*.py"), *(REPO_ROOT / "tests" / "infra").glob("test_*.py")]
    found: dict[str, set[str]] = {}
    for path in files:
        names = found.setdefault(path.name, set())
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
                names.add(node.name)
            elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                names.update(f"{node.name}::{item.name}" for item in node.body
                             if isinstance(item, ast.FunctionDef) and item.name.startswith("test"))
    return found


def unknown(check_id: str, suites: dict[str, set[str]]) -> str | None:
    """Why `check_id` names no test of the suites, or None."""
    m = CHECK_ID.fullmatch(check_id)
    if not m:
        return f"{check_id!r} is not a check id (suite.py::test)"
    suite, test = m.groups()
    if suite not in suites:
        return f"{check_id}: no suite {suite}"
    if test not in suites[suite]:
        return f"{check_id}: {suite} has no {test}"
    return None


def test_the_suites_are_found() -> None:
    suites = suite_tests()
    assert {"test_zookeeper.py", "test_mesos.py", "test_hygiene.py", "test_docker.py"} <= set(suites)
    assert "test_answers_ruok" in suites["test_zookeeper.py"]
    assert unknown("bake/test_hygiene.py::test_no_ssh_host_keys", suites) is None
    assert unknown("test_zookeeper.py::test_answers_ruok[ssh://m1]", suites) is None
    assert unknown("test_mesos.py::test_master_answers", suites) == \
        "test_mesos.py::test_master_answers: test_mesos.py has no test_master_answers"


def test_every_check_in_the_sample_runs_is_a_real_test() -> None:
    suites = suite_tests()
    runs = [sample_run(), all_passing_run()]
    ids = {c.id for run in runs for e in run.entries for c in e.checks}
    ids |= {c.id for e in (passing_entry(), failing_entry()) for c in e.checks} | set(SUITE) | {MESOS_CHECK}
    assert len(ids) >= 5
    assert [why for i in sorted(ids) if (why := unknown(i, suites))] == []


def test_every_id_naming_a_real_suite_in_report_tests_and_docs_is_a_real_test() -> None:
    """Ids of made-up suites (test_new.py, test_x.py) stand for checks a later run may add; an id
    that names a suite kiln has must name one of its tests."""
    suites = suite_tests()
    tests = REPO_ROOT / "tests"
    files = [*(p for p in (tests / "unit").glob("test_report_*.py") if p.name != Path(__file__).name),
             tests / "integration" / "test_report_browser.py", tests / "report_samples.py",
             REPO_ROOT / "README.md", *(REPO_ROOT / "docs").glob("*.md")]
    wrong = []
    for path in files:
        for m in CHECK_ID.finditer(path.read_text(encoding="utf-8")):
            if m.group(1) in suites and (why := unknown(m.group(0), suites)):
                wrong.append(f"{Path(path).relative_to(REPO_ROOT)}: {why}")
    assert wrong == []
