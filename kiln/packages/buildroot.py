"""A clean root file system of a target to compile in: the target's own toolchain and
libraries, nothing of the host's. Debian-family targets get it from mmdebstrap (buildd
variant plus the recipe's build dependencies), the way the base image is made.

A root is cached by its inputs (suite, apt sources, packages) under
<cache>/buildroots/<target>-<key>/, made in a temp dir and renamed into place with its
package list last, so a killed build never leaves a root that looks complete. Compiles
never write into it: sources, patches and the build directory are bind-mounted.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.errors import StepFailed, UserError
from kiln.fileutil import locked
from kiln.image import base
from kiln.runner import run, which

RECIPE_VERSION = 1
# What compile.sh and package.sh use besides the recipe's own build dependencies.
TOOLS = ("file", "patch", "xz-utils", "dpkg-dev", "ca-certificates")
PACKAGES_FILE = "kiln-packages.txt"  # `dpkg-query -W` of the finished root: written last


@dataclass(frozen=True)
class BuildRoot:
    path: Path
    key: str
    packages: str  # "name version" per line, sorted: the exact toolchain and libraries
    cached: bool


def installed_packages(tree: Path) -> str:
    """"name version" of every package installed in `tree`, sorted (from dpkg's status file)."""
    status = (tree / "var/lib/dpkg/status").read_text(encoding="utf-8", errors="replace")
    rows = []
    for stanza in status.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " ")
        if fields.get("Status", "").endswith(" installed"):
            rows.append(f"{fields['Package']} {fields.get('Version', '')}")
    return "\n".join(sorted(rows)) + "\n"


def key_of(suite: str, mirror: str, packages: list[str]) -> str:
    data = {"recipe": RECIPE_VERSION, "variant": "buildd", "suite": suite,
            "sources": base.apt_sources(suite, mirror), "packages": sorted(set(packages))}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def ensure(target: str, target_cfg: dict[str, Any], build_depends: list[str], cache: Path, *,
           log: Path, say: Callable[[str], None]) -> BuildRoot:
    """The cached build root of `target` with `build_depends`, made when missing."""
    if target_cfg.get("family") != "apt" or "base" not in target_cfg:
        raise UserError(f"kiln makes build roots for Debian targets with a local base only, not {target}",
                        "build the package on the target itself and point components.mesos.package_url "
                        "at it (the dnf recipe and package.sh are written but cannot run here)")
    suite, mirror = target_cfg["codename"], target_cfg["base"]["mirror"]
    packages = sorted(set(build_depends) | set(TOOLS))
    digest = key_of(suite, mirror, packages)
    folder = cache / "buildroots"
    path = folder / f"{target}-{digest[:16]}"
    folder.mkdir(parents=True, exist_ok=True)
    with locked(folder / f".{path.name}.lock"):
        listing = path / PACKAGES_FILE
        if listing.is_file():
            return BuildRoot(path, digest, listing.read_text(encoding="utf-8"), True)
        mmdebstrap = which("mmdebstrap", "apt-get install mmdebstrap")
        which("unshare", "apt-get install util-linux")
        for stale in folder.glob(f".{path.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(path, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=folder))
        try:
            say(f"==> build root: {suite} (buildd + {len(packages)} packages) from {mirror}; log: {log}")
            tree = work / "root"
            try:
                run([mmdebstrap, "--variant=buildd", f"--include={','.join(packages)}", suite, str(tree),
                     *base.apt_sources(suite, mirror)], step=f"build root {target}: mmdebstrap",
                    log=log, quiet=True, timeout=3600)
            except StepFailed as exc:
                raise UserError(f"mmdebstrap could not make the {suite} build root from {mirror}",
                                f"check that the mirror is reachable and has every build dependency; "
                                f"details in {log}") from exc
            # An mmdebstrap root has no /etc/hosts; some configure checks resolve localhost.
            hosts = tree / "etc/hosts"
            if not hosts.exists():
                hosts.write_text("127.0.0.1\tlocalhost\n::1\tlocalhost\n", encoding="utf-8")
            text = installed_packages(tree)
            (tree / PACKAGES_FILE).write_text(text, encoding="utf-8")
            tree.rename(path)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    say(f"==> build root ready: {path}")
    return BuildRoot(path, digest, text, False)
