"""diff_runs against synthetic previous reports: each kind of change, and the noise it must ignore."""

from __future__ import annotations

import pytest
from report_samples import (
    GIB,
    HAPROXY,
    MESOS_CHECK,
    ZOOKEEPER,
    all_passing_run,
    clone,
    not_run_entry,
    sample_run,
)

from kiln.report.diff import (
    ABSENT,
    AmountChange,
    CheckChange,
    ResultChange,
    Thresholds,
    VersionChange,
    diff_runs,
)
from kiln.report.model import Check

RUOK = "test_zookeeper.py::test_answers_ruok"
UBUNTU = "ubuntu-24.04-qemu"
DEBIAN = "debian-12-qemu"


def test_identical_runs_have_no_changes() -> None:
    previous = sample_run()
    assert diff_runs(previous, clone(previous)).empty


def test_new_failure() -> None:
    previous = all_passing_run()
    current = clone(previous)
    current.entries[1].checks[1] = Check(RUOK, "fail", UBUNTU, "no imok\nassert ...")
    diff = diff_runs(previous, current)
    assert diff.new_failures == [CheckChange(UBUNTU, RUOK, "pass", "fail", "no imok\nassert ...")]
    assert diff.results == [ResultChange(UBUNTU, "pass", "fail", "1 failing check")]
    assert not diff.fixed and not diff.appeared and not diff.disappeared


def test_fixed() -> None:
    previous = all_passing_run()
    previous.entries[1].checks[1] = Check(RUOK, "error", UBUNTU, "failed on setup")
    diff = diff_runs(previous, clone(all_passing_run()))
    assert diff.fixed == [CheckChange(UBUNTU, RUOK, "error", "pass")]
    assert diff.results == [ResultChange(UBUNTU, "fail", "pass", "")]
    assert not diff.new_failures


def test_still_failing_is_not_news() -> None:
    previous = sample_run()
    diff = diff_runs(previous, clone(previous))
    assert not diff.new_failures and not diff.fixed and not diff.results


def test_a_skipped_check_that_now_fails_is_a_new_failure() -> None:
    previous = all_passing_run()
    current = clone(previous)
    mesos = MESOS_CHECK
    current.entries[0].checks = [Check(c.id, "fail", c.host, "boom") if c.id == mesos else c
                                 for c in current.entries[0].checks]
    assert [(c.entry, c.check, c.before) for c in diff_runs(previous, current).new_failures] == [
        (DEBIAN, mesos, "skip")]


def test_version_bump_added_and_removed_components() -> None:
    previous = all_passing_run()
    current = clone(previous)
    current.entries[0].components["zookeeper"] = "3.8.0-11+deb12u3"
    current.entries[0].components["rancher"] = "0.1"
    del current.entries[0].components["haproxy"]
    assert diff_runs(previous, current).versions == [
        VersionChange(DEBIAN, "haproxy", HAPROXY, ""),
        VersionChange(DEBIAN, "rancher", "", "0.1"),
        VersionChange(DEBIAN, "zookeeper", ZOOKEEPER, "3.8.0-11+deb12u3"),
    ]


def test_25_percent_slower_is_reported() -> None:
    previous = all_passing_run()
    current = clone(previous)
    current.entries[0].stages["packer build"] = 1125.0  # 900 s -> 1125 s
    diff = diff_runs(previous, current)
    assert diff.durations == [AmountChange(DEBIAN, "packer build", 900.0, 1125.0)]
    assert diff.durations[0].ratio == pytest.approx(0.25)


def test_15_percent_slower_is_not_reported() -> None:
    previous = all_passing_run()
    current = clone(previous)
    current.entries[0].stages["packer build"] = 1035.0
    assert diff_runs(previous, current).empty


def test_exactly_the_threshold_is_not_over_it() -> None:
    previous = all_passing_run()
    current = clone(previous)
    current.entries[0].stages["packer build"] = 1080.0
    assert diff_runs(previous, current).durations == []


def test_faster_is_reported_too() -> None:
    previous = all_passing_run()
    current = clone(previous)
    current.entries[0].stages["packer build"] = 600.0
    (change,) = diff_runs(previous, current).durations
    assert change.ratio == pytest.approx(-1 / 3)


def test_tiny_durations_do_not_alarm() -> None:
    previous = all_passing_run()
    current = clone(previous)
    current.entries[0].stages["render"] = 3.9  # 0.4 s -> 3.9 s: +875%, but 3.5 s
    current.entries[0].stages["metadata"] = 9.0  # 3.2 s -> 9 s: +181% and 5.8 s: reported
    assert [c.name for c in diff_runs(previous, current).durations] == ["metadata"]


def test_size_growth_and_tiny_files() -> None:
    previous = all_passing_run()
    current = clone(previous)
    box = f"{DEBIAN}.box"
    current.entries[0].artifacts[box] = int(1.6 * GIB)  # +33%
    current.entries[0].artifacts["image-manifest.json"] = 8_192  # x4, but a few KiB
    diff = diff_runs(previous, current)
    assert diff.sizes == [AmountChange(DEBIAN, box, int(1.2 * GIB), int(1.6 * GIB))]
    assert diff.sizes[0].ratio == pytest.approx(1 / 3, rel=1e-6)


def test_custom_thresholds() -> None:
    previous = all_passing_run()
    current = clone(previous)
    current.entries[0].stages["packer build"] = 1035.0
    tight = Thresholds(ratio=0.10, min_seconds=1.0)
    assert [c.name for c in diff_runs(previous, current, tight).durations] == ["packer build"]


def test_pass_to_not_run_is_a_result_change_without_check_noise() -> None:
    previous = all_passing_run()
    current = clone(previous)
    current.entries[1] = not_run_entry()
    current.entries[1].name = UBUNTU
    diff = diff_runs(previous, current)
    assert diff.results == [ResultChange(UBUNTU, "pass", "not-run", not_run_entry().not_run)]
    assert not diff.disappeared and not diff.versions and not diff.durations and not diff.sizes


def test_not_run_to_run_lists_no_appeared_checks() -> None:
    previous = sample_run()
    current = clone(previous)
    current.entries[2] = clone(all_passing_run()).entries[0]
    current.entries[2].name = previous.entries[2].name
    diff = diff_runs(previous, current)
    assert diff.results == [ResultChange(previous.entries[2].name, "not-run", "pass", "")]
    assert not diff.appeared and not diff.new_failures


def test_entries_that_appear_or_disappear() -> None:
    previous = sample_run()
    current = clone(previous)
    gone = current.entries.pop(0)
    diff = diff_runs(previous, current)
    assert diff.results == [ResultChange(gone.name, "pass", ABSENT)]
    diff = diff_runs(current, previous)
    assert diff.results == [ResultChange(gone.name, ABSENT, "pass", "")]


def test_checks_that_appear_or_disappear() -> None:
    previous = all_passing_run()
    current = clone(previous)
    removed = current.entries[0].checks.pop(0)
    current.entries[0].checks.append(Check("test_new.py::test_thing", "pass", DEBIAN))
    current.entries[0].checks.append(Check("test_new.py::test_broken", "fail", DEBIAN, "nope"))
    diff = diff_runs(previous, current)
    assert diff.disappeared == [CheckChange(DEBIAN, removed.id, "pass", ABSENT)]
    assert diff.appeared == [CheckChange(DEBIAN, "test_new.py::test_thing", ABSENT, "pass")]
    # A new check that fails is a new failure (listed once, not also as appeared).
    assert diff.new_failures == [CheckChange(DEBIAN, "test_new.py::test_broken", ABSENT, "fail", "nope")]
