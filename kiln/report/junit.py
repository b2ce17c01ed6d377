"""One JUnit XML file for the whole nightly, the form CI systems read.

A testsuite per entry, a testcase per check (on each host) and per failed stage. An
entry that did not run is one skipped testcase saying why, and an entry kiln could not
finish is an error: CI must never count either as passed.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from kiln.report.model import Check, Entry, Run, iso_time

_CHILD = {"fail": "failure", "error": "error", "skip": "skipped"}


def render_junit(run: Run) -> str:
    root = ET.Element("testsuites", name="kiln nightly")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for entry in run.entries:
        suite = _suite(entry, run)
        for key in totals:
            totals[key] += int(suite.get(key, "0"))
        root.append(suite)
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", f"{run.seconds:.1f}")
    root.set("timestamp", iso_time(run.started))
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _suite(entry: Entry, run: Run) -> ET.Element:
    suite = ET.Element("testsuite", name=entry.name, timestamp=iso_time(run.started),
                       hostname=run.host.get("hostname", ""), time=f"{entry.seconds:.1f}")
    suite.append(_properties(entry))
    cases: list[ET.Element] = []
    if entry.result == "not-run":
        cases.append(_case(entry.name, "not run", 0.0, "skip", f"not run: {entry.not_run}"))
    elif entry.result == "error":
        cases.append(_case(entry.name, "kiln", entry.seconds, "error", entry.reason))
    for stage, message in entry.stage_failures.items():
        cases.append(_case(f"{entry.name}.stages", stage, entry.stages.get(stage, 0.0), "fail",
                           f"stage {stage!r} failed: {message}"))
    cases.extend(_check_case(entry, check) for check in entry.checks)
    suite.extend(cases)
    suite.set("tests", str(len(cases)))
    for key, tag in (("failures", "failure"), ("errors", "error"), ("skipped", "skipped")):
        suite.set(key, str(sum(1 for c in cases if c.find(tag) is not None)))
    return suite


def _properties(entry: Entry) -> ET.Element:
    props = ET.Element("properties")
    pairs = [("result", entry.result), ("reason", entry.reason), ("target", entry.target),
             ("builder", entry.builder), ("shape", entry.shape)]
    pairs += [(f"stage.{k}.seconds", f"{v:.1f}") for k, v in entry.stages.items()]
    pairs += [(f"artifact.{k}.bytes", str(v)) for k, v in sorted(entry.artifacts.items())]
    pairs += [(f"component.{k}", v) for k, v in sorted(entry.components.items())]
    for name, value in pairs:
        ET.SubElement(props, "property", name=name, value=value)
    return props


def _check_case(entry: Entry, check: Check) -> ET.Element:
    module, _, rest = check.id.partition("::")
    cls, _, name = rest.rpartition("::")
    # bake/test_x.py -> bake.test_x: CI systems split class names on dots only.
    classname = ".".join(p for p in (entry.name, module.removesuffix(".py").replace("/", "."), cls) if p)
    if check.host:
        name = f"{name} @ {check.host}"
    return _case(classname, name, check.seconds, check.result, check.message)


def _case(classname: str, name: str, seconds: float, result: str, message: str) -> ET.Element:
    case = ET.Element("testcase", classname=classname, name=name, time=f"{seconds:.3f}")
    tag = _CHILD.get(result)
    if tag:
        child = ET.SubElement(case, tag, message=message.splitlines()[0] if message else result)
        if tag != "skipped" and message:
            child.text = message
    return case
