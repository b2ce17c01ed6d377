"""Vagrant clusters: `invoke up`, `status`, `ssh`, `ssh-config`, `down`.

A cluster lives in build/vagrant/<name>/ (Vagrantfile + kiln-cluster.json, rendered by
kiln.vagrant.render; Vagrant's own state in .vagrant/). `up` checks that the shape fits the host,
picks the box and the libvirt driver, brings every machine up at once where the provider
can (libvirt), each machine applying its node spec, then waits from the host until the
cluster is ready (kiln.vagrant.readiness) or says which node and service are not.

python-vagrant answers the questions (status, ssh-config); the long or interruptible steps
(up, halt, destroy) go through kiln.runner like every other external program.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln import sshconfig
from kiln.config.load import Config
from kiln.config.shapes import CLUSTER_NAME_RULE, parse_shape, valid_cluster_name
from kiln.errors import Interrupted, KilnError, UserError
from kiln.image import accel as accel_mod
from kiln.keys import ensure_build_key
from kiln.output import say
from kiln.paths import Paths
from kiln.runner import StepTimedOut, run, which
from kiln.vagrant import addresses, boxes, capacity
from kiln.vagrant.environment import vagrant_env
from kiln.vagrant.readiness import NodeReport, Verdict, probe_kinds, verdict
from kiln.vagrant.render import VAGRANT_HINT, render_cluster, write_cluster

CLUSTER_FILE = addresses.CLUSTER_FILE
SSH_CONFIG = "ssh_config"


@dataclass(frozen=True)
class Cluster:
    name: str
    directory: Path
    data: dict[str, Any]

    @property
    def machines(self) -> list[dict[str, Any]]:
        return list(self.data["machines"])

    @property
    def ssh_config(self) -> Path:
        return self.directory / SSH_CONFIG

    def roles(self) -> list[tuple[str, str]]:
        return [(m["name"], m["role"]) for m in self.machines]


def clusters_dir(paths: Paths) -> Path:
    return paths.build / "vagrant"


def has_machines(directory: Path) -> bool:
    return addresses.created(directory)


def load(paths: Paths, name: str | None) -> Cluster:
    """The named cluster, or the only one with machines when no name is given."""
    root = clusters_dir(paths)
    if name:
        directory = root / name
        if not (directory / CLUSTER_FILE).exists():
            known = sorted(p.parent.name for p in root.glob(f"*/{CLUSTER_FILE}"))
            raise UserError(f"no cluster {name!r} in {root}",
                            f"known: {', '.join(known) or 'none'}; create one with `invoke up --shape 3m`")
    else:
        live = sorted(p.parent for p in root.glob(f"*/{CLUSTER_FILE}") if has_machines(p.parent))
        if not live:
            raise UserError("no cluster has machines", "create one with `invoke up --shape 3m`")
        if len(live) > 1:
            raise UserError(f"several clusters have machines: {', '.join(p.name for p in live)}",
                            "name one with --cluster NAME")
        directory = live[0]
    data = json.loads((directory / CLUSTER_FILE).read_text(encoding="utf-8"))
    return Cluster(directory.name, directory, data)


# -- up -------------------------------------------------------------------------------------------

def up(config: Config, paths: Paths, shape_text: str, *, name: str | None = None,
       provider: str | None = None, accel: str | None = None, timeout: float = 900,
       quiet: bool = False) -> tuple[Cluster, Verdict, dict[str, float]]:
    started = time.monotonic()
    seconds: dict[str, float] = {}
    try:
        shape = parse_shape(shape_text)
    except ValueError as exc:
        raise UserError(f"--shape: {exc}") from None
    if name is not None and not valid_cluster_name(name):
        raise UserError(f"--name {name!r}: expected {CLUSTER_NAME_RULE}")
    provider = provider or config["trial"]["provider"]
    box = boxes.resolve(config, paths, provider)
    vagrant = which("vagrant", VAGRANT_HINT)
    if provider == "virtualbox":
        which("VBoxManage", "install VirtualBox, or use --provider libvirt")
    files = render_cluster(config, shape.name, paths, box=box, name=name,
                           driver=_libvirt_driver(config, paths, accel, provider))
    machines = json.loads(files.files[CLUSTER_FILE])["machines"]
    need = capacity.check_fits(shape.name, [m["memory_mb"] for m in machines])
    addresses.check_free(config, paths, files.directory, [m["ip"] for m in machines])
    ensure_build_key(paths.build)
    directory = write_cluster(files)
    cluster = load(paths, directory.name)
    say(f"==> {cluster.name}: {shape.nodes} machine(s) of shape {shape.name} with {provider} "
        f"({need} MiB needed), box {box.name} {box.version or ''}".rstrip())
    log = paths.logs / f"vagrant-{cluster.name}.log"
    t0 = time.monotonic()
    if box.url and not boxes.installed(box, provider, directory):
        # Machines brought up in parallel would each start adding a missing box at once.
        say(f"==> adding box {box.name} {box.version} ({provider}) from {box.url}")
        run(boxes.add_command(box, provider, vagrant), step="vagrant box add", cwd=directory,
            env=vagrant_env(provider), log=log, quiet=quiet, timeout=3600)
        seconds["box add"] = round(time.monotonic() - t0, 1)
    if provider == "libvirt":
        t0 = time.monotonic()
        try:
            volume = boxes.seed_libvirt_pool(box, paths.cache, log=log)
        except boxes.PoolUnavailable as exc:
            say(f"==> note: {exc}; vagrant-libvirt uploads the box image itself (minutes)")
            volume = None
        if volume:
            seconds["box into libvirt pool"] = round(time.monotonic() - t0, 1)
            say(f"==> box image uploaded into libvirt's pool as {volume} "
                f"({seconds['box into libvirt pool']:.0f}s)")
    t0 = time.monotonic()
    existed = has_machines(directory)
    try:
        run([vagrant, "up", "--provider", provider], step=f"vagrant up ({cluster.name})",
            cwd=directory, env=vagrant_env(provider), log=log, quiet=quiet, timeout=3600)
    except (KeyboardInterrupt, Interrupted):
        if existed:
            say(f"==> {cluster.name}: interrupted; its machines are left as they are "
                f"(`invoke down --destroy --cluster {cluster.name}` removes them)")
        else:
            say(f"==> {cluster.name}: interrupted: destroying the machines it created")
            _destroy(cluster, log)
        raise
    seconds["vagrant up"] = round(time.monotonic() - t0, 1)
    say(f"==> {cluster.name}: machines up after {seconds['vagrant up']:.0f}s; waiting until ready")
    t1 = time.monotonic()
    write_ssh_config(cluster)
    result = wait_ready(cluster, timeout=timeout)
    seconds["ready"] = round(time.monotonic() - t1, 1)
    seconds["total"] = round(time.monotonic() - started, 1)
    return cluster, result, seconds


def _libvirt_driver(config: Config, paths: Paths, accel: str | None, provider: str) -> str:
    if provider != "libvirt":
        return "qemu"
    probe = accel_mod.resolve(accel or config["build"]["accelerator"], paths.cache)
    say(f"==> accelerator: {probe.accel} ({probe.reason})")
    return accel_mod.libvirt_driver(probe.accel)


# -- readiness ---------------------------------------------------------------------------------

STATUS_SECONDS = 60  # one `kiln-node status` over SSH; a busy machine under TCG may need longer


def node_report(cluster: Cluster, machine: str, role: str, ip: str = "") -> NodeReport:
    """What the machine's kiln-node says of its services; one that does not answer (SSH down, or
    slower than STATUS_SECONDS) is a machine not ready yet, never an error: the caller's overall
    timeout decides."""
    try:
        result = run(["ssh", "-F", str(cluster.ssh_config), machine, "sudo kiln-node status --json"],
                     step=f"status of {machine}", quiet=True, check=False, timeout=STATUS_SECONDS)
    except StepTimedOut:
        return NodeReport(machine, role, None, f"kiln-node status did not answer within {STATUS_SECONDS}s",
                          ip)
    text = result.output
    if result.returncode not in (0, 3) or "{" not in text:
        last = text.strip().splitlines()[-1] if text.strip() else f"exit {result.returncode}"
        return NodeReport(machine, role, None, last[:160], ip)
    try:
        status = json.loads(text[text.index("{"):])
    except ValueError:
        return NodeReport(machine, role, None, "kiln-node status did not answer JSON", ip)
    return NodeReport(machine, role, status, ip=ip)


def poll(cluster: Cluster) -> list[NodeReport]:
    with ThreadPoolExecutor(max_workers=min(8, len(cluster.machines))) as pool:
        return list(pool.map(lambda m: node_report(cluster, m["name"], m["role"], m["ip"]), cluster.machines))


def wait_ready(cluster: Cluster, *, timeout: float, interval: float = 5.0) -> Verdict:
    started = time.monotonic()
    last = ""
    while True:
        current = verdict(poll(cluster), probe_kinds(cluster.data["catalog"]))
        elapsed = time.monotonic() - started
        line = current.line()
        if line != last:
            say(f"    [{elapsed:5.0f}s] {'ready' if current.ready else 'waiting'}: {line}")
            last = line
        if current.ready:
            return current
        if elapsed > timeout:
            problems = "\n".join(f"  - {p}" for p in current.problems)
            raise KilnError(f"cluster {cluster.name} not ready after {timeout:.0f}s:\n{problems}\n"
                            f"  look closer: invoke ssh NODE -c 'sudo kiln-node status' --cluster "
                            f"{cluster.name}")
        time.sleep(interval)


# -- the other tasks ----------------------------------------------------------------------------

@dataclass(frozen=True)
class MachineState:
    name: str
    role: str
    ip: str
    state: str
    ready: str  # "ready", "not ready: why", or "-" when not running


def status(paths: Paths, name: str | None) -> tuple[Cluster, list[MachineState], Verdict | None]:
    cluster = load(paths, name)
    which("vagrant", VAGRANT_HINT)
    states = addresses.machine_states(cluster.directory)
    running = [m for m in cluster.machines if states.get(m["name"]) == "running"]
    reports: dict[str, NodeReport] = {}
    overall = None
    if running:
        write_ssh_config(cluster, only=[m["name"] for m in running])
        polled = poll(Cluster(cluster.name, cluster.directory, {**cluster.data, "machines": running}))
        reports = {r.name: r for r in polled}
        overall = verdict(polled, probe_kinds(cluster.data["catalog"]))
    rows = []
    for m in cluster.machines:
        report = reports.get(m["name"])
        if report is None:
            ready = "-"
        elif report.status is None:
            ready = f"no answer: {report.error}"
        elif report.status.get("ready"):
            ready = "ready"
        else:
            waiting = [u["unit"] for u in report.status.get("units", []) if not u.get("ready")]
            ready = f"not ready: {', '.join(waiting)}"
        rows.append(MachineState(m["name"], m["role"], m["ip"], states.get(m["name"], "unknown"), ready))
    return cluster, rows, overall


def write_ssh_config(cluster: Cluster, only: Sequence[str] | None = None) -> Path:
    """One Host block per machine, from one `vagrant ssh-config` call (bounded), each block read by
    python-vagrant, with a shared master connection per host so testinfra's many commands stay cheap."""
    names = list(only) if only is not None else [m["name"] for m in cluster.machines]
    result = run([which("vagrant", VAGRANT_HINT), "ssh-config", *names], step="vagrant ssh-config",
                 cwd=cluster.directory, env=vagrant_env(), quiet=True, timeout=300)
    blocks = parse_ssh_config(result.output, cluster.directory)
    hosts = []
    for name in names:
        fields = blocks.get(name)
        if fields is None:
            raise KilnError(f"vagrant ssh-config gave no Host block for {name} in {cluster.directory}")
        hosts.append(sshconfig.SshHost(name, fields["HostName"], int(fields.get("Port", "22")),
                                       fields["User"], Path(fields["IdentityFile"])))
    return sshconfig.write(cluster.ssh_config, hosts, control_dir=cluster.directory / ".ssh-control",
                           persist="120s")


def parse_ssh_config(text: str, directory: Path | None = None) -> dict[str, dict[str, str]]:
    """Host alias -> its settings as python-vagrant's conf() reads them (HostName, User, Port,
    IdentityFile without quotes), from the output of `vagrant ssh-config` for several machines:
    split into one Host block per machine, since conf() reads one block."""
    from kiln.vagrant.client import Vagrant

    reader = Vagrant(directory or Path.cwd())
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        words = line.split(None, 1)
        if len(words) == 2 and words[0] == "Host":
            current = blocks.setdefault(words[1].strip(), [])
        if current is not None:
            current.append(line)
    parsed: dict[str, dict[str, str]] = {}
    for alias, lines in blocks.items():
        try:
            fields = dict(reader.conf(ssh_config="\n".join(lines), vm_name=alias))
        except ValueError as exc:  # a line that is not "key value"
            raise KilnError(f"vagrant ssh-config gave an unreadable block for {alias}: {exc}") from None
        missing = [k for k in ("HostName", "User", "IdentityFile") if k not in fields]
        if missing:
            raise KilnError(f"vagrant ssh-config gave no {', '.join(missing)} for {alias}")
        parsed[alias] = fields
    return parsed


def down(paths: Paths, name: str | None, destroy: bool) -> Cluster:
    cluster = load(paths, name)
    log = paths.logs / f"vagrant-{cluster.name}.log"
    if cluster.ssh_config.exists():
        for machine in cluster.machines:
            sshconfig.close_master(cluster.ssh_config, machine["name"])
    if destroy:
        _destroy(cluster, log)
        shutil.rmtree(cluster.directory)
    else:
        run([which("vagrant", VAGRANT_HINT), "halt"], step=f"vagrant halt ({cluster.name})",
            cwd=cluster.directory, env=vagrant_env(), log=log, timeout=900)
    return cluster


def _destroy(cluster: Cluster, log: Path) -> None:
    run([which("vagrant", VAGRANT_HINT), "destroy", "-f"], step=f"vagrant destroy ({cluster.name})",
        cwd=cluster.directory, env=vagrant_env(), log=log, timeout=900)


def verify(paths: Paths, name: str | None, *, quiet: bool = False) -> tuple[Cluster, bool, Path]:
    """The boot-phase testinfra suites on every machine at once, each checked for its role."""
    from kiln.image.verify import run_suites

    cluster = load(paths, name)
    config = write_ssh_config(cluster)
    report = paths.reports / f"{cluster.name}-cluster.xml"
    result = run_suites(paths, ssh_config=config, hosts=[m["name"] for m in cluster.machines],
                        phase="boot", role="auto", report=report, quiet=quiet,
                        log=paths.logs / f"{cluster.name}-cluster-tests.log")
    return cluster, result.returncode == 0, report


def ssh(paths: Paths, name: str | None, node: str, command: str | None) -> int:
    """An interactive `vagrant ssh` (a terminal, so not through the runner's pipes)."""
    cluster = load(paths, name)
    known = [m["name"] for m in cluster.machines]
    if node not in known:
        raise UserError(f"no machine {node!r} in cluster {cluster.name}", f"machines: {', '.join(known)}")
    argv = [which("vagrant", VAGRANT_HINT), "ssh", node, *(["-c", command] if command else [])]
    return subprocess.call(argv, cwd=cluster.directory, env=vagrant_env(inherit=True))
