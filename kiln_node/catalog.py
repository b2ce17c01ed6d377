"""The component catalog as baked into the image (/etc/kiln/catalog.json), written by kiln from
components/*/component.json: every unit in start order with the roles that run it, the node
option it needs, its readiness probe and the files whose change restarts it; every port by
component and name; the UI endpoints. kiln-node reads it instead of knowing components itself.

    {"version": 1,
     "units": [{"unit": "zookeeper", "component": "zookeeper", "roles": ["standalone", "master"],
                "when": "", "part": "", "probe": {"kind": "zookeeper", "port": <number>, "path": ""},
                "reads": ["/etc/zookeeper/conf/zoo.cfg"]}, ...],
     "ports": {"zookeeper": {"client": <number>, ...}, ...},
     "endpoints": [{"label": "ZooKeeper", "component": "zookeeper", "roles": [...],
                    "address": "{ip}:<number>"}]}
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List

from kiln_node.services import ManifestError

PATH = "/etc/kiln/catalog.json"
VERSION = 1
MAX_BYTES = 1 << 20


class CatalogError(ManifestError):
    """The image's catalog is missing or broken: like a broken manifest, a fault of the image."""


def load(root: str) -> Dict[str, Any]:
    """The catalog under `root`, checked enough that kiln-node can rely on its shape."""
    path = os.path.join(root, PATH.lstrip("/"))
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise CatalogError("{}: missing; kiln bakes it into every image (rebuild the image with this "
                           "kiln)".format(PATH)) from None
    except OSError as exc:
        raise CatalogError("{}: unreadable ({})".format(PATH, exc.strerror or exc)) from None
    try:
        if len(raw) > MAX_BYTES:
            raise ValueError("larger than {} bytes".format(MAX_BYTES))
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CatalogError("{}: not the JSON kiln writes ({})".format(PATH, exc)) from None
    problems = shape_problems(data)
    if problems:
        raise CatalogError("{}: {}".format(PATH, "; ".join(problems[:3])))
    return data


def shape_problems(data: Any) -> List[str]:
    if not isinstance(data, dict):
        return ["not an object"]
    if data.get("version") != VERSION:
        return ["version {!r}, this kiln-node reads version {}".format(data.get("version"), VERSION)]
    out = []
    units = data.get("units")
    if not isinstance(units, list) or not all(isinstance(u, dict) for u in units):
        out.append("'units' is not a list of objects")
    else:
        for u in units:
            if not isinstance(u.get("unit"), str) or not isinstance(u.get("component"), str) \
                    or not isinstance(u.get("roles"), list) or not isinstance(u.get("reads", []), list):
                out.append("unit entry {!r} lacks unit, component or roles".format(u.get("unit")))
    ports = data.get("ports")
    if not isinstance(ports, dict) or not all(
            isinstance(v, dict) and all(isinstance(p, int) for p in v.values()) for v in ports.values()):
        out.append("'ports' is not {component: {name: number}}")
    if not isinstance(data.get("endpoints", []), list):
        out.append("'endpoints' is not a list")
    return out


def port(catalog: Dict[str, Any], component: str, name: str) -> int:
    try:
        return int(catalog["ports"][component][name])
    except KeyError:
        raise CatalogError("{}: no port {}.{}".format(PATH, component, name)) from None


def units(catalog: Dict[str, Any]) -> List[Dict[str, Any]]:
    return list(catalog["units"])


def order(catalog: Dict[str, Any]) -> List[str]:
    return [u["unit"] for u in catalog["units"]]
