"""A package cache for builds: an HTTP proxy on 127.0.0.1 that build VMs reach through QEMU's user
network (10.0.2.2), keeping every package file it fetched under <cache>/apt/ for later builds.

Package files (pool/*.deb, by-hash/...) never change under one name, so they are served from the
cache once fetched; index files (InRelease, Packages, ...) change and always go upstream. Only
the hosts of the configured package sources are proxied: the build VM cannot use it to reach
anything else. The proxy runs in a thread of kiln itself, so it ends with the build however the
build ends, and the image never keeps its setting: apt gets it per command (kiln.env's
KILN_APT_PROXY, read by provision/lib.sh), not in a file.

(apt-cacher-ng from Debian does the same job; it cannot bind a socket on hosts whose resolver
has no configured address for AI_ADDRCONFIG, such as gVisor sandboxes, so kiln carries this.)
"""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import shutil
import socketserver
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

GUEST_HOST = "10.0.2.2"  # the host, as QEMU's user network shows it to the guest
IMMUTABLE = re.compile(r"(\.u?deb|\.ddeb|/by-hash/[A-Za-z0-9]+/[0-9a-f]+)\Z")
CHUNK = 1 << 16
TIMEOUT = 60


@dataclass
class Stats:
    fetched_bytes: int = 0  # from upstream (what a build downloaded)
    cached_bytes: int = 0  # served from the cache
    refused: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, *, fetched: int = 0, cached: int = 0) -> None:
        with self.lock:
            self.fetched_bytes += fetched
            self.cached_bytes += cached


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, cache: Path, hosts: frozenset[str], stats: Stats) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.cache, self.hosts, self.stats = cache, hosts, stats
        self.session = requests.Session()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_CONNECT(self) -> None:
        self._refuse(405, "kiln's package cache proxies plain-http package sources only")

    def do_HEAD(self) -> None:
        self._forward(head=True)

    def do_GET(self) -> None:
        self._forward(head=False)

    def _refuse(self, code: int, why: str) -> None:
        self.server.stats.refused.append(f"{self.command} {self.path}: {why}")
        body = why.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _forward(self, *, head: bool) -> None:
        parts = urlsplit(self.path)
        if parts.scheme != "http" or not parts.hostname:
            return self._refuse(400, "an absolute http:// URL is expected (use this as an HTTP proxy)")
        if parts.hostname not in self.server.hosts:
            return self._refuse(403, f"{parts.hostname} is not a configured package source")
        if ".." in parts.path.split("/"):
            return self._refuse(400, "no '..' in package paths")
        cached = self.server.cache / parts.hostname / parts.path.lstrip("/")
        if IMMUTABLE.search(parts.path) and cached.is_file():
            return self._send_file(cached, head)
        try:
            upstream = self.server.session.get(self.path, stream=True, timeout=TIMEOUT,
                                               headers={"User-Agent": "kiln-package-cache"})
        except requests.RequestException as exc:
            return self._refuse(502, f"upstream: {type(exc).__name__}")
        with upstream:
            self.send_response(upstream.status_code)
            for name in ("Content-Type", "Content-Length", "Last-Modified", "ETag"):
                if name in upstream.headers:
                    self.send_header(name, upstream.headers[name])
            if "Content-Length" not in upstream.headers:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if head:
                return None
            keep = upstream.status_code == 200 and IMMUTABLE.search(parts.path) is not None
            self._relay(upstream.iter_content(CHUNK), cached if keep else None)
        return None

    def _relay(self, chunks: Iterable[bytes], keep: Path | None) -> None:
        out = None
        if keep is not None:
            keep.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{keep.name}.", dir=keep.parent)
            out = os.fdopen(fd, "wb")
        try:
            for chunk in chunks:
                self.server.stats.add(fetched=len(chunk))  # counted before the client can see it
                if out is not None:
                    out.write(chunk)
                self.wfile.write(chunk)
            if out is not None:
                out.close()
                os.replace(tmp, keep)  # complete files only: a cut download is never served
                out = None
        finally:
            if out is not None:
                out.close()
                Path(tmp).unlink(missing_ok=True)

    def _send_file(self, path: Path, head: bool) -> None:
        size = path.stat().st_size
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if not head:
            self.server.stats.add(cached=size)
            with path.open("rb") as fh:
                shutil.copyfileobj(fh, self.wfile, CHUNK)


@dataclass(frozen=True)
class Proxy:
    port: int
    stats: Stats

    @property
    def guest_url(self) -> str:
        return f"http://{GUEST_HOST}:{self.port}/"

    @property
    def host_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


def hosts_of(source_lines: Iterable[str]) -> frozenset[str]:
    """The host names of one-line apt sources ('deb [opts] URL suite comps')."""
    hosts = set()
    for line in source_lines:
        for word in line.split():
            if word.startswith("http://"):
                hosts.add(urlsplit(word).hostname or "")
    return frozenset(h for h in hosts if h)


@contextlib.contextmanager
def running(cache: Path, hosts: Iterable[str]) -> Iterator[Proxy]:
    """The proxy, serving until the block ends."""
    cache.mkdir(parents=True, exist_ok=True)
    stats = Stats()
    server = _Server(cache, frozenset(hosts), stats)
    thread = threading.Thread(target=server.serve_forever, name="kiln-package-cache", daemon=True)
    thread.start()
    try:
        yield Proxy(server.server_address[1], stats)
    finally:
        server.shutdown()
        server.server_close()
        server.session.close()
        thread.join(timeout=10)
