"""kiln's command line: `invoke --list`. Each task parses options and calls kiln.app."""

from __future__ import annotations

from invoke import Collection, task
from invoke.exceptions import Exit

from kiln import app
from kiln import doctor as doctor_mod
from kiln.cli import COMMON_HELP, config_from, handle_errors, say, split_csv
from kiln.paths import Paths

SELECT_HELP = {
    "target": "Target name(s) from config.json `targets`, comma separated or repeated "
              "(default: build.targets).",
    "builder": "Builder(s): qemu, virtualbox, amazon-ebs (default: build.builders).",
}
COMMON = ["config", "set_"]


@task(iterable=[*COMMON, "target", "builder"], help={**COMMON_HELP, **SELECT_HELP})
@handle_errors
def render(c, target=None, builder=None, config=None, set_=None, profile=""):
    """Render Packer templates and Vagrantfiles into build/ (no tool runs)."""
    paths = Paths()
    cfg = config_from(config, set_, profile, paths)
    result = app.render(cfg, paths, split_csv(target), split_csv(builder))
    for item in result.packer:
        say(f"rendered {item.template.relative_to(paths.root)}")
    for directory in result.vagrant:
        say(f"rendered {(directory / 'Vagrantfile').relative_to(paths.root)}")


@task(iterable=[*COMMON, "target", "builder"], help={**COMMON_HELP, **SELECT_HELP})
@handle_errors
def validate(c, target=None, builder=None, config=None, set_=None, profile=""):
    """Render, then packer validate + shellcheck + vagrant validate; summary table."""
    paths = Paths()
    cfg = config_from(config, set_, profile, paths)
    summary = app.validate(cfg, paths, split_csv(target), split_csv(builder))
    say("")
    say(summary.table())
    failed = [ch for ch in summary.checks if ch.result == "FAIL"]
    say(f"\n{len(summary.checks) - len(failed)} passed, {len(failed)} failed")
    if failed:
        raise Exit(code=1)


@task(help={
    "goal": "What you want to do: build, vagrant, aws or all (default).",
    "probe": "Boot a tiny guest to find out whether KVM really works (refreshes the cache).",
})
@handle_errors
def doctor(c, goal="all", probe=False):
    """Check the tools a goal needs: found / missing / how to install."""
    if goal not in doctor_mod.GOALS:
        from kiln.errors import UserError

        raise UserError(f"--goal {goal!r}: expected one of {', '.join(doctor_mod.GOALS)}")
    findings = doctor_mod.run_checks(Paths(), goal, probe)
    say(doctor_mod.table(findings))
    blocking = doctor_mod.needed(findings, goal)
    if blocking:
        say(f"\nmissing for '{goal}': {', '.join(f.name for f in blocking)}")
        raise Exit(code=2)


@task(iterable=[*COMMON, "target", "builder"], help={
    **COMMON_HELP, **SELECT_HELP,
    "parallel": "Build up to N pairs at once (default 1; base images are built first, one by one).",
    "accel": "QEMU accelerator: auto (probe whether KVM really runs a guest), kvm or tcg.",
    "quiet": "Print only kiln's stage lines; Packer's output still goes to build/logs/.",
    "force_base": "Rebuild cached base images even when their inputs did not change.",
})
@handle_errors
def build(c, target=None, builder=None, config=None, set_=None, profile="", parallel=1,
          accel="", quiet=False, force_base=False):
    """Bake images with Packer into build/artifacts/<target>-<builder>/."""
    from kiln import build as build_mod

    paths = Paths()
    cfg = config_from(config, set_, profile, paths)
    results = build_mod.run_builds(cfg, paths, split_csv(target), split_csv(builder),
                                   parallel=int(parallel), accel=accel or None, quiet=quiet,
                                   force_base=force_base)
    for r in results:
        say(f"{r.pair}: {r.directory}")


@task(iterable=[*COMMON, "target"], help={
    **COMMON_HELP,
    "target": "Target with a locally built base image (default: every such target).",
    "force": "Rebuild even when the cached image's fingerprint matches.",
})
@handle_errors
def base(c, target=None, config=None, set_=None, profile="", force=False):
    """Build the local base image of targets that have no downloadable one (debian-12)."""
    from kiln.base import build_base

    paths = Paths()
    cfg = config_from(config, set_, profile, paths)
    names = split_csv(target) or [n for n, t in cfg["targets"].items() if "base" in t]
    for name in names:
        entry = cfg["targets"].get(name)
        if entry is None or "base" not in entry:
            from kiln.errors import UserError

            raise UserError(f"target {name!r} has no `base` block: it starts from a downloaded image")
        image = build_base(name, entry, paths.build, force=force,
                           log=paths.logs / f"base-{name}.log")
        say(f"{name}: {image.path}")


@task(iterable=COMMON, help={
    **COMMON_HELP,
    "target": "Target whose built image to boot (default: debian-12).",
    "builder": "Builder that made it (boot tests run qcow2 images: qemu).",
    "accel": "QEMU accelerator: auto (probe), kvm or tcg.",
    "quiet": "Keep only the summary; testinfra output still goes to build/logs/.",
})
@handle_errors
def test(c, target="debian-12", builder="qemu", config=None, set_=None, profile="", accel="",
         quiet=False):
    """Boot a built image, apply a standalone node spec, run the testinfra suites (JUnit XML)."""
    from kiln.boottest import boot_test

    paths = Paths()
    cfg = config_from(config, set_, profile, paths)
    result = boot_test(cfg, paths, target, builder, accel=accel or None, quiet=quiet)
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in result.seconds.items())
    say(f"{result.pair}: {'PASSED' if result.passed else 'FAILED'} ({timings}); report: {result.report}")
    if not result.passed:
        raise Exit(code=1)


@task(iterable=["target"], help={"target": "Target(s) to pin (default: every target with an image)."})
@handle_errors
def pin(c, target=None):
    """Fetch published checksum files and pin image sha256 values in config.json (online)."""
    from kiln.pin import pin_targets

    for name, (old, new) in pin_targets(Paths().config, split_csv(target)).items():
        say(f"{name}: {old or '(unpinned)'} -> {new}")


@task(help={"all": "Also remove caches: base images, the KVM probe result, build keys."})
@handle_errors
def clean(c, all=False):
    """Remove generated files under build/ (keeps caches unless --all)."""
    for path in app.clean(Paths(), everything=all):
        say(f"removed {path}")


ns = Collection(render, validate, build, base, test, doctor, pin, clean)
