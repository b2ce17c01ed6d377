"""`invoke pin`: fetch published checksum files and pin image sha256 values in config.json.

Run on a connected machine; offline builds and `packer validate` then use literal
checksums instead of fetching checksum files.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import requests

from kiln.errors import UserError
from kiln.fileutil import write_atomic

SHA256 = re.compile(r"\b([0-9a-f]{64})\b")


def checksum_from_listing(listing: str, filename: str) -> str | None:
    """Find filename's sha256 in a SHA256SUMS-style listing (GNU or BSD format)."""
    for line in listing.splitlines():
        line = line.strip()
        bsd = re.fullmatch(r"SHA256 \((.+)\) = ([0-9a-f]{64})", line)
        if bsd and bsd.group(1) == filename:
            return bsd.group(2)
        parts = line.split()
        if len(parts) >= 2 and SHA256.fullmatch(parts[0]) and parts[-1].lstrip("*") == filename:
            return parts[0]
    return None


MAX_LISTING = 16 * 2**20  # a checksum listing; anything bigger is not one


def fetch(url: str, timeout: float = 30.0) -> str:
    """A checksum listing's text; any failure (network, HTTP status, size) is one UserError."""
    hint = "run `invoke pin` on a machine that reaches the image mirror"
    try:
        with requests.get(url, timeout=timeout, stream=True) as resp:
            resp.raise_for_status()
            body = resp.raw.read(MAX_LISTING + 1, decode_content=True)
    except requests.RequestException as exc:
        raise UserError(f"cannot fetch {url}: {exc}", hint) from None
    if len(body) > MAX_LISTING:
        raise UserError(f"{url} is larger than {MAX_LISTING // 2**20} MiB: not a checksum listing",
                        "check targets.<name>.image.checksum_url")
    return body.decode("utf-8", errors="replace")


def pin_targets(config_file: Path, targets: Sequence[str] = ()) -> dict[str, tuple[str, str]]:
    """Update targets.<name>.image.sha256 in config_file; returns {target: (old, new)}."""
    data = json.loads(config_file.read_text(encoding="utf-8"))
    changes: dict[str, tuple[str, str]] = {}
    names = list(targets) or [n for n, t in data["targets"].items() if "image" in t]
    for name in names:
        entry = data["targets"].get(name)
        if entry is None or "image" not in entry:
            raise UserError(f"target {name!r} has no downloadable image to pin")
        image = entry["image"]
        filename = os.path.basename(urlparse(image["url"]).path)
        sha = checksum_from_listing(fetch(image["checksum_url"]), filename)
        if sha is None:
            raise UserError(f"{image['checksum_url']} lists no sha256 for {filename}",
                            f"check targets.{name}.image.url and checksum_url")
        changes[name] = (image["sha256"], sha)
        image["sha256"] = sha
    write_atomic(config_file, json.dumps(data, indent=2) + "\n")
    return changes
