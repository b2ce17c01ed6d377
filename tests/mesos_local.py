"""A real Apache Mesos on loopback for tests: masters, agents, ZooKeeper and tasks.

Mesos comes from the installed tree that RECIPES.md's "Mesos from source" built
(../shared/mesos/mesos-1.11.1-debian12-O0-amd64.tar.xz beside the repository, prefix /usr/local;
KILN_MESOS_TARBALL names another). `tree()` extracts it once per test session (per process) into a
temp dir that is removed at exit, after checking it against SHA256SUMS when that file is there.
`skip_reason()` says exactly why Mesos cannot run here (None when it can): tests using it skip
with that reason.

Everything listens on 127.0.0.1 and advertises 127.0.0.1 (--ip, --hostname, LIBPROCESS_IP for every
process, the executors' too), on ports picked free for each cluster, so nothing depends on
/etc/hosts, the machine's name or what other tests run. Work, runtime and log directories are the
cluster's own.

Every process runs under a small supervisor that is a child subreaper: executors and tasks that an
agent leaves behind are re-parented to it, and when the supervisor is stopped (by PID) it stops the
daemon, then each of those by PID, and reaps them. `Cluster.stop()` (also on leaving the `with`
block, on an error while starting, and at interpreter exit) stops every supervisor it started, by
PID, and waits for it; a supervisor also goes when its parent dies (PR_SET_PDEATHSIG).

    reason = mesos_local.skip_reason()               # or skip_reason(zookeeper=True)
    if reason: pytest.skip(reason)
    with mesos_local.Cluster(mesos_local.tree(), tmp_path, masters=1, agents=1) as cluster:
        cluster.wait_for_agents()
        task = cluster.launch(task_info)             # a TaskInfo (JSON), via mesos-execute
        cluster.wait_for_task(task.task_id, "TASK_RUNNING")
        cluster.state()                              # the leading master's /master/state

Several masters (masters=3) run with a real ZooKeeper on loopback (Debian's `zookeeper` jar, run
with java and a zoo.cfg of the cluster's own), --quorum=2 and --registry=replicated_log, so leader
election and fail-over are real: `cluster.leader()`, `cluster.stop_master(i)`.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kiln.paths import REPO_ROOT
from kiln_node import status as kiln_node_status


def _prebuilt_tarball() -> Path:
    """The recipe's prebuilt tree, looked for where the recipe says (../shared/mesos beside the
    checkout, then the machine's shared folder): the same search `invoke package` uses."""
    recipe = json.loads((REPO_ROOT / "components" / "mesos" / "package" / "recipe.json").read_text())
    name = recipe["prebuilt"]["file"]
    for folder in recipe["source"]["search"]:
        candidate = (REPO_ROOT / folder / name).resolve()
        if candidate.is_file():
            return candidate
    return (REPO_ROOT / recipe["source"]["search"][0] / name).resolve()


TARBALL = Path(os.environ.get("KILN_MESOS_TARBALL") or _prebuilt_tarball())
PREFIX = "usr/local"
ZOOKEEPER_JAR = Path("/usr/share/java/zookeeper.jar")
LOCAL = "127.0.0.1"
STATE = "/master/state"

# What the supervisor runs as (python3 -c SUPERVISOR DAEMON ARGS...). It becomes a child subreaper,
# asks for SIGTERM when its parent dies, starts the daemon and waits. On SIGTERM, or when the daemon
# exits, it stops the daemon (SIGTERM, then SIGKILL after a grace period), then every process that was
# re-parented to it (the executors and tasks an agent leaves behind), by PID, and reaps them all.
SUPERVISOR = r"""
import ctypes, os, signal, subprocess, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(36, 1, 0, 0, 0)                 # PR_SET_CHILD_SUBREAPER
libc.prctl(1, signal.SIGTERM, 0, 0, 0)     # PR_SET_PDEATHSIG
parent = int(os.environ.pop("KILN_SUPERVISOR_PARENT"))
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
signal.signal(signal.SIGINT, lambda *_: stop.append(1))
if os.getppid() != parent:
    sys.exit(1)
daemon = subprocess.Popen(sys.argv[1:])
with open(os.environ.pop("KILN_SUPERVISOR_PIDFILE"), "w") as fh:
    fh.write(str(daemon.pid))

def children():
    me, found = str(os.getpid()), []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != daemon.pid:
            try:
                with open("/proc/%s/stat" % entry) as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == me:
                found.append((int(entry), fields[0]))
    return found

def reap_orphans():
    # Reaps what exited among the re-parented processes; leaves the daemon to Popen.
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None or info.si_pid == daemon.pid:
            return
        os.waitpid(info.si_pid, 0)

def stop_pid(pid, wait):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if wait(pid):
                return
            time.sleep(0.05)

def daemon_gone(_pid):
    return daemon.poll() is not None

def orphan_gone(pid):
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return True

while not stop and daemon.poll() is None:
    reap_orphans()
    time.sleep(0.2)
stop_pid(daemon.pid, daemon_gone)
for _ in range(20):
    left = children()
    if not left:
        break
    for pid, _state in left:
        stop_pid(pid, orphan_gone)
sys.exit(0 if stop else 3)  # 3: the daemon ended by itself
"""


# --- what this machine has ----------------------------------------------------------------------


def _missing_libraries(root: Path) -> list[str]:
    env = {"LD_LIBRARY_PATH": str(root / PREFIX / "lib"), "PATH": os.environ.get("PATH", "")}
    done = subprocess.run(["ldd", str(root / PREFIX / "sbin" / "mesos-master")], capture_output=True,
                          text=True, env=env, check=False)
    return sorted({line.split()[0] for line in done.stdout.splitlines() if "not found" in line})


def skip_reason(zookeeper: bool = False) -> str | None:
    """Why a real Mesos (with ZooKeeper, if asked) cannot run here; None when it can."""
    if not TARBALL.is_file():
        return (f"no Mesos build at {TARBALL} (RECIPES.md, 'Mesos from source'; "
                "KILN_MESOS_TARBALL names another)")
    if sys.platform != "linux":
        return "the local Mesos runs on Linux only"
    missing = _missing_libraries(tree())
    if missing:
        return (f"Mesos' runtime libraries are missing ({', '.join(missing)}): install the Debian packages "
                f"in {TARBALL.parent / 'RUNTIME-DEPENDS'} (scripts/setup does)")
    if zookeeper and not ZOOKEEPER_JAR.is_file():
        return (f"no ZooKeeper server jar at {ZOOKEEPER_JAR} (Debian package zookeeper; "
                "scripts/setup installs it)")
    if zookeeper and shutil.which("java") is None:
        return "no java on PATH to run ZooKeeper (Debian package default-jre-headless)"
    return None


_TREE: Path | None = None


def _sha256_expected() -> str | None:
    sums = TARBALL.parent / "SHA256SUMS"
    if not sums.is_file():
        return None
    for line in sums.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == TARBALL.name:
            return parts[0]
    return None


def tree() -> Path:
    """The extracted Mesos tree (its root; binaries under usr/local), once per process."""
    global _TREE
    if _TREE is not None:
        return _TREE
    expected = _sha256_expected()
    if expected is not None:
        digest = hashlib.sha256()
        with TARBALL.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != expected:
            raise RuntimeError(f"{TARBALL} does not match its SHA256SUMS entry")
    root = Path(tempfile.mkdtemp(prefix="kiln-mesos-tree-"))
    atexit.register(shutil.rmtree, root, True)
    with tarfile.open(TARBALL) as archive:
        if hasattr(tarfile, "tar_filter"):
            archive.extractall(root, filter="tar")
        else:
            archive.extractall(root)
    if not (root / PREFIX / "sbin" / "mesos-master").is_file():
        raise RuntimeError(f"{TARBALL} holds no {PREFIX}/sbin/mesos-master")
    _TREE = root
    return root


# --- ports, HTTP -----------------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """`count` distinct ports nothing listens on now (held open together while picking)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((LOCAL, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes, str | None]:
    """(status, body, Location) of a GET that follows no redirect; status 0 when nothing answers."""
    try:
        with _OPENER.open(url, timeout=timeout) as resp:
            return resp.status, resp.read(), None
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read(), exc.headers.get("Location")
    except (OSError, ValueError):
        return 0, b"", None


def wait_until(what: str, check: Callable[[], Any], timeout: float,
               on_timeout: Callable[[], str] = str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}{on_timeout()}")
        time.sleep(0.2)


# --- processes ------------------------------------------------------------------------------------


class Process:
    """One daemon under its supervisor; its output goes to `log`."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> None:
        self.name, self.log = name, log
        pidfile = log.with_suffix(".pid")
        env = dict(env, KILN_SUPERVISOR_PARENT=str(os.getpid()), KILN_SUPERVISOR_PIDFILE=str(pidfile))
        with log.open("ab") as out:
            self.supervisor = subprocess.Popen([sys.executable, "-c", SUPERVISOR, *argv], env=env, cwd=cwd,
                                               stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        self.pidfile = pidfile

    @property
    def daemon_pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text())
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        return self.supervisor.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return f"\n--- last lines of {self.log} ---\n" + "\n".join(text)

    def stop(self, timeout: float = 40.0) -> None:
        """SIGTERM to the supervisor (which stops the daemon and its leftovers), wait; SIGKILL both
        by PID if it does not finish in time."""
        if self.supervisor.poll() is None:
            self.supervisor.send_signal(signal.SIGTERM)
            try:
                self.supervisor.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                daemon = self.daemon_pid
                self.supervisor.kill()
                self.supervisor.wait(timeout=10)
                if daemon is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(daemon, signal.SIGKILL)


class Task:
    """A task launched with mesos-execute (the framework; it stays up while the task runs)."""

    def __init__(self, task_id: str, process: Process) -> None:
        self.task_id, self.process = task_id, process


class Cluster:
    """Masters (1 with an in-memory registry, or several with ZooKeeper), agents and tasks on loopback."""

    def __init__(self, root: Path, workdir: Path, masters: int = 1, agents: int = 1, task_ports: int = 8,
                 agent_resources: str = "cpus:2;mem:1024;disk:1024") -> None:
        if masters < 1 or agents < 0:
            raise ValueError("a cluster needs a master")
        self.root, self.workdir = root, workdir
        self.usr = root / PREFIX
        self.count_masters, self.count_agents = masters, agents
        self.agent_resources = agent_resources
        self.processes: list[Process] = []
        self.masters: list[Process | None] = []
        self.master_ports = free_ports(masters)
        self.agent_listen = free_ports(agents)
        # The ports the agents offer to tasks (their `ports` resource). Every agent offers the same
        # ones: mesos-execute takes the first offer that fits and then asks for no more, so a task
        # must fit whichever agent's offer comes first. They all listen on 127.0.0.1 anyway; take_ports
        # hands each port out once, so no two tasks try to bind the same one.
        self.task_ports = free_ports(task_ports)
        self._free_task_ports = list(self.task_ports)
        self.zookeeper: Process | None = None
        self.zk_port: int | None = None
        self.tasks: list[Task] = []
        self._launched = 0
        self._stopped = False
        workdir.mkdir(parents=True, exist_ok=True)

    # -- environment and addresses

    def env(self) -> dict[str, str]:
        return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "LD_LIBRARY_PATH": str(self.usr / "lib"), "LIBPROCESS_IP": LOCAL, "LANG": "C.UTF-8",
                "HOME": str(self.workdir)}

    @property
    def master_urls(self) -> list[str]:
        return [f"http://{LOCAL}:{port}" for port in self.master_ports]

    @property
    def master_flag(self) -> str:
        """What agents and frameworks pass as --master."""
        if self.zk_port is not None:
            return f"zk://{LOCAL}:{self.zk_port}/mesos"
        return f"{LOCAL}:{self.master_ports[0]}"

    # -- start and stop

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Process:
        process = Process(name, argv, env or self.env(), self.workdir / f"{name}.log", self.workdir)
        self.processes.append(process)
        return process

    def start(self) -> None:
        atexit.register(self.stop)
        if self.count_masters > 1:
            self._start_zookeeper()
        for i in range(self.count_masters):
            self.masters.append(self._start_master(i))
        self.leader(timeout=90)
        for i in range(self.count_agents):
            self._start_agent(i)

    def _start_zookeeper(self) -> None:
        (self.zk_port,) = free_ports(1)
        data = self.workdir / "zookeeper"
        data.mkdir()
        # Short ticks: a stopped master's ZooKeeper session (its leadership) expires within seconds.
        (data / "zoo.cfg").write_text(
            f"tickTime=500\ninitLimit=20\nsyncLimit=10\ndataDir={data}\nclientPort={self.zk_port}\n"
            f"clientPortAddress={LOCAL}\nadmin.enableServer=false\n4lw.commands.whitelist=ruok,srvr\n")
        self.zookeeper = self._spawn("zookeeper", [
            "java", "-Xmx128m", "-Dzookeeper.admin.enableServer=false", "-cp", str(ZOOKEEPER_JAR),
            "org.apache.zookeeper.server.ZooKeeperServerMain", str(data / "zoo.cfg")],
            env=dict(os.environ, **self.env()))
        wait_until("ZooKeeper to answer ruok", self._zookeeper_ok, 60, self.zookeeper.tail)

    def _zookeeper_ok(self) -> bool:
        assert self.zookeeper is not None and self.zk_port is not None
        if not self.zookeeper.running():
            raise RuntimeError("ZooKeeper exited" + self.zookeeper.tail())
        try:
            with socket.create_connection((LOCAL, self.zk_port), timeout=2) as s:
                s.sendall(b"ruok")
                return s.recv(16) == b"imok"
        except OSError:
            return False

    def _start_master(self, i: int) -> Process:
        work = self.workdir / f"master-{i}"
        work.mkdir(exist_ok=True)
        argv = [str(self.usr / "sbin" / "mesos-master"), f"--ip={LOCAL}", f"--port={self.master_ports[i]}",
                f"--hostname={LOCAL}", f"--work_dir={work}", f"--webui_dir={self.usr / 'share/mesos/webui'}",
                "--cluster=kiln-test"]
        if self.zk_port is not None:
            quorum = self.count_masters // 2 + 1
            argv += [f"--zk=zk://{LOCAL}:{self.zk_port}/mesos", f"--quorum={quorum}",
                     "--registry=replicated_log", "--zk_session_timeout=5secs"]
        else:
            argv.append("--registry=in_memory")
        return self._spawn(f"master-{i}", argv)

    def _start_agent(self, i: int) -> Process:
        work, run = self.workdir / f"agent-{i}", self.workdir / f"agent-{i}-run"
        work.mkdir(exist_ok=True)
        run.mkdir(exist_ok=True)
        ports = ",".join(f"{p}-{p}" for p in sorted(self.task_ports))
        executor_env = {"LD_LIBRARY_PATH": str(self.usr / "lib"), "PATH": self.env()["PATH"],
                        "LIBPROCESS_IP": LOCAL, "LANG": "C.UTF-8"}
        argv = [str(self.usr / "sbin" / "mesos-agent"), f"--master={self.master_flag}", f"--ip={LOCAL}",
                f"--port={self.agent_listen[i]}", f"--hostname={LOCAL}", "--launcher=posix",
                "--isolation=posix/cpu,posix/mem", "--no-systemd_enable_support",
                f"--launcher_dir={self.usr / 'libexec/mesos'}", f"--work_dir={work}", f"--runtime_dir={run}",
                f"--fetcher_cache_dir={work / 'fetch'}",
                f"--resources={self.agent_resources};ports:[{ports}]",
                # Executors get this environment and nothing else: they need Mesos' libraries too.
                f"--executor_environment_variables={json.dumps(executor_env)}"]
        return self._spawn(f"agent-{i}", argv)

    def stop(self) -> None:
        """Stop every process this cluster started, by PID, newest first, and wait for each."""
        if self._stopped:
            return
        self._stopped = True
        for process in reversed(self.processes):
            process.stop()

    def stop_master(self, i: int) -> None:
        master = self.masters[i]
        if master is not None:
            master.stop()
            self.masters[i] = None

    # -- asking the masters

    def leader(self, timeout: float = 60.0) -> int:
        """The index of the leading master: the one answering /master/state with 200 (the others
        redirect with 307). Waits for one."""
        def find() -> int | None:
            for i, master in enumerate(self.masters):
                if master is not None and not master.running():
                    raise RuntimeError(f"{master.name} exited" + master.tail())
                if master is not None and get(self.master_urls[i] + STATE, timeout=5)[0] == 200:
                    return i + 1
            return None

        def logs() -> str:
            return "".join(m.tail(5) for m in self.masters if m is not None)

        return wait_until("a leading master", find, timeout, logs) - 1

    def state(self) -> dict[str, Any]:
        """The leading master's /master/state."""
        i = self.leader()
        status, body, _ = get(self.master_urls[i] + STATE, timeout=10)
        if status != 200:
            raise RuntimeError(f"the leading master answered HTTP {status}")
        return json.loads(body)

    def wait_for_agents(self, count: int | None = None, timeout: float = 90.0) -> list[str]:
        """Agent ids once `count` (all started) agents are registered and active."""
        want = self.count_agents if count is None else count

        def active() -> list[str] | None:
            for process in self.processes:
                if process.name.startswith("agent-") and not process.running():
                    raise RuntimeError(f"{process.name} exited" + process.tail())
            try:
                agents = [a["id"] for a in self.state()["slaves"] if a.get("active")]
            except (RuntimeError, ValueError, KeyError):
                return None
            return agents if len(agents) >= want else None

        return wait_until(f"{want} registered agent(s)", active, timeout,
                          lambda: "".join(p.tail(5) for p in self.processes if p.name.startswith("agent-")))

    def wait_for_logs(self, timeout: float = 90.0) -> None:
        """Until every running master's replica of the registry log has caught up
        (registrar/log/recovered = 1). Stopping the leader before then can leave the others
        without a quorum of caught-up replicas: the new leader's recovery fails after a minute."""
        def caught_up() -> bool:
            for i, master in enumerate(self.masters):
                if master is None:
                    continue
                if not master.running():
                    raise RuntimeError(f"{master.name} exited" + master.tail())
                status, body, _ = get(self.master_urls[i] + "/metrics/snapshot", timeout=5)
                if status != 200 or not kiln_node_status.parse_log_recovered(json.loads(body)):
                    return False
            return True

        wait_until("every master's registry log to catch up", caught_up, timeout,
                   lambda: "".join(m.tail(5) for m in self.masters if m is not None))

    # -- tasks

    def take_ports(self, count: int) -> list[int]:
        """`count` of the agents' task ports that no task of this cluster was given yet."""
        if count > len(self._free_task_ports):
            raise ValueError(f"only {len(self._free_task_ports)} task ports left (Cluster(task_ports=...))")
        taken, self._free_task_ports = self._free_task_ports[:count], self._free_task_ports[count:]
        return taken

    def launch(self, task_info: dict[str, Any], name: str | None = None) -> Task:
        """Runs mesos-execute --task=<TaskInfo JSON>; the task id is task_info['task_id']['value']."""
        self._launched += 1
        name = name or f"execute-{self._launched}"
        path = self.workdir / f"{name}.task.json"
        path.write_text(json.dumps(dict({"agent_id": {"value": ""}}, **task_info)))
        process = self._spawn(name, [str(self.usr / "bin" / "mesos-execute"), f"--master={self.master_flag}",
                                     f"--task=file://{path}"])
        task = Task(task_info["task_id"]["value"], process)
        self.tasks.append(task)
        return task

    def task_state(self, task_id: str) -> str | None:
        try:
            state = self.state()
        except (RuntimeError, ValueError, TimeoutError):
            return None
        frameworks = [*state.get("frameworks", []), *state.get("completed_frameworks", [])]
        for framework in frameworks:
            for task in [*framework.get("tasks", []), *framework.get("completed_tasks", [])]:
                if task.get("id") == task_id:
                    return str(task.get("state"))
        return None

    def wait_for_task(self, task_id: str, wanted: str, timeout: float = 60.0) -> None:
        finished = ("TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_LOST", "TASK_ERROR", "TASK_DROPPED")

        def reached() -> bool:
            current = self.task_state(task_id)
            if current in finished and current != wanted:
                raise RuntimeError(f"task {task_id} is {current}, not {wanted}" + self._task_log(task_id))
            return current == wanted

        wait_until(f"task {task_id} to be {wanted}", reached, timeout, lambda: self._task_log(task_id))

    def _task_log(self, task_id: str) -> str:
        text = "".join(t.process.tail(8) for t in self.tasks if t.task_id == task_id)
        pattern = f"agent-*/slaves/*/frameworks/*/executors/{task_id}/runs/*/stderr"
        for stderr in sorted(self.workdir.glob(pattern)):
            text += f"\n--- {stderr} ---\n" + "\n".join(stderr.read_text(errors="replace").splitlines()[-8:])
        return text

    def kill_task(self, task: Task) -> None:
        """Ends the task's framework (mesos-execute): the master then kills its tasks."""
        task.process.stop()


def task_info(task_id: str, command: str, ports: Sequence[int] = (), discovery: dict[str, Any] | None = None,
              labels: dict[str, str] | None = None, cpus: float = 0.1, mem: float = 32) -> dict[str, Any]:
    """A TaskInfo (mesos.proto) for mesos-execute --task: a shell command holding `ports` from its offer."""
    resources: list[dict[str, Any]] = [
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}},
        {"name": "mem", "type": "SCALAR", "scalar": {"value": mem}},
    ]
    if ports:
        resources.append({"name": "ports", "type": "RANGES",
                          "ranges": {"range": [{"begin": p, "end": p} for p in sorted(ports)]}})
    info: dict[str, Any] = {"name": task_id, "task_id": {"value": task_id}, "resources": resources,
                            "command": {"value": command}}
    if discovery is not None:
        info["discovery"] = discovery
    if labels:
        info["labels"] = {"labels": [{"key": k, "value": v} for k, v in labels.items()]}
    return info
