"""What a user opens once a machine is up: the UIs and ports of the services its role runs.

Only services the image holds are listed (from its image-manifest.json); for a box whose
contents are unknown (a remote box URL) every service of the role is listed. vagrant/kiln.rb
prints the same list after `vagrant up` (tests compare both).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple


class Endpoint(NamedTuple):
    label: str
    address: str  # with {ip} for the machine's address
    component: str
    roles: tuple[str, ...]


SERVERS = ("standalone", "master")
WORKERS = ("standalone", "agent")

ENDPOINTS = (
    Endpoint("Mesos", "http://{ip}:5050", "mesos", SERVERS),
    Endpoint("Marathon", "http://{ip}:8080", "marathon", SERVERS),
    Endpoint("ZooKeeper", "{ip}:2181", "zookeeper", SERVERS),
    Endpoint("HAProxy", "http://{ip}/", "haproxy", SERVERS),
    Endpoint("Mesos agent", "http://{ip}:5051", "mesos", WORKERS),
)


def endpoints(role: str, ip: str, components: Sequence[str] | None) -> list[tuple[str, str]]:
    """(label, address) for each service `role` runs that the image holds."""
    return [(e.label, e.address.format(ip=ip)) for e in ENDPOINTS
            if role in e.roles and (components is None or e.component in components)]


def one_line(role: str, ip: str, components: Sequence[str] | None) -> str:
    found = endpoints(role, ip, components)
    return "  ".join(f"{label} {address}" for label, address in found) or "(no service UI in this image)"
