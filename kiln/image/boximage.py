"""The qcow2 inside a published libvirt box, read where it lies.

A libvirt box is an uncompressed tar and its `box.img` member is the published image: one
standalone, compressed qcow2. kiln keeps that image once, inside the box. QEMU reads a tar
member in place when a `raw` layer with the member's offset and size sits under the qcow2
driver, so the boot test and the VirtualBox conversion use the box directly, and nothing is
extracted. `find_published` finds a target's published box and checks it against its bake's
metadata first. For the bare image file, `invoke export` (kiln.image.export) copies it out.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.errors import UserError
from kiln.image.artifacts import CATALOG, GUEST_MANIFEST, METADATA, box_version, sha256_of

IMAGE_MEMBER = "box.img"
SOURCE_BUILDER = "qemu"  # the builder whose box holds the image


@dataclass(frozen=True)
class BoxImage:
    """Where the qcow2 lies inside a box: `size` bytes from `offset` of `box` (an absolute path)."""

    box: Path
    offset: int
    size: int

    @property
    def name(self) -> str:
        return f"{self.box.name}:{IMAGE_MEMBER}"

    @property
    def qemu_filename(self) -> str:
        """The image as a QEMU/qemu-img filename (a `json:` pseudo-protocol spec)."""
        spec = {"driver": "qcow2",
                "file": {"driver": "raw", "offset": self.offset, "size": self.size,
                         "file": {"driver": "file", "filename": str(self.box)}}}
        return "json:" + json.dumps(spec, separators=(",", ":"))

    def blocks(self, chunk: int = 4 << 20) -> Iterator[bytes]:
        """The image's bytes, read in place in blocks of at most `chunk`."""
        left = self.size
        with self.box.open("rb") as fh:
            fh.seek(self.offset)
            while left > 0:
                block = fh.read(min(chunk, left))
                if not block:
                    raise UserError(f"{self.box} ends inside {IMAGE_MEMBER}: the box is truncated")
                yield block
                left -= len(block)

    def sha256(self) -> str:
        """sha256 of the image's bytes: what `tar -xf <box> box.img` would give."""
        digest = hashlib.sha256()
        for block in self.blocks():
            digest.update(block)
        return digest.hexdigest()


def locate(box: Path) -> BoxImage:
    """The image inside `box`; a clear error when the box is unreadable or holds no plain box.img."""
    box = box.resolve()
    try:
        with tarfile.open(box, "r:") as tar:
            member = tar.getmember(IMAGE_MEMBER)
    except KeyError:
        raise UserError(f"{box} holds no {IMAGE_MEMBER}: not a libvirt box") from None
    except (OSError, tarfile.TarError) as exc:
        raise UserError(f"{box} is not a readable uncompressed box: {exc}") from None
    if not member.isreg() or member.issparse():
        raise UserError(f"{box}: {IMAGE_MEMBER} is not a plain file inside the tar")
    if member.offset_data + member.size > box.stat().st_size:
        raise UserError(f"{box} ends inside {IMAGE_MEMBER}: the box is truncated")
    return BoxImage(box, member.offset_data, member.size)


def qemu_filename(image: Path | BoxImage) -> str:
    """What qemu-img and QEMU take for `image`: a qcow2 file's path, or a box member's spec."""
    return image.qemu_filename if isinstance(image, BoxImage) else str(image.resolve())


# -- the published bake of a target, checked against its metadata ----------------------------------

@dataclass(frozen=True)
class Published:
    """A published QEMU bake: the image inside its libvirt box, the box's checksum, box version and
    components."""

    directory: Path
    image: BoxImage
    sha256: str  # of the libvirt box
    version: str
    components: Mapping[str, Any]
    manifest: Path | None


def find_published(artifacts: Path, target: str, project_version: str = "0") -> Published:
    """The published QEMU bake of `target`, its libvirt box checked against its metadata."""
    directory = artifacts / f"{target}-{SOURCE_BUILDER}"
    box = directory / f"{target}-{SOURCE_BUILDER}.box"
    hint = f"run `invoke build --target {target} --builder qemu` first"
    if not box.is_file():
        raise UserError(f"no QEMU bake of {target}: {box} is missing", hint)
    recorded = _recorded_sha256(directory / METADATA, box.name)
    if recorded is None:
        raise UserError(f"{directory / METADATA} does not list {box.name}: not a finished bake", hint)
    actual = sha256_of(box)
    if actual != recorded:
        raise UserError(f"{box} does not match its bake (sha256 {actual[:12]}..., recorded "
                        f"{recorded[:12]}...): changed after the build?", hint)
    image = locate(box)
    manifest = directory / GUEST_MANIFEST
    components = _read_json(manifest).get("components", {}) if manifest.is_file() else {}
    version = _catalog_version(directory / CATALOG) or box_version(project_version, box.stat().st_mtime)
    return Published(directory, image, actual, version, components, manifest if manifest.is_file() else None)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _recorded_sha256(metadata: Path, name: str) -> str | None:
    entry = _read_json(metadata).get("artifacts", {}).get(name)
    return entry.get("sha256") if isinstance(entry, dict) else None


def _catalog_version(catalog: Path) -> str | None:
    versions = _read_json(catalog).get("versions") or [{}]
    version = versions[0].get("version") if isinstance(versions[0], dict) else None
    return str(version) if version else None
