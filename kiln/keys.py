"""The SSH key pair kiln uses to reach its build VMs, base images and Vagrant machines.

One pair per cache (kiln.paths.cache_dir: build/cache/keys/, or keys/ in KILN_CACHE_DIR),
made once with ssh-keygen. It lives with the cache because the cached base images and layers
trust it (it is one of their keys' inputs): checkouts that share a cache share the key, and so
their layers. A pair that an older kiln made in build/keys/ is adopted. Parallel builds may
ask at the same moment: a lock makes exactly one of them create it, and the pair only
appears under its final names once both halves are complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from kiln.errors import UserError
from kiln.fileutil import locked
from kiln.output import say
from kiln.paths import cache_dir
from kiln.runner import capture, run, which

KEY_NAME = "kiln_ed25519"
KEY_COMMENT = "kiln-build"
SSH_KEYGEN_HINT = "apt-get install openssh-client"


def key_paths(build_dir: Path) -> tuple[Path, Path]:
    private = cache_dir(build_dir) / "keys" / KEY_NAME
    return private, private.with_name(f"{KEY_NAME}.pub")


def _adopt_old_pair(build_dir: Path, private: Path, public: Path) -> bool:
    """Copy the pair from build/keys/ (where kiln kept it before) so that images and machines
    made with it stay reachable; True when there was one."""
    old = build_dir / "keys" / KEY_NAME
    old_public = old.with_name(f"{KEY_NAME}.pub")
    if old == private or not (old.is_file() and old_public.is_file()):
        return False
    for source, dest in ((old_public, public), (old, private)):  # private last, as when created
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}")
        shutil.copy2(source, tmp)
        os.chmod(tmp, 0o600 if dest == private else 0o644)
        tmp.replace(dest)
    say(f"==> build key: adopted {old} as {private}")
    return True


def ensure_build_key(build_dir: Path) -> Path:
    """Create the cache's keys/kiln_ed25519{,.pub} unless present; return the private key's path."""
    private, public = key_paths(build_dir)
    keys = private.parent
    keys.mkdir(parents=True, exist_ok=True)
    os.chmod(keys, 0o700)
    with locked(keys / ".lock"):
        if private.exists():
            # ssh refuses private keys others can read.
            if private.stat().st_mode & 0o077:
                os.chmod(private, 0o600)
            if not public.exists():
                _restore_public(private, public)
            return private
        if _adopt_old_pair(build_dir, private, public):
            return private
        keygen = which("ssh-keygen", SSH_KEYGEN_HINT)
        with tempfile.TemporaryDirectory(prefix=".new-", dir=keys) as tmp:
            fresh = Path(tmp) / KEY_NAME
            run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", KEY_COMMENT, "-f", str(fresh)],
                step="create the build SSH key", quiet=True)
            os.chmod(fresh, 0o600)
            # Public half first: a private key under its final name always has its partner.
            Path(f"{fresh}.pub").replace(public)
            fresh.replace(private)
    return private


def _restore_public(private: Path, public: Path) -> None:
    derived = capture([which("ssh-keygen", SSH_KEYGEN_HINT), "-y", "-f", str(private)])
    if not derived or not derived.startswith("ssh-"):
        raise UserError(f"{private} is not a usable SSH private key and its .pub is missing",
                        f"delete {private} so that kiln creates a new pair")
    tmp = public.with_name(f".{public.name}.{os.getpid()}")
    kind, blob = derived.split()[:2]
    tmp.write_text(f"{kind} {blob} {KEY_COMMENT}\n", encoding="utf-8")
    tmp.replace(public)
