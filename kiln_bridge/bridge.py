"""Parse Marathon's /v2/apps, render haproxy.cfg, apply it safely, and the CLI loop."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

VHOST_LABEL = "HAPROXY_0_VHOST"
HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


class BadResponse(ValueError):
    """Marathon answered something that is not a valid apps document."""


class Backend(NamedTuple):
    host: str
    port: int


class App(NamedTuple):
    app_id: str
    service_ports: Tuple[int, ...]
    vhosts: Tuple[str, ...]
    tasks: Tuple[Tuple[str, Tuple[int, ...]], ...]  # (host, ports)


def log(message: str) -> None:
    print("kiln-haproxy-bridge: " + message, file=sys.stderr, flush=True)


def _task_usable(task: Dict[str, Any]) -> bool:
    if task.get("state", "TASK_RUNNING") != "TASK_RUNNING":
        return False
    checks = task.get("healthCheckResults") or []
    return all(isinstance(c, dict) and c.get("alive") is True for c in checks)


def parse_apps(document: Any) -> List[App]:
    """Strictly validated apps; raises BadResponse for anything malformed."""
    if not isinstance(document, dict) or not isinstance(document.get("apps"), list):
        raise BadResponse("expected an object with an 'apps' list")
    apps = []
    for i, raw in enumerate(document["apps"]):
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not raw["id"]:
            raise BadResponse("apps[%d]: expected an object with a string 'id'" % i)
        if isinstance(raw.get("portDefinitions"), list):
            ports = [p.get("port") if isinstance(p, dict) else None for p in raw["portDefinitions"]]
        else:
            ports = raw.get("ports", [])
        if not isinstance(ports, list) or not all(isinstance(p, int) and 0 <= p <= 65535 for p in ports):
            raise BadResponse("apps[%d] (%s): service ports must be integers 0-65535" % (i, raw["id"]))
        labels = raw.get("labels") or {}
        if not isinstance(labels, dict):
            raise BadResponse("apps[%d] (%s): labels must be an object" % (i, raw["id"]))
        vhosts = [h.strip() for h in str(labels.get(VHOST_LABEL, "")).split(",") if h.strip()]
        for host in vhosts:
            if not HOST_RE.match(host):
                raise BadResponse("apps[%d] (%s): bad %s value %r" % (i, raw["id"], VHOST_LABEL, host))
        tasks = []
        for j, task in enumerate(raw.get("tasks") or []):
            if not isinstance(task, dict) or not isinstance(task.get("host"), str) or not isinstance(
                    task.get("ports", []), list):
                raise BadResponse("apps[%d].tasks[%d]: expected host and ports" % (i, j))
            if not all(isinstance(p, int) and 0 < p <= 65535 for p in task.get("ports", [])):
                raise BadResponse("apps[%d].tasks[%d]: ports must be integers 1-65535" % (i, j))
            if _task_usable(task):
                tasks.append((task["host"], tuple(task.get("ports", []))))
        apps.append(App(raw["id"], tuple(p for p in ports if p), tuple(vhosts), tuple(sorted(tasks))))
    return sorted(apps)


def _name(app_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", app_id.strip("/")) or "root"


def render(apps: Sequence[App], vhost_port: int = 80, bind: str = "0.0.0.0") -> str:
    """The complete haproxy.cfg; same apps in, same bytes out."""
    out = [
        "# Written by kiln-haproxy-bridge from Marathon's apps; edits are overwritten.",
        "global",
        "  maxconn 4096",
        "",
        "defaults",
        "  log global",
        "  retries 3",
        "  timeout connect 5s",
        "  timeout client 60s",
        "  timeout server 60s",
        "",
    ]
    vhost_apps = [a for a in apps if a.vhosts]
    if vhost_apps:
        out += ["frontend kiln_vhosts", "  bind %s:%d" % (bind, vhost_port), "  mode http"]
        for app in vhost_apps:
            name = _name(app.app_id)
            hosts = " ".join(app.vhosts)
            out.append("  acl host_%s hdr(host),field(1,:) -i %s" % (name, hosts))
            out.append("  use_backend vhost_%s if host_%s" % (name, name))
        out.append("")
        for app in vhost_apps:
            out += ["backend vhost_%s" % _name(app.app_id), "  mode http", "  balance roundrobin"]
            for k, (host, ports) in enumerate(app.tasks):
                if ports:
                    out.append("  server %s_%d %s:%d check" % (_name(app.app_id), k, host, ports[0]))
            out.append("")
    for app in apps:
        for index, service_port in enumerate(app.service_ports):
            name = "%s_%d" % (_name(app.app_id), service_port)
            out += ["listen %s" % name, "  bind %s:%d" % (bind, service_port), "  mode tcp",
                    "  balance leastconn"]
            for k, (host, ports) in enumerate(app.tasks):
                if len(ports) > index:
                    out.append("  server %s_%d %s:%d check" % (name, k, host, ports[index]))
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def fetch_apps(urls: Sequence[str], timeout: float = 10.0) -> List[App]:
    """Ask each Marathon in turn; BadResponse / OSError when none gives a valid answer."""
    errors = []
    for base in urls:
        url = base.rstrip("/") + "/v2/apps?embed=apps.tasks"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return parse_apps(json.loads(resp.read().decode("utf-8")))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            errors.append("%s: %s" % (base, exc))
    raise BadResponse("; ".join(errors) or "no Marathon URL configured")


def check(haproxy: str, path: str) -> Tuple[bool, str]:
    done = subprocess.run([haproxy, "-c", "-f", path], capture_output=True, text=True, check=False)
    return done.returncode == 0, (done.stdout + done.stderr).strip()


def apply(text: str, config: str, haproxy: str, reload_cmd: str) -> str:
    """'unchanged', 'applied', or 'rejected' (the current config stays)."""
    try:
        with open(config, encoding="utf-8") as fh:
            if fh.read() == text:
                return "unchanged"
    except FileNotFoundError:
        pass
    directory = os.path.dirname(os.path.abspath(config))
    fd, candidate = tempfile.mkstemp(prefix=".haproxy.", suffix=".cfg", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        ok, output = check(haproxy, candidate)
        if not ok:
            last = output.splitlines()[-1] if output else "no output"
            log("haproxy -c rejected the new config; keeping the current one: " + last)
            return "rejected"
        os.chmod(candidate, 0o644)
        os.replace(candidate, config)
    finally:
        if os.path.exists(candidate):
            os.unlink(candidate)
    with open(config + ".last-good", "w", encoding="utf-8") as fh:
        fh.write(text)
    if reload_cmd:
        done = subprocess.run(shlex.split(reload_cmd), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log("reload command failed (%d): %s" % (done.returncode, done.stderr.strip()))
    log("applied a new config to %s" % config)
    return "applied"


def sync_once(args: argparse.Namespace) -> str:
    try:
        apps = fetch_apps(args.marathon)
    except BadResponse as exc:
        log("Marathon gave no usable answer; keeping the current config (%s)" % exc)
        return "kept"
    return apply(render(apps, args.vhost_port, args.bind_address), args.config, args.haproxy,
                 args.reload_cmd)


def parser() -> argparse.ArgumentParser:
    env = os.environ
    p = argparse.ArgumentParser(prog="kiln-haproxy-bridge", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="keep haproxy.cfg in step with Marathon")
    run.add_argument("--marathon", type=lambda s: [u for u in s.split(",") if u],
                     default=[u for u in env.get("KILN_BRIDGE_MARATHON_URLS", "").split(",") if u],
                     help="Marathon base URLs, comma separated (env KILN_BRIDGE_MARATHON_URLS)")
    run.add_argument("--config", default="/etc/haproxy/haproxy.cfg")
    run.add_argument("--haproxy", default="/usr/sbin/haproxy")
    run.add_argument("--poll", type=float, default=float(env.get("KILN_BRIDGE_POLL_SECONDS", "5")))
    run.add_argument("--vhost-port", type=int, default=int(env.get("KILN_BRIDGE_VHOST_PORT", "80")))
    run.add_argument("--bind-address", default="0.0.0.0")
    run.add_argument("--reload-cmd", default="systemctl reload haproxy")
    run.add_argument("--once", action="store_true", help="sync once and exit")
    show = sub.add_parser("render", help="print the config for an apps JSON document")
    show.add_argument("--from-file", required=True)
    show.add_argument("--vhost-port", type=int, default=80)
    show.add_argument("--bind-address", default="0.0.0.0")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "render":
        try:
            with open(args.from_file, encoding="utf-8") as fh:
                apps = parse_apps(json.load(fh))
        except (OSError, ValueError) as exc:
            log("cannot render %s: %s" % (args.from_file, exc))
            return 2
        sys.stdout.write(render(apps, args.vhost_port, args.bind_address))
        return 0
    if not args.marathon:
        log("no Marathon URL: pass --marathon or set KILN_BRIDGE_MARATHON_URLS")
        return 2
    while True:
        sync_once(args)
        if args.once:
            return 0
        time.sleep(max(args.poll, 0.5))
