"""Cluster readiness verdicts from the nodes' `kiln-node status --json` answers."""

from __future__ import annotations

from typing import Any

from kiln.config import catalog
from kiln.config.load import load_config
from kiln.paths import REPO_ROOT, Paths
from kiln.vagrant import readiness
from kiln.vagrant.readiness import NodeReport

KINDS = readiness.probe_kinds(catalog.load(REPO_ROOT).node_catalog(load_config(Paths(REPO_ROOT)).data))


def verdict(reports: list[NodeReport]) -> readiness.Verdict:
    return readiness.verdict(reports, KINDS)


def unit(name: str, ready: bool = True, detail: str = "active", **facts: Any) -> dict[str, Any]:
    return {"unit": name, "active": True, "ready": ready, "detail": detail, "facts": facts}


def node(name: str, role: str, *units: dict[str, Any], skipped: tuple[str, ...] = (),
         ip: str = "") -> NodeReport:
    return NodeReport(name, role, {"name": name, "role": role, "ready": all(u["ready"] for u in units),
                                   "units": list(units), "skipped": list(skipped)}, ip=ip)


def test_probe_kinds_come_from_the_catalog() -> None:
    assert KINDS == {"zookeeper": "zookeeper", "mesos-master": "mesos-master", "mesos-agent": "mesos-agent",
                     "marathon": "http"}


NO_MESOS = ("mesos not in this image: skipping mesos-master", "marathon not in this image: skipping marathon")


def test_an_ensemble_of_three_with_one_leader_is_ready() -> None:
    v = verdict([node(name, "master", unit("zookeeper", detail=mode, mode=mode), skipped=NO_MESOS)
                 for name, mode in (("m1", "follower"), ("m2", "leader"), ("m3", "follower"))])
    assert v.ready and v.problems == []
    assert v.summary == ["zookeeper: 3/3 serving, leader m2", "not in this image: marathon, mesos"]


def test_a_server_without_quorum_names_the_node_and_why() -> None:
    v = verdict([node("m1", "master", unit("zookeeper", False, "not serving requests (no quorum yet?)")),
                 node("m2", "master", unit("zookeeper", detail="leader", mode="leader")),
                 NodeReport("m3", "master", None, "ssh: connect to host 10.141.141.12 port 22: No route")])
    assert not v.ready
    assert v.problems == ["m1: zookeeper: not serving requests (no quorum yet?)",
                          "m3: no status (ssh: connect to host 10.141.141.12 port 22: No route)"]
    assert v.summary == ["zookeeper: 1/2 serving, leader m2"]


def test_two_leaders_is_not_an_ensemble() -> None:
    v = verdict([node("m1", "master", unit("zookeeper", mode="leader")),
                 node("m2", "master", unit("zookeeper", mode="leader"))])
    assert not v.ready
    assert v.problems == ["zookeeper: expected one leader among 2 servers, got 2 (m1, m2)"]


def test_mesos_needs_one_agreed_leader_that_lists_every_agent_active() -> None:
    leader = "10.141.141.10:5050"
    masters = [node("m1", "master", unit("zookeeper", mode="leader"),
                    unit("mesos-master", leader=leader, is_leader=True, active_agents=["10.141.141.13"]),
                    unit("marathon")),
               node("m2", "master", unit("zookeeper", mode="follower"),
                    unit("mesos-master", leader=leader, is_leader=False, active_agents=[]),
                    unit("marathon"))]
    agents = [node("a1", "agent", unit("mesos-agent", master="10.141.141.10"), unit("docker"),
                   ip="10.141.141.13"),
              node("a2", "agent", unit("mesos-agent", False, "not registered with a master yet"),
                   unit("docker"), ip="10.141.141.14")]
    v = verdict(masters + agents)
    assert not v.ready
    assert v.problems == ["a2: mesos-agent: not registered with a master yet",
                          "mesos: the leader 10.141.141.10:5050 has 1/2 agents active; not yet: a2"]
    assert "marathon: 2/2 answering" in v.summary
    agents[1] = node("a2", "agent", unit("mesos-agent", master="10.141.141.10"), unit("docker"),
                     ip="10.141.141.14")
    v = verdict(masters + agents)
    assert not v.ready, "an agent that found a master is not active until the leader lists it"
    masters[0].status["units"][1]["facts"]["active_agents"].append("10.141.141.14")  # type: ignore[index]
    v = verdict(masters + agents)
    assert v.ready, v.problems
    assert v.summary[1] == "mesos: leader 10.141.141.10:5050, 2/2 agents active"


def test_followers_that_agree_on_a_leader_no_master_answers_as_are_not_ready() -> None:
    v = verdict([node("m1", "master", unit("mesos-master", leader="10.0.0.3:5050", is_leader=False)),
                 node("m2", "master", unit("mesos-master", leader="10.0.0.3:5050", is_leader=False))])
    assert not v.ready
    assert v.problems == ["mesos: the masters name 10.0.0.3:5050 the leader, but no master answered as it"]


def test_masters_that_disagree_on_the_leader_are_not_ready() -> None:
    v = verdict([node("m1", "master", unit("mesos-master", leader="10.0.0.1:5050", is_leader=True)),
                 node("m2", "master", unit("mesos-master", leader="10.0.0.2:5050", is_leader=True))])
    assert not v.ready
    assert v.problems == ["mesos: masters disagree on the leader: 10.0.0.1:5050, 10.0.0.2:5050"]


def test_a_standalone_node_is_its_own_ensemble_and_agent() -> None:
    v = verdict([node("mesos", "standalone", unit("zookeeper", mode="standalone"), unit("docker"),
                      unit("haproxy"))])
    assert v.ready
    assert v.summary == ["zookeeper: 1/1 serving"]
