"""`invoke nightly` for real (the session fixture in conftest runs it, narrowed to the qemu and
amazon-ebs builders and no cluster): the image is built, booted and verified, and everything
that cannot run offline is reported as not run. A canary check asking for a file
no image has makes the night fail, and that failure shows in the JSON, the JUnit XML and the
HTML page alike."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET

import pytest
from e2e_helpers import CANARY, NIGHTLY_REPORTS

pytestmark = [pytest.mark.vm, pytest.mark.slow]

CANARY_CHECK = f"boot/test_expected.py::test_expected_file_exists[{CANARY}]"


def _report() -> dict:
    return json.loads((NIGHTLY_REPORTS / "nightly.json").read_text())


def test_the_night_fails_because_of_the_canary_only(nightly: subprocess.CompletedProcess[str]) -> None:
    assert nightly.returncode == 1, nightly.stderr[-2000:]
    assert "nightly: FAIL" in nightly.stdout
    entries = {e["name"]: e for e in _report()["entries"]}
    single = entries["debian-12-qemu"]
    failing = sorted(c["id"] for c in single["checks"] if c["result"] in ("fail", "error"))
    assert failing == [CANARY_CHECK], failing
    assert single["stage_failures"] == {"boot test": single["stage_failures"]["boot test"]}
    assert "boot test" in single["stage_failures"]


def test_the_image_was_built_booted_and_checked(nightly: subprocess.CompletedProcess[str]) -> None:
    single = {e["name"]: e for e in _report()["entries"]}["debian-12-qemu"]
    assert {"build", "boot test"} <= set(single["stages_seconds"])
    assert single["artifacts_bytes"]["debian-12-qemu.box"] > 100 * 2**20
    assert {"zookeeper", "docker", "haproxy", "node"} <= set(single["components"])
    by_id = {c["id"]: c["result"] for c in single["checks"]}
    assert by_id["bake/test_hygiene.py::test_no_ssh_host_keys"] == "pass"
    assert by_id["boot/test_zookeeper.py::test_answers_ruok"] == "pass"
    assert by_id["boot/test_docker.py::test_runs_a_container_from_a_local_rootfs"] == "pass"
    print("stages:", single["stages_seconds"])


def test_the_night_holds_the_builders_and_no_cluster_it_was_asked_for(nightly) -> None:
    names = sorted(e["name"] for e in _report()["entries"])
    assert names == ["debian-12-qemu", "ubuntu-24.04-amazon-ebs", "ubuntu-24.04-qemu"], names


def test_what_cannot_run_offline_is_not_run_with_its_reason(nightly) -> None:
    """ubuntu-24.04 is in the night too: offline, with Mesos from kiln's Debian build root, it
    cannot be built, and each of its pairs says so instead of passing or failing."""
    entries = {e["name"]: e for e in _report()["entries"]}
    for builder in ("qemu", "amazon-ebs"):
        entry = entries[f"ubuntu-24.04-{builder}"]
        assert "components.mesos.source" in entry["not_run"], entry["not_run"]
        assert entry.get("checks", []) == [] and not entry.get("stages_seconds")


def test_the_failure_shows_in_the_junit_xml(nightly) -> None:
    root = ET.parse(NIGHTLY_REPORTS / "nightly.xml").getroot()
    assert int(root.get("failures", "0")) >= 1
    failed = [case for case in root.iter("testcase") if case.find("failure") is not None]
    assert any(CANARY in (case.get("name") or "") for case in failed)
    skipped = [case.find("skipped").get("message") for case in root.iter("testcase")
               if case.find("skipped") is not None]
    assert any(m.startswith("not run: ") for m in skipped)


def test_the_failure_shows_in_the_html_page(nightly) -> None:
    page = (NIGHTLY_REPORTS / "nightly.html").read_text()
    assert 'id="verdict" data-result="fail"' in page
    assert 'data-result="fail" data-entry="debian-12-qemu"' in page
    assert 'data-result="not-run"' in page
