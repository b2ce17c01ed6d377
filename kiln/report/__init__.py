"""Nightly image test reports: one run's results as JSON, JUnit XML and an HTML page.

`model` holds the data, `checks` reads testinfra's JUnit XML into checks, `collect` a
build's kiln-metadata.json, `store` the JSON file, `diff` compares a run with the
previous one, `junit` and `html` render it, `writer` puts the three files in place.
The orchestrator (`invoke nightly`) builds a `Run` and calls `write_reports`.
"""

from kiln.report.checks import checks_from_junit
from kiln.report.collect import BuildFacts, build_facts
from kiln.report.facts import host_facts
from kiln.report.model import Check, Entry, Run, entry_name
from kiln.report.store import load_run, save_run
from kiln.report.writer import Written, write_reports

__all__ = ["BuildFacts", "Check", "Entry", "Run", "Written", "build_facts", "checks_from_junit", "entry_name",
           "host_facts", "load_run", "save_run", "write_reports"]
