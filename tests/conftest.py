"""Shared fixtures: a throwaway copy of the repo's config/templates so tests never write
into the real build/ directory."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kiln.paths import REPO_ROOT, Paths

COPIED = ("config.json", "config.schema.json", "Vagrantfile", "profiles", "packer", "vagrant", "components",
          "provision", "kiln_node", "kiln_bridge")


@pytest.fixture(scope="session", autouse=True)
def own_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The test session's own, empty kiln cache (build roots, packages, image layers, the package
    cache, the KVM verdict): what one test caches, later ones reuse, and nothing comes from the
    user's or CI's cache."""
    cache = tmp_path_factory.mktemp("kiln-cache")
    before = os.environ.get("KILN_CACHE_DIR")
    os.environ["KILN_CACHE_DIR"] = str(cache)
    try:
        yield cache
    finally:
        if before is None:
            os.environ.pop("KILN_CACHE_DIR", None)
        else:
            os.environ["KILN_CACHE_DIR"] = before


@pytest.fixture
def tree(tmp_path: Path) -> Paths:
    """A Paths rooted in a temp dir holding copies of config, schema and templates."""
    for name in COPIED:
        src = REPO_ROOT / name
        if src.is_dir():
            shutil.copytree(src, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, tmp_path / name)
    return Paths(root=tmp_path)


@pytest.fixture(scope="session")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ed25519 key pair (Packer refuses templates whose key file is not a key)."""
    import subprocess

    key = tmp_path_factory.mktemp("keys") / "kiln_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kiln-test", "-f", str(key)],
                   check=True)
    return key


@pytest.fixture(scope="session")
def node_catalog() -> dict[str, Any]:
    """The component catalog as kiln bakes it into images (/etc/kiln/catalog.json), from this tree."""
    from kiln.config import catalog
    from kiln.config.load import load_config

    return catalog.load(REPO_ROOT).node_catalog(load_config(Paths(REPO_ROOT)).data)


@pytest.fixture
def node_root(node_catalog: dict[str, Any]) -> Callable[[Path], Path]:
    """Make a directory look like a kiln image to kiln-node --root: the baked catalog in place."""

    def make(root: Path) -> Path:
        path = root / "etc" / "kiln" / "catalog.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(node_catalog), encoding="utf-8")
        return root

    return make
