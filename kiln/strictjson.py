"""Reading JSON files strictly: the config files kiln is given and the reports it reads back.

`read_text` takes a regular file only (a FIFO is opened without blocking and refused) of at
most `limits.max_bytes` bytes of UTF-8. `loads` takes JSON without NaN or Infinity, numbers of
more than `limits.max_number_chars` characters (Python's int() refuses 4300 digits with a
ValueError) or beyond a float's range, keys given twice, strings that are not text (lone
surrogates), or nesting deeper than `limits.max_depth`. Both raise Refused, whose message says
what is wrong and what to give instead; the caller names the file.

kiln_node/files.py has its own reader: kiln-node is baked into images without kiln.
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_depth: int
    max_number_chars: int
    what: str  # the kind of file, for messages: "a config file"
    nests: int  # how deep such a file really nests, for the message on nesting


class Refused(ValueError):
    """A file or value that is not JSON kiln accepts; the message says why."""


def read_text(path: Path, limits: Limits) -> str:
    """A regular file's UTF-8 text; Refused for anything else (never blocks on a FIFO)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Refused("file not found (check the path)") from None
    except OSError as exc:
        raise Refused(f"cannot read ({exc.strerror or exc}): pass a readable JSON file") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise Refused(f"cannot read: {_kind(mode)}, not a regular file; pass a JSON file")
        data = _read_at_most(fd, limits.max_bytes + 1)
    except OSError as exc:
        raise Refused(f"cannot read ({exc.strerror or exc}): pass a readable JSON file") from None
    finally:
        os.close(fd)
    if len(data) > limits.max_bytes:
        raise Refused(f"larger than {limits.max_bytes} bytes, too large for {limits.what}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Refused(f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                      "save it as UTF-8") from None


def _read_at_most(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    got = 0
    while got < size:
        chunk = os.read(fd, min(1 << 20, size - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    return next((name for test, name in kinds if test(mode)), "a special file")


def loads(text: str, limits: Limits) -> Any:
    """JSON as kiln accepts it (see above): json.JSONDecodeError when it is not JSON at all,
    Refused when it is JSON kiln does not take."""
    def number(literal: str) -> str:
        if len(literal) > limits.max_number_chars:
            raise Refused(f"the number {literal[:12]}... has {len(literal)} characters; give one of at "
                          f"most {limits.max_number_chars}")
        return literal

    too_deep = f"nested more than {limits.max_depth} levels deep; {limits.what} nests {limits.nests}"
    try:
        data = json.loads(text, parse_constant=_constant, parse_int=lambda s: int(number(s)),
                          parse_float=lambda s: _finite(number(s)), object_pairs_hook=_object)
    except RecursionError:  # the parser's own limit, near a thousand levels
        raise Refused(too_deep) from None
    problem = _structure_problem(data, limits.max_depth, too_deep)
    if problem:
        raise Refused(problem)
    return data


def _constant(name: str) -> Any:
    raise Refused(f"{name} is not a JSON number; give a finite number")


def _finite(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise Refused(f"the number {literal} is beyond a float's range; give a finite number")
    return value


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise Refused(f"the key {_short(key)} appears twice in one object; keep one")
        out[key] = value
    return out


def _short(value: str) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _structure_problem(data: Any, max_depth: int, too_deep: str) -> str:
    """Nesting deeper than max_depth (then `too_deep`), or which string is not text; "" when
    neither. Walked without recursion."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, where, depth = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                where = where if len(where) <= 80 else where[:77] + "..."
                return (f"{where or '(top)'} is not text (it holds a lone surrogate such as \\ud800); "
                        "give real text")
            continue
        if isinstance(value, dict | list):
            if depth >= max_depth:
                return too_deep
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                child = f"{where}/{_printable(key)}" if where else _printable(key)
                stack.append((item, child, depth + 1))
                if isinstance(key, str):
                    stack.append((key, child, depth + 1))
    return ""


def _printable(key: str | int) -> str:
    """A key as it can be printed: one that is not text itself is shown JSON-escaped."""
    text = str(key)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(text)
    return text
