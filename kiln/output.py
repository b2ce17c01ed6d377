"""What kiln prints for the user: progress lines on stdout, warnings on stderr."""

from __future__ import annotations

import sys
import threading

_lock = threading.Lock()


def say(message: str) -> None:
    """One line of progress; whole lines even when worker threads print at once."""
    with _lock:
        print(message, flush=True)


def warn(message: str) -> None:
    with _lock:
        print(f"warning: {message}", file=sys.stderr, flush=True)
