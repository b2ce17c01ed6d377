"""Turning the top layer into what users take: a libvirt Vagrant box whose box.img is the image,
flattened and compressed once into a standalone qcow2. The box is an uncompressed tar (gzip over
a compressed qcow2 would only cost time), and the qcow2 is kept there only: QEMU reads it in
place (kiln.image.boximage) and `tar -xf <box> box.img` gives the file."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

from kiln.image.boximage import IMAGE_MEMBER
from kiln.runner import run, which

QEMU_IMG_HINT = "apt-get install qemu-utils"


def flatten(top: Path, out: Path, *, log: Path | None = None) -> Path:
    """top's whole chain as one compressed qcow2 with no backing file."""
    qemu_img = which("qemu-img", QEMU_IMG_HINT)
    run([qemu_img, "convert", "-O", "qcow2", "-c", str(top), str(out)], step="qemu-img convert (publish)",
        log=log, quiet=True, timeout=3600)
    return out


def virtual_size(image: Path) -> int:
    info = run([which("qemu-img", QEMU_IMG_HINT), "info", "--output=json", str(image)],
               step="qemu-img info", quiet=True, timeout=120).output
    return int(json.loads(info)["virtual-size"])


def publish_box(top: Path, vagrantfile: str, out: Path, *, log: Path | None = None) -> Path:
    """`top`'s chain flattened into the box at `out`, the only copy of the published image: the
    qcow2 is written beside `out` under a hidden name, packed, and removed."""
    image = out.with_name(f".{out.name}.img")
    try:
        flatten(top, image, log=log)
        return libvirt_box(image, vagrantfile, out)
    finally:
        image.unlink(missing_ok=True)


def libvirt_box(image: Path, vagrantfile: str, out: Path) -> Path:
    """A box for the libvirt provider: metadata.json, Vagrantfile and box.img (the qcow2)."""
    gib = -(-virtual_size(image) // 2**30)
    meta = json.dumps({"provider": "libvirt", "format": "qcow2", "virtual_size": gib}, indent=2) + "\n"
    partial = out.with_name(f".{out.name}.partial")
    try:
        with tarfile.open(partial, "w") as tar:
            for name, text in (("metadata.json", meta), ("Vagrantfile", vagrantfile)):
                info = tarfile.TarInfo(name)
                data = text.encode()
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                tar.addfile(info, _bytes(data))
            tar.add(image, arcname=IMAGE_MEMBER, filter=_plain)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mode = 0o644
    return info


def _bytes(data: bytes):  # type: ignore[no-untyped-def]
    import io

    return io.BytesIO(data)
