"""Which Vagrant box a trial or cluster boots: the one built here, else the configured URL.

`invoke build` leaves build/artifacts/<target>-<builder>/box-catalog.json; pointing Vagrant's
box_url at that catalog (with its exact version) makes `vagrant up` add the box itself,
checksum verified, and pick up a rebuilt box because every build has its own version.
vagrant/kiln.rb makes the same choice in Ruby for the trial Vagrantfile (tests compare both).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from kiln.config.load import Config
from kiln.errors import UserError
from kiln.fileutil import locked
from kiln.image import boximage
from kiln.image.artifacts import CATALOG, GUEST_MANIFEST
from kiln.image.boximage import BoxImage
from kiln.paths import Paths

BUILDER_FOR_PROVIDER = {"libvirt": "qemu", "virtualbox": "virtualbox"}
PROVIDERS = tuple(BUILDER_FOR_PROVIDER)


@dataclass(frozen=True)
class Box:
    name: str
    version: str  # "" when the URL is not a catalog (Vagrant then takes any version)
    url: str  # "" when the box must already be installed
    local: bool  # built in this checkout
    # What the image holds (from its image-manifest.json); None when unknown (a remote box).
    components: tuple[str, ...] | None = None

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "url": self.url,
                "components": list(self.components) if self.components is not None else None}


def catalog_path(paths: Paths, target: str, provider: str) -> Path:
    return paths.artifacts / f"{target}-{BUILDER_FOR_PROVIDER[provider]}" / CATALOG


def resolve(config: Config, paths: Paths, provider: str) -> Box:
    """The box for `provider`; a UserError saying how to get one when there is none."""
    if provider not in BUILDER_FOR_PROVIDER:
        raise UserError(f"unknown provider {provider!r}", f"use one of {', '.join(PROVIDERS)}")
    trial = config["trial"]
    path = catalog_path(paths, trial["target"], provider)
    try:
        catalog = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        catalog = None
    if isinstance(catalog, dict) and catalog.get("versions"):
        return Box(catalog["name"], str(catalog["versions"][0]["version"]), path.as_uri(), True,
                   image_components(path.parent))
    if trial["box_url"]:
        return Box(trial["box_name"], "", trial["box_url"], False)
    builder = BUILDER_FOR_PROVIDER[provider]
    raise UserError(
        f"no {provider} box: nothing built at {path} and trial.box_url is empty",
        f"run `invoke build --target {trial['target']} --builder {builder}` "
        f"(offline: `invoke build --profile offline`), or set trial.box_url to a box or catalog URL")


def image_components(artifact_dir: Path) -> tuple[str, ...] | None:
    """The components an image built here holds, sorted; None when its manifest is unreadable."""
    try:
        manifest = json.loads((artifact_dir / GUEST_MANIFEST).read_text(encoding="utf-8"))
        return tuple(sorted(manifest["components"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def installed(box: Box, provider: str, directory: Path) -> bool:
    """Whether Vagrant already has this box (this version, when the box has one)."""
    from kiln.vagrant.client import Vagrant

    for have in Vagrant(directory).box_list():
        if have.name == box.name and have.provider == provider and (not box.version
                                                                     or have.version == box.version):
            return True
    return False


def add_command(box: Box, provider: str, vagrant: str) -> list[str]:
    """`vagrant box add` for the box: a catalog (with its version) or a plain .box URL."""
    if box.version:
        return [vagrant, "box", "add", "--provider", provider, "--box-version", box.version, box.url]
    return [vagrant, "box", "add", "--provider", provider, "--name", box.name, box.url]


# -- libvirt: put the box image into the storage pool ourselves ---------------------------------
# vagrant-libvirt uploads a box image into the pool through its Ruby bindings at a few MiB/s
# (about 7 minutes for kiln's 1 GiB image); virsh does the same upload in seconds. A volume under
# the name vagrant-libvirt looks for (handle_box_image.rb: '/' -> '-VAGRANTSLASH-',
# '_vagrant_box_image_<version>_box.img') makes it skip its own upload; should that naming ever
# change, it simply uploads as before. The image comes from Vagrant's copy of the box when it has
# one, else straight from the box built here (its box.img member, read in place): the trial's
# `vagrant up` seeds the pool before Vagrant has even added the box.

def vagrant_home() -> Path:
    import os

    return Path(os.environ.get("VAGRANT_HOME") or Path.home() / ".vagrant.d")


def libvirt_volume(box_name: str, version: str) -> str:
    return f"{box_name.replace('/', '-VAGRANTSLASH-')}_vagrant_box_image_{version}_box.img"


def box_image(box_name: str, version: str, home: Path, provider: str = "libvirt") -> Path:
    return home / "boxes" / box_name.replace("/", "-VAGRANTSLASH-") / version / provider / "box.img"


def pool_source(box: Box) -> BoxImage | None:
    """Where the box's qcow2 lies: Vagrant's installed copy, else the local box its catalog names;
    None when neither is at hand (a remote box not added yet: vagrant-libvirt uploads it)."""
    installed_image = box_image(box.name, box.version, vagrant_home())
    if installed_image.is_file():
        return BoxImage(installed_image.resolve(), 0, installed_image.stat().st_size)
    if not (box.local and box.url.startswith("file://")):
        return None
    try:
        catalog = json.loads(Path(unquote(urlparse(box.url).path)).read_text(encoding="utf-8"))
        url = catalog["versions"][0]["providers"][0]["url"]
    except (OSError, ValueError, LookupError, TypeError):
        return None
    if not isinstance(url, str) or not url.startswith("file://"):
        return None
    local_box = Path(unquote(urlparse(url).path))
    return boximage.locate(local_box) if local_box.is_file() else None


class PoolUnavailable(UserError):
    """No libvirtd answers, or it has no such pool (vagrant-libvirt may still make one)."""


def seed_libvirt_pool(box: Box, locks: Path, pool: str = "default", log: Path | None = None) -> str | None:
    """Upload the box's image into the libvirt pool with virsh; the volume name, or None when
    there is nothing to do (no version, no image at hand, volume already there); PoolUnavailable
    when the pool does not answer. `locks` is the directory of the lock that keeps two kiln runs
    from uploading the same volume at once."""
    from kiln.runner import capture, run, which

    if not box.version:
        return None
    source = pool_source(box)
    if source is None:
        return None
    volume = libvirt_volume(box.name, box.version)
    virsh = which("virsh", "apt-get install libvirt-clients")
    connect = ["-c", "qemu:///system"]
    if capture([virsh, *connect, "pool-info", pool]) is None:
        raise PoolUnavailable(f"libvirt's storage pool {pool!r} does not answer at qemu:///system")
    with locked(locks / "libvirt-pool.lock"):
        if capture([virsh, *connect, "vol-info", "--pool", pool, volume]) is not None:
            return None
        info = json.loads(capture([which("qemu-img", "apt-get install qemu-utils"), "info", "--output=json",
                                   source.qemu_filename]) or "{}")
        size = int(info.get("virtual-size", 0))
        if info.get("format") != "qcow2" or size <= 0:
            return None  # not what vagrant-libvirt expects either: let it report the problem
        run([virsh, *connect, "vol-create-as", pool, volume, str(size), "--format", "qcow2"],
            step="virsh vol-create-as (box image)", log=log, quiet=True, timeout=120)
        # virsh reads a pipe to its end; dd gives it exactly the image's bytes from the file.
        upload = (f"dd if={shlex.quote(str(source.box))} bs=4M iflag=skip_bytes,count_bytes "
                  f"skip={source.offset} count={source.size} status=none | "
                  f"{shlex.join([virsh, *connect, 'vol-upload', '--pool', pool, volume, '/dev/stdin'])}")
        try:
            run(["bash", "-o", "pipefail", "-c", upload], step="virsh vol-upload (box image)", log=log,
                quiet=True, timeout=1800)
        except BaseException:
            capture([virsh, *connect, "vol-delete", "--pool", pool, volume])  # no half-uploaded volume
            raise
    return volume
