"""One line per event on stderr, without timestamps: journald adds those."""

from __future__ import annotations

import sys

PREFIX = "kiln-haproxy-bridge: "


def one_line(text: str) -> str:
    return " | ".join(part.strip() for part in text.splitlines() if part.strip())


def log(message: str) -> None:
    sys.stderr.write(PREFIX + one_line(message) + "\n")
    sys.stderr.flush()
