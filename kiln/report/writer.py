"""Put a run's three reports in place: nightly.json, nightly.xml (JUnit), nightly.html.

Each file is written atomically, the JSON last: it is the source of truth and the next
run's "previous". The run it replaces is kept as previous.json, so re-rendering a run
(`invoke report`) still compares it with the run before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kiln.errors import UserError
from kiln.report.files import write_atomic
from kiln.report.html import render_html
from kiln.report.junit import render_junit
from kiln.report.model import Run
from kiln.report.store import dumps_run, load_run

JSON_NAME = "nightly.json"
JUNIT_NAME = "nightly.xml"
HTML_NAME = "nightly.html"
PREVIOUS_NAME = "previous.json"


@dataclass(frozen=True)
class Written:
    json: Path
    junit: Path
    html: Path
    previous: Path | None  # the report this run was compared with, if it came from a file
    note: str  # why there is no comparison ("" when there is one)


def write_reports(run: Run, report_dir: Path, previous: Run | Path | None = None) -> Written:
    """Write the reports into `report_dir`, compared with `previous` when given, else with
    the run found in report_dir (nightly.json of another run, or previous.json).

    An explicit previous file that cannot be read is the caller's error (UserError); a
    found one that cannot be read only costs the comparison, and the page says why. Every
    input is read and every target checked before the directory is made or a file written.
    """
    explicit = load_run(previous) if isinstance(previous, Path) else None
    _check_targets(report_dir)
    current_file, previous_file = report_dir / JSON_NAME, report_dir / PREVIOUS_NAME
    last, last_note = _last_run(current_file, run)
    prev_run: Run | None
    if isinstance(previous, Run):
        prev_run, source, note = previous, None, ""
    elif isinstance(previous, Path):
        prev_run, source, note = explicit, previous, ""
    elif last is not None:
        prev_run, source, note = last, previous_file, ""
    elif last_note:
        prev_run, source, note = None, None, last_note
    else:
        prev_run, source, note = _load_optional(previous_file)

    # Render all three before writing any: a rendering bug leaves the last reports as they were.
    texts = (render_junit(run), render_html(run, prev_run, previous_note=note), dumps_run(run))
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the report directory {report_dir}: {exc.strerror or exc}",
                        "pass --report-dir a directory you can write") from None
    junit = write_atomic(report_dir / JUNIT_NAME, texts[0])
    html = write_atomic(report_dir / HTML_NAME, texts[1])
    if last is not None:
        write_atomic(previous_file, current_file.read_text(encoding="utf-8"))
    json_path = write_atomic(current_file, texts[2])
    return Written(json_path, junit, html, source, note)


def _check_targets(report_dir: Path) -> None:
    """The report directory, and each report in it, is what it should be (or absent)."""
    if report_dir.exists() and not report_dir.is_dir():
        raise UserError(f"the report directory {report_dir} is not a directory",
                        "pass --report-dir a directory (it is made when missing)")
    for name in (JSON_NAME, JUNIT_NAME, HTML_NAME, PREVIOUS_NAME):
        target = report_dir / name
        if target.exists() and not target.is_file():
            raise UserError(f"{target} is in the way: not a regular file, where a report is written",
                            "move it away, or pass another --report-dir")


def _last_run(current_file: Path, run: Run) -> tuple[Run | None, str]:
    """The other run that nightly.json holds now, or why it cannot be used."""
    if not current_file.exists():
        return None, ""
    try:
        last = load_run(current_file)
    except UserError as exc:
        return None, f"the last report cannot be compared: {exc.message}"
    if last.started == run.started and last.git_revision == run.git_revision:
        return None, ""  # re-rendering this very run
    return last, ""


def _load_optional(path: Path) -> tuple[Run | None, Path | None, str]:
    if not path.exists():
        return None, None, "no previous run to compare with"
    try:
        return load_run(path), path, ""
    except UserError as exc:
        return None, None, f"the previous report cannot be compared: {exc.message}"
