"""The nightly report as one static HTML page a person reads at a glance.

Python turns the Run (and its Diff against the previous run) into plain view rows; the
Jinja2 template (StrictUndefined, autoescaped) only lays them out. No scripts, no
external URLs, no time of rendering in the page: the same input gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import jinja2

from kiln.report.diff import ABSENT, AmountChange, Diff, diff_runs
from kiln.report.model import Check, Entry, Run, worst
from kiln.report.units import human_bytes, human_ratio, human_seconds

TEMPLATES = Path(__file__).with_name("templates")


@dataclass(frozen=True)
class Style:
    background: str
    foreground: str
    symbol: str  # with the label, the result reads without colour too
    label: str


STYLES: dict[str, Style] = {
    "pass": Style("#cdf0d5", "#0b5a1f", "\u2713", "pass"),
    "fail": Style("#ffbdbd", "#8a0519", "\u2717", "fail"),
    "error": Style("#ffd08f", "#663300", "\u26a0", "error"),
    "skip": Style("#eceff2", "#4e5863", "\u2013", "skip"),
    "not-run": Style("#d4d4d4", "#2f2f2f", "\u25cb", "not run"),
    ABSENT: Style("#ffffff", "#8c959f", "\u00b7", "n/a"),
}


@dataclass(frozen=True)
class Cell:
    result: str
    text: str
    title: str = ""


@dataclass(frozen=True)
class Row:
    label: str
    key: str  # check id or stage name: data-check in the page
    cells: list[Cell]


@dataclass(frozen=True)
class Group:
    title: str
    rows: list[Row]


@dataclass(frozen=True)
class Column:
    name: str
    result: str
    reason: str
    seconds: str


@dataclass(frozen=True)
class Failure:
    entry: str
    subject: str
    result: str
    host: str
    message: str


@dataclass(frozen=True)
class Detail:
    name: str
    result: str
    reason: str
    seconds: str
    stages: list[tuple[str, str, bool]]  # name, duration, failed
    artifacts: list[tuple[str, str]]
    components: list[tuple[str, str]]


@dataclass(frozen=True)
class ChangeRow:
    entry: str
    subject: str
    before: str
    after: str
    note: str
    tone: str  # bad | good | neutral


@dataclass(frozen=True)
class Section:
    kind: str
    title: str
    rows: list[ChangeRow]


def render_html(run: Run, previous: Run | None = None, *, previous_note: str = "") -> str:
    """The page; `previous_note` says why there is no comparison when `previous` is None."""
    diff = diff_runs(previous, run) if previous is not None else None
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    return env.get_template("nightly.html.j2").render(
        run=run,
        started=_when(run.started), finished=_when(run.finished), took=human_seconds(run.seconds),
        counts=run.counts(), styles=STYLES,
        host=sorted(run.host.items()), tools=sorted(run.tools.items()),
        columns=[_column(e) for e in run.entries],
        groups=matrix(run),
        failures=failures(run),
        details=[_detail(e) for e in run.entries],
        previous=previous and {"started": _when(previous.started), "verdict": previous.verdict},
        previous_note=previous_note or "no previous run to compare with",
        sections=changes(diff) if diff is not None else [],
    )


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _column(entry: Entry) -> Column:
    return Column(entry.name, entry.result, entry.reason, human_seconds(entry.seconds))


def _cell(result: str, text: str = "", title: str = "") -> Cell:
    style = STYLES[result]
    return Cell(result, f"{style.symbol} {text or style.label}", title)


def matrix(run: Run) -> list[Group]:
    """Rows: kiln's stages, then checks grouped by suite file; columns: the run's entries."""
    groups = [Group("kiln stages", [Row(s, s, [_stage_cell(e, s) for e in run.entries])
                                    for s in _ordered(n for e in run.entries
                                                      for n in [*e.stages, *e.stage_failures])])]
    check_ids = _ordered(c.id for e in run.entries for c in e.checks)
    for suite in sorted({i.split("::", 1)[0] for i in check_ids}):
        rows = [Row(i.split("::", 1)[1], i, [_check_cell(e, i) for e in run.entries])
                for i in check_ids if i.split("::", 1)[0] == suite]
        groups.append(Group(suite, rows))
    return groups


def _ordered(names: Iterable[str]) -> list[str]:
    """First appearance order: stages run in order, and suites list their checks in file order."""
    return list(dict.fromkeys(names))


def _stage_cell(entry: Entry, stage: str) -> Cell:
    if entry.result == "not-run":
        return _cell("not-run")
    took = human_seconds(entry.stages[stage]) if stage in entry.stages else ""
    if stage in entry.stage_failures:
        return _cell("fail", took or "fail", entry.stage_failures[stage])
    if stage in entry.stages:
        return _cell("pass", took)
    return _cell(ABSENT)


def _check_cell(entry: Entry, check_id: str) -> Cell:
    if entry.result == "not-run":
        return _cell("not-run", title=entry.not_run)
    checks = entry.cells().get(check_id, [])
    if not checks:
        return _cell(ABSENT, title="this check did not run for this entry")
    result = worst(c.result for c in checks) or ABSENT
    return _cell(result, title="\n".join(_describe(c) for c in checks))


def _describe(check: Check) -> str:
    where = f"{check.host}: " if check.host else ""
    return f"{where}{check.result}" + (f": {check.message}" if check.message else "")


def failures(run: Run) -> list[Failure]:
    out: list[Failure] = []
    for entry in run.entries:
        if entry.result == "error":
            out.append(Failure(entry.name, "kiln", "error", "", entry.reason))
        out += [Failure(entry.name, f"stage: {s}", "fail", "", m) for s, m in entry.stage_failures.items()]
        out += [Failure(entry.name, c.id, c.result, c.host, c.message) for c in entry.checks if c.failed]
    return out


def _detail(entry: Entry) -> Detail:
    return Detail(
        name=entry.name, result=entry.result, reason=entry.reason, seconds=human_seconds(entry.seconds),
        stages=[(s, human_seconds(t), s in entry.stage_failures) for s, t in entry.stages.items()],
        artifacts=[(f, human_bytes(b)) for f, b in sorted(entry.artifacts.items())],
        components=sorted(entry.components.items()),
    )


def changes(diff: Diff) -> list[Section]:
    """The diff as titled sections, worst news first; empty sections are left out."""
    sections = [
        Section("new-failures", "New failures", [
            ChangeRow(c.entry, c.check, c.before, c.after, c.message.splitlines()[0] if c.message else "",
                      "bad") for c in diff.new_failures]),
        Section("results", "Entry results", [
            ChangeRow(r.entry, "result", r.before, r.after, r.reason, _result_tone(r.before, r.after))
            for r in diff.results]),
        Section("fixed", "Fixed", [ChangeRow(c.entry, c.check, c.before, c.after, "", "good")
                                   for c in diff.fixed]),
        Section("versions", "Component versions", [
            ChangeRow(v.entry, v.component, v.before or "(none)", v.after or "(removed)", "", "neutral")
            for v in diff.versions]),
        Section("durations", "Stage durations", [_amount(a, human_seconds) for a in diff.durations]),
        Section("sizes", "Artifact sizes", [_amount(a, human_bytes) for a in diff.sizes]),
        Section("appeared", "Checks that appeared", [
            ChangeRow(c.entry, c.check, c.before, c.after, "", "neutral") for c in diff.appeared]),
        Section("disappeared", "Checks that disappeared", [
            ChangeRow(c.entry, c.check, c.before, c.after, "", "bad") for c in diff.disappeared]),
    ]
    return [s for s in sections if s.rows]


def _result_tone(before: str, after: str) -> str:
    if after in ("fail", "error", "not-run") and before == "pass":
        return "bad"
    return "good" if after == "pass" else "neutral"


def _amount(change: AmountChange, fmt: Callable[[float], str]) -> ChangeRow:
    # Slower or bigger is the news to look at; faster or smaller is welcome but still shown.
    tone = "bad" if change.after > change.before else "good"
    return ChangeRow(change.entry, change.name, fmt(change.before), fmt(change.after),
                     human_ratio(change.ratio), tone)
