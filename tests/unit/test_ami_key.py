"""AMI keys (kiln.aws.amikey): deterministic, built from the qcow2 layers' inputs on top of the
source AMI, changed by (and only by) what can change the AMI; the key on the AMIs kiln renders;
which AMIs with a key count (kiln.aws.images.sort_keyed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kiln.aws import amikey, images
from kiln.aws.bake import with_key
from kiln.config import catalog
from kiln.config.load import load_config
from kiln.config.targets import select_pairs
from kiln.image.packer import PackerVersion
from kiln.image.render import BakedPackage, RenderOptions, render_pair
from kiln.paths import Paths

PACKER = PackerVersion(1, 11, 2)
SOURCE = "ami-0source0000000001"


def _key(tree: Paths, *sets: str, source: str = SOURCE, packer: PackerVersion = PACKER,
         packages: tuple[BakedPackage, ...] = ()) -> amikey.AmiKey:
    catalog.load_cached.cache_clear()
    config = load_config(tree, sets=list(sets))
    (pair,) = select_pairs(config.data, ["ubuntu-24.04"], ["amazon-ebs"])
    ctx = amikey.key_context(config, pair, tree.root, packer, packages)
    return amikey.ami_key(config, pair, ctx, source)


def _links(key: amikey.AmiKey) -> dict[str, str]:
    return {link.name: link.key for link in key.chain}


def test_the_key_is_deterministic_and_chains_source_system_payload_ami(tree: Paths) -> None:
    first, second = _key(tree), _key(tree)
    assert first == second
    assert [link.name for link in first.chain] == ["source", "system", "payload", "ami"]
    assert all(link.parent == before.key for before, link in zip(first.chain, first.chain[1:], strict=False))
    assert first.key == first.chain[-1].key and first.short == first.key[:16] and len(first.key) == 64
    # The qemu disk size is no input of an AMI; the EBS volume is.
    assert all("disk_size_mb" not in link.inputs for link in first.chain)
    assert first.chain[-1].inputs["ebs"]["volume_size_gb"] == 30
    assert first.chain[0].inputs["id"] == SOURCE


def test_the_checkout_s_path_does_not_matter(tree: Paths, tmp_path: Path) -> None:
    moved = Paths(tmp_path / "elsewhere")
    shutil.copytree(tree.root, moved.root)
    assert _key(tree).key == _key(moved).key


@pytest.mark.parametrize("sets", [
    ("targets.ubuntu-24.04.ami.name_filter=ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-pro-*",),
    ('targets.ubuntu-24.04.ami.owners=["099720109477", "123456789012"]',),
    ("targets.ubuntu-24.04.ami.root_device=/dev/xvda",),
    ("components.zookeeper.version=3.9.9",),  # a system component's setting
    ("components.haproxy.poll_seconds=9",),  # a payload component's setting
    ('components.exclude={"rancher": "not wanted"}',),
    ("build.verify=false",),
    ("build.zero_fill=true",),
    ("aws.ebs.encrypted=false",),
    ("aws.ebs.kms_key_id=alias/kiln",),
    ("aws.ebs.volume_size_gb=40",),
    ("aws.ebs.volume_type=gp2",),
    ("aws.imdsv2_required=false",),
])
def test_a_setting_that_changes_the_ami_changes_the_key(tree: Paths, sets: tuple[str, ...]) -> None:
    assert _key(tree, *sets).key != _key(tree).key


@pytest.mark.parametrize("sets", [
    ("aws.region=eu-west-1",),
    ('aws.extra_regions=["eu-west-1", "us-west-2"]',),
    ('aws.tags={"team": "infra"}',),
    ("aws.instance_types.build=c5.xlarge",),
    ("aws.admin_cidr=203.0.113.0/24",),
    ("build.disk_size_mb=20480",),
    ("build.cpus=8",),
    ("build.accelerator=tcg",),
    ("project.version=9.9.9",),
    ("targets.ubuntu-22.04.ami.name_filter=other-*",),  # another target's
])
def test_a_setting_that_does_not_change_the_ami_leaves_the_key(tree: Paths, sets: tuple[str, ...]) -> None:
    assert _key(tree, *sets).key == _key(tree).key


def test_sharing_does_not_change_the_key(tree: Paths) -> None:
    kms = "aws.ebs.kms_key_id=alias/kiln"  # shared AMIs need a customer key (config check)
    assert _key(tree, kms, 'aws.share_with_accounts=["123456789012"]').key == _key(tree, kms).key


def test_the_owners_order_does_not_matter(tree: Paths) -> None:
    assert (_key(tree, 'targets.ubuntu-24.04.ami.owners=["099720109477", "123456789012"]').key
            == _key(tree, 'targets.ubuntu-24.04.ami.owners=["123456789012", "099720109477"]').key)


def test_a_new_source_ami_changes_every_link_after_the_source(tree: Paths) -> None:
    before, after = _links(_key(tree)), _links(_key(tree, source="ami-0source0000000002"))
    assert all(before[name] != after[name] for name in before)
    assert _key(tree, source="").key != _key(tree).key  # unresolved is a source of its own


def test_a_payload_setting_keeps_the_source_and_system_links(tree: Paths) -> None:
    before, after = _links(_key(tree)), _links(_key(tree, "components.haproxy.poll_seconds=9"))
    assert (after["source"], after["system"]) == (before["source"], before["system"])
    assert after["payload"] != before["payload"] and after["ami"] != before["ami"]


def test_an_ebs_setting_changes_only_the_ami_link(tree: Paths) -> None:
    before, after = _links(_key(tree)), _links(_key(tree, "aws.ebs.volume_size_gb=40"))
    assert {n for n in before if before[n] != after[n]} == {"ami"}


@pytest.mark.parametrize(("path", "changed"), [
    ("components/zookeeper/bake.sh", "system"),
    ("provision/packages.sh", "system"),
    ("provision/lib.sh", "system"),
    ("components/haproxy/bake.sh", "payload"),
    ("kiln_node/render.py", "payload"),
    ("provision/cleanup.sh", "payload"),
    ("packer/sources/amazon-ebs.pkr.hcl.j2", "ami"),
])
def test_a_file_the_bake_reads_changes_the_key_from_its_link_on(tree: Paths, path: str, changed: str) -> None:
    before = _links(_key(tree))
    file = tree.root / path
    file.write_text(file.read_text() + "\n# changed\n")
    after = _links(_key(tree))
    order = list(before)
    assert [n for n in order if before[n] != after[n]] == order[order.index(changed):]


def test_a_qemu_only_template_does_not_change_the_key(tree: Paths) -> None:
    before = _key(tree).key
    file = tree.root / "packer/sources/qemu.pkr.hcl.j2"
    file.write_text(file.read_text() + "\n# changed\n")
    assert _key(tree).key == before


def test_the_packer_version_and_the_packages_kiln_built_are_inputs(tree: Paths) -> None:
    assert _key(tree, packer=PackerVersion(1, 6, 6)).key != _key(tree).key
    origin = "kiln 0.1.0 from the source tree"
    one = (BakedPackage("mesos", Path("/x/mesos.deb"), "a" * 64, origin),)
    moved = (BakedPackage("mesos", Path("/elsewhere/mesos.deb"), "a" * 64, origin),)
    rebuilt = (BakedPackage("mesos", Path("/x/mesos.deb"), "b" * 64, origin),)
    assert _key(tree, packages=one).key != _key(tree).key
    assert _key(tree, packages=one).key == _key(tree, packages=moved).key  # where the cache is: no
    assert _key(tree, packages=one).key != _key(tree, packages=rebuilt).key


def test_the_key_does_not_cover_itself(tree: Paths) -> None:
    """The config ami.build renders with (the key among aws.tags) has the same key."""
    key = _key(tree)
    config = with_key(load_config(tree), key.key)
    (pair,) = select_pairs(config.data, ["ubuntu-24.04"], ["amazon-ebs"])
    assert amikey.ami_key(config, pair, amikey.key_context(config, pair, tree.root, PACKER), SOURCE) == key


def test_the_ami_kiln_renders_carries_its_key_in_tag_and_name(tree: Paths, ssh_key: Path) -> None:
    key = _key(tree).key
    config = load_config(tree)
    (pair,) = select_pairs(config.data, ["ubuntu-24.04"], ["amazon-ebs"])
    options = RenderOptions(packer_version=PACKER, git_revision="rev", accelerator="tcg", ssh_key=ssh_key)
    prefix = f"{config['project']['name']}-ubuntu-24.04-{config['project']['version']}"
    keyed = render_pair(with_key(config, key), pair, tree, options).files["kiln.pkr.hcl"]
    assert f'"kiln:key" = "{key}"' in keyed
    assert f'ami_name        = "{prefix}-{key[:16]}-${{local.stamp}}"' in keyed
    assert '"kiln:target" = "ubuntu-24.04"' in keyed and '"project" = "kiln"' in keyed
    plain = render_pair(config, pair, tree, options).files["kiln.pkr.hcl"]
    assert "kiln:key" not in plain
    assert f'ami_name        = "{prefix}-${{local.stamp}}"' in plain


def _image(ami: str, region: str, state: str, created: str) -> images.Image:
    return images.Image(ami, f"kiln-{ami}", region, created, {images.KEY_TAG: "k"}, (), state)


def test_only_available_images_count_and_pending_ones_are_told_apart() -> None:
    found = images.sort_keyed({
        "us-east-1": [_image("ami-old", "us-east-1", "available", "2026-01-01T00:00:00.000Z"),
                      _image("ami-new", "us-east-1", "available", "2026-01-02T00:00:00.000Z"),
                      _image("ami-coming", "us-east-1", "pending", "2026-01-03T00:00:00.000Z")],
        "eu-west-1": [_image("ami-copying", "eu-west-1", "pending", "2026-01-02T00:00:00.000Z")],
        "us-west-2": [_image("ami-broken", "us-west-2", "failed", "2026-01-02T00:00:00.000Z"),
                      _image("ami-off", "us-west-2", "disabled", "2026-01-03T00:00:00.000Z")],
        "ap-south-1": [],
    })
    assert {r: i.id for r, i in found.available.items()} == {"us-east-1": "ami-new"}
    assert {r: i.id for r, i in found.in_progress.items()} == {"eu-west-1": "ami-copying"}
