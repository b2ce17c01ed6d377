"""Where a cluster's instances live and who may talk to them.

- Subnet and addresses: every master's node spec lists all masters, so private addresses
  are chosen before launch, from the subnet's free addresses.
- Security group: the component catalog's ports (components/*/component.json) open only
  between members of the group where they say "cluster", and from aws.admin_cidr where they
  say "admin" (empty admin_cidr = no ingress from outside at all).
- Key pair: aws.key_name if set, else kiln's build key imported for this cluster.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from kiln.aws.session import error_code, retry_on, tag_specs
from kiln.config.catalog import PortRule
from kiln.errors import UserError

# AWS keeps the first four addresses of every subnet (network, router, DNS, future) and
# the last one (broadcast).
RESERVED_HEAD, RESERVED_TAIL = 4, 1


@dataclass(frozen=True)
class Subnet:
    id: str
    vpc_id: str
    cidr: str
    zone: str


def ingress_rules(group_id: str, admin_cidr: str, ports: Sequence[PortRule]) -> list[dict[str, Any]]:
    """IpPermissions of a cluster's group: members among themselves, admins from one CIDR."""
    rules = [{
        "IpProtocol": p.protocol, "FromPort": p.first, "ToPort": p.last,
        "UserIdGroupPairs": [{"GroupId": group_id, "Description": f"kiln cluster: {p.why}"}],
    } for p in ports if "cluster" in p.reach]
    if admin_cidr:
        rules += [{
            "IpProtocol": p.protocol, "FromPort": p.first, "ToPort": p.last,
            "IpRanges": [{"CidrIp": admin_cidr, "Description": f"kiln admin: {p.why}"}],
        } for p in ports if "admin" in p.reach]
    return rules


def free_addresses(cidr: str, used: Iterable[str], count: int) -> list[str]:
    """The lowest `count` addresses of `cidr` that AWS does not reserve and nothing uses."""
    net = ipaddress.IPv4Network(cidr)
    taken = {ipaddress.IPv4Address(a) for a in used}
    usable = list(net)[RESERVED_HEAD:-RESERVED_TAIL] if net.num_addresses > 5 else []
    chosen = [str(a) for a in usable if a not in taken][:count]
    if len(chosen) < count:
        raise UserError(f"subnet {cidr} has {len(chosen)} free address(es), the cluster needs {count}",
                        "set aws.subnet_id to a larger subnet, or launch a smaller shape")
    return chosen


def pick_subnet(ec2: Any, subnet_id: str) -> Subnet:
    """aws.subnet_id if set, else the default VPC's default subnet in the first zone (by name)."""
    if subnet_id:
        try:
            found = ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"]
        except ClientError as exc:
            if error_code(exc) == "InvalidSubnetID.NotFound":
                raise UserError(f"aws.subnet_id {subnet_id}: no such subnet in this region",
                                "set aws.subnet_id to a subnet of the region, or \"\" for the "
                                "default VPC") from None
            raise
    else:
        found = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
        if not found:
            raise UserError("this region has no default VPC subnet to launch into",
                            "set aws.subnet_id to the subnet kiln should use")
    first = sorted(found, key=lambda s: s["AvailabilityZone"])[0]
    return Subnet(first["SubnetId"], first["VpcId"], first["CidrBlock"], first["AvailabilityZone"])


def used_addresses(ec2: Any, subnet_id: str) -> set[str]:
    """Private addresses already taken in the subnet (instances, load balancers, endpoints)."""
    used: set[str] = set()
    pages = ec2.get_paginator("describe_network_interfaces").paginate(
        Filters=[{"Name": "subnet-id", "Values": [subnet_id]}])
    for page in pages:
        for eni in page["NetworkInterfaces"]:
            used.update(a["PrivateIpAddress"] for a in eni.get("PrivateIpAddresses", []))
            if eni.get("PrivateIpAddress"):
                used.add(eni["PrivateIpAddress"])
    return used


def create_security_group(ec2: Any, name: str, vpc_id: str, tags: Mapping[str, str]) -> str:
    """An empty group, born tagged; allow_cluster_traffic adds the rules (two steps, so that a
    caller can record the group before anything else can fail)."""
    return str(ec2.create_security_group(
        GroupName=name, VpcId=vpc_id,
        Description=f"kiln cluster {name}: members among themselves, admins from one CIDR",
        TagSpecifications=tag_specs(tags, "security-group"))["GroupId"])


def allow_cluster_traffic(ec2: Any, group_id: str, admin_cidr: str, ports: Sequence[PortRule]) -> None:
    # A group id can be unknown to the next call for a moment after it was created.
    retry_on({"InvalidGroup.NotFound"}, lambda: ec2.authorize_security_group_ingress(
        GroupId=group_id, IpPermissions=ingress_rules(group_id, admin_cidr, ports)))


def import_key_pair(ec2: Any, name: str, public_key: str, tags: Mapping[str, str]) -> str:
    ec2.import_key_pair(KeyName=name, PublicKeyMaterial=public_key.encode(),
                        TagSpecifications=tag_specs(tags, "key-pair"))
    return name


def require_key_pair(ec2: Any, name: str) -> None:
    """A configured key pair must exist: failing before anything is created beats failing halfway."""
    try:
        ec2.describe_key_pairs(KeyNames=[name])
    except ClientError as exc:
        if error_code(exc) == "InvalidKeyPair.NotFound":
            raise UserError(f"aws.key_name {name}: no such key pair in this region",
                            "import it (aws ec2 import-key-pair), or set aws.key_name to \"\" so "
                            "that kiln imports its own key for the cluster") from None
        raise
