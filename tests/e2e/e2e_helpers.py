"""What the VM tests share besides fixtures (conftest.py holds those): the invoke command line,
where the nightly writes its reports, and running a command inside the test namespace."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from kiln.paths import REPO_ROOT
from kiln.vagrant import netns

INVOKE = [sys.executable, "-m", "invoke", "--search-root", str(REPO_ROOT)]
PAIR = "debian-12-qemu"
ARTIFACT = REPO_ROOT / "build" / "artifacts" / PAIR
CATALOG = ARTIFACT / "box-catalog.json"
NIGHTLY_REPORTS = REPO_ROOT / "build" / "reports" / "e2e-nightly"
CANARY = "/etc/kiln/nightly-canary"


def run_in(ns: netns.LibvirtNamespace, argv: list[str], env: dict[str, str], *, cwd: Path = REPO_ROOT,
           timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """A command inside the namespace, its output printed (pytest shows it on failure)."""
    started = time.monotonic()
    done = subprocess.run(ns.argv(argv), cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    print(f"$ {' '.join(argv)}  ({time.monotonic() - started:.0f}s, exit {done.returncode})")
    print(done.stdout[-5000:], done.stderr[-3000:])
    return done


def _mesos_sets() -> tuple[list[str], str]:
    """--set options that put Mesos into the e2e images, and why not when they cannot: CI packages
    the prebuilt tree beside the checkout (../shared/mesos) instead of compiling for hours."""
    from kiln.errors import UserError
    from kiln.packages import recipe

    try:
        recipe.prebuilt(recipe.load(REPO_ROOT / "components" / "mesos"), REPO_ROOT, "debian-12")
    except UserError as exc:
        reason = f"no prebuilt Mesos tree on this machine ({exc}), and compiling takes hours"
        return ["--set", f"components.exclude.mesos={json.dumps(reason)}"], reason
    return ["--set", "components.mesos.build.tree=prebuilt"], ""


MESOS_SETS, NO_MESOS = _mesos_sets()
