"""write_reports and `invoke report`: files in place, the previous run found, nothing half written."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from invoke import Context
from invoke.exceptions import Exit
from report_samples import FAIL_MESSAGE, all_passing_run, clone, sample_run

from kiln.errors import UserError
from kiln.report import load_run, write_reports
from kiln.report.files import write_atomic
from kiln.report.store import run_to_dict
from kiln.tasks.report import report

RUOK = "test_zookeeper.py::test_answers_ruok"


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_first_run_writes_three_files_and_says_there_is_nothing_to_compare(tmp_path: Path) -> None:
    written = write_reports(sample_run(), tmp_path / "reports")
    assert _listing(tmp_path / "reports") == ["nightly.html", "nightly.json", "nightly.xml"]
    assert (written.previous, written.note) == (None, "no previous run to compare with")
    assert load_run(written.json) == sample_run()
    assert "no previous run to compare with" in written.html.read_text()


def test_a_failing_check_shows_in_all_three_forms(tmp_path: Path) -> None:
    written = write_reports(sample_run(), tmp_path)
    data = json.loads(written.json.read_text())
    ubuntu = data["entries"][1]
    assert (ubuntu["result"], data["verdict"]) == ("fail", "fail")
    assert {"id": RUOK, "host": "ubuntu-24.04-qemu", "result": "fail", "message": FAIL_MESSAGE,
            "seconds": 92.4} in ubuntu["checks"]
    failures = ET.parse(written.junit).getroot().findall(".//testcase/failure/..")
    assert [(c.get("classname"), c.get("name")) for c in failures] == [
        ("ubuntu-24.04-qemu.test_zookeeper", "test_answers_ruok @ ubuntu-24.04-qemu")]
    page = written.html.read_text()
    assert f'data-entry="ubuntu-24.04-qemu" data-check="{RUOK}"' in page
    assert 'data-result="fail" data-entry="ubuntu-24.04-qemu"' in page
    assert "AssertionError: zookeeper did not answer ruok" in page


def test_the_next_run_is_compared_with_the_last_one_which_is_kept(tmp_path: Path) -> None:
    first = all_passing_run()
    second = clone(sample_run())
    write_reports(first, tmp_path)
    written = write_reports(second, tmp_path)
    assert written.previous == tmp_path / "previous.json" and written.note == ""
    assert load_run(tmp_path / "previous.json") == first
    assert load_run(tmp_path / "nightly.json") == second
    assert "Compared with the run started 2026-11-23 02:00:00 UTC (pass)" in written.html.read_text()
    assert 'data-kind="new-failures"' in written.html.read_text()
    # Rendering the same run again still compares it with the run before it.
    again = write_reports(load_run(tmp_path / "nightly.json"), tmp_path)
    assert again.previous == tmp_path / "previous.json"
    assert load_run(tmp_path / "previous.json") == first
    assert again.html.read_text() == written.html.read_text()


def test_an_explicit_previous_run_or_file(tmp_path: Path) -> None:
    other = tmp_path / "other"
    write_reports(all_passing_run(), other)
    written = write_reports(clone(sample_run()), tmp_path / "r", previous=other / "nightly.json")
    assert written.previous == other / "nightly.json"
    assert 'data-kind="new-failures"' in written.html.read_text()
    written = write_reports(clone(sample_run()), tmp_path / "r2", previous=all_passing_run())
    assert written.previous is None and 'data-kind="new-failures"' in written.html.read_text()


def test_an_explicit_unreadable_previous_file_is_a_user_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(UserError, match="is not a kiln nightly report"):
        write_reports(sample_run(), tmp_path / "r", previous=bad)
    assert not (tmp_path / "r" / "nightly.json").exists()


def test_a_found_report_of_an_older_schema_only_costs_the_comparison(tmp_path: Path) -> None:
    old = run_to_dict(all_passing_run())
    old["schema_version"] = 0
    (tmp_path / "nightly.json").write_text(json.dumps(old))
    written = write_reports(clone(sample_run()), tmp_path)
    assert written.previous is None
    assert written.note.startswith("the last report cannot be compared: ")
    assert "schema version 0" in written.note and "schema version 0" in written.html.read_text()
    assert not (tmp_path / "previous.json").exists()
    assert load_run(tmp_path / "nightly.json") == clone(sample_run())


def test_a_rendering_failure_leaves_the_last_reports_untouched(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    write_reports(all_passing_run(), tmp_path)
    before = {n: (tmp_path / n).read_bytes() for n in _listing(tmp_path)}

    def broken(*args: object, **kwargs: object) -> str:
        raise RuntimeError("template bug")

    monkeypatch.setattr("kiln.report.writer.render_html", broken)
    with pytest.raises(RuntimeError, match="template bug"):
        write_reports(clone(sample_run()), tmp_path)
    assert {n: (tmp_path / n).read_bytes() for n in _listing(tmp_path)} == before


def test_write_atomic_leaves_no_temp_file_when_the_rename_fails(tmp_path: Path) -> None:
    (tmp_path / "nightly.json").mkdir()
    with pytest.raises(OSError):
        write_atomic(tmp_path / "nightly.json", "{}")
    assert _listing(tmp_path) == ["nightly.json"]
    write_atomic(tmp_path / "a.txt", "one")
    write_atomic(tmp_path / "a.txt", "two")
    assert (tmp_path / "a.txt").read_text() == "two" and _listing(tmp_path) == ["a.txt", "nightly.json"]


def test_invoke_report_renders_from_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "in"
    write_reports(sample_run(), source)
    report(Context(), from_=str(source / "nightly.json"), previous="", report_dir=str(tmp_path / "out"))
    out = capsys.readouterr().out
    assert "verdict: fail (1 pass, 1 fail, 1 not-run)" in out
    assert "compared with: no previous run to compare with" in out
    assert _listing(tmp_path / "out") == ["nightly.html", "nightly.json", "nightly.xml"]
    assert (tmp_path / "out" / "nightly.html").read_text() == (source / "nightly.html").read_text()


def test_invoke_report_with_a_bad_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.json").write_text("[]")
    with pytest.raises(Exit) as caught:
        report(Context(), from_=str(tmp_path / "x.json"), previous="", report_dir=str(tmp_path))
    assert caught.value.code == 2
    assert "is not a kiln nightly report" in capsys.readouterr().err
