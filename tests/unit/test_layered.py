"""The layer chain starts from the right disk: the base for a whole system layer, the cached
system layer for a package layer (which would otherwise reinstall every package on the base)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.errors import KilnError
from kiln.image import layers
from kiln.image.layered import first_parent_disk
from kiln.image.store import Store


def _committed(store: Store, key: str, name: str, parent: str) -> Path:
    work = store.staging(key)
    (work / "disk.qcow2").write_bytes(b"disk of " + key.encode())
    return store.commit(work, key, {"name": name, "parent": parent, "base": "b" * 64}).disk


def _layer(parent: str, key: str = "p" * 64) -> layers.LayerPlan:
    return layers.LayerPlan(layers.SYSTEM, (), (), {}, parent, key)


def test_a_system_layer_starts_from_the_base(tmp_path: Path) -> None:
    store = Store(tmp_path)
    base_disk = _committed(store, "b" * 64, "base", "")
    assert first_parent_disk(_layer("b" * 64), "b" * 64, base_disk, store) == base_disk


def test_a_package_layer_starts_from_the_cached_system_layer(tmp_path: Path) -> None:
    store = Store(tmp_path)
    base_disk = _committed(store, "b" * 64, "base", "")
    system_disk = _committed(store, "s" * 64, "system", "b" * 64)
    assert first_parent_disk(_layer("s" * 64), "b" * 64, base_disk, store) == system_disk


def test_a_parent_gone_from_the_cache_is_a_clear_error(tmp_path: Path) -> None:
    store = Store(tmp_path)
    base_disk = _committed(store, "b" * 64, "base", "")
    with pytest.raises(KilnError, match=r"stands on ssssssssssssssss, which is no longer in the cache"):
        first_parent_disk(_layer("s" * 64), "b" * 64, base_disk, store)
