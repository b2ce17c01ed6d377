"""A finished QEMU bake made by hand: build/artifacts/<target>-qemu/ as `invoke build` leaves it,
around a given qcow2, for the tests of what reads a bake (the VirtualBox conversion).

The libvirt box is packed by kiln's own publish step (kiln.image.publish.libvirt_box), so the
image sits inside it exactly as in a real bake. Shared by tests/unit/test_virtualbox.py,
tests/unit/test_export.py and tests/integration/test_virtualbox_boot.py (tests/ is on sys.path
through tests/conftest.py).
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from kiln.image.artifacts import box_catalog, sha256_of, write_json
from kiln.image.publish import libvirt_box

BOX_NAME = "kiln/mesos-debian-12"
VAGRANTFILE = 'Vagrant.configure("2") do |config|\nend\n'


def fake_bake(artifacts: Path, qcow2: Path, components: dict[str, object], *, target: str = "debian-12",
              version: str = "0.1.0.20261201093000") -> Path:
    """The bake's directory: its box (holding `qcow2`), image manifest, box catalog and metadata."""
    directory = artifacts / f"{target}-qemu"
    directory.mkdir(parents=True)
    box = libvirt_box(qcow2, VAGRANTFILE, directory / f"{target}-qemu.box")
    write_json(directory / "image-manifest.json", {"target": target, "components": components})
    write_json(directory / "box-catalog.json",
               box_catalog(BOX_NAME, version, "libvirt", box, sha256_of(box)))
    write_json(directory / "kiln-metadata.json",
               {"artifacts": {box.name: {"sha256": sha256_of(box), "bytes": box.stat().st_size}}})
    return directory


def small_qcow2(directory: Path) -> Path:
    """A 64 MiB qcow2 with a few MiB of data in it (qemu-img makes it)."""
    raw = directory / "small.raw"
    with raw.open("wb") as fh:
        fh.truncate(64 << 20)
        for n in range(0, 64, 7):
            fh.seek(n << 20)
            fh.write(hashlib.sha256(str(n).encode()).digest() * 4096)
    qcow2 = directory / "small.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)], check=True)
    raw.unlink()
    return qcow2
