"""The command runner: streaming, logs, failures naming step/command/log, group kill."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from kiln.errors import Interrupted, MissingTool, StepFailed
from kiln.runner import capture, run, stop_all, which


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


def test_sigterm_becomes_interrupted_and_stops_children(tmp_path: Path) -> None:
    import subprocess

    pidfile = tmp_path / "child.pid"
    code = (
        "import sys; from kiln.runner import run, raise_on_sigterm; raise_on_sigterm()\n"
        "from kiln.errors import Interrupted\n"
        f"try:\n    run(['sh', '-c', 'sleep 300 & echo $! > {pidfile}; wait'], step='s', quiet=True)\n"
        "except Interrupted as e:\n    print('INTERRUPTED', e); sys.exit(130)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "INTERRUPTED" in out
    assert not _alive(int(pidfile.read_text()))
    assert Interrupted.exit_code == 130
