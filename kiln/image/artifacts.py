"""What a finished build leaves behind: checksums, kiln metadata, a Vagrant box catalog.

Everything is written into the staging directory first; `publish` renames it into
place as the last step, so a directory under build/artifacts/ without a leading dot is
always complete.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from kiln.fileutil import write_atomic

METADATA = "kiln-metadata.json"
CATALOG = "box-catalog.json"
GUEST_MANIFEST = "image-manifest.json"


def sha256_of(path: Path, chunk: int = 4 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def artifact_files(staging: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every artifact file (qcow2, box, ovf, manifests)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        rel = str(path.relative_to(staging))
        if rel in (METADATA, CATALOG):
            continue
        out[rel] = {"sha256": sha256_of(path), "bytes": path.stat().st_size}
    return out


def box_version(project_version: str, when: float | None = None) -> str:
    """project version + UTC build time: every build is a new box version, so Vagrant adds a
    rebuilt box instead of booting the stale one it already has under the same version."""
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(time.time() if when is None else when))
    return f"{project_version}.{stamp}"


def box_catalog(box_name: str, version: str, provider: str, box: Path, checksum: str) -> dict[str, Any]:
    """The JSON `vagrant box add <catalog.json>` and `vagrant box outdated` understand."""
    return {
        "name": box_name,
        "description": "kiln Mesos image",
        "versions": [{
            "version": version,
            "providers": [{
                "name": provider,
                "url": box.resolve().as_uri(),
                "checksum_type": "sha256",
                "checksum": checksum,
            }],
        }],
    }


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def publish(staging: Path, final: Path) -> Path:
    """Swap the finished staging directory into place; the old artifact goes last."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final
