"""Stream-optimized VMDKs from qcow2 images with qemu-img, made reproducible.

`qemu-img convert -O vmdk -o subformat=streamOptimized` is deterministic except for the
descriptor's content id (CID), which QEMU draws at random (and prints without leading zeros,
so even its length varies), and the extent line, which names the output file. The file is
always written under the name it has in the box, and the CID line is replaced by one derived
from a seed; the descriptor is rewritten in place, padded to its fixed-size region, so the
same image gives the same bytes. VirtualBox only compares a CID with a child's parentCID;
this disk has no parent (parentCID=ffffffff).

Layout (VMware Virtual Disk Format 5.0, "Hosted Sparse Extent Header"): the magic "KDMV",
then little-endian fields; capacity (sectors) at byte 12, descriptorOffset and
descriptorSize (sectors) at bytes 28 and 36. The descriptor is text padded with NULs.
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from kiln.errors import KilnError
from kiln.image.boximage import BoxImage, qemu_filename
from kiln.runner import run, which

MAGIC = b"KDMV"
SECTOR = 512
NO_PARENT = "ffffffff"
QEMU_IMG_HINT = "apt-get install qemu-utils"
CID_RE = re.compile(rb"^CID=[0-9a-fA-F]{1,8}$", re.MULTILINE)


@dataclass(frozen=True)
class VmdkInfo:
    capacity: int  # bytes of the virtual disk
    descriptor: str


def _header(fh: BinaryIO) -> tuple[int, int, int]:
    head = fh.read(64)
    if len(head) < 44 or head[:4] != MAGIC:
        raise KilnError("not a sparse VMDK (no KDMV header)")
    capacity, = struct.unpack_from("<Q", head, 12)
    desc_offset, desc_size = struct.unpack_from("<QQ", head, 28)
    if desc_offset == 0 or desc_size == 0:
        raise KilnError("VMDK has no embedded descriptor")
    return capacity, desc_offset * SECTOR, desc_size * SECTOR


def read_info(path: Path) -> VmdkInfo:
    with path.open("rb") as fh:
        capacity, offset, size = _header(fh)
        fh.seek(offset)
        text = fh.read(size).rstrip(b"\0").decode("ascii", errors="replace")
    return VmdkInfo(capacity * SECTOR, text)


def cid_for(seed: str) -> str:
    """8 hex digits from `seed`; never QEMU's "no parent" marker."""
    digest = hashlib.sha256(f"{seed}\0vmdk-cid".encode()).hexdigest()
    return next(digest[i:i + 8] for i in range(0, 56, 8) if digest[i:i + 8] != NO_PARENT)


def set_cid(path: Path, cid: str) -> None:
    """Replace the descriptor's CID line in place; the descriptor keeps its region."""
    if not re.fullmatch(r"[0-9a-f]{8}", cid):
        raise ValueError(f"CID {cid!r}: expected 8 lower-case hex digits")
    with path.open("r+b") as fh:
        _, offset, size = _header(fh)
        fh.seek(offset)
        descriptor = fh.read(size)
        text = descriptor.split(b"\0", 1)[0]
        new, count = CID_RE.subn(b"CID=" + cid.encode("ascii"), text, count=1)
        if count != 1:
            raise KilnError(f"{path}: no CID line in the VMDK descriptor")
        if len(new) > size:
            raise KilnError(f"{path}: the VMDK descriptor does not fit its region")
        fh.seek(offset)
        fh.write(new.ljust(size, b"\0"))


def convert(qcow2: Path | BoxImage, out: Path, *, seed: str, log: Path | None = None) -> VmdkInfo:
    """qcow2 (a file, or a libvirt box's image) -> stream-optimized VMDK at `out` (its name is
    recorded inside the file)."""
    out.unlink(missing_ok=True)
    run([which("qemu-img", QEMU_IMG_HINT), "convert", "-f", "qcow2", "-O", "vmdk",
         "-o", "subformat=streamOptimized", qemu_filename(qcow2), str(out)],
        step=f"qemu-img convert {qcow2.name} -> {out.name}", log=log, quiet=True)
    set_cid(out, cid_for(seed))
    info = read_info(out)
    if 'createType="streamOptimized"' not in info.descriptor:
        raise KilnError(f"{out}: qemu-img did not write a streamOptimized VMDK")
    return info
