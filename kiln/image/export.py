"""`invoke export`: a target's published image as a file of its own, for tools other than
Vagrant (virt-install, an OpenStack image upload, a cloud's disk import).

The image is kept once, inside the published libvirt box (kiln.image.boximage). Export checks
that box against its bake's metadata, then writes the image: `qcow2` is a byte copy of the box's
member (a standalone, compressed qcow2), `raw` is converted by qemu-img (sparse where the disk is
empty). The file appears only when complete: it is written under a temporary name beside the
destination and renamed into place; an error or an interrupt removes the temporary file. An
existing destination is refused unless `force`.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from kiln.errors import UserError
from kiln.image.boximage import SOURCE_BUILDER, BoxImage, find_published
from kiln.runner import run, which

FORMATS = ("qcow2", "raw")


@dataclass(frozen=True)
class Exported:
    path: Path
    format: str
    bytes: int  # on disk (a raw image is sparse)
    sha256: str  # of the qcow2 as it lies in the box; for raw, of what was converted
    seconds: float


def default_output(exports: Path, target: str, fmt: str) -> Path:
    return exports / f"{target}-{SOURCE_BUILDER}.{'img' if fmt == 'raw' else fmt}"


def check_request(fmt: str, output: Path, force: bool) -> None:
    """Everything about the request that can be refused before the box is read."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if output.is_dir():
        raise UserError(f"--output {output}: is a directory", "name the image file to write")
    if not output.parent.is_dir() and output.parent.exists():
        raise UserError(f"--output {output}: {output.parent} is not a directory")
    if output.exists() and not force:
        raise UserError(f"--output {output}: exists", "pass --force to replace it, or name another file")


def export_image(artifacts: Path, target: str, fmt: str, output: Path, *, force: bool = False,
                 log: Path | None = None) -> Exported:
    """Write the published image of `target` to `output` in `fmt`; see the module doc."""
    check_request(fmt, output, force)
    started = time.monotonic()
    image = find_published(artifacts, target).image
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial-{os.getpid()}")
    try:
        if fmt == "qcow2":
            digest = _copy(image, partial)
        else:
            digest = image.sha256()
            run([which("qemu-img", "apt-get install qemu-utils"), "convert", "-O", "raw",
                 image.qemu_filename, str(partial)], step="qemu-img convert (export)", log=log, quiet=True,
                timeout=3600)
        os.chmod(partial, 0o644)
        os.replace(partial, output)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return Exported(output, fmt, output.stat().st_blocks * 512, digest, round(time.monotonic() - started, 1))


def _copy(image: BoxImage, to: Path) -> str:
    """The box's image bytes into `to` (flushed to disk); their sha256."""
    digest = hashlib.sha256()
    with to.open("wb") as dst:
        for block in image.blocks():
            digest.update(block)
            dst.write(block)
        dst.flush()
        os.fsync(dst.fileno())
    return digest.hexdigest()
