"""The AWS side against moto's EC2 server over real HTTP on 127.0.0.1.

moto is a stand-in: no AWS account is reachable from these machines. boto3 talks to it
exactly as to EC2 (signed HTTP requests, `AWS_ENDPOINT_URL`), so requests, pagination,
waiters, tag filters and error codes are exercised; EC2's timing (instances that take
minutes to run, eventual consistency) is not. moto validates instance types here, as EC2
does, which is how a launch is made to fail halfway.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kiln.aws import amikey, cluster, images, network, userdata
from kiln.aws.bake import AMI_RECORD, PACKER_MANIFEST, finish_images, pair_key
from kiln.aws.session import CLUSTER_TAG, Aws, connect
from kiln.config.load import Config, load_config
from kiln.config.shapes import validate_spec
from kiln.config.targets import select_pairs
from kiln.errors import UserError
from kiln.image.artifacts import METADATA
from kiln.image.packer import PackerVersion
from kiln.image.render import render_options
from kiln.paths import REPO_ROOT, Paths
from kiln_node import spec as node_spec

moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed (scripts/setup)")
moto_settings = pytest.importorskip("moto.settings")

REGION = "us-east-1"
DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    # Never ask a real metadata service or read the developer's own AWS files.
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent/kiln-test-aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/kiln-test-aws-credentials",
}
UNSET = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION",
         "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
         "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN")
TASKS_FILE = ("from invoke import Collection\n\nfrom kiln.tasks.ami import ns as ami_ns\n\n"
              "ns = Collection()\nns.add_collection(ami_ns)\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    # EC2 rejects unknown instance types; moto does too only when asked (read at call time).
    saved = moto_settings.EC2_ENABLE_INSTANCE_TYPE_VALIDATION
    moto_settings.EC2_ENABLE_INSTANCE_TYPE_VALIDATION = True
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        moto_settings.EC2_ENABLE_INSTANCE_TYPE_VALIDATION = saved


@pytest.fixture
def aws_env(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A fresh moto account per test, and the environment kiln (and its subprocesses) see."""
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10)
    for name in UNSET:
        monkeypatch.delenv(name, raising=False)
    env = {**DUMMY_ENV, "AWS_ENDPOINT_URL": endpoint}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def aws(aws_env: dict[str, str]) -> Aws:
    return connect(REGION)


def _config(tree: Paths, *sets: str) -> Config:
    return load_config(tree, sets=list(sets))


def register_kiln_ami(aws: Aws, target: str = "ubuntu-24.04", name: str = "", region: str = REGION,
                      key: str = "") -> str:
    """An AMI tagged the way packer/sources/amazon-ebs tags the ones kiln bakes (with `key`: the
    way `invoke ami.build` renders it, kiln:key and the key's first 16 hex digits in the name)."""
    ec2 = aws.ec2(region)
    stamp = f"{key[:16]}-20260101000000" if key else "20260101000000"
    ami = ec2.register_image(Name=name or f"kiln-{target}-0.1.0-{stamp}",
                             RootDeviceName="/dev/sda1")["ImageId"]
    ec2.create_tags(Resources=[ami], Tags=[
        {"Key": "kiln:version", "Value": "0.1.0"}, {"Key": "kiln:target", "Value": target},
        {"Key": "kiln:git-revision", "Value": "0123456789abcdef"}, {"Key": "project", "Value": "kiln"},
        *([{"Key": images.KEY_TAG, "Value": key}] if key else [])])
    return ami


def kiln_leftovers(aws: Aws) -> dict[str, list[str]]:
    """Everything in the account that carries the cluster tag and is not gone."""
    ec2 = aws.ec2()
    tagged = [{"Name": "tag-key", "Values": [CLUSTER_TAG]}]
    reservations = ec2.describe_instances(Filters=[*tagged, {
        "Name": "instance-state-name", "Values": cluster.LIVE_STATES}])["Reservations"]
    return {
        "instances": [i["InstanceId"] for r in reservations for i in r["Instances"]],
        "groups": [g["GroupId"] for g in ec2.describe_security_groups(Filters=tagged)["SecurityGroups"]],
        "keys": [k["KeyName"] for k in ec2.describe_key_pairs(Filters=tagged)["KeyPairs"]],
    }


def described(aws: Aws, name: str) -> list[dict[str, Any]]:
    reservations = aws.ec2().describe_instances(Filters=[
        {"Name": f"tag:{CLUSTER_TAG}", "Values": [name]},
        {"Name": "instance-state-name", "Values": ["running"]}])["Reservations"]
    return [i for r in reservations for i in r["Instances"]]


def user_data(aws: Aws, instance_id: str) -> str:
    raw = aws.ec2().describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    return base64.b64decode(raw["UserData"]["Value"]).decode()


# -- clusters -------------------------------------------------------------------------------

def test_launch_status_destroy_leaves_no_kiln_resources(tree: Paths, aws: Aws) -> None:
    ami = register_kiln_ami(aws)
    config = _config(tree)
    result = cluster.launch(aws, config, tree, shape="3m2a", target="ubuntu-24.04", timeout=60)
    assert result.name == "kiln-3m2a"
    assert result.image.id == ami
    assert [(n.name, n.role, n.state) for n in result.nodes] == [
        ("m1", "master", "running"), ("m2", "master", "running"), ("m3", "master", "running"),
        ("a1", "agent", "running"), ("a2", "agent", "running")]
    state = cluster.status(aws, "kiln-3m2a")
    assert [n.instance_id for n in state.nodes] == [n.instance_id for n in result.nodes]
    assert len(state.groups) == 1 and state.keys == ["kiln-3m2a"]
    assert kiln_leftovers(aws)["instances"]

    report = cluster.destroy(aws, "kiln-3m2a", timeout=60)
    assert sorted(report.instances) == sorted(n.instance_id for n in result.nodes)
    assert report.groups == state.groups and report.keys == state.keys and report.problems == []
    assert kiln_leftovers(aws) == {"instances": [], "groups": [], "keys": []}
    again = cluster.destroy(aws, "kiln-3m2a", timeout=60)
    assert (again.instances, again.groups, again.keys, again.problems) == ([], [], [], [])


def test_security_group_allows_cluster_ports_among_members_and_ui_ports_from_admin_cidr_only(
        tree: Paths, aws: Aws) -> None:
    register_kiln_ami(aws)
    config = _config(tree, "aws.admin_cidr=203.0.113.0/24")
    cluster.launch(aws, config, tree, shape="1", name="sg", target="ubuntu-24.04", timeout=60)
    (group_id,) = cluster.status(aws, "sg").groups
    (group,) = aws.ec2().describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    seen = set()
    for rule in group["IpPermissions"]:
        assert rule["IpProtocol"] == "tcp"
        seen |= {(rule["FromPort"], rule["ToPort"], p["GroupId"]) for p in rule.get("UserIdGroupPairs", [])}
        seen |= {(rule["FromPort"], rule["ToPort"], r["CidrIp"]) for r in rule.get("IpRanges", [])}
        assert not rule.get("Ipv6Ranges") and not rule.get("PrefixListIds")
    members = {(a, b, group_id) for a, b in [(22, 22), (80, 80), (2181, 2181), (2888, 2888), (3888, 3888),
                                             (5050, 5050), (5051, 5051), (8080, 8080), (10000, 10100),
                                             (15101, 15101), (31000, 32000)]}
    admins = {(a, a, "203.0.113.0/24") for a in (22, 80, 5050, 8080)}
    assert seen == members | admins
    cluster.destroy(aws, "sg", timeout=60)


def test_without_admin_cidr_nothing_outside_the_group_gets_in(tree: Paths, aws: Aws) -> None:
    register_kiln_ami(aws)
    result = cluster.launch(aws, _config(tree), tree, shape="1", name="closed", target="ubuntu-24.04",
                            timeout=60)
    (group_id,) = cluster.status(aws, "closed").groups
    (group,) = aws.ec2().describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    assert group["IpPermissions"]
    assert all(not r.get("IpRanges") and [p["GroupId"] for p in r["UserIdGroupPairs"]] == [group_id]
               for r in group["IpPermissions"])
    assert any("aws.admin_cidr is empty" in note for note in result.notes)
    cluster.destroy(aws, "closed", timeout=60)


def test_instances_require_imdsv2_and_their_user_data_holds_each_node_spec(tree: Paths, aws: Aws) -> None:
    register_kiln_ami(aws)
    config = _config(tree)
    cluster.launch(aws, config, tree, shape="3m2a", name="specs", target="ubuntu-24.04", timeout=60)
    instances = described(aws, "specs")
    assert len(instances) == 5
    specs = {}
    for inst in instances:
        assert inst["MetadataOptions"]["HttpTokens"] == "required"
        script = user_data(aws, inst["InstanceId"])
        assert script.startswith("#!/bin/sh\n")
        assert script.rstrip().endswith("exec /usr/local/sbin/kiln-node apply /etc/kiln/node.json")
        spec = userdata.spec_from(script)
        assert validate_spec(spec) == []
        assert spec["ip"] == inst["PrivateIpAddress"]
        assert spec["cluster"] == "specs"
        tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
        assert (tags["kiln:node"], tags["kiln:role"]) == (spec["name"], spec["role"])
        assert tags["Name"] == f"specs-{spec['name']}" and tags["project"] == "kiln"
        assert inst["InstanceType"] == config["aws"]["instance_types"][spec["role"]]
        specs[spec["name"]] = spec
    masters = [specs[m]["ip"] for m in ("m1", "m2", "m3")]
    assert len(set(masters)) == 3
    assert {s["name"]: s["node_id"] for s in specs.values()} == {"m1": 1, "m2": 2, "m3": 3, "a1": 4, "a2": 5}
    assert all(s["masters"] == masters and node_spec.quorum(s) == 2 for s in specs.values())
    # Chosen addresses are the subnet's, past the four AWS reserves.
    (subnet_id,) = {i["SubnetId"] for i in instances}
    (subnet,) = aws.ec2().describe_subnets(SubnetIds=[subnet_id])["Subnets"]
    assert set(masters) <= set(network.free_addresses(subnet["CidrBlock"], [], 5))
    cluster.destroy(aws, "specs", timeout=60)


def test_a_launch_failing_halfway_removes_what_it_created_and_says_so(tree: Paths, aws: Aws) -> None:
    register_kiln_ami(aws)
    # Masters launch first and succeed; the first agent's type does not exist.
    config = _config(tree, "aws.instance_types.agent=m9.bogus")
    with pytest.raises(UserError) as info:
        cluster.launch(aws, config, tree, shape="3m2a", name="half", target="ubuntu-24.04", timeout=60)
    message = str(info.value)
    assert "launch of half failed while launching a1 (agent, m9.bogus)" in message
    assert "cleaned up: 3 instance(s) i-" in message
    assert "security group sg-" in message and "key pair kiln-half" in message
    assert "could NOT remove" not in message
    assert kiln_leftovers(aws) == {"instances": [], "groups": [], "keys": []}


def test_a_launch_failing_at_the_key_pair_removes_the_group_and_keeps_the_foreign_key(
        tree: Paths, aws: Aws, ssh_key: Path) -> None:
    register_kiln_ami(aws)
    # Someone else's key pair already has the name kiln would import: EC2 refuses the import.
    aws.ec2().import_key_pair(KeyName="kiln-clash", PublicKeyMaterial=Path(f"{ssh_key}.pub").read_bytes())
    with pytest.raises(UserError) as info:
        cluster.launch(aws, _config(tree), tree, shape="1", name="clash", target="ubuntu-24.04", timeout=60)
    message = str(info.value)
    assert "failed while importing the key pair: InvalidKeyPair.Duplicate" in message
    assert "cleaned up: 0 instance(s), security group sg-" in message and "key pair" not in message.split(
        "cleaned up:")[1]
    assert kiln_leftovers(aws) == {"instances": [], "groups": [], "keys": []}
    assert [k["KeyName"] for k in aws.ec2().describe_key_pairs()["KeyPairs"]] == ["kiln-clash"]


def test_secrets_in_node_options_are_refused_before_anything_is_created(tree: Paths, aws: Aws) -> None:
    register_kiln_ami(aws)
    options = {"rancher": {"cattle_url": "https://rancher.example/v1", "access_key": "AK",
                           "secret_key": "SK"}}
    with pytest.raises(UserError) as info:
        cluster.launch(aws, _config(tree), tree, shape="1", name="secret", target="ubuntu-24.04",
                       options=options, timeout=60)
    assert "options.rancher.access_key" in str(info.value) and "options.rancher.secret_key" in str(info.value)
    assert "rancher.env" in str(info.value)
    assert kiln_leftovers(aws) == {"instances": [], "groups": [], "keys": []}


def test_launch_refuses_a_name_in_use_and_a_target_without_ami(tree: Paths, aws: Aws) -> None:
    with pytest.raises(UserError) as no_ami:
        cluster.launch(aws, _config(tree), tree, shape="1", name="one", target="ubuntu-24.04", timeout=60)
    assert "no kiln AMI of ubuntu-24.04 in us-east-1" in str(no_ami.value)
    assert "invoke ami.build --target ubuntu-24.04" in str(no_ami.value)
    register_kiln_ami(aws)
    cluster.launch(aws, _config(tree), tree, shape="1", name="one", target="ubuntu-24.04", timeout=60)
    with pytest.raises(UserError) as twice:
        cluster.launch(aws, _config(tree), tree, shape="1", name="one", target="ubuntu-24.04", timeout=60)
    assert "cluster one already has resources" in str(twice.value)
    assert len(kiln_leftovers(aws)["instances"]) == 1
    cluster.destroy(aws, "one", timeout=60)


def test_ssh_config_names_every_running_node(tree: Paths, aws: Aws) -> None:
    register_kiln_ami(aws, target="amazonlinux-2023")
    cluster.launch(aws, _config(tree), tree, shape="3m", name="ssh", target="amazonlinux-2023", timeout=60)
    path, hosts = cluster.test_hosts(_config(tree), tree, "ssh", REGION)
    assert hosts == [("ssh-m1", "master"), ("ssh-m2", "master"), ("ssh-m3", "master")]
    text = path.read_text()
    assert text.count("Host ssh-m") == 3 and "User ec2-user" in text
    assert f"IdentityFile {tree.keys / 'kiln_ed25519'}" in text
    cluster.destroy(aws, "ssh", timeout=60)


# -- images ---------------------------------------------------------------------------------

def test_prune_keeps_the_newest_per_target_and_deletes_the_right_snapshots(tree: Paths, aws: Aws) -> None:
    ubuntu = [register_kiln_ami(aws, name=f"kiln-ubuntu-24.04-0.1.0-2026010{i}000000") for i in range(1, 5)]
    al2023 = register_kiln_ami(aws, target="amazonlinux-2023")
    foreign = aws.ec2().register_image(Name="not-kiln", RootDeviceName="/dev/sda1")["ImageId"]
    found = images.list_images(aws, [REGION])
    assert {i.id for i in found} == {*ubuntu, al2023}
    snapshots = {i.id: i.snapshots for i in found}
    assert all(len(s) == 1 for s in snapshots.values())

    doomed = images.prune_plan(found, keep=2)
    assert sorted(i.id for i in doomed) == sorted(ubuntu[:2])
    report = images.prune(aws, doomed)
    assert report.problems == []
    assert sorted(report.deregistered) == sorted(ubuntu[:2])
    assert sorted(report.snapshots) == sorted(s for a in ubuntu[:2] for s in snapshots[a])

    left = {i["ImageId"] for i in aws.ec2().describe_images(Owners=["self"])["Images"]}
    assert left == {ubuntu[2], ubuntu[3], al2023, foreign}
    existing = {s["SnapshotId"] for s in aws.ec2().describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert not existing & set(report.snapshots)
    assert {s for a in (*ubuntu[2:], al2023) for s in snapshots[a]} <= existing
    assert images.newest(images.list_images(aws, [REGION]), "ubuntu-24.04").id == ubuntu[3]  # type: ignore[union-attr]


def test_after_a_build_every_copy_gets_imdsv2_and_the_ids_are_recorded(tree: Paths, aws: Aws,
                                                                       tmp_path: Path) -> None:
    amis = {REGION: register_kiln_ami(aws), "eu-west-1": register_kiln_ami(aws, region="eu-west-1")}
    (tmp_path / PACKER_MANIFEST).write_text(json.dumps({"last_run_uuid": "b", "builds": [
        {"packer_run_uuid": "a", "artifact_id": f"{REGION}:ami-00000000"},
        {"packer_run_uuid": "b", "artifact_id": ",".join(f"{r}:{a}" for r, a in amis.items())}]}))
    sent: list[tuple[str, str]] = []

    def record(request: Any, **_: Any) -> None:
        # What really goes over the wire (moto accepts ImdsSupport but does not keep it); the
        # region is the one in the request's signature scope.
        body = request.body.decode() if isinstance(request.body, bytes) else str(request.body)
        scope = str(request.headers["Authorization"]).split("Credential=")[1].split("/")
        sent.append((scope[2], body))

    aws.session.events.register("before-send.ec2.ModifyImageAttribute", record)
    config = _config(tree, 'aws.extra_regions=["eu-west-1"]')
    assert finish_images(aws, config, PackerVersion(1, 6, 6), tmp_path) == amis
    assert sorted(region for region, _ in sent) == sorted(amis)
    for region, body in sent:
        assert f"ImageId={amis[region]}" in body and "ImdsSupport.Value=v2.0" in body
    record_file = json.loads((tmp_path / AMI_RECORD).read_text())
    assert record_file["amis"] == amis and record_file["imds_support_set_by"] == "kiln"

    sent.clear()  # Packer >= 1.7 set imds_support itself: nothing more to send
    finish_images(aws, config, PackerVersion(1, 11, 2), tmp_path)
    assert sent == []


# -- the command line ---------------------------------------------------------------------------

def ami(tree: Paths, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    tasks = tree.root / "cli-tasks"
    tasks.mkdir(exist_ok=True)
    (tasks / "tasks.py").write_text(TASKS_FILE)
    # Only the AWS settings the test passes: none leak in from this process or the developer.
    full = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    full.update(env, KILN_ROOT=str(tree.root))
    return subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(tasks), *args],
                          capture_output=True, text=True, env=full, timeout=180, cwd=REPO_ROOT)


def test_cli_launch_status_destroy(tree: Paths, aws: Aws, aws_env: dict[str, str]) -> None:
    register_kiln_ami(aws)
    started = time.monotonic()
    up = ami(tree, aws_env, "ami.launch", "--shape", "3m2a", "--name", "cli",
             "--set", "aws.admin_cidr=198.51.100.7/32")
    assert up.returncode == 0, up.stderr
    assert up.stdout.count("Mesos http://") == 3 and "cli is up" in up.stdout
    listed = ami(tree, aws_env, "ami.status", "cli")
    assert listed.returncode == 0 and listed.stdout.count(" running ") == 5
    down = ami(tree, aws_env, "ami.destroy", "cli")
    assert down.returncode == 0, down.stderr
    assert "removed: 5 instance(s)" in down.stdout and "key pair kiln-cli" in down.stdout
    again = ami(tree, aws_env, "ami.destroy", "cli")
    assert again.returncode == 0 and "nothing to destroy" in again.stdout
    assert kiln_leftovers(aws) == {"instances": [], "groups": [], "keys": []}
    assert time.monotonic() - started < 120


def test_cli_without_credentials_says_how_to_fix_in_one_line(tree: Paths, aws_env: dict[str, str]) -> None:
    env = {k: v for k, v in aws_env.items() if not k.startswith("AWS_ACCESS") and "SECRET" not in k}
    result = ami(tree, env, "ami.launch", "--shape", "1")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "error: no AWS credentials found (environment, ~/.aws, SSO or instance role)"
    assert lines[1].startswith("  fix: run `aws configure`") and len(lines) == 2


@pytest.mark.parametrize(("args", "expected"), [
    (["--shape", "3x"], "error: bad shape '3x'"),
    (["--shape", "1", "--name", "Bad_Name"], "error: cluster name 'Bad_Name': expected 2-40"),
    (["--shape", "1", "--target", "debian-12"], "error: target 'debian-12' has no AMIs"),
])
def test_cli_bad_options_exit_2_and_create_nothing(tree: Paths, aws: Aws, aws_env: dict[str, str],
                                                   args: list[str], expected: str) -> None:
    register_kiln_ami(aws)
    result = ami(tree, aws_env, "ami.launch", *args)
    assert result.returncode == 2
    assert result.stderr.startswith(expected) and "Traceback" not in result.stderr
    assert kiln_leftovers(aws) == {"instances": [], "groups": [], "keys": []}


def test_cli_prune_is_a_dry_run_unless_yes(tree: Paths, aws: Aws, aws_env: dict[str, str]) -> None:
    ids = [register_kiln_ami(aws, name=f"kiln-ubuntu-24.04-0.1.0-2026010{i}000000") for i in range(1, 4)]
    dry = ami(tree, aws_env, "ami.prune", "--keep", "1")
    assert dry.returncode == 0 and "dry run: 2 AMI(s)" in dry.stdout
    assert len(images.list_images(aws, [REGION])) == 3
    real = ami(tree, aws_env, "ami.prune", "--keep", "1", "--yes")
    assert real.returncode == 0 and "deregistered 2 AMI(s), deleted 2 snapshot(s)" in real.stdout
    assert [i.id for i in images.list_images(aws, [REGION])] == [ids[2]]
    listing = ami(tree, aws_env, "ami.list")
    assert listing.returncode == 0 and ids[2] in listing.stdout and "ubuntu-24.04" in listing.stdout


def test_cli_list_shows_each_amis_key_and_state(tree: Paths, aws: Aws, aws_env: dict[str, str]) -> None:
    keyed = register_kiln_ami(aws, key="c0ffee" * 10 + "abcd")
    unkeyed = register_kiln_ami(aws, name="kiln-ubuntu-24.04-0.1.0-20251231000000")
    listing = ami(tree, aws_env, "ami.list")
    assert listing.returncode == 0, listing.stderr
    header, *rows = [line for line in listing.stdout.splitlines() if line.strip()]
    assert header.split()[:5] == ["region", "target", "ami", "key", "state"]
    by_id = {row.split()[2]: row.split() for row in rows if row.startswith(REGION)}
    assert by_id[keyed][3:5] == [("c0ffee" * 10)[:16], "available"]
    assert by_id[unkeyed][3:5] == ["-", "available"]


# -- ami.build: the key ---------------------------------------------------------------------------

PAIR = "ubuntu-24.04-amazon-ebs"
# What makes ubuntu-24.04 buildable as an AMI here (a Mesos package to install, Marathon pinned),
# and a name filter that resolves among moto's own Canonical AMIs: the stand-in for the newest
# Ubuntu AMI Packer would start from.
BUILDABLE = (
    "components.mesos.source=package_url",
    "components.mesos.package_url=https://packages.example/mesos_1.11.1_amd64.deb",
    f"components.mesos.package_sha256={'0' * 64}",
    "components.marathon.sha256=" + "ab" * 32,
    "targets.ubuntu-24.04.ami.name_filter=ubuntu/images/hvm-ssd/ubuntu-xenial-16.04-amd64-server-*",
)
NO_PACKER = "error: 'packer' is not installed or not on PATH"


@pytest.fixture(scope="module")
def no_packer_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """This PATH less Packer: a directory linking every other program on it (first one wins)."""
    shim = tmp_path_factory.mktemp("path-without-packer")
    seen = {"packer"}
    for folder in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(folder):
            continue
        for entry in sorted(Path(folder).iterdir()):
            if entry.name not in seen and entry.is_file() and os.access(entry, os.X_OK):
                seen.add(entry.name)
                (shim / entry.name).symlink_to(entry)
    return str(shim)


def build_args(*sets: str) -> list[str]:
    return ["ami.build", "--target", "ubuntu-24.04", *(a for s in (*BUILDABLE, *sets) for a in ("--set", s))]


@pytest.fixture
def ami_key(tree: Paths, aws: Aws, no_packer_path: str, monkeypatch: pytest.MonkeyPatch) -> amikey.AmiKey:
    """The key ami.build computes for BUILDABLE, computed here the same way (no Packer on PATH)."""
    monkeypatch.setenv("PATH", no_packer_path)
    config = _config(tree, *BUILDABLE)
    (pair,) = select_pairs(config.data, ["ubuntu-24.04"], ["amazon-ebs"])
    return pair_key(aws, config, pair, tree, render_options(config, tree))


def key_printed(output: str) -> str:
    (line,) = [ln for ln in output.splitlines() if ln.startswith(f"==> [{PAIR}] AMI key ")]
    return line.split()[-1]


def test_build_reuses_the_ami_with_its_key_and_runs_no_packer(
        tree: Paths, aws: Aws, aws_env: dict[str, str], no_packer_path: str, ami_key: amikey.AmiKey) -> None:
    (ubuntu,) = aws.ec2().describe_images(Owners=["099720109477"], Filters=amikey.source_filters(
        {"name_filter": BUILDABLE[-1].split("=", 1)[1]}))["Images"]
    assert ami_key.chain[0].inputs["id"] == ubuntu["ImageId"]  # the source AMI, resolved
    other = register_kiln_ami(aws, key="f" * 64)  # a kiln AMI of the target with another key
    image = register_kiln_ami(aws, key=ami_key.key)
    # What the build that made it published here: its image manifest is kept, the rest replaced.
    published = tree.artifacts / PAIR
    published.mkdir(parents=True)
    (published / AMI_RECORD).write_text(json.dumps({"amis": {REGION: image}, "key": ami_key.key}))
    (published / "image-manifest.json").write_text(json.dumps({"components": {"mesos": "1.11.1"}}))
    (published / "packer-manifest.json").write_text("{}")
    result = ami(tree, {**aws_env, "PATH": no_packer_path}, *build_args())
    assert result.returncode == 0, result.stderr
    assert key_printed(result.stdout) == ami_key.key
    assert f"up to date (AMI {image} has key {ami_key.key}): Packer does not run" in result.stdout
    assert f"{PAIR}: {REGION} {image} (up to date, key {ami_key.short}" in result.stdout
    assert other not in result.stdout
    record = json.loads((tree.artifacts / PAIR / AMI_RECORD).read_text())
    assert record["amis"] == {REGION: image} and record["key"] == ami_key.key
    assert record["reused"] == {"region": REGION, "ami": image} and record["copied"] == {}
    assert [link["name"] for link in record["key_chain"]] == ["source", "system", "payload", "ami"]
    assert record["imds_support"] == "v2.0" and record["imds_support_set_by"] == "kiln"
    metadata = json.loads((published / METADATA).read_text())
    assert metadata["key"] == ami_key.key and metadata["components"] == {"mesos": "1.11.1"}
    assert sorted(p.name for p in published.iterdir()) == [AMI_RECORD, "image-manifest.json", METADATA]
    assert not (tree.rendered_packer / PAIR).exists()  # nothing rendered for Packer either


def test_build_with_another_key_renders_it_and_runs_packer(
        tree: Paths, aws: Aws, aws_env: dict[str, str], no_packer_path: str, ami_key: amikey.AmiKey) -> None:
    register_kiln_ami(aws, key=ami_key.key)
    result = ami(tree, {**aws_env, "PATH": no_packer_path},
                 *build_args("components.haproxy.poll_seconds=9"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert NO_PACKER in result.stderr.splitlines() and "Traceback" not in result.stderr
    new_key = key_printed(result.stdout)
    assert new_key != ami_key.key and "up to date" not in result.stdout
    # What Packer would have registered: the AMI tagged with the new key, which its name carries.
    template = (tree.rendered_packer / PAIR / "kiln.pkr.hcl").read_text()
    assert f'"kiln:key" = "{new_key}"' in template
    assert f'ami_name        = "kiln-mesos-ubuntu-24.04-0.1.0-{new_key[:16]}-${{local.stamp}}"' in template
    assert not (tree.artifacts / PAIR).exists()


def test_build_copies_the_ami_where_the_key_is_missing_and_reuses_copies(
        tree: Paths, aws: Aws, aws_env: dict[str, str], no_packer_path: str, ami_key: amikey.AmiKey) -> None:
    home = register_kiln_ami(aws, key=ami_key.key)
    theirs = register_kiln_ami(aws, key=ami_key.key, region="us-west-2")
    regions = 'aws.extra_regions=["eu-west-1", "us-west-2"]'
    first = ami(tree, {**aws_env, "PATH": no_packer_path}, *build_args(regions))
    assert first.returncode == 0, first.stderr
    assert f"us-west-2: {theirs} has the key too" in first.stdout
    assert f"copy {home} to eu-west-1 ..." in first.stdout
    record = json.loads((tree.artifacts / PAIR / AMI_RECORD).read_text())
    copy = record["amis"]["eu-west-1"]
    assert record["amis"] == {REGION: home, "us-west-2": theirs, "eu-west-1": copy}
    assert record["copied"] == {"eu-west-1": copy}
    (copied,) = aws.ec2("eu-west-1").describe_images(ImageIds=[copy])["Images"]
    tags = {t["Key"]: t["Value"] for t in copied["Tags"]}
    assert tags[images.KEY_TAG] == ami_key.key and tags["kiln:target"] == "ubuntu-24.04"
    assert copied["Name"] == f"kiln-ubuntu-24.04-0.1.0-{ami_key.short}-20260101000000"
    again = ami(tree, {**aws_env, "PATH": no_packer_path}, *build_args(regions))
    assert again.returncode == 0, again.stderr
    assert " copy " not in again.stdout
    assert json.loads((tree.artifacts / PAIR / AMI_RECORD).read_text())["amis"] == record["amis"]
    assert len(images.keyed_images(aws, ["eu-west-1"], ami_key.key)["eu-west-1"]) == 1


def test_build_force_or_a_disabled_ami_with_the_key_bakes_anew(
        tree: Paths, aws: Aws, aws_env: dict[str, str], no_packer_path: str, ami_key: amikey.AmiKey) -> None:
    image = register_kiln_ami(aws, key=ami_key.key)
    env = {**aws_env, "PATH": no_packer_path}
    forced = ami(tree, env, *build_args(), "--force")
    assert forced.returncode == 2 and NO_PACKER in forced.stderr.splitlines()
    assert "--force: baking without looking" in forced.stdout and "up to date" not in forced.stdout
    aws.ec2().disable_image(ImageId=image)
    disabled = ami(tree, env, *build_args())
    assert disabled.returncode == 2 and NO_PACKER in disabled.stderr.splitlines()
    assert "up to date" not in disabled.stdout


def test_build_refuses_while_an_ami_with_the_key_is_pending(
        tree: Paths, aws: Aws, aws_env: dict[str, str], no_packer_path: str, ami_key: amikey.AmiKey) -> None:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends

    image = register_kiln_ami(aws, key=ami_key.key)
    # EC2 registers an AMI as pending for minutes; moto's are available at once: the stand-in's
    # own state says otherwise here (it runs in this process).
    ec2_backends[DEFAULT_ACCOUNT_ID][REGION].amis[image].state = "pending"
    result = ami(tree, {**aws_env, "PATH": no_packer_path}, *build_args())
    assert result.returncode == 2, result.stdout + result.stderr
    assert (f"error: {PAIR}: an AMI with key {ami_key.short} is still on its way in {REGION} {image} "
            "(pending): another build is registering or copying it") in result.stderr
    assert "or pass --force" in result.stderr and "Traceback" not in result.stderr
    assert "packages ..." not in result.stdout and not (tree.artifacts / PAIR).exists()


@pytest.mark.skipif(shutil.which("packer") is None,
                    reason="packer is not installed (scripts/setup installs it)")
def test_the_template_with_the_key_passes_packer_validate(tree: Paths, ssh_key: Path) -> None:
    from kiln.aws.bake import with_key
    from kiln.checks import PASS
    from kiln.image import packer
    from kiln.image.render import RenderOptions, render_all
    from kiln.image.validate import packer_checks

    config = with_key(_config(tree), "ab" * 32)
    version = packer.installed_version()
    assert version is not None
    options = RenderOptions(packer_version=version, git_revision="test", accelerator="tcg", ssh_key=ssh_key)
    (item,) = render_all(config, select_pairs(config.data, ["ubuntu-24.04"], ["amazon-ebs"]), tree, options)
    assert f'-{"ab" * 8}-${{local.stamp}}"' in item.files["kiln.pkr.hcl"]
    (check,) = packer_checks([item], tree)
    assert check.result == PASS, check.detail


def test_build_help_says_how_keys_decide(tree: Paths, aws_env: dict[str, str]) -> None:
    result = ami(tree, aws_env, "ami.build", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "the tag kiln:key and, in its name, the key's first 16 hex digits" in text
    assert "If the build region has one, Packer does not run" in text
    assert "still pending" in text and "exit code 2" in text
    assert "--force" in text and "Bake a new AMI even when one with this build's key exists" in text
