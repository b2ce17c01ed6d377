"""kiln-node's Mesos probes and the cluster verdict against real Apache Mesos on loopback (three
masters with a real ZooKeeper, one agent; tests/mesos_local.py): the leader says so, the others
name it through their redirect, all agree, the agent counts once the leader lists it active; when
the leader stops, the remaining masters elect another and the verdict follows. Every master
reports its replica of the registry log caught up before the leader is stopped. The fail-over time
is printed. (A leader that loses its fellow masters keeps leading while ZooKeeper keeps its session;
"no leader" and disagreement are covered with recorded answers in tests/unit.)"""

from __future__ import annotations

import time
from typing import Any

import mesos_local
import pytest

from kiln.vagrant.readiness import NodeReport, verdict
from kiln_node import status

KINDS = {"mesos-master": "mesos-master", "mesos-agent": "mesos-agent"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    reason = mesos_local.skip_reason(zookeeper=True)
    if reason:
        pytest.skip(reason)
    with mesos_local.Cluster(mesos_local.tree(), tmp_path_factory.mktemp("mesos"), masters=3,
                             agents=1) as running:
        running.wait_for_agents()
        running.wait_for_logs()
        yield running


def _master_report(cluster: Any, i: int) -> NodeReport:
    entry = {"unit": "mesos-master", "probe": {"kind": "mesos-master", "port": cluster.master_ports[i]}}
    unit = status.unit_status(entry, {"ip": mesos_local.LOCAL}, active=lambda _: True)
    return NodeReport(f"m{i + 1}", "master", {"units": [unit], "skipped": []}, ip=mesos_local.LOCAL)


def _agent_report() -> NodeReport:
    unit = {"unit": "mesos-agent", "active": True, "ready": True, "detail": "registered", "facts": {}}
    return NodeReport("a1", "agent", {"units": [unit], "skipped": []}, ip=mesos_local.LOCAL)


def _reports(cluster: Any) -> list[NodeReport]:
    live = [i for i, m in enumerate(cluster.masters) if m is not None]
    return [*(_master_report(cluster, i) for i in live), _agent_report()]


def test_the_leader_says_so_and_the_others_name_it(cluster: Any) -> None:
    leader = cluster.leader()
    expected = f"{mesos_local.LOCAL}:{cluster.master_ports[leader]}"
    reports = _reports(cluster)
    for i, report in enumerate(reports[:3]):
        (unit,) = report.status["units"]  # type: ignore[index]
        assert unit["ready"], unit
        assert unit["facts"]["leader"] == expected
        assert unit["facts"]["is_leader"] is (i == leader)
        assert unit["facts"]["log_recovered"] is True  # the real gauge, read from /metrics/snapshot
        if i == leader:
            assert unit["facts"]["active_agents"] == [mesos_local.LOCAL]
        else:
            assert unit["detail"] == f"follows leader {expected}"
    result = verdict(reports, KINDS)
    assert result.ready, result.problems
    assert result.summary == [f"mesos: leader {expected}, 1/1 agents active"]


def test_after_the_leader_stops_another_leads_and_the_agent_comes_back(cluster: Any) -> None:
    old = cluster.leader()
    started = time.monotonic()
    cluster.stop_master(old)
    deadline = time.monotonic() + 120
    result = verdict(_reports(cluster), KINDS)
    while not result.ready and time.monotonic() < deadline:
        time.sleep(0.5)
        result = verdict(_reports(cluster), KINDS)
    took = time.monotonic() - started
    assert result.ready, result.problems
    new = cluster.leader()
    assert new != old
    leader = f"{mesos_local.LOCAL}:{cluster.master_ports[new]}"
    assert result.summary == [f"mesos: leader {leader}, 1/1 agents active"]
    print(f"fail-over on loopback: a new leader with the agent active {took:.1f}s after the leader stopped")
