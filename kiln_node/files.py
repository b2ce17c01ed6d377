"""Files under a root directory: read, compare, write atomically, remove.

kiln-node writes only under its root. Every path goes through under(), which refuses a path
whose existing part leads outside the root through a symlink (R/etc -> /etc, or R/etc/hosts ->
/tmp/x). Reads open without blocking and accept only regular files of bounded size holding
UTF-8 text, so a FIFO, a directory or binary bytes where a config file belongs is a clear
error before anything is written, never a hang or a traceback.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import stat
import tempfile
from typing import Any, Dict, List, Optional, Tuple

# Files kiln-node reads under the root. /etc/hosts may hold a block list of a few MB.
MAX_SYSTEM_FILE_BYTES = 64 << 20
# Longest number literal accepted in a JSON file kiln-node reads (node ids, sizes, counts).
MAX_NUMBER_CHARS = 32


class RootError(Exception):
    """The --root argument cannot be used (exit 2, nothing written)."""


class FileProblem(Exception):
    """A file under the root that kiln-node cannot use as it is (exit 1, nothing written).
    The message names the file and says what to do."""


class Unreadable(Exception):
    """Why a file cannot be read as text; the caller adds the file's name and the fix."""


class BadJSON(ValueError):
    """Why a text is not JSON kiln-node accepts; the caller adds the file's name and the fix."""


# -- the root ---------------------------------------------------------------------------------

def resolve_root(given: str) -> str:
    """The --root argument as the real directory to work under. "/" is this machine; any other
    spelling of / (//, /.., a symlink or bind mount of /) is refused, since it would write to the
    running system while skipping systemctl as for an image tree."""
    if given == "/":
        return "/"
    if not given:
        raise RootError("--root '': an empty path; name a directory, or leave --root out to "
                        "configure this machine")
    real = os.path.realpath(given)
    if real == "/" or _same_directory(real, "/"):
        raise RootError("--root {}: this is / under another name; to configure this machine pass "
                        "--root / (or leave --root out), otherwise name another directory".format(given))
    if os.path.exists(real) and not os.path.isdir(real):
        raise RootError("--root {}: not a directory ({}); name the directory to apply under".format(
            given, _kind(os.stat(real).st_mode)))
    return real


def _same_directory(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _inside(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root.rstrip("/") + "/")


def under(root: str, path: str) -> str:
    """`path` (absolute, as on the node) inside `root`. Raises FileProblem when a symlink on the
    way leads outside the root: kiln-node neither reads nor writes through it."""
    real = os.path.join(root, path.lstrip("/"))
    if root == "/":
        return real
    real_root = os.path.realpath(root)
    if _inside(os.path.realpath(real), real_root):
        return real
    current = root
    for part in path.strip("/").split("/"):
        current = os.path.join(current, part)
        if os.path.islink(current) and not _inside(os.path.realpath(current), real_root):
            raise FileProblem(
                "{} is a symlink to {}, outside the root {}: kiln-node does not write through it; "
                "replace the link by a directory or file inside the root, or apply under another "
                "root".format(current, os.readlink(current), root))
    raise FileProblem("{} leads outside the root {} (through symlinks): replace them by directories "
                      "or files inside the root".format(real, root))


# -- reading ----------------------------------------------------------------------------------

def _kind(mode: int) -> str:
    kinds = ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symlink"))
    for test, name in kinds:
        if test(mode):
            return name
    return "a special file"


def read_text(path: str, limit: int) -> Optional[str]:
    """The UTF-8 text of the regular file `path`, None when it does not exist. Raises Unreadable
    (saying why) for anything else. Never blocks: a FIFO is opened non-blocking and refused."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise Unreadable("cannot be read: {} is not a directory".format(_first_non_directory(path))) from None
    except OSError as exc:
        raise Unreadable("cannot be read ({})".format(exc.strerror or exc)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise Unreadable("{}, not a regular file".format(_kind(mode)))
        chunks: List[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    except OSError as exc:
        raise Unreadable("cannot be read ({})".format(exc.strerror or exc)) from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise Unreadable("larger than {} bytes".format(limit))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Unreadable("not UTF-8 text (byte 0x{:02x} at offset {})".format(
            data[exc.start], exc.start)) from None
    return text


def _first_non_directory(path: str) -> str:
    current = os.sep if path.startswith(os.sep) else ""
    for part in path.split(os.sep)[:-1]:
        current = os.path.join(current, part)
        if os.path.lexists(current) and not os.path.isdir(current):
            return current
    return os.path.dirname(path)


def read(real: str) -> Optional[str]:
    """A system file under the root (None when missing). Raises FileProblem naming it."""
    try:
        return read_text(real, MAX_SYSTEM_FILE_BYTES)
    except Unreadable as exc:
        raise FileProblem("{}: {}; kiln-node leaves it alone and writes nothing: fix or move it, then "
                          "apply again".format(real, exc)) from None


def mode_of(real: str) -> Optional[int]:
    try:
        return stat.S_IMODE(os.stat(real).st_mode)
    except FileNotFoundError:
        return None


def differs(real: str, content: str, mode: int) -> bool:
    return read(real) != content or mode_of(real) != mode


# -- strict JSON ------------------------------------------------------------------------------

def loads_json(text: str, max_depth: int, what: str) -> Any:
    """JSON as kiln-node accepts it: no NaN or Infinity, no number longer than MAX_NUMBER_CHARS or
    beyond a float's range, no key twice in one object, nesting at most `max_depth` levels.
    Raises BadJSON saying what is wrong and what to do; `what` names the kind of file."""
    if text.startswith("\ufeff"):  # a byte order mark some editors write
        text = text[1:]
    if not text.strip():
        raise BadJSON("empty: {} is a JSON object".format(what))
    too_deep = "nested more than {} levels deep, deeper than {} ever is".format(max_depth, what)
    try:
        data = json.loads(text, parse_constant=_constant, parse_int=_int, parse_float=_float,
                          object_pairs_hook=_object)
    except BadJSON:
        raise
    except RecursionError:  # the parser's own limit, near a thousand levels
        raise BadJSON(too_deep) from None
    except ValueError as exc:
        raise BadJSON("not valid JSON ({}): fix it there".format(exc)) from None
    if _depth(data, max_depth) > max_depth:
        raise BadJSON(too_deep)
    return data


def _constant(name: str) -> Any:
    raise BadJSON("{} is not a JSON number: write a number or a string".format(name))


def _check_length(literal: str) -> None:
    if len(literal) > MAX_NUMBER_CHARS:
        raise BadJSON("the number {}... has {} characters, more than the {} accepted: write a smaller "
                      "number".format(literal[:12], len(literal), MAX_NUMBER_CHARS))


def _int(literal: str) -> int:
    _check_length(literal)
    return int(literal)


def _float(literal: str) -> float:
    _check_length(literal)
    value = float(literal)
    if not math.isfinite(value):
        raise BadJSON("the number {} is beyond a float's range: write a smaller number".format(literal))
    return value


def _object(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise BadJSON("the key {} appears twice in one object: keep one".format(json.dumps(key)))
        out[key] = value
    return out


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of containers (a scalar is 0), counted without recursion and stopping once
    past `limit`."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if not isinstance(node, (dict, list)):
            continue
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, level + 1) for child in children)
    return deepest


# -- writing ----------------------------------------------------------------------------------

def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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
