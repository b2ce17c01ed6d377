"""One host, one owner per address: a cluster is not brought up on addresses that machines of
another cluster (or the trial) are running on.

Every cluster takes its addresses from cluster.network_prefix and cluster.first_host, and the
trial sits at trial.ip_address (the first of them by default), so two of them running at once
would answer ARP for the same IPs and each break the other in ways that are hard to read.
Machines that are halted hold no address; only running (or paused) ones count.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from kiln.config.load import Config
from kiln.errors import UserError
from kiln.paths import Paths

CLUSTER_FILE = "kiln-cluster.json"
HOLDING = ("running", "paused")


@dataclass(frozen=True)
class Neighbour:
    label: str  # how the user knows it
    directory: Path  # where its Vagrantfile is
    addresses: dict[str, str]  # machine name -> IP
    stop: str  # the command that frees its addresses


def created(directory: Path, machine: str = "*") -> bool:
    """Whether Vagrant holds a machine (any provider) in this directory."""
    return any(directory.glob(f".vagrant/machines/{machine}/*/id"))


def neighbours(config: Config, paths: Paths, exclude: Path) -> list[Neighbour]:
    """The clusters and the trial that have machines, other than the one in `exclude`."""
    found = []
    for file in sorted((paths.build / "vagrant").glob(f"*/{CLUSTER_FILE}")):
        directory = file.parent
        if directory.resolve() == exclude.resolve() or not created(directory):
            continue
        try:
            machines = json.loads(file.read_text(encoding="utf-8"))["machines"]
        except (OSError, ValueError, KeyError):
            continue
        found.append(Neighbour(f"cluster {directory.name}", directory,
                               {m["name"]: m["ip"] for m in machines},
                               f"invoke down --cluster {directory.name}"))
    trial = config["trial"]
    if created(paths.root, trial["vm_name"]):
        found.append(Neighbour("the trial (Vagrantfile at the top)", paths.root,
                               {trial["vm_name"]: trial["ip_address"]}, "vagrant halt (at the top)"))
    return found


def machine_states(directory: Path) -> dict[str, str]:
    """Machine name -> Vagrant state, asked from Vagrant itself (an id file may be stale)."""
    from kiln.vagrant.client import Vagrant

    return {s.name: s.state for s in Vagrant(directory).status()}


def vagrant_states(directory: Path) -> dict[str, str]:
    """machine_states, or none at all when Vagrant cannot answer."""
    try:
        return machine_states(directory)
    except (subprocess.CalledProcessError, OSError):
        # Vagrant cannot reach the provider (no libvirtd here, say): nothing of it runs.
        return {}


def check_free(config: Config, paths: Paths, directory: Path, ips: Iterable[str], *,
               states: Callable[[Path], dict[str, str]] = vagrant_states) -> None:
    """A UserError naming who runs on any of `ips`, and how to free them."""
    wanted = set(ips)
    for other in neighbours(config, paths, directory):
        overlap = {name: ip for name, ip in other.addresses.items() if ip in wanted}
        if not overlap:
            continue
        now = states(other.directory)
        taken = sorted((ip, name) for name, ip in overlap.items() if now.get(name) in HOLDING)
        if taken:
            held = ", ".join(f"{ip} ({name})" for ip, name in taken)
            raise UserError(
                f"{other.label} is running on addresses this cluster needs: {held}",
                f"stop it first ({other.stop}), or give this cluster other addresses, "
                f"e.g. --set cluster.first_host=20")
