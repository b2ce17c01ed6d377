"""Checks from the JUnit XML that pytest writes for the testinfra suites (--junitxml)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from kiln.errors import UserError
from kiln.report.model import Check, worst

# pytest's own messages can hold a whole assertion rewrite; the report needs the gist.
MESSAGE_LIMIT = 2000
# `ssh://node-1`, maybe after other parameters that pytest joined in front with '-'.
_BACKEND_ID = re.compile(r"(?P<before>(?:.*-)?)[a-z+]+://(?P<rest>.+)")  # applied with fullmatch


def checks_from_junit(path: Path, hosts: Sequence[str] = (), phase: str = "") -> list[Check]:
    """The checks in a pytest `--junitxml` file written by the testinfra suites.

    `phase` ("bake", "boot") keeps the same suite run at bake time and at boot apart:
    ids become `bake/test_x.py::test_y`, so each phase is its own group in the matrix.

    testinfra puts the host into the test id (`test_x[ssh://node-1]`); it becomes the
    check's `host` so that one check id names the same check on every node. pytest joins
    further parameters with '-' after the host (`test_pkg[ssh://node-1-docker]`), which is
    ambiguous when host names contain '-': pass the `hosts` the suite ran against and
    those parameters stay in the id (`test_pkg[docker]`).
    """
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise UserError(f"cannot read the JUnit XML report {path}: {exc}",
                        "check that the testinfra run finished; its log is under build/logs/") from None
    prefix = f"{phase}/" if phase else ""
    return [_check(case, hosts, prefix) for case in root.iter("testcase")]


def _check(case: ET.Element, hosts: Sequence[str], prefix: str) -> Check:
    module, cls = _split_classname(case.get("classname", ""))
    name, host = _split_host(case.get("name", ""), hosts)
    check_id = "::".join(p for p in (f"{prefix}{module}.py", cls, name) if p)
    outcomes = [(_OUTCOMES[child.tag], child) for child in case if child.tag in _OUTCOMES]
    result, message = "pass", ""
    if outcomes:
        result = worst(r for r, _ in outcomes) or "pass"
        element = next(el for r, el in outcomes if r == result)
        message = _message(element)
    try:
        seconds = round(float(case.get("time") or 0), 3)
    except ValueError:
        seconds = 0.0
    return Check(check_id, result, host, message, seconds)


_OUTCOMES = {"failure": "fail", "error": "error", "skipped": "skip"}


def _split_classname(classname: str) -> tuple[str, str]:
    """`tests.infra.test_zk.TestX` -> (`test_zk`, `TestX`): the file without its folders."""
    parts = classname.split(".")
    if len(parts) > 1 and parts[-1][:1].isupper():
        return parts[-2], parts[-1]
    return parts[-1], ""


def _split_host(name: str, hosts: Sequence[str]) -> tuple[str, str]:
    m = re.fullmatch(r"(?P<test>[^\[]+)\[(?P<params>.*)\]", name)
    if not m:
        return name, ""
    backend = _BACKEND_ID.fullmatch(m.group("params"))
    if not backend:
        return name, ""
    before, rest = backend.group("before"), backend.group("rest")
    host, after = rest, ""
    for known in sorted(hosts, key=len, reverse=True):
        if rest == known or rest.startswith(known + "-"):
            host, after = known, rest[len(known) + 1:]
            break
    params = "-".join(p for p in (before.rstrip("-"), after) if p)
    return (f"{m.group('test')}[{params}]" if params else m.group("test")), host


def _message(element: ET.Element) -> str:
    text = element.get("message") or (element.text or "").strip()
    return text[:MESSAGE_LIMIT]
