"""kiln_node, the boot-time configurator: applied against a temp --root, with a recorder in place
of systemd (systemctl cannot act on a temp root, and this machine's systemd is not ours)."""

from __future__ import annotations

import ast
import copy
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from python39 import python39

from kiln.config import catalog
from kiln.config.load import load_config
from kiln.config.schema import schema_problems as jsonschema_problems
from kiln.paths import REPO_ROOT, Paths
from kiln_node import apply as node_apply
from kiln_node import cli, services
from kiln_node import spec as specmod

MASTERS = ["10.141.141.10", "10.141.141.11", "10.141.141.12"]
ZK = "zk://10.141.141.10:2181,10.141.141.11:2181,10.141.141.12:2181"
HEADER = "# Written by kiln-node from the node spec; edits are overwritten at the next apply.\n"
ZOO_COMMON = (
    HEADER + "tickTime=2000\ninitLimit=10\nsyncLimit=5\ndataDir=/var/lib/zookeeper\nclientPort=2181\n"
    "4lw.commands.whitelist=ruok,stat,mntr,srvr\nadmin.enableServer=false\n"
)
STATE = "var/lib/kiln-node/applied.json"


def standalone() -> dict[str, Any]:
    return {"cluster": "kiln", "role": "standalone", "node_id": 1, "name": "mesos", "ip": "10.141.141.10",
            "masters": ["10.141.141.10"], "options": {}}


def master(node_id: int = 2) -> dict[str, Any]:
    return {"cluster": "kiln", "role": "master", "node_id": node_id, "name": f"m{node_id}",
            "ip": MASTERS[node_id - 1], "masters": list(MASTERS), "options": {}}


def agent() -> dict[str, Any]:
    return {"cluster": "kiln", "role": "agent", "node_id": 4, "name": "a1", "ip": "10.141.141.13",
            "masters": list(MASTERS),
            "options": {"agent": {"attributes": {"zone": "z2", "rack": "r1"},
                                  "resources": {"mem": 1024, "cpus": 2}}}}


RANCHER = {"cattle_url": "http://10.141.141.2:8080/v1", "access_key": "AK1", "secret_key": "SK1",
           "ip_cidr": "192.168.200.1/24"}


IMAGE_FILES = {"etc/kiln/catalog.json"}  # what the image brings; kiln-node only reads it
_START_ORDER = catalog.load(REPO_ROOT).unit_order()


_CATALOG = json.dumps(catalog.load(REPO_ROOT).node_catalog(load_config(Paths(REPO_ROOT)).data))


def image(root: Path) -> Path:
    """`root` as an image kiln baked looks to kiln-node: the component catalog in place."""
    path = root / "etc" / "kiln" / "catalog.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_CATALOG)
    return root


class Recorder(services.ServiceManager):
    """Records systemctl actions instead of running them; `fail` units make their action fail."""

    def __init__(self, fail: tuple[str, ...] = ()) -> None:
        super().__init__(io.StringIO())
        self.calls: list[tuple[str, str]] = []
        self.fail = fail

    def run(self, action: str, unit: str) -> None:
        self.calls.append((action, unit))
        if unit in self.fail:
            raise services.ServiceError(f"systemctl {action} {unit} failed (exit 1): recorded failure")


def apply(spec: dict[str, Any], root: Path, recorder: Recorder | None = None) -> tuple[int, str, Recorder]:
    recorder = recorder or Recorder()
    out = io.StringIO()
    rc = node_apply.apply(spec, root=str(image(root)), manager=recorder, out=out)
    return rc, out.getvalue(), recorder


def snapshot(root: Path) -> dict[str, tuple[str, int, int]]:
    """relative path -> (content, mtime_ns, mode) of every file under root."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not any(p.match(f"*/{f}") for f in IMAGE_FILES):
            st = p.stat()
            out[str(p.relative_to(root))] = (p.read_text(), st.st_mtime_ns, st.st_mode & 0o7777)
    return out


def text(root: Path, path: str) -> str:
    return (root / path.lstrip("/")).read_text()


def written(root: Path) -> set[str]:
    return {p for p in snapshot(root) if p != STATE}


def started(*units: str) -> list[tuple[str, str]]:
    """enable + start of each unit, in the catalog's start order (tests/unit/test_catalog.py
    checks that order puts every unit after the ones it talks to)."""
    return [call for u in sorted(units, key=_START_ORDER.index) for call in (("enable", u), ("start", u))]


def write_manifest(root: Path, components: dict[str, Any]) -> None:
    path = root / "etc/kiln/manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"components": components}))


# -- what each role gets --------------------------------------------------------------------

def test_standalone_files_and_services(tmp_path: Path) -> None:
    rc, out, rec = apply(standalone(), tmp_path)
    assert rc == 0, out
    assert written(tmp_path) == {
        "etc/hosts", "etc/zookeeper/conf/zoo.cfg", "etc/mesos/zk",
        "etc/mesos-master/quorum", "etc/mesos-master/ip", "etc/mesos-master/hostname",
        "etc/mesos-master/work_dir", "etc/mesos-master/cluster",
        "etc/mesos-agent/ip", "etc/mesos-agent/hostname", "etc/mesos-agent/work_dir",
        "etc/mesos-agent/containerizers", "etc/mesos-agent/executor_registration_timeout",
        "etc/kiln/marathon.env", "etc/kiln/haproxy-bridge.env",
    }
    # ZooKeeper in standalone mode: no server lines, no myid.
    assert text(tmp_path, "/etc/zookeeper/conf/zoo.cfg") == ZOO_COMMON
    assert text(tmp_path, "/etc/mesos/zk") == "zk://10.141.141.10:2181/mesos\n"
    assert text(tmp_path, "/etc/mesos-master/quorum") == "1\n"
    assert text(tmp_path, "/etc/mesos-master/ip") == "10.141.141.10\n"
    assert text(tmp_path, "/etc/mesos-master/hostname") == "10.141.141.10\n"
    assert text(tmp_path, "/etc/mesos-master/work_dir") == "/var/lib/mesos/master\n"
    assert text(tmp_path, "/etc/mesos-master/cluster") == "kiln\n"
    assert text(tmp_path, "/etc/mesos-agent/work_dir") == "/var/lib/mesos/agent\n"
    assert text(tmp_path, "/etc/mesos-agent/containerizers") == "docker,mesos\n"
    assert text(tmp_path, "/etc/mesos-agent/executor_registration_timeout") == "5mins\n"
    assert text(tmp_path, "/etc/kiln/marathon.env") == (
        HEADER + "# environment of marathon.service\n"
        "MARATHON_MASTER=zk://10.141.141.10:2181/mesos\nMARATHON_ZK=zk://10.141.141.10:2181/marathon\n"
        "MARATHON_HOSTNAME=10.141.141.10\nMARATHON_HTTP_PORT=8080\n"
        "LIBPROCESS_IP=10.141.141.10\nLIBPROCESS_PORT=15101\n")
    assert text(tmp_path, "/etc/kiln/haproxy-bridge.env") == (
        HEADER + "# environment of kiln-haproxy-bridge.service\n"
        "KILN_BRIDGE_SOURCE=marathon\nKILN_BRIDGE_MARATHON_URLS=http://10.141.141.10:8080\n")
    assert text(tmp_path, "/etc/hosts") == (
        "# BEGIN kiln\n# managed by kiln-node: lines between these markers are overwritten\n"
        "10.141.141.10 mesos\n# END kiln\n")
    assert rec.calls == started("zookeeper", "docker", "mesos-master", "mesos-agent", "marathon",
                                "haproxy", "kiln-haproxy-bridge")
    units = ", ".join(u for a, u in started("zookeeper", "docker", "mesos-master") if a == "start")
    assert f"15 file(s) changed; started: {units}" in out


def test_master_of_three(tmp_path: Path) -> None:
    rc, out, rec = apply(master(2), tmp_path)
    assert rc == 0, out
    assert written(tmp_path) == {
        "etc/hosts", "etc/zookeeper/conf/zoo.cfg", "var/lib/zookeeper/myid", "etc/mesos/zk",
        "etc/mesos-master/quorum", "etc/mesos-master/ip", "etc/mesos-master/hostname",
        "etc/mesos-master/work_dir", "etc/mesos-master/cluster",
        "etc/kiln/marathon.env", "etc/kiln/haproxy-bridge.env",
    }
    assert text(tmp_path, "/etc/zookeeper/conf/zoo.cfg") == ZOO_COMMON + (
        "server.1=10.141.141.10:2888:3888\nserver.2=10.141.141.11:2888:3888\n"
        "server.3=10.141.141.12:2888:3888\n")
    assert text(tmp_path, "/var/lib/zookeeper/myid") == "2\n"
    assert text(tmp_path, "/etc/mesos/zk") == ZK + "/mesos\n"
    assert text(tmp_path, "/etc/mesos-master/quorum") == "2\n"
    assert text(tmp_path, "/etc/mesos-master/ip") == "10.141.141.11\n"
    assert text(tmp_path, "/etc/kiln/marathon.env") == (
        HEADER + "# environment of marathon.service\n"
        f"MARATHON_MASTER={ZK}/mesos\nMARATHON_ZK={ZK}/marathon\n"
        "MARATHON_HOSTNAME=10.141.141.11\nMARATHON_HTTP_PORT=8080\n"
        "LIBPROCESS_IP=10.141.141.11\nLIBPROCESS_PORT=15101\n")
    assert text(tmp_path, "/etc/kiln/haproxy-bridge.env") == (
        HEADER + "# environment of kiln-haproxy-bridge.service\nKILN_BRIDGE_SOURCE=marathon\n"
        "KILN_BRIDGE_MARATHON_URLS=http://10.141.141.10:8080,http://10.141.141.11:8080,http://10.141.141.12:8080\n")
    assert text(tmp_path, "/etc/hosts").splitlines()[2:] == [
        "10.141.141.10 m1", "10.141.141.11 m2", "10.141.141.12 m3", "# END kiln"]
    assert rec.calls == started("zookeeper", "mesos-master", "marathon", "haproxy", "kiln-haproxy-bridge")
    assert "master 2 of 3 (quorum 2)" in out


@pytest.mark.parametrize(("masters", "quorum"), [(1, 1), (3, 2), (5, 3), (4, 3)])
def test_quorum_is_a_majority(tmp_path: Path, masters: int, quorum: int) -> None:
    ips = [f"10.0.0.{i}" for i in range(1, masters + 1)]
    spec = {"cluster": "kiln", "role": "master", "node_id": 1, "name": "m1", "ip": ips[0], "masters": ips}
    assert apply(spec, tmp_path)[0] == 0
    assert text(tmp_path, "/etc/mesos-master/quorum") == f"{quorum}\n"


def test_agent(tmp_path: Path) -> None:
    rc, out, rec = apply(agent(), tmp_path)
    assert rc == 0, out
    assert written(tmp_path) == {
        "etc/hosts", "etc/mesos/zk", "etc/mesos-agent/ip", "etc/mesos-agent/hostname",
        "etc/mesos-agent/work_dir", "etc/mesos-agent/containerizers",
        "etc/mesos-agent/executor_registration_timeout", "etc/mesos-agent/attributes",
        "etc/mesos-agent/resources",
    }
    assert text(tmp_path, "/etc/mesos/zk") == ZK + "/mesos\n"
    assert text(tmp_path, "/etc/mesos-agent/ip") == "10.141.141.13\n"
    assert text(tmp_path, "/etc/mesos-agent/hostname") == "10.141.141.13\n"
    assert text(tmp_path, "/etc/mesos-agent/attributes") == "rack:r1;zone:z2\n"
    assert text(tmp_path, "/etc/mesos-agent/resources") == "cpus:2;mem:1024\n"
    assert text(tmp_path, "/etc/hosts").splitlines()[2:] == [
        "10.141.141.10 m1", "10.141.141.11 m2", "10.141.141.12 m3", "10.141.141.13 a1", "# END kiln"]
    assert rec.calls == started("docker", "mesos-agent")


def test_options_change_what_is_written(tmp_path: Path) -> None:
    spec = agent()
    spec["options"] = {"work_dir": "/srv/mesos/", "containerizers": "mesos",
                       "executor_registration_timeout": "90secs"}
    assert apply(spec, tmp_path)[0] == 0
    assert text(tmp_path, "/etc/mesos-agent/work_dir") == "/srv/mesos/agent\n"
    assert text(tmp_path, "/etc/mesos-agent/containerizers") == "mesos\n"
    assert text(tmp_path, "/etc/mesos-agent/executor_registration_timeout") == "90secs\n"
    # No attributes or resources given: no empty flag files.
    assert not (tmp_path / "etc/mesos-agent/attributes").exists()
    assert not (tmp_path / "etc/mesos-agent/resources").exists()


def test_master_without_marathon_and_haproxy(tmp_path: Path) -> None:
    spec = master(1)
    spec["options"] = {"marathon": False, "haproxy": False}
    rc, _, rec = apply(spec, tmp_path)
    assert rc == 0
    assert [p.name for p in (tmp_path / "etc/kiln").iterdir()] == ["catalog.json"]
    assert rec.calls == started("zookeeper", "mesos-master")


def test_rancher_env_is_private_and_adds_its_units(tmp_path: Path) -> None:
    m, a = master(1), agent()
    m["options"] = {"rancher": dict(RANCHER)}
    a["options"] = {"rancher": dict(RANCHER)}
    rc, _, rec = apply(m, tmp_path / "m")
    assert rc == 0
    env = tmp_path / "m/etc/kiln/rancher.env"
    assert env.read_text() == (
        HEADER + "# environment of the rancher-mesos-* services (secrets: mode 0600)\n"
        "CATTLE_URL=http://10.141.141.2:8080/v1\nCATTLE_ACCESS_KEY=AK1\nCATTLE_SECRET_KEY=SK1\n"
        f"MESOS_MASTER={ZK}/mesos\nIP_CIDR=192.168.200.1/24\n")
    assert env.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "m" / STATE).stat().st_mode & 0o777 == 0o600  # the state holds the spec
    assert rec.calls[-2:] == started("rancher-mesos-scheduler")
    rc, _, rec = apply(a, tmp_path / "a")
    assert rc == 0
    assert rec.calls == started("docker", "mesos-agent", "rancher-mesos-executor")


def test_units_of_components_the_image_lacks_are_skipped(tmp_path: Path) -> None:
    write_manifest(tmp_path, {"zookeeper": {"version": "3.8.4"}, "docker": {"version": "20.10"},
                              "haproxy": {"version": "2.6"}, "marathon": {"version": "1.8.222"},
                              "rancher": {"version": "sha256:ab", "executor_url": "http://x/e"}})
    spec = standalone()
    spec["options"] = {"rancher": dict(RANCHER)}
    rc, out, rec = apply(spec, tmp_path)
    assert rc == 0
    assert "mesos not in this image: skipping mesos-master" in out
    assert "mesos not in this image: skipping mesos-agent" in out
    assert "rancher scheduler not in this image: skipping rancher-mesos-scheduler" in out
    assert rec.calls == started("zookeeper", "docker", "marathon", "haproxy", "kiln-haproxy-bridge",
                                "rancher-mesos-executor")
    # Files only Mesos reads are not written into an image without Mesos.
    assert not (tmp_path / "etc/mesos").exists()
    assert not (tmp_path / "etc/mesos-master").exists()
    assert (tmp_path / "etc/zookeeper/conf/zoo.cfg").exists()


def test_an_unreadable_manifest_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "root/etc/kiln").mkdir(parents=True, exist_ok=True)
    (tmp_path / "root/etc/kiln/manifest.json").write_text("{not json")
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(standalone()))
    assert cli.main(["apply", str(spec_file), "--root", str(tmp_path / "root")]) == 1
    assert "/etc/kiln/manifest.json: unreadable image manifest" in capsys.readouterr().err
    assert written(tmp_path / "root") == {"etc/kiln/manifest.json"}


# -- /etc/hosts ----------------------------------------------------------------------------

def test_hosts_block_keeps_the_rest_of_the_file(tmp_path: Path) -> None:
    hosts = tmp_path / "etc/hosts"
    hosts.parent.mkdir(parents=True, exist_ok=True)
    hosts.write_text("127.0.0.1 localhost\n::1 localhost ip6-localhost\n")
    os.chmod(hosts, 0o640)
    assert apply(master(1), tmp_path)[0] == 0
    block = ["# BEGIN kiln", "# managed by kiln-node: lines between these markers are overwritten",
             "10.141.141.10 m1", "10.141.141.11 m2", "10.141.141.12 m3", "# END kiln"]
    assert hosts.read_text().splitlines() == ["127.0.0.1 localhost", "::1 localhost ip6-localhost", *block]
    assert hosts.stat().st_mode & 0o777 == 0o640
    # A line added after the block survives a spec change; the block is replaced in place.
    hosts.write_text(hosts.read_text() + "192.168.1.5 printer\n")
    spec = master(1)
    spec["name"] = "zk1"
    rc, _, rec = apply(spec, tmp_path)
    assert rc == 0
    assert hosts.read_text().splitlines() == [
        "127.0.0.1 localhost", "::1 localhost ip6-localhost", *block[:2],
        "10.141.141.10 m1 zk1", *block[3:], "192.168.1.5 printer"]
    assert rec.calls == []  # names are looked up when used: nothing restarts


def test_unbalanced_hosts_markers_stop_the_apply(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = image(tmp_path / "root")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n# BEGIN kiln\n10.0.0.1 old\n")
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(master(1)))
    before = snapshot(root)
    assert cli.main(["apply", str(spec_file), "--root", str(root)]) == 1
    assert "unbalanced '# BEGIN kiln' / '# END kiln' lines" in capsys.readouterr().err
    assert snapshot(root) == before


# -- idempotence and changes ---------------------------------------------------------------

@pytest.mark.parametrize("make", [standalone, master, agent])
def test_second_apply_changes_nothing(tmp_path: Path, make: Callable[[], dict[str, Any]]) -> None:
    assert apply(make(), tmp_path)[0] == 0
    before = snapshot(tmp_path)
    rc, out, rec = apply(make(), tmp_path)
    assert rc == 0
    assert out.strip().endswith("kiln-node: no change")
    assert rec.calls == []
    assert snapshot(tmp_path) == before  # contents, modes and mtimes


def test_changed_attribute_rewrites_one_file_and_restarts_the_agent(tmp_path: Path) -> None:
    assert apply(agent(), tmp_path)[0] == 0
    before = snapshot(tmp_path)
    spec = agent()
    spec["options"]["agent"]["attributes"]["rack"] = "r2"
    rc, out, rec = apply(spec, tmp_path)
    assert rc == 0
    after = snapshot(tmp_path)
    changed = {p for p in after if after[p] != before.get(p)}
    assert changed == {"etc/mesos-agent/attributes", STATE}
    assert text(tmp_path, "/etc/mesos-agent/attributes") == "rack:r2;zone:z2\n"
    assert rec.calls == [("restart", "mesos-agent")]
    assert "1 file(s) changed; started: -; restarted: mesos-agent; stopped: -" in out


def test_changed_masters_restart_only_their_readers(tmp_path: Path) -> None:
    assert apply(agent(), tmp_path)[0] == 0
    spec = agent()
    spec["masters"] = [*MASTERS, "10.141.141.20", "10.141.141.21"]
    rc, _, rec = apply(spec, tmp_path)
    assert rc == 0
    assert rec.calls == [("restart", "mesos-agent")]  # docker reads none of the changed files


def test_removed_option_removes_its_file(tmp_path: Path) -> None:
    assert apply(agent(), tmp_path)[0] == 0
    spec = agent()
    del spec["options"]["agent"]["resources"]
    rc, out, rec = apply(spec, tmp_path)
    assert rc == 0
    assert not (tmp_path / "etc/mesos-agent/resources").exists()
    assert "removed /etc/mesos-agent/resources" in out
    assert rec.calls == [("restart", "mesos-agent")]


def test_option_turned_off_stops_its_units(tmp_path: Path) -> None:
    assert apply(master(1), tmp_path)[0] == 0
    before = snapshot(tmp_path)
    spec = master(1)
    spec["options"] = {"haproxy": False}
    rc, out, rec = apply(spec, tmp_path)
    assert rc == 0
    assert rec.calls == [("stop", "kiln-haproxy-bridge"), ("disable", "kiln-haproxy-bridge"),
                         ("stop", "haproxy"), ("disable", "haproxy")]
    assert not (tmp_path / "etc/kiln/haproxy-bridge.env").exists()
    assert snapshot(tmp_path)["etc/zookeeper/conf/zoo.cfg"] == before["etc/zookeeper/conf/zoo.cfg"]
    assert "stopped: kiln-haproxy-bridge, haproxy" in out
    # And back on: started again, nothing else touched.
    rc, _, rec = apply(master(1), tmp_path)
    assert rec.calls == started("haproxy", "kiln-haproxy-bridge")


def test_role_change_swaps_files_and_units(tmp_path: Path) -> None:
    assert apply(master(1), tmp_path)[0] == 0
    spec = agent()
    spec["ip"], spec["masters"] = "10.141.141.10", MASTERS[1:]
    rc, _, rec = apply(spec, tmp_path)
    assert rc == 0
    assert rec.calls == [
        ("stop", "kiln-haproxy-bridge"), ("disable", "kiln-haproxy-bridge"), ("stop", "haproxy"),
        ("disable", "haproxy"), ("stop", "marathon"), ("disable", "marathon"), ("stop", "mesos-master"),
        ("disable", "mesos-master"), ("stop", "zookeeper"), ("disable", "zookeeper"),
        *started("docker", "mesos-agent")]
    assert not (tmp_path / "etc/zookeeper/conf/zoo.cfg").exists()
    assert not (tmp_path / "var/lib/zookeeper/myid").exists()
    assert not list((tmp_path / "etc/mesos-master").iterdir())
    assert text(tmp_path, "/etc/mesos/zk") == "zk://10.141.141.11:2181,10.141.141.12:2181/mesos\n"


def test_a_failed_unit_is_retried_by_the_next_apply(tmp_path: Path) -> None:
    rc, out, rec = apply(master(1), tmp_path, Recorder(fail=("marathon",)))
    assert rc == 1
    assert "error: systemctl enable marathon failed" in out
    assert "FAILED: marathon" in out
    # Units after the failed one still started.
    assert ("start", "kiln-haproxy-bridge") in rec.calls
    assert "marathon" not in json.loads((tmp_path / STATE).read_text())["units"]
    rc, _, rec = apply(master(1), tmp_path)
    assert rc == 0
    assert rec.calls == started("marathon")


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    out = io.StringIO()
    rec = Recorder()
    assert node_apply.apply(master(1), root=str(image(tmp_path)), manager=rec, dry_run=True, out=out) == 0
    assert snapshot(tmp_path) == {}
    assert rec.calls == []
    assert "would write /etc/zookeeper/conf/zoo.cfg" in out.getvalue()
    assert "would run: systemctl enable zookeeper" in out.getvalue()
    assert "dry run: nothing written, nothing run" in out.getvalue()


def test_root_other_than_slash_only_prints_systemctl_actions(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(agent()))
    assert cli.main(["apply", str(spec_file), "--root", str(image(tmp_path / "root"))]) == 0
    out = capsys.readouterr().out
    assert "  not run: --root given: systemctl enable docker\n" in out
    assert "(systemctl actions not run: --root given)" in out


def test_service_manager_reports_a_failing_systemctl() -> None:
    if shutil.which("systemctl") is None:
        pytest.skip("systemctl is not installed on this machine")
    manager = services.ServiceManager(io.StringIO())
    with pytest.raises(services.ServiceError, match=r"systemctl start kiln-test-no-such-unit failed \(exit"):
        manager.run("start", "kiln-test-no-such-unit")


# -- bad specs -----------------------------------------------------------------------------

def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(spec: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = spec
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return change


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda spec: spec.pop(key)


BAD = [
    ("role", _set("role", "boss"), '$.role: expected one of "standalone", "master", "agent", got "boss"'),
    ("node-id-position", _set("node_id", 3),
     "$.node_id: this master is $.masters[1] (10.141.141.11), so its node_id must be 2, got 3"),
    ("master-ip-not-in-masters", _set("ip", "10.141.141.99"),
     '$.ip: a master\'s ip must be one of $.masters ["10.141.141.10", "10.141.141.11", "10.141.141.12"], '
     'got "10.141.141.99"'),
    ("ip-not-an-ip", _set("ip", "m2.example"),
     '$.ip: expected an IPv4 address such as 10.141.141.10, got "m2.example"'),
    ("ip-octet-range", _set("ip", "10.141.141.256"),
     '$.ip: expected an IPv4 address such as 10.141.141.10, got "10.141.141.256"'),
    ("master-not-an-ip", _set("masters", ["10.141.141.10", "10.141.141.11", "localhost"]),
     '$.masters[2]: expected an IPv4 address such as 10.141.141.10, got "localhost"'),
    ("duplicate-masters", _set("masters", ["10.141.141.10", "10.141.141.11", "10.141.141.11"]),
     '$.masters: expected unique items, got ["10.141.141.10", "10.141.141.11", "10.141.141.11"]'),
    ("unknown-key", _set("colour", "blue"),
     "$.colour: unknown key (allowed: cluster, ip, masters, name, node_id, options, role)"),
    ("unknown-option", _set("options.marthon", True),
     "$.options.marthon: unknown key (allowed: agent, containerizers, executor_registration_timeout, "
     "haproxy, marathon, rancher, work_dir)"),
    ("unknown-agent-key", _set("options.agent.roles", ["x"]),
     "$.options.agent.roles: unknown key (allowed: attributes, resources)"),
    ("missing-key", _drop("masters"), "$: missing required key 'masters'"),
    ("node-id-type", _set("node_id", "2"), '$.node_id: expected integer, got string "2"'),
    ("node-id-range", _set("node_id", 0), "$.node_id: expected minimum 1, got 0"),
    ("option-type", _set("options.marathon", "yes"),
     '$.options.marathon: expected boolean, got string "yes"'),
    ("containerizers", _set("options.containerizers", "docker,lxc"),
     "$.options.containerizers: expected 'mesos', 'docker' or both comma-separated (e.g. docker,mesos), "
     'got "docker,lxc"'),
    ("attribute-value", _set("options.agent.attributes", {"rack": "r1;r2"}),
     "$.options.agent.attributes.rack: expected an attribute value without ';', ':' or white space, "
     'got "r1;r2"'),
    ("newline", _set("name", "m2\n"),
     '$.name: control characters (such as a newline) are not allowed, got "m2\\n"'),
    ("rancher-partial", _set("options.rancher", {"cattle_url": "http://r/v1"}),
     "$.options.rancher.access_key: required once any rancher option is set"),
]


@pytest.mark.parametrize(("mutate", "message"), [(m, msg) for _, m, msg in BAD], ids=[i for i, _, _ in BAD])
def test_bad_spec_exits_2_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             mutate: Callable[[dict[str, Any]], None], message: str) -> None:
    spec = master(2)
    mutate(spec)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n")
    before = snapshot(root)
    for argv in (["validate", str(spec_file)], ["apply", str(spec_file), "--root", str(root)]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("kiln-node: error: ")]
        assert any(message in line for line in errors), err
        extra = 1 if message.startswith("$.options.rancher") else 0  # it lacks secret_key too
        assert len(errors) == 1 + extra, err  # one line per problem, no echoes
        assert f"problem{'s' if extra else ''} in the node spec; nothing written" in err
    assert snapshot(root) == before


def test_standalone_and_agent_rules() -> None:
    s = standalone()
    s["masters"] = ["10.141.141.10", "10.141.141.11"]
    a = agent()
    a["ip"] = "10.141.141.10"
    assert specmod.check(s)[0] == [
        '$.masters: a standalone node is its own only master: expected ["10.141.141.10"], '
        'got ["10.141.141.10", "10.141.141.11"]']
    assert specmod.check(a)[0] == [
        "$.ip: an agent's ip must not be one of $.masters (a node that is both is role 'standalone'), "
        'got "10.141.141.10"']


def test_invalid_json_is_a_spec_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text('{"role": "master",')
    assert cli.main(["apply", str(spec_file), "--root", str(tmp_path / "root")]) == 2
    assert f"kiln-node: error: {spec_file}: not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "root").exists()


def test_even_number_of_masters_is_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = master(1)
    spec["masters"] = MASTERS[:2]
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    assert cli.main(["validate", str(spec_file)]) == 0
    captured = capsys.readouterr()
    assert captured.err == (
        "kiln-node: WARNING: $.masters: 2 masters is an even number: the quorum of 2 tolerates 0 failed "
        "master(s), no more than 1 masters would; use an odd number for ZooKeeper and the Mesos quorum\n")
    assert "OK: m1 10.141.141.10 = master 1 of 2 (quorum 2) of cluster kiln" in captured.out
    assert cli.main(["apply", str(spec_file), "--root", str(image(tmp_path / "root"))]) == 0
    assert text(tmp_path / "root", "/etc/mesos-master/quorum") == "2\n"


# A trailing newline is where the two differ on purpose (see the next test).
SAME_AS_JSONSCHEMA = [(i, m) for i, m, _ in BAD if i != "newline"]


@pytest.mark.parametrize("mutate", [m for _, m in SAME_AS_JSONSCHEMA], ids=[i for i, _ in SAME_AS_JSONSCHEMA])
def test_stdlib_checks_match_jsonschema(mutate: Callable[[dict[str, Any]], None]) -> None:
    """The node's stdlib interpreter of spec.schema.json says what jsonschema says, word for word."""
    spec = master(2)
    mutate(spec)
    schema = specmod.load_schema()
    assert sorted(specmod.schema_problems(spec, schema)) == sorted(jsonschema_problems(spec, schema))


@pytest.mark.parametrize(("key", "value"), [("name", "m2\n"), ("ip", "10.141.141.11\n"),
                                            ("cluster", "kiln\n")])
def test_a_trailing_newline_fails_the_pattern_on_the_node(key: str, value: str) -> None:
    """JSON Schema patterns are ECMA-262 regexes, where `$` is the end of the string. Python's re (and
    so the jsonschema package) also lets `$` match before a final newline: jsonschema passes "m2\\n" as
    a name. The node's interpreter does not, and the control-character rule both sides share refuses
    the value with one message."""
    spec = master(2)
    spec[key] = value
    schema = specmod.load_schema()
    assert jsonschema_problems(spec, schema) == []
    [stdlib] = specmod.schema_problems(spec, schema)
    assert stdlib.startswith(f"$.{key}: expected ")
    assert specmod.check(spec)[0] == [
        f"$.{key}: control characters (such as a newline) are not allowed, got {json.dumps(value)}"]


# -- the program as it runs on a node ------------------------------------------------------

def _run_cli(python: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(REPO_ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([python, "-m", "kiln_node", *args], capture_output=True, text=True, env=env,
                          timeout=60, check=False)


def test_cli_as_a_subprocess(tmp_path: Path) -> None:
    spec_file = tmp_path / "m1.json"
    spec_file.write_text(json.dumps(master(1)))
    root = image(tmp_path / "root")
    first = _run_cli(sys.executable, "apply", str(spec_file), "--root", str(root))
    assert first.returncode == 0, first.stderr
    assert "not run: --root given: systemctl start zookeeper" in first.stdout
    assert text(root, "/var/lib/zookeeper/myid") == "1\n"
    second = _run_cli(sys.executable, "apply", str(spec_file), "--root", str(root))
    assert (second.returncode, second.stdout.splitlines()[-1]) == (0, "kiln-node: no change")
    usage = _run_cli(sys.executable, "--help")
    assert usage.returncode == 0 and "apply" in usage.stdout and "validate" in usage.stdout


def test_every_module_parses_as_python_3_9() -> None:
    sources = sorted((REPO_ROOT / "kiln_node").glob("*.py"))
    assert {p.name for p in sources} >= {"__init__.py", "__main__.py", "cli.py", "spec.py"}
    for path in sources:
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))



def test_runs_on_python_3_9_with_the_same_result(tmp_path: Path) -> None:
    python, env = python39()
    for name, spec in (("standalone", standalone()), ("master", master(3)), ("agent", agent())):
        spec_file = tmp_path / f"{name}.json"
        spec_file.write_text(json.dumps(spec))
        old = _run_cli(python, "apply", str(spec_file), "--root", str(image(tmp_path / "py39" / name)),
                       env=env)
        assert old.returncode == 0, old.stderr
        assert apply(copy.deepcopy(spec), tmp_path / "host" / name)[0] == 0
        old_files = {p: c for p, (c, _, _) in snapshot(tmp_path / "py39" / name).items()}
        new_files = {p: c for p, (c, _, _) in snapshot(tmp_path / "host" / name).items()}
        assert old_files == new_files
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**master(1), "role": "boss"}))
    result = _run_cli(python, "validate", str(bad), env=env)
    assert result.returncode == 2 and "$.role: expected one of" in result.stderr


def test_without_marathon_in_the_image_the_bridge_routes_from_mesos(tmp_path: Path) -> None:
    write_manifest(tmp_path, {c: {"version": "1"} for c in ("zookeeper", "mesos", "haproxy", "docker")})
    rc, _, _ = apply(master(1), tmp_path)
    assert rc == 0
    assert text(tmp_path, "/etc/kiln/haproxy-bridge.env").splitlines()[2:] == [
        "KILN_BRIDGE_SOURCE=mesos",
        "KILN_BRIDGE_MESOS_URLS=http://10.141.141.10:5050,http://10.141.141.11:5050,http://10.141.141.12:5050"]
