"""Facts about the machine a nightly ran on, for the report's header."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path


def host_facts() -> dict[str, str]:
    """Where the run happened, for the report's header; the orchestrator adds the accelerator."""
    facts = {
        "hostname": platform.node(),
        "os": _os_release() or platform.platform(),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "cpus": str(os.cpu_count() or "?"),
        "python": platform.python_version(),
    }
    memory = _memory_gib()
    if memory:
        facts["memory"] = memory
    return facts


def _os_release() -> str:
    try:
        text = Path("/etc/os-release").read_text(encoding="utf-8")
    except OSError:
        return ""
    m = re.search(r'^PRETTY_NAME="?([^"\n]*)"?$', text, re.M)
    return m.group(1) if m else ""


def _memory_gib() -> str:
    try:
        text = Path("/proc/meminfo").read_text(encoding="ascii")
    except OSError:
        return ""
    m = re.search(r"^MemTotal:\s+(\d+) kB", text, re.M)
    return f"{int(m.group(1)) / 2**20:.1f} GiB" if m else ""
