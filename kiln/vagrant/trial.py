"""The one-node trial behind the Vagrantfile at the top of the checkout.

`vagrant up` evaluates the Vagrantfile, whose Ruby (vagrant/kiln.rb) asks this module for the
trial's description and reads it, like a cluster's kiln-cluster.json: the Ruby holds no table
of its own. config.json's `trial` block sets name, address, size and provider; the box is the
one built here for that provider (its catalog) or trial.box_url.

    python -m kiln.vagrant.trial [--provider libvirt|virtualbox]   # prints the JSON's path
    python -m kiln.vagrant.trial --seed-pool                        # before `vagrant up` (libvirt)

--seed-pool puts the image of the box built here into libvirt's pool under the volume name
vagrant-libvirt looks for (kiln.vagrant.boxes.seed_libvirt_pool): seconds, where
vagrant-libvirt's own upload takes minutes. Anything in the way (no libvirtd, no local box) is
a note, not an error: vagrant-libvirt then uploads the image itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from kiln.config.load import Config, load_config
from kiln.config.shapes import parse_shape
from kiln.errors import StepFailed, UserError
from kiln.fileutil import write_atomic
from kiln.image import accel
from kiln.output import warn
from kiln.paths import Paths
from kiln.vagrant import boxes
from kiln.vagrant.addresses import CLUSTER_FILE
from kiln.vagrant.render import cluster_data


def trial_name(config: Config) -> str:
    return f"{config['cluster']['name']}-trial"


def libvirt_driver(paths: Paths) -> str:
    """kvm only where kiln's probe saw KVM really run a guest; KILN_LIBVIRT_DRIVER wins."""
    forced = os.environ.get("KILN_LIBVIRT_DRIVER", "")
    if forced:
        return forced
    verdict = accel.probe(paths.cache, cached_only=True)
    if verdict.accel == "unknown":
        warn("KVM not probed yet, the trial uses TCG (slow); run `invoke doctor --probe` to check KVM")
    return accel.libvirt_driver("kvm" if verdict.accel == "kvm" else "tcg")


def trial_data(config: Config, paths: Paths, provider: str) -> dict[str, Any]:
    trial = config["trial"]
    try:
        box = boxes.resolve(config, paths, provider)
    except UserError as exc:
        # `vagrant status` or `destroy` must work without a box; `up` then fails in Vagrant.
        warn(str(exc))
        box = boxes.Box(trial["box_name"], "", trial["box_url"], False)
    data = cluster_data(config, parse_shape("1"), paths, box=box, driver=libvirt_driver(paths))
    data["name"] = trial_name(config)
    (machine,) = data["machines"]
    ip = trial["ip_address"]
    machine.update({"name": trial["vm_name"], "ip": ip, "cpus": trial["cpus"],
                    "memory_mb": trial["memory_mb"]})
    machine["spec"].update({"name": trial["vm_name"], "ip": ip, "masters": [ip]})
    return data


def write(config: Config, paths: Paths, provider: str) -> Path:
    # Not under build/vagrant/: that is where clusters live, and the trial is not one of them.
    path = paths.build / "trial" / CLUSTER_FILE
    write_atomic(path, json.dumps(trial_data(config, paths, provider), indent=2, sort_keys=True) + "\n")
    return path


def seed_pool(config: Config, paths: Paths) -> str:
    """The line to show for seeding libvirt's pool with the trial's box ("" when nothing was done)."""
    started = time.monotonic()
    try:
        box = boxes.resolve(config, paths, "libvirt")
    except UserError:
        return ""  # no box at all: the trial's description has said so already
    try:
        volume = boxes.seed_libvirt_pool(box, paths.cache, log=paths.logs / "trial-pool.log")
    except (UserError, StepFailed) as exc:
        return (f"kiln: the box image was not put into libvirt's pool ({str(exc).splitlines()[0]}); "
                "vagrant-libvirt uploads it itself, which takes minutes")
    if volume is None:
        return ""
    return f"kiln: box image uploaded into libvirt's pool as {volume} ({time.monotonic() - started:.0f}s)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kiln.vagrant.trial", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--provider", default="", help="libvirt or virtualbox (default: trial.provider)")
    parser.add_argument("--seed-pool", action="store_true",
                        help="put the box built here into libvirt's storage pool (see above)")
    args = parser.parse_args(argv)
    paths = Paths()
    try:
        config = load_config(paths)
        if args.seed_pool:
            line = seed_pool(config, paths)
            if line:
                print(line, file=sys.stderr)
            return 0
        provider = args.provider or config["trial"]["provider"]
        if provider not in boxes.PROVIDERS:
            raise UserError(f"provider {provider!r}: kiln's trial knows {', '.join(boxes.PROVIDERS)}")
        print(write(config, paths, provider))
    except UserError as exc:
        print(f"kiln: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
