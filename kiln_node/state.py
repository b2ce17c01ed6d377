"""What the last apply did: /var/lib/kiln-node/applied.json (mode 0600: the spec may hold secrets).

    {"format": 1, "spec": {...}, "files": {"/etc/mesos/zk": "<sha256>", ...}, "units": ["zookeeper", ...]}

`files` lists what kiln-node wrote, so a file the new spec no longer needs can be removed;
`units` lists units enabled and started successfully, so the next apply knows which to start
(new or previously failed), which to restart, and which to stop.

A state file that cannot be read back exactly (not UTF-8, not JSON, another format, fields of
the wrong type, a spec that does not pass the checks it passed when applied) is a StateError:
guessing would start or stop the wrong services and lose track of the files kiln-node owns, and
overwriting it would lose the record. Nothing is written until someone moves it aside.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, List

from kiln_node import files
from kiln_node import spec as specmod

PATH = "/var/lib/kiln-node/applied.json"
FORMAT = 1
MAX_BYTES = 4 << 20
MAX_DEPTH = 24  # the spec's 4 levels under "spec", and room to spare
_SHA256 = re.compile(r"[0-9a-f]{64}")


class StateError(files.FileProblem):
    """The state file is there but unusable; the message names it and says what to do."""


def empty() -> Dict[str, Any]:
    return {"format": FORMAT, "spec": None, "files": {}, "units": []}


def load(root: str) -> Dict[str, Any]:
    """The last state, or an empty one on the first apply. Raises StateError (or files.FileProblem
    for a symlink out of the root) when the file is there but unusable."""
    real = files.under(root, PATH)
    try:
        text = files.read_text(real, MAX_BYTES)
    except files.Unreadable as exc:
        raise _corrupt(real, str(exc)) from None
    if text is None:
        return empty()
    try:
        data = files.loads_json(text, MAX_DEPTH, "this record")
    except files.BadJSON as exc:
        raise _corrupt(real, str(exc)) from None
    problem = _problem(data)
    if problem:
        raise _corrupt(real, problem)
    return {
        "format": FORMAT,
        "spec": data.get("spec"),
        "files": dict(data.get("files") or {}),
        "units": list(data.get("units") or []),
    }


def _corrupt(real: str, why: str) -> StateError:
    return StateError("{}: the record of the last apply is unusable ({}); kiln-node writes nothing. Move "
                      "it aside (the next apply then counts as the first: it writes every file and "
                      "starts every unit of the role) and apply the node spec again".format(real, why))


def _problem(data: Any) -> str:
    """What is wrong with the state's structure, or ""."""
    if not isinstance(data, dict):
        return "not a JSON object"
    if data.get("format") != FORMAT:
        return "format {} where this kiln-node reads format {}".format(
            json.dumps(data.get("format")), FORMAT)
    spec, owned, units = data.get("spec"), data.get("files", {}), data.get("units", [])
    if spec is not None:
        if not isinstance(spec, dict):
            return "\"spec\" is not an object"
        problems, _ = specmod.check(spec)
        if problems:
            return "its node spec fails the checks: {}".format(problems[0])
    if not isinstance(owned, dict):
        return "\"files\" is not an object"
    for path, digest in owned.items():
        if not (path.startswith("/") and os.path.normpath(path) == path):
            return "\"files\" names {}, not an absolute normalized path".format(json.dumps(path))
        if not (isinstance(digest, str) and _SHA256.fullmatch(digest)):
            return "\"files\".{} is not a sha256".format(json.dumps(path))
    if not (isinstance(units, list) and all(isinstance(u, str) for u in units)):
        return "\"units\" is not a list of unit names"
    return ""


def dump(spec: Dict[str, Any], written: Dict[str, str], units: List[str]) -> str:
    data = {"format": FORMAT, "spec": spec, "files": dict(sorted(written.items())), "units": units}
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def save(root: str, text: str) -> bool:
    """Write the state when it differs; True if it was written."""
    real = files.under(root, PATH)
    if not files.differs(real, text, 0o600):
        return False
    files.write_atomic(real, text, 0o600)
    return True
