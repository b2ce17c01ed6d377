"""The layer store: image layers by key, under <cache>/layers/<key>/ (KILN_CACHE_DIR, shared by
several checkouts).

A layer directory holds disk.qcow2 (its parent's disk as backing file, by absolute path: layers
never move) and layer.json, written last: a directory without layer.json is not a layer, so an
interrupted build is never a cache hit. Layers are built in `.tmp-<key>-<pid>` directories and
renamed into place; what a killed build left is removed by the next one that holds the lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.errors import UserError
from kiln.fileutil import locked, write_atomic

DISK = "disk.qcow2"
META = "layer.json"
TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class Layer:
    key: str
    directory: Path
    meta: dict[str, Any]

    @property
    def disk(self) -> Path:
        return self.directory / DISK

    @property
    def parent(self) -> str:
        return str(self.meta.get("parent") or "")

    @property
    def name(self) -> str:
        return str(self.meta.get("name", "?"))

    @property
    def size(self) -> int:
        return sum(p.stat().st_size for p in self.directory.iterdir() if p.is_file())

    @property
    def last_used(self) -> float:
        return float(self.meta.get("last_used", self.meta.get("created", 0)))


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root / "layers"

    def path(self, key: str) -> Path:
        return self.root / key

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        with locked(self.root / ".lock"):
            yield

    def get(self, key: str) -> Layer | None:
        meta_file = self.path(key) / META
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not (self.path(key) / DISK).is_file():
            return None
        return Layer(key, self.path(key), meta)

    def touch(self, layer: Layer) -> None:
        """Record a use (a cache hit), for `invoke cache list` and prune's order."""
        write_atomic(layer.directory / META, json.dumps({**layer.meta, "last_used": time.time()},
                                                        indent=2, sort_keys=True) + "\n")

    def staging(self, key: str) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        work = self.root / f"{TMP_PREFIX}{key}-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        return work

    def commit(self, work: Path, key: str, meta: dict[str, Any]) -> Layer:
        """Move a finished staging dir into place; layer.json is written last, by rename."""
        if not (work / DISK).is_file():
            raise UserError(f"layer {key[:16]}: the build left no {DISK} in {work}")
        final = self.path(key)
        shutil.rmtree(final, ignore_errors=True)
        stamped = {**meta, "key": key, "created": time.time(), "last_used": time.time()}
        (work / META).unlink(missing_ok=True)
        work.rename(final)
        write_atomic(final / META, json.dumps(stamped, indent=2, sort_keys=True) + "\n")
        return Layer(key, final, stamped)

    def sweep(self) -> list[Path]:
        """Remove what interrupted builds left: staging dirs of processes that are gone, and layer
        dirs without their record. Another live build's staging stays."""
        removed = []
        if not self.root.is_dir():
            return removed
        for entry in self.root.iterdir():
            incomplete = entry.is_dir() and not entry.name.startswith(".") and not (entry / META).is_file()
            if entry.name.startswith(TMP_PREFIX) and _alive(entry.name.rsplit("-", 1)[-1]):
                continue
            if entry.name.startswith(TMP_PREFIX) or incomplete:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
        return removed

    def layers(self) -> list[Layer]:
        found = []
        if self.root.is_dir():
            for entry in sorted(self.root.iterdir()):
                layer = self.get(entry.name) if not entry.name.startswith(".") else None
                if layer is not None:
                    found.append(layer)
        return found

    def remove(self, layer: Layer) -> None:
        shutil.rmtree(layer.directory, ignore_errors=True)


def _alive(pid_text: str) -> bool:
    """Whether the process that named a staging dir still runs (this one does not count)."""
    if not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def chain(store: Store, key: str) -> list[Layer]:
    """The layer and its ancestors, top first."""
    out = []
    while key:
        layer = store.get(key)
        if layer is None:
            break
        out.append(layer)
        key = layer.parent
    return out


def prune_plan(layers: Sequence[Layer], *, keep: int | None = None, max_size: int | None = None,
               pinned: Sequence[str] = ()) -> list[Layer]:
    """The layers to remove. A layer stays when it is pinned (a published artifact's), among the
    `keep` most recently used tops (layers no other layer has as parent), or an ancestor of a
    layer that stays. Then, while the store is above `max_size`, the least recently used top
    that is not protected goes, and its parent may become a top in turn."""
    by_key = {layer.key: layer for layer in layers}
    parents = {layer.parent for layer in layers}
    tops = sorted((layer for layer in layers if layer.key not in parents), key=lambda x: -x.last_used)
    kept_tops = set(pinned) | ({t.key for t in tops[:keep]} if keep is not None else {t.key for t in tops})
    protected: set[str] = set()
    for key in kept_tops:
        while key in by_key and key not in protected:
            protected.add(key)
            key = by_key[key].parent
    doomed = [layer for layer in layers if layer.key not in protected]
    if max_size is not None:
        remaining = {k: v for k, v in by_key.items() if k not in {d.key for d in doomed}}
        total = sum(layer.size for layer in remaining.values())
        while total > max_size:
            live_parents = {layer.parent for layer in remaining.values()}
            candidates = sorted((layer for layer in remaining.values()
                                 if layer.key not in live_parents and layer.key not in pinned),
                                key=lambda x: x.last_used)
            if not candidates:
                break
            victim = candidates[0]
            doomed.append(victim)
            total -= victim.size
            del remaining[victim.key]
    return doomed


_SIZE = re.compile(r"\A\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B?|B)?\s*\Z", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'500M', '2G', '1.5GiB', '1024' (bytes) -> bytes; a UserError otherwise."""
    match = _SIZE.match(text)
    if not match:
        raise UserError(f"--max-size {text!r}: expected a size such as 500M, 20G or 1.5GiB")
    unit = (match.group(2) or "B").upper()[0]
    factor = {"B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[unit]
    return int(float(match.group(1)) * factor)
