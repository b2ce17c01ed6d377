"""The one way kiln runs external programs (packer, vagrant, qemu-img, ssh, ...).

Every call streams the program's output (to the terminal unless quiet, and to a log
file when given), records the command line at the top of the log, and turns a failure
into a `StepFailed` naming the step, the command and the log. Each program runs in its
own process group so that an interrupt stops it *and* its children (packer's QEMU).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from kiln.errors import Interrupted, MissingTool, StepFailed

GRACE_SECONDS = 15.0

# Process groups started by run() and still alive, so that an interrupt seen by the main
# thread can stop the ones that worker threads (parallel builds) are waiting on.
_LIVE: set[subprocess.Popen[str]] = set()
_LIVE_LOCK = threading.Lock()


@dataclass(frozen=True)
class Result:
    command: list[str]
    returncode: int
    output: str
    seconds: float


def which(tool: str, install_hint: str) -> str:
    """Absolute path of `tool`, or a MissingTool error saying how to install it."""
    path = shutil.which(tool)
    if path is None:
        raise MissingTool(f"'{tool}' is not installed or not on PATH", install_hint)
    return path


def stop_group(proc: subprocess.Popen[Any], grace: float = GRACE_SECONDS) -> None:
    """SIGTERM the process group, then SIGKILL what is left after `grace` seconds."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # Children that outlived the leader (still in the group) get the same end.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def run(
    command: Sequence[str | os.PathLike[str]],
    *,
    step: str,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    quiet: bool = False,
    check: bool = True,
    timeout: float | None = None,
    on_line: Callable[[str], None] | None = None,
    echo: TextIO | None = None,
    input_text: str | None = None,
) -> Result:
    """Run `command`, streaming its merged stdout/stderr; raise StepFailed on failure.

    `env` is added to the current environment. `on_line` sees every output line
    (for progress parsing). Output kept in `Result.output` is capped to the last
    200 lines so that long builds do not hold their whole log in memory.
    """
    argv = [os.fspath(c) for c in command]
    full_env = {**os.environ, **(env or {})}
    out = echo or sys.stdout
    started = time.monotonic()
    tail: list[str] = []
    log_fh = None
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log_fh = log.open("a", encoding="utf-8")
        log_fh.write(f"$ {shlex.join(argv)}\n")
        log_fh.flush()
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=full_env,
            stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        if log_fh:
            log_fh.close()
        raise MissingTool(f"'{argv[0]}' is not installed or not on PATH") from exc
    if input_text is not None:
        assert proc.stdin is not None
        proc.stdin.write(input_text)
        proc.stdin.close()
    with _LIVE_LOCK:
        _LIVE.add(proc)
    timed_out = threading.Event()

    def on_timeout() -> None:
        timed_out.set()
        stop_group(proc)

    # A watchdog, because a silent program would block the read loop forever.
    watchdog = threading.Timer(timeout, on_timeout) if timeout is not None else None
    if watchdog is not None:
        watchdog.daemon = True
        watchdog.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if log_fh:
                log_fh.write(line)
                log_fh.flush()
            if not quiet:
                out.write(line)
                out.flush()
            if on_line:
                on_line(line.rstrip("\n"))
            tail.append(line)
            if len(tail) > 200:
                del tail[:-200]
        returncode = proc.wait()
    except (KeyboardInterrupt, Interrupted) as exc:
        stop_group(proc)
        raise Interrupted(f"interrupted during step '{step}'; its processes were stopped") from exc
    finally:
        if watchdog is not None:
            watchdog.cancel()
        if proc.poll() is None:
            stop_group(proc)
        with _LIVE_LOCK:
            _LIVE.discard(proc)
        if log_fh:
            if timed_out.is_set():
                log_fh.write(f"kiln: step '{step}' timed out after {timeout}s; stopped\n")
            log_fh.close()
    if timed_out.is_set():
        raise StepFailed(step, argv, -1, log)
    result = Result(argv, returncode, "".join(tail), time.monotonic() - started)
    if check and returncode != 0:
        if quiet and not log:
            sys.stderr.write(result.output)
        raise StepFailed(step, argv, returncode, log)
    return result


def stop_all() -> None:
    """Stop every process group run() started that is still running (all threads)."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for proc in live:
        stop_group(proc)


def capture(command: Sequence[str | os.PathLike[str]], *, timeout: float = 20.0,
            merge_stderr: bool = False) -> str | None:
    """stdout (and stderr if asked) of a short query command, or None if it fails."""
    try:
        done = subprocess.run(
            [os.fspath(c) for c in command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.DEVNULL,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def raise_on_sigterm() -> None:
    """Make SIGTERM behave like Ctrl-C so cleanup code runs (finally blocks, runner)."""

    def handler(signum: int, frame: object) -> None:
        raise Interrupted(f"received signal {signum}")

    signal.signal(signal.SIGTERM, handler)
