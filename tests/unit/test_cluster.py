"""kiln.vagrant.cluster's pure parts: reading `vagrant ssh-config`, finding the cluster a task means."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kiln.config.load import load_config
from kiln.errors import KilnError, UserError
from kiln.paths import Paths
from kiln.vagrant import cluster
from kiln.vagrant.render import render_cluster, write_cluster

# What `vagrant ssh-config m1 m2` prints with vagrant-libvirt (2.3.4 / 0.11.2).
SSH_CONFIG = """Host m1
  HostName 192.168.121.17
  User kiln
  Port 22
  UserKnownHostsFile /dev/null
  StrictHostKeyChecking no
  PasswordAuthentication no
  IdentityFile /work/main/build/keys/kiln_ed25519
  IdentitiesOnly yes
  LogLevel FATAL
  PubkeyAcceptedKeyTypes +ssh-rsa
  HostKeyAlgorithms +ssh-rsa

Host m2
  HostName 192.168.121.54
  User kiln
  Port 22
  IdentityFile "/work/main/build/keys/kiln_ed25519"
"""


def test_every_host_block_of_vagrant_ssh_config_is_read() -> None:
    blocks = cluster.parse_ssh_config(SSH_CONFIG)
    assert sorted(blocks) == ["m1", "m2"]
    assert blocks["m1"]["HostName"] == "192.168.121.17" and blocks["m1"]["User"] == "kiln"
    assert blocks["m1"]["Port"] == "22"
    # python-vagrant's reader takes the quotes off
    assert blocks["m2"]["IdentityFile"] == "/work/main/build/keys/kiln_ed25519"


def test_a_block_without_an_address_is_an_error() -> None:
    with pytest.raises(KilnError, match="no HostName for m3"):
        cluster.parse_ssh_config("Host m3\n  User kiln\n  IdentityFile /k\n")


def _machines(directory: Path) -> None:
    state = directory / ".vagrant" / "machines" / "m1" / "libvirt"
    state.mkdir(parents=True)
    (state / "id").write_text("0f3c")


def test_the_only_cluster_with_machines_is_the_default(tree: Paths) -> None:
    cfg = load_config(tree)
    first = write_cluster(render_cluster(cfg, "3m", tree))
    write_cluster(render_cluster(cfg, "3m2a", tree))
    with pytest.raises(UserError, match="no cluster has machines"):
        cluster.load(tree, None)
    _machines(first)
    found = cluster.load(tree, None)
    assert (found.name, found.roles()) == ("kiln-3m", [("m1", "master"), ("m2", "master"), ("m3", "master")])
    _machines(tree.build / "vagrant" / "kiln-3m2a")
    with pytest.raises(UserError, match="several clusters have machines: kiln-3m, kiln-3m2a"):
        cluster.load(tree, None)
    assert cluster.load(tree, "kiln-3m2a").name == "kiln-3m2a"
    with pytest.raises(UserError, match="no cluster 'lab'"):
        cluster.load(tree, "lab")


def test_a_block_with_a_line_that_is_not_key_value_is_an_error() -> None:
    with pytest.raises(KilnError, match="unreadable block for m4"):
        cluster.parse_ssh_config("Host m4\n  HostName 10.0.0.4\n  User kiln\n  IdentityFile /k\n  Oops\n")


def _hung_ssh(bin_dir: Path) -> None:
    """A stand-in for ssh to a machine too busy to answer: it prints nothing and never ends."""
    bin_dir.mkdir()
    fake = bin_dir / "ssh"
    fake.write_text("#!/bin/sh\nexec sleep 600\n")
    fake.chmod(0o755)


def test_a_node_that_does_not_answer_in_time_is_not_ready_not_an_error(tmp_path: Path,
                                                                         monkeypatch) -> None:
    _hung_ssh(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setattr(cluster, "STATUS_SECONDS", 1)
    found = cluster.Cluster("kiln-t", tmp_path, {"machines": []})
    report = cluster.node_report(found, "m1", "master", "10.141.141.10")
    assert report.status is None
    assert report.error == "kiln-node status did not answer within 1s"
    assert (report.name, report.role, report.ip) == ("m1", "master", "10.141.141.10")
