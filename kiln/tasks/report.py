"""`invoke report`: render nightly.xml and nightly.html again from a nightly.json.

Kept out of tasks.py so the report side can be wired in with one import; it does no
building or booting, so it is quick and safe to run on any machine.
"""

from __future__ import annotations

from pathlib import Path

from kiln.paths import Paths
from kiln.tasks.cli import handle_errors, say, task


@task(help={
    "from": "The run's JSON report (default: build/reports/nightly.json).",
    "previous": "Compare with this JSON report instead of the run found in the report dir.",
    "report_dir": "Where to write nightly.{json,xml,html} (default: build/reports).",
})
@handle_errors
def report(c, from_="", previous="", report_dir=""):
    """Render the nightly report (JUnit XML, HTML with changes since the previous run) from JSON."""
    from kiln.report import load_run, write_reports

    paths = Paths()
    run = load_run(Path(from_) if from_ else paths.reports / "nightly.json")
    written = write_reports(run, Path(report_dir) if report_dir else paths.reports,
                            Path(previous) if previous else None)
    say(f"verdict: {run.verdict} ({', '.join(f'{n} {r}' for r, n in run.counts().items() if n)})")
    say(f"compared with: {written.previous or written.note}")
    for path in (written.json, written.junit, written.html):
        say(f"wrote {path}")
