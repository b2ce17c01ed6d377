"""`invoke build` ended every way it can end, with real Packer and QEMU: killed with SIGKILL
mid-Packer, stopped with SIGHUP, a second build of the same pair started meanwhile, a pair that
fails while another builds, a Packer build that hangs past `--timeout`. After each, no process
of the run is left, no staging directory, no run record; what a SIGKILLed run left is reported
and removed by the next run.

The builds are real, and cheap: ubuntu-24.04's image URL points at a blank 64 MiB disk served on
127.0.0.1, so Packer downloads it, starts QEMU (TCG) and waits for an SSH that never answers:
a Packer build that hangs, the way a broken image hangs one. Every process a test starts is
found by the test's temp dir in its command line and ended by PID if a check fails.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.paths import REPO_ROOT, Paths

pytestmark = [
    pytest.mark.vm,
    pytest.mark.slow,
    pytest.mark.skipif(not (shutil.which("packer") and shutil.which("qemu-system-x86_64")
                            and shutil.which("qemu-img")),
                       reason="needs packer, qemu-system-x86_64 and qemu-img"),
]

PAIR = "ubuntu-24.04-qemu"
OTHER = "ubuntu-22.04-qemu"


@pytest.fixture
def blank_image(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(url, sha256) of a blank qcow2 served on 127.0.0.1: a VM that boots nothing, so no SSH."""
    served = tmp_path / "served"
    served.mkdir()
    image = served / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield (f"http://127.0.0.1:{server.server_address[1]}/blank.qcow2",
               hashlib.sha256(image.read_bytes()).hexdigest())
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class Build:
    """An `invoke build` in its own process, its output read line by line as it comes."""

    def __init__(self, tree: Paths, cache: Path, args: list[str]) -> None:
        env = {**os.environ, "KILN_ROOT": str(tree.root), "KILN_CACHE_DIR": str(cache),
               "PYTHONUNBUFFERED": "1"}
        argv = [sys.executable, "-m", "invoke", "--search-root", str(REPO_ROOT), "build", *args]
        self.proc = subprocess.Popen(argv, cwd=tree.root, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def expect(self, text: str, timeout: float) -> str:
        """The first line (from here on) holding `text`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} after {timeout:.0f}s; output:\n" + "\n".join(self.lines))

    def finish(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        while (line := self._queue.get(timeout=10)) is not None:
            self.lines.append(line)
        return code

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


def _args(url: str, sha: str, *extra: str, target: str = "ubuntu-24.04") -> list[str]:
    return ["--target", target, "--builder", "qemu", "--accel", "tcg",
            "--set", f"targets.ubuntu-24.04.image.url={url}",
            "--set", f"targets.ubuntu-24.04.image.sha256={sha}",
            "--set", 'components.enabled=["base"]', "--set", "build.ssh_timeout=30m", *extra]


def _processes(marker: str) -> dict[int, str]:
    """Live processes whose command line holds `marker` (the test's temp dir): Packer and QEMU."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        text = " ".join(a.decode(errors="replace") for a in argv)
        if marker in text and state != "Z":
            found[int(entry.name)] = text
    return found


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _wait(condition: object, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - started < timeout, f"{what}: not after {timeout:.0f}s"
        time.sleep(0.2)
    return time.monotonic() - started


def _qemu_of(marker: str) -> list[int]:
    return [pid for pid, argv in _processes(marker).items() if "qemu-system" in argv.split()[0]]


@contextlib.contextmanager
def _ends_everything(marker: str, *builds: Build) -> Iterator[None]:
    """Whatever the test found, nothing it started outlives it (by PID)."""
    try:
        yield
    finally:
        for build in builds:
            if build.proc.poll() is None:
                build.proc.kill()
                build.proc.wait()
        for pid in _processes(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _leftovers(tree: Paths, cache: Path) -> list[str]:
    staging = [str(p) for p in tree.artifacts.glob(".*.partial")]
    layers = [str(p) for p in (cache / "layers").glob(".tmp-*")]
    records = [str(p) for p in (cache / "runs").glob("*.json")]
    return staging + layers + records


def test_a_sigkilled_build_leaves_nothing_the_next_one_does_not_remove(
        tree: Paths, tmp_path: Path, blank_image: tuple[str, str]) -> None:
    cache = tmp_path / "cache"
    marker = str(tmp_path)
    first = Build(tree, cache, _args(*blank_image))
    second: Build | None = None
    with _ends_everything(marker, first):
        first.expect("Waiting for SSH to become available", timeout=240)
        staging = tree.artifacts / f".{PAIR}.partial"
        (layer_dir,) = (cache / "layers").glob(f".tmp-*-{first.proc.pid}")
        assert staging.is_dir() and _qemu_of(marker)

        # A second build of the same pair waits for the first; it never removes its staging.
        second = Build(tree, cache, _args(*blank_image))
        waiting = second.expect(f"==> [{PAIR}] waiting: kiln run {first.proc.pid} ", timeout=120)
        assert f"is building {PAIR}" in waiting
        time.sleep(3)
        assert staging.is_dir() and layer_dir.is_dir() and _qemu_of(marker)

        killed = {pid: argv.split()[0] for pid, argv in _processes(marker).items()}
        killed |= {pid: "kiln guard" for pid in _children(first.proc.pid) if pid not in killed}
        assert any("packer" in a for a in killed.values()) and any("qemu" in a for a in killed.values())
        first.proc.kill()  # SIGKILL mid-Packer: none of kiln's own cleanup runs
        first.proc.wait()
        took = _wait(lambda: not any(_alive(p) for p in killed), 30, "the killed run's processes")
        print(f"{len(killed)} processes of the SIGKILLed run ({', '.join(sorted(set(killed.values())))}) "
              f"gone {took:.1f}s after it")

        # The second build takes the lock, reports what the first left and removes it.
        reaped = [second.expect(f"removed {staging}, left by kiln run {first.proc.pid}", timeout=60)]
        after = second.lines.index(reaped[0])
        more = [line for line in second.lines[after:] if f"left by kiln run {first.proc.pid}" in line]
        if not any(str(layer_dir) in line for line in more):
            more.append(second.expect(str(layer_dir), timeout=30))
        assert any(f"removed {layer_dir}" in line for line in more), second.output
        print("\n".join(line for line in second.lines if "left by" in line))
        assert not layer_dir.exists()

        # It builds in turn; SIGHUP (a closed terminal) stops it, and it cleans up after itself.
        second.expect("Waiting for SSH to become available", timeout=240)
        assert _qemu_of(marker) and staging.is_dir()
        second.proc.send_signal(signal.SIGHUP)
        started = time.monotonic()
        assert second.finish(timeout=120) == 130, second.output
        print(f"SIGHUP to exit: {time.monotonic() - started:.1f}s")
        assert "(received SIGHUP); its processes were stopped" in second.output
        _wait(lambda: not _processes(marker), 30, "processes of the stopped build")
        assert _leftovers(tree, cache) == []

        # Nothing is left for `invoke clean` to report.
        clean = subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(REPO_ROOT), "clean"],
                               cwd=tree.root, capture_output=True, text=True, timeout=120,
                               env={**os.environ, "KILN_ROOT": str(tree.root), "KILN_CACHE_DIR": str(cache)})
        assert clean.returncode == 0, clean.stderr
        assert "left by" not in clean.stdout


def test_invoke_clean_reports_and_removes_what_a_killed_build_left(
        tree: Paths, tmp_path: Path, blank_image: tuple[str, str]) -> None:
    cache = tmp_path / "cache"
    marker = str(tmp_path)
    build = Build(tree, cache, _args(*blank_image))
    with _ends_everything(marker, build):
        build.expect("Waiting for SSH to become available", timeout=240)
        env = {**os.environ, "KILN_ROOT": str(tree.root), "KILN_CACHE_DIR": str(cache)}
        clean = [sys.executable, "-m", "invoke", "--search-root", str(REPO_ROOT), "clean"]
        refused = subprocess.run(clean, cwd=tree.root, capture_output=True, text=True, timeout=120, env=env)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert f"kiln run {build.proc.pid} " in refused.stderr and "is still working in" in refused.stderr
        assert (tree.artifacts / f".{PAIR}.partial").is_dir(), "a live run's staging is never touched"
        killed = list(_processes(marker)) + _children(build.proc.pid)
        build.proc.kill()
        build.proc.wait()
        _wait(lambda: not any(_alive(p) for p in killed), 30, "the killed run's processes")
        assert _leftovers(tree, cache), "the killed run left its staging and its record"
        done = subprocess.run(clean, cwd=tree.root, capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stderr
        reported = [line for line in done.stdout.splitlines() if f"left by kiln run {build.proc.pid}" in line]
        print("\n".join(reported))
        assert any(f"removed {tree.artifacts / f'.{PAIR}.partial'}" in line for line in reported)
        assert any(f"removed {cache / 'layers'}/.tmp-" in line for line in reported)
        assert _leftovers(tree, cache) == []


def test_a_failing_pair_is_reported_at_once_and_a_hung_one_times_out(
        tree: Paths, tmp_path: Path, blank_image: tuple[str, str]) -> None:
    cache = tmp_path / "cache"
    marker = str(tmp_path)
    url, sha = blank_image
    closed = f"http://127.0.0.1:{_closed_port()}/nothing.qcow2"  # connection refused: fails at once
    build = Build(tree, cache, [*_args(url, sha, "--parallel", "2", "--timeout", "30s",
                                       target="ubuntu-24.04,ubuntu-22.04"),
                                "--set", f"targets.ubuntu-22.04.image.url={closed}",
                                "--set", f"targets.ubuntu-22.04.image.sha256={sha}"])
    with _ends_everything(marker, build):
        failed = build.expect(f"==> [{OTHER}] FAILED after", timeout=240)
        assert f"step 'packer build {OTHER} (system layer)' failed (exit 1)" in failed
        assert f"log: {tree.logs / f'{OTHER}-system.log'}" in failed
        assert build.proc.poll() is None, "reported while the other pair still builds"
        build.expect(f"==> [{PAIR}] FAILED after", timeout=240)
        code = build.finish(timeout=120)
        hung = next(line for line in build.lines if line.startswith(f"==> [{PAIR}] FAILED after"))
        assert (f"step 'packer build {PAIR} (system layer)' timed out after 30s and was stopped "
                "(it looked hung)" in hung), hung
        assert f"log: {tree.logs / f'{PAIR}-system.log'}" in hung
        log = (tree.logs / f"{PAIR}-system.log").read_text()
        assert "timed out after 30s; its processes were stopped" in log
        rows = _summary(build.output)
        assert rows == {PAIR: "FAILED", OTHER: "FAILED"}, build.output
        assert code == 1 and "error: 2 of 2 pair(s) failed" in build.output
        _wait(lambda: not _processes(marker), 30, "processes of the build")
        assert _leftovers(tree, cache) == []


def test_fail_fast_stops_the_other_pair(tree: Paths, tmp_path: Path, blank_image: tuple[str, str]) -> None:
    cache = tmp_path / "cache"
    marker = str(tmp_path)
    url, sha = blank_image
    closed = f"http://127.0.0.1:{_closed_port()}/nothing.qcow2"
    build = Build(tree, cache, [*_args(url, sha, "--parallel", "2", "--fail-fast",
                                       target="ubuntu-24.04,ubuntu-22.04"),
                                "--set", f"targets.ubuntu-22.04.image.url={closed}",
                                "--set", f"targets.ubuntu-22.04.image.sha256={sha}"])
    with _ends_everything(marker, build):
        build.expect(f"==> [{OTHER}] FAILED after", timeout=240)
        started = time.monotonic()
        code = build.finish(timeout=120)
        print(f"--fail-fast: the other pair stopped and kiln exited {time.monotonic() - started:.1f}s later")
        assert _summary(build.output) == {PAIR: "stopped", OTHER: "FAILED"}, build.output
        assert f"--fail-fast: {OTHER} failed" in build.output
        assert code == 1
        _wait(lambda: not _processes(marker), 30, "processes of the build")
        assert _leftovers(tree, cache) == []


def _summary(output: str) -> dict[str, str]:
    table = output.split("==> summary:")[1].splitlines()
    rows = [row.split() for row in table[3:]]
    return {row[0]: row[1] for row in rows if row and row[0] in (PAIR, OTHER)}


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
