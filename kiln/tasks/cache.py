"""`invoke cache.list` and `invoke cache.prune`: the image layers kiln keeps between builds."""

from __future__ import annotations

import json
import time

from invoke import Collection

from kiln.image.store import Store, parse_size, prune_plan
from kiln.paths import Paths
from kiln.table import format_table
from kiln.tasks.cli import handle_errors, say, task


def _published_keys(paths: Paths) -> list[str]:
    """Layers the artifacts of this checkout were made from: never pruned."""
    keys = []
    for meta in paths.artifacts.glob("*/kiln-metadata.json"):
        try:
            keys += [layer["key"] for layer in json.loads(meta.read_text(encoding="utf-8")).get("layers", [])]
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return keys


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else "-"


@task
@handle_errors
def list_(c):
    """The cached image layers: key, layer, pair, parent, size and last use."""
    paths = Paths()
    store = Store(paths.cache)
    layers = store.layers()
    if not layers:
        say(f"no layers in {store.root}")
        return
    rows = [(layer.key[:16], layer.name, str(layer.meta.get("pair", "-")), layer.parent[:16] or "-",
             f"{layer.size / 2**20:.0f} MiB", _when(layer.last_used)) for layer in
            sorted(layers, key=lambda x: -x.last_used)]
    say(format_table(("key", "layer", "pair", "parent", "size", "last used"), rows))
    say(f"{len(layers)} layer(s), {sum(x.size for x in layers) / 2**30:.2f} GiB in {store.root}")


@task(bounds={"keep": (0, None)}, help={
    "keep": "Keep the N most recently used images (a top layer with all its parents; default 3).",
    "max_size": "Then remove least recently used images until the store is below SIZE (e.g. 20G).",
    "dry_run": "Say what would be removed, remove nothing.",
})
@handle_errors
def prune(c, keep=3, max_size="", dry_run=False):
    """Remove cached layers no kept image needs. The layers of this checkout's published artifacts,
    and every parent of a layer that stays, are never removed."""
    paths = Paths()
    store = Store(paths.cache)
    limit = parse_size(max_size) if max_size else None
    with store.lock():
        doomed = prune_plan(store.layers(), keep=int(keep), max_size=limit, pinned=_published_keys(paths))
        freed = sum(layer.size for layer in doomed)
        for layer in doomed:
            say(f"{'would remove' if dry_run else 'removed'} {layer.key[:16]} ({layer.name} of "
                f"{layer.meta.get('pair', '?')}, {layer.size / 2**20:.0f} MiB)")
            if not dry_run:
                store.remove(layer)
    say(f"{len(doomed)} layer(s), {freed / 2**30:.2f} GiB {'to free' if dry_run else 'freed'}")


ns = Collection("cache")
ns.add_task(list_, name="list")
ns.add_task(prune)
