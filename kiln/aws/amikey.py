"""The key of a kiln AMI: the qcow2 layers' keys (kiln.image.layers) on top of the source AMI.

A chain of sha256s, one link per step of the bake, each over its parent's key and its inputs:

    source   the target's `ami` block (owners, name filter, root device) and the id it resolves
             to in the build region: the newest match, as Packer's source_ami_filter picks it
             ("" when nothing matches: Packer will not find one either)
    system   the inputs of the qcow2 system and payload layers (layers.layer_inputs): the bake
    payload  steps and the bytes of every file they read, the component settings as kiln.env
             gives them, the package lists, the packages kiln built, kiln's version and the
             Packer version the template is rendered for; not build.disk_size_mb (qemu's disk)
    ami      what makes the AMI of the baked disk: aws.ebs (encryption, KMS key, volume size and
             type), aws.imdsv2_required, and the amazon-ebs template that applies them

Not in it: the build region and the copy regions (a key names the same image in every region),
sharing, tags, the build instance type, project.version, the git revision, the checkout's path,
timestamps, dict order. kiln puts the key on every AMI it bakes: the tag kiln:key, and its first
SHORT hex digits in the AMI's name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.aws.session import Aws
from kiln.config import catalog
from kiln.config.load import Config
from kiln.config.targets import Pair
from kiln.image import layers
from kiln.image.packer import PackerVersion
from kiln.image.render import BakedPackage, provision_env

KEY_TAG = "kiln:key"
SHORT = 16
SOURCE, AMI = "source", "ami"
# packer/sources/amazon-ebs.pkr.hcl.j2's source_ami_filter, besides the target's name filter.
SOURCE_FILTERS = {"architecture": "x86_64", "root-device-type": "ebs", "virtualization-type": "hvm"}
TEMPLATE = "packer/sources/amazon-ebs.pkr.hcl.j2"
QEMU_ONLY = ("disk_size_mb",)  # an AMI's disk is aws.ebs.volume_size_gb


@dataclass(frozen=True)
class Link:
    name: str  # source, system, payload, ami
    parent: str
    key: str
    inputs: dict[str, Any]


@dataclass(frozen=True)
class AmiKey:
    chain: tuple[Link, ...]

    @property
    def key(self) -> str:
        return self.chain[-1].key

    @property
    def short(self) -> str:
        return self.key[:SHORT]

    def record(self) -> dict[str, Any]:
        """The chain as amis.json keeps it, so two builds' inputs can be compared (layers.explain)."""
        return {"key": self.key, "chain": [{"name": link.name, "parent": link.parent, "key": link.key,
                                            "inputs": link.inputs} for link in self.chain]}


def source_filters(ami: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"Name": "name", "Values": [ami["name_filter"]]},
            *({"Name": k, "Values": [v]} for k, v in SOURCE_FILTERS.items())]


def resolve_source(aws: Aws, region: str, ami: Mapping[str, Any]) -> str:
    """The id of the AMI Packer would start from in `region` (the newest match), or ""."""
    found = aws.ec2(region).describe_images(Owners=list(ami["owners"]), Filters=source_filters(ami))["Images"]
    newest = max(found, key=lambda i: (i.get("CreationDate", ""), i["ImageId"]), default=None)
    return str(newest["ImageId"]) if newest else ""


def source_inputs(ami: Mapping[str, Any], source_id: str) -> dict[str, Any]:
    # The owners are a set to Packer and EC2: their order does not matter.
    return {"ami": {**ami, "owners": sorted(ami["owners"])}, "filters": SOURCE_FILTERS, "id": source_id}


def ami_inputs(config: Config, root: Path) -> dict[str, Any]:
    aws = config["aws"]
    return {"ebs": dict(aws["ebs"]), "imdsv2_required": bool(aws["imdsv2_required"]),
            "template": layers.tree_digest(root, [TEMPLATE])}


def key_context(config: Config, pair: Pair, root: Path, packer_version: PackerVersion,
                packages: Sequence[BakedPackage] = ()) -> layers.KeyContext:
    """What the layer inputs need: kiln.env as the bake gets it, the packages kiln built, the Packer
    version the template is rendered for. No package-source state: the source AMI's id stands for
    the distribution's state, as a cloud image's sha256 does for the qcow2 layers."""
    cat = catalog.load_cached(root)
    env = provision_env(config, pair, config.components_for(pair.target.name), "", cat, packages)
    return layers.KeyContext(root=root, env_text=env, packages={p.component: p.sha256 for p in packages},
                             sources={}, tools={"packer": str(packer_version)})


def ami_key(config: Config, pair: Pair, ctx: layers.KeyContext, source_id: str) -> AmiKey:
    """The key of `pair`'s AMI, with every link's inputs."""
    assert pair.target.ami is not None, f"{pair.target.name} has no ami block"
    source = source_inputs(pair.target.ami, source_id)
    chain = [Link(SOURCE, "", layers.digest({SOURCE: source}), source)]
    inputs = layers.layer_inputs(config, pair, ctx)
    for name in layers.LAYERS:
        kept = {k: v for k, v in inputs[name].items() if k not in QEMU_ONLY}
        chain.append(Link(name, chain[-1].key, layers.layer_key(chain[-1].key, name, kept), kept))
    made = ami_inputs(config, ctx.root)
    chain.append(Link(AMI, chain[-1].key, layers.layer_key(chain[-1].key, AMI, made), made))
    return AmiKey(tuple(chain))

