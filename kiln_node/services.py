"""Which systemd units a node runs, which files each reads, and how they are driven."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import IO, Any, Dict, List, Optional, Sequence, Tuple

from kiln_node import render
from kiln_node import spec as specmod

# Start order: a unit comes after the ones it talks to.
ORDER = (
    "zookeeper",
    "docker",
    "mesos-master",
    "mesos-agent",
    "marathon",
    "haproxy",
    "kiln-haproxy-bridge",
    "rancher-mesos-scheduler",
    "rancher-mesos-executor",
)
MANIFEST = "/etc/kiln/manifest.json"


class ServiceError(Exception):
    pass


class ManifestError(Exception):
    pass


def component_of(unit: str) -> str:
    if unit.startswith("mesos-"):
        return "mesos"
    if unit.startswith("rancher-"):
        return "rancher"
    if unit == "kiln-haproxy-bridge":
        return "haproxy"
    return unit


def role_units(spec: Dict[str, Any]) -> List[str]:
    """The units the role wants, in start order, before looking at what the image holds."""
    options = specmod.options_of(spec)
    role = spec["role"]
    wanted = set()
    if role in ("standalone", "master"):
        wanted |= {"zookeeper", "mesos-master"}
        if options["marathon"]:
            wanted.add("marathon")
        if options["haproxy"]:
            wanted |= {"haproxy", "kiln-haproxy-bridge"}
    if role in ("standalone", "agent"):
        wanted |= {"mesos-agent", "docker"}
    if specmod.rancher_configured(options):
        if role in ("standalone", "master"):
            wanted.add("rancher-mesos-scheduler")
        if role in ("standalone", "agent"):
            wanted.add("rancher-mesos-executor")
    return [u for u in ORDER if u in wanted]


def readers(path: str) -> Tuple[str, ...]:
    """The units that read `path`, i.e. that must restart when it changes."""
    if path in (render.ZOO_CFG, render.MYID):
        return ("zookeeper",)
    if path == render.MESOS_ZK:
        return ("mesos-master", "mesos-agent")
    if path.startswith("/etc/mesos-master/"):
        return ("mesos-master",)
    if path.startswith("/etc/mesos-agent/"):
        return ("mesos-agent",)
    if path == render.MARATHON_ENV:
        return ("marathon",)
    if path == render.BRIDGE_ENV:
        return ("kiln-haproxy-bridge",)
    if path == render.RANCHER_ENV:
        return ("rancher-mesos-scheduler", "rancher-mesos-executor")
    return ()


def read_manifest(root: str) -> Optional[Dict[str, Any]]:
    """The image's components, or None when the image has no manifest (then all count as present)."""
    path = os.path.join(root, MANIFEST.lstrip("/"))
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            components = json.load(f)["components"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ManifestError("{}: unreadable image manifest ({}: {})".format(
            MANIFEST, type(exc).__name__, exc)) from None
    if not isinstance(components, dict):
        raise ManifestError("{}: 'components' is not an object".format(MANIFEST))
    return components


def present(units: Sequence[str], components: Optional[Dict[str, Any]]) -> Tuple[List[str], List[str]]:
    """(units the image has, one message per unit skipped because the image lacks it)."""
    if components is None:
        return list(units), []
    kept: List[str] = []
    skipped: List[str] = []
    for unit in units:
        component = component_of(unit)
        record = components.get(component)
        if record is None:
            skipped.append("{} not in this image: skipping {}".format(component, unit))
            continue
        # A rancher image may carry only one of the two binaries (components.rancher.*_url).
        part = unit[len("rancher-mesos-"):] if component == "rancher" else ""
        urls = [k for k in record if k.endswith("_url")] if isinstance(record, dict) else []
        if part and urls and "{}_url".format(part) not in urls:
            skipped.append("rancher {} not in this image: skipping {}".format(part, unit))
            continue
        kept.append(unit)
    return kept, skipped


class ServiceManager:
    """Runs systemctl on this machine. Subclasses decide not to (tests record, --root prints)."""

    runs = True  # whether actions really happen (the summary says so when they do not)

    def __init__(self, out: Optional[IO[str]] = None) -> None:
        self.out = out if out is not None else sys.stdout

    def run(self, action: str, unit: str) -> None:
        print("  systemctl {} {}".format(action, unit), file=self.out, flush=True)
        result = subprocess.run(["systemctl", action, unit], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, universal_newlines=True, check=False)
        if result.returncode != 0:
            detail = result.stdout.strip().replace("\n", " | ")
            raise ServiceError("systemctl {} {} failed (exit {}): {}".format(
                action, unit, result.returncode, detail or "no output"))


class NotRunServiceManager(ServiceManager):
    """For --root: the actions are printed, systemd of the running machine is left alone."""

    runs = False

    def __init__(self, out: Optional[IO[str]] = None, label: str = "not run: --root given") -> None:
        super().__init__(out)
        self.label = label

    def run(self, action: str, unit: str) -> None:
        print("  {}: systemctl {} {}".format(self.label, action, unit), file=self.out, flush=True)
