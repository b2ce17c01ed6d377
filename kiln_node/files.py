"""Files under a root directory: read, compare, write atomically, remove."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tempfile
from typing import Optional


def under(root: str, path: str) -> str:
    """`path` (absolute, as on the node) inside `root`."""
    return os.path.join(root, path.lstrip("/"))


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read(real: str) -> Optional[str]:
    try:
        with open(real, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


def mode_of(real: str) -> Optional[int]:
    try:
        return stat.S_IMODE(os.stat(real).st_mode)
    except FileNotFoundError:
        return None


def differs(real: str, content: str, mode: int) -> bool:
    return read(real) != content or mode_of(real) != mode


def write_atomic(real: str, content: str, mode: int) -> None:
    """Temp file in the same directory, fsync, rename over the target: readers never see half a file.
    The mode is set before the rename, so a secret is never readable by others, not even briefly."""
    directory = os.path.dirname(real)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(real) + ".", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), mode)
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.replace(tmp, real)
        except OSError as exc:
            # A bind-mounted file (containers mount /etc/hosts) cannot be replaced: rewrite in place.
            if exc.errno != errno.EBUSY:
                raise
            _write_in_place(real, content, mode)
            os.unlink(tmp)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_in_place(real: str, content: str, mode: int) -> None:
    with open(real, "w", encoding="utf-8") as f:
        f.write(content)
    os.chmod(real, mode)


def remove(real: str) -> bool:
    try:
        os.unlink(real)
    except FileNotFoundError:
        return False
    return True
