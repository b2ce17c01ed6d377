"""The one way kiln runs external programs (packer, vagrant, qemu, ssh, ...).

Every call streams the program's output (to the terminal unless quiet, and to a log
file when given), records the command line at the top of the log, and turns a failure
into a `StepFailed` naming the step, the command and the log; a step that outlives its
`timeout` is stopped and ends in a `StepTimedOut` saying so. Each program runs in its own
process group so that an interrupt stops it *and* its children (packer's QEMU).

However kiln itself ends, what it started ends too, or is found by the next run:
- each child gets PR_SET_PDEATHSIG (SIGTERM when kiln dies, even by SIGKILL);
- a guard process (`guard_main`) holds the list of kiln's live process groups on a pipe: when
  kiln dies the pipe closes and the guard stops those groups, grandchildren included (QEMU
  under Packer, apt under mmdebstrap), SIGTERM then SIGKILL;
- a run record, <cache>/runs/<pid>-<start>.json, lists the process groups, staging paths and
  SSH masters of this run while they exist. `reap_stale()` (called by `invoke build` and
  `invoke clean`) finds the records of runs that are gone, stops what is left of them, removes
  their staging and reports each in one line. A run is "gone" unless a process with its PID
  *and its start time* runs: a reused PID never protects, nor loses, anything.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TextIO

from kiln.errors import Interrupted, MissingTool, StepFailed
from kiln.fileutil import locked, write_atomic

GRACE_SECONDS = 15.0
LEFTOVER_GRACE = 2.0  # after a program ended, for what it left holding its output open
PR_SET_PDEATHSIG = 1
RECORD_VERSION = 1
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # besides SIGINT (KeyboardInterrupt)

# Process groups started by run() and still alive, so that an interrupt seen by the main
# thread can stop the ones that worker threads (parallel builds) are waiting on.
_LIVE: set[subprocess.Popen[str]] = set()
_LIVE_LOCK = threading.Lock()
# Set by stop_all(refuse=...): run() starts nothing more, and what it stopped fails as stopped.
_REFUSING = ""


class StepTimedOut(StepFailed):
    """A step ran longer than its bound and was stopped (its whole process group)."""

    def __init__(self, step: str, command: list[str], seconds: float, log: Path | None) -> None:
        super().__init__(step, command, -1, log)
        self.seconds = seconds
        where = f"; log: {log}" if log else ""
        self.args = (f"step '{step}' timed out after {duration(seconds)} and was stopped "
                     f"(it looked hung): {shlex.join(command)}{where}",)

    def __str__(self) -> str:
        return str(self.args[0])


class StepStopped(StepFailed):
    """A step stopped (or never started) because the run is stopping (`--fail-fast`, a signal)."""

    def __init__(self, step: str, command: list[str], reason: str, log: Path | None) -> None:
        super().__init__(step, command, -1, log)
        self.reason = reason
        self.args = (f"step '{step}' stopped: {reason}",)

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Result:
    command: list[str]
    returncode: int
    output: str
    seconds: float


def duration(seconds: float) -> str:
    """120 -> '2m', 5400 -> '1h30m', 90 -> '1m30s', 7.5 -> '7.5s'."""
    if seconds < 60:
        return f"{seconds:g}s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{v}{u}" for v, u in ((hours, "h"), (minutes, "m"), (secs, "s")) if v)


def which(tool: str, install_hint: str) -> str:
    """Absolute path of `tool`, or a MissingTool error saying how to install it."""
    path = shutil.which(tool)
    if path is None:
        raise MissingTool(f"'{tool}' is not installed or not on PATH", install_hint)
    return path


# -- processes: identity, groups, dying with kiln ---------------------------------------------------

def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 (state) on, or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return text.rsplit(")", 1)[1].split()


def process_start(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot): with the PID, a process's identity."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def alive(pid: int, start: int | None = None) -> bool:
    """`pid` runs (a zombie does not) and, when `start` is given, is the process that started then."""
    fields = _stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return start is None or int(fields[19]) == start


def group_members(pgid: int) -> list[int]:
    """The live (non-zombie) processes of process group `pgid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
                found.append(int(entry.name))
    return found


def _libc_prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_PRCTL = _libc_prctl()


def _die_with(parent: int) -> Callable[[], None]:
    """preexec_fn: the child gets SIGTERM when the kiln thread that started it dies (however it
    dies); if that happened before prctl took effect, the child ends at once."""
    prctl = _PRCTL

    def preexec() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def stop_group(proc: subprocess.Popen[Any], grace: float = GRACE_SECONDS) -> None:
    """SIGTERM the process group, then SIGKILL what is left after `grace` seconds."""
    if proc.poll() is not None:
        # The leader is gone; members it left behind (still in the group) are stopped all the same.
        # (A group's number is not reused while a member lives; a live process with the leader's
        # number, though, is another process's group now.)
        if not alive(proc.pid):
            _kill_group(proc.pid, grace)
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


def _kill_group(pgid: int, grace: float) -> bool:
    """SIGTERM the group's live members, SIGKILL those left after `grace`; True if any was there."""
    if not group_members(pgid):
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + grace
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not group_members(pgid):
            break
    return True


class _Guard:
    """The guard process of this kiln process (started at the first child)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc: subprocess.Popen[bytes] | None = None

    def tell(self, line: str) -> None:
        with self.lock:
            if (self.proc is None or self.proc.poll() is not None) and line.startswith("+"):
                self.proc = self._start()
            if self.proc is None or self.proc.stdin is None:
                return
            with contextlib.suppress(OSError, ValueError):
                self.proc.stdin.write(f"{line}\n".encode())
                self.proc.stdin.flush()

    def _start(self) -> subprocess.Popen[bytes] | None:
        code = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r}); "
                "from kiln.runner import guard_main; guard_main()")
        try:
            # Its own session: a terminal's signals and a kill of kiln's process group miss it.
            return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
        except OSError:
            return None


_GUARD = _Guard()


def guard_main(stream: IO[bytes] | None = None, grace: float = GRACE_SECONDS) -> None:
    """The guard: `+PGID` / `-PGID` lines on stdin; at end of input (kiln is gone, however it
    ended) every group still listed is stopped."""
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    groups: set[int] = set()
    for raw in stream or sys.stdin.buffer:
        line = raw.decode(errors="replace").strip()
        if line[:1] in "+-" and line[1:].isdigit():
            (groups.add if line[0] == "+" else groups.discard)(int(line[1:]))
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(group_members(g) for g in groups):
        time.sleep(0.2)
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def _watch(proc: subprocess.Popen[Any], step: str) -> None:
    """From now on, `proc`'s group ends with kiln and is in the run record."""
    with _LIVE_LOCK:
        _LIVE.add(proc)
    _GUARD.tell(f"+{proc.pid}")
    _RECORD.add("group", str(proc.pid), start=process_start(proc.pid), step=step)


def _unwatch(proc: subprocess.Popen[Any]) -> None:
    with _LIVE_LOCK:
        _LIVE.discard(proc)
    _GUARD.tell(f"-{proc.pid}")
    _RECORD.remove("group", str(proc.pid))


# -- running ----------------------------------------------------------------------------------------

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
    200 lines so that long builds do not hold their whole log in memory. `timeout`: seconds
    after which the step counts as hung and is stopped (StepTimedOut names it and its log).
    """
    argv = [os.fspath(c) for c in command]
    if _REFUSING:
        raise StepStopped(step, argv, _REFUSING, log)
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
            preexec_fn=_die_with(os.getpid()),
        )
    except FileNotFoundError as exc:
        if log_fh:
            log_fh.close()
        raise MissingTool(f"'{argv[0]}' is not installed or not on PATH") from exc
    timed_out = threading.Event()
    eof = threading.Event()

    def on_exit() -> None:
        # A leftover in the group that holds the output pipe open would keep the read loop (and
        # the step) waiting after the program itself ended: it is stopped after a short grace.
        proc.wait()
        if not eof.wait(LEFTOVER_GRACE) and group_members(proc.pid):
            _kill_group(proc.pid, GRACE_SECONDS)

    def on_timeout() -> None:
        timed_out.set()
        stop_group(proc)

    # A watchdog, because a silent program would block the read loop forever.
    watchdog = threading.Timer(timeout, on_timeout) if timeout is not None else None
    try:
        _watch(proc, step)  # in the try: an interrupt from here on stops the group
        if _REFUSING:  # stop_all(refuse=...) ran while this started: it may not have seen it
            stop_group(proc)
        threading.Thread(target=on_exit, name=f"kiln-exit-{proc.pid}", daemon=True).start()
        if input_text is not None:
            assert proc.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write(input_text)
                proc.stdin.close()
        if watchdog is not None:
            watchdog.daemon = True
            watchdog.start()
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
        eof.set()
        returncode = proc.wait()
    except (KeyboardInterrupt, Interrupted) as exc:
        stop_group(proc)
        raise Interrupted(f"interrupted during step '{step}' ({exc or 'Ctrl-C'}); "
                          "its processes were stopped") from exc
    finally:
        if watchdog is not None:
            watchdog.cancel()
        # Still running (an exception), or the leader ended leaving members: they end here.
        stop_group(proc)
        _unwatch(proc)
        if log_fh:
            if timed_out.is_set():
                log_fh.write(f"kiln: step '{step}' timed out after {duration(timeout or 0)}; "
                             "its processes were stopped\n")
            log_fh.close()
    if timed_out.is_set():
        raise StepTimedOut(step, argv, timeout or 0, log)
    result = Result(argv, returncode, "".join(tail), time.monotonic() - started)
    if _REFUSING and returncode != 0:
        raise StepStopped(step, argv, _REFUSING, log)
    if check and returncode != 0:
        if quiet and not log:
            sys.stderr.write(result.output)
        raise StepFailed(step, argv, returncode, log)
    return result


def start(command: Sequence[str | os.PathLike[str]], *, step: str, log: Path,
          env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a long-running program (a daemon kiln stops itself, e.g. libvirtd) in the background,
    its output appended to `log`, with run()'s guarantees: its own process group, ended with
    kiln, in the run record. Stop it with `finish()`. The calling thread must outlive it."""
    argv = [os.fspath(c) for c in command]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"$ {shlex.join(argv)}\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=out, start_new_session=True,
                                    preexec_fn=_die_with(os.getpid()))
        except FileNotFoundError as exc:
            raise MissingTool(f"'{argv[0]}' is not installed or not on PATH") from exc
    _watch(proc, step)
    return proc


def finish(proc: subprocess.Popen[Any], grace: float = GRACE_SECONDS) -> None:
    """Stop a program start() started (its whole process group) and forget it."""
    try:
        stop_group(proc, grace)
    finally:
        _unwatch(proc)


def stop_all(refuse: str = "") -> None:
    """Stop every process group run() started that is still running (all threads). With
    `refuse` (the reason), run() starts nothing more until allow_new(), and the steps stopped
    here fail as StepStopped."""
    global _REFUSING
    if refuse:
        _REFUSING = refuse
    with _LIVE_LOCK:
        live = list(_LIVE)
    for proc in live:
        stop_group(proc)


def allow_new() -> None:
    global _REFUSING
    _REFUSING = ""


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


def query(command: Sequence[str | os.PathLike[str]], *, step: str, timeout: float,
          cwd: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> str:
    """stdout of a query that must answer (a library's own call, e.g. python-vagrant's): a failure
    raises subprocess.CalledProcessError as check_output does, a hang past `timeout` stops the
    program's process group and raises StepTimedOut naming the step."""
    argv = [os.fspath(c) for c in command]
    proc = subprocess.Popen(argv, cwd=cwd, env=None if env is None else dict(env), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=_die_with(os.getpid()))
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(proc, grace=2.0)
        proc.communicate()
        raise StepTimedOut(step, argv, timeout, None) from None
    except BaseException:
        stop_group(proc, grace=2.0)
        raise
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, argv, out, err)
    return out.decode("utf-8", errors="replace")


def interrupt(signum: int, frame: object) -> None:
    """The handler that turns a stop signal into Interrupted."""
    raise Interrupted(f"received {signal.Signals(signum).name}")


def raise_on_sigterm() -> dict[int, Any]:
    """Make SIGTERM and SIGHUP behave like Ctrl-C so cleanup code runs (finally blocks, runner).
    A signal kiln was started ignoring stays ignored: under `nohup` a hangup must not stop a build.
    Returns the handlers it replaced, by signal."""
    return {sig: signal.signal(sig, interrupt) for sig in STOP_SIGNALS
            if signal.getsignal(sig) != signal.SIG_IGN}


# -- run records --------------------------------------------------------------------------------------

def records_dir() -> Path:
    """Where run records live: <cache>/runs (KILN_CACHE_DIR, shared by checkouts that share it)."""
    from kiln.paths import Paths

    return Paths().cache / "runs"


class _Record:
    """This process's run record: written while it lists anything, removed when it lists nothing."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.directory: Path | None = None
        self.root = ""
        self.pid = 0

    def configure(self, directory: Path, root: Path) -> None:
        with self.lock:
            if self.items and self.directory not in (None, directory):
                self._write([])  # move: no record stays behind in the old place
            self.directory, self.root = directory, str(root)
            if self.items:
                self._write(list(self.items.values()))

    def add(self, kind: str, value: str, **facts: Any) -> None:
        with self.lock:
            self.items[(kind, value)] = {"kind": kind, "value": value, **facts}
            self._write(list(self.items.values()))

    def remove(self, kind: str, value: str) -> None:
        with self.lock:
            if self.items.pop((kind, value), None) is not None:
                self._write(list(self.items.values()))

    def path(self) -> Path:
        if self.directory is None:
            self.directory = records_dir()  # fixed at the first write: removals go where adds went
        return self.directory / f"{os.getpid()}-{process_start(os.getpid())}.json"

    def _write(self, items: list[dict[str, Any]]) -> None:
        path = self.path()
        try:
            with locked(path.parent / ".lock"):
                if not items:
                    path.unlink(missing_ok=True)
                    return
                write_atomic(path, json.dumps({
                    "version": RECORD_VERSION, "pid": os.getpid(), "start": process_start(os.getpid()),
                    "argv": sys.argv, "root": self.root or _default_root(), "started": _STARTED,
                    "items": items}, indent=1) + "\n")
        except OSError:
            pass  # no record (a read-only cache): the guard still ends the groups with kiln


_STARTED = time.time()
_RECORD = _Record()


def _default_root() -> str:
    from kiln.paths import Paths

    return str(Paths().root)


def configure_records(directory: Path, root: Path) -> None:
    """Keep this run's record in `directory` (default: records_dir()) for the tree at `root`."""
    _RECORD.configure(directory, root)


def record(kind: str, value: str | os.PathLike[str], **facts: Any) -> None:
    """Add to the run record: ("path", P) a staging file or directory a killed run leaves for
    the next one to remove; ("ssh", CONFIG) an SSH master to close; ("task", NAME) a run in
    progress (e.g. `invoke build`, so that `invoke clean` waits for it)."""
    _RECORD.add(kind, os.fspath(value), **facts)


def unrecord(kind: str, value: str | os.PathLike[str]) -> None:
    _RECORD.remove(kind, os.fspath(value))


@contextlib.contextmanager
def recorded(kind: str, value: str | os.PathLike[str], **facts: Any) -> Iterator[None]:
    record(kind, value, **facts)
    try:
        yield
    finally:
        unrecord(kind, value)


@dataclass(frozen=True)
class RunInfo:
    pid: int
    start: int | None
    argv: list[str]
    root: str
    started: float
    items: list[dict[str, Any]]
    file: Path

    @property
    def alive(self) -> bool:
        return alive(self.pid, self.start)

    def describe(self) -> str:
        words = list(self.argv[:6])
        if words:  # `python -m invoke` has .../invoke/__main__.py as argv[0]
            first = Path(words[0])
            words[0] = first.parent.name if first.name == "__main__.py" else first.name
        command = " ".join(words)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started)) if self.started else "?"
        return f"kiln run {self.pid} ({command or '?'}, started {when})"


def current_records_dir() -> Path:
    """Where this process keeps its record (configure_records, else records_dir())."""
    return _RECORD.directory or records_dir()


def runs(directory: Path | None = None) -> list[RunInfo]:
    """Every run record in `directory` (default: current_records_dir()), readable ones only."""
    directory = directory or current_records_dir()
    found = []
    for file in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
            found.append(RunInfo(int(data["pid"]), data.get("start"), list(data.get("argv", [])),
                                 str(data.get("root", "")), float(data.get("started", 0)),
                                 list(data.get("items", [])), file))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def live_runs(root: Path, directory: Path | None = None) -> list[RunInfo]:
    """Other kiln runs, still running, that work in the tree at `root`."""
    me = (os.getpid(), process_start(os.getpid()))
    return [r for r in runs(directory) if r.alive and (r.pid, r.start) != me
            and Path(r.root).resolve() == root.resolve()]


def reap_stale(directory: Path | None = None, *, grace: float = 10.0) -> list[str]:
    """Stop and remove what runs that are gone (killed: SIGKILL, power loss) left: their process
    groups, their staging paths, their SSH masters. One line per thing found. What a run still
    running owns is never touched, nor a path another live run has recorded since."""
    directory = directory or current_records_dir()
    if not directory.is_dir():
        return []
    lines: list[str] = []
    with locked(directory / ".lock"):
        found = runs(directory)
        live = [r for r in found if r.alive or r.pid == os.getpid()]
        claimed = {(i.get("kind"), i.get("value")) for r in live for i in r.items}
        for dead in (r for r in found if r not in live):
            who = dead.describe()
            # Processes first (they may still write into the paths), then masters, then paths.
            order = {"group": 0, "ssh": 1, "path": 2}
            for item in sorted(dead.items, key=lambda i: order.get(str(i.get("kind")), 3)):
                if (item.get("kind"), item.get("value")) in claimed:
                    continue
                line = _reap_item(item, grace)
                if line:
                    lines.append(f"{line}, left by {who}")
            dead.file.unlink(missing_ok=True)
    return lines


def _reap_item(item: dict[str, Any], grace: float) -> str:
    kind, value = item.get("kind"), str(item.get("value", ""))
    if kind == "group" and value.isdigit():
        pgid = int(value)
        leader = process_start(pgid)
        if leader is not None and item.get("start") is not None and leader != item["start"]:
            return ""  # the group's number now belongs to another process: not ours
        if _kill_group(pgid, grace):
            return f"stopped process group {pgid} ({item.get('step', '?')})"
        return ""
    if kind == "ssh":
        config = Path(value)
        if config.is_file() and capture(["ssh", "-F", value, "-O", "check", item.get("host", "build-vm")],
                                         merge_stderr=True, timeout=15) is not None:
            capture(["ssh", "-F", value, "-O", "exit", item.get("host", "build-vm")], timeout=15)
            return f"closed the SSH master connection of {config}"
        return ""
    if kind == "path":
        path = Path(value)
        if not (path.exists() or path.is_symlink()):
            return ""
        if _holds_mount(path):
            return f"left {path} in place: something is mounted under it"
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        return f"removed {path}"
    return ""


def _holds_mount(path: Path) -> bool:
    prefix = str(path.resolve())
    try:
        lines = Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return False
    points = [line.split()[4].replace("\\040", " ") for line in lines if len(line.split()) > 4]
    return any(p == prefix or p.startswith(prefix + "/") for p in points)
