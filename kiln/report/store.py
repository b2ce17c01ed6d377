"""nightly.json: a Run saved with a schema name and version, loaded back strictly.

`load_run` refuses anything else with a UserError (not JSON, not a report, another
schema version, fields of the wrong type), so a stale or hand-edited previous report
never turns into a wrong diff.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema

from kiln.errors import UserError
from kiln.report.files import write_atomic
from kiln.report.model import Check, Entry, Run, iso_time

SCHEMA_NAME = "kiln-nightly-report"
SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).with_name("schema.json")


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
        lines = "\n".join(f"  - {'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
                          for e in errors[:20])
        raise UserError(f"{source} is not a valid kiln nightly report:\n{lines}")


def _parse_time(text: str, source: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"{source}: {text!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise UserError(f"{source}: {text!r} has no timezone")
    return moment


def dumps_run(run: Run) -> str:
    return json.dumps(run_to_dict(run), indent=2, ensure_ascii=False) + "\n"


def save_run(run: Run, path: Path) -> Path:
    return write_atomic(path, dumps_run(run))


def load_run(path: Path) -> Run:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read report {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not JSON: {exc}", "pass the nightly.json that `invoke nightly` wrote") \
            from None
    return run_from_dict(data, str(path))
