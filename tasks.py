"""kiln's command line: `invoke --list`. Each task parses options and calls kiln.tasks.app."""

from __future__ import annotations

from invoke import Collection
from invoke.exceptions import Exit

from kiln import doctor as doctor_mod
from kiln.paths import Paths
from kiln.tasks import app
from kiln.tasks.ami import ns as ami_ns
from kiln.tasks.cache import ns as cache_ns
from kiln.tasks.cli import (
    ACCELERATORS,
    COMMON_HELP,
    config_from,
    enable_help,
    handle_errors,
    one_of,
    say,
    split_csv,
    task,
)
from kiln.tasks.report import report

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
    result = app.render(cfg, paths, split_csv(target), split_csv(builder, "--builder"))
    for item in result.packer:
        for template in item.templates:
            say(f"rendered {template.relative_to(paths.root)}")
    for directory in result.vagrant:
        say(f"rendered {(directory / 'Vagrantfile').relative_to(paths.root)}")


@task(iterable=[*COMMON, "target", "builder"], help={**COMMON_HELP, **SELECT_HELP})
@handle_errors
def validate(c, target=None, builder=None, config=None, set_=None, profile=""):
    """Render, then packer validate + shellcheck + vagrant validate; summary table."""
    paths = Paths()
    cfg = config_from(config, set_, profile, paths)
    summary = app.validate(cfg, paths, split_csv(target), split_csv(builder, "--builder"))
    say("")
    say(summary.table())
    say(f"\n{summary.verdict()}")
    if not summary.ok:
        raise Exit(code=1)


@task(help={
    "goal": "What you want to do: build, vagrant, aws or all (default).",
    "probe": "Boot a tiny guest to find out whether KVM really works (refreshes the cache).",
})
@handle_errors
def doctor(c, goal="all", probe=False):
    """Check the tools a goal needs: found / missing / how to install."""
    one_of("--goal", goal, doctor_mod.GOALS)
    findings = doctor_mod.run_checks(Paths(), goal, probe)
    say(doctor_mod.table(findings))
    blocking = doctor_mod.needed(findings, goal)
    if blocking:
        say(f"\nmissing for '{goal}': {', '.join(f.name for f in blocking)}")
        raise Exit(code=2)


@task(iterable=[*COMMON, "target", "builder"], bounds={"parallel": (1, 64)}, help={
    **COMMON_HELP, **SELECT_HELP,
    "parallel": "Build up to N pairs at once (default 1; base images are built first, one by one).",
    "accel": "QEMU accelerator: auto (probe whether KVM really runs a guest), kvm or tcg.",
    "quiet": "Print only kiln's stage lines; Packer's output still goes to build/logs/.",
    "force_base": "Rebuild cached base images even when their inputs did not change.",
    "force": "Rebuild every layer even when the cache has it (the base image: --force-base).",
    "explain": "Build nothing: say, per layer, which inputs changed since the published image.",
    "fail_fast": "With several pairs: stop the others as soon as one fails (default: they finish; "
                 "a failing pair is reported when it fails, and the summary lists every pair).",
    "timeout": "Stop one Packer build (one layer) that runs longer than this, as hung: 4h (default), "
               "90m, 1h30m, or seconds.",
})
@handle_errors
def build(c, target=None, builder=None, config=None, set_=None, profile="", parallel=1,
          accel="", quiet=False, force_base=False, force=False, explain=False, fail_fast=False,
          timeout=""):
    """Bake images with Packer into build/artifacts/<target>-<builder>/, layer by cached layer.

    A qemu image is a chain of layers (base OS -> system packages -> kiln's payload), each cached
    by a key over everything that can change it: only the layers from the first changed one up
    are rebuilt, and with nothing changed the build says "up to date" in seconds."""
    from kiln.image import build as build_mod

    one_of("--accel", accel, ACCELERATORS)
    targets, builders = split_csv(target), split_csv(builder, "--builder")
    seconds = build_mod.parse_timeout(timeout)
    paths = Paths()
    cfg = config_from(config, set_, profile, paths)
    if explain:
        for line in build_mod.explain_builds(cfg, paths, targets, builders):
            say(line)
        return
    results = build_mod.run_builds(cfg, paths, targets, builders, parallel=parallel, accel=accel or None,
                                   quiet=quiet, force_base=force_base, force=force, fail_fast=fail_fast,
                                   timeout=seconds)
    for r in results:
        state = "up to date" if r.up_to_date else f"built {', '.join(r.built) or 'nothing'}"
        say(f"{r.pair}: {r.directory} ({state}{f'; key {r.key[:16]}' if r.key else ''})")


@task(iterable=COMMON, bounds={"jobs": (0, 256)}, help={
    **COMMON_HELP,
    "name": "The component to package: one with components/NAME/package/recipe.json (mesos).",
    "target": "Target whose native package to build (default debian-12).",
    "force": "Rebuild even when a package with the same key is cached (recompiles too).",
    "jobs": "Parallel compile jobs (default 0: components.NAME.build.jobs).",
})
@handle_errors
def package(c, name, target="debian-12", force=False, jobs=0, config=None, set_=None, profile=""):
    """Build a component from source into the target's native package (.deb), cached by key.

    Apache Mesos compiles for one to two hours on two cores; progress (files compiled, elapsed,
    estimate) is printed every minute and everything goes to build/logs/package-NAME-TARGET.log.
    A second run with the same inputs is a no-op; components.NAME.build.tree packages a prebuilt
    installed tree instead of compiling."""
    from kiln.packages import build as packages

    paths = Paths()
    cfg = config_from(config, set_, profile, paths)
    built = packages.ensure(cfg.data, paths, name, target, force=force, jobs=jobs, say=say)
    state = "cached" if built.cached else "built"
    say(f"{name}: {built.path} ({state}; {built.meta['size'] / 2**20:.1f} MiB, key {built.meta['key'][:16]})")


@task(iterable=[*COMMON, "target"], help={
    **COMMON_HELP,
    "target": "Target with a locally built base image (default: every such target).",
    "force": "Rebuild even when the cached image's fingerprint matches.",
})
@handle_errors
def base(c, target=None, config=None, set_=None, profile="", force=False):
    """Build the local base image of targets that have no downloadable one (debian-12)."""
    from kiln.image.base import build_base

    paths = Paths()
    cfg = config_from(config, set_, profile, paths)
    names = split_csv(target) or [n for n, t in cfg["targets"].items() if "base" in t]
    for name in names:  # every name checked before the first image is built
        if "base" not in cfg["targets"].get(name, {}):
            from kiln.errors import UserError

            raise UserError(f"target {name!r} has no `base` block: it starts from a downloaded image",
                            "targets with one: " + ", ".join(n for n, t in cfg["targets"].items()
                                                             if "base" in t))
    for name in names:
        image = build_base(name, cfg["targets"][name], paths.build, force=force,
                           log=paths.logs / f"base-{name}.log")
        say(f"{name}: {image.path}")


@task(iterable=COMMON, help={
    **COMMON_HELP,
    "target": "Target whose built (qemu) image to write out (default: debian-12).",
    "format": "qcow2 (default: the image as the box holds it, compressed) or raw (sparse; for tools "
              "that take a plain disk).",
    "output": "The file to write (default: build/exports/<target>-qemu.qcow2, or .img for raw).",
    "force": "Replace the file when it exists.",
})
@handle_errors
def export(c, target="debian-12", format_="qcow2", output="", force=False, config=None, set_=None,
           profile=""):
    """Write a built image to a file of its own, out of its Vagrant box (for virt-install & co.).

    The published box is checked against its build's metadata first; the file appears only when
    complete."""
    from pathlib import Path

    from kiln.errors import UserError
    from kiln.image import export as export_mod

    one_of("--format", format_, export_mod.FORMATS)
    paths = Paths()
    targets = config_from(config, set_, profile, paths)["targets"]
    if target not in targets:
        raise UserError(f"--target {target!r}: no such target", f"pick one of {', '.join(sorted(targets))}")
    path = Path(output).expanduser() if output else export_mod.default_output(paths.exports, target, format_)
    say(f"==> {target}: writing the {format_} image to {path}")
    done = export_mod.export_image(paths.artifacts, target, format_, path, force=force,
                                   log=paths.logs / f"export-{target}.log")
    say(f"{done.path}: {done.format}, {done.bytes / 2**20:.0f} MiB on disk, image sha256 {done.sha256} "
        f"({done.seconds:.0f}s)")


@task(iterable=COMMON, help={
    **COMMON_HELP,
    "target": "Target whose built image to boot (default: debian-12).",
    "builder": "Builder that made it: qemu (the qcow2 on virtio) or virtualbox (the box's VMDK on "
               "AHCI and e1000, as VirtualBox presents them).",
    "accel": "QEMU accelerator: auto (probe), kvm or tcg.",
    "cluster": "Instead of booting an image: test every machine of this Vagrant cluster (invoke up), "
               "each for its role, in parallel.",
    "aws": "Instead of booting an image: test every instance of this AWS cluster (invoke ami.launch).",
    "region": "With --aws: the cluster's region (default: aws.region).",
    "quiet": "Keep only the summary; testinfra output still goes to build/logs/.",
})
@handle_errors
def test(c, target="debian-12", builder="qemu", config=None, set_=None, profile="", accel="",
         cluster="", aws="", region="", quiet=False):
    """Verify with the testinfra suites: a booted image (standalone node spec) or a cluster."""
    one_of("--accel", accel, ACCELERATORS)
    one_of("--builder", builder, ("qemu", "virtualbox"))
    paths = Paths()
    if aws:
        from kiln.aws.cluster import verify as verify_aws

        passed, report, count = verify_aws(config_from(config, set_, profile, paths), paths, aws,
                                           region=region or None, quiet=quiet)
        say(f"{aws}: {'PASSED' if passed else 'FAILED'} on {count} instance(s); report: {report}")
        if not passed:
            raise Exit(code=1)
        return
    if cluster:
        from kiln.vagrant.cluster import verify

        found, passed, report = verify(paths, cluster, quiet=quiet)
        say(f"{found.name}: {'PASSED' if passed else 'FAILED'} on {len(found.machines)} machine(s); "
            f"report: {report}")
        if not passed:
            raise Exit(code=1)
        return
    from kiln.image.boottest import boot_test

    cfg = config_from(config, set_, profile, paths)
    result = boot_test(cfg, paths, target, builder, accel=accel or None, quiet=quiet)
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in result.seconds.items())
    say(f"{result.pair}: {'PASSED' if result.passed else 'FAILED'} ({timings}); report: {result.report}")
    if not result.passed:
        raise Exit(code=1)


def nightly_options(cluster_shape: str, accel: str, report_dir: str, expect_file: list[str] | None
                    ) -> tuple[str, str, list[str]]:
    """nightly's options, checked before anything is built: (cluster_shape, accel, expect_files)."""
    from pathlib import Path

    from kiln.config.shapes import parse_shape
    from kiln.errors import UserError

    if cluster_shape:
        try:
            parse_shape(cluster_shape)
        except ValueError as exc:
            raise UserError(f"--cluster-shape: {exc}", "or --cluster-shape '' for no cluster") from None
    one_of("--accel", accel, ACCELERATORS)
    if report_dir and Path(report_dir).exists() and not Path(report_dir).is_dir():
        raise UserError(f"--report-dir {report_dir}: exists and is not a directory",
                        "name a directory (it is created when missing)")
    for name in expect_file or []:
        if not name.startswith("/") or ":" in name:
            raise UserError(f"--expect-file {name!r}: expected an absolute path on the node without ':'",
                            "e.g. --expect-file /etc/kiln/canary")
    return cluster_shape, accel, list(expect_file or [])


CLUSTER_HELP = {"cluster": "Cluster name (a directory under build/vagrant/; default: the only one "
                           "with machines)."}


@task(iterable=COMMON, bounds={"timeout": (1, 86400)}, help={
    **COMMON_HELP,
    "shape": "1 (one standalone node), Nm (N masters) or NmMa (N masters, M agents), e.g. 3m2a "
             "(default: cluster.default_shape).",
    "name": "Cluster name (default: <cluster.name>-<shape>, e.g. kiln-3m2a).",
    "provider": "Vagrant provider: libvirt or virtualbox (default: trial.provider).",
    "accel": "libvirt domain type: auto (probe whether KVM runs a guest), kvm or tcg.",
    "timeout": "Seconds to wait for the cluster to be ready after the machines are up (default 900).",
    "quiet": "Keep Vagrant's output in build/logs/ only.",
})
@handle_errors
def up(c, shape="", name="", provider="", accel="", timeout=900, quiet=False, config=None, set_=None,
       profile=""):
    """Bring up a Vagrant cluster of the given shape and wait until it is ready."""
    from kiln.config.catalog import one_line
    from kiln.vagrant import cluster as cluster_mod

    one_of("--accel", accel, ACCELERATORS)
    paths = Paths()
    cfg = config_from(config, set_, profile, paths)
    result, ready, seconds = cluster_mod.up(cfg, paths, shape or cfg["cluster"]["default_shape"],
                                            name=name or None, provider=provider or None,
                                            accel=accel or None, timeout=float(timeout), quiet=quiet)
    say(f"\n{result.name}: READY in {seconds['total']:.0f}s (machines {seconds['vagrant up']:.0f}s, "
        f"services {seconds['ready']:.0f}s): {ready.line()}")
    for machine in result.machines:
        ui = one_line(result.data["catalog"], machine["role"], machine["ip"],
                      result.data["box"].get("components"))
        say(f"  {machine['name']:<8} {machine['role']:<10} {machine['ip']:<15} {ui}")
    say(f"next: invoke status --cluster {result.name} | invoke ssh NODE | invoke test --cluster "
        f"{result.name} | invoke down --destroy --cluster {result.name}")


@task(help=CLUSTER_HELP)
@handle_errors
def status(c, cluster=""):
    """Machines of a cluster: Vagrant state, role, address and readiness of their services."""
    from kiln.table import format_table
    from kiln.vagrant import cluster as cluster_mod

    found, rows, overall = cluster_mod.status(Paths(), cluster or None)
    say(f"cluster {found.name} ({found.directory})")
    say(format_table(["machine", "role", "ip", "state", "services"],
                     [[r.name, r.role, r.ip, r.state, r.ready] for r in rows]))
    if overall is not None:
        say(f"{'READY' if overall.ready else 'NOT READY'}: {overall.line()}")


@task(free_text=["command"], help={**CLUSTER_HELP, "node": "Machine name, e.g. m1 or a2 (invoke ssh m1).",
            "command": "Run this command instead of an interactive shell."})
@handle_errors
def ssh(c, node, cluster="", command=""):
    """Log in to a cluster machine (vagrant ssh)."""
    from kiln.vagrant import cluster as cluster_mod

    if node.startswith("-"):  # an option where the machine name goes (--help prints the help)
        from kiln.errors import UserError

        raise UserError("usage: invoke ssh NODE [--cluster NAME] [--command CMD]",
                        "`invoke --help ssh` explains the options, `invoke status` lists the machines")
    code = cluster_mod.ssh(Paths(), cluster or None, node, command or None)
    if code:
        raise Exit(code=code)


@task(name="ssh-config", help=CLUSTER_HELP)
@handle_errors
def ssh_config(c, cluster=""):
    """Print an ssh_config with one Host block per machine (for ssh -F and testinfra)."""
    from kiln.vagrant import cluster as cluster_mod

    found = cluster_mod.load(Paths(), cluster or None)
    path = cluster_mod.write_ssh_config(found)
    say(path.read_text(encoding="utf-8").rstrip())
    say(f"# written to {path}: ssh -F {path} {found.machines[0]['name']}")


@task(help={**CLUSTER_HELP, "destroy": "Destroy the machines and the cluster directory (default: halt)."})
@handle_errors
def down(c, cluster="", destroy=False):
    """Halt a cluster's machines, or destroy them with --destroy."""
    from kiln.vagrant import cluster as cluster_mod

    found = cluster_mod.down(Paths(), cluster or None, destroy)
    say(f"{found.name}: {'destroyed' if destroy else 'halted'}")
    note = app.box_stays(found.data.get("box")) if destroy else ""
    if note:
        say(note)


@task(iterable=[*COMMON, "targets", "builders", "expect_file"], help={
    **COMMON_HELP,
    "targets": "Only these targets (comma separated or repeated; default: every target in config.json).",
    "builders": "Only these builders: qemu, virtualbox, amazon-ebs (comma separated or repeated; "
                "default: every builder each target supports).",
    "report_dir": "Where nightly.json, nightly.xml and nightly.html go (default: build/reports).",
    "cluster_shape": "Cluster shape also brought up and verified for the first passing qemu target "
                     "(default 3m; '' for none).",
    "accel": "QEMU/libvirt accelerator for builds, boots and the cluster: auto, kvm or tcg.",
    "expect_file": "Also require this file on every booted node (repeatable): a canary that proves a "
                   "failing check fails the night and shows in all three reports.",
})
@handle_errors
def nightly(c, targets=None, builders=None, report_dir="", cluster_shape="3m", accel="", expect_file=None,
            config=None, set_=None, profile=""):
    """Build, boot and verify every image this machine can make; JUnit, JSON and HTML report."""
    from pathlib import Path

    from kiln.nightly import Options, run_nightly

    names = split_csv(targets, "--targets")
    only = split_csv(builders, "--builders")
    options = nightly_options(cluster_shape, accel, report_dir, expect_file)
    paths = Paths()
    cfg = config_from(config, set_, profile, paths)
    overlay = [*(f"--config={f}" for f in config or []), *(f"--set={s}" for s in set_ or []),
               *([f"--profile={profile}"] if profile else [])]
    reports = Path(report_dir) if report_dir else paths.reports
    run, written = run_nightly(cfg, paths, names, reports, Options(overlay, *options, builders=only))
    for entry in run.entries:
        say(f"  {entry.result:<8} {entry.name}{': ' + entry.reason if entry.reason else ''}")
    say(f"nightly: {run.verdict.upper()} in {run.seconds:.0f}s; reports: {written.html}, {written.junit}, "
        f"{written.json}")
    if run.verdict != "pass":
        raise Exit(code=1)


@task(iterable=["target"], help={"target": "Target(s) to pin (default: every target with an image)."})
@handle_errors
def pin(c, target=None):
    """Fetch published checksum files and pin image sha256 values in config.json (online)."""
    from kiln.errors import UserError
    from kiln.image.pin import pin_targets

    paths = Paths()
    names = split_csv(target)
    targets = config_from(None, None, None, paths)["targets"]  # config.json checked before any download
    pinnable = [n for n, t in targets.items() if "image" in t]
    for name in names:
        if name not in pinnable:
            raise UserError(f"--target {name!r}: no downloadable image to pin",
                            f"targets with one: {', '.join(pinnable)}")
    for name, (old, new) in pin_targets(paths.config, names).items():
        say(f"{name}: {old or '(unpinned)'} -> {new}")


@task(iterable=COMMON, help={
    **COMMON_HELP,
    "all": "Also remove caches: base images, the KVM probe result, build keys.",
    "boxes": "Also remove the Vagrant boxes kiln added (trial.box_name, from Vagrant's boxes and "
             "libvirt's default pool, qemu:///system or $KILN_LIBVIRT_URI); refused while machines exist.",
})
@handle_errors
def clean(c, all=False, boxes=False, config=None, set_=None, profile=""):
    """Remove generated files under build/ (keeps caches unless --all; boxes only with --boxes)."""
    paths = Paths()
    uri = app.libvirt_uri()
    plan = app.plan_boxes(config_from(config, set_, profile, paths), paths, uri) if boxes else None
    for path in app.clean(paths, everything=all):
        say(f"removed {path}")
    if plan is None:
        return
    if plan.pool_note:
        say(f"note: {plan.pool_note}")
    done = app.remove_boxes(plan, uri)
    for line in done:
        say(f"removed {line}")
    if not done:
        say(f"no box {plan.box_name} in {plan.folder.parent} or libvirt's pool: nothing to remove")


ns = Collection(render, validate, build, base, package, export, test, up, status, ssh, ssh_config, down,
                nightly, report, doctor, pin, clean)
ns.add_collection(ami_ns)
ns.add_collection(cache_ns)
enable_help(ns)
