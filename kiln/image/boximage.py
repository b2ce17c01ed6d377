"""The qcow2 inside a published libvirt box, read where it lies.

A libvirt box is an uncompressed tar and its `box.img` member is the published image: one
standalone, compressed qcow2. kiln keeps that image once, inside the box. QEMU reads a tar
member in place when a `raw` layer with the member's offset and size sits under the qcow2
driver, so the boot test and the VirtualBox conversion use the box directly, and nothing is
extracted. A user who wants the bare image file runs `tar -xf <box> box.img` (a plain copy:
the tar is not compressed).
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from kiln.errors import UserError

IMAGE_MEMBER = "box.img"


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

    def sha256(self, chunk: int = 4 << 20) -> str:
        """sha256 of the image's bytes: what `tar -xf <box> box.img` would give."""
        digest = hashlib.sha256()
        left = self.size
        with self.box.open("rb") as fh:
            fh.seek(self.offset)
            while left > 0:
                block = fh.read(min(chunk, left))
                if not block:
                    raise UserError(f"{self.box} ends inside {IMAGE_MEMBER}: the box is truncated")
                digest.update(block)
                left -= len(block)
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
