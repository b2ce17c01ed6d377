"""A Vagrant box for the `virtualbox` provider, made from the QEMU bake without VirtualBox.

The qcow2 that `invoke build --builder qemu` baked, checked in the build and published inside
the libvirt box in build/artifacts/<target>-qemu/ is converted, not rebuilt: the box's checksum
is compared with that bake's kiln-metadata.json, its image is read in place
(kiln.image.boximage) and becomes a stream-optimized VMDK (kiln.image.vmdk), gets an
OVF descriptor as VirtualBox exports them (kiln.image.ovf), and both go into a box with
metadata.json ({"provider": "virtualbox"}) and a Vagrantfile declaring the NAT adapter's MAC
(`config.vm.base_mac`). Next to the box: a box catalog (the scheme of the libvirt box, see
kiln.image.artifacts.box_catalog) under the bake's box version, the bake's image manifest,
and a kiln-metadata.json with the sha256 of every file, the box's members included.

Everything is written into build/artifacts/.<target>-virtualbox.partial/ and renamed into
place at the end (kiln.image.artifacts.publish); an error or an interrupt removes the
staging directory, so an artifact directory without a leading dot is always complete.

Reproducible: the same libvirt box and parameters give byte-identical files (the MAC, the UUIDs
and the VMDK's CID derive from that box's sha256; the tar has fixed owners, modes and
times). Timings are returned, not written, for that reason.

The guest must have drivers for VirtualBox's hardware: AHCI for the disk and e1000 for the
NIC. Debian's cloud kernel (linux-image-cloud-amd64) has neither (CONFIG_SATA_AHCI and
CONFIG_E1000 are not set); tests/integration/test_virtualbox_boot.py shows it stop in the
initramfs on AHCI and the generic kernel (linux-image-amd64) boot.
"""

from __future__ import annotations

import json
import re
import shutil
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from kiln.errors import UserError
from kiln.fileutil import locked
from kiln.image import boximage, ovf, vmdk
from kiln.image.artifacts import (
    CATALOG,
    GUEST_MANIFEST,
    METADATA,
    artifact_files,
    box_catalog,
    publish,
    sha256_of,
    write_json,
)
from kiln.image.boximage import Published, find_published
from kiln.runner import capture

BUILDER = "virtualbox"
PROVIDER = "virtualbox"
OVF_NAME = "box.ovf"
DISK_NAME = "box-disk001.vmdk"
BOX_METADATA = "metadata.json"
BOX_VAGRANTFILE = "Vagrantfile"
TAR_MTIME = 0  # every member of the box: fixed time, owner and mode (reproducible)
USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")  # applied with fullmatch
T = TypeVar("T")


@dataclass(frozen=True)
class BoxSpec:
    target: str
    distro: str
    box_name: str  # the catalog's box name (trial.box_name), shared with the libvirt box
    ssh_username: str
    cpus: int = 2
    memory_mb: int = 2048
    nested_hw_virt: bool | None = None  # None: on when the image holds the qemu-kvm component
    project: Mapping[str, Any] = field(default_factory=dict)

    @property
    def pair(self) -> str:
        return f"{self.target}-{BUILDER}"

    @property
    def machine_name(self) -> str:
        return f"kiln-{self.target}"


@dataclass(frozen=True)
class BoxResult:
    directory: Path
    box: Path
    base_mac: str
    version: str
    seconds: dict[str, float]
    sizes: dict[str, int]  # bytes: source qcow2 (inside the libvirt box), vmdk, box


def spec_from_config(config: Mapping[str, Any], target: str, **overrides: Any) -> BoxSpec:
    """The box of `target` as config.json (Config.data) describes it: the trial's size."""
    targets = config["targets"]
    if target not in targets:
        raise UserError(f"unknown target {target!r}", f"pick one of {', '.join(sorted(targets))}")
    entry, trial = targets[target], config["trial"]
    values: dict[str, Any] = {"target": target, "distro": entry["distro"], "box_name": trial["box_name"],
                              "ssh_username": entry["ssh_username"], "cpus": trial["cpus"],
                              "memory_mb": trial["memory_mb"], "project": config.get("project", {})}
    values.update(overrides)
    return BoxSpec(**values)


def box_vagrantfile(mac: str, ssh_username: str) -> str:
    """The Vagrantfile inside the box: defaults every Vagrantfile using the box inherits (the
    libvirt box's, plus the MAC that VirtualBox's NAT adapter must keep)."""
    if not ovf.MAC_RE.fullmatch(mac):
        raise ValueError(f"MAC {mac!r}: expected 080027 and 6 upper-case hex digits")
    if not USER_RE.fullmatch(ssh_username):
        raise UserError(f"ssh user {ssh_username!r} is not a valid user name")
    return ("# Embedded in the kiln box: defaults every Vagrantfile using this box inherits.\n"
            'Vagrant.configure("2") do |config|\n'
            f'  config.vm.base_mac = "{mac}"\n'
            f'  config.ssh.username = "{ssh_username}"\n'
            '  config.vm.synced_folder ".", "/vagrant", disabled: true\n'
            "end\n")


def box_metadata() -> str:
    return json.dumps({"provider": PROVIDER}, sort_keys=True) + "\n"


def write_box(box: Path, members: Sequence[tuple[str, Path]]) -> None:
    """An uncompressed tar (the VMDK is compressed already) with fixed metadata per member."""
    with tarfile.open(box, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in members:
            info = tarfile.TarInfo(name)
            info.size = path.stat().st_size
            info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = TAR_MTIME, 0o644, 0, 0, "", ""
            with path.open("rb") as fh:
                tar.addfile(info, fh)


def make_box(spec: BoxSpec, artifacts: Path, *, log: Path | None = None,
             source: Published | None = None) -> BoxResult:
    """Build build/artifacts/<target>-virtualbox/ from the target's QEMU bake; see the module doc."""
    source = source or find_published(artifacts, spec.target, str(spec.project.get("version", "0")))
    final = artifacts / spec.pair
    staging = artifacts / f".{spec.pair}.partial"
    with locked(artifacts / f".{spec.pair}.lock"):
        shutil.rmtree(staging, ignore_errors=True)  # left by a killed run
        staging.mkdir(parents=True)
        try:
            result = _assemble(spec, source, staging, final, log)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        publish(staging, final)
    return result


def _timed(seconds: dict[str, float], name: str, func: Callable[[], T]) -> T:
    started = time.monotonic()
    try:
        return func()
    finally:
        seconds[name] = round(time.monotonic() - started, 1)


def _assemble(spec: BoxSpec, source: Published, staging: Path, final: Path, log: Path | None) -> BoxResult:
    seconds: dict[str, float] = {}
    started = time.monotonic()
    seed = f"{spec.target}\0{source.sha256}"
    work = staging / ".work"
    work.mkdir()
    disk = work / DISK_NAME
    info = _timed(seconds, "vmdk", lambda: vmdk.convert(source.image, disk, seed=seed, log=log))
    nested = spec.nested_hw_virt if spec.nested_hw_virt is not None else "qemu-kvm" in source.components
    machine = ovf.Machine(spec.machine_name, ovf.os_type(spec.distro), spec.cpus, spec.memory_mb, DISK_NAME,
                          disk.stat().st_size, info.capacity, ovf.identity(seed), nested)
    members = _write_members(work, machine, spec.ssh_username)
    contents = {name: {"sha256": sha256_of(path), "bytes": path.stat().st_size} for name, path in members}
    box = staging / f"{spec.pair}.box"
    _timed(seconds, "box", lambda: write_box(box, members))
    sizes = {"qcow2": source.image.size, "vmdk": disk.stat().st_size, "box": box.stat().st_size}
    shutil.rmtree(work)
    _write_beside(spec, source, machine, contents, staging, final / box.name)
    seconds["total"] = round(time.monotonic() - started, 1)
    return BoxResult(final, final / box.name, machine.ident.mac, source.version, seconds, sizes)


def _write_members(work: Path, machine: ovf.Machine, ssh_username: str) -> list[tuple[str, Path]]:
    """box.ovf, metadata.json and the Vagrantfile beside the VMDK; all four in tar order."""
    (work / OVF_NAME).write_bytes(ovf.render(machine))
    (work / BOX_METADATA).write_text(box_metadata(), encoding="utf-8")
    (work / BOX_VAGRANTFILE).write_text(box_vagrantfile(machine.ident.mac, ssh_username), encoding="utf-8")
    return [(name, work / name) for name in sorted((BOX_VAGRANTFILE, DISK_NAME, OVF_NAME, BOX_METADATA))]


def _write_beside(spec: BoxSpec, source: Published, machine: ovf.Machine, contents: dict[str, Any],
                  staging: Path, final_box: Path) -> None:
    """The bake's image manifest, the box catalog and kiln-metadata.json next to the box."""
    if source.manifest is not None:
        shutil.copyfile(source.manifest, staging / GUEST_MANIFEST)
    files = artifact_files(staging)  # every file but the catalog and the metadata itself
    write_json(staging / CATALOG, box_catalog(spec.box_name, source.version, PROVIDER, final_box,
                                              files[final_box.name]["sha256"]))
    files[CATALOG] = {"sha256": sha256_of(staging / CATALOG), "bytes": (staging / CATALOG).stat().st_size}
    write_json(staging / METADATA, _metadata(spec, source, machine, contents, dict(sorted(files.items()))))


def _metadata(spec: BoxSpec, source: Published, machine: ovf.Machine, contents: dict[str, Any],
              files: dict[str, Any]) -> dict[str, Any]:
    qemu_img = (capture(["qemu-img", "--version"]) or "").splitlines()
    return {
        "pair": spec.pair,
        "target": spec.target,
        "builder": BUILDER,
        "project": dict(spec.project),
        "made_from": {"pair": f"{spec.target}-{boximage.SOURCE_BUILDER}", "box": source.image.box.name,
                      "sha256": source.sha256, "box_version": source.version},
        "virtualbox": {"os_type": machine.os.vbox, "cpus": machine.cpus, "memory_mb": machine.memory_mb,
                       "nested_hw_virt": machine.nested_hw_virt, "base_mac": machine.ident.mac,
                       "storage": "AHCI", "nic": ovf.NIC_TYPE, "disk_capacity": machine.disk_capacity,
                       "settings_version": ovf.SETTINGS_VERSION},
        "tools": {"qemu-img": qemu_img[0] if qemu_img else "missing"},
        "components": dict(source.components),
        "box_contents": contents,
        "artifacts": files,
    }
