"""nightly.json: a Run saved with a schema name and version, loaded back strictly.

`load_run` refuses anything else with a UserError (not JSON, not a report, another
schema version, fields of the wrong type), so a stale or hand-edited previous report
never turns into a wrong diff. The file is read strictly first (kiln/strictjson.py).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema

from kiln import strictjson
from kiln.errors import UserError
from kiln.report.files import write_atomic
from kiln.report.model import Check, Entry, Run, iso_time
from kiln.strictjson import Limits, Refused

SCHEMA_NAME = "kiln-nightly-report"
SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).with_name("schema.json")
# A nightly of every target with a few hundred checks each is a few MB; a report nests 5 levels
# (entries, an entry, checks, a check); seconds and byte counts need no more digits (2**64 has 20).
MAX_REPORT_BYTES = 64 << 20
STRICT = Limits(max_bytes=MAX_REPORT_BYTES, max_depth=32, max_number_chars=32, what="a nightly report",
                nests=5)
# jsonschema quotes the offending value in its messages; a long one is cut.
MAX_PROBLEM_CHARS = 200
FIX = "pass the nightly.json that `invoke nightly` wrote"


# --- JSON ------------------------------------------------------------------------------------

def run_to_dict(run: Run) -> dict[str, Any]:
    return {
        "schema": SCHEMA_NAME,
        "schema_version": SCHEMA_VERSION,
        "started": iso_time(run.started),
        "finished": iso_time(run.finished),
        "seconds": run.seconds,
        "verdict": run.verdict,
        "kiln_version": run.kiln_version,
        "git_revision": run.git_revision,
        "host": dict(run.host),
        "tools": dict(run.tools),
        "entries": [_entry_to_dict(e) for e in run.entries],
    }


def _entry_to_dict(entry: Entry) -> dict[str, Any]:
    # `result` and `reason` are derived; they are stored for readers other than kiln.
    return {
        "name": entry.name,
        "target": entry.target,
        "builder": entry.builder,
        "shape": entry.shape,
        "result": entry.result,
        "reason": entry.reason,
        "not_run": entry.not_run,
        "error": entry.error,
        "stages_seconds": dict(entry.stages),
        "stage_failures": dict(entry.stage_failures),
        "artifacts_bytes": dict(entry.artifacts),
        "components": dict(entry.components),
        "checks": [{"id": c.id, "host": c.host, "result": c.result, "message": c.message,
                    "seconds": c.seconds} for c in entry.checks],
    }


def run_from_dict(data: Any, source: str = "report") -> Run:
    _validate(data, source)
    entries = [Entry(
        name=e["name"], target=e["target"], builder=e["builder"], shape=e["shape"],
        not_run=e["not_run"], error=e["error"], stages=dict(e["stages_seconds"]),
        stage_failures=dict(e["stage_failures"]), artifacts=dict(e["artifacts_bytes"]),
        components=dict(e["components"]),
        checks=[Check(c["id"], c["result"], c["host"], c["message"], c["seconds"]) for c in e["checks"]],
    ) for e in data["entries"]]
    for raw, entry in zip(data["entries"], entries, strict=True):
        if raw["result"] != entry.result:
            raise UserError(f"{source}: entry {entry.name!r} says {raw['result']!r} but its stages "
                            f"and checks make it {entry.result!r}; the file was edited or is corrupt")
    return Run(started=_parse_time(data["started"], source), finished=_parse_time(data["finished"], source),
               host=dict(data["host"]), tools=dict(data["tools"]), kiln_version=data["kiln_version"],
               git_revision=data["git_revision"], entries=entries)


def _validate(data: Any, source: str) -> None:
    if not isinstance(data, dict) or data.get("schema") != SCHEMA_NAME:
        raise UserError(f"{source} is not a kiln nightly report (no \"schema\": \"{SCHEMA_NAME}\")",
                        "pass the nightly.json that `invoke nightly` wrote")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UserError(
            f"{source} has report schema version {version!r}; this kiln reads version {SCHEMA_VERSION}",
            "re-render it with the kiln that wrote it, or start a new history without --previous")
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        problems = [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {_cut(e.message)}"
                    for e in errors[:20]]
        listed = problems[0] if len(problems) == 1 else "\n" + "\n".join(f"  - {p}" for p in problems)
        if len(errors) > len(problems):  # a flood is bounded: the first 20, then the count
            listed += f"\n  ... and {len(errors) - len(problems)} more"
        raise UserError(f"{source} is not a valid kiln nightly report: {listed}", FIX)


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_PROBLEM_CHARS else text[:MAX_PROBLEM_CHARS - 3] + "..."


def _parse_time(text: str, source: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"{source}: {text!r} is not an ISO 8601 time", FIX) from None
    if moment.tzinfo is None:
        raise UserError(f"{source}: {text!r} has no timezone", FIX)
    try:
        moment.astimezone(UTC)
    except OverflowError:
        raise UserError(f"{source}: {text!r} is out of range in UTC", FIX) from None
    return moment


def dumps_run(run: Run) -> str:
    return json.dumps(run_to_dict(run), indent=2, ensure_ascii=False) + "\n"


def save_run(run: Run, path: Path) -> Path:
    return write_atomic(path, dumps_run(run))


def load_run(path: Path) -> Run:
    """The Run a nightly.json holds. Raises UserError naming the file for anything else."""
    return run_from_dict(_parse(path), str(path))


def _parse(path: Path) -> Any:
    try:
        return strictjson.loads(strictjson.read_text(path, STRICT), STRICT)
    except Refused as exc:
        raise UserError(f"report {path}: {exc}", FIX) from None
    except ValueError as exc:
        raise UserError(f"{path} is not JSON: {exc}", FIX) from None
