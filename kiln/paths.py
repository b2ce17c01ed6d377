"""Where things live. One place, so tests can point kiln at a temp tree."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _default_root() -> Path:
    # KILN_ROOT lets tests (and users with several checkouts of config) use another tree.
    return Path(os.environ.get("KILN_ROOT") or REPO_ROOT).resolve()


def cache_dir(build: Path) -> Path:
    """The cache of the checkout whose build/ is `build`: build/cache unless KILN_CACHE_DIR
    points elsewhere, e.g. one cache for several checkouts."""
    return Path(os.environ.get("KILN_CACHE_DIR") or build / "cache")


@dataclass(frozen=True)
class Paths:
    root: Path = field(default_factory=_default_root)

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def schema(self) -> Path:
        return self.root / "config.schema.json"

    @property
    def profiles(self) -> Path:
        return self.root / "profiles"

    @property
    def packer_templates(self) -> Path:
        return self.root / "packer"

    @property
    def vagrant_templates(self) -> Path:
        return self.root / "vagrant"

    @property
    def provision(self) -> Path:
        return self.root / "provision"

    @property
    def build(self) -> Path:
        return self.root / "build"

    @property
    def rendered_packer(self) -> Path:
        return self.build / "packer"

    @property
    def logs(self) -> Path:
        return self.build / "logs"

    @property
    def cache(self) -> Path:
        """Caches kiln reuses between runs (build roots, compiled packages, image layers): under
        build/ unless KILN_CACHE_DIR points elsewhere, e.g. one cache for several checkouts."""
        return cache_dir(self.build)

    @property
    def artifacts(self) -> Path:
        return self.build / "artifacts"

    @property
    def reports(self) -> Path:
        return self.build / "reports"

    @property
    def exports(self) -> Path:
        """Where `invoke export` writes image files by default."""
        return self.build / "exports"

    @property
    def keys(self) -> Path:
        """kiln's build key (kiln.keys): beside the cache, whose images trust it."""
        return self.cache / "keys"
