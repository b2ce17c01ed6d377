"""The SSH key pair kiln uses to reach build VMs and its own Vagrant machines.

One key per machine: it is also kept in the user cache (~/.cache/kiln/keys, or
$KILN_CACHE_DIR), so that a fresh checkout reuses it and base images cached for that
key stay valid.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kiln.paths import user_cache
from kiln.runner import run, which

KEY_NAME = "kiln_ed25519"


def ensure_build_key(build_dir: Path) -> Path:
    """Create build/keys/kiln_ed25519{,.pub} once; return the private key's path."""
    keys = build_dir / "keys"
    private = keys / KEY_NAME
    public = Path(f"{private}.pub")
    if private.exists() and public.exists():
        return private
    keys.mkdir(parents=True, exist_ok=True)
    os.chmod(keys, 0o700)
    shared = _shared_keys() / KEY_NAME
    if shared.exists() and Path(f"{shared}.pub").exists():
        # Same key as other checkouts on this machine, so cached base images stay valid.
        shutil.copy2(Path(f"{shared}.pub"), public)
        shutil.copy2(shared, private)
        os.chmod(private, 0o600)
        return private
    tmp = keys / f".{KEY_NAME}.{os.getpid()}"
    tmp_public = Path(f"{tmp}.pub")
    for stale in (tmp, tmp_public):
        stale.unlink(missing_ok=True)
    run([which("ssh-keygen", "apt-get install openssh-client"), "-q", "-t", "ed25519", "-N", "",
         "-C", "kiln-build", "-f", str(tmp)], step="ssh-keygen", quiet=True)
    os.chmod(tmp, 0o600)
    tmp_public.replace(public)
    tmp.replace(private)
    try:
        _shared_keys().mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copy2(public, Path(f"{shared}.pub"))
        shutil.copy2(private, shared)
    except OSError:
        pass  # only an optimisation: another checkout then makes its own key
    return private


def _shared_keys() -> Path:
    return user_cache() / "keys"
