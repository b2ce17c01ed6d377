"""Mesos clusters on EC2 from kiln AMIs: launch, status, ssh-config, destroy.

Everything a launch creates is tagged `kiln:cluster=<name>` when it is created, so the
other operations find it again by tag from any machine. A launch that fails halfway
removes what it created and says what that was; destroy is safe to repeat.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import WaiterError

from kiln import sshconfig
from kiln.aws import network, userdata
from kiln.aws.images import Image, list_images, newest
from kiln.aws.session import (
    AWS_FAILURES,
    CLUSTER_TAG,
    Aws,
    connect,
    error_code,
    error_text,
    retry_on,
    tag_specs,
    tags_dict,
)
from kiln.config import catalog
from kiln.config.load import Config
from kiln.config.shapes import (
    CLUSTER_NAME_RULE,
    Shape,
    parse_shape,
    specs_for_addresses,
    valid_cluster_name,
    validate_spec,
)
from kiln.errors import UserError
from kiln.keys import ensure_build_key
from kiln.output import say
from kiln.paths import Paths

# The node spec's rule for cluster names, so that the name works as spec, tag and host prefix.
LIVE_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]
WAIT_DELAY = 5  # seconds between waiter polls
DEFAULT_TIMEOUT = 600


@dataclass(frozen=True)
class Node:
    name: str  # the node spec's name: mesos, m1.., a1..
    role: str
    instance_id: str
    state: str
    private_ip: str
    public_ip: str
    target: str

    @property
    def address(self) -> str:
        return self.public_ip or self.private_ip


@dataclass(frozen=True)
class ClusterState:
    name: str
    nodes: list[Node]
    groups: list[str]
    keys: list[str]

    @property
    def empty(self) -> bool:
        return not (self.nodes or self.groups or self.keys)


@dataclass(frozen=True)
class Launched:
    name: str
    image: Image
    nodes: list[Node]
    notes: list[str]


@dataclass
class Teardown:
    """What a destroy (or a failed launch's cleanup) removed, and what it could not."""

    instances: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{len(self.instances)} instance(s) {' '.join(self.instances)}".rstrip()]
        parts += [f"security group {g}" for g in self.groups]
        parts += [f"key pair {k}" for k in self.keys]
        return ", ".join(parts)


# -- checks that need no AWS call ---------------------------------------------------------

def check_name(name: str) -> str:
    if not valid_cluster_name(name):
        raise UserError(f"cluster name {name!r}: expected {CLUSTER_NAME_RULE}", "pick another --name")
    return name


def check_shape(text: str) -> Shape:
    try:
        return parse_shape(text)
    except ValueError as exc:
        raise UserError(str(exc), "e.g. --shape 3m2a") from None


def check_target(config: Config, target: str) -> None:
    entry = config["targets"].get(target)
    if entry is None or "ami" not in entry:
        known = sorted(n for n, t in config["targets"].items() if "ami" in t)
        raise UserError(f"target {target!r} has no AMIs (targets with an `ami` block: {', '.join(known)})",
                        "pick --target from that list")


def default_name(config: Config, shape: Shape) -> str:
    return f"{config['cluster']['name']}-{shape.name}"


def resource_name(name: str) -> str:
    """Name of the group and key pair kiln makes for a cluster: says who made them, once."""
    return name if name.startswith("kiln-") else f"kiln-{name}"


def cluster_tags(config: Config, name: str, **extra: str) -> dict[str, str]:
    """Config's aws.tags, then kiln's own (which win: destroy relies on them)."""
    return {**config["aws"]["tags"], CLUSTER_TAG: name, **extra}


# -- finding a cluster by tag ---------------------------------------------------------------

def _by_tag(name: str) -> list[dict[str, Any]]:
    return [{"Name": f"tag:{CLUSTER_TAG}", "Values": [name]}]


def _node(raw: Mapping[str, Any]) -> Node:
    tags = tags_dict(raw.get("Tags"))
    return Node(tags.get("kiln:node", "?"), tags.get("kiln:role", "?"), raw["InstanceId"],
                raw["State"]["Name"], raw.get("PrivateIpAddress", ""), raw.get("PublicIpAddress", ""),
                tags.get("kiln:target", ""))


def _node_order(node: Node) -> tuple[int, int, str]:
    # mesos, m1, m2, ..., a1, a2, ... (numeric, so m10 follows m9)
    digits = re.sub(r"\D", "", node.name)
    return ({"standalone": 0, "master": 1, "agent": 2}.get(node.role, 3), int(digits or 0), node.name)


def find(ec2: Any, name: str) -> ClusterState:
    nodes = []
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[*_by_tag(name), {"Name": "instance-state-name", "Values": LIVE_STATES}])
    for page in pages:
        for reservation in page["Reservations"]:
            nodes += [_node(i) for i in reservation["Instances"]]
    groups = [g["GroupId"] for g in ec2.describe_security_groups(Filters=_by_tag(name))["SecurityGroups"]]
    keys = [k["KeyName"] for k in ec2.describe_key_pairs(Filters=_by_tag(name))["KeyPairs"]]
    return ClusterState(name, sorted(nodes, key=_node_order), groups, keys)


def status(aws: Aws, name: str) -> ClusterState:
    return find(aws.ec2(), check_name(name))


# -- teardown ---------------------------------------------------------------------------------

def _wait(ec2: Any, waiter: str, ids: Sequence[str], timeout: float, what: str) -> None:
    say(f"==> waiting up to {timeout:.0f}s for {len(ids)} instance(s) to be {what} ...")
    ec2.get_waiter(waiter).wait(InstanceIds=list(ids), WaiterConfig={
        "Delay": WAIT_DELAY, "MaxAttempts": max(1, int(timeout // WAIT_DELAY))})


def teardown(ec2: Any, instances: Sequence[str], groups: Sequence[str], keys: Sequence[str],
             timeout: float = DEFAULT_TIMEOUT) -> Teardown:
    """Terminate, wait, then delete groups and key pairs; record failures instead of stopping,
    so that one stuck resource does not keep the others alive."""
    report = Teardown()
    if instances:
        try:
            ec2.terminate_instances(InstanceIds=list(instances))
            report.instances = list(instances)
            _wait(ec2, "instance_terminated", instances, timeout, "terminated")
        except WaiterError as exc:
            report.problems.append(f"instances not terminated within {timeout:.0f}s ({exc}); "
                                   "run destroy again later")
        except AWS_FAILURES as exc:
            report.problems.append(f"instances {' '.join(instances)}: not terminated: {error_text(exc)}")
    for group in groups:
        try:
            # Network interfaces of just-terminated instances let go of the group a little later.
            retry_on({"DependencyViolation"}, lambda g=group: ec2.delete_security_group(GroupId=g),
                     attempts=7)
            report.groups.append(group)
        except AWS_FAILURES as exc:
            if error_code(exc) == "InvalidGroup.NotFound":
                continue
            report.problems.append(f"security group {group}: not deleted: {error_text(exc)}")
    for key in keys:
        try:
            ec2.delete_key_pair(KeyName=key)
            report.keys.append(key)
        except AWS_FAILURES as exc:
            report.problems.append(f"key pair {key}: not deleted: {error_text(exc)}")
    return report


def destroy(aws: Aws, name: str, timeout: float = DEFAULT_TIMEOUT) -> Teardown:
    """Remove every kiln-tagged instance, group and imported key of the cluster (none: no-op)."""
    ec2 = aws.ec2()
    state = find(ec2, check_name(name))
    ids = [n.instance_id for n in state.nodes if n.state != "terminated"]
    return teardown(ec2, ids, state.groups, state.keys, timeout)


# -- launch -----------------------------------------------------------------------------------

@dataclass
class _Created:
    instances: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)


def launch(aws: Aws, config: Config, paths: Paths, *, shape: str, name: str = "", target: str,
           options: Mapping[str, Any] | None = None, timeout: float = DEFAULT_TIMEOUT) -> Launched:
    """Start the cluster: newest kiln AMI of `target`, one instance per node spec."""
    the_shape = check_shape(shape)
    name = check_name(name or default_name(config, the_shape))
    check_target(config, target)
    leaks = userdata.secret_problems({"name": "every node", "options": dict(options or {})})
    if leaks:
        raise UserError(f"secrets would be readable in EC2 user-data: {', '.join(leaks)}",
                        "launch without Rancher keys, then write /etc/kiln/rancher.env (mode 0600) "
                        "over SSH (`invoke ami.ssh-config NAME`)")
    aws_cfg = config["aws"]
    ec2 = aws.ec2()
    image = newest(list_images(aws, [aws.region], target), target)
    if image is None:
        raise UserError(f"no kiln AMI of {target} in {aws.region}",
                        f"run `invoke ami.build --target {target} --region {aws.region}`")
    existing = find(ec2, name)
    if not existing.empty:
        raise UserError(f"cluster {name} already has resources in {aws.region}: "
                        f"{len(existing.nodes)} instance(s), {len(existing.groups)} group(s), "
                        f"{len(existing.keys)} key pair(s)",
                        f"`invoke ami.destroy {name}` first, or pick another --name")
    if aws_cfg["key_name"]:
        network.require_key_pair(ec2, aws_cfg["key_name"])
    subnet = network.pick_subnet(ec2, aws_cfg["subnet_id"])
    addresses = network.free_addresses(subnet.cidr, network.used_addresses(ec2, subnet.id),
                                       the_shape.nodes)
    specs = specs_for_addresses(the_shape, name, addresses, dict(options or {}))
    problems = [f"{s['name']}: {p}" for s in specs for p in validate_spec(s)]
    if problems:
        raise UserError("the node specs are not valid:\n  - " + "\n  - ".join(problems))
    scripts = [userdata.render(s) for s in specs]
    say(f"==> [{name}] {the_shape.name} from {image.id} ({image.name}) in {subnet.id} "
        f"({subnet.zone}, {subnet.cidr})")

    created = _Created()
    step = "creating the security group"
    try:
        group = network.create_security_group(ec2, resource_name(name), subnet.vpc_id,
                                              cluster_tags(config, name, Name=resource_name(name)))
        created.groups.append(group)
        network.allow_cluster_traffic(ec2, group, aws_cfg["admin_cidr"],
                                      catalog.load_cached(paths.root).port_rules(config.data))
        key_name = aws_cfg["key_name"]
        if not key_name:
            step = "importing the key pair"
            public = Path(f"{ensure_build_key(paths.build)}.pub").read_text(encoding="utf-8").strip()
            key_name = network.import_key_pair(ec2, resource_name(name), public,
                                               cluster_tags(config, name, Name=resource_name(name)))
            created.keys.append(key_name)
        for spec, script in zip(specs, scripts, strict=True):
            step = f"launching {spec['name']} ({spec['role']}, {aws_cfg['instance_types'][spec['role']]})"
            say(f"==> [{name}] {step} at {spec['ip']}")
            created.instances.append(_run_instance(ec2, config, name, spec, script, image, subnet,
                                                   group, key_name, target))
        step = "waiting for the instances to run"
        _wait(ec2, "instance_running", created.instances, timeout, "running")
    except WaiterError as exc:
        if "Max attempts exceeded" in str(exc):
            raise UserError(f"{name}: instances not running after {timeout:.0f}s; they were left as they "
                            "are", f"see `invoke ami.status {name}`; `invoke ami.destroy {name}` "
                            "removes them") from None
        raise _rolled_back(ec2, name, step, exc, created, timeout) from None
    except AWS_FAILURES as exc:
        raise _rolled_back(ec2, name, step, exc, created, timeout) from None
    except BaseException:
        # Ctrl-C or a bug: still leave nothing behind, then let it through.
        teardown(ec2, created.instances, created.groups, created.keys, timeout)
        raise
    nodes = find(ec2, name).nodes
    return Launched(name, image, nodes, _launch_notes(config, name))


def _run_instance(ec2: Any, config: Config, name: str, spec: Mapping[str, Any], script: str,
                  image: Image, subnet: network.Subnet, group: str, key_name: str, target: str) -> str:
    aws_cfg = config["aws"]
    tags = cluster_tags(config, name, Name=f"{name}-{spec['name']}", **{
        "kiln:node": spec["name"], "kiln:role": spec["role"], "kiln:target": target,
        "kiln:image": image.id})
    reply = ec2.run_instances(
        ImageId=image.id, InstanceType=aws_cfg["instance_types"][spec["role"]], MinCount=1, MaxCount=1,
        KeyName=key_name, SubnetId=subnet.id, PrivateIpAddress=spec["ip"], SecurityGroupIds=[group],
        UserData=script,
        # Hop limit 1: containers on the node (one hop further) cannot reach the instance's
        # metadata and credentials.
        MetadataOptions={"HttpTokens": "required" if aws_cfg["imdsv2_required"] else "optional",
                         "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 1},
        TagSpecifications=tag_specs(tags, "instance", "volume", "network-interface"))
    return reply["Instances"][0]["InstanceId"]


def _rolled_back(ec2: Any, name: str, step: str, exc: BaseException, created: _Created,
                 timeout: float) -> UserError:
    say(f"==> [{name}] launch failed while {step}; removing what it created ...")
    report = teardown(ec2, created.instances, created.groups, created.keys, timeout)
    removed = report.summary()
    left = f"; could NOT remove: {'; '.join(report.problems)}" if report.problems else ""
    return UserError(f"launch of {name} failed while {step}: {error_text(exc)}\n"
                     f"  cleaned up: {removed}{left}",
                     "fix the cause above and launch again" if not left
                     else f"fix the cause above; then `invoke ami.destroy {name}`")


def _launch_notes(config: Config, name: str) -> list[str]:
    if config["aws"]["admin_cidr"]:
        return []
    return [f"aws.admin_cidr is empty: nothing outside the cluster can reach SSH or the UIs of {name}. "
            "Allow your address with e.g. --set aws.admin_cidr=203.0.113.7/32 on a new launch, "
            "or set it in config.json"]


def ui_urls(nodes: Sequence[Node], node_catalog: Mapping[str, Any]) -> list[str]:
    """One line per node with an address: the UIs its role runs (from the component catalog)."""
    urls = []
    for n in nodes:
        found = catalog.endpoints(node_catalog, n.role, n.address, None) if n.address else []
        if found:
            urls.append(f"{n.name}: " + "  ".join(f"{label} {addr}" for label, addr in found))
    return urls


# -- SSH ---------------------------------------------------------------------------------------

def ssh_key_file(config: Config, paths: Paths) -> Path:
    configured = config["aws"]["ssh_private_key_file"]
    if configured:
        return Path(configured).expanduser()
    if config["aws"]["key_name"]:
        raise UserError(f"aws.key_name is {config['aws']['key_name']!r} but aws.ssh_private_key_file "
                        "is empty: kiln does not know which private key logs in",
                        "set aws.ssh_private_key_file to that key pair's private key")
    return ensure_build_key(paths.build)


def write_ssh_config(aws: Aws, config: Config, paths: Paths, name: str) -> tuple[Path, list[Node]]:
    """build/aws/<name>/ssh_config with one Host <name>-<node> per running node."""
    nodes = [n for n in status(aws, name).nodes if n.state == "running"]
    if not nodes:
        raise UserError(f"cluster {name} has no running instance in {aws.region}",
                        f"`invoke ami.status {name}`, or `invoke ami.launch --name {name}`")
    key = ssh_key_file(config, paths)
    hosts = [sshconfig.SshHost(f"{name}-{n.name}", n.address, 22,
                               config["targets"].get(n.target, {}).get("ssh_username", "ubuntu"), key)
             for n in nodes]
    directory = paths.build / "aws" / name
    path = sshconfig.write(directory / "ssh_config", hosts, control_dir=directory / "control")
    return path, nodes


def test_hosts(config: Config, paths: Paths, name: str,
               region: str | None = None) -> tuple[Path, list[tuple[str, str]]]:
    """For `invoke test --aws NAME`: the ssh_config to pass to testinfra, and (alias, role) of
    every running node (role: standalone, master or agent, as --kiln-role expects)."""
    aws = connect(region or config["aws"]["region"])
    path, nodes = write_ssh_config(aws, config, paths, check_name(name))
    return path, [(f"{name}-{n.name}", n.role) for n in nodes]


def verify(config: Config, paths: Paths, name: str, *, region: str | None = None,
           quiet: bool = False) -> tuple[bool, Path, int]:
    """`invoke test --aws NAME`: the boot-phase suites on every running node at once, each
    checked for its own role. Returns (passed, JUnit report, number of nodes)."""
    from kiln.aws.session import aws_errors
    from kiln.image.verify import run_suites

    with aws_errors():
        ssh_config, nodes = test_hosts(config, paths, name, region)
    if not nodes:
        raise UserError(f"cluster {name!r} has no running instances", f"invoke ami.status {name}")
    report = paths.reports / f"{name}-aws.xml"
    result = run_suites(paths, ssh_config=ssh_config, hosts=[alias for alias, _ in nodes], phase="boot",
                        report=report, quiet=quiet, log=paths.logs / f"{name}-aws-tests.log")
    return result.returncode == 0, report, len(nodes)
