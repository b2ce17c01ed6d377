"""The bridge against a real HAProxy on 127.0.0.1. Marathon's HTTP API cannot run here, so a
fixture server replays its documented /v2/apps JSON: a stand-in for Marathon, named so."""

from __future__ import annotations

import argparse
import http.server
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.paths import REPO_ROOT
from kiln_bridge.bridge import sync_once

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
pytestmark = pytest.mark.skipif(not Path(HAPROXY).exists(), reason="haproxy not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A threaded HTTP server on 127.0.0.1 whose answer the test can change."""

    def __init__(self, body: bytes = b"", status: int = 200) -> None:
        self.body, self.status = body, status
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(outer.status)
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.thread.join()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict]:
    backends = {name: Server(f"backend-{name}".encode()) for name in ("a", "b", "c")}
    ports = {"vhost": free_port(), "web": free_port(), "api": free_port()}
    text = (REPO_ROOT / "tests/fixtures/marathon/apps.json").read_text()
    text = text.replace("PORT_A", str(backends["a"].port)).replace("PORT_B", str(backends["b"].port))
    doc = json.loads(text)
    doc["apps"][0]["portDefinitions"][0]["port"] = ports["web"]
    doc["apps"][1]["ports"] = [ports["api"]]
    marathon = Server(json.dumps(doc).encode())  # stand-in for Marathon's /v2/apps
    config = tmp_path / "haproxy.cfg"
    config.write_text("global\n  maxconn 16\ndefaults\n  timeout connect 1s\n  timeout client 5s\n"
                      "  timeout server 5s\n")
    proc = subprocess.Popen([HAPROXY, "-W", "-db", "-f", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    # The master handles USR2 (reload) only once it runs a worker; before that USR2 kills it.
    deadline = time.monotonic() + 10
    while not Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().strip():
        assert time.monotonic() < deadline, "haproxy started no worker"
        assert proc.poll() is None, "haproxy exited at start"
        time.sleep(0.05)
    args = argparse.Namespace(marathon=[f"http://127.0.0.1:{marathon.port}"], config=str(config),
                              haproxy=HAPROXY, vhost_port=ports["vhost"], bind_address="127.0.0.1",
                              reload_cmd=f"kill -USR2 {proc.pid}")
    try:
        yield {"args": args, "marathon": marathon, "doc": doc, "backends": backends, "ports": ports,
               "config": config, "haproxy": proc}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for server in (*backends.values(), marathon):
            server.stop()


def get(port: int, host: str | None = None, attempts: int = 40) -> str:
    """GET through HAProxy, retrying while a reload settles (bounded)."""
    last: Exception | None = None
    for _ in range(attempts):
        try:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/")
            if host:
                req.add_header("Host", host)
            with urllib.request.urlopen(req, timeout=2) as resp:
                return resp.read().decode()
        except OSError as exc:
            last = exc
            time.sleep(0.25)
    raise AssertionError(f"no answer through haproxy on {port}: {last}")


def test_routes_by_host_header_and_by_service_port(world: dict) -> None:
    assert sync_once(world["args"]) == "applied"
    ports = world["ports"]
    assert get(ports["vhost"], "web.example.test") == "backend-a"
    assert get(ports["vhost"], "api2.example.test") == "backend-b"
    assert get(ports["web"]) == "backend-a"
    assert get(ports["api"]) == "backend-b"
    assert sync_once(world["args"]) == "unchanged"
    assert Path(f"{world['config']}.last-good").read_text() == world["config"].read_text()


def test_malformed_or_missing_marathon_keeps_the_last_good_config(world: dict) -> None:
    assert sync_once(world["args"]) == "applied"
    good = world["config"].read_text()
    world["marathon"].body = b'{"apps": [{"no-id": true}]}'
    assert sync_once(world["args"]) == "kept"
    world["marathon"].body = b"<html>502 Bad Gateway</html>"
    assert sync_once(world["args"]) == "kept"
    world["args"].marathon = [f"http://127.0.0.1:{free_port()}"]  # nothing listens there
    assert sync_once(world["args"]) == "kept"
    assert world["config"].read_text() == good
    assert get(world["ports"]["vhost"], "web.example.test") == "backend-a"


def test_a_new_task_is_routed_after_the_reload(world: dict) -> None:
    assert sync_once(world["args"]) == "applied"
    doc = world["doc"]
    doc["apps"][0]["tasks"] = [{"id": "web.3", "host": "127.0.0.1",
                                "ports": [world["backends"]["c"].port], "state": "TASK_RUNNING"}]
    world["marathon"].body = json.dumps(doc).encode()
    assert sync_once(world["args"]) == "applied"
    deadline = time.monotonic() + 10
    answer = ""
    while time.monotonic() < deadline and answer != "backend-c":
        answer = get(world["ports"]["vhost"], "web.example.test")
    assert answer == "backend-c"
