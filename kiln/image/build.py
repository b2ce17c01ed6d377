"""`invoke build`: one Packer build per target x builder, staged and published atomically.

Stages per pair: preflight -> render -> source image (base build for debian-12) ->
packer build (provision, in-build verification, cleanup, shutdown, box) -> metadata ->
publish. Each stage is reported with its elapsed time; Packer's output goes to
build/logs/<pair>.log and, unless quiet, to the terminal.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln import __version__
from kiln.config.load import Config
from kiln.config.targets import Pair
from kiln.errors import UserError
from kiln.image import packer
from kiln.image.artifacts import (
    CATALOG,
    GUEST_MANIFEST,
    METADATA,
    artifact_files,
    box_catalog,
    box_version,
    publish,
    write_json,
)
from kiln.image.preflight import component_problems
from kiln.image.render import RenderOptions, render_pair, write_pairs
from kiln.output import say
from kiln.paths import Paths
from kiln.runner import capture, run, stop_all


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


def tool_versions() -> dict[str, str]:
    pv = packer.installed_version()
    qemu = (capture(["qemu-system-x86_64", "--version"]) or "").splitlines()
    return {
        "packer": str(pv) if pv else "missing",
        "qemu": qemu[0] if qemu else "missing",
        "kiln": __version__,
    }


def _ensure_source(config: Config, pair: Pair, paths: Paths, force_base: bool) -> None:
    if pair.builder.needs != "disk" or pair.target.base is None:
        return
    from kiln.image.base import build_base

    build_base(pair.target.name, config["targets"][pair.target.name], paths.build,
               force=force_base, log=paths.logs / f"base-{pair.target.name}.log")


def build_pair(config: Config, pair: Pair, paths: Paths, options: RenderOptions, *,
               quiet: bool = False, force_base: bool = False,
               after_packer: Callable[[Path], None] | None = None) -> BuildResult:
    """`after_packer(staging)` runs once Packer succeeded, before metadata and publish (the
    AMI builds use it to finish the images in AWS and record their ids)."""
    problems = component_problems(config, pair)
    if problems:
        raise UserError(f"{pair.name} cannot be built as configured:\n  - " + "\n  - ".join(problems))
    if pair.builder.name == "virtualbox":
        if shutil.which("VBoxManage") is None:
            raise UserError(f"{pair.name}: VirtualBox is not installed",
                            "install VirtualBox, or build with --builder qemu")
        ovf = paths.build / "images" / pair.target.name / f"{pair.target.name}.ovf"
        if not ovf.exists():
            raise UserError(f"{pair.name}: no source OVF at {ovf}; kiln does not yet convert the "
                            "source image for VirtualBox",
                            "build with --builder qemu, or place an OVF of the source image there")
    stages = Stages(pair.name)
    for name, reason in config.excluded.items():
        say(f"==> [{pair.name}] component {name} left out: {reason}")
    rendered = stages.run("render", lambda: render_pair(config, pair, paths, options))
    write_pairs([rendered], paths)
    stages.run("source image", lambda: _ensure_source(config, pair, paths, force_base))

    final = paths.artifacts / pair.name
    staging = paths.artifacts / f".{pair.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    log = paths.logs / f"{pair.name}.log"
    log.unlink(missing_ok=True)
    ok = False
    try:
        if options.packer_version.has_plugins:
            stages.run("packer init", lambda: packer.init(rendered.directory, log=log))
        argv = [packer.find_packer(), "build", "-color=false", "-on-error=cleanup",
                "-var", f"accelerator={options.accelerator}",
                "-var", f"git_revision={options.git_revision}", "."]
        if pair.builder.name != "qemu":
            argv.remove(f"accelerator={options.accelerator}")
            argv.remove("-var")

        def packer_build() -> None:
            run(argv, step=f"packer build {pair.name}", cwd=rendered.directory, log=log,
                quiet=quiet, env={"CHECKPOINT_DISABLE": "1", "PACKER_NO_COLOR": "1"})

        stages.run("packer build", packer_build)
        if after_packer is not None:
            stages.run("after packer", lambda: after_packer(staging))
        stages.run("metadata", lambda: _write_metadata(config, pair, staging, stages,
                                                        options.git_revision))
        ok = True
    finally:
        if not ok:
            shutil.rmtree(staging, ignore_errors=True)
    publish(staging, final)
    say(f"==> [{pair.name}] done in {time.monotonic() - stages.started:.1f}s: {final}")
    return BuildResult(pair.name, final, stages.seconds)


def _write_metadata(config: Config, pair: Pair, staging: Path, stages: Stages,
                    git_revision: str) -> None:
    output = staging / "output"
    if output.is_dir():  # flatten the builder's output dir into the artifact dir
        for item in output.iterdir():
            item.rename(staging / item.name)
        output.rmdir()
    guest = staging / GUEST_MANIFEST
    components = json.loads(guest.read_text())["components"] if guest.exists() else {}
    files = artifact_files(staging)
    box = staging / f"{pair.name}.box"
    if box.exists() and pair.builder.vagrant_provider:
        final_box = staging.parent / pair.name / box.name
        catalog = box_catalog(config["trial"]["box_name"], box_version(config["project"]["version"]),
                              pair.builder.vagrant_provider, final_box, files[box.name]["sha256"])
        write_json(staging / CATALOG, catalog)
    write_json(staging / METADATA, {
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


def build_many(config: Config, pairs: Sequence[Pair], paths: Paths, options: RenderOptions, *,
               parallel: int = 1, quiet: bool = False, force_base: bool = False) -> list[BuildResult]:
    if parallel <= 1 or len(pairs) == 1:
        return [build_pair(config, p, paths, options, quiet=quiet, force_base=force_base)
                for p in pairs]
    # Base images are shared between pairs of one target: build them first, one by one.
    for pair in pairs:
        _ensure_source(config, pair, paths, force_base)
    pool = ThreadPoolExecutor(max_workers=parallel)
    futures = [pool.submit(build_pair, config, p, paths, options, quiet=True) for p in pairs]
    try:
        return [f.result() for f in futures]
    except BaseException:
        # Ctrl-C/SIGTERM arrive in this thread: stop the workers' Packer (and QEMU) groups
        # so that each worker removes its staging directory, then wait for them.
        for f in futures:
            f.cancel()
        stop_all()
        pool.shutdown(wait=True)
        raise
    finally:
        pool.shutdown(wait=True)


def run_builds(config: Config, paths: Paths, targets: Sequence[str], builders: Sequence[str], *,
               parallel: int = 1, accel: str | None = None, quiet: bool = False,
               force_base: bool = False) -> list[BuildResult]:
    """Select pairs, resolve the accelerator once, check every pair, then build."""
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
    options = render_options(config, paths)
    if any(p.builder.name == "qemu" for p in pairs):
        requested = accel or config["build"]["accelerator"]
        if requested not in ("auto", "kvm", "tcg"):
            raise UserError(f"--accel {requested!r}: expected auto, kvm or tcg")
        probe = accel_mod.resolve(requested, paths.cache)
        say(f"==> accelerator: {probe.accel} ({probe.reason})")
        from dataclasses import replace

        options = replace(options, accelerator=accel_mod.packer_accelerator(probe.accel))
    return build_many(config, pairs, paths, options, parallel=parallel, quiet=quiet,
                      force_base=force_base)
