"""Rendering of every target x builder pair, determinism, and Packer version gating."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.config import catalog
from kiln.config.load import load_config
from kiln.config.targets import select_pairs
from kiln.image.packer import PackerVersion
from kiln.image.render import RenderOptions, provision_env, render_all, render_pair
from kiln.paths import Paths

OLD = PackerVersion(1, 6, 6)
NEW = PackerVersion(1, 11, 2)

EXPECTED_PAIRS = {
    "ubuntu-24.04-qemu", "ubuntu-24.04-virtualbox", "ubuntu-24.04-amazon-ebs",
    "ubuntu-22.04-qemu", "ubuntu-22.04-virtualbox", "ubuntu-22.04-amazon-ebs",
    "amazonlinux-2023-qemu", "amazonlinux-2023-virtualbox", "amazonlinux-2023-amazon-ebs",
    "debian-12-qemu", "debian-12-virtualbox",
}


def options(key: Path, version: PackerVersion = OLD) -> RenderOptions:
    return RenderOptions(packer_version=version, git_revision="abc123def456",
                         accelerator="tcg", ssh_key=key)


def test_every_sensible_pair_is_selected_and_debian_has_no_ami(tree: Paths) -> None:
    cfg = load_config(tree)
    names = {p.name for p in select_pairs(cfg.data)}
    assert names == EXPECTED_PAIRS


def _templates(files: dict[str, str]) -> dict[str, str]:
    return {name: text for name, text in files.items() if name.endswith(".pkr.hcl")}


@pytest.mark.parametrize("pair_name", sorted(EXPECTED_PAIRS))
def test_each_pair_renders_its_layers(tree: Paths, ssh_key: Path, pair_name: str) -> None:
    cfg = load_config(tree)
    pair = next(p for p in select_pairs(cfg.data) if p.name == pair_name)
    files = render_pair(cfg, pair, tree, options(ssh_key)).files
    assert "KILN_TARGET=" + pair.target.name in files["kiln.env"]
    templates = _templates(files)
    if pair.builder.name == "virtualbox":
        assert templates == {}, "the virtualbox box is made from the qemu image, not by Packer"
        return
    if pair.builder.name == "amazon-ebs":
        assert set(templates) == {"kiln.pkr.hcl"}
        whole = templates["kiln.pkr.hcl"]
        assert "components/base/bake.sh" in whole and "provision/cleanup.sh" in whole
        assert "-m kiln.image.inbuild verify" in whole
        return
    assert set(templates) == {"system/kiln.pkr.hcl", "packages/kiln.pkr.hcl", "payload/kiln.pkr.hcl"}
    system, payload = templates["system/kiln.pkr.hcl"], templates["payload/kiln.pkr.hcl"]
    package_layer = templates["packages/kiln.pkr.hcl"]
    # a package layer: packages.sh alone, on kiln's own parent disk (no download, no checks)
    assert "provision/packages.sh" in package_layer and "components/" not in package_layer.split("build {")[1]
    assert "kiln.image.inbuild" not in package_layer and "parent.qcow2" in package_layer
    for hcl in (system, package_layer, payload):
        assert f'source "{pair.builder.packer_source}"' in hcl
        assert 'post-processor "manifest"' in hcl and 'post-processor "vagrant"' not in hcl
        assert "packer {" not in hcl  # 1.6.6: no required_plugins block
        assert "accelerator      = var.accelerator" in hcl and "skip_compaction  = true" in hcl
        # Packer's own template reaches it as a variable's value: no Jinja escaping in kiln's files.
        assert '"user,id=user.0,hostfwd=tcp:127.0.0.1:{{ .SSHHostPort }}-:22"' in hcl
    assert "provision/packages.sh" in system and "components/java/bake.sh" in system
    assert "components/node/bake.sh" not in system and "kiln.image.inbuild" not in system
    assert "components/node/bake.sh" in payload and "components/java/bake.sh" not in payload
    assert payload.index("provision/manifest.sh") < payload.index("provision/cleanup.sh")
    assert "-m kiln.image.inbuild verify" in payload and "image-manifest.json" in payload
    if pair.target.image is not None:
        assert 'cd_label = "cidata"' in system
        assert "ssh_authorized_keys" in files["cidata/user-data"]
        assert f"file:{pair.target.image['checksum_url']}" in system  # not pinned yet
    if pair.target.name == "debian-12":
        assert "cidata/user-data" not in files
        assert "debian-12-base.qcow2" in system


def test_no_template_splices_packer_s_go_templates_through_jinja() -> None:
    from kiln.paths import REPO_ROOT

    for template in (REPO_ROOT / "packer").rglob("*.j2"):
        assert "{{ '{{" not in template.read_text(), template


def test_amazon_ebs_security_and_tags(tree: Paths, ssh_key: Path) -> None:
    cfg = load_config(tree, sets=['aws.extra_regions=["eu-west-1"]',
                                  "aws.ebs.kms_key_id=alias/kiln",
                                  'aws.share_with_accounts=["123456789012"]'])
    pair = next(p for p in select_pairs(cfg.data) if p.name == "ubuntu-24.04-amazon-ebs")
    old = render_pair(cfg, pair, tree, options(ssh_key, OLD)).files["kiln.pkr.hcl"]
    new = render_pair(cfg, pair, tree, options(ssh_key, NEW)).files["kiln.pkr.hcl"]
    for hcl in (old, new):
        assert "encrypt_boot = true" in hcl
        assert 'kms_key_id   = "alias/kiln"' in hcl
        assert 'ami_regions     = ["eu-west-1"]' in hcl
        assert 'ami_users       = ["123456789012"]' in hcl
        assert 'owners      = ["099720109477"]' in hcl
        assert "most_recent = true" in hcl
        assert '"kiln:git-revision" = var.git_revision' in hcl
        assert '"kiln:build-time" = local.build_time' in hcl
        assert '"kiln:target" = "ubuntu-24.04"' in hcl
        assert '"kiln:source-ami" = "{{ .SourceAMI }}"' in hcl
        # components by name only: config's `version` settings are not what the image holds (the
        # exact versions are in its manifest)
        names = "base java zookeeper mesos marathon docker haproxy qemu-kvm rancher node"
        assert f'"kiln:components" = "{names}"' in hcl
        assert "mesos=1.11.1" not in hcl and "zookeeper=3.8.4" not in hcl
    assert "metadata_options" not in old.replace("no metadata_options", "")
    assert 'http_tokens                 = "required"' in new
    assert 'imds_support = "v2.0"' in new


def test_required_plugins_only_for_packer_1_7_and_newer(tree: Paths, ssh_key: Path) -> None:
    cfg = load_config(tree)
    pair = next(p for p in select_pairs(cfg.data) if p.name == "debian-12-qemu")
    new = render_pair(cfg, pair, tree, options(ssh_key, NEW)).files["system/kiln.pkr.hcl"]
    assert "required_plugins" in new
    assert 'source  = "github.com/hashicorp/qemu"' in new
    assert 'source  = "github.com/hashicorp/amazon"' not in new
    assert PackerVersion.parse("Packer v1.6.6") == OLD
    assert not OLD.has_plugins and PackerVersion(1, 7, 0).has_plugins


def test_rendering_twice_is_byte_identical(tree: Paths, ssh_key: Path) -> None:
    cfg = load_config(tree)
    pairs = select_pairs(cfg.data)
    first = render_all(cfg, pairs, tree, options(ssh_key))
    snapshot = {p: p.read_bytes() for p in sorted(tree.rendered_packer.rglob("*")) if p.is_file()}
    render_all(cfg, pairs, tree, options(ssh_key))
    again = {p: p.read_bytes() for p in sorted(tree.rendered_packer.rglob("*")) if p.is_file()}
    assert snapshot == again
    assert len(first) == len(EXPECTED_PAIRS)
    assert not [p for p in tree.rendered_packer.iterdir() if p.name.startswith(".")]


def test_offline_profile_leaves_excluded_components_out(tree: Paths, ssh_key: Path) -> None:
    cfg = load_config(tree, profile="offline")
    (pair,) = select_pairs(cfg.data)
    files = render_pair(cfg, pair, tree, options(ssh_key)).files
    every = "".join(_templates(files).values())
    assert "components/mesos/bake.sh" in every  # built from source since kiln packages Mesos
    assert "components/marathon/bake.sh" not in every
    assert "KILN_COMPONENTS='base java zookeeper mesos docker haproxy qemu-kvm rancher node'" \
        in files["kiln.env"]
    # kiln's package cache serves the base's mirror only (AVENTER's repository goes direct)
    assert "KILN_APT_PROXY_HOSTS=deb.debian.org\n" in files["kiln.env"]


def test_provision_env_flattens_component_settings(tree: Paths) -> None:
    cfg = load_config(tree)
    pair = next(p for p in select_pairs(cfg.data) if p.name == "ubuntu-24.04-qemu")
    env = provision_env(cfg, pair, cfg.components_for(pair.target.name), "rev", catalog.load(tree.root))
    assert "KILN_MESOS_SUPPORTED_TARGETS='debian-12 ubuntu-22.04 ubuntu-24.04'" in env
    assert "KILN_APT_PROXY_HOSTS" not in env  # a cloud image: no package cache of kiln's
    assert "KILN_QEMU_KVM_BRIDGE=br0" in env
    assert "KILN_MESOS_APT_REPO='deb [signed-by=/etc/apt/keyrings/aventer.asc] " in env
    assert "KILN_FAMILY=apt" in env
    assert "KILN_DOCKER_PACKAGES='docker.io apparmor apparmor-utils'" in env
    assert "KILN_ZOOKEEPER_PORT_CLIENT=2181" in env and "KILN_HAPROXY_PORT_VHOSTS=80" in env


def test_a_failing_render_leaves_previous_output_untouched(tree: Paths, ssh_key: Path) -> None:
    cfg = load_config(tree)
    pairs = select_pairs(cfg.data, ["debian-12"], ["qemu"])
    render_all(cfg, pairs, tree, options(ssh_key))
    before = (tree.rendered_packer / "debian-12-qemu" / "payload" / "kiln.pkr.hcl").read_bytes()
    (tree.packer_templates / "build.pkr.hcl.j2").write_text("{{ no_such_variable }}\n")
    with pytest.raises(Exception, match="no_such_variable"):
        render_all(cfg, pairs, tree, options(ssh_key))
    assert (tree.rendered_packer / "debian-12-qemu" / "payload" / "kiln.pkr.hcl").read_bytes() == before


def test_selecting_an_impossible_pair_is_a_user_error(tree: Paths) -> None:
    from kiln.errors import UserError

    cfg = load_config(tree)
    with pytest.raises(UserError, match="no such build: debian-12-amazon-ebs"):
        select_pairs(cfg.data, ["debian-12"], ["amazon-ebs"])
    with pytest.raises(UserError, match="unknown target 'fedora-40'"):
        select_pairs(cfg.data, ["fedora-40"], None)


def test_in_build_verification_of_an_ami_uses_packers_own_key(tree: Paths, ssh_key: Path) -> None:
    cfg = load_config(tree)
    opts = RenderOptions(packer_version=OLD, git_revision="t", accelerator="tcg",
                         ssh_key=ssh_key)
    for pair in select_pairs(cfg.data, ["ubuntu-24.04"], ["amazon-ebs", "qemu"]):
        files = render_pair(cfg, pair, tree, opts).files
        hcl = files.get("kiln.pkr.hcl") or files["payload/kiln.pkr.hcl"]
        if pair.builder.name == "amazon-ebs":
            assert "--key-from-env KILN_INBUILD_KEY" in hcl and f"--key {ssh_key}" not in hcl
            assert '"KILN_INBUILD_KEY=${build.SSHPrivateKey}"' in hcl
        else:
            assert f"--key {ssh_key}" in hcl and "SSHPrivateKey" not in hcl
