"""The nightly JUnit XML: what a CI system counts from it."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from report_samples import FAIL_MESSAGE, NOT_RUN_REASON, passing_entry, sample_run

from kiln.report.junit import render_junit
from kiln.report.model import Check, Entry


def _suites(run) -> dict[str, ET.Element]:
    root = ET.fromstring(render_junit(run))
    assert root.tag == "testsuites"
    return {s.get("name"): s for s in root.findall("testsuite")}


def test_totals_count_every_testcase() -> None:
    root = ET.fromstring(render_junit(sample_run()))
    cases = root.findall("testsuite/testcase")
    assert int(root.get("tests")) == len(cases) == 5 + 5 + 1
    assert root.get("failures") == "1" and root.get("errors") == "0"
    assert root.get("skipped") == "2"  # debian-12's Mesos check and the not-run entry
    assert root.get("timestamp") == "2026-11-23T02:00:00+00:00"


def test_a_testcase_per_check_and_host() -> None:
    suite = _suites(sample_run())["ubuntu-24.04-qemu"]
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("5", "1", "0")
    failing = [c for c in suite.findall("testcase") if c.find("failure") is not None]
    (case,) = failing
    assert case.get("classname") == "ubuntu-24.04-qemu.test_zookeeper"
    assert case.get("name") == "test_answers_ruok @ ubuntu-24.04-qemu"
    assert case.get("time") == "92.400"
    failure = case.find("failure")
    assert failure.get("message") == FAIL_MESSAGE.splitlines()[0]
    assert failure.text == FAIL_MESSAGE
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["result"] == "fail" and props["component.mesos"] == "1.11.0-0.7.1.ubuntu2404"
    assert props["stage.packer build.seconds"] == "900.0"


def test_not_run_is_skipped_with_its_reason_never_passed() -> None:
    suite = _suites(sample_run())["ubuntu-24.04-amazon-ebs"]
    (case,) = suite.findall("testcase")
    skipped = case.find("skipped")
    assert skipped is not None and skipped.get("message") == f"not run: {NOT_RUN_REASON}"
    assert (suite.get("tests"), suite.get("skipped"), suite.get("failures")) == ("1", "1", "0")


def test_stage_failures_and_kiln_errors_are_testcases() -> None:
    run = sample_run()
    broken = Entry("debian-12-virtualbox", "debian-12", "virtualbox",
                   stages={"render": 0.5, "packer build": 31.0},
                   stage_failures={"packer build": "step 'packer build' failed (exit 1)"})
    crashed = passing_entry()
    crashed.name, crashed.checks, crashed.error = "debian-12-qemu cluster 3m", [], "vagrant up failed"
    run.entries = [broken, crashed]
    suites = _suites(run)
    (stage,) = suites["debian-12-virtualbox"].findall("testcase")
    assert (stage.get("classname"), stage.get("name"), stage.get("time")) == (
        "debian-12-virtualbox.stages", "packer build", "31.000")
    assert "exit 1" in stage.find("failure").get("message")
    (error,) = suites["debian-12-qemu cluster 3m"].findall("testcase")
    assert error.find("error").get("message") == "vagrant up failed"
    assert suites["debian-12-qemu cluster 3m"].get("errors") == "1"


def test_phase_folders_become_dotted_class_names() -> None:
    run = sample_run()
    run.entries = [passing_entry()]
    run.entries[0].checks = [Check("bake/test_hygiene.py::test_no_ssh_host_keys", "pass", "debian-12-qemu")]
    (case,) = _suites(run)["debian-12-qemu"].findall("testcase")
    assert case.get("classname") == "debian-12-qemu.bake.test_hygiene"


def test_rendering_is_deterministic() -> None:
    assert render_junit(sample_run()) == render_junit(sample_run())
