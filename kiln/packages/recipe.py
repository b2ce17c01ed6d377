"""A package recipe (components/<name>/package/recipe.json) and the keys derived from it.

Two keys, because the two results live differently:
- the compile key names a build directory: source, patches, configure flags and the build
  root's exact package set (its toolchain and libraries). make is incremental, so the
  scripts that drive it may change without invalidating hours of compiling;
- the package key names the finished package: the compile key plus everything that shapes
  the package's content (the scripts, the files it adds, the dependencies, the revision).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.errors import UserError

RECIPE_FILE = "package/recipe.json"
COMPILE_SCRIPT = "compile.sh"
PACKAGE_SCRIPT = "package.sh"
FILES_DIR = "files"


@dataclass(frozen=True)
class Source:
    path: Path
    sha256: str
    origin: str


@dataclass(frozen=True)
class Recipe:
    name: str
    folder: Path  # components/<name>/package
    data: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.data["version"])

    @property
    def revision(self) -> str:
        return str(self.data["revision"])

    @property
    def patches(self) -> list[str]:
        return list(self.data.get("patches", []))

    @property
    def configure(self) -> list[str]:
        return list(self.data.get("configure", []))

    @property
    def drop(self) -> list[str]:
        return list(self.data.get("install", {}).get("drop", []))

    @property
    def compile_units(self) -> int:
        return int(self.data.get("compile_units") or 0)

    def family(self, family: str) -> dict[str, Any]:
        families = self.data.get("families", {})
        if family not in families:
            raise UserError(f"the {self.name} recipe has no {family!r} package family "
                            f"(it knows {', '.join(sorted(families)) or 'none'})",
                            f"add families.{family} to {self.folder / 'recipe.json'}")
        return dict(families[family])


def with_java(recipe: Recipe) -> Recipe:
    """The recipe's Java variant (its "java" block): more configure flags and packages, network on."""
    java = recipe.data.get("java")
    if not java:
        raise UserError(f"the {recipe.name} recipe has no Java variant")
    data = json.loads(json.dumps(recipe.data))
    data["configure"] = [f for f in data["configure"] if f not in java.get("drop_configure", [])]
    data["configure"] += java["configure"]
    for family, extra in java.get("build_depends", {}).items():
        if family in data["families"]:
            data["families"][family]["build_depends"] += extra
    for family, extra in java.get("runtime_depends", {}).items():
        if family in data["families"]:
            data["families"][family]["runtime_depends"] += extra
    data["network"] = bool(java.get("network"))
    data.pop("java")
    return Recipe(recipe.name, recipe.folder, data)


def load(component_dir: Path) -> Recipe:
    path = component_dir / RECIPE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"component {component_dir.name!r} has no package recipe ({path})",
                        "only components with a package/recipe.json can be built from source") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path}: unreadable recipe ({exc})") from None
    for key in ("name", "version", "revision", "source", "families"):
        if key not in data:
            raise UserError(f"{path}: the recipe has no {key!r}")
    folder = path.parent
    for patch in data.get("patches", []):
        if not (folder / patch).is_file():
            raise UserError(f"{path}: patch {patch} does not exist")
    return Recipe(str(data["name"]), folder, data)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_source(recipe: Recipe, root: Path, override: str = "", override_sha256: str = "") -> Source:
    """The source named by the config (`override`, with its sha256) or the recipe's own file,
    looked up in the recipe's search folders (relative ones from the checkout's root)."""
    spec = recipe.data["source"]
    if override:
        path = Path(override)
        path = path if path.is_absolute() else root / path
        if not path.exists():
            raise UserError(f"components.{recipe.name}.build.source: {path} does not exist")
        if path.is_dir():
            return Source(path, "", f"directory {path}")
        if not override_sha256:
            raise UserError(f"components.{recipe.name}.build.source is set but source_sha256 is empty",
                            f"set components.{recipe.name}.build.source_sha256 to the file's sha256")
        return _checked(path, override_sha256, f"components.{recipe.name}.build.source")
    tried = []
    for folder in spec.get("search", []):
        base = Path(folder)
        candidate = (base if base.is_absolute() else root / base) / spec["file"]
        tried.append(str(candidate))
        if candidate.is_file():
            return _checked(candidate, spec["sha256"], f"the {recipe.name} recipe's source")
    raise UserError(f"the {recipe.name} source {spec['file']} was not found (looked in: {', '.join(tried)})",
                    f"put it in one of those folders, or set components.{recipe.name}.build.source "
                    f"(a tarball with source_sha256, or a source tree)")


@dataclass(frozen=True)
class Prebuilt:
    path: Path
    sha256: str
    prefix: str


def prebuilt(recipe: Recipe, root: Path, target: str) -> Prebuilt:
    """The recipe's prebuilt installed tree (its "prebuilt" block), found in its search folders."""
    spec = recipe.data.get("prebuilt")
    if not spec:
        raise UserError(f"the {recipe.name} recipe names no prebuilt tree",
                        f"set components.{recipe.name}.build.tree to a tarball path, or leave it empty")
    if target not in spec.get("targets", []):
        raise UserError(f"the prebuilt {recipe.name} tree is for {', '.join(spec.get('targets', []))}, "
                        f"not {target}")
    tried = []
    for folder in recipe.data["source"].get("search", []):
        base = Path(folder)
        candidate = (base if base.is_absolute() else root / base) / spec["file"]
        tried.append(str(candidate))
        if candidate.is_file():
            return Prebuilt(candidate, spec["sha256"], spec["prefix"])
    raise UserError(f"the prebuilt {recipe.name} tree {spec['file']} was not found (looked in: "
                    f"{', '.join(tried)})", f"leave components.{recipe.name}.build.tree empty to compile")


def _checked(path: Path, sha256: str, what: str) -> Source:
    actual = sha256_file(path)
    if actual != sha256.lower():
        raise UserError(f"{what}: {path} has sha256 {actual}, expected {sha256}",
                        "use the file the recipe names, or update the sha256 after checking the file")
    return Source(path, actual, str(path))


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def compile_inputs(recipe: Recipe, source: Source, target: str, root_packages: str) -> dict[str, Any]:
    """What the compiled tree depends on; see the module docstring."""
    return {
        "name": recipe.name,
        "version": recipe.version,
        "source": source.sha256 or source.origin,
        "patches": {p: sha256_file(recipe.folder / p) for p in recipe.patches},
        "configure": recipe.configure,
        **({"network": True} if recipe.data.get("network") else {}),
        "target": target,
        "build_root_packages": hashlib.sha256(root_packages.encode()).hexdigest(),
    }


def package_inputs(recipe: Recipe, compile_key: str, family: str) -> dict[str, Any]:
    files_dir = recipe.folder / FILES_DIR
    files = sorted(p for p in files_dir.rglob("*") if p.is_file()) if files_dir.is_dir() else []
    return {
        "compile": compile_key,
        "revision": recipe.revision,
        "drop": recipe.drop,
        "family": recipe.family(family),
        "scripts": {name: sha256_file(recipe.folder / name)
                    for name in (COMPILE_SCRIPT, PACKAGE_SCRIPT) if (recipe.folder / name).is_file()},
        "files": {str(p.relative_to(files_dir)): sha256_file(p) for p in files},
    }


def key(inputs: dict[str, Any]) -> str:
    return _digest(inputs)
