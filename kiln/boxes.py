"""Which Vagrant box a trial or cluster boots: the one built here, else the configured URL.

`invoke build` leaves build/artifacts/<target>-<builder>/box-catalog.json; pointing Vagrant's
box_url at that catalog (with its exact version) makes `vagrant up` add the box itself,
checksum verified, and pick up a rebuilt box because every build has its own version.
vagrant/kiln.rb makes the same choice in Ruby for the trial Vagrantfile (tests compare both).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kiln.artifacts import CATALOG
from kiln.config import Config
from kiln.errors import UserError
from kiln.paths import Paths

BUILDER_FOR_PROVIDER = {"libvirt": "qemu", "virtualbox": "virtualbox"}
PROVIDERS = tuple(BUILDER_FOR_PROVIDER)


@dataclass(frozen=True)
class Box:
    name: str
    version: str  # "" when the URL is not a catalog (Vagrant then takes any version)
    url: str  # "" when the box must already be installed
    local: bool  # built in this checkout

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "url": self.url}


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
        return Box(catalog["name"], str(catalog["versions"][0]["version"]), path.as_uri(), True)
    if trial["box_url"]:
        return Box(trial["box_name"], "", trial["box_url"], False)
    builder = BUILDER_FOR_PROVIDER[provider]
    raise UserError(
        f"no {provider} box: nothing built at {path} and trial.box_url is empty",
        f"run `invoke build --target {trial['target']} --builder {builder}` "
        f"(offline: `invoke build --profile offline`), or set trial.box_url to a box or catalog URL")


def installed(box: Box, provider: str, directory: Path) -> bool:
    """Whether Vagrant already has this box (this version, when the box has one)."""
    import os

    import vagrant as python_vagrant

    env = {**os.environ, "VAGRANT_CHECKPOINT_DISABLE": "1"}
    for have in python_vagrant.Vagrant(str(directory), env=env).box_list():
        if have.name == box.name and have.provider == provider and (not box.version
                                                                     or have.version == box.version):
            return True
    return False


def add_command(box: Box, provider: str, vagrant: str) -> list[str]:
    """`vagrant box add` for the box: a catalog (with its version) or a plain .box URL."""
    if box.version:
        return [vagrant, "box", "add", "--provider", provider, "--box-version", box.version, box.url]
    return [vagrant, "box", "add", "--provider", provider, "--name", box.name, box.url]
