"""The layer store: complete layers only, what an interrupted build left is swept, and pruning never
takes a parent of a layer that stays. The package cache proxy: files kept once, hosts limited
(its upstream here is a local HTTP server on 127.0.0.1, the only host it may proxy)."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.errors import UserError
from kiln.image import aptcache
from kiln.image.store import DISK, META, Layer, Store, chain, parse_size, prune_plan


def _layer(store: Store, key: str, parent: str = "", size: int = 1000, used: float = 0.0) -> Layer:
    work = store.staging(key)
    (work / DISK).write_bytes(b"x" * size)
    layer = store.commit(work, key, {"name": key, "parent": parent})
    meta = {**layer.meta, "last_used": used}
    (layer.directory / META).write_text(json.dumps(meta))
    return Layer(key, layer.directory, meta)


def test_a_layer_exists_only_once_its_record_is_written(tmp_path: Path) -> None:
    store = Store(tmp_path)
    work = store.staging("k1")
    (work / DISK).write_bytes(b"disk")
    assert store.get("k1") is None
    store.commit(work, "k1", {"name": "system", "parent": "k0"})
    assert store.get("k1") is not None and store.get("k1").parent == "k0"  # type: ignore[union-attr]
    (store.path("k2")).mkdir()
    (store.path("k2") / DISK).write_bytes(b"half")  # a killed build: disk but no record
    assert store.get("k2") is None
    interrupted = store.staging("k3")
    assert sorted(p.name for p in store.sweep()) == sorted(["k2", interrupted.name])
    assert [layer.key for layer in store.layers()] == ["k1"]


def test_chain_and_prune_keep_parents_of_what_stays(tmp_path: Path) -> None:
    store = Store(tmp_path)
    base = _layer(store, "base", used=1)
    sys_old = _layer(store, "sys-old", "base", used=2)
    _layer(store, "pay-old", "sys-old", used=3)
    _layer(store, "sys-new", "base", used=4)
    _layer(store, "pay-new", "sys-new", used=5)
    assert [layer.key for layer in chain(store, "pay-new")] == ["pay-new", "sys-new", "base"]
    doomed = {layer.key for layer in prune_plan(store.layers(), keep=1)}
    assert doomed == {"pay-old", "sys-old"}
    assert "base" not in doomed
    pinned = {layer.key for layer in prune_plan(store.layers(), keep=1, pinned=["pay-old"])}
    assert pinned == set()
    total = sum(layer.size for layer in store.layers())
    sizes = {layer.key for layer in prune_plan(store.layers(), max_size=total - 1500)}
    assert sizes == {"pay-old", "sys-old"}  # oldest tops first, then their parents
    assert base.key not in sizes and sys_old.key in sizes


def test_sizes_parse_or_fail_with_the_option_named() -> None:
    assert parse_size("500M") == 500 * 2**20
    assert parse_size("1.5GiB") == int(1.5 * 2**30)
    assert parse_size("2048") == 2048
    with pytest.raises(UserError, match="--max-size 'lots'"):
        parse_size("lots")


class _Upstream(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    root = tmp_path / "mirror"
    (root / "debian/pool/main/h").mkdir(parents=True)
    (root / "debian/dists/bookworm").mkdir(parents=True)
    (root / "debian/pool/main/h/hello_1_amd64.deb").write_bytes(b"D" * 5000)
    (root / "debian/dists/bookworm/InRelease").write_text("release 1")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: _Upstream(*a, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], root
    finally:
        server.shutdown()
        server.server_close()


def _curl(proxy: aptcache.Proxy, url: str) -> tuple[str, str]:
    done = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "-x", proxy.host_url, url],
                          capture_output=True, text=True, timeout=30, check=False)
    body, _, code = done.stdout.rpartition("\n")
    return code, body


def test_the_package_cache_keeps_package_files_and_passes_index_files(tmp_path: Path, upstream) -> None:
    port, root = upstream
    base = f"http://127.0.0.1:{port}/debian"
    with aptcache.running(tmp_path / "apt", {"127.0.0.1"}) as proxy:
        assert _curl(proxy, f"{base}/pool/main/h/hello_1_amd64.deb") == ("200", "D" * 5000)
        assert proxy.stats.fetched_bytes == 5000
        kept = tmp_path / "apt" / "127.0.0.1" / "debian/pool/main/h/hello_1_amd64.deb"
        deadline = time.monotonic() + 5
        while not kept.exists() and time.monotonic() < deadline:  # renamed just after the last byte
            time.sleep(0.05)
        (root / "debian/pool/main/h/hello_1_amd64.deb").unlink()  # upstream gone: the cache answers
        assert _curl(proxy, f"{base}/pool/main/h/hello_1_amd64.deb") == ("200", "D" * 5000)
        assert proxy.stats.cached_bytes == 5000
        (root / "debian/dists/bookworm/InRelease").write_text("release 2")
        assert _curl(proxy, f"{base}/dists/bookworm/InRelease") == ("200", "release 2")
        assert _curl(proxy, "http://example.org/")[0] == "403"
        assert proxy.stats.refused == [
            "GET http://example.org/: example.org is not a configured package source"]
    assert aptcache.hosts_of(["deb [signed-by=/k.asc] http://deb.debian.org/debian bookworm main",
                              "deb https://x.example/apt stable main"]) == {"deb.debian.org"}


def test_the_proxy_thread_ends_with_the_block(tmp_path: Path) -> None:
    with aptcache.running(tmp_path / "apt", set()) as proxy:
        port = proxy.port
    time.sleep(0.1)
    assert not any(t.name == "kiln-package-cache" and t.is_alive() for t in threading.enumerate())
    done = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-x",
                           f"http://127.0.0.1:{port}/", "http://127.0.0.1/"], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.stdout == "000"
