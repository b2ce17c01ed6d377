"""What `invoke nightly` runs and what it reports as not run, decided before anything starts.
The online check, AWS credentials and installed tools are passed in, so these tests neither
reach the internet nor depend on what this host has; `invoke nightly` itself runs for real
in tests/e2e/test_nightly.py."""

from __future__ import annotations

import pytest

from kiln.config.load import load_config
from kiln.errors import UserError
from kiln.nightly import plan
from kiln.paths import Paths

NO_MESOS_BUILD = "cannot be built as configured: components.mesos.source = build"
ALL_TOOLS = {"packer", "qemu-system-x86_64", "VBoxManage", "vagrant"}


def _plan(tree: Paths, *, online: bool, credentials: bool, tools=ALL_TOOLS, **load):
    cfg = load_config(tree, **load)
    return {p.pair.name: p.not_run for p in plan(cfg, [], online=lambda url: online,
                                                 credentials=lambda: credentials,
                                                 have=lambda tool: tool in tools)}


def test_offline_without_credentials_only_debian_12_qemu_runs(tree: Paths) -> None:
    got = _plan(tree, online=False, credentials=False, profile="offline")
    assert got["debian-12-qemu"] == ""
    # kiln builds Mesos for Debian only: the cloud targets need a package or Mesos left out.
    assert got["ubuntu-24.04-qemu"].startswith(NO_MESOS_BUILD)
    got = _plan(tree, online=False, credentials=False, profile="offline",
                sets=['components.exclude.mesos="elsewhere"'])
    assert got["ubuntu-24.04-qemu"] == ("cloud-images.ubuntu.com is not reachable: the source image cannot "
                                        "be downloaded (offline?)")
    assert got["amazonlinux-2023-qemu"].startswith("cdn.amazonlinux.com is not reachable")
    assert got["ubuntu-24.04-amazon-ebs"] == "no AWS credentials (the standard boto3 chain found none)"
    assert got["debian-12-virtualbox"] == ""  # made from the qemu image, booted on VirtualBox-like hardware
    assert "debian-12-amazon-ebs" not in got  # debian-12 has no AMI source at all
    assert sum(1 for reason in got.values() if not reason) == 2


def test_unpinned_downloads_are_not_run_with_the_key_to_set(tree: Paths) -> None:
    got = _plan(tree, online=True, credentials=True)
    assert got["ubuntu-24.04-qemu"].startswith(NO_MESOS_BUILD)
    assert "components.marathon.sha256: pin the sha256" in got["debian-12-qemu"]
    got = _plan(tree, online=True, credentials=True, sets=["components.mesos.source=aventer"])
    assert "components.mesos.key_fingerprint" in got["ubuntu-24.04-qemu"]
    assert "AVENTER's packages come from m3scluster/clusterd" in got["ubuntu-24.04-qemu"]


def test_missing_tools_are_named(tree: Paths) -> None:
    got = _plan(tree, online=True, credentials=True, tools=set(), profile="offline")
    assert got["debian-12-qemu"] == "packer is not installed"
    assert got["debian-12-virtualbox"] == "packer is not installed"
    got = _plan(tree, online=True, credentials=True, tools={"packer"}, profile="offline")
    assert got["debian-12-qemu"] == "qemu-system-x86_64 is not installed"
    assert got["debian-12-virtualbox"] == "qemu-system-x86_64 is not installed"


def test_builders_narrow_the_night_to_their_pairs(tree: Paths) -> None:
    cfg = load_config(tree, profile="offline")
    got = [p.pair.name for p in plan(cfg, ["debian-12", "ubuntu-24.04"], builders=["qemu", "amazon-ebs"],
                                     online=lambda url: False, credentials=lambda: False,
                                     have=lambda tool: tool in ALL_TOOLS)]
    assert got == ["debian-12-qemu", "ubuntu-24.04-qemu", "ubuntu-24.04-amazon-ebs"]


def test_an_unknown_builder_is_refused_before_anything_runs(tree: Paths) -> None:
    with pytest.raises(UserError, match="unknown builder\\(s\\): vmware"):
        plan(load_config(tree), [], builders=["qemu", "vmware"], online=lambda url: False)
