"""The HTML page's content and properties (the browser test checks how it renders)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from report_samples import MESOS_CHECK, NOT_RUN_REASON, ZOOKEEPER, all_passing_run, clone, sample_run

from kiln.report.html import STYLES, render_html
from kiln.report.model import Check
from kiln.report.units import human_bytes, human_ratio, human_seconds


class _Cells(HTMLParser):
    """data-* attributes of the matrix cells and the kinds of change sections."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, str], str] = {}
        self.kinds: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        a = dict(attrs)
        if tag == "td" and "data-check" in a:
            self.cells[a["data-entry"] or "", a["data-check"] or ""] = a["data-result"] or ""
        if tag == "table" and "data-kind" in a:
            self.kinds.append(a["data-kind"] or "")


def _parse(page: str) -> _Cells:
    parser = _Cells()
    parser.feed(page)
    return parser


def test_matrix_cells() -> None:
    cells = _parse(render_html(sample_run())).cells
    ruok = "test_zookeeper.py::test_answers_ruok"
    mesos = MESOS_CHECK
    assert cells["debian-12-qemu", ruok] == "pass"
    assert cells["ubuntu-24.04-qemu", ruok] == "fail"
    assert cells["debian-12-qemu", mesos] == "skip"
    assert cells["ubuntu-24.04-qemu", "packer build"] == "pass"
    not_run = {k: v for k, v in cells.items() if k[0] == "ubuntu-24.04-amazon-ebs"}
    assert len(not_run) == 5 + 7 and set(not_run.values()) == {"not-run"}


def test_a_check_missing_from_one_entry_is_shown_as_absent() -> None:
    run = sample_run()
    run.entries[1].checks.append(Check("test_new.py::test_thing", "pass", "ubuntu-24.04-qemu"))
    cells = _parse(render_html(run)).cells
    assert cells["debian-12-qemu", "test_new.py::test_thing"] == "absent"


def test_page_is_self_contained_and_deterministic() -> None:
    page = render_html(sample_run(), all_passing_run())
    assert page == render_html(sample_run(), all_passing_run())
    assert not re.search(r"https?://|<script|<link|<img|@import|url\(", page)
    assert {"style", "table"} <= _parse(page).tags
    for style in STYLES.values():
        assert style.background in page


def test_header_says_verdict_time_and_reason() -> None:
    page = render_html(sample_run())
    assert 'id="verdict" data-result="fail"' in page and "FAILED" in page
    assert "2026-11-23 02:00:00 UTC" in page and "47 min 12 s" in page
    assert NOT_RUN_REASON in page


def test_text_from_the_run_is_escaped() -> None:
    run = sample_run()
    run.entries[1].checks[1] = Check("test_zookeeper.py::test_answers_ruok", "fail", "h",
                                     '<script>alert("x")</script>')
    page = render_html(run)
    assert "<script>" not in page and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page


def test_changes_section() -> None:
    previous = all_passing_run()
    current = clone(sample_run())
    current.entries[0].stages["packer build"] = 1125.0
    current.entries[0].components["zookeeper"] = "3.8.0-11+deb12u3"
    page = render_html(current, previous)
    assert _parse(page).kinds == ["new-failures", "results", "versions", "durations"]
    assert "Compared with the run started 2026-11-23 02:00:00 UTC (pass)" in page
    assert "15 min 00 s" in page and "18 min 45 s" in page and "+25%" in page
    assert ZOOKEEPER in page and "3.8.0-11+deb12u3" in page


def test_no_previous_run_says_why() -> None:
    assert "no previous run to compare with" in render_html(sample_run())
    page = render_html(sample_run(), previous_note="the last report cannot be compared: old schema")
    assert "the last report cannot be compared: old schema" in page
    assert "No changes." in render_html(sample_run(), sample_run())


@pytest.mark.parametrize(("seconds", "text"), [
    (0.44, "0.4 s"), (9.94, "9.9 s"), (9.96, "10 s"), (42.4, "42 s"), (412.3, "6 min 52 s"),
    (3599.6, "1 h 00 min"), (7384, "2 h 03 min"),
])
def test_human_seconds(seconds: float, text: str) -> None:
    assert human_seconds(seconds) == text


@pytest.mark.parametrize(("size", "text"), [
    (512, "512 B"), (2048, "2.0 KiB"), (5 << 20, "5.0 MiB"), (int(1.25 * (1 << 30)), "1.2 GiB"),
    (3 << 40, "3.0 TiB"),
])
def test_human_bytes(size: int, text: str) -> None:
    assert human_bytes(size) == text


def test_human_ratio() -> None:
    assert (human_ratio(0.25), human_ratio(-0.18), human_ratio(float("inf"))) == ("+25%", "\u221218%", "new")
