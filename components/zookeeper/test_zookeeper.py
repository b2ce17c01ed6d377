"""ZooKeeper: installed disabled at bake time; at boot it answers ruok and stores znodes."""

from __future__ import annotations

import pytest
from kiln_infra import (
    boot_only,
    for_roles,
    jvm_run,
    port_open,
    require,
    unit_active,
    unit_enabled,
    wait_until,
)


def test_installed_with_its_own_unit(host, components, phase) -> None:
    require(components, "zookeeper")
    assert host.file("/etc/systemd/system/zookeeper.service").exists
    assert host.file("/etc/zookeeper/conf").is_directory
    if phase == "bake":
        assert not unit_enabled(host, "zookeeper")
        assert not unit_active(host, "zookeeper")


def test_answers_ruok(host, components, phase, role) -> None:
    require(components, "zookeeper")
    boot_only(phase)
    for_roles(role, "standalone", "master")
    out = wait_until(host, "echo ruok | timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/2181; "
                           "cat >&3; cat <&3' | grep -x imok", seconds=300)
    assert out.stdout.strip() == "imok"
    assert port_open(host, 2181)


def test_znode_write_and_read(host, components, phase, role) -> None:
    require(components, "zookeeper")
    boot_only(phase)
    for_roles(role, "standalone", "master")
    cli = host.run("ls /usr/share/zookeeper/bin/zkCli.sh /opt/zookeeper/bin/zkCli.sh 2>/dev/null "
                   "| head -1").stdout.strip()
    assert cli, "zkCli.sh not found"
    # One znode per node: the masters of a cluster share one ensemble and run this at once.
    znode = f"/kiln-infra-test-{host.check_output('hostname -s')}"
    jvm_run(host, f"{cli} -server 127.0.0.1:2181 delete {znode} >/dev/null 2>&1")
    create = jvm_run(host, f"{cli} -server 127.0.0.1:2181 create {znode} hello 2>&1")
    assert create.rc == 0, create.stdout
    read = jvm_run(host, f"{cli} -server 127.0.0.1:2181 get {znode} 2>&1")
    assert "hello" in read.stdout.splitlines()


def test_masters_form_one_ensemble(host, components, phase, role, node_spec) -> None:
    """On a master of several, this server is the leader or a follower of one ensemble whose
    members are exactly the spec's masters."""
    require(components, "zookeeper")
    boot_only(phase)
    for_roles(role, "master")
    masters = node_spec["masters"]
    if len(masters) < 2:
        pytest.skip("a single master is a standalone ZooKeeper, not an ensemble")
    out = wait_until(host, "echo srvr | timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/2181; "
                           "cat >&3; cat <&3' | grep -E '^Mode: (leader|follower)$'", seconds=300)
    assert out.rc == 0, out.stdout
    conf = host.file("/etc/zookeeper/conf/zoo.cfg").content_string
    servers = sorted(ln.split("=", 1)[1].split(":")[0] for ln in conf.splitlines()
                     if ln.startswith("server."))
    assert servers == sorted(masters)
    assert host.check_output("sudo cat /var/lib/zookeeper/myid").strip() == str(node_spec["node_id"])
