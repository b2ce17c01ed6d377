"""What both bridge tests (Marathon stand-in and real Mesos, each with a real HAProxy on
127.0.0.1) need: waiting for a condition, stopping a process by PID, asking whether a process
handles a signal yet, and one GET through HAProxy."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

LOCAL = "127.0.0.1"


def wait_for(what: str, check: Callable[[], Any], timeout: float = 15.0,
             detail: Callable[[], str] = str) -> Any:
    """The first true answer of `check`; fails the test naming `what` (and `detail()`) after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out after {timeout:g}s waiting for {what}{detail()}"
        time.sleep(0.05)


def stop_pid(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def catches(proc: subprocess.Popen[Any], signum: int) -> bool:
    """Whether the running process has a handler for `signum` (SigCgt in /proc/PID/status)."""
    assert proc.poll() is None, f"process {proc.pid} exited with {proc.returncode}"
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signum - 1)))
    return False


def get(port: int, path: str = "/", host: str | None = None) -> tuple[int, str]:
    """One GET through HAProxy: (status, body without surrounding white space); (0, reason)
    when the connection fails."""
    request = urllib.request.Request(f"http://{LOCAL}:{port}{path}")
    if host:
        request.add_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=3) as resp:
            return resp.status, resp.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace").strip()
    except OSError as exc:
        return 0, str(exc)
