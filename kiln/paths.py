"""Where things live. One place, so tests can point kiln at a temp tree."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Paths:
    root: Path = REPO_ROOT

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
        return self.build / "cache"

    @property
    def artifacts(self) -> Path:
        return self.build / "artifacts"

    @property
    def reports(self) -> Path:
        return self.build / "reports"

    @property
    def keys(self) -> Path:
        return self.build / "keys"
