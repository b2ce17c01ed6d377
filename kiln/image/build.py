"""`invoke build`: one Packer build per target x builder, staged and published atomically.

Stages per pair: preflight -> render -> source image (base build for debian-12) ->
packer build (provision, in-build verification, cleanup, shutdown, box) -> metadata ->
publish. Each stage is reported with its elapsed time; Packer's output goes to
build/logs/<pair>.log and, unless quiet, to the terminal.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kiln import __version__, runner
from kiln.config.load import Config
from kiln.config.targets import Pair
from kiln.errors import Interrupted, KilnError, UserError
from kiln.fileutil import locked
from kiln.image import layered, packer
from kiln.image.artifacts import (
    GUEST_MANIFEST,
    METADATA,
    artifact_files,
    publish,
    write_json,
)
from kiln.image.preflight import component_problems
from kiln.image.render import BakedPackage, RenderOptions, render_pair, write_pairs
from kiln.image.store import Store
from kiln.output import say
from kiln.paths import Paths
from kiln.runner import StepStopped, record, recorded, unrecord
from kiln.table import format_table

PACKER_TIMEOUT = layered.PACKER_TIMEOUT


@dataclass
class Stages:
    pair: str
    started: float = field(default_factory=time.monotonic)
    seconds: dict[str, float] = field(default_factory=dict)

    def run(self, name: str, func: Callable[[], Any]) -> Any:
        say(f"==> [{self.pair}] {name} ...")
        t0 = time.monotonic()
        try:
            return func()
        finally:
            took = time.monotonic() - t0
            self.seconds[name] = round(took, 1)
            say(f"==> [{self.pair}] {name}: {took:.1f}s "
                  f"(total {time.monotonic() - self.started:.1f}s)")


@dataclass(frozen=True)
class BuildResult:
    pair: str
    directory: Path
    seconds: dict[str, float]
    built: tuple[str, ...] = ()  # the layers built in this run ("all" for a one-piece AMI build)
    up_to_date: bool = False
    key: str = ""  # the top layer's key (qemu images)


def tool_versions() -> dict[str, str]:
    return {**layered.tool_versions(), "kiln": __version__}


def _ensure_source(config: Config, pair: Pair, paths: Paths, force_base: bool) -> None:
    if pair.builder.needs != "disk" or pair.target.base is None:
        return
    from kiln.image.base import build_base

    build_base(pair.target.name, config["targets"][pair.target.name], paths.build,
               force=force_base, log=paths.logs / f"base-{pair.target.name}.log")


def _packages(config: Config, pair: Pair, paths: Paths) -> list[BakedPackage]:
    """The packages kiln builds that this pair bakes (compiled when not cached: hours for Mesos)."""
    from kiln.packages import build as packages

    out = []
    for name in packages.wanted(config.data, paths, config.components_for(pair.target.name)):
        made = packages.ensure(config.data, paths, name, pair.target.name, say=say)
        out.append(BakedPackage(name, made.path, made.meta["sha256"],
                                f"kiln {made.meta['version']} from the {made.meta['tree']['origin']} tree"))
    return out


@contextmanager
def pair_lock(paths: Paths, name: str) -> Iterator[None]:
    """Hold the lock of pair `name` (build/artifacts/.<name>.lock): one build of a pair at a time,
    across processes and threads. A second build waits, and says for whom, after a second."""
    lock = paths.artifacts / f".{name}.lock"

    def waiting() -> None:
        holders = [r.describe() for r in runner.runs() if r.alive
                   and any(i.get("kind") == "pair" and i.get("value") == name for i in r.items)]
        whom = holders[0] if holders else "another build"
        say(f"==> [{name}] waiting: {whom} is building {name} (lock {lock})")

    note = threading.Timer(1.0, waiting)
    note.daemon = True
    note.start()
    try:
        with locked(lock):
            note.cancel()
            with recorded("pair", name):
                yield
    finally:
        note.cancel()


def build_pair(config: Config, pair: Pair, paths: Paths, options: RenderOptions, *,
               quiet: bool = False, force_base: bool = False, force: bool = False,
               after_packer: Callable[[Path], None] | None = None,
               timeout: float = PACKER_TIMEOUT) -> BuildResult:
    """`after_packer(staging)` runs once Packer succeeded, before metadata and publish (the
    AMI builds use it to finish the images in AWS and record their ids). `timeout`: seconds after
    which one Packer build counts as hung and is stopped. The pair's staging directory is made,
    used and published under the pair's lock: a second build of the pair waits, and never
    removes the first one's staging."""
    problems = component_problems(config, pair)
    if problems:
        raise UserError(f"{pair.name} cannot be built as configured:\n  - " + "\n  - ".join(problems))
    if pair.builder.name == "virtualbox":
        return _virtualbox_box(config, pair, paths, options, quiet=quiet, force=force, timeout=timeout)
    with pair_lock(paths, pair.name):
        for line in runner.reap_stale():  # a build we waited for may have been killed
            say(f"==> [{pair.name}] {line}")
        return _build_pair_locked(config, pair, paths, options, quiet=quiet, force_base=force_base,
                                  force=force, after_packer=after_packer, timeout=timeout)


def _build_pair_locked(config: Config, pair: Pair, paths: Paths, options: RenderOptions, *, quiet: bool,
                       force_base: bool, force: bool, after_packer: Callable[[Path], None] | None,
                       timeout: float) -> BuildResult:
    stages = Stages(pair.name)
    for name, reason in config.excluded.items():
        say(f"==> [{pair.name}] component {name} left out: {reason}")
    built = stages.run("packages", lambda: _packages(config, pair, paths))
    options = replace(options, packages=tuple(built))
    rendered = stages.run("render", lambda: render_pair(config, pair, paths, options))
    write_pairs([rendered], paths)

    final = paths.artifacts / pair.name
    staging = paths.artifacts / f".{pair.name}.partial"
    if staging.exists():  # we hold the pair's lock: whoever made it is gone
        shutil.rmtree(staging, ignore_errors=True)
        say(f"==> [{pair.name}] removed {staging}, left by an interrupted build")
    record("path", staging)
    try:
        staging.mkdir(parents=True)
        if pair.builder.name == "qemu":
            outcome = layered.build(config, pair, paths, options, rendered, staging=staging, final=final,
                                    stage=stages.run, quiet=quiet, force=force, force_base=force_base,
                                    timeout=timeout)
            if outcome.up_to_date:
                say(f"==> [{pair.name}] done in {time.monotonic() - stages.started:.1f}s: {final}")
                return BuildResult(pair.name, final, stages.seconds, up_to_date=True, key=outcome.key)
            built, key = tuple(outcome.built), outcome.key
        else:
            stages.run("source image", lambda: _ensure_source(config, pair, paths, force_base))
            _packer_single(pair, options, rendered, stages, paths, quiet, timeout)
            built, key = ("all",), ""
        if after_packer is not None:
            stages.run("after packer", lambda: after_packer(staging))
        stages.run("metadata", lambda: _write_metadata(config, pair, staging, stages,
                                                        options.git_revision, key))
        publish(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        unrecord("path", staging)
    say(f"==> [{pair.name}] done in {time.monotonic() - stages.started:.1f}s: {final}")
    return BuildResult(pair.name, final, stages.seconds, built=built, key=key)


def _virtualbox_box(config: Config, pair: Pair, paths: Paths, options: RenderOptions, *, quiet: bool,
                    force: bool, timeout: float = PACKER_TIMEOUT) -> BuildResult:
    """The virtualbox box is made from the qemu image (built first, from the cache when it can be):
    converted, not provisioned again; an unchanged qemu image is not converted again either."""
    from kiln.config.targets import BUILDERS
    from kiln.image import virtualbox

    qemu = build_pair(config, Pair(pair.target, BUILDERS["qemu"]), paths, options, quiet=quiet,
                      timeout=timeout)
    stages = Stages(pair.name)
    final = paths.artifacts / pair.name
    made_from = _read_metadata(final).get("made_from", {})
    baked = _read_metadata(qemu.directory).get("artifacts", {}).get(f"{qemu.pair}.box", {})
    if not force and made_from.get("sha256") and made_from.get("sha256") == baked.get("sha256"):
        say(f"==> [{pair.name}] up to date (made from {qemu.pair}, key {qemu.key[:16]})")
        return BuildResult(pair.name, final, stages.seconds, up_to_date=True, key=qemu.key)
    spec = virtualbox.spec_from_config(config.data, pair.target.name)
    # make_box stages in .<pair>.partial under the pair's lock; recorded for the next run.
    log = paths.logs / f"{pair.name}.log"
    with recorded("path", paths.artifacts / f".{pair.name}.partial"):
        result = stages.run("virtualbox box", lambda: virtualbox.make_box(spec, paths.artifacts, log=log))
    say(f"==> [{pair.name}] {result.box} ({result.sizes['box'] / 2**20:.0f} MiB)")
    stages.run("VirtualBox check", lambda: _virtualbox_check(result.box, pair, paths, spec.ssh_username))
    return BuildResult(pair.name, result.directory, {**stages.seconds, **result.seconds}, built=("box",),
                       key=qemu.key)


def _virtualbox_check(box: Path, pair: Pair, paths: Paths, user: str) -> None:
    """With VirtualBox installed: VirtualBox imports (dry run, then for real) and boots the box
    (kiln.image.vboxcheck). Without it, say which checks did not run here."""
    exe = shutil.which("VBoxManage")
    if exe is None:
        say(f"==> [{pair.name}] VirtualBox is not installed: the box was not imported or booted here "
            "(kiln's tests check its OVF against the OVF 1.0 schema, `vagrant box add` it and boot the "
            "disk under QEMU on AHCI and e1000)")
        return
    from kiln.image import vboxcheck
    from kiln.keys import ensure_build_key

    check = vboxcheck.Check(exe, box, pair.name, user, ensure_build_key(paths.build),
                            paths.logs / f"{pair.name}.log")
    vboxcheck.import_and_boot(check, say=say)


def _read_metadata(directory: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((directory / METADATA).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}


def _packer_single(pair: Pair, options: RenderOptions, rendered: Any, stages: Stages, paths: Paths,
                   quiet: bool, timeout: float = PACKER_TIMEOUT) -> None:
    """One Packer build of the whole image (AMIs: there are no local layers to cache)."""
    (template,) = rendered.templates
    log = paths.logs / f"{pair.name}.log"
    log.unlink(missing_ok=True)
    if options.packer_version.has_plugins:
        stages.run("packer init", lambda: packer.init(template.parent, log=log))
    argv = [packer.find_packer(), "build", "-color=false", "-on-error=cleanup",
            "-var", f"git_revision={options.git_revision}", "."]

    def packer_build() -> None:
        layered.run_packer(argv, step=f"packer build {pair.name}", template_dir=template.parent, log=log,
                           quiet=quiet, timeout=timeout, paths=paths, pair=pair)

    stages.run("packer build", packer_build)


def _write_metadata(config: Config, pair: Pair, staging: Path, stages: Stages,
                    git_revision: str, key: str) -> None:
    output = staging / "output"
    if output.is_dir():  # flatten the builder's output dir into the artifact dir
        for item in output.iterdir():
            item.rename(staging / item.name)
        output.rmdir()
    guest = staging / GUEST_MANIFEST
    components = json.loads(guest.read_text())["components"] if guest.exists() else {}
    layer_records = layered.metadata_extra(staging)
    (staging / "layers.json").unlink(missing_ok=True)
    files = artifact_files(staging)
    write_json(staging / METADATA, {
        "key": key,
        "box_version": layer_records.get("box_version", ""),
        "layers": layer_records.get("layers", []),
        "pair": pair.name,
        "target": pair.target.name,
        "builder": pair.builder.name,
        "project": config["project"],
        "git_revision": git_revision,
        "tools": tool_versions(),
        "components": components,
        "stages_seconds": stages.seconds,
        "artifacts": files,
    })


@dataclass(frozen=True)
class PairOutcome:
    """How one pair of a multi-pair build ended: built, up to date, FAILED, stopped, not started."""

    pair: str
    state: str
    detail: str = ""
    seconds: float = 0.0
    result: BuildResult | None = None
    error: BaseException | None = None


class BuildsFailed(KilnError):
    """One or more pairs of a multi-pair build failed (the summary was printed)."""

    def __init__(self, outcomes: Sequence[PairOutcome]) -> None:
        self.outcomes = list(outcomes)
        failed = [o for o in outcomes if o.state == "FAILED"]
        # Exit code 2 when every failure is one the user can fix, as for a single pair.
        self.exit_code = 2 if failed and all(isinstance(o.error, UserError) for o in failed) else 1
        names = ", ".join(o.pair for o in failed) or "none"
        super().__init__(f"{len(failed)} of {len(outcomes)} pair(s) failed: {names} (summary above)")


BuildFunction = Callable[..., BuildResult]


def _succeeded(pair: str, result: BuildResult, seconds: float) -> PairOutcome:
    key = f"key {result.key[:16]}" if result.key else ""
    if result.up_to_date:
        return PairOutcome(pair, "up to date", key, seconds, result)
    detail = "; ".join(part for part in (f"built {', '.join(result.built) or 'nothing'}", key) if part)
    return PairOutcome(pair, "built", detail, seconds, result)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def summary(outcomes: Sequence[PairOutcome]) -> str:
    rows = [(o.pair, o.state, f"{o.seconds:.0f}s" if o.seconds else "-", o.detail) for o in outcomes]
    return format_table(("pair", "result", "time", "detail"), rows)


def build_many(config: Config, pairs: Sequence[Pair], paths: Paths, options: RenderOptions, *,
               parallel: int = 1, quiet: bool = False, force_base: bool = False,
               force: bool = False, fail_fast: bool = False, timeout: float = PACKER_TIMEOUT,
               build: BuildFunction = build_pair) -> list[BuildResult]:
    """Build `pairs`, up to `parallel` at once. One pair: its error as it is. Several: a failing
    pair is reported when it fails and the others go on (with `fail_fast` they are stopped, and
    those not started yet never start); at the end a summary lists every pair, and BuildsFailed
    is raised when any failed. `build` is build_pair (a test may give a stand-in)."""
    if len(pairs) == 1:
        return [build(config, pairs[0], paths, options, quiet=quiet, force_base=force_base, force=force,
                      timeout=timeout)]
    outcomes: dict[str, PairOutcome] = {}
    try:
        if parallel <= 1:
            _one_by_one(config, pairs, paths, options, outcomes, quiet=quiet, force_base=force_base,
                        force=force, fail_fast=fail_fast, timeout=timeout, build=build)
        else:
            _in_parallel(config, pairs, paths, options, outcomes, parallel=parallel, force_base=force_base,
                         force=force, fail_fast=fail_fast, timeout=timeout, build=build)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | Interrupted):
            _fill(outcomes, pairs, "stopped", "interrupted")
            say("==> summary (interrupted):\n" + summary([outcomes[p.name] for p in pairs]))
        raise
    finally:
        runner.allow_new()
    ordered = [outcomes[p.name] for p in pairs]
    say("==> summary:\n" + summary(ordered))
    bugs = [o.error for o in ordered if o.state == "FAILED" and not isinstance(o.error, KilnError)]
    if bugs:
        raise bugs[0]  # not a build failure: a bug in kiln, with its traceback
    if any(o.state == "FAILED" for o in ordered):
        raise BuildsFailed(ordered)
    return [o.result for o in ordered if o.result is not None]


def _fill(outcomes: dict[str, PairOutcome], pairs: Sequence[Pair], state: str, detail: str) -> None:
    for p in pairs:
        outcomes.setdefault(p.name, PairOutcome(p.name, state, detail))


def _failed(pair: str, exc: BaseException, seconds: float, stopping: str) -> PairOutcome:
    if stopping or isinstance(exc, StepStopped):
        outcome = PairOutcome(pair, "stopped", stopping or _first_line(exc), seconds, error=exc)
        say(f"==> [{pair}] stopped after {seconds:.0f}s ({outcome.detail})")
        return outcome
    say(f"==> [{pair}] FAILED after {seconds:.0f}s: {exc}")
    return PairOutcome(pair, "FAILED", _first_line(exc), seconds, error=exc)


def _one_by_one(config: Config, pairs: Sequence[Pair], paths: Paths, options: RenderOptions,
                outcomes: dict[str, PairOutcome], *, quiet: bool, force_base: bool, force: bool,
                fail_fast: bool, timeout: float, build: BuildFunction) -> None:
    for pair in pairs:
        started = time.monotonic()
        try:
            result = build(config, pair, paths, options, quiet=quiet, force_base=force_base, force=force,
                           timeout=timeout)
        except Exception as exc:
            outcomes[pair.name] = _failed(pair.name, exc, time.monotonic() - started, "")
            if fail_fast:
                _fill(outcomes, pairs, "not started", f"--fail-fast: {pair.name} failed")
                return
        else:
            outcomes[pair.name] = _succeeded(pair.name, result, time.monotonic() - started)


def _in_parallel(config: Config, pairs: Sequence[Pair], paths: Paths, options: RenderOptions,
                 outcomes: dict[str, PairOutcome], *, parallel: int, force_base: bool, force: bool,
                 fail_fast: bool, timeout: float, build: BuildFunction) -> None:
    # Base images are shared between pairs of one target: build them first, one by one.
    sources_failed: dict[str, BaseException] = {}
    for pair in pairs:
        if pair.target.name not in sources_failed:
            try:
                _ensure_source(config, pair, paths, force_base)
            except Exception as exc:
                sources_failed[pair.target.name] = exc
    for pair in pairs:
        if pair.target.name in sources_failed:
            outcomes[pair.name] = _failed(pair.name, sources_failed[pair.target.name], 0.0, "")
    todo = [p for p in pairs if p.name not in outcomes]
    if fail_fast and sources_failed:
        _fill(outcomes, pairs, "not started", "--fail-fast: a base image failed")
        return

    stop = _FailFast(fail_fast)

    def timed(pair: Pair) -> tuple[BuildResult, float]:
        if stop.reason:
            raise _NotStarted(stop.reason)
        started = time.monotonic()
        try:
            return build(config, pair, paths, options, quiet=True, force=force, timeout=timeout), \
                time.monotonic() - started
        except BaseException as exc:
            exc.kiln_seconds = time.monotonic() - started  # type: ignore[attr-defined]
            stop.failed(pair.name, exc)  # here, in the worker: before it takes the next pair
            raise

    pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="kiln-build")
    futures: dict[Future[tuple[BuildResult, float]], Pair] = {pool.submit(timed, p): p for p in todo}
    pending = set(futures)
    try:
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                pair = futures[future]
                exc = None if future.cancelled() else future.exception()
                if future.cancelled() or isinstance(exc, _NotStarted):
                    continue  # "not started", below
                if exc is None:
                    result, seconds = future.result()
                    outcomes[pair.name] = _succeeded(pair.name, result, seconds)
                    say(f"==> [{pair.name}] {outcomes[pair.name].state} in {seconds:.0f}s")
                    continue
                stopped_by = "" if pair.name == stop.trigger else stop.reason
                outcomes[pair.name] = _failed(pair.name, exc, getattr(exc, "kiln_seconds", 0.0), stopped_by)
                if stop.reason:
                    for other in pending:
                        other.cancel()
        _fill(outcomes, pairs, "not started", stop.reason)
    except BaseException:
        # Ctrl-C/SIGTERM/SIGHUP arrive in this thread: stop the workers' Packer (and QEMU) groups
        # so that each worker removes its staging directory, then wait for them.
        for future in futures:
            future.cancel()
        runner.stop_all(refuse="interrupted")
        pool.shutdown(wait=True)
        raise
    finally:
        pool.shutdown(wait=True)


class _NotStarted(Exception):
    """A pair --fail-fast kept from starting."""


class _FailFast:
    """With --fail-fast, the first pair that fails stops the others' steps and keeps the rest from
    starting. It is called in the failing worker thread, so no pair starts in between."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.reason = ""
        self.trigger = ""
        self.lock = threading.Lock()

    def failed(self, pair: str, exc: BaseException) -> None:
        if not self.enabled or not isinstance(exc, Exception) or isinstance(exc, StepStopped | _NotStarted):
            return
        with self.lock:
            if self.reason:
                return
            self.reason, self.trigger = f"--fail-fast: {pair} failed", pair
        runner.stop_all(refuse=self.reason)


def parse_timeout(text: str) -> float:
    """`--timeout`: '4h', '90m', '1h30m', '45s' or a number of seconds -> seconds ('' -> default)."""
    import re

    if not text.strip():
        return PACKER_TIMEOUT
    spec = text.strip().lower()
    if spec.isdigit():
        seconds = float(spec)
    else:
        parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", spec)
        if parts is None or not any(parts.groups()):
            raise UserError(f"--timeout {text!r}: expected a duration such as 4h, 90m, 1h30m, "
                            "or seconds (600)")
        hours, minutes, secs = (int(g or 0) for g in parts.groups())
        seconds = float(hours * 3600 + minutes * 60 + secs)
    if seconds <= 0:
        raise UserError(f"--timeout {text!r}: expected more than 0")
    return seconds


def run_builds(config: Config, paths: Paths, targets: Sequence[str], builders: Sequence[str], *,
               parallel: int = 1, accel: str | None = None, quiet: bool = False,
               force_base: bool = False, force: bool = False, fail_fast: bool = False,
               timeout: float = PACKER_TIMEOUT) -> list[BuildResult]:
    """Select pairs, resolve the accelerator once, check every pair, then build. First, what
    killed runs left (processes, staging directories) is found, reported and removed."""
    from kiln.config.targets import select_pairs
    from kiln.image import accel as accel_mod
    from kiln.image.render import render_options

    pairs = select_pairs(config.data, targets or None, builders or None)
    problems = [f"{p.name}: {msg}" for p in pairs for msg in component_problems(config, p)]
    if problems:
        raise UserError("cannot build as configured:\n  - " + "\n  - ".join(problems),
                        "pin the values named above, or leave components out (--profile offline)")
    if parallel < 1:
        raise UserError(f"--parallel {parallel}: expected 1 or more")
    if timeout <= 0:
        raise UserError(f"--timeout {timeout}: expected more than 0 seconds")
    runner.configure_records(paths.cache / "runs", paths.root)
    for line in runner.reap_stale():
        say(f"==> {line}")
    with recorded("task", f"build {os.getpid()}"):
        options = render_options(config, paths)
        if any(p.builder.name == "qemu" for p in pairs):
            requested = accel or config["build"]["accelerator"]
            if requested not in ("auto", "kvm", "tcg"):
                raise UserError(f"--accel {requested!r}: expected auto, kvm or tcg")
            probe = accel_mod.resolve(requested, paths.cache)
            say(f"==> accelerator: {probe.accel} ({probe.reason})")
            options = replace(options, accelerator=accel_mod.packer_accelerator(probe.accel))
        return build_many(config, pairs, paths, options, parallel=parallel, quiet=quiet,
                          force_base=force_base, force=force, fail_fast=fail_fast, timeout=timeout)


def explain_builds(config: Config, paths: Paths, targets: Sequence[str],
                   builders: Sequence[str]) -> list[str]:
    """`invoke build --explain`: per qemu pair and layer, what changed since the published image."""
    from kiln.config.targets import select_pairs
    from kiln.image.render import render_options
    from kiln.packages import build as packages

    lines = []
    options = render_options(config, paths)
    for pair in select_pairs(config.data, targets or None, builders or None):
        if pair.builder.name != "qemu":
            lines.append(f"{pair.name}: not layered (rebuilt whole)")
            continue
        built = []
        for name in packages.wanted(config.data, paths, config.components_for(pair.target.name)):
            try:
                made = packages.ensure(config.data, paths, name, pair.target.name, say=lambda _: None,
                                       build=False)
            except packages.NotBuilt as exc:
                lines.append(f"{pair.name}: {exc}: the next build makes it (`invoke package {name}`)")
                break
            built.append(BakedPackage(name, made.path, made.meta["sha256"], ""))
        else:
            pair_options = replace(options, packages=tuple(built))
            rendered = render_pair(config, pair, paths, pair_options)
            base_key = layered.base_key_for(config, pair, paths)
            plan = layered.plan_for(config, pair, paths, pair_options, rendered, base_key)
            plan = layered.on_cached_packages(plan, base_key, Store(paths.cache), pair, tell=False)
            lines.append(f"{pair.name}:")
            lines += [f"  {line}" for line in layered.explain(paths.artifacts / pair.name, plan)]
    return lines
