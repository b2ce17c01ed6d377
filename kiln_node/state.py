"""What the last apply did: /var/lib/kiln-node/applied.json (mode 0600: the spec may hold secrets).

    {"format": 1, "spec": {...}, "files": {"/etc/mesos/zk": "<sha256>", ...}, "units": ["zookeeper", ...]}

`files` lists what kiln-node wrote, so a file the new spec no longer needs can be removed;
`units` lists units enabled and started successfully, so the next apply knows which to start
(new or previously failed), which to restart, and which to stop.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List

from kiln_node import files

PATH = "/var/lib/kiln-node/applied.json"
FORMAT = 1


def empty() -> Dict[str, Any]:
    return {"format": FORMAT, "spec": None, "files": {}, "units": []}


def load(root: str) -> Dict[str, Any]:
    """The last state, or an empty one (first apply, or a state file that is not ours)."""
    text = files.read(files.under(root, PATH))
    if text is None:
        return empty()
    try:
        data = json.loads(text)
    except ValueError:
        return empty()
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return empty()
    return {
        "format": FORMAT,
        "spec": data.get("spec"),
        "files": dict(data.get("files") or {}),
        "units": list(data.get("units") or []),
    }


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
