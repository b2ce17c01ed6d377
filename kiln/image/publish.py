"""Turning the top layer into what users take: a standalone qcow2 (flattened and compressed once)
and a libvirt Vagrant box holding that same file (an uncompressed tar: the qcow2 inside is already
compressed, so gzip would only cost time)."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

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
            tar.add(image, arcname="box.img", filter=_plain)
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
