"""`invoke build` with several pairs: a failing pair is reported when it fails, the others finish
(or, with --fail-fast, are stopped and the rest never start), and a summary lists every pair.

A full Packer build per pair would take many minutes under TCG, so build_pair is replaced by a
stand-in (named as such) that runs real programs through kiln.runner, as build_pair does: a
pair that "builds" sleeps, a pair that fails exits non-zero. tests/integration/test_build_lifecycle.py
runs the real thing with Packer and QEMU."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from kiln.config.load import load_config
from kiln.config.targets import Pair, select_pairs
from kiln.errors import UserError
from kiln.image.build import BuildResult, BuildsFailed, build_many, parse_timeout
from kiln.image.render import RenderOptions, render_options
from kiln.paths import Paths
from kiln.runner import run

PAIRS = ["ubuntu-24.04-qemu", "ubuntu-22.04-qemu", "amazonlinux-2023-qemu"]  # no local base image


def _pairs(tree: Paths) -> tuple[Any, list[Pair], RenderOptions]:
    config = load_config(tree)
    pairs = select_pairs(config.data, ["ubuntu-24.04", "ubuntu-22.04", "amazonlinux-2023"], ["qemu"])
    assert [p.name for p in pairs] == PAIRS
    return config, pairs, render_options(config, tree)


def stand_in(commands: dict[str, list[str] | BaseException]) -> Callable[..., BuildResult]:
    """A stand-in for build_pair: runs the pair's command (or raises the pair's error)."""

    def build(config: Any, pair: Pair, paths: Paths, options: RenderOptions, **_: Any) -> BuildResult:
        what = commands[pair.name]
        if isinstance(what, BaseException):
            raise what
        run(what, step=f"stand-in build of {pair.name}", quiet=True, timeout=120)
        return BuildResult(pair.name, paths.artifacts / pair.name, {}, built=("system", "payload"),
                           key="ab" * 32)

    return build


def _lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.strip()]


def test_a_failing_pair_is_reported_at_once_and_the_others_finish(tree: Paths,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    config, pairs, options = _pairs(tree)
    build = stand_in({PAIRS[0]: ["sleep", "3"], PAIRS[1]: ["sh", "-c", "sleep 0.3; exit 3"],
                      PAIRS[2]: ["sleep", "1"]})
    with pytest.raises(BuildsFailed) as info:
        build_many(config, pairs, tree, options, parallel=3, build=build)
    lines = _lines(capsys.readouterr().out)
    failed = next(i for i, line in enumerate(lines) if line.startswith(f"==> [{PAIRS[1]}] FAILED after"))
    assert "step 'stand-in build of ubuntu-22.04-qemu' failed (exit 3)" in lines[failed]
    finished = [i for i, line in enumerate(lines) if line.startswith((f"==> [{PAIRS[0]}] built",
                                                                      f"==> [{PAIRS[2]}] built"))]
    assert len(finished) == 2 and failed < min(finished), "reported when it failed, before the others ended"
    table = lines[lines.index("==> summary:") + 1:]
    assert table[0].split() == ["pair", "result", "time", "detail"]
    rows = {row.split()[0]: row for row in table[2:]}
    assert set(rows) == set(PAIRS)
    assert rows[PAIRS[0]].split()[1:3] == ["built", "3s"]
    assert "built system, payload; key abababab" in rows[PAIRS[0]]
    assert rows[PAIRS[1]].split()[1] == "FAILED" and "exit 3" in rows[PAIRS[1]]
    assert rows[PAIRS[2]].split()[1] == "built"
    assert info.value.exit_code == 1
    assert str(info.value) == f"1 of 3 pair(s) failed: {PAIRS[1]} (summary above)"


def test_fail_fast_stops_the_others_and_starts_no_more(tree: Paths,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    config, pairs, options = _pairs(tree)
    build = stand_in({PAIRS[0]: ["sleep", "60"], PAIRS[1]: ["sh", "-c", "sleep 0.5; exit 1"],
                      PAIRS[2]: ["sleep", "60"]})
    started = time.monotonic()
    with pytest.raises(BuildsFailed):
        build_many(config, pairs, tree, options, parallel=2, fail_fast=True, build=build)
    took = time.monotonic() - started
    assert took < 20, f"the other pair was not stopped ({took:.0f}s)"
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in _lines(out.split("==> summary:")[1])[2:]}
    assert rows[PAIRS[0]].split()[1] == "stopped"
    assert "--fail-fast: ubuntu-22.04-qemu failed" in rows[PAIRS[0]]
    assert rows[PAIRS[1]].split()[1] == "FAILED"
    assert rows[PAIRS[2]].split()[1:3] == ["not", "started"]
    # The next build in this process is not refused.
    again = build_many(config, pairs[:1], tree, options, build=stand_in({PAIRS[0]: ["true"]}))
    assert again[0].pair == PAIRS[0]


def test_one_by_one_the_others_build_unless_fail_fast(tree: Paths,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    config, pairs, options = _pairs(tree)
    commands: dict[str, list[str] | BaseException] = {PAIRS[0]: ["false"], PAIRS[1]: ["true"],
                                                      PAIRS[2]: ["true"]}
    with pytest.raises(BuildsFailed):
        build_many(config, pairs, tree, options, build=stand_in(commands))
    rows = [line.split()[1] for line in _lines(capsys.readouterr().out.split("==> summary:")[1])[2:]]
    assert rows == ["FAILED", "built", "built"]
    with pytest.raises(BuildsFailed):
        build_many(config, pairs, tree, options, fail_fast=True, build=stand_in(commands))
    summary = capsys.readouterr().out.split("==> summary:")[1]
    rows = [" ".join(line.split()[1:3]) for line in _lines(summary)[2:]]
    assert [row.split()[0] for row in rows] == ["FAILED", "not", "not"] and rows[1:] == ["not started"] * 2


def test_user_errors_only_exit_2_and_a_bug_keeps_its_traceback(tree: Paths) -> None:
    config, pairs, options = _pairs(tree)
    errors: dict[str, list[str] | BaseException] = {p: UserError(f"{p}: fix me") for p in PAIRS}
    with pytest.raises(BuildsFailed) as info:
        build_many(config, pairs, tree, options, parallel=2, build=stand_in(errors))
    assert info.value.exit_code == 2
    bug = KeyError("a bug")
    with pytest.raises(KeyError):
        build_many(config, pairs, tree, options, parallel=2,
                   build=stand_in({PAIRS[0]: ["true"], PAIRS[1]: bug, PAIRS[2]: ["true"]}))


def test_an_interrupt_stops_every_pair_and_still_summarises(tree: Paths,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    config, pairs, options = _pairs(tree)
    build = stand_in({p: ["sleep", "60"] for p in PAIRS})
    timer = threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT))
    # Ctrl-C as a terminal delivers it, even when pytest was started in the background (SIGINT
    # ignored).
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            build_many(config, pairs, tree, options, parallel=2, build=build)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, before)
    assert time.monotonic() - started < 20
    summary = capsys.readouterr().out.split("==> summary (interrupted):")[1]
    assert [line.split()[1] for line in _lines(summary)[2:]] == ["stopped", "stopped", "stopped"]


@pytest.mark.parametrize(("text", "seconds"), [("", 4 * 3600.0), ("4h", 14400.0), ("90m", 5400.0),
                                               ("1h30m", 5400.0), ("45s", 45.0), ("600", 600.0)])
def test_timeouts_read_like_packers(text: str, seconds: float) -> None:
    assert parse_timeout(text) == seconds


@pytest.mark.parametrize("text", ["soon", "0", "1d", "-5m", "m"])
def test_a_timeout_that_is_not_a_duration_is_refused(text: str) -> None:
    with pytest.raises(UserError, match="--timeout"):
        parse_timeout(text)


