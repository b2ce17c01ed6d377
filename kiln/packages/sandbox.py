"""Run a command inside a root file system tree, isolated, leaving nothing behind.

The command runs under `unshare` in new mount, PID, network, UTS and IPC namespaces:
/proc, /dev and the bind mounts exist only inside that mount namespace, so they vanish
with it however the run ends, and `--kill-child` takes every process of the run down
with `unshare` itself. The network namespace has no interface but a down loopback: a
compile that tries to download something fails instead of reaching the network.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# The inside of the root is a clean system: a fixed environment, not the caller's.
BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
}


@dataclass(frozen=True)
class Bind:
    source: Path
    target: str  # absolute path inside the root
    read_only: bool = True


_SETUP = r"""
set -eu
root=$1; shift
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
while [ "$1" != "--" ]; do
  src=$1 dst=$2 mode=$3; shift 3
  mkdir -p "$root$dst"
  mount --bind "$src" "$root$dst"
  if [ "$mode" = ro ]; then mount -o remount,bind,ro "$root$dst"; fi
done
shift
exec chroot "$root" "$@"
"""


def argv(root: Path, command: Sequence[str], *, binds: Sequence[Bind] = (),
         env: Mapping[str, str] | None = None, unshare: str = "unshare", network: bool = False) -> list[str]:
    """The command line that runs `command` inside `root` (see the module docstring); `network`
    keeps the host's network (only for recipes that must download while building)."""
    mounts: list[str] = []
    for bind in binds:
        if not bind.target.startswith("/") or ".." in bind.target.split("/"):
            raise ValueError(f"bind target must be an absolute path inside the root: {bind.target!r}")
        mounts += [str(bind.source), bind.target, "ro" if bind.read_only else "rw"]
    environment = [f"{k}={v}" for k, v in {**BASE_ENV, **(env or {})}.items()]
    isolate = ["--uts", "--ipc"] if network else ["--net", "--uts", "--ipc"]
    return [unshare, "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child",
            *isolate, "--", "/bin/sh", "-c", _SETUP, "kiln-sandbox", str(root),
            *mounts, "--", "/usr/bin/env", "-i", *environment, *command]


def describe(command: Sequence[str]) -> str:
    return shlex.join(command)
