"""Durations, sizes and ratios as a person reads them (the JSON keeps raw numbers)."""

from __future__ import annotations

import math


def human_seconds(seconds: float) -> str:
    if round(seconds, 1) < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def human_bytes(size: float) -> str:
    if size < 1024:
        return f"{int(size)} B"
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024:
            return f"{size:.1f} {unit}"
    return f"{size / 1024:.1f} TiB"


def human_ratio(ratio: float) -> str:
    """+0.25 -> '+25%'; a previous value of 0 has no ratio."""
    if math.isinf(ratio):
        return "new"
    return f"{ratio * 100:+.0f}%".replace("-", "\u2212")
