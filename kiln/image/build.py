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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kiln import __version__
from kiln.config.load import Config
from kiln.config.targets import Pair
from kiln.errors import UserError
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
from kiln.output import say
from kiln.paths import Paths
from kiln.runner import run, stop_all


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


def build_pair(config: Config, pair: Pair, paths: Paths, options: RenderOptions, *,
               quiet: bool = False, force_base: bool = False, force: bool = False,
               after_packer: Callable[[Path], None] | None = None) -> BuildResult:
    """`after_packer(staging)` runs once Packer succeeded, before metadata and publish (the
    AMI builds use it to finish the images in AWS and record their ids)."""
    problems = component_problems(config, pair)
    if problems:
        raise UserError(f"{pair.name} cannot be built as configured:\n  - " + "\n  - ".join(problems))
    if pair.builder.name == "virtualbox":
        return _virtualbox_box(config, pair, paths, options, quiet=quiet, force=force)
    stages = Stages(pair.name)
    for name, reason in config.excluded.items():
        say(f"==> [{pair.name}] component {name} left out: {reason}")
    built = stages.run("packages", lambda: _packages(config, pair, paths))
    options = replace(options, packages=tuple(built))
    rendered = stages.run("render", lambda: render_pair(config, pair, paths, options))
    write_pairs([rendered], paths)

    final = paths.artifacts / pair.name
    staging = paths.artifacts / f".{pair.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    ok = False
    try:
        if pair.builder.name == "qemu":
            outcome = layered.build(config, pair, paths, options, rendered, staging=staging, final=final,
                                    stage=stages.run, quiet=quiet, force=force, force_base=force_base)
            if outcome.up_to_date:
                say(f"==> [{pair.name}] done in {time.monotonic() - stages.started:.1f}s: {final}")
                shutil.rmtree(staging, ignore_errors=True)
                return BuildResult(pair.name, final, stages.seconds, up_to_date=True, key=outcome.key)
            built, key = tuple(outcome.built), outcome.key
        else:
            stages.run("source image", lambda: _ensure_source(config, pair, paths, force_base))
            _packer_single(pair, options, rendered, stages, paths, quiet)
            built, key = ("all",), ""
        if after_packer is not None:
            stages.run("after packer", lambda: after_packer(staging))
        stages.run("metadata", lambda: _write_metadata(config, pair, staging, stages,
                                                        options.git_revision, key))
        ok = True
    finally:
        if not ok:
            shutil.rmtree(staging, ignore_errors=True)
    publish(staging, final)
    shutil.rmtree(staging, ignore_errors=True)
    say(f"==> [{pair.name}] done in {time.monotonic() - stages.started:.1f}s: {final}")
    return BuildResult(pair.name, final, stages.seconds, built=built, key=key)


def _virtualbox_box(config: Config, pair: Pair, paths: Paths, options: RenderOptions, *, quiet: bool,
                    force: bool) -> BuildResult:
    """The virtualbox box is made from the qemu image (built first, from the cache when it can be):
    converted, not provisioned again; an unchanged qemu image is not converted again either."""
    from kiln.config.targets import BUILDERS
    from kiln.image import virtualbox

    qemu = build_pair(config, Pair(pair.target, BUILDERS["qemu"]), paths, options, quiet=quiet)
    stages = Stages(pair.name)
    final = paths.artifacts / pair.name
    made_from = _read_metadata(final).get("made_from", {})
    recorded = _read_metadata(qemu.directory).get("artifacts", {}).get(f"{qemu.pair}.qcow2", {})
    if not force and made_from.get("sha256") and made_from.get("sha256") == recorded.get("sha256"):
        say(f"==> [{pair.name}] up to date (made from {qemu.pair}, key {qemu.key[:16]})")
        return BuildResult(pair.name, final, stages.seconds, up_to_date=True, key=qemu.key)
    spec = virtualbox.spec_from_config(config.data, pair.target.name)
    result = stages.run("virtualbox box", lambda: virtualbox.make_box(spec, paths.artifacts,
                                                                      log=paths.logs / f"{pair.name}.log"))
    say(f"==> [{pair.name}] {result.box} ({result.sizes['box'] / 2**20:.0f} MiB)")
    stages.run("VirtualBox check", lambda: _virtualbox_check(result.box, pair, paths))
    return BuildResult(pair.name, result.directory, {**stages.seconds, **result.seconds}, built=("box",),
                       key=qemu.key)


def _virtualbox_check(box: Path, pair: Pair, paths: Paths) -> None:
    """With VirtualBox installed: `VBoxManage import --dry-run` of the box's OVF. Without it, say so."""
    import tarfile
    import tempfile

    exe = shutil.which("VBoxManage")
    if exe is None:
        say(f"==> [{pair.name}] VirtualBox is not installed: the box was not imported or booted here "
            "(kiln's tests check its OVF against the OVF 1.0 schema, `vagrant box add` it and boot the "
            "disk under QEMU on AHCI and e1000)")
        return
    with tempfile.TemporaryDirectory(prefix="kiln-vbox-") as tmp, tarfile.open(box) as tar:
        tar.extractall(tmp, filter="data")
        run([exe, "import", str(Path(tmp) / "box.ovf"), "--dry-run"],
            step=f"{pair.name}: VBoxManage import --dry-run", log=paths.logs / f"{pair.name}.log",
            quiet=True, timeout=600)
    say(f"==> [{pair.name}] VirtualBox accepted the box (VBoxManage import --dry-run)")


def _read_metadata(directory: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((directory / METADATA).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}


def _packer_single(pair: Pair, options: RenderOptions, rendered: Any, stages: Stages, paths: Paths,
                   quiet: bool) -> None:
    """One Packer build of the whole image (AMIs: there are no local layers to cache)."""
    (template,) = rendered.templates
    log = paths.logs / f"{pair.name}.log"
    log.unlink(missing_ok=True)
    if options.packer_version.has_plugins:
        stages.run("packer init", lambda: packer.init(template.parent, log=log))
    argv = [packer.find_packer(), "build", "-color=false", "-on-error=cleanup",
            "-var", f"git_revision={options.git_revision}", "."]

    def packer_build() -> None:
        run(argv, step=f"packer build {pair.name}", cwd=template.parent, log=log,
            quiet=quiet, env={"CHECKPOINT_DISABLE": "1", "PACKER_NO_COLOR": "1"})

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


def build_many(config: Config, pairs: Sequence[Pair], paths: Paths, options: RenderOptions, *,
               parallel: int = 1, quiet: bool = False, force_base: bool = False,
               force: bool = False) -> list[BuildResult]:
    if parallel <= 1 or len(pairs) == 1:
        return [build_pair(config, p, paths, options, quiet=quiet, force_base=force_base, force=force)
                for p in pairs]
    # Base images are shared between pairs of one target: build them first, one by one.
    for pair in pairs:
        _ensure_source(config, pair, paths, force_base)
    pool = ThreadPoolExecutor(max_workers=parallel)
    futures = [pool.submit(build_pair, config, p, paths, options, quiet=True, force=force) for p in pairs]
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
               force_base: bool = False, force: bool = False) -> list[BuildResult]:
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
        options = replace(options, accelerator=accel_mod.packer_accelerator(probe.accel))
    return build_many(config, pairs, paths, options, parallel=parallel, quiet=quiet,
                      force_base=force_base, force=force)


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
            plan = layered.plan_for(config, pair, paths, pair_options, rendered,
                                    layered.base_key_for(config, pair, paths))
            lines.append(f"{pair.name}:")
            lines += [f"  {line}" for line in layered.explain(paths.artifacts / pair.name, plan)]
    return lines
