"""`invoke nightly`: build, boot and verify every image this machine can make, then report.

The nightly is a sequence of the tasks a user types, each run as its own `invoke` process
(through kiln.runner, output in build/logs/nightly/): per target x builder `invoke build`
then `invoke test` (qemu), or `invoke ami.build`, `ami.launch`, `test --aws` and
`ami.destroy` (amazon-ebs); for one target also a cluster: `invoke up --shape 3m`,
`invoke test --cluster`, `invoke down --destroy`. Teardown steps run even when tests fail.

What cannot run here (no internet for a cloud image, no VirtualBox, no AWS credentials, a
component with no source) is reported as not run with the reason, never as passed. The
report (kiln.report) is written even when a step fails or the run is interrupted.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from kiln import __version__
from kiln.config.load import Config
from kiln.config.targets import BUILDERS, Pair, load_targets
from kiln.errors import Interrupted, UserError
from kiln.gitinfo import git_revision
from kiln.image.preflight import component_problems
from kiln.output import say
from kiln.paths import Paths
from kiln.report import (
    Entry,
    Run,
    Written,
    build_facts,
    checks_from_junit,
    entry_name,
    host_facts,
    write_reports,
)
from kiln.runner import run
from kiln.vagrant.environment import vagrant_env

EXPECT_ENV = "KILN_EXPECT_FILES"  # read by tests/infra/test_expected.py


@dataclass(frozen=True)
class Planned:
    pair: Pair
    not_run: str = ""


@dataclass
class Options:
    overlay: list[str] = field(default_factory=list)  # --config/--set/--profile, passed to every task
    cluster_shape: str = "3m"
    accel: str = ""
    expect_files: list[str] = field(default_factory=list)
    builders: list[str] = field(default_factory=list)  # only these builders' pairs (all when empty)


def reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether the host serving `url` accepts a TCP connection (online check, no request)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file" or not parts.hostname:
        return True
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def aws_credentials() -> bool:
    import boto3

    return boto3.Session().get_credentials() is not None


def plan(config: Config, targets: Sequence[str], *, builders: Sequence[str] = (),
         online: Callable[[str], bool] = reachable,
         credentials: Callable[[], bool] = aws_credentials,
         have: Callable[[str], bool] = lambda tool: shutil.which(tool) is not None) -> list[Planned]:
    """Every target x builder that exists (whatever build.builders says: the night reports the
    others as not run), or only `builders`' pairs, each runnable or not run with the reason. No
    side effects."""
    known = load_targets(config.data)
    names = list(targets) or list(known)
    unknown = [t for t in names if t not in known]
    if unknown:
        raise UserError(f"unknown target(s): {', '.join(unknown)}", f"known: {', '.join(sorted(known))}")
    strange = [b for b in builders if b not in BUILDERS]
    if strange:
        raise UserError(f"unknown builder(s): {', '.join(strange)}", f"known: {', '.join(BUILDERS)}")
    pairs = [Pair(known[t], b) for t in names for b in BUILDERS.values()
             if known[t].supports(b.name) and (not builders or b.name in builders)]
    return [Planned(pair, _why_not(config, pair, online, credentials, have)) for pair in pairs]


def _why_not(config: Config, pair: Pair, online: Callable[[str], bool], credentials: Callable[[], bool],
             have: Callable[[str], bool]) -> str:
    problems = component_problems(config, pair)
    if problems:
        return "cannot be built as configured: " + "; ".join(problems)
    builder = pair.builder.name
    if builder in ("qemu", "virtualbox") and not have("packer"):
        return "packer is not installed"
    if builder in ("qemu", "virtualbox") and not have("qemu-system-x86_64"):
        return "qemu-system-x86_64 is not installed"
    if builder == "amazon-ebs":
        if not have("packer"):
            return "packer is not installed"
        if not credentials():
            return "no AWS credentials (the standard boto3 chain found none)"
    image = pair.target.image
    if builder in ("qemu", "virtualbox") and image is not None and not online(image["url"]):
        host = urllib.parse.urlsplit(image["url"]).hostname
        return f"{host} is not reachable: the source image cannot be downloaded (offline?)"
    return ""


# -- running the steps -----------------------------------------------------------------------------

class Steps:
    """Runs invoke tasks as child processes, timing each into an entry's stages."""

    def __init__(self, paths: Paths, options: Options, env: dict[str, str], wrap: Sequence[str] = ()) -> None:
        self.paths, self.options, self.env, self.wrap = paths, options, env, list(wrap)
        self.logs = paths.logs / "nightly"

    def task(self, entry: Entry, stage: str, args: Sequence[str], *, overlay: bool = True) -> bool:
        argv = [*self.wrap, sys.executable, "-m", "invoke", "--search-root", str(self.paths.root), *args]
        if overlay:
            argv += self.options.overlay
        log = self.logs / f"{entry.name.replace(' ', '-')}-{stage.replace(' ', '-')}.log"
        log.unlink(missing_ok=True)
        say(f"==> [{entry.name}] {stage}: invoke {' '.join(args)}")
        started = time.monotonic()
        result = run(argv, step=f"nightly {entry.name}: {stage}", log=log, env=self.env, quiet=True,
                     check=False, timeout=3 * 3600, cwd=self.paths.root)
        took = round(time.monotonic() - started, 1)
        entry.stages[stage] = took
        if result.returncode != 0:
            last = [ln for ln in result.output.splitlines() if ln.strip()][-3:]
            entry.stage_failures[stage] = f"exit {result.returncode}: {' | '.join(last)[:400]} (log: {log})"
            say(f"==> [{entry.name}] {stage}: FAILED after {took:.0f}s (log: {log})")
            return False
        say(f"==> [{entry.name}] {stage}: {took:.0f}s")
        return True


def _single(steps: Steps, planned: Planned) -> Entry:
    pair = planned.pair
    entry = Entry(entry_name(pair.target.name, pair.builder.name), pair.target.name, pair.builder.name)
    if planned.not_run:
        entry.not_run = planned.not_run
        return entry
    if pair.builder.name == "amazon-ebs":
        return _ami(steps, entry)
    accel = ["--accel", steps.options.accel] if steps.options.accel else []
    select = ["--target", pair.target.name, "--builder", pair.builder.name]
    built = steps.task(entry, "build", ["build", *select, "--quiet", *accel])
    inbuild = steps.paths.reports / f"{pair.name}-inbuild.xml"
    if inbuild.exists():
        entry.checks += checks_from_junit(inbuild, hosts=["build-vm"], phase="bake")
    if not built:
        return entry
    try:
        facts = build_facts(steps.paths.artifacts / pair.name)
        entry.artifacts, entry.components = facts.artifacts, facts.components
        entry.stages.update({f"build: {k}": v for k, v in facts.stages.items()})
    except UserError as exc:
        entry.error = str(exc)
    boot = steps.paths.reports / f"{pair.name}-boot.xml"
    boot.unlink(missing_ok=True)
    steps.task(entry, "boot test", ["test", *select, "--quiet", *accel])
    if boot.exists():
        entry.checks += checks_from_junit(boot, hosts=[pair.name], phase="boot")
    return entry


def _ami(steps: Steps, entry: Entry) -> Entry:
    name = f"nightly-{entry.target.replace('.', '-')}"
    if steps.task(entry, "ami build", ["ami.build", "--target", entry.target]):
        try:
            if steps.task(entry, "launch", ["ami.launch", "--shape", "1", "--name", name,
                                            "--target", entry.target]):
                report = steps.paths.reports / f"{name}-aws.xml"
                steps.task(entry, "boot test", ["test", "--aws", name])
                if report.exists():
                    entry.checks += checks_from_junit(report, hosts=[f"{name}-mesos"], phase="boot")
        finally:
            steps.task(entry, "destroy", ["ami.destroy", name])
    return entry


def _cluster(steps: Steps, target: str, shape: str) -> Entry:
    entry = Entry(entry_name(target, "qemu", shape), target, "qemu", shape=shape)
    if shutil.which("vagrant") is None:
        entry.not_run = "vagrant is not installed (apt-get install vagrant vagrant-libvirt)"
        return entry
    name = f"nightly-{shape}"
    chosen = ["--set", f"trial.target={target}"]
    accel = ["--accel", steps.options.accel] if steps.options.accel else []
    try:
        if steps.task(entry, "up", ["up", "--shape", shape, "--name", name, "--quiet", *accel, *chosen]):
            report = steps.paths.reports / f"{name}-cluster.xml"
            report.unlink(missing_ok=True)
            steps.task(entry, "cluster test", ["test", "--cluster", name], overlay=False)
            if report.exists():
                machines = json.loads((steps.paths.build / "vagrant" / name / "kiln-cluster.json")
                                      .read_text(encoding="utf-8"))["machines"]
                entry.checks += checks_from_junit(report, hosts=[m["name"] for m in machines], phase="boot")
    finally:
        if (steps.paths.build / "vagrant" / name).exists():
            steps.task(entry, "down", ["down", "--destroy", "--cluster", name], overlay=False)
    return entry


@contextmanager
def _cluster_network(paths: Paths, accel: str, config: Config) -> Iterator[tuple[list[str], str]]:
    """Where the cluster's VMs live: the system libvirtd when one runs; otherwise (a CI host)
    a private network namespace with kiln's own libvirtd. Yields (command prefix, note)."""
    from kiln.image import accel as accel_mod
    from kiln.vagrant import netns

    if netns.problem() is not None:
        yield [], "system libvirt"
        return
    kvm = accel_mod.resolve(accel, paths.cache).accel == "kvm"
    with netns.libvirt_namespace(f"kiln-nightly-{os.getpid()}", paths.logs / "nightly" / "libvirt",
                                 kvm=kvm, networks=netns.guard_networks(config.data)) as ns:
        try:
            yield ns.argv([]), f"private network namespace {ns.name}"
        finally:
            # The box images this run uploaded: only volumes that were not in the pool when the
            # namespace's libvirtd came up (the pool's directory is shared with every libvirtd).
            for volume in ns.new_volumes():
                if "VAGRANTSLASH" in volume:
                    ns.virsh("vol-delete", "--pool", "default", volume)


def run_nightly(config: Config, paths: Paths, targets: Sequence[str], report_dir: Path,
                options: Options, *, online: Callable[[str], bool] = reachable) -> tuple[Run, Written]:
    started = datetime.now(UTC)
    planned = plan(config, targets, builders=options.builders, online=online)
    for p in planned:
        say(f"==> plan: {p.pair.name}: {'not run: ' + p.not_run if p.not_run else 'build, boot, verify'}")
    from kiln.image.build import tool_versions

    report = Run(started=started, finished=started, host=host_facts(), tools=tool_versions(),
                 kiln_version=__version__, git_revision=git_revision(paths.root))
    env = vagrant_env(inherit=True)
    if options.expect_files:
        env[EXPECT_ENV] = ":".join(options.expect_files)
    try:
        with tempfile.TemporaryDirectory(prefix="kiln-nightly-vagrant-") as vagrant_home:
            env["VAGRANT_HOME"] = vagrant_home  # boxes added for the night go with it
            steps = Steps(paths, options, env)
            for p in planned:
                report.entries.append(_single(steps, p))
            # A cluster needs an image, not a perfect one: a failing check of the single node
            # must not hide how the cluster fares (passing images are preferred).
            built = sorted((e for e in report.entries if e.builder == "qemu" and e.artifacts
                            and "build" not in e.stage_failures), key=lambda e: e.result != "pass")
            if options.cluster_shape:
                if not built:
                    report.entries.append(Entry(f"cluster {options.cluster_shape}", "", "qemu",
                                                shape=options.cluster_shape,
                                                not_run="no qemu image was built"))
                else:
                    with _cluster_network(paths, options.accel or config["build"]["accelerator"],
                                          config) as (wrap, where):
                        say(f"==> cluster {options.cluster_shape} of {built[0].target} on {where}")
                        cluster_steps = Steps(paths, options, env, wrap)
                        report.entries.append(_cluster(cluster_steps, built[0].target,
                                                       options.cluster_shape))
    except (KeyboardInterrupt, Interrupted):
        report.finished = datetime.now(UTC)
        write_reports(report, report_dir)
        raise
    report.finished = datetime.now(UTC)
    return report, write_reports(report, report_dir)

