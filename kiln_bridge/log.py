"""One line per event on stderr, without timestamps: journald adds those.

Messages may quote what a remote service sent, so a line is made safe here whatever it holds:
line breaks become ' | ', other unprintable characters are escaped, and a line longer than
MAX_LINE is cut (saying how much was left out).
"""

from __future__ import annotations

import sys

PREFIX = "kiln-haproxy-bridge: "
MAX_LINE = 2000


def _printable(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def one_line(text: str) -> str:
    line = _printable(" | ".join(part.strip() for part in text.splitlines() if part.strip()))
    if len(line) > MAX_LINE:
        line = "%s... (%d more characters)" % (line[:MAX_LINE], len(line) - MAX_LINE)
    return line


def log(message: str) -> None:
    sys.stderr.write(PREFIX + one_line(message) + "\n")
    sys.stderr.flush()
