"""Report model: derived results, JSON round trip and its refusals, checks from real pytest JUnit XML."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest
from report_samples import (
    FAIL_MESSAGE,
    NOT_RUN_REASON,
    failing_entry,
    not_run_entry,
    passing_entry,
    sample_run,
)

from kiln.errors import UserError
from kiln.report import checks_from_junit, entry_name, host_facts, load_run, save_run
from kiln.report.model import Check, Entry
from kiln.report.store import SCHEMA_VERSION, dumps_run, run_to_dict


def test_entry_results_are_derived_and_never_pass_without_evidence() -> None:
    assert passing_entry().result == "pass"
    assert failing_entry().result == "fail"
    assert failing_entry().reason == "1 failing check"
    assert not_run_entry().result == "not-run"
    assert not_run_entry().reason == NOT_RUN_REASON
    nothing = Entry("x-qemu", "x", "qemu")
    assert (nothing.result, nothing.reason) == ("error", "no checks ran")
    stage = Entry("x-qemu", "x", "qemu", stage_failures={"packer build": "exit 1"})
    assert (stage.result, stage.reason) == ("fail", "packer build failed")
    crashed = passing_entry()
    crashed.error = "kiln-node apply failed"
    assert crashed.result == "error"
    # A reason to not run wins over everything: the entry did not run.
    skipped = passing_entry()
    skipped.not_run = "no KVM"
    assert skipped.result == "not-run"


def test_a_check_error_fails_the_entry_and_a_skip_does_not() -> None:
    entry = passing_entry()
    assert any(c.result == "skip" for c in entry.checks) and entry.result == "pass"
    entry.checks.append(Check("test_x.py::test_y", "error", "h", "failed on setup"))
    assert entry.result == "fail"


def test_a_check_result_must_be_known() -> None:
    with pytest.raises(ValueError, match="'passed' is not one of"):
        Check("test_x.py::test_y", "passed")


def test_run_verdict() -> None:
    run = sample_run()
    assert run.verdict == "fail"
    assert run.counts() == {"pass": 1, "fail": 1, "error": 0, "not-run": 1}
    run.entries = [passing_entry(), not_run_entry()]
    assert run.verdict == "pass"
    run.entries = [not_run_entry()]
    assert run.verdict == "not-run"  # nothing verified is not a pass
    run.entries = []
    assert run.verdict == "not-run"


def test_cluster_cell_takes_the_worst_host() -> None:
    entry = Entry(entry_name("debian-12", "qemu", "3m"), "debian-12", "qemu", "3m", checks=[
        Check("test_zookeeper.py::test_answers_ruok", "pass", "m1"),
        Check("test_zookeeper.py::test_answers_ruok", "fail", "m2", "no imok"),
        Check("test_zookeeper.py::test_answers_ruok", "skip", "m3"),
    ])
    assert entry.name == "debian-12-qemu cluster 3m"
    assert entry.cell_result("test_zookeeper.py::test_answers_ruok") == "fail"
    assert entry.cell_result("test_other.py::test_z") is None


def test_json_round_trip(tmp_path: Path) -> None:
    run = sample_run()
    path = save_run(run, tmp_path / "nightly.json")
    loaded = load_run(path)
    assert loaded == run
    assert dumps_run(loaded) == path.read_text()
    data = json.loads(path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION and data["verdict"] == "fail"
    assert [e["result"] for e in data["entries"]] == ["pass", "fail", "not-run"]
    assert data["entries"][1]["checks"][1]["message"] == FAIL_MESSAGE


def test_naive_times_are_refused() -> None:
    run = sample_run()
    run.started = datetime(2026, 1, 1)
    with pytest.raises(ValueError, match="timezone"):
        run_to_dict(run)


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "prev.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda d: "{not json", "is not JSON"),
    (lambda d: {"entries": []}, "is not a kiln nightly report"),
    (lambda d: [1, 2], "is not a kiln nightly report"),
    (lambda d: {**d, "schema_version": 0}, "schema version 0; this kiln reads version 1"),
    (lambda d: {k: v for k, v in d.items() if k != "schema_version"}, "schema version None"),
    (lambda d: {**d, "entries": [{**d["entries"][0], "stages_seconds": {"render": "fast"}}]},
     "entries/0/stages_seconds/render: 'fast' is not of type 'number'"),
    (lambda d: {**d, "entries": [{**d["entries"][0], "result": "fail"}]},
     "says 'fail' but its stages and checks make it 'pass'"),
    (lambda d: {**d, "started": "yesterday"}, "'yesterday' is not an ISO 8601 time"),
    (lambda d: {**d, "started": "2026-11-23T02:00:00"}, "has no timezone"),
])
def test_malformed_or_older_reports_are_user_errors(tmp_path: Path, mutate, expected: str) -> None:
    data = run_to_dict(sample_run())
    with pytest.raises(UserError) as caught:
        load_run(_write(tmp_path, mutate(data)))
    assert expected in str(caught.value)
    assert str(tmp_path / "prev.json") in str(caught.value)


def test_all_schema_problems_are_listed_at_once(tmp_path: Path) -> None:
    data = run_to_dict(sample_run())
    del data["tools"]
    data["entries"][0]["checks"][0]["result"] = "passed"
    with pytest.raises(UserError) as caught:
        load_run(_write(tmp_path, data))
    assert "'tools' is a required property" in str(caught.value)
    assert "entries/0/checks/0/result: 'passed' is not one of" in str(caught.value)


def test_missing_report_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"report .*nope.json: file not found"):
        load_run(tmp_path / "nope.json")


def test_host_facts() -> None:
    facts = host_facts()
    assert facts["hostname"] and facts["kernel"] and int(facts["cpus"]) >= 1
    assert all(isinstance(v, str) for v in facts.values())


SUITE = """
import pytest

def test_ok(host):
    assert host.backend.hostname

@pytest.mark.parametrize("pkg", ["zookeeper", "docker"])
def test_pkg(host, pkg):
    assert pkg != "docker", "docker missing"

class TestThing:
    def test_skip(self, host):
        pytest.skip("mesos is not in this image's manifest")

@pytest.fixture
def broken():
    raise RuntimeError("boom")

def test_err(host, broken):
    pass
"""


@pytest.fixture(scope="module")
def testinfra_junit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JUnit XML file written by real pytest + testinfra over two ssh:// hosts. No test runs a
    command on a host, so no connection is made."""
    root = tmp_path_factory.mktemp("suite")
    (root / "tests" / "infra").mkdir(parents=True)
    (root / "tests" / "infra" / "test_demo.py").write_text(textwrap.dedent(SUITE))
    report = root / "junit.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/infra", "-p", "no:cacheprovider", "-q",
                           "--hosts=ssh://node-1,ssh://node-2", f"--junitxml={report}"],
                          cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the failing and erroring tests
    return report


def test_checks_from_real_testinfra_junit(testinfra_junit: Path) -> None:
    checks = checks_from_junit(testinfra_junit, hosts=["node-1", "node-2"])
    by_key = {(c.id, c.host): c for c in checks}
    assert len(checks) == 10
    for host in ("node-1", "node-2"):
        assert by_key["test_demo.py::test_ok", host].result == "pass"
        assert by_key["test_demo.py::test_pkg[zookeeper]", host].result == "pass"
        docker = by_key["test_demo.py::test_pkg[docker]", host]
        assert docker.result == "fail" and "docker missing" in docker.message
        skipped = by_key["test_demo.py::TestThing::test_skip", host]
        assert (skipped.result, skipped.message) == ("skip", "mesos is not in this image's manifest")
        error = by_key["test_demo.py::test_err", host]
        assert error.result == "error" and "RuntimeError: boom" in error.message
    assert all(c.seconds >= 0 for c in checks)


def test_without_known_hosts_the_host_keeps_the_parameters(testinfra_junit: Path) -> None:
    hosts = {c.host for c in checks_from_junit(testinfra_junit) if c.id == "test_demo.py::test_pkg"}
    assert hosts == {"node-1-zookeeper", "node-1-docker", "node-2-zookeeper", "node-2-docker"}


def test_phase_keeps_bake_and_boot_checks_apart(testinfra_junit: Path) -> None:
    ids = {c.id for c in checks_from_junit(testinfra_junit, hosts=["node-1"], phase="bake")}
    assert "bake/test_demo.py::test_ok" in ids and "bake/test_demo.py::TestThing::test_skip" in ids
    assert all(i.startswith("bake/test_demo.py::") for i in ids)


def test_junit_with_failure_and_teardown_error_takes_the_worst(tmp_path: Path) -> None:
    xml = tmp_path / "r.xml"
    xml.write_text(
        '<testsuite><testcase classname="tests.infra.test_zk" name="test_a[ssh://h]" time="1.5">'
        '<failure message="first">tb</failure><error message="failed on teardown">tb2</error></testcase>'
        '<testcase classname="test_zk" name="test_b" time="x"><failure>only text</failure></testcase>'
        '</testsuite>')
    a, b = checks_from_junit(xml)
    assert (a.id, a.host, a.result, a.message, a.seconds) == (
        "test_zk.py::test_a", "h", "error", "failed on teardown", 1.5)
    assert (b.id, b.host, b.result, b.message, b.seconds) == (
        "test_zk.py::test_b", "", "fail", "only text", 0)


@pytest.mark.parametrize("content", [None, "<testsuite><testcase"])
def test_unreadable_junit_is_a_user_error(tmp_path: Path, content: str | None) -> None:
    xml = tmp_path / "r.xml"
    if content is not None:
        xml.write_text(content)
    with pytest.raises(UserError, match="cannot read the JUnit XML report"):
        checks_from_junit(xml)
