"""nightly.json: a Run saved with a schema name and version, loaded back strictly.

`load_run` refuses anything else with a UserError (not JSON, not a report, another
schema version, fields of the wrong type), so a stale or hand-edited previous report
never turns into a wrong diff. The file itself is read strictly first: a regular file (a
FIFO is opened without blocking and refused) of at most MAX_REPORT_BYTES of UTF-8 JSON, without
NaN or Infinity, numbers of more than MAX_NUMBER_CHARS characters, keys given twice, strings
that are not text (lone surrogates) or nesting deeper than MAX_DEPTH.
"""

from __future__ import annotations

import json
import math
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema

from kiln.errors import UserError
from kiln.report.files import write_atomic
from kiln.report.model import Check, Entry, Run, iso_time

SCHEMA_NAME = "kiln-nightly-report"
SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).with_name("schema.json")
# A nightly of every target with a few hundred checks each is a few MB.
MAX_REPORT_BYTES = 64 << 20
# A report nests 5 levels (entries, an entry, checks, a check).
MAX_DEPTH = 32
# Seconds and byte counts need no more (2**64 has 20 digits).
MAX_NUMBER_CHARS = 32
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
    return run_from_dict(_parse(_read(path), path), str(path))


def _read(path: Path) -> str:
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise UserError(f"cannot read report {path}: {exc.strerror or exc}", FIX) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UserError(f"cannot read report {path}: {_kind(mode)}, not a regular file", FIX)
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_REPORT_BYTES:
            chunk = os.read(fd, min(1 << 20, MAX_REPORT_BYTES + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    except OSError as exc:
        raise UserError(f"cannot read report {path}: {exc.strerror or exc}", FIX) from None
    finally:
        os.close(fd)
    if len(data) > MAX_REPORT_BYTES:
        raise UserError(f"report {path} is larger than {MAX_REPORT_BYTES} bytes", FIX)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"report {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                        f"{exc.start})", FIX) from None


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    return next((name for test, name in kinds if test(mode)), "a special file")


class _Refused(ValueError):
    """A JSON value load_run does not accept; the message says which."""


def _parse(text: str, path: Path) -> Any:
    """JSON, strictly: see the module's docstring."""
    try:
        data = json.loads(text, parse_constant=_constant, parse_int=_int, parse_float=_float,
                          object_pairs_hook=_object)
    except _Refused as exc:
        raise UserError(f"{path} is not JSON kiln accepts: {exc}", FIX) from None
    except RecursionError:
        raise UserError(f"{path} is nested too deeply (more than {MAX_DEPTH} levels)", FIX) from None
    except ValueError as exc:
        raise UserError(f"{path} is not JSON: {exc}", FIX) from None
    problem = _structure_problem(data)
    if problem:
        raise UserError(f"{path}: {problem}", FIX)
    return data


def _constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def _check_length(literal: str) -> None:
    if len(literal) > MAX_NUMBER_CHARS:
        raise _Refused(f"the number {literal[:12]}... has {len(literal)} characters, more than the "
                       f"{MAX_NUMBER_CHARS} accepted")


def _int(literal: str) -> int:
    _check_length(literal)
    return int(literal)


def _float(literal: str) -> float:
    _check_length(literal)
    value = float(literal)
    if not math.isfinite(value):
        raise _Refused(f"the number {literal} is beyond a float's range")
    return value


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"the key {json.dumps(key)} appears twice in one object")
        out[key] = value
    return out


def _structure_problem(data: Any) -> str:
    """Nesting deeper than MAX_DEPTH, or a string that is not text; walked without recursion."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, where, depth = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return f"{where or '(top)'} is not text (it holds a lone surrogate such as \\ud800)"
            continue
        if isinstance(value, dict | list):
            if depth >= MAX_DEPTH:
                return f"nested more than {MAX_DEPTH} levels deep, deeper than a nightly report is"
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                child = f"{where}/{key}" if where else str(key)
                stack.append((item, child, depth + 1))
                if isinstance(key, str):
                    stack.append((key, child, depth + 1))
    return ""
