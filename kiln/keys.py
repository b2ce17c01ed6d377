"""The SSH key pair kiln uses to reach build VMs and its own Vagrant machines."""

from __future__ import annotations

import os
from pathlib import Path

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
    tmp = keys / f".{KEY_NAME}.{os.getpid()}"
    tmp_public = Path(f"{tmp}.pub")
    for stale in (tmp, tmp_public):
        stale.unlink(missing_ok=True)
    run([which("ssh-keygen", "apt-get install openssh-client"), "-q", "-t", "ed25519", "-N", "",
         "-C", "kiln-build", "-f", str(tmp)], step="ssh-keygen", quiet=True)
    os.chmod(tmp, 0o600)
    tmp_public.replace(public)
    tmp.replace(private)
    return private
