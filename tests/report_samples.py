"""Synthetic nightly runs for the report tests: what `invoke nightly` would record, by hand.

Shared by tests/unit/test_report_*.py and the browser test (tests/ is on sys.path through
tests/conftest.py).
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

from kiln.report.model import Check, Entry, Run

STARTED = datetime(2026, 11, 23, 2, 0, 0, tzinfo=UTC)
GIB = 1 << 30

NOT_RUN_REASON = "no AWS credentials here (invoke doctor --goal aws)"
FAIL_MESSAGE = "AssertionError: zookeeper did not answer ruok\nassert '' == 'imok'"

# Real check ids: each names a test of the suites (components/*/test_*.py, tests/infra/test_*.py), and
# the versions are what Debian 12 installs (tests/unit/test_report_samples.py checks both).
SUITE = [
    "test_zookeeper.py::test_installed_with_its_own_unit",
    "test_zookeeper.py::test_answers_ruok",
    "test_docker.py::test_runs_a_container_from_a_local_rootfs",
    "test_hygiene.py::test_no_ssh_host_keys",
    "test_mesos.py::test_a_docker_task_finishes",
]
MESOS_CHECK = "test_mesos.py::test_a_docker_task_finishes"
SKIP_MESSAGE = "not a check for role master (only standalone, agent)"
# Debian 12's packages (apt-cache policy on bookworm); ZooKeeper is 3.8.0 there, whatever a config says.
ZOOKEEPER = "3.8.0-11+deb12u2"
HAPROXY = "2.6.12-1+deb12u4"


def _checks(host: str, failing: str = "", skipped: str = "") -> list[Check]:
    out = []
    for check_id in SUITE:
        if check_id == failing:
            out.append(Check(check_id, "fail", host, FAIL_MESSAGE, 92.4))
        elif check_id == skipped:
            out.append(Check(check_id, "skip", host, SKIP_MESSAGE, 0.0))
        else:
            out.append(Check(check_id, "pass", host, "", 1.5))
    return out


def passing_entry(target: str = "debian-12", builder: str = "qemu") -> Entry:
    name = f"{target}-{builder}"
    return Entry(
        name=name, target=target, builder=builder,
        stages={"render": 0.4, "source image": 12.0, "packer build": 900.0, "metadata": 3.2,
                "boot to ssh": 45.0, "apply node spec": 20.0, "testinfra": 60.0},
        artifacts={f"{name}.box": int(1.2 * GIB), "image-manifest.json": 2_048},
        components={"zookeeper": ZOOKEEPER, "docker": "20.10.24+dfsg1-1+deb12u1+b6", "haproxy": HAPROXY,
                    "java": "17.0.15+6-1~deb12u1"},
        # A check for other roles than the node's skips.
        checks=_checks(name, skipped=MESOS_CHECK),
    )


def failing_entry() -> Entry:
    entry = passing_entry("ubuntu-24.04", "qemu")
    entry.checks = _checks(entry.name, failing="test_zookeeper.py::test_answers_ruok")
    # A check that passes here (a standalone node) but was skipped for debian-12: the matrix shows both.
    entry.components["mesos"] = "1.11.0-0.7.1.ubuntu2404"
    return entry


def not_run_entry() -> Entry:
    return Entry(name="ubuntu-24.04-amazon-ebs", target="ubuntu-24.04", builder="amazon-ebs",
                 not_run=NOT_RUN_REASON)


def sample_run(started: datetime = STARTED) -> Run:
    """One passing, one failing (a failing check) and one not-run entry."""
    return Run(started=started, finished=started + timedelta(minutes=47, seconds=12),
               host={"hostname": "nightly-runner", "os": "Debian GNU/Linux 12 (bookworm)",
                     "accelerator": "tcg"},
               tools={"packer": "1.6.6", "qemu": "QEMU emulator version 7.2.15"},
               kiln_version="0.1.0", git_revision="a69605b",
               entries=[passing_entry(), failing_entry(), not_run_entry()])


def all_passing_run(started: datetime = STARTED) -> Run:
    run = sample_run(started)
    ubuntu = failing_entry()
    ubuntu.checks = _checks(ubuntu.name)
    run.entries = [passing_entry(), ubuntu]
    return run


def clone(run: Run, days_later: int = 1) -> Run:
    """A deep copy dated `days_later`, to edit into "the next night"."""
    later = copy.deepcopy(run)
    later.started += timedelta(days=days_later)
    later.finished += timedelta(days=days_later)
    return later
