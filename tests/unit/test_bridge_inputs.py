"""kiln_bridge is a daemon: no answer from Marathon may crash it or cost the last good config.

Marathon cannot run here. `MarathonStandIn` is a stand-in for Marathon's HTTP API, not Marathon:
a raw TCP server on 127.0.0.1 answering every request with the bytes a test chose, so it can send
what no HTTP library would (a broken status line, a Content-Length that lies, a body that never
ends). The bridge runs for real against it (Syncer: fetch, parse, render, `haproxy -c`, swap).

Every hostile answer in HOSTILE must leave: no exception escaping, exactly one log line naming the
problem, and the haproxy.cfg of the last good answer in place, byte for byte and untouched; and
the next good answer must still go live.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from argparse import Namespace
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from kiln.paths import REPO_ROOT
from kiln_bridge.apply import APPLIED, UNCHANGED
from kiln_bridge.cli import Syncer
from kiln_bridge.fetch import MAX_BODY
from kiln_bridge.log import MAX_LINE, one_line
from kiln_bridge.marathon import MAX_EVENT_LINE, event_type, read_events
from kiln_bridge.model import BadResponse, load_json
from kiln_bridge.render import GlobalSettings

HAPROXY = "/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else shutil.which("haproxy")
pytestmark = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (/usr/sbin/haproxy): "
                                "the bridge checks every config with `haproxy -c`")
LOCAL = "127.0.0.1"
PREFIX = "kiln-haproxy-bridge: "
BARE = GlobalSettings(user=None, group=None, chroot=None, stats_socket=None, log=None)
TIMEOUT = 0.5  # the bridge's per-read timeout here; a whole answer may take 3 x as long

# A small valid Marathon answer (addresses only, so `haproxy -c` resolves nothing).
GOOD: dict[str, Any] = {"apps": [
    {"id": "/web", "portDefinitions": [{"port": 10001, "protocol": "tcp"}],
     "labels": {"HAPROXY_0_VHOST": "web.example.test"},
     "tasks": [{"id": "web.1", "host": "10.0.0.11", "ports": [31001], "state": "TASK_RUNNING",
                "healthCheckResults": [{"alive": True}]},
               {"id": "web.2", "host": "10.0.0.12", "ports": [31002], "state": "TASK_RUNNING"},
               # not running, so it adds nothing to the config: the task-level cases spoil this one
               {"id": "web.3", "host": "10.0.0.14", "ports": [31009], "state": "TASK_STAGING",
                "healthCheckResults": [{"alive": False}]}]},
    {"id": "/db", "ports": [10002], "tasks": [{"id": "db.1", "host": "10.0.0.13", "ports": [31003]}]},
]}


def good() -> dict[str, Any]:
    return json.loads(json.dumps(GOOD))


def http(body: bytes, status: str = "200 OK", headers: tuple[str, ...] = ()) -> bytes:
    head = [f"HTTP/1.1 {status}", "Content-Type: application/json", f"Content-Length: {len(body)}",
            "Connection: close", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def doc(change: Callable[[dict[str, Any]], Any]) -> bytes:
    """The good answer with one change, as an HTTP reply."""
    document = good()
    change(document)
    return http(json.dumps(document).encode())


def set_in(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change that sets document[path] (dotted, list indexes as numbers) to value."""
    def change(document: dict[str, Any]) -> None:
        keys: list[Any] = [int(k) if k.isdigit() else k for k in path.split(".")]
        target: Any = document
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return change


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def trickle(conn: socket.socket) -> None:
    """Headers, then a body a byte at a time that never ends."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{")
    while True:
        time.sleep(0.05)
        conn.sendall(b" ")


def endless_chunks(conn: socket.socket) -> None:
    """A chunked body larger than the bridge's limit (sent as fast as the bridge reads)."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b" " * (1 << 20)
    for _ in range(MAX_BODY // len(chunk) + 2):
        conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    conn.sendall(b"0\r\n\r\n")


def hang_up(conn: socket.socket) -> None:
    """Reads the request and closes without a word."""


Reply = bytes | Callable[[socket.socket], None]


class MarathonStandIn:
    """A stand-in for Marathon's HTTP API (not Marathon): every request gets `reply`, raw."""

    def __init__(self) -> None:
        self.reply: Reply = http(json.dumps(GOOD).encode())
        self.replies: list[Reply] = []  # when set, served one per request, then `reply` again
        self.served = 0
        self.sock = socket.socket()
        self.sock.bind((LOCAL, 0))
        self.sock.listen(16)
        self.url = f"http://{LOCAL}:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            request = b""
            try:
                while b"\r\n\r\n" not in request and len(request) < 65536:
                    data = conn.recv(4096)
                    if not data:
                        return
                    request += data
                reply = self.replies.pop(0) if self.replies else self.reply
                self.served += 1
                if isinstance(reply, bytes):
                    conn.sendall(reply)
                else:
                    reply(conn)
            except OSError:
                pass  # the bridge gave up on us: what these tests expect of it

    def stop(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() above
        self.sock.close()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive()


@pytest.fixture
def marathon() -> Iterator[MarathonStandIn]:
    stand_in = MarathonStandIn()
    try:
        yield stand_in
    finally:
        stand_in.stop()


def bridge_args(tmp_path: Path, marathon: MarathonStandIn, timeout: float = TIMEOUT) -> Namespace:
    return Namespace(marathon=[marathon.url], config=str(tmp_path / "haproxy.cfg"), haproxy=HAPROXY,
                     vhost_port=18080, bind_address=LOCAL, reload_cmd="", settings=BARE, timeout=timeout)


class Case(NamedTuple):
    name: str
    reply: Reply
    log: str  # a regular expression the one log line must match
    result: str = "kept"  # what the round returns: "kept", or "unchanged" when a task was dropped
    timeout: float = TIMEOUT


def dropped(task: str, message: str) -> str:
    return rf"^kiln-haproxy-bridge: dropped task {re.escape(task)} of /web: {message}"


KEEPING = r"keeping the current config: http://127\.0\.0\.1:\d+: "
REJECTED = r"^kiln-haproxy-bridge: rejected Marathon's answer, " + KEEPING
UNREACHED = r"^kiln-haproxy-bridge: no Marathon reachable, " + KEEPING
NOT_JSON = REJECTED + r"not JSON "
BODY = json.dumps(GOOD).encode()
WEB = REJECTED + r"apps\[0\] \(/web\)"
ID = REJECTED + r"apps\[0\]\.id must be a Marathon app id such as /group/app, got "
HOST = r"host must be a host name or IPv4 address, got "
TASK3 = "web.3 (tasks[2])"
DEEP = NOT_JSON.rstrip(" ") + r": nested too deeply$"
LONG_DIGITS = NOT_JSON + r"\(a number with 400 digits\)"
HTTP_BROKEN = UNREACHED + r"not a valid HTTP answer \("


def task3(field: str, value: Any) -> bytes:
    """The good answer with a field of the staging task web.3 spoiled."""
    return doc(set_in(f"apps.0.tasks.2.{field}" if field else "apps.0.tasks.2", value))


def lying_length(body: bytes, extra: int) -> bytes:
    return http(body).replace(b"Content-Length: %d" % len(body), b"Content-Length: %d" % (len(body) + extra))


def deep_label(depth: int) -> bytes:
    return http(BODY.replace(b'"labels": {', b'"labels": {"x": ' + b"[" * depth + b"]" * depth + b", "))


HOSTILE = [
    # bodies that are not UTF-8
    Case("latin-1", http(BODY.replace(b"/web", b"/w\xe9b")), REJECTED + r"not UTF-8 \(at byte \d+: e962"),
    Case("utf-16", http(json.dumps(GOOD).encode("utf-16")), REJECTED + r"not UTF-8 \(at byte 0: fffe"),
    Case("cut-sequence", http(BODY[:-1] + b"\xe2\x82"), REJECTED + r"not UTF-8"),
    Case("overlong-slash", http(BODY.replace(b"/db", b"\xc0\xafdb")), REJECTED + r"not UTF-8"),
    Case("utf-8-bom", http(b"\xef\xbb\xbf" + BODY), NOT_JSON + r"\(Unexpected UTF-8 BOM"),
    # JSON nested thousands of levels deep
    Case("deep-array", http(b"[" * 100_000 + b"]" * 100_000), DEEP),
    Case("deep-object", http(b'{"a":' * 50_000 + b"1" + b"}" * 50_000), DEEP),
    Case("deep-in-label", deep_label(20_000), DEEP),
    Case("unclosed-deep", http(b'{"apps": ' + b"[" * 100_000), DEEP),
    # nesting that JSON allows, where a plain value belongs
    Case("nested-labels", doc(set_in("apps.0.labels.HAPROXY_0_VHOST", nested(500))),
         WEB + r"\.labels must be an object of strings$"),
    Case("nested-host", task3("host", nested(500)), dropped(TASK3, HOST + "a list$"), "unchanged"),
    # NaN and Infinity (Python's json reads them, JSON has no such values)
    Case("nan-port", http(BODY.replace(b'"port": 10001', b'"port": NaN')),
         NOT_JSON + r"\(NaN is not a JSON value\): '\{"),
    Case("infinity-port", http(BODY.replace(b"[31003]", b"[Infinity]")),
         NOT_JSON + r"\(Infinity is not a JSON value\)"),
    Case("minus-infinity", http(BODY.replace(b"10002", b"-Infinity")),
         NOT_JSON + r"\(-Infinity is not a JSON value\)"),
    Case("overflowing-float", http(BODY.replace(b"31001", b"1e999")),
         NOT_JSON + r"\(1e999 is out of range\)"),
    # 400-digit numbers
    Case("400-digit-service-port", http(BODY.replace(b"10002", b"9" * 400)), LONG_DIGITS),
    Case("400-digit-task-port", http(BODY.replace(b"31002", b"1" + b"0" * 399)), LONG_DIGITS),
    Case("400-digit-negative", http(BODY.replace(b"31003", b"-" + b"7" * 400)), LONG_DIGITS),
    Case("400-digit-fraction", http(BODY.replace(b"31003", b"0." + b"3" * 400)),
         NOT_JSON + r"\(a number written with 402 characters\)"),
    # wrong types at every level
    Case("document-list", http(b"[]"), REJECTED + r"expected a JSON object with an 'apps' list$"),
    Case("document-string", http(b'"apps"'), REJECTED + r"expected a JSON object with an 'apps' list$"),
    Case("document-null", http(b"null"), REJECTED + r"expected a JSON object with an 'apps' list$"),
    Case("apps-object", doc(set_in("apps", {"id": "/web"})),
         REJECTED + r"expected a JSON object with an 'apps' list$"),
    Case("app-number", doc(set_in("apps.1", 7)), REJECTED + r"apps\[1\] must be an object$"),
    Case("id-number", doc(set_in("apps.0.id", 5)), ID + r"5$"),
    Case("id-list", doc(set_in("apps.0.id", ["/web"])), ID + r"a list$"),
    Case("definitions-string", doc(set_in("apps.0.portDefinitions", "10001")),
         WEB + r"\.portDefinitions must be a list of objects$"),
    Case("definition-list", doc(set_in("apps.0.portDefinitions.0", [10001])),
         WEB + r"\.portDefinitions must be a list of objects$"),
    Case("port-string", doc(set_in("apps.0.portDefinitions.0.port", "10001")),
         WEB + r"\.portDefinitions\[\]\.port must be a list of integers 0-65535$"),
    Case("port-float", doc(set_in("apps.0.portDefinitions.0.port", 10001.0)),
         WEB + r"\.portDefinitions\[\]\.port must be a list of integers 0-65535$"),
    Case("port-bool", doc(set_in("apps.1.ports", [True])),
         REJECTED + r"apps\[1\] \(/db\)\.ports must be a list of integers 0-65535$"),
    Case("protocol-number", doc(set_in("apps.0.portDefinitions.0.protocol", 6)),
         WEB + r"\.portDefinitions\[0\]\.protocol must be a string, got 6$"),
    Case("container-list", doc(set_in("apps.0.container", [])), WEB + r"\.container must be an object$"),
    Case("docker-string", doc(set_in("apps.0.container", {"docker": "nginx"})),
         WEB + r"\.container\.docker must be an object$"),
    Case("mappings-object", doc(set_in("apps.0.container", {"portMappings": {"servicePort": 1}})),
         WEB + r"\.container\.portMappings must be a list of objects$"),
    Case("service-port-null", doc(set_in("apps.0.container", {"portMappings": [{"servicePort": None}]})),
         WEB + r"\.container\.portMappings\[\]\.servicePort must be a list of integers"),
    Case("networks-string", doc(set_in("apps.0.networks", "host")),
         WEB + r"\.networks must be a list of objects$"),
    Case("labels-list", doc(set_in("apps.0.labels", ["HAPROXY_0_VHOST"])),
         WEB + r"\.labels must be an object of strings$"),
    Case("label-object", doc(set_in("apps.0.labels.HAPROXY_0_VHOST", {})),
         WEB + r"\.labels must be an object of strings$"),
    Case("tasks-object", doc(set_in("apps.0.tasks", {"web.1": {}})),
         WEB + r"\.tasks must be a list of objects$"),
    # a task of the wrong type at any level costs that task only
    Case("task-string", task3("", "10.0.0.14:31009"),
         dropped("tasks[2]", r"must be an object, got '10\.0\.0\.14:31009'$"), "unchanged"),
    Case("host-number", task3("host", 167772174), dropped(TASK3, HOST + r"167772174$"), "unchanged"),
    Case("ports-object", task3("ports", {"0": 31009}),
         dropped(TASK3, r"ports must be a list of integers 1-65535$"), "unchanged"),
    Case("state-number", task3("state", 1), dropped(TASK3, r"state must be a string, got 1$"), "unchanged"),
    Case("health-string", task3("healthCheckResults", "alive"),
         dropped(TASK3, r"healthCheckResults must be a list of objects$"), "unchanged"),
    Case("alive-string", task3("healthCheckResults.0.alive", "true"),
         dropped(TASK3, r"healthCheckResults\[\]\.alive must be true or false$"), "unchanged"),
    # app ids and task hosts with trailing newlines or control characters
    Case("id-newline", doc(set_in("apps.0.id", "/web\n")), ID + r"'/web\\n'$"),
    Case("id-carriage-return", doc(set_in("apps.0.id", "/web\r")), ID + r"'/web\\r'$"),
    Case("id-nul", doc(set_in("apps.0.id", "/we\x00b")), ID + r"'/we\\x00b'$"),
    Case("id-line-separator", doc(set_in("apps.0.id", "/web\u2028")), ID + r"'/web\\u2028'$"),
    Case("id-lone-surrogate", http(BODY.replace(b'"/db"', b'"/db\\ud800"')),
         ID.replace(r"apps\[0\]", r"apps\[1\]") + r"'/db\\ud800'$"),
    Case("host-newline", task3("host", "10.0.0.14\n"), dropped(TASK3, HOST + r"'10\.0\.0\.14\\n'$"),
         "unchanged"),
    Case("host-tab", task3("host", "10.0.0.14\t"), dropped(TASK3, HOST + r"'10\.0\.0\.14\\t'$"), "unchanged"),
    Case("host-escape", task3("host", "10.0.0.14\x1b[2J"),
         dropped(TASK3, HOST + r"'10\.0\.0\.14\\x1b\[2J'$"), "unchanged"),
    Case("host-next-line", task3("host", "10.0.0.14\x85"), dropped(TASK3, HOST + r"'10\.0\.0\.14\\x85'$"),
         "unchanged"),
    Case("host-injection", task3("host", "10.0.0.14:31009 check\nlisten x\n  bind :22"),
         dropped(TASK3, HOST + r"'10\.0\.0\.14:31009 check\\nlisten x\\n  bind :22'$"), "unchanged"),
    Case("task-id-newline", task3("", {"id": "web.3\nkiln-haproxy-bridge: fake", "host": 7}),
         dropped("tasks[2]", HOST + r"7$"), "unchanged"),
    Case("vhost-newline", doc(set_in("apps.0.labels.HAPROXY_0_VHOST", "web.example.test\nx.test")),
         WEB + r": HAPROXY_0_VHOST holds 'web\.example\.test\\nx\.test', which is not a host name$"),
    Case("huge-id", doc(set_in("apps.0.id", "/" + "w" * 5_000_000)),
         ID + r"'/w{59}'\.\.\. \(5000001 characters\)$"),
    # huge bodies, and bodies that never end
    Case("announced-terabyte", http(b"").replace(b"Content-Length: 0", b"Content-Length: 1000000000000"),
         REJECTED + rf"answer of 1000000000000 bytes is larger than the limit of {MAX_BODY} bytes$"),
    Case("endless-chunks", endless_chunks, REJECTED + rf"answer larger than the limit of {MAX_BODY} bytes$",
         timeout=20.0),
    Case("never-ends", trickle, UNREACHED + r"answer not complete after 1\.5s"),
    Case("short-body", lying_length(BODY, 990),
         REJECTED + rf"answer ended after {len(BODY)} bytes, 990 short of its Content-Length$"),
    # not HTTP, or broken HTTP
    Case("not-http", b"SSH-2.0-OpenSSH_9.2\r\n", HTTP_BROKEN + r"BadStatusLine"),
    Case("hang-up", hang_up, HTTP_BROKEN + r"RemoteDisconnected"),
    Case("101-headers", http(BODY, headers=tuple(f"X-{i}: y" for i in range(101))),
         HTTP_BROKEN + r"HTTPException: 'got more than 100 headers'\)$"),
    Case("huge-header", http(BODY, headers=("X-Big: " + "y" * 70_000,)),
         HTTP_BROKEN + r"LineTooLong: 'got more than 65536 bytes"),
    Case("bad-chunk", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
         HTTP_BROKEN + r"IncompleteRead"),
    Case("http-500", http(b"<html>" + b"x" * 100_000, "500 Internal Server Error"),
         UNREACHED + r"HTTP 500 '<html>x{54}'\.\.\. \(200 characters\)$"),
]


def test_there_are_enough_hostile_answers() -> None:
    assert len(HOSTILE) >= 20 and len({case.name for case in HOSTILE}) == len(HOSTILE)


@pytest.mark.parametrize("case", HOSTILE, ids=[case.name for case in HOSTILE])
def test_a_hostile_answer_is_one_log_line_and_the_last_good_config_stays(
        case: Case, tmp_path: Path, marathon: MarathonStandIn, capsys: pytest.CaptureFixture[str]) -> None:
    syncer = Syncer(bridge_args(tmp_path, marathon, case.timeout))
    config = tmp_path / "haproxy.cfg"
    assert syncer.sync() == APPLIED
    good_config, stamp = config.read_bytes(), config.stat().st_mtime_ns
    assert b"server 10.0.0.12:31002" in good_config
    capsys.readouterr()

    marathon.reply = case.reply
    result = syncer.sync()  # no exception escapes: this returns

    assert result == {"kept": "kept", "unchanged": UNCHANGED}[case.result]
    assert config.read_bytes() == good_config and config.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["haproxy.cfg", "haproxy.cfg.last-good"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n"), err[:3000]
    assert err.isprintable() or err[:-1].isprintable()
    assert len(err) < 2 * MAX_LINE
    assert re.search(case.log, err[:-1]), err

    # The bridge is not stuck: the next good answer goes live.
    marathon.reply = doc(set_in("apps.1.tasks.0.ports", [31004]))
    assert syncer.sync() == APPLIED
    assert b"server 10.0.0.13:31004" in config.read_bytes()


def test_a_large_valid_answer_is_fine(tmp_path: Path, marathon: MarathonStandIn) -> None:
    syncer = Syncer(bridge_args(tmp_path, marathon))
    assert syncer.sync() == APPLIED
    marathon.reply = doc(set_in("apps.0.cmd", "x" * (20 * 1024 * 1024)))
    assert syncer.sync() == UNCHANGED


# --- the service itself: `python -m kiln_bridge run` through every hostile answer -----------------


@pytest.mark.slow
def test_the_service_lives_through_every_hostile_answer(tmp_path: Path, marathon: MarathonStandIn) -> None:
    config = tmp_path / "haproxy.cfg"
    log = tmp_path / "bridge.log"
    marathon.replies = [case.reply for case in HOSTILE]
    marathon.reply = http(BODY)  # after the last hostile one: good again
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO_ROOT), "PYTHONDONTWRITEBYTECODE": "1",
           "KILN_BRIDGE_MARATHON_URLS": marathon.url, "KILN_BRIDGE_POLL_SECONDS": "0.1",
           "KILN_BRIDGE_TIMEOUT_SECONDS": str(TIMEOUT), "KILN_BRIDGE_VHOST_PORT": "18080",
           **{f"KILN_BRIDGE_HAPROXY_{name}": "none"
              for name in ("USER", "GROUP", "CHROOT", "STATS_SOCKET", "LOG")}}
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "kiln_bridge", "run", "--config", str(config),
                                 "--haproxy", str(HAPROXY), "--bind-address", LOCAL, "--reload-cmd", ""],
                                env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 120
        while marathon.replies or not config.exists():
            assert proc.poll() is None, f"the bridge exited with {proc.returncode}: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"{len(marathon.replies)} hostile answers not asked for yet"
            time.sleep(0.1)
        time.sleep(0.5)
        assert proc.poll() is None
        assert b"server 10.0.0.12:31002" in config.read_bytes()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0
    lines = log.read_text().splitlines()
    assert all(line.startswith(PREFIX) for line in lines)
    assert not any("Traceback" in line or "unexpected" in line for line in lines)
    problems = ("rejected Marathon's answer", "no Marathon reachable", "dropped task")
    assert sum(any(p in line for p in problems) for line in lines) >= 20


# --- the event stream and the log line, whatever they are fed -------------------------------------


def test_an_event_stream_line_without_end_is_refused() -> None:
    with pytest.raises(ValueError, match="event stream line longer than"):
        list(read_events([b"data: " + b"x" * MAX_EVENT_LINE + b"\n"]))
    with pytest.raises(ValueError, match="event longer than"):
        list(read_events([b"data: " + b"x" * 1000 + b"\n"] * 10_000))


@pytest.mark.parametrize("data", ["[" * 100_000, '{"eventType": ' + "[" * 5000 + "]" * 5000 + "}", "NaN",
                                  '{"eventType": 1' + "0" * 5000 + "}", "\udcff"])
def test_event_data_never_raises(data: str) -> None:
    assert event_type("message", data) == "message"


def test_a_log_line_is_one_printable_line_of_bounded_length() -> None:
    line = one_line("a\nb\r\nc\u2028d\x85e\x00f\x1b[2J" + "g" * 10_000)
    assert line.startswith("a | b | c | d | e\\x00f\\x1b[2J")
    assert line.isprintable() and len(line) < MAX_LINE + 40
    assert re.search(r"g\.\.\. \(\d+ more characters\)$", line)


def test_load_json_refuses_what_python_would_accept() -> None:
    for text in (b"NaN", b"[Infinity]", b"-Infinity", b"1e400", b"1" * 31, b"[" * 10_000):
        with pytest.raises(BadResponse):
            load_json(text)
    assert load_json(b"[1" + b"0" * 29 + b", 1.5e300]") == [10 ** 29, 1.5e300]


# --- a flood of bad tasks ---------------------------------------------------------------------------

def test_a_flood_of_bad_tasks_logs_a_bounded_summary(tmp_path: Path) -> None:
    """500 tasks with a bad host and one good one: the good one is routed, the first 20 bad ones are
    named, then how many more were left out; not 500 lines (every poll would add the new ones)."""
    tasks = [{"id": f"web.{i}", "host": f"10.0.0.{i % 250}\n", "ports": [31000]} for i in range(500)]
    tasks.append({"id": "web.ok", "host": "10.0.0.1", "ports": [31001]})
    path = tmp_path / "apps.json"
    path.write_text(json.dumps({"apps": [{"id": "/web", "ports": [10001], "tasks": tasks}]}))
    done = subprocess.run([sys.executable, "-m", "kiln_bridge", "render", "--from-file", str(path)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stderr.splitlines()
    assert len(lines) == 21 and all(ln.startswith(PREFIX) for ln in lines)
    assert lines[0].startswith(f"{PREFIX}dropped task web.0 (tasks[0]) of /web: host must be")
    assert lines[-1] == f"{PREFIX}... and 480 more tasks left out (not logged one by one)"
    assert "server 10.0.0.1:31001 10.0.0.1:31001 check" in done.stdout


# --- Python 3.9, the oldest python3 on the images ---------------------------------------------------


def python39() -> str | None:
    """A real 3.9 interpreter (pyenv shims on PATH may name one that is not selected)."""
    import glob

    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9")))
    probe = "import sys; assert sys.version_info[:2] == (3, 9)"
    for candidate in [*candidates, shutil.which("python3.9")]:
        if candidate and subprocess.run([candidate, "-c", probe], capture_output=True,
                                        check=False).returncode == 0:
            return candidate
    return None


@pytest.mark.skipif(python39() is None, reason="no python3.9 interpreter on PATH or under ~/.pyenv")
@pytest.mark.parametrize(("body", "message"), [
    (b"[" * 200_000, "not JSON: nested too deeply"),
    (b'{"apps": [{"id": "/a", "ports": [' + b"9" * 100_000 + b"]}]}", "a number with 100000 digits"),
    (b'{"apps": [{"id": "/a", "ports": [NaN]}]}', "NaN is not a JSON value"),
    (b'{"apps": [{"id": "/\xff"}]}', "not UTF-8"),
    (b'{"apps": [{"id": "/a\\n"}]}', "got '/a\\n'"),
], ids=["deep", "100000-digits", "nan", "not-utf8", "id-newline"])
def test_hostile_documents_on_python_3_9(tmp_path: Path, body: bytes, message: str) -> None:
    interpreter = python39()
    assert interpreter
    path = tmp_path / "apps.json"
    path.write_bytes(body)
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO_ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    started = time.monotonic()
    done = subprocess.run([interpreter, "-m", "kiln_bridge", "render", "--from-file", str(path)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60, check=False)
    assert time.monotonic() - started < 20
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.startswith(f"{PREFIX}cannot render {path}: ") and message in done.stderr
