"""invoke pin against a checksum file served on 127.0.0.1 (a stand-in for the image mirror)."""

from __future__ import annotations

import functools
import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.errors import UserError
from kiln.image.pin import checksum_from_listing, pin_targets

SHA = "a" * 64


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "mirror"
    root.mkdir()
    listing = f"{'b' * 64} *other.img\n{SHA} *ubuntu-24.04-server-cloudimg-amd64.img\n"
    (root / "SHA256SUMS").write_text(listing)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


def test_listing_formats() -> None:
    assert checksum_from_listing(f"{SHA}  x.img\n", "x.img") == SHA
    assert checksum_from_listing(f"SHA256 (x.img) = {SHA}\n", "x.img") == SHA
    assert checksum_from_listing(f"{SHA}  y.img\n", "x.img") is None


def test_pin_writes_the_checksum_into_the_config(tmp_path: Path, mirror: str) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"targets": {"ubuntu-24.04": {"image": {
        "url": f"{mirror}/ubuntu-24.04-server-cloudimg-amd64.img",
        "checksum_url": f"{mirror}/SHA256SUMS", "sha256": ""}}, "debian-12": {"base": {}}}}))
    assert pin_targets(config) == {"ubuntu-24.04": ("", SHA)}
    assert json.loads(config.read_text())["targets"]["ubuntu-24.04"]["image"]["sha256"] == SHA


def test_pin_errors_leave_the_config_alone(tmp_path: Path, mirror: str) -> None:
    config = tmp_path / "config.json"
    original = json.dumps({"targets": {"t-1": {"image": {
        "url": f"{mirror}/missing.img", "checksum_url": f"{mirror}/SHA256SUMS", "sha256": ""}}}})
    config.write_text(original)
    with pytest.raises(UserError, match=r"lists no sha256 for missing\.img"):
        pin_targets(config)
    with pytest.raises(UserError, match="has no downloadable image"):
        pin_targets(config, ["nope"])
    assert config.read_text() == original


def test_a_missing_listing_or_a_refused_connection_is_one_error(tmp_path: Path, mirror: str) -> None:
    config = tmp_path / "config.json"
    original = json.dumps({"targets": {"t-1": {"image": {
        "url": f"{mirror}/a.img", "checksum_url": f"{mirror}/NO-SUCH-FILE", "sha256": ""}}}})
    config.write_text(original)
    with pytest.raises(UserError, match=r"cannot fetch .*NO-SUCH-FILE: 404"):
        pin_targets(config)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config.write_text(original.replace(mirror, f"http://127.0.0.1:{port}"))
    with pytest.raises(UserError, match=r"cannot fetch http://127\.0\.0\.1"):
        pin_targets(config)
    assert "sha256\": \"\"" in config.read_text()
