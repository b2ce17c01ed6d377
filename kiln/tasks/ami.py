"""The `ami` tasks: bake AMIs, list and prune them, launch clusters from them and take
them down again. Thin: options in, kiln.aws does the work. tasks.py adds this collection."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from invoke import Collection
from invoke.exceptions import Exit

from kiln.config import catalog
from kiln.config.load import Config
from kiln.paths import Paths
from kiln.table import format_table
from kiln.tasks.cli import COMMON_HELP, config_from, handle_errors, say, split_csv, task, warn

COMMON = ["config", "set_"]
REGION_HELP = "AWS region (default: aws.region of the config)."
NAME_HELP = "Cluster name, as given to (or printed by) ami.launch."
TIMEOUT_HELP = "Seconds to wait for instances to change state (default 600)."


def _aws_task(func: Callable[..., Any]) -> Callable[..., Any]:
    """handle_errors, with AWS credential/endpoint failures turned into one-line UserErrors."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from kiln.aws.session import aws_errors

        with aws_errors():
            return func(*args, **kwargs)

    return handle_errors(wrapper)


def _session(cfg: Config, region: str) -> Any:
    """A session for --region (else aws.region): the region checked and its endpoint reachable."""
    from kiln.aws.session import connect

    return connect(region or cfg["aws"]["region"])


def _regions(cfg: Config, region: str) -> list[str]:
    from kiln.aws.session import check_region

    regions = [region] if region else [cfg["aws"]["region"], *cfg["aws"]["extra_regions"]]
    return [check_region(r) for r in regions]


@task(iterable=[*COMMON, "target"], help={
    **COMMON_HELP,
    "target": "Target(s) to bake, e.g. ubuntu-24.04, amazonlinux-2023 (default: build.targets with an AMI).",
    "region": "Build region (default: aws.region); aws.extra_regions get copies.",
    "quiet": "Print only kiln's stage lines; Packer's output still goes to build/logs/.",
    "force": "Bake a new AMI even when one with this build's key exists (or is pending).",
})
@_aws_task
def build(c, target=None, region="", config=None, set_=None, profile="", quiet=False, force=False):
    """Bake AMIs with Packer (amazon-ebs), require IMDSv2 on every copy, record their ids.

    Every AMI kiln bakes carries its key: the tag kiln:key and, in its name, the key's first 16
    hex digits. The key is a sha256 over the source AMI (the target's `ami` block and the AMI it
    resolves to now), everything the bake steps read (scripts, kiln's programs, component
    settings, package lists, packages kiln built; as for the qcow2 layers), the Packer version
    and the settings that change the AMI (aws.ebs, aws.imdsv2_required). Region, copy regions,
    sharing and tags are not in it.

    Before Packer starts, kiln looks for an available AMI with that key in the build region and
    each of aws.extra_regions. If the build region has one, Packer does not run: kiln says "up to
    date", copies that AMI to the copy regions that have none with the key (or uses theirs), and
    writes amis.json as a build does. An AMI with the key that is still pending (another build
    registering or copying it) stops the task with exit code 2: run it again once that AMI is
    available, or pass --force, which bakes a new AMI without looking.
    """
    from kiln.aws.bake import build_amis
    from kiln.aws.session import check_region

    targets = split_csv(target)
    if region:
        check_region(region)
    paths = Paths()
    cfg = config_from(config, set_, profile, paths)
    for name in cfg["aws"]["extra_regions"]:  # copies go there: known before anything is baked
        check_region(name)
    for result, amis in build_amis(cfg, paths, targets, region or None, quiet=quiet, force=force):
        listed = ", ".join(f"{r} {a}" for r, a in sorted(amis.items()))
        how = "up to date" if result.up_to_date else "baked"
        say(f"{result.pair}: {listed} ({how}, key {result.key[:16]}; record: {result.directory})")


@task(name="list", iterable=COMMON, help={
    **COMMON_HELP,
    "region": "Only this region (default: aws.region and aws.extra_regions).",
    "target": "Only AMIs of this target.",
})
@_aws_task
def list_(c, region="", target="", config=None, set_=None, profile=""):
    """Show kiln AMIs per region, newest first: key (the build key's first 16 hex digits), state
    and tags."""
    from kiln.aws.images import KEY_TAG, list_images

    cfg = config_from(config, set_, profile)
    aws = _session(cfg, region)
    images = list_images(aws, _regions(cfg, region), target or None)
    if not images:
        say("no kiln AMIs found")
        return
    say(format_table(["region", "target", "ami", "key", "state", "created", "kiln", "git", "source ami",
                      "name"], [
        [i.region, i.target, i.id, i.tags.get(KEY_TAG, "")[:16] or "-", i.state, i.created,
         i.tags.get("kiln:version", ""), i.tags.get("kiln:git-revision", "")[:12],
         i.tags.get("kiln:source-ami", ""), i.name]
        for i in images]))


@task(iterable=COMMON, bounds={"keep": (0, 1000)}, help={
    **COMMON_HELP,
    "keep": "How many of the newest AMIs to keep per region and target (default 3).",
    "yes": "Really deregister and delete snapshots (without it: only show what would go).",
    "region": "Only this region (default: aws.region and aws.extra_regions).",
    "target": "Only AMIs of this target.",
})
@_aws_task
def prune(c, keep=3, yes=False, region="", target="", config=None, set_=None, profile=""):
    """Deregister all but the newest N kiln AMIs and delete their snapshots (dry run by default)."""
    from kiln.aws import images

    cfg = config_from(config, set_, profile)
    aws = _session(cfg, region)
    doomed = images.prune_plan(images.list_images(aws, _regions(cfg, region), target or None), keep)
    if not doomed:
        say(f"nothing to prune: at most {keep} kiln AMI(s) per region and target")
        return
    say(format_table(["region", "target", "ami", "created", "snapshots"],
                     [[i.region, i.target, i.id, i.created, " ".join(i.snapshots)] for i in doomed]))
    if not yes:
        say(f"\ndry run: {len(doomed)} AMI(s) would be deregistered; add --yes to do it")
        return
    report = images.prune(aws, doomed)
    say(f"\nderegistered {len(report.deregistered)} AMI(s), deleted {len(report.snapshots)} snapshot(s)")
    for problem in report.problems:
        warn(problem)
    if report.problems:
        raise Exit(code=1)


@task(iterable=COMMON, bounds={"timeout": (1, 86400)}, help={
    **COMMON_HELP,
    "shape": "Cluster shape: 1 (standalone), Nm or NmMa, e.g. 3m2a (default: cluster.default_shape).",
    "name": "Cluster name (default: <cluster.name>-<shape>, e.g. kiln-3m2a).",
    "target": "Which AMI: the newest kiln AMI of this target (default ubuntu-24.04).",
    "region": REGION_HELP,
    "timeout": TIMEOUT_HELP,
})
@_aws_task
def launch(c, shape="", name="", target="ubuntu-24.04", region="", timeout=600, config=None, set_=None,
           profile=""):
    """Launch a Mesos cluster on EC2 from the newest kiln AMI; prints the UI URLs."""
    from kiln.aws import cluster

    paths = Paths()
    cfg = config_from(config, set_, profile, paths)
    aws = _session(cfg, region)
    result = cluster.launch(aws, cfg, paths, shape=shape or cfg["cluster"]["default_shape"], name=name,
                            target=target, timeout=float(timeout))
    say(_nodes_table(result.nodes))
    for line in cluster.ui_urls(result.nodes, catalog.load_cached(paths.root).node_catalog(cfg.data)):
        say(line)
    for note in result.notes:
        warn(note)
    say(f"\n{result.name} is up: `invoke ami.ssh-config {result.name}`, `invoke ami.destroy {result.name}`")


@task(iterable=COMMON, help={**COMMON_HELP, "name": NAME_HELP, "region": REGION_HELP})
@_aws_task
def status(c, name, region="", config=None, set_=None, profile=""):
    """Show a cluster's instances, security group and key pair (found by tag)."""
    from kiln.aws import cluster

    paths = Paths()
    cfg = config_from(config, set_, profile, paths)
    aws = _session(cfg, region)
    state = cluster.status(aws, name)
    if state.empty:
        say(f"no resources tagged kiln:cluster={name} in {aws.region}")
        return
    say(_nodes_table(state.nodes))
    say(f"security group(s): {' '.join(state.groups) or '-'}   key pair(s): {' '.join(state.keys) or '-'}")
    running = [n for n in state.nodes if n.state == "running"]
    for line in cluster.ui_urls(running, catalog.load_cached(paths.root).node_catalog(cfg.data)):
        say(line)


@task(iterable=COMMON, help={**COMMON_HELP, "name": NAME_HELP, "region": REGION_HELP})
@_aws_task
def ssh_config(c, name, region="", config=None, set_=None, profile=""):
    """Write build/aws/NAME/ssh_config (one Host per node: NAME-m1, ...) for ssh and testinfra."""
    from kiln.aws import cluster

    paths = Paths()
    cfg = config_from(config, set_, profile, paths)
    path, nodes = cluster.write_ssh_config(_session(cfg, region), cfg, paths, name)
    say(str(path))
    say(f"e.g. ssh -F {path} {name}-{nodes[0].name}")


@task(iterable=COMMON, bounds={"timeout": (1, 86400)},
      help={**COMMON_HELP, "name": NAME_HELP, "region": REGION_HELP, "timeout": TIMEOUT_HELP})
@_aws_task
def destroy(c, name, region="", timeout=600, config=None, set_=None, profile=""):
    """Terminate a cluster's instances, then delete its security group and imported key pair."""
    from kiln.aws import cluster

    cfg = config_from(config, set_, profile)
    aws = _session(cfg, region)
    report = cluster.destroy(aws, name, float(timeout))
    if not (report.instances or report.groups or report.keys or report.problems):
        say(f"nothing to destroy: no resources tagged kiln:cluster={name} in {aws.region}")
        return
    say(f"removed: {report.summary()}")
    for problem in report.problems:
        warn(f"could not remove: {problem}")
    if report.problems:
        raise Exit(code=1)


def _nodes_table(nodes: list[Any]) -> str:
    return format_table(["node", "role", "instance", "state", "private ip", "public ip"],
                        [[n.name, n.role, n.instance_id, n.state, n.private_ip, n.public_ip or "-"]
                         for n in nodes])


ns = Collection("ami", build, list_, prune, launch, status, ssh_config, destroy)
