"""The EC2 user-data that turns a booted kiln AMI into one node of a cluster.

A plain shell script (cloud-init runs it once, as root, at first boot): it writes the
node spec to /etc/kiln/node.json and runs the configurator baked into the image. User-data
is readable by every process on the instance through the metadata service and by anyone
allowed to describe the instance, so specs carrying secrets are refused here; Rancher keys
go to /etc/kiln/rancher.env over SSH after launch instead.
"""

from __future__ import annotations

import json
import re
from typing import Any

NODE_SPEC_PATH = "/etc/kiln/node.json"
CONFIGURATOR = "/usr/local/sbin/kiln-node"
MAX_BYTES = 16 * 1024  # EC2's limit on user-data before base64
SECRET_OPTIONS = (("rancher", "access_key"), ("rancher", "secret_key"))
_MARKER = "KILN_NODE_SPEC"
_BODY = re.compile(rf"<<'{_MARKER}'\n(?P<spec>.*?)\n{_MARKER}\n", re.DOTALL)


def secret_problems(spec: dict[str, Any]) -> list[str]:
    """Options of `spec` that are secrets and must not travel in user-data or tags."""
    options = spec.get("options") or {}
    return [f"{spec.get('name', '?')}: options.{group}.{key}"
            for group, key in SECRET_OPTIONS if (options.get(group) or {}).get(key)]


def render(spec: dict[str, Any]) -> str:
    """The user-data script for one node; raises ValueError when it would not fit or leak."""
    leaks = secret_problems(spec)
    if leaks:
        raise ValueError(f"secrets in a node spec would be readable in user-data: {', '.join(leaks)}")
    body = json.dumps(spec, indent=2, sort_keys=True)
    script = (
        "#!/bin/sh\n"
        f"# kiln: node {spec['name']} ({spec['role']}) of cluster {spec['cluster']}.\n"
        "# Writes the node spec and applies it with the configurator baked into the image.\n"
        "set -eu\n"
        "umask 022\n"
        f"install -d -m 0755 {NODE_SPEC_PATH.rsplit('/', 1)[0]}\n"
        # A quoted here-document: the shell expands nothing inside the JSON.
        f"cat > {NODE_SPEC_PATH} <<'{_MARKER}'\n"
        f"{body}\n"
        f"{_MARKER}\n"
        f"exec {CONFIGURATOR} apply {NODE_SPEC_PATH}\n"
    )
    if len(script.encode()) > MAX_BYTES:
        raise ValueError(f"user-data of node {spec['name']} is {len(script.encode())} bytes; "
                         f"EC2 accepts at most {MAX_BYTES}")
    return script


def spec_from(user_data: str) -> dict[str, Any]:
    """The node spec inside a user-data script kiln rendered (status and tests read it back)."""
    m = _BODY.search(user_data)
    if m is None:
        raise ValueError("not a kiln user-data script: no node spec found")
    return json.loads(m.group("spec"))
