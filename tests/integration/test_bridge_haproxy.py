"""kiln_bridge against a real HAProxy (master-worker, on 127.0.0.1 high ports).

Marathon's HTTP API cannot run here, so `MarathonStandIn` -- a stand-in for Marathon, not
Marathon -- replays its documented /v2/apps?embed=apps.tasks JSON (tests/fixtures/marathon/)
and a /v2/events text/event-stream. The apps' tasks are python http.server threads on
127.0.0.1 that answer with their own name, so each request shows where HAProxy sent it.
Every process started here (haproxy, the bridge) is stopped by its PID in a finalizer.

Most tests render a global section a haproxy without root can run (no user, no chroot, the
stats socket in the test's temp dir); the hardened one the image uses (user haproxy, chroot
/var/lib/haproxy) runs in its own test, which needs root.
"""

from __future__ import annotations

import copy
import http.server
import json
import os
import pwd
import queue
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from argparse import Namespace
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bridge_support import LOCAL, catches, get, stop_pid, wait_for

from kiln.paths import REPO_ROOT
from kiln_bridge.apply import APPLIED, NOT_READY, REJECTED, UNCHANGED, Applier
from kiln_bridge.cli import Syncer
from kiln_bridge.model import is_app_id, is_host, parse_body, parse_marathon
from kiln_bridge.render import IMAGE_DEFAULTS, GlobalSettings, render

HAPROXY = "/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else shutil.which("haproxy")
pytestmark = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (/usr/sbin/haproxy)")
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "marathon"
# Task addresses in apps.json -> the name of the local backend standing in for that task.
# Tasks the bridge must filter out (staging, killing, failing health checks) all go to "trap".
TASK_BACKENDS = {31001: "web-1", 31002: "web-2", 31010: "api", 31011: "api-admin",
                 31030: "db", 31040: "cache"}
INITIAL_CONFIG = ("global\n  maxconn 64\n\ndefaults\n  mode tcp\n  timeout connect 1s\n"
                  "  timeout client 5s\n  timeout server 5s\n")


def harness_settings(tmp_path: Path) -> GlobalSettings:
    """The global section without what needs root; the stats socket stays, in the temp dir."""
    return GlobalSettings(user=None, group=None, chroot=None, stats_socket=str(tmp_path / "admin.sock"),
                          log=None)


def settings_env(settings: GlobalSettings) -> dict[str, str]:
    """`settings` as the bridge's environment (the systemd EnvironmentFile way)."""
    names = {"user": "USER", "group": "GROUP", "chroot": "CHROOT", "stats_socket": "STATS_SOCKET",
             "log": "LOG"}
    return {f"KILN_BRIDGE_HAPROXY_{var}": getattr(settings, field) or "none" for field, var in names.items()}


def runtime_api(path: str | Path, command: str) -> str:
    """One command on haproxy's stats socket (what `socat` would do, with the stdlib)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def info(path: str | Path) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in runtime_api(path, "show info").splitlines() if ": " in line)


def proc_status(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in text.splitlines())}


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (haproxy's workers, for its master)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = proc_status(int(entry.name))
            except OSError:  # it exited while we looked
                continue
            if status.get("PPid") == str(pid) and not status.get("State", "").startswith("Z"):
                found.append(int(entry.name))
    return sorted(found)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCAL, 0))
        return int(s.getsockname()[1])


class Threaded:
    """A ThreadingHTTPServer on 127.0.0.1 in a daemon thread."""

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.httpd = http.server.ThreadingHTTPServer((LOCAL, 0), handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def http_backend(name: str) -> Threaded:
    """A task's stand-in: answers every GET with its name."""

    class Handler(Quiet):
        def do_GET(self) -> None:
            body = name.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Threaded(Handler)


class MarathonStandIn:
    """Stand-in for Marathon's HTTP API: /v2/apps replays a JSON body the test sets (or any
    status/body, to play a broken Marathon); /v2/events is a text/event-stream the test
    pushes events into, or 404 when `events_enabled` is False."""

    def __init__(self, document: dict[str, Any], events_enabled: bool = True) -> None:
        self.body = json.dumps(document).encode()
        self.status = 200
        self.events_enabled = events_enabled
        self.apps_requests = 0
        self.subscribers: list[queue.Queue[bytes | None]] = []
        self.lock = threading.Lock()
        stand_in = self

        class Handler(Quiet):
            def do_GET(self) -> None:
                if self.path == "/v2/apps?embed=apps.tasks":
                    stand_in.apps_requests += 1
                    self._reply(stand_in.status, stand_in.body, "application/json")
                elif self.path.startswith("/v2/events?") and stand_in.events_enabled:
                    self._stream()
                else:
                    self._reply(404, b'{"message":"not found"}', "application/json")

            def _reply(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _stream(self) -> None:
                assert self.headers.get("Accept") == "text/event-stream"
                events: queue.Queue[bytes | None] = queue.Queue()
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                self.wfile.write(b'event: event_stream_attached\ndata: {"remoteAddress":"127.0.0.1"}\n\n')
                self.wfile.flush()
                with stand_in.lock:
                    stand_in.subscribers.append(events)
                try:
                    while (chunk := events.get()) is not None:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                except OSError:
                    pass
                finally:
                    with stand_in.lock:
                        stand_in.subscribers.remove(events)

        self.server = Threaded(Handler)
        self.url = f"http://{LOCAL}:{self.server.port}"

    def set_document(self, document: dict[str, Any]) -> None:
        self.body, self.status = json.dumps(document).encode(), 200

    def push(self, event_type: str, data: dict[str, Any]) -> None:
        chunk = f"event: {event_type}\ndata: {json.dumps(dict(data, eventType=event_type))}\n\n".encode()
        with self.lock:
            for events in self.subscribers:
                events.put(chunk)

    def stop(self) -> None:
        with self.lock:
            for events in self.subscribers:
                events.put(None)
        self.server.stop()


def answers(port: int, host: str | None = None, count: int = 6) -> set[str]:
    return {get(port, host=host)[1] for _ in range(count)}


def routed(port: int, host: str | None, expected: set[str], timeout: float = 15.0) -> None:
    """Wait until requests through HAProxy are answered by exactly `expected` (a reload settles)."""
    seen: set[str] = set()

    def check() -> bool:
        nonlocal seen
        seen = answers(port, host, count=2 * len(expected) + 2)
        return seen == expected

    try:
        wait_for(f"{host or 'port'} {port} -> {sorted(expected)}", check, timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last answers: {sorted(seen)}") from None


def port_mappings_of(app: dict[str, Any]) -> list[dict[str, Any]]:
    container = app.get("container") or {}
    docker = container.get("docker") or {}
    return [*(container.get("portMappings") or []), *(docker.get("portMappings") or [])]


def service_ports_of(document: dict[str, Any]) -> set[int]:
    found: set[int] = set()
    for app in document["apps"]:
        found.update(d["port"] for d in app.get("portDefinitions") or [])
        found.update(app.get("ports") or [])
        found.update(m["servicePort"] for m in port_mappings_of(app))
    return found - {0}


class World:
    """Local backends, the Marathon stand-in, and a real haproxy in master-worker mode."""

    def __init__(self, tmp_path: Path, events_enabled: bool = True, settings: GlobalSettings | None = None,
                 fixture: str = "apps.json", task_backends: dict[int, str] | None = None) -> None:
        self.tmp = tmp_path
        self.settings = settings or harness_settings(tmp_path)
        self.task_backends = TASK_BACKENDS if task_backends is None else task_backends
        names = [*sorted(set(self.task_backends.values())), "web-3", "trap"]
        self.backends = {name: http_backend(name) for name in names}
        original = json.loads((FIXTURES / fixture).read_text())
        # Every service port of the fixture becomes a free high port on 127.0.0.1 (0 stays 0).
        self.ports = {port: free_port() for port in service_ports_of(original)}
        self.ports[0] = 0
        self.vhost_port = free_port()
        self.document = self.localize(original)
        self.marathon = MarathonStandIn(self.document, events_enabled)
        self.config = tmp_path / "haproxy.cfg"
        self.config.write_text(INITIAL_CONFIG)
        self.reloads = tmp_path / "reloads"
        with (tmp_path / "haproxy.log").open("w") as log:
            self.haproxy = subprocess.Popen([HAPROXY, "-W", "-db", "-f", str(self.config)],
                                            stdout=subprocess.DEVNULL, stderr=log)
        # SIGUSR2 (reload) kills the master until it installs its handler, which happens some
        # milliseconds after its first worker is forked: wait for the handler itself.
        wait_for("haproxy's master to handle SIGUSR2", lambda: catches(self.haproxy, signal.SIGUSR2),
                 timeout=10)
        self.reload_cmd = f"sh -c 'echo reload >> {self.reloads} && kill -USR2 {self.haproxy.pid}'"

    def localize(self, document: dict[str, Any]) -> dict[str, Any]:
        """The fixture with every task on 127.0.0.1 and every service port a free high port."""
        doc = copy.deepcopy(document)
        for app in doc["apps"]:
            for definition in app.get("portDefinitions") or []:
                definition["port"] = self.ports[definition["port"]]
            if "ports" in app:
                app["ports"] = [self.ports[p] for p in app["ports"]]
            for mapping in port_mappings_of(app):
                mapping["servicePort"] = self.ports[mapping["servicePort"]]
            for task in app.get("tasks", []):
                task["host"] = LOCAL
                task["ports"] = [self.backend_port(self.task_backends.get(p, "trap")) for p in task["ports"]]
        return doc

    def backend_port(self, name: str) -> int:
        return self.backends[name].port

    def args(self, **overrides: Any) -> Namespace:
        settings = dict(marathon=[self.marathon.url], config=str(self.config), haproxy=HAPROXY,
                        vhost_port=self.vhost_port, bind_address=LOCAL, reload_cmd=self.reload_cmd,
                        settings=self.settings)
        return Namespace(**dict(settings, **overrides))

    def reload_count(self) -> int:
        return len(self.reloads.read_text().splitlines()) if self.reloads.exists() else 0

    def stop(self) -> None:
        try:
            stop_pid(self.haproxy)
        finally:
            self.marathon.stop()
            for backend in self.backends.values():
                backend.stop()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    try:
        yield w
    finally:
        w.stop()


@pytest.fixture
def start_bridge(tmp_path: Path) -> Iterator[Callable[..., tuple[subprocess.Popen[Any], Path]]]:
    """Runs `python -m kiln_bridge run` as the service would; stops it by PID afterwards."""
    started: list[subprocess.Popen[Any]] = []

    def start(world: World, *flags: str) -> tuple[subprocess.Popen[Any], Path]:
        log = tmp_path / f"bridge-{len(started)}.log"
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO_ROOT),
               "PYTHONDONTWRITEBYTECODE": "1", "KILN_BRIDGE_MARATHON_URLS": world.marathon.url,
               "KILN_BRIDGE_VHOST_PORT": str(world.vhost_port), **settings_env(world.settings)}
        cmd = [sys.executable, "-m", "kiln_bridge", "run", "--config", str(world.config),
               "--haproxy", HAPROXY, "--bind-address", LOCAL, "--reload-cmd", world.reload_cmd, *flags]
        with log.open("w") as err:
            proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err)
        started.append(proc)
        return proc, log

    try:
        yield start
    finally:
        for proc in started:
            stop_pid(proc)


def new_web_task(world: World) -> dict[str, Any]:
    doc = copy.deepcopy(world.document)
    web = next(app for app in doc["apps"] if app["id"] == "/web")
    web["tasks"].append({"id": "web.6c9a1b2e-0005", "appId": "/web", "host": LOCAL,
                         "ports": [world.backend_port("web-3")], "state": "TASK_RUNNING",
                         "healthCheckResults": [{"alive": True, "consecutiveFailures": 0}]})
    return doc


# --- haproxy -c ------------------------------------------------------------------------------------


@pytest.mark.parametrize("hardened", [True, False], ids=["image-global", "harness-global"])
@pytest.mark.parametrize(("vhost_port", "bind"), [(80, "0.0.0.0"), (18080, "127.0.0.1"), (8080, "::")])
def test_haproxy_check_accepts_the_rendered_configs(tmp_path: Path, vhost_port: int, bind: str,
                                                    hardened: bool) -> None:
    settings = IMAGE_DEFAULTS if hardened else harness_settings(tmp_path)
    for document in ((FIXTURES / "apps.json").read_bytes(), b'{"apps": []}'):
        cfg = tmp_path / "candidate.cfg"
        cfg.write_text(render(parse_body(document), vhost_port, bind, settings))
        done = subprocess.run([HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        assert "Configuration file is valid" in done.stdout
        assert "WARNING" not in done.stderr and "ALERT" not in done.stderr, done.stderr


def test_a_config_haproxy_rejects_is_not_installed(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "haproxy.cfg"
    good = render(parse_body((FIXTURES / "apps.json").read_bytes()), 18080, LOCAL)
    config.write_text(good)
    reloads = tmp_path / "reloads"
    applier = Applier(str(config), HAPROXY, f"sh -c 'echo reload >> {reloads}'")
    broken = good.replace("  balance leastconn\n", "  balance by-magic\n", 1)
    assert applier.apply(broken) == REJECTED
    assert applier.apply(broken) == REJECTED  # the same candidate again: not re-logged
    assert config.read_text() == good
    assert not reloads.exists() and not (tmp_path / "haproxy.cfg.last-good").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["haproxy.cfg"], "candidate left behind"
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"kiln-haproxy-bridge: haproxy -c rejected the new config, keeping {config}: ")
    assert "[ALERT]" in err and "balance only supports" in err, "haproxy's reason is logged"


def test_a_failed_reload_is_retried_next_round(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, flag, reloads = tmp_path / "haproxy.cfg", tmp_path / "failed-once", tmp_path / "reloads"
    config.write_text(INITIAL_CONFIG)
    # Fails the first time (as `systemctl reload` does while haproxy is down), then succeeds.
    reload_cmd = f"sh -c 'if [ ! -e {flag} ]; then touch {flag}; exit 3; fi; echo reload >> {reloads}'"
    applier = Applier(str(config), HAPROXY, reload_cmd)
    text = render(parse_body(b'{"apps": []}'), 18080, LOCAL)
    assert applier.apply(text) == "reload-failed"
    assert config.read_text() == text, "the checked config is in place even though the reload failed"
    assert applier.apply(text) == APPLIED
    assert applier.apply(text) == UNCHANGED
    assert reloads.read_text() == "reload\n"
    assert "failed (exit 3), will retry" in capsys.readouterr().err


def test_a_reload_haproxy_could_not_carry_out_counts_as_failed(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """`haproxy -c` passes a config whose port another program holds; the reload signal is
    delivered (exit 0) but the master keeps the old worker. Only the runtime API shows it."""
    settings = harness_settings(tmp_path)
    sock, config = tmp_path / "admin.sock", tmp_path / "haproxy.cfg"
    config.write_text(render([], free_port(), LOCAL, settings))
    with (tmp_path / "haproxy.log").open("w") as log:
        haproxy = subprocess.Popen([HAPROXY, "-W", "-db", "-f", str(config)], stdout=subprocess.DEVNULL,
                                   stderr=log)
    holder = socket.socket()
    try:
        wait_for("haproxy's master to handle SIGUSR2", lambda: catches(haproxy, signal.SIGUSR2), timeout=10)
        wait_for("the stats socket", lambda: sock.exists() and "Pid" in info(sock))
        first = int(info(sock)["Pid"])
        holder.bind((LOCAL, 0))
        holder.listen()
        taken = holder.getsockname()[1]
        applier = Applier(str(config), HAPROXY, f"kill -USR2 {haproxy.pid}", stats_socket=str(sock),
                          new_worker_seconds=5)
        text = render([], taken, LOCAL, settings)
        assert applier.apply(text) == "reload-failed"
        assert config.read_text() == text and int(info(sock)["Pid"]) == first, "the old worker serves on"
        err = capsys.readouterr().err
        assert f"haproxy did not load the new config: worker {first} still serves" in err
        holder.close()  # the port is free again: the next round's reload goes through
        assert applier.apply(text) == APPLIED
        assert int(info(sock)["Pid"]) != first
        assert "worker" in capsys.readouterr().err
        assert applier.apply(text) == UNCHANGED
    finally:
        holder.close()
        stop_pid(haproxy)


# --- a real haproxy, driven by Syncer (one round at a time) ---------------------------------------


def test_routes_by_host_header_and_by_service_port(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    dead = f"http://{LOCAL}:{free_port()}"  # first Marathon down: the next one is asked
    syncer = Syncer(world.args(marathon=[dead, world.marathon.url]))
    assert syncer.sync() == APPLIED
    assert world.reload_count() == 1
    assert Path(f"{world.config}.last-good").read_text() == world.config.read_text()
    vhost = world.vhost_port
    routed(vhost, "web.example.test", {"web-1", "web-2"})
    routed(vhost, f"API2.example.test:{vhost}", {"api"})
    routed(vhost, "api.example.test", {"api"})
    assert get(vhost, host="unknown.example.test")[0] == 503
    routed(world.ports[10001], None, {"web-1", "web-2"})
    routed(world.ports[10002], None, {"api"})
    routed(world.ports[10003], None, {"api-admin"})
    routed(world.ports[10004], None, {"db"})
    routed(world.ports[10005], None, {"cache"})
    # Unchanged apps: no rewrite, no reload.
    stamp = world.config.stat().st_mtime_ns
    assert syncer.sync() == UNCHANGED
    assert world.config.stat().st_mtime_ns == stamp and world.reload_count() == 1
    assert "trap" not in answers(vhost, "web.example.test", count=10)
    err = capsys.readouterr().err
    assert f"kiln-haproxy-bridge: wrote {world.config}\n" in err
    assert "kiln-haproxy-bridge: reloaded haproxy (" in err


@pytest.mark.parametrize("answer", [
    (200, b"<html><body>Bad Gateway</body></html>"),
    (200, b'{"apps": [{"id": "/web", "ports": ["10001"], "tasks": [{"host": "127.0.0.1", '
          b'"ports": [31001]}]}]}'),
    (200, b'{"message": "Leader election in progress"}'),
    (503, b'{"message": "Could not determine the current leader"}'),
], ids=["html", "bad-app", "no-apps", "http-503"])
def test_a_bad_marathon_answer_keeps_the_last_good_config(world: World, answer: tuple[int, bytes],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    syncer = Syncer(world.args())
    assert syncer.sync() == APPLIED
    good, stamp = world.config.read_text(), world.config.stat().st_mtime_ns
    routed(world.vhost_port, "web.example.test", {"web-1", "web-2"})
    world.marathon.status, world.marathon.body = answer
    assert syncer.sync() == "kept"
    assert syncer.sync() == "kept"
    assert world.config.read_text() == good and world.config.stat().st_mtime_ns == stamp
    assert Path(f"{world.config}.last-good").read_text() == good
    assert world.reload_count() == 1
    routed(world.vhost_port, "web.example.test", {"web-1", "web-2"})
    routed(world.ports[10002], None, {"api"})
    problems = [line for line in capsys.readouterr().err.splitlines() if "keeping the current config" in line]
    assert len(problems) == 1, "a repeated problem is logged once"
    assert problems[0].startswith("kiln-haproxy-bridge: ")


def test_an_unreachable_marathon_keeps_the_last_good_config(world: World,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    syncer = Syncer(world.args())
    assert syncer.sync() == APPLIED
    good = world.config.read_text()
    world.marathon.stop()  # Marathon goes away: connection refused from now on
    assert syncer.sync() == "kept"
    assert world.config.read_text() == good and world.reload_count() == 1
    routed(world.vhost_port, "api.example.test", {"api"})
    routed(world.ports[10001], None, {"web-1", "web-2"})
    assert f"kiln-haproxy-bridge: no Marathon reachable, keeping the current config: {world.marathon.url}: " \
        in capsys.readouterr().err


def test_a_config_whose_directories_are_missing_waits_for_them(world: World,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = world.tmp / "run"  # as /run/haproxy before haproxy.service made it
    syncer = Syncer(world.args(settings=world.settings._replace(stats_socket=str(run_dir / "admin.sock"))))
    assert syncer.sync() == NOT_READY
    assert syncer.sync() == NOT_READY
    assert world.config.read_text() == INITIAL_CONFIG and world.reload_count() == 0
    assert not Path(f"{world.config}.last-good").exists()
    assert not list(world.tmp.glob(".haproxy.cfg.*")), "candidate left behind"
    err = capsys.readouterr().err
    assert err == (f"kiln-haproxy-bridge: missing {run_dir}, keeping {world.config}: "
                   "haproxy could not start or reload with the new config\n"), "logged once"
    # Why the bridge looks itself: haproxy -c passes this config, yet haproxy cannot start with it.
    text = render(parse_body(b'{"apps": []}'), free_port(), LOCAL, syncer.args.settings)
    candidate = world.tmp / "candidate.cfg"
    candidate.write_text(text)
    assert subprocess.run([HAPROXY, "-c", "-q", "-f", str(candidate)], check=False).returncode == 0
    started = subprocess.run([HAPROXY, "-db", "-f", str(candidate)], capture_output=True, text=True,
                             timeout=30, check=False)
    assert started.returncode != 0 and "cannot bind UNIX socket" in started.stderr, started.stderr
    run_dir.mkdir()
    assert syncer.sync() == APPLIED
    assert world.reload_count() == 1
    routed(world.vhost_port, "web.example.test", {"web-1", "web-2"})
    wait_for("the stats socket", lambda: (run_dir / "admin.sock").exists())
    assert info(run_dir / "admin.sock")["Name"] == "HAProxy"


def test_a_new_task_is_written_reloaded_and_gets_traffic(world: World) -> None:
    syncer = Syncer(world.args())
    assert syncer.sync() == APPLIED
    routed(world.vhost_port, "web.example.test", {"web-1", "web-2"})
    world.marathon.set_document(new_web_task(world))
    assert syncer.sync() == APPLIED
    assert world.reload_count() == 2
    assert f"127.0.0.1:{world.backend_port('web-3')} check" in world.config.read_text()
    routed(world.vhost_port, "web.example.test", {"web-1", "web-2", "web-3"})
    routed(world.ports[10001], None, {"web-1", "web-2", "web-3"})
    routed(world.vhost_port, "api.example.test", {"api"})


# --- a bad task costs only itself ------------------------------------------------------------------

# Tasks as a broken or hostile agent could make Marathon report them: each would break haproxy.cfg
# (a newline ends the server line; haproxy refuses 'a..b'; a string port) if it got through.
BAD_TASKS: list[Any] = [
    {"id": "web.bad-1", "host": "127.0.0.1\n", "ports": [31001], "state": "TASK_RUNNING"},
    {"id": "web.bad-2", "host": "127.0.0.1:31001 check\nlisten x\n  bind :1", "ports": [31001]},
    {"id": "web.bad-3", "host": "agent..example.test", "ports": [31001], "state": "TASK_RUNNING"},
    {"id": "web.bad-4", "host": LOCAL, "ports": ["31001"], "state": "TASK_RUNNING"},
    {"id": "web.bad-5", "host": LOCAL, "ports": [31001], "state": ["TASK_RUNNING"]},
    "web.bad-6",
]
BAD_TASK_LOG = [
    "dropped task web.bad-1 (tasks[4]) of /web: host must be a host name or IPv4 address, got '127.0.0.1\\n'",
    "dropped task web.bad-2 (tasks[5]) of /web: host must be a host name or IPv4 address, got "
    "'127.0.0.1:31001 check\\nlisten x\\n  bind :1'",
    "dropped task web.bad-3 (tasks[6]) of /web: host must be a host name or IPv4 address, got "
    "'agent..example.test'",
    "dropped task web.bad-4 (tasks[7]) of /web: ports must be a list of integers 1-65535",
    "dropped task web.bad-5 (tasks[8]) of /web: state must be a string, got a list",
    "dropped task tasks[9] of /web: must be an object, got 'web.bad-6'",
]


def with_bad_tasks(document: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(document)
    next(app for app in doc["apps"] if app["id"] == "/web")["tasks"] += copy.deepcopy(BAD_TASKS)
    return doc


def test_a_bad_task_is_dropped_logged_and_the_rest_routed(world: World,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    world.marathon.set_document(with_bad_tasks(world.document))
    syncer = Syncer(world.args())
    assert syncer.sync() == APPLIED, "haproxy -c accepted the config and it went live"
    checked = subprocess.run([HAPROXY, "-c", "-f", str(world.config)], capture_output=True, text=True,
                             check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    routed(world.vhost_port, "web.example.test", {"web-1", "web-2"})
    routed(world.ports[10001], None, {"web-1", "web-2"})
    routed(world.ports[10004], None, {"db"})
    err = capsys.readouterr().err.splitlines()
    dropped = [line for line in err if "dropped task" in line]
    assert dropped == [f"kiln-haproxy-bridge: {m}" for m in BAD_TASK_LOG]
    # Next round, the same bad tasks: nothing new to say and nothing to reload.
    assert syncer.sync() == UNCHANGED
    assert "dropped" not in capsys.readouterr().err
    # They hold back no later change: a new good task is routed while they are still there.
    world.marathon.set_document(with_bad_tasks(new_web_task(world)))
    assert syncer.sync() == APPLIED
    routed(world.vhost_port, "web.example.test", {"web-1", "web-2", "web-3"})
    assert world.reload_count() == 2


def unshare_available() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "--net", "true"], capture_output=True, check=False).returncode == 0


def haproxy_check_offline(config: Path) -> subprocess.CompletedProcess[str]:
    """`haproxy -c` in a network namespace of its own: it resolves the server names (init-addr
    libc), and there those lookups fail at once instead of going to the machine's DNS server."""
    return subprocess.run(["unshare", "--net", HAPROXY, "-c", "-f", str(config)], capture_output=True,
                          text=True, timeout=60, check=False)


# Boundary values the model accepts; each must render a config haproxy accepts.
EDGE_HOSTS = ["1", "1.2", "0", "127.1", "3a", "1e5", "00000000001", "256.1.1.1", "9.9.9.9.9.9", "a-b.c",
              "A.B.C", "x" * 63, ".".join(["a" * 63] * 3) + "." + "b" * 61, "xn--bcher-kva.example",
              "0.0.0.0", "255.255.255.255", "agent-1.cluster.example.test"]
EDGE_IDS = ["/a", "/0", "/a.b", "/a..b", "/a-b", "/a--b", "/1.2.3", "/a/b/c", "/" + "a" * 200,
            "/" + "/".join(["x"] * 100), "a/b/d"]


@pytest.mark.skipif(not unshare_available(), reason="needs root and unshare(1): haproxy -c resolves the "
                    "host names, and only a network namespace of the test's own keeps those lookups off "
                    "the network")
def test_whatever_the_model_accepts_renders_a_config_haproxy_accepts(tmp_path: Path) -> None:
    assert all(is_host(h) for h in EDGE_HOSTS) and all(is_app_id(i) for i in EDGE_IDS)
    vhosts = [f"v{i}.{h}".lower()[:253].rstrip(".-") for i, h in enumerate(EDGE_HOSTS * 8)]
    apps = []
    for n, app_id in enumerate(EDGE_IDS):
        tasks = [{"id": f"t{n}.{i}", "host": host, "ports": [1, 65535]} for i, host in enumerate(EDGE_HOSTS)]
        tasks.append({"id": f"t{n}.dup", "host": EDGE_HOSTS[0], "ports": [1, 65535]})
        apps.append({"id": app_id, "ports": [20000 + 2 * n, 20001 + 2 * n], "tasks": tasks,
                     "labels": {"HAPROXY_0_VHOST": ",".join(vhosts)} if n < 3 else {}})
    routes = parse_marathon({"apps": apps})
    assert routes.dropped == () and len(routes.apps) == len(EDGE_IDS)
    config = tmp_path / "edge.cfg"
    for settings in (harness_settings(tmp_path), IMAGE_DEFAULTS):
        config.write_text(render(routes.apps, 18080, LOCAL, settings))
        done = haproxy_check_offline(config)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "ALERT" not in done.stderr, done.stderr


@pytest.mark.skipif(not unshare_available(), reason="needs root and unshare(1): haproxy -c resolves the "
                    "host names, and only a network namespace of the test's own keeps those lookups off "
                    "the network")
@pytest.mark.parametrize(("lines", "alert"), [
    (["  server a a..b:31000 check"], "Can't create DNS resolution for server"),
    (["  server h:1 h:1 check", "  server h:1 h:1 check"], "another server named 'h:1'"),
    (["  acl v hdr(host) -i " + " ".join(f"h{i}.test" for i in range(70))], "too many words"),
], ids=["double-dot-host", "server-twice", "acl-70-hosts"])
def test_what_the_model_and_renderer_keep_out_would_break_the_config(tmp_path: Path, lines: list[str],
                                                                     alert: str) -> None:
    """Why the checks exist: written straight into a config, each of these fails `haproxy -c`."""
    config = tmp_path / "bad.cfg"
    config.write_text(INITIAL_CONFIG + "  default-server init-addr libc,none\n\nlisten l\n"
                      f"  bind {LOCAL}:{free_port()}\n" + "\n".join(lines) + "\n")
    done = haproxy_check_offline(config)
    assert done.returncode != 0 and alert in done.stdout + done.stderr, done.stdout + done.stderr
    assert not is_host("a..b")


# --- Marathon's documented app shapes, routed for real ----------------------------------------------

# Each task port of the fixtures goes to a backend answering with that port number.
DOC_FIXTURES = {
    "docker-bridge.json": (
        {9000: {"31500", "31510"}, 2000: {"31520"}, 2001: {"31521"}, 10000: {"31530"}, 10001: {"31531"},
         10002: {"31532"}},
        ("bridged.example.test", {"31500", "31510"}),
        (9001, 3000),  # udp mappings: no listener
    ),
    "networking-1.5.json": (
        {10080: {"31800", "31810"}, 10091: {"31900"}, 10100: {"31950"}, 10101: {"31951"}},
        ("nginx.example.test", {"31800", "31810"}),
        (10090,),  # container mode, no host port: no listener
    ),
}


@pytest.mark.parametrize("fixture", sorted(DOC_FIXTURES))
def test_marathon_documented_apps_route_through_haproxy(tmp_path: Path, fixture: str) -> None:
    listeners, (vhost, vhost_backends), unrouted = DOC_FIXTURES[fixture]
    task_ports = {p for app in json.loads((FIXTURES / fixture).read_text())["apps"]
                  for task in app.get("tasks", []) for p in task["ports"]}
    world = World(tmp_path, fixture=fixture, task_backends={p: str(p) for p in task_ports})
    try:
        syncer = Syncer(world.args())
        assert syncer.sync() == APPLIED
        for service_port, backends in listeners.items():
            routed(world.ports[service_port], None, backends)
        routed(world.vhost_port, vhost, vhost_backends)
        for service_port in unrouted:
            status, reason = get(world.ports[service_port])
            assert status == 0 and "refused" in reason, (service_port, status, reason)
    finally:
        world.stop()


# --- the service loop: `python -m kiln_bridge run` -----------------------------------------------


def test_run_follows_marathon_events(world: World, start_bridge: Callable[..., Any]) -> None:
    # A poll interval far beyond the test: only the event stream can make it re-sync in time.
    proc, log = start_bridge(world, "--poll", "600")
    wait_for("the bridge's first config", lambda: world.reload_count() == 1)
    routed(world.vhost_port, "web.example.test", {"web-1", "web-2"})
    wait_for("the bridge to attach to /v2/events", lambda: bool(world.marathon.subscribers))
    requests_before = world.marathon.apps_requests
    world.marathon.set_document(new_web_task(world))
    world.marathon.push("status_update_event", {"appId": "/web", "taskStatus": "TASK_RUNNING"})
    wait_for("a reload after the event", lambda: world.reload_count() == 2, timeout=10)
    routed(world.vhost_port, "web.example.test", {"web-1", "web-2", "web-3"})
    # Events that do not change routing cause no fetch.
    fetched = world.marathon.apps_requests
    assert fetched > requests_before
    world.marathon.push("framework_message_event", {})
    time.sleep(1.0)
    assert world.marathon.apps_requests == fetched
    assert proc.poll() is None
    text = log.read_text()
    assert f"kiln-haproxy-bridge: following Marathon's event stream at {world.marathon.url}\n" in text
    assert all(line.startswith("kiln-haproxy-bridge: ") for line in text.splitlines())


def test_run_polls_when_marathon_has_no_event_stream(tmp_path: Path,
                                                      start_bridge: Callable[..., Any]) -> None:
    world = World(tmp_path, events_enabled=False)
    try:
        proc, log = start_bridge(world, "--poll", "0.5")
        wait_for("the bridge's first config", lambda: world.reload_count() == 1)
        routed(world.vhost_port, "web.example.test", {"web-1", "web-2"})
        world.marathon.set_document(new_web_task(world))
        wait_for("a reload after a poll", lambda: world.reload_count() == 2, timeout=10)
        routed(world.vhost_port, "web.example.test", {"web-1", "web-2", "web-3"})
        time.sleep(1.5)
        assert world.reload_count() == 2, "an unchanged config is not reloaded on every poll"
        assert proc.poll() is None
        assert "event stream unavailable, polling only" in log.read_text()
        stop_pid(proc)
        assert proc.returncode == 0, "SIGTERM ends the service cleanly"
        leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".haproxy.cfg."))
        assert leftovers == []
    finally:
        world.stop()


# --- the image's hardened global section on a real haproxy ----------------------------------------


def haproxy_account() -> tuple[int, int] | None:
    try:
        entry = pwd.getpwnam("haproxy")
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: haproxy's master must start as root to "
                    "switch its workers to user haproxy and chroot them")
@pytest.mark.skipif(haproxy_account() is None, reason="no user haproxy on this machine (the haproxy "
                    "package creates it)")
@pytest.mark.skipif(not os.path.isdir(IMAGE_DEFAULTS.chroot or ""),
                    reason=f"no {IMAGE_DEFAULTS.chroot} to chroot into (the haproxy package creates it)")
def test_the_hardened_global_section_runs_workers_as_haproxy_in_a_chroot(tmp_path: Path) -> None:
    account = haproxy_account()
    assert account is not None
    uid, gid = account
    run_dir = tmp_path / "run"  # the image's /run/haproxy, here where the test may write
    run_dir.mkdir()
    sock = run_dir / "admin.sock"
    world = World(tmp_path, settings=IMAGE_DEFAULTS._replace(stats_socket=str(sock)))
    try:
        syncer = Syncer(world.args())
        assert syncer.sync() == APPLIED
        text = world.config.read_text()
        assert ("\nglobal\n  maxconn 4096\n  user haproxy\n  group haproxy\n  chroot /var/lib/haproxy\n"
                f"  stats socket {sock} mode 660 level admin expose-fd listeners\n") in text
        checked = subprocess.run([HAPROXY, "-c", "-f", str(world.config)], capture_output=True, text=True,
                                 check=False)
        assert checked.returncode == 0 and "Configuration file is valid" in checked.stdout, checked.stderr

        master = world.haproxy.pid
        # The worker of the initial (root) config leaves once the reloaded one took over.
        wait_for("only workers running as user haproxy",
                 lambda: bool(children(master)) and all(
                     proc_status(pid)["Uid"].split() == [str(uid)] * 4 for pid in children(master)))
        (worker,) = children(master)
        status = proc_status(worker)
        assert status["Gid"].split() == [str(gid)] * 4
        assert os.readlink(f"/proc/{worker}/root") == IMAGE_DEFAULTS.chroot
        # The master stays root: it re-reads the config and binds new ports on every reload.
        assert proc_status(master)["Uid"].split()[1] == "0"

        assert stat.S_IMODE(sock.stat().st_mode) == 0o660
        answer = info(sock)
        assert answer["Name"] == "HAProxy" and answer["Pid"] == str(worker)
        routed(world.vhost_port, "web.example.test", {"web-1", "web-2"})
        routed(world.vhost_port, "api.example.test", {"api"})
        routed(world.ports[10001], None, {"web-1", "web-2"})
        routed(world.ports[10004], None, {"db"})

        # A second reload under the hardened config: new worker, same socket path, new route.
        world.marathon.set_document(new_web_task(world))
        assert syncer.sync() == APPLIED
        wait_for("the next worker", lambda: children(master) != [] and worker not in children(master))
        (second,) = children(master)
        assert proc_status(second)["Uid"].split() == [str(uid)] * 4
        assert info(sock)["Pid"] == str(second)
        routed(world.vhost_port, "web.example.test", {"web-1", "web-2", "web-3"})
    finally:
        world.stop()
