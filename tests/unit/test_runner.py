"""The command runner: streaming, logs, failures naming step/command/log, group kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kiln.errors import Interrupted, MissingTool, StepFailed
from kiln.paths import REPO_ROOT
from kiln.runner import (
    StepStopped,
    StepTimedOut,
    allow_new,
    capture,
    configure_records,
    current_records_dir,
    duration,
    live_runs,
    process_start,
    reap_stale,
    recorded,
    run,
    runs,
    stop_all,
    which,
)


def test_output_is_streamed_logged_and_returned(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "step.log"
    seen: list[str] = []
    result = run(["sh", "-c", "echo one; echo two >&2"], step="demo", log=log, quiet=True,
                 on_line=seen.append)
    assert result.returncode == 0
    assert seen == ["one", "two"]
    text = log.read_text()
    assert text.startswith("$ sh -c 'echo one; echo two >&2'\n")
    assert "one\ntwo\n" in text


def test_failure_names_step_command_and_log(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    with pytest.raises(StepFailed) as info:
        run(["sh", "-c", "exit 3"], step="packer build demo", log=log, quiet=True)
    msg = str(info.value)
    assert "step 'packer build demo' failed (exit 3): sh -c exit 3" in msg
    assert str(log) in msg


def test_missing_program_is_a_user_error() -> None:
    with pytest.raises(MissingTool) as info:
        run(["kiln-no-such-program"], step="x", quiet=True)
    assert info.value.exit_code == 2
    with pytest.raises(MissingTool, match="apt-get install nothing"):
        which("kiln-no-such-program", "apt-get install nothing")
    assert capture(["kiln-no-such-program"]) is None


def _alive(pid: int) -> bool:
    """Running, not a zombie: orphans are not reaped here (no init doing it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    # The shell starts a grandchild (like packer starts qemu) and waits on it.
    script = f"sleep 300 & echo $! > {pidfile}; echo started; wait"
    with pytest.raises(StepFailed):
        run(["sh", "-c", script], step="slow", quiet=True, timeout=1.5)
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_interrupt_from_another_thread_stops_running_groups(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            run(["sh", "-c", f"sleep 300 & echo $! > {pidfile}; wait"], step="w", quiet=True)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    deadline = time.monotonic() + 5
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    stop_all()
    t.join(timeout=20)
    assert not t.is_alive()
    assert errors and isinstance(errors[0], StepFailed)
    assert not _alive(int(pidfile.read_text()))


def _stoppable_step(pidfile: Path,
                    setup: str = "from kiln.runner import raise_on_sigterm; raise_on_sigterm()",
                    guard: str = "contextlib.nullcontext()") -> str:
    """A Python program that runs one step (a shell leaving a `sleep` whose pid goes to `pidfile`)
    and exits 130 on Interrupted: with kiln's task CLI signal handling, or with `setup` and inside
    `guard` (an expression giving a context manager) instead."""
    return (
        f"import contextlib, sys; {setup}\n"
        "from kiln.runner import run\nfrom kiln.errors import Interrupted\n"
        f"try:\n    with {guard}:\n"
        f"        run(['sh', '-c', 'sleep 300 & echo $! > {pidfile}; wait'], step='s', quiet=True)\n"
        "except Interrupted as e:\n    print('INTERRUPTED', e); sys.exit(130)\n"
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_a_stop_signal_becomes_interrupted_and_stops_children(tmp_path: Path, sig: signal.Signals) -> None:
    pidfile = tmp_path / "child.pid"
    code = _stoppable_step(pidfile)
    # Ctrl-C as a terminal delivers it: a run started in the background inherits SIGINT ignored.
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for(pidfile)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "INTERRUPTED" in out and "interrupted during step 's'" in out
    assert not _alive(int(pidfile.read_text()))
    assert Interrupted.exit_code == 130


@pytest.mark.parametrize("entry", ["raise_on_sigterm", "base image build"])
def test_under_nohup_a_hangup_is_ignored_and_sigterm_still_cleans_up(tmp_path: Path, entry: str) -> None:
    """Started with SIGHUP ignored (`nohup invoke build &`): a hangup does not stop the step, and
    SIGTERM still becomes Interrupted, so the step's processes are stopped. Both places that turn
    signals into Interrupted: the task CLI's and the base image build's own (kiln.image.base)."""
    pidfile = tmp_path / "child.pid"
    code = (_stoppable_step(pidfile) if entry == "raise_on_sigterm" else
            _stoppable_step(pidfile, "from kiln.image.base import _sigterm_raises", "_sigterm_raises()"))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    child = int(_wait_for(pidfile))
    proc.send_signal(signal.SIGHUP)
    time.sleep(1)
    assert proc.poll() is None and _alive(child), "a hangup stopped a run started under nohup"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, out
    assert "interrupted during step 's' (received SIGTERM)" in out
    assert not _alive(child)


def _wait_for(path: Path, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return path.read_text().strip()


def _gone(pids: list[int], timeout: float) -> float:
    """Seconds until none of `pids` runs (AssertionError after `timeout`)."""
    started = time.monotonic()
    while any(_alive(p) for p in pids):
        assert time.monotonic() - started < timeout, f"still running: {[p for p in pids if _alive(p)]}"
        time.sleep(0.05)
    return time.monotonic() - started


def test_a_hung_step_ends_naming_the_step_its_bound_and_its_log(tmp_path: Path) -> None:
    log = tmp_path / "hung.log"
    with pytest.raises(StepTimedOut) as info:
        run(["sleep", "300"], step="packer build demo", log=log, quiet=True, timeout=1.5)
    message = str(info.value)
    assert message.startswith("step 'packer build demo' timed out after 1.5s and was stopped")
    assert f"log: {log}" in message
    assert isinstance(info.value, StepFailed) and info.value.exit_code == 1
    assert "kiln: step 'packer build demo' timed out after 1.5s" in log.read_text()


def test_what_a_step_leaves_in_its_process_group_is_stopped(tmp_path: Path) -> None:
    pidfile = tmp_path / "left.pid"
    run(["sh", "-c", f"sleep 300 & echo $! > {pidfile}"], step="leaves a child", quiet=True, timeout=30)
    assert not _alive(int(pidfile.read_text()))


def test_durations_read_like_packers() -> None:
    assert [duration(s) for s in (1.5, 59, 60, 90, 3600, 5400, 14400)] == \
        ["1.5s", "59s", "1m", "1m30s", "1h", "1h30m", "4h"]


KILN = """
import sys
from kiln import runner
runner.configure_records(__import__("pathlib").Path(sys.argv[1]), __import__("pathlib").Path(sys.argv[2]))
runner.record("path", sys.argv[3])
runner.run(["sh", "-c", f"sleep 300 & echo $! > {sys.argv[4]}; echo $$ > {sys.argv[4]}.sh; wait"],
           step="a long step", quiet=True, timeout=600)
"""


def _kiln_child(tmp_path: Path) -> tuple[subprocess.Popen[str], Path, Path]:
    """A kiln process (the runner, as `invoke build` uses it) with a staging dir and a long step."""
    staging = tmp_path / "artifacts" / ".pair.partial"
    staging.mkdir(parents=True)
    pidfile = tmp_path / "grandchild.pid"
    proc = subprocess.Popen([sys.executable, "-c", KILN, str(tmp_path / "runs"), str(tmp_path), str(staging),
                             str(pidfile)], text=True)
    _wait_for(pidfile)
    _wait_for(Path(f"{pidfile}.sh"))
    deadline = time.monotonic() + 10  # the step is in the record (and the guard told) once run() has it
    while not any(i.get("kind") == "group" for r in runs(tmp_path / "runs") for i in r.items):
        assert time.monotonic() < deadline, "the step never showed in the run record"
        time.sleep(0.05)
    return proc, staging, pidfile


def _guard_of(pid: int) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid and "guard_main" in cmdline:
                return int(entry.name)
    raise AssertionError(f"no guard process under {pid}")


def test_children_and_grandchildren_die_with_a_sigkilled_kiln(tmp_path: Path) -> None:
    proc, staging, pidfile = _kiln_child(tmp_path)
    sh, sleeper = int(Path(f"{pidfile}.sh").read_text()), int(pidfile.read_text())
    guard = _guard_of(proc.pid)
    proc.kill()  # SIGKILL: no handler, no finally
    proc.wait()
    took = _gone([sh, sleeper], timeout=20)
    print(f"child and grandchild gone {took:.2f}s after kiln was SIGKILLed")
    _gone([guard], timeout=20)
    # What the record lists outlived it: the next run reports and removes it.
    lines = reap_stale(tmp_path / "runs")
    assert len(lines) == 1 and lines[0].startswith(f"removed {staging}, left by kiln run {proc.pid} (")
    assert not staging.exists()
    assert not list((tmp_path / "runs").glob("*.json"))
    assert reap_stale(tmp_path / "runs") == []


def test_the_next_run_stops_what_outlived_a_killed_kiln_and_its_guard(tmp_path: Path) -> None:
    """The guard killed too (e.g. `kill -9` of every process): the child still gets SIGTERM from
    its parent-death signal; the grandchild it leaves is the next run's to stop, from the record."""
    proc, staging, pidfile = _kiln_child(tmp_path)
    sh, sleeper = int(Path(f"{pidfile}.sh").read_text()), int(pidfile.read_text())
    guard = _guard_of(proc.pid)
    os.kill(guard, signal.SIGKILL)
    proc.kill()
    proc.wait()
    _gone([sh], timeout=10)  # PR_SET_PDEATHSIG
    assert _alive(sleeper), "nothing ended the grandchild: it is the next run's"
    lines = reap_stale(tmp_path / "runs")
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"stopped process group {sh} (a long step), left by kiln run {proc.pid} (")
    assert lines[1].startswith(f"removed {staging}, left by kiln run {proc.pid} (")
    assert not _alive(sleeper) and not staging.exists()


def test_a_live_runs_record_is_never_reaped_and_a_reused_pid_protects_nothing(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    sleeper = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        start = process_start(sleeper.pid)
        mine, theirs = tmp_path / "live.partial", tmp_path / "dead.partial"
        mine.mkdir()
        theirs.mkdir()
        shared = tmp_path / "claimed.partial"
        shared.mkdir()

        def write(name: str, pid: int, pid_start: int | None, items: list[dict[str, object]]) -> None:
            (runs / f"{name}.json").write_text(json.dumps({"pid": pid, "start": pid_start, "argv": ["kiln"],
                                                           "root": str(tmp_path), "started": 0,
                                                           "items": items}))

        # A live run (the sleeper, by PID and start time) owns `mine` and `shared`.
        write("live", sleeper.pid, start, [{"kind": "path", "value": str(mine)},
                                           {"kind": "path", "value": str(shared)}])
        # A dead run whose PID is now the sleeper's (another start time): reaped, but the sleeper's
        # group is not its group any more, and `shared` is the live run's now.
        write("dead", sleeper.pid, (start or 0) - 1,
              [{"kind": "path", "value": str(theirs)}, {"kind": "path", "value": str(shared)},
               {"kind": "group", "value": str(sleeper.pid), "start": (start or 0) - 1, "step": "old"}])
        lines = reap_stale(runs)
        assert len(lines) == 1 and lines[0].startswith(f"removed {theirs}, left by kiln run {sleeper.pid}")
        assert mine.exists() and shared.exists() and not theirs.exists()
        assert sleeper.poll() is None, "a process that merely reuses a recorded number is not touched"
        assert sorted(p.name for p in runs.glob("*.json")) == ["live.json"]
        assert [r.pid for r in live_runs(tmp_path, runs)] == [sleeper.pid]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_stopping_run_starts_no_new_step(tmp_path: Path) -> None:
    try:
        stop_all(refuse="--fail-fast: a failed")
        with pytest.raises(StepStopped, match="stopped: --fail-fast: a failed"):
            run(["true"], step="next", quiet=True, timeout=10)
    finally:
        allow_new()
    assert run(["true"], step="after", quiet=True, timeout=10).returncode == 0


def test_the_record_lists_what_runs_and_is_gone_when_nothing_does(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    before = current_records_dir()
    configure_records(runs, tmp_path)
    seen: list[list[dict[str, object]]] = []

    def look(_line: str) -> None:
        (record_file,) = runs.glob("*.json")
        seen.append(json.loads(record_file.read_text())["items"])

    try:
        with recorded("path", tmp_path / "staging"):
            run(["echo", "x"], step="look", quiet=True, timeout=10, on_line=look)
    finally:
        configure_records(before, REPO_ROOT)
    assert {(i["kind"], i.get("step")) for i in seen[0]} == {("path", None), ("group", "look")}
    assert not list(runs.glob("*.json"))
