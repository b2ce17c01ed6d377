"""kiln_bridge's Mesos source against a real Mesos and a real HAProxy, all on 127.0.0.1.

Mesos is real (tests/mesos_local.py: mesos-master, mesos-agent with the posix launcher, ZooKeeper
for several masters). Tasks are real: mesos-execute launches `python3 -m http.server PORT` holding
PORT from its offer, with a TaskInfo carrying discovery info and labels. The bridge runs as the
service does (`python -m kiln_bridge run --source mesos`), HAProxy in master-worker mode, and every
check is a real HTTP request through HAProxy that reaches a task's server. Every process started
here is stopped by its PID (the cluster's by mesos_local) when the test ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mesos_local
import pytest
from bridge_support import LOCAL, catches, get, stop_pid, wait_for

from kiln.paths import REPO_ROOT

HAPROXY = "/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else shutil.which("haproxy")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (/usr/sbin/haproxy)")]
MARKER = "/marker"  # what each task's server answers with its own marker
INITIAL_CONFIG = ("global\n  maxconn 64\n\ndefaults\n  mode tcp\n  timeout connect 1s\n"
                  "  timeout client 5s\n  timeout server 5s\n")


class Haproxy:
    """A real haproxy in master-worker mode on a config the bridge rewrites; reloads by SIGUSR2."""

    def __init__(self, tmp: Path) -> None:
        self.config = tmp / "haproxy.cfg"
        self.config.write_text(INITIAL_CONFIG)
        self.reloads = tmp / "reloads"
        with (tmp / "haproxy.log").open("w") as log:
            self.proc = subprocess.Popen([str(HAPROXY), "-W", "-db", "-f", str(self.config)],
                                         stdout=subprocess.DEVNULL, stderr=log)
        # SIGUSR2 kills the master until it has installed its handler.
        wait_for("haproxy's master to handle SIGUSR2", lambda: catches(self.proc, signal.SIGUSR2), 10)
        self.reload_cmd = f"sh -c 'echo reload >> {self.reloads} && kill -USR2 {self.proc.pid}'"


@pytest.fixture(scope="module")
def mesos_tree() -> Path:
    reason = mesos_local.skip_reason()
    if reason:
        pytest.skip(reason)
    return mesos_local.tree()


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[Haproxy]:
    h = Haproxy(tmp_path)
    try:
        yield h
    finally:
        stop_pid(h.proc)


@pytest.fixture
def start_bridge(tmp_path: Path) -> Iterator[Callable[..., tuple[subprocess.Popen[Any], Path]]]:
    """`python -m kiln_bridge run --source mesos` as the service runs it; stopped by PID afterwards."""
    started: list[subprocess.Popen[Any]] = []

    def start(haproxy: Haproxy, masters: list[str], vhost_port: int) -> tuple[subprocess.Popen[Any], Path]:
        log = tmp_path / f"bridge-{len(started)}.log"
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO_ROOT),
               "PYTHONDONTWRITEBYTECODE": "1", "KILN_BRIDGE_SOURCE": "mesos",
               "KILN_BRIDGE_MESOS_URLS": ",".join(masters), "KILN_BRIDGE_POLL_SECONDS": "0.5",
               "KILN_BRIDGE_VHOST_PORT": str(vhost_port),
               **{f"KILN_BRIDGE_HAPROXY_{name}": "none"
                  for name in ("USER", "GROUP", "CHROOT", "STATS_SOCKET", "LOG")}}
        cmd = [sys.executable, "-m", "kiln_bridge", "run", "--config", str(haproxy.config), "--haproxy",
               str(HAPROXY), "--bind-address", LOCAL, "--reload-cmd", haproxy.reload_cmd]
        with log.open("w") as err:
            proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err)
        started.append(proc)
        return proc, log

    try:
        yield start
    finally:
        for proc in started:
            stop_pid(proc)


def web_task(task_id: str, port: int, marker: str, labels: dict[str, str],
             discovery: bool = True, extra_ports: tuple[int, ...] = ()) -> dict[str, Any]:
    """A task serving `marker` at /marker on 127.0.0.1:port, holding port (and extra_ports)."""
    command = f"echo {marker} > marker && exec python3 -m http.server {port} --bind {LOCAL}"
    info = {"visibility": "FRAMEWORK", "name": task_id.split("-")[0],
            "ports": {"ports": [{"number": port, "name": "http", "protocol": "tcp"}]}}
    return mesos_local.task_info(task_id, command, ports=[port, *extra_ports],
                                 discovery=info if discovery else None, labels=labels)


def routes_to(port: int, marker: str, host: str | None = None, timeout: float = 30.0) -> None:
    wait_for(f"port {port} ({host or 'no Host'}) -> {marker}",
             lambda: get(port, MARKER, host) == (200, marker), timeout,
             lambda: f"; last answer {get(port, MARKER, host)}")


def bridge_detail(proc: subprocess.Popen[Any], log: Path, haproxy: Haproxy) -> Callable[[], str]:
    def detail() -> str:
        status = "running" if proc.poll() is None else f"exit {proc.returncode}"
        return (f"\nbridge ({status}):\n{log.read_text()[-2000:]}"
                f"\nconfig:\n{haproxy.config.read_text()[-1500:]}")
    return detail


def test_the_bridge_routes_real_mesos_tasks_through_haproxy(tmp_path: Path, mesos_tree: Path,
                                                             haproxy: Haproxy,
                                                             start_bridge: Callable[..., Any]) -> None:
    service_a, service_b, vhost_port = mesos_local.free_ports(3)
    with mesos_local.Cluster(mesos_tree, tmp_path / "mesos", masters=1, agents=1) as cluster:
        cluster.wait_for_agents()
        (port_a,) = cluster.take_ports(1)
        first_b, port_b = sorted(cluster.take_ports(2))  # ports resource: its second port, counted up
        # a: discovery info, a service port and a host name; b: no discovery, its second port routed;
        # c: running, but asks for nothing.
        a = cluster.launch(web_task("web-a", port_a, "kiln-task-a",
                                    {"HAPROXY_0_PORT": str(service_a), "HAPROXY_0_VHOST": "a.kiln.test"}))
        b = cluster.launch(web_task("plain-b", port_b, "kiln-task-b", {"HAPROXY_1_PORT": str(service_b)},
                                    discovery=False, extra_ports=(first_b,)))
        c = cluster.launch(mesos_local.task_info("quiet-c", "exec sleep 600"))
        for task in (a, b, c):
            cluster.wait_for_task(task.task_id, "TASK_RUNNING")

        proc, log = start_bridge(haproxy, cluster.master_urls, vhost_port)
        detail = bridge_detail(proc, log, haproxy)
        routes_to(service_a, "kiln-task-a")
        routes_to(vhost_port, "kiln-task-a", host="a.kiln.test")
        routes_to(service_b, "kiln-task-b")
        assert get(vhost_port, MARKER, "b.kiln.test")[0] == 503
        text = haproxy.config.read_text()
        assert text.count("\nlisten ") == 2, text
        assert f"  server {LOCAL}:{port_a} {LOCAL}:{port_a} check\n" in text
        assert f"  server {LOCAL}:{port_b} {LOCAL}:{port_b} check\n" in text

        # The task goes (its framework ends, the master kills it): so does its listener.
        cluster.kill_task(b)
        wait_for("plain-b to stop running", lambda: cluster.task_state("plain-b") != "TASK_RUNNING", 60)
        wait_for("the listener of plain-b to go", lambda: f":{service_b}\n" not in haproxy.config.read_text(),
                 30, detail)
        wait_for("haproxy to refuse the old service port", lambda: get(service_b, MARKER)[0] == 0, 15)
        routes_to(service_a, "kiln-task-a")
        assert proc.poll() is None, detail()
    lines = log.read_text().splitlines()
    assert f"kiln-haproxy-bridge: leading Mesos master: {cluster.master_urls[0]}" in lines, lines
    assert all(line.startswith("kiln-haproxy-bridge: ") for line in lines)
    assert not any("dropped" in line or "rejected" in line or "unexpected" in line for line in lines), lines


def test_a_non_leading_master_sends_the_bridge_to_the_leader_and_fail_over_keeps_the_routes(
        tmp_path: Path, mesos_tree: Path, haproxy: Haproxy, start_bridge: Callable[..., Any]) -> None:
    reason = mesos_local.skip_reason(zookeeper=True)
    if reason:
        pytest.skip(reason)
    service, vhost_port = mesos_local.free_ports(2)
    with mesos_local.Cluster(mesos_tree, tmp_path / "mesos", masters=3, agents=1) as cluster:
        leader = cluster.leader()
        others = [i for i in range(3) if i != leader]
        urls = cluster.master_urls
        # What the bridge has to cope with: a non-leading master redirects, to the leader (once it
        # has learnt from ZooKeeper who leads; until then it answers 503).
        wait_for("a non-leading master to redirect",
                 lambda: mesos_local.get(urls[others[0]] + "/master/state")[0] == 307, 30)
        status, _, location = mesos_local.get(urls[others[0]] + "/master/state")
        assert status == 307 and location == f"//{LOCAL}:{cluster.master_ports[leader]}/master/state"
        cluster.wait_for_agents()
        cluster.wait_for_logs()
        (port,) = cluster.take_ports(1)
        task = cluster.launch(web_task("web-a", port, "kiln-task-a", {"HAPROXY_0_PORT": str(service)}))
        cluster.wait_for_task(task.task_id, "TASK_RUNNING")

        # The bridge knows only the two masters that do not lead.
        proc, log = start_bridge(haproxy, [urls[i] for i in others], vhost_port)
        detail = bridge_detail(proc, log, haproxy)
        routes_to(service, "kiln-task-a")
        first = f"kiln-haproxy-bridge: leading Mesos master: {urls[leader]} ({urls[others[0]]} sent us there)"
        wait_for("the bridge to name the leader", lambda: first in log.read_text(), 10, detail)

        # Fail-over: the leader goes; through the election and the agent's re-registration the
        # config must keep the task's server (sampled every 50 ms), and traffic still gets through.
        server = f"  server {LOCAL}:{port} {LOCAL}:{port} check\n"
        samples: list[bool] = []
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                samples.append(server in haproxy.config.read_text())
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            cluster.stop_master(leader)
            new_leader = cluster.leader(timeout=90)
            assert new_leader in others
            wait_for("the bridge to follow the new leader",
                     lambda: f"leading Mesos master: {urls[new_leader]}" in log.read_text(), 60, detail)
            wait_for("the agent to re-register with the new leader",
                     lambda: cluster.wait_for_agents(1, 60), 90)
            time.sleep(2)  # a few more polls of the new leader
        finally:
            sampling.set()
            sampler.join(timeout=5)
        missing = samples.count(False)
        assert samples and not missing, f"the server line was missing in {missing} of {len(samples)} samples"
        routes_to(service, "kiln-task-a")
        assert proc.poll() is None, detail()
    lines = log.read_text().splitlines()
    assert all(line.startswith("kiln-haproxy-bridge: ") for line in lines)
    assert not any("dropped" in line or "unexpected" in line for line in lines), lines


# --- the local Mesos itself (tests/mesos_local.py) ---------------------------------------------------


def test_a_missing_mesos_build_is_the_skip_reason(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-mesos.tar.xz"
    code = "import mesos_local; print(mesos_local.skip_reason())"
    env = dict(os.environ, KILN_MESOS_TARBALL=str(missing), PYTHONPATH=f"{REPO_ROOT / 'tests'}:{REPO_ROOT}")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout == (f"no Mesos build at {missing} (RECIPES.md, 'Mesos from source'; "
                           "KILN_MESOS_TARBALL names another)\n")


def family(roots: list[int]) -> set[int]:
    """`roots` and all their live descendants (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found = {pid for pid in roots if pid in parents}
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in found and pid not in found:
                found.add(pid)
                grew = True
    return found


def test_every_process_of_a_cluster_is_stopped_whatever_happens(tmp_path: Path, mesos_tree: Path) -> None:
    """An error inside the `with` block: masters, agents, executors and tasks all end, reaped."""
    seen: set[int] = set()
    cluster = mesos_local.Cluster(mesos_tree, tmp_path / "mesos", masters=1, agents=1)
    with pytest.raises(RuntimeError, match="the test broke here"), cluster:
        cluster.wait_for_agents()
        (port,) = cluster.take_ports(1)
        task = cluster.launch(web_task("web-a", port, "kiln-task-a", {}))
        cluster.wait_for_task(task.task_id, "TASK_RUNNING")
        marker = f"http://{LOCAL}:{port}/marker"
        wait_for("the task's server", lambda: mesos_local.get(marker)[0] == 200, 30)
        seen = family([p.supervisor.pid for p in cluster.processes])
        names = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in seen}
        assert {"mesos-master", "mesos-agent", "mesos-execute", "mesos-executor", "python3"} <= names, names
        raise RuntimeError("the test broke here")
    assert len(seen) >= 8
    assert not [pid for pid in seen if Path(f"/proc/{pid}").exists()], "left running or unreaped"
    assert mesos_local.get(f"http://{LOCAL}:{port}/marker")[0] == 0


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
                    reason="needs root, unshare(1) and ip(8) for mount, UTS and network namespaces of the "
                    "test's own")
def test_the_local_mesos_needs_neither_etc_hosts_nor_a_resolvable_host_name(tmp_path: Path,
                                                                               mesos_tree: Path) -> None:
    """In namespaces of its own (a network namespace with loopback only, so no lookup leaves it),
    with an empty /etc/hosts and a host name nothing resolves, a master, an agent and a task still
    come up: everything uses 127.0.0.1 and LIBPROCESS_IP."""
    empty = tmp_path / "hosts"
    empty.write_text("")
    script = tmp_path / "run.py"
    script.write_text(
        "import socket, sys\n"
        f"sys.path[:0] = [{str(REPO_ROOT / 'tests')!r}, {str(REPO_ROOT)!r}]\n"
        "import mesos_local\n"
        "try:\n"
        "    socket.getaddrinfo(socket.gethostname(), None)\n"
        "    sys.exit('the host name resolves')\n"
        "except socket.gaierror:\n"
        "    pass\n"
        f"with mesos_local.Cluster(mesos_local.tree(), mesos_local.Path({str(tmp_path / 'mesos')!r})) as c:\n"
        "    c.wait_for_agents()\n"
        "    (port,) = c.take_ports(1)\n"
        "    command = f'exec python3 -m http.server {port} --bind 127.0.0.1'\n"
        "    c.launch(mesos_local.task_info('t', command, [port]))\n"
        "    c.wait_for_task('t', 'TASK_RUNNING')\n"
        "    print('running on', socket.gethostname())\n")
    env = dict(os.environ, KILN_MESOS_TARBALL=str(mesos_local.TARBALL))
    shell = (f"ip link set lo up && mount --bind {empty} /etc/hosts && "
             f"hostname kiln-nowhere-{os.getpid()} && exec {sys.executable} {script}")
    proc = subprocess.Popen(["unshare", "--mount", "--uts", "--net", "--propagation", "private", "sh", "-c",
                             shell], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=240)
    finally:
        stop_pid(proc)
    assert proc.returncode == 0, out[-3000:]
    assert f"running on kiln-nowhere-{os.getpid()}" in out
