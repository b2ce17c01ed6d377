"""Which systemd units a node runs, which files each reads (both from the image's component
catalog), and how the units are driven."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import IO, Any, Callable, Dict, List, Optional, Sequence, Tuple

from kiln_node import spec as specmod

MANIFEST = "/etc/kiln/manifest.json"

# The node options a catalog unit may depend on ("when"): the unit runs only when it holds.
CONDITIONS: Dict[str, Callable[[Dict[str, Any]], bool]] = {
    "marathon": lambda options: bool(options["marathon"]),
    "haproxy": lambda options: bool(options["haproxy"]),
    "rancher": specmod.rancher_configured,
}


class ServiceError(Exception):
    pass


class ManifestError(Exception):
    pass


def component_of(unit: str, catalog: Dict[str, Any]) -> str:
    return next((u["component"] for u in catalog["units"] if u["unit"] == unit), unit)


def role_units(spec: Dict[str, Any], catalog: Dict[str, Any]) -> List[str]:
    """The units the role wants, in start order, before looking at what the image holds."""
    options = specmod.options_of(spec)
    wanted = []
    for entry in catalog["units"]:
        if spec["role"] not in entry["roles"]:
            continue
        when = entry.get("when") or ""
        if when and not (when in CONDITIONS and CONDITIONS[when](options)):
            continue
        wanted.append(entry["unit"])
    return wanted


def readers(path: str, catalog: Dict[str, Any]) -> Tuple[str, ...]:
    """The units that read `path`, i.e. that must restart when it changes."""
    def reads(entry: Dict[str, Any]) -> bool:
        return any(path == r or (r.endswith("/") and path.startswith(r)) for r in entry.get("reads", []))

    return tuple(entry["unit"] for entry in catalog["units"] if reads(entry))


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


def present(units: Sequence[str], components: Optional[Dict[str, Any]], catalog: Dict[str, Any]
            ) -> Tuple[List[str], List[str]]:
    """(units the image has, one message per unit skipped because the image lacks it)."""
    if components is None:
        return list(units), []
    parts = {u["unit"]: u.get("part") or "" for u in catalog["units"]}
    kept: List[str] = []
    skipped: List[str] = []
    for unit in units:
        component = component_of(unit, catalog)
        record = components.get(component)
        if record is None:
            skipped.append("{} not in this image: skipping {}".format(component, unit))
            continue
        # A component may carry only some of its parts (rancher: executor and scheduler URLs).
        part = parts.get(unit, "")
        urls = [k for k in record if k.endswith("_url")] if isinstance(record, dict) else []
        if part and urls and "{}_url".format(part) not in urls:
            skipped.append("{} {} not in this image: skipping {}".format(component, part, unit))
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
