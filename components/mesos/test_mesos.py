"""Mesos: the package's programs run and load every library when baked; at boot the daemons run
with what the node spec says (read back from each daemon's /flags), the master leads, the agent
registers with its resources, and tasks run to their real end states: a command task and a Docker
task finish, a failing task is reported failed."""

from __future__ import annotations

import json
import shlex
from typing import Any

import pytest
from kiln_infra import boot_only, for_roles, require, unit_enabled, wait_until

PROGRAMS = ("mesos-master", "mesos-agent", "mesos-execute")
TASK_SECONDS = 600  # a task's whole life under TCG emulation, executor start included


@pytest.fixture(scope="module")
def ports(host: Any) -> dict[str, int]:
    catalog = json.loads(host.file("/etc/kiln/catalog.json").content_string)
    return dict(catalog["ports"]["mesos"])


def _get(host: Any, url: str) -> Any:
    out = host.run(f"curl -sf --max-time 10 {shlex.quote(url)}")
    assert out.rc == 0, f"GET {url}: exit {out.rc} {out.stderr}"
    return json.loads(out.stdout)


def _execute(host: Any, node_spec: dict[str, Any], ports: dict[str, int], name: str, *args: str) -> str:
    """mesos-execute from the node itself, until the task's terminal state; its whole output."""
    ip = node_spec["ip"]
    program = host.run("sudo sh -c 'command -v mesos-execute'").stdout.strip() or "mesos-execute"
    argv = [program, f"--master={ip}:{ports['master']}", f"--name={name}", *args]
    out = host.run(f"LIBPROCESS_IP={ip} timeout {TASK_SECONDS} {shlex.join(argv)} 2>&1")
    return str(out.stdout)


# -- baked ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("program", PROGRAMS)
def test_programs_run(host: Any, components: dict[str, Any], program: str) -> None:
    require(components, "mesos")
    # The daemons are in sbin, on root's PATH (they run as root), not on the login user's.
    path = host.run(f"sudo sh -c 'command -v {program}'").stdout.strip()
    assert path, f"{program} is not on root's PATH"
    # mesos-execute has no --version: its usage text proves it starts and loads libmesos.
    flag, says = ("--help", "Usage: mesos-execute") if program == "mesos-execute" else ("--version", "mesos ")
    out = host.run(f"{path} {flag}")
    assert out.rc == 0, out.stderr
    assert says in out.stdout + out.stderr, out.stdout


@pytest.mark.parametrize("program", PROGRAMS)
def test_no_library_is_missing(host: Any, components: dict[str, Any], program: str) -> None:
    require(components, "mesos")
    out = host.run(f"sudo sh -c 'ldd $(command -v {program})'")
    assert out.rc == 0, out.stderr
    assert "libmesos" in out.stdout
    assert "not found" not in out.stdout, out.stdout


def test_units_installed_disabled_and_v1_cgroups_asked_for(host: Any, components: dict[str, Any],
                                                          phase: str) -> None:
    require(components, "mesos")
    for unit in ("mesos-master", "mesos-agent"):
        assert host.file(f"/lib/systemd/system/{unit}.service").exists or \
            host.file(f"/etc/systemd/system/{unit}.service").exists
        if phase == "bake":
            assert not unit_enabled(host, unit)
    extlinux = host.file("/boot/extlinux/extlinux.conf")
    if extlinux.exists:
        assert "systemd.unified_cgroup_hierarchy=0" in extlinux.content_string


# -- booted ---------------------------------------------------------------------------------------

def test_the_kernel_gives_mesos_the_v1_cgroup_hierarchy(host: Any, components: dict[str, Any],
                                                        phase: str) -> None:
    require(components, "mesos")
    boot_only(phase)
    assert host.file("/sys/fs/cgroup/freezer").is_directory, "no cgroup v1 freezer hierarchy"


def test_the_master_runs_what_the_spec_says(host: Any, components: dict[str, Any], phase: str, role: str,
                                            node_spec: dict[str, Any], ports: dict[str, int]) -> None:
    require(components, "mesos")
    boot_only(phase)
    for_roles(role, "standalone", "master")
    ip = node_spec["ip"]
    wait_until(host, f"curl -sf --max-time 5 http://{ip}:{ports['master']}/health", seconds=420)
    flags = _get(host, f"http://{ip}:{ports['master']}/flags")["flags"]
    masters = node_spec["masters"]
    zk_port = json.loads(host.file("/etc/kiln/catalog.json").content_string)["ports"]["zookeeper"]["client"]
    assert flags["zk"] == "zk://" + ",".join(f"{m}:{zk_port}" for m in masters) + "/mesos"
    assert flags["quorum"] == str(len(masters) // 2 + 1)
    assert (flags["ip"], flags["hostname"]) == (ip, ip)
    assert flags["cluster"] == node_spec["cluster"]
    assert flags["work_dir"].endswith("/master")


def test_the_agent_runs_what_the_spec_says(host: Any, components: dict[str, Any], phase: str, role: str,
                                           node_spec: dict[str, Any], ports: dict[str, int]) -> None:
    require(components, "mesos")
    boot_only(phase)
    for_roles(role, "standalone", "agent")
    ip = node_spec["ip"]
    wait_until(host, f"curl -sf --max-time 5 http://{ip}:{ports['agent']}/health", seconds=420)
    flags = _get(host, f"http://{ip}:{ports['agent']}/flags")["flags"]
    options = node_spec.get("options") or {}
    assert flags["containerizers"] == options.get("containerizers", "docker,mesos")
    assert flags["executor_registration_timeout"] == options.get("executor_registration_timeout", "5mins")
    assert flags["master"].startswith("zk://") and flags["master"].endswith("/mesos")
    assert (flags["ip"], flags["hostname"]) == (ip, ip)
    assert flags["work_dir"].endswith("/agent")
    attributes = (options.get("agent") or {}).get("attributes") or {}
    if attributes:
        assert flags["attributes"] == ";".join(f"{k}:{attributes[k]}" for k in sorted(attributes))


def test_a_standalone_node_leads_and_its_agent_is_active(host: Any, components: dict[str, Any], phase: str,
                                                        role: str, node_spec: dict[str, Any],
                                                        ports: dict[str, int]) -> None:
    require(components, "mesos")
    boot_only(phase)
    for_roles(role, "standalone")
    ip = node_spec["ip"]
    state = _get(host, f"http://{ip}:{ports['master']}/state")
    assert state["leader"] == state["pid"] == f"master@{ip}:{ports['master']}"
    active = [a for a in state["slaves"] if a["active"] and a["hostname"] == ip]
    assert len(active) == 1, state["slaves"]
    assert active[0]["resources"]["cpus"] > 0 and active[0]["resources"]["mem"] > 0


def test_tasks_reach_their_real_end_states(host: Any, components: dict[str, Any], phase: str, role: str,
                                           node_spec: dict[str, Any], ports: dict[str, int]) -> None:
    require(components, "mesos")
    boot_only(phase)
    for_roles(role, "standalone")
    finished = _execute(host, node_spec, ports, "kiln-infra-echo", "--command=echo kiln-task-ran",
                        "--resources=cpus:0.1;mem:32")
    assert "TASK_FINISHED" in finished, finished
    failed = _execute(host, node_spec, ports, "kiln-infra-fail", "--command=exit 3",
                      "--resources=cpus:0.1;mem:32")
    assert "TASK_FAILED" in failed and "TASK_FINISHED" not in failed, failed


def test_a_docker_task_finishes(host: Any, components: dict[str, Any], phase: str, role: str,
                                node_spec: dict[str, Any], ports: dict[str, int]) -> None:
    require(components, "mesos")
    require(components, "docker")
    boot_only(phase)
    for_roles(role, "standalone")
    image = "kiln/mesos-docker-task:latest"
    build = host.run(
        "set -e; d=$(mktemp -d); mkdir -p $d/bin; cp $(command -v sh) $d/bin/sh; "
        "for lib in $(ldd $d/bin/sh | grep -o '/[^ ]*'); do "
        "mkdir -p $d$(dirname $lib); cp -L $lib $d$lib; done; "
        f"sudo tar -C $d -c . | sudo docker import - {image} >/dev/null; rm -rf $d")
    assert build.rc == 0, build.stderr
    out = _execute(host, node_spec, ports, "kiln-infra-docker", "--containerizer=docker",
                   f"--docker_image={image}", "--command=echo kiln-docker-task-ran",
                   "--resources=cpus:0.1;mem:32")
    assert "TASK_FINISHED" in out, out


def test_a_task_port_is_served_through_haproxy(host: Any, components: dict[str, Any], phase: str, role: str,
                                               node_spec: dict[str, Any], ports: dict[str, int]) -> None:
    """Service discovery on the real thing: a long-running Mesos task holding a port from its offer,
    labelled HAPROXY_0_PORT, is reached through the node's HAProxy, which kiln-haproxy-bridge
    configured from the leading master's /state (the bridge's Mesos source: no Marathon here)."""
    require(components, "mesos")
    require(components, "haproxy")
    boot_only(phase)
    for_roles(role, "standalone")
    if "marathon" in components:
        pytest.skip("this image runs Marathon: its bridge reads Marathon's apps, not Mesos' tasks")
    catalog = json.loads(host.file("/etc/kiln/catalog.json").content_string)
    ip, task_port = node_spec["ip"], 31777  # inside the agent's default ports resource, 31000-32000
    service = int(catalog["ports"]["haproxy"]["services"]) + 42
    marker = "kiln-mesos-task-behind-haproxy"
    info = {"name": "kiln-infra-web", "task_id": {"value": "kiln-infra-web"}, "agent_id": {"value": ""},
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                          {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
                          {"name": "ports", "type": "RANGES",
                           "ranges": {"range": [{"begin": task_port, "end": task_port}]}}],
            "command": {"value": f"echo {marker} > marker && "
                                 f"exec python3 -m http.server {task_port} --bind {ip}"},
            "labels": {"labels": [{"key": "HAPROXY_0_PORT", "value": str(service)}]}}
    program = host.run("sudo sh -c 'command -v mesos-execute'").stdout.strip() or "mesos-execute"
    # One command per line: `&` then backgrounds mesos-execute alone, whose output goes to a file,
    # so the SSH session ends at once (a backgrounded list would keep it open).
    started = host.run(
        f"set -e\nd=$(mktemp -d)\nprintf %s {shlex.quote(json.dumps(info))} > $d/task.json\n"
        f"LIBPROCESS_IP={ip} setsid {program} --master={ip}:{ports['master']} "
        f"--task=file://$d/task.json > $d/execute.log 2>&1 < /dev/null &\necho $! $d")
    assert started.rc == 0, started.stderr
    pid, workdir = started.stdout.split()
    url = f"http://{ip}:{service}/marker"
    try:
        poll = f"until curl -sf --max-time 5 {url}; do sleep 2; done"
        served = host.run(f"timeout {TASK_SECONDS} sh -c {shlex.quote(poll)}")
        config = host.run("sudo cat /etc/haproxy/haproxy.cfg").stdout
        log = host.run(f"cat {workdir}/execute.log").stdout
        assert served.stdout.strip() == marker, (f"{url} never answered {marker}\n"
                                                 f"mesos-execute:\n{log[-1500:]}\nhaproxy.cfg:\n{config[-1500:]}")
        assert f"server {ip}:{task_port} {ip}:{task_port}" in config, config
    finally:
        host.run(f"kill {pid}; sleep 2; kill -9 {pid} 2>/dev/null; rm -rf {workdir}")
