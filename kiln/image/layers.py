"""An image as a chain of layers, each a Packer build from its parent, and the key of each.

    base     the target's source image (debian-12: the mmdebstrap base; cloud targets: the
             downloaded image, which is not cached here)
    system   every enabled component's distribution packages (provision/packages.sh), then the
             bake scripts of the components whose catalog entry says "layer": "system"
    payload  the other components' bake scripts (kiln's own programs: kiln-node, the bridge),
             the manifest, the in-build verification and the cleanup

A layer's key is a sha256 over its parent's key and everything that can change what the layer
holds: the bake steps, the bytes of every file they read, the settings of its components (as
kiln.env gives them), the packages it installs and the state of the package sources (the
InRelease files' sha256), the disk size, the tool versions that matter (Packer, QEMU) and
kiln's version. Not in it: timestamps, the checkout's path, the git revision, dict order. The
inputs are kept with the layer, so `invoke build --explain` can say which one changed.

Packages added, nothing else changed: when the system layer's inputs differ from a cached system
layer's (on the same base) only in package lists that grew, kiln does not reinstall everything:
it builds a package layer on top of that one, which runs provision/packages.sh (apt installs the
new packages only), and the payload on top of it. Its key covers that parent: the same additions
to the same layer give the same key; `invoke build --force` builds the system layer from scratch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln import __version__
from kiln.config import catalog
from kiln.config.load import Config
from kiln.config.targets import Pair

SYSTEM, PAYLOAD = "system", "payload"
PACKAGES = "packages"  # the template of a system layer that only adds packages (see the module doc)
PACKAGE_LISTS = "package_lists"  # the system inputs' entry a package layer may differ in
ALWAYS_LAST = ("manifest", "cleanup")  # provision/<step>.sh after every component
LAYERS = (SYSTEM, PAYLOAD)
# The lines of kiln.env that are not a component's and do not change an image's content.
ENV_IGNORED = ("KILN_GIT_REVISION",)
# Names, not facts: the system layer depends on the target's distribution (in its inputs), not on
# what the target or builder is called, so targets that share a base share their system layer too.
ENV_NAMES = ("KILN_TARGET", "KILN_BUILDER")


@dataclass(frozen=True)
class Step:
    script: str  # relative to the uploaded tree (/tmp/kiln)
    title: str


@dataclass(frozen=True)
class LayerPlan:
    name: str
    components: tuple[str, ...]
    steps: tuple[Step, ...]
    inputs: dict[str, Any] = field(default_factory=dict)
    parent: str = ""
    key: str = ""
    template: str = ""  # the Packer template (build/packer/<pair>/<template>/) when not `name`
    added: tuple[str, ...] = ()  # a package layer: the packages it adds to its parent

    @property
    def template_name(self) -> str:
        return self.template or self.name


def env_name(component: str, key: str) -> str:
    """components.<component>.<key> as kiln.env names it: KILN_<COMPONENT>_<KEY>."""
    return f"KILN_{component}_{key}".upper().replace("-", "_")


def digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def tree_digest(root: Path, relative: Sequence[str]) -> dict[str, str]:
    """path (relative to root) -> sha256 of every file under the given files or folders."""
    out: dict[str, str] = {}
    for rel in relative:
        start = root / rel
        files = [start] if start.is_file() else sorted(p for p in start.rglob("*") if p.is_file())
        for path in files:
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return dict(sorted(out.items()))


def layer_of(cat: catalog.Catalog, component: str) -> str:
    return str(cat[component].facts.get("layer", SYSTEM))


def split(cat: catalog.Catalog, components: Sequence[str]) -> dict[str, list[str]]:
    ordered = cat.bake_order(list(components))
    return {name: [c for c in ordered if layer_of(cat, c) == name] for name in LAYERS}


def steps(cat: catalog.Catalog, components: Sequence[str]) -> dict[str, tuple[Step, ...]]:
    parts = split(cat, components)
    system = [Step("provision/packages.sh", "packages of every component"),
              *(Step(f"components/{c}/bake.sh", f"component: {c}") for c in parts[SYSTEM])]
    payload = [*(Step(f"components/{c}/bake.sh", f"component: {c}") for c in parts[PAYLOAD]),
               *(Step(f"provision/{s}.sh", f"always: {s}") for s in ALWAYS_LAST)]
    return {SYSTEM: tuple(system), PAYLOAD: tuple(payload), PACKAGES: tuple(system[:1])}


def env_lines(env_text: str, cat: catalog.Catalog, own: Sequence[str], *, packages_of_all: bool) -> list[str]:
    """The kiln.env lines a layer depends on: the general ones, its components' settings and,
    for the system layer, every component's package list (and not the target's or builder's name)."""
    prefixes = sorted(((env_name(c, ""), c) for c in cat.names()), key=lambda p: -len(p[0]))
    kept = []
    for line in env_text.splitlines():
        if not line or line.startswith("#") or "=" not in line:
            continue
        key = line.split("=", 1)[0]
        if key in ENV_IGNORED or (packages_of_all and key in ENV_NAMES):
            continue
        owner = next((c for prefix, c in prefixes if key.startswith(prefix)), None)
        if owner is None or owner in own or (packages_of_all and key.endswith("_PACKAGES")):
            kept.append(line)
    return kept


@dataclass(frozen=True)
class KeyContext:
    """What the keys need besides the config: measured or read once per build."""

    root: Path
    env_text: str
    packages: Mapping[str, str]  # component -> sha256 of the package kiln built for it
    sources: Mapping[str, str]  # apt source line -> sha256 of its InRelease ("" when unknown)
    tools: Mapping[str, str]  # packer, qemu


def layer_key(parent: str, name: str, inputs: Mapping[str, Any]) -> str:
    """The key of layer `name` with these inputs on top of the layer (or source) keyed `parent`."""
    return digest({"parent": parent, "layer": name, "inputs": inputs})


def plan(config: Config, pair: Pair, base_key: str, ctx: KeyContext) -> list[LayerPlan]:
    """The system and payload layers of `pair` with their keys, on top of `base_key`."""
    cat = catalog.load_cached(ctx.root)
    components = config.components_for(pair.target.name)
    parts = split(cat, components)
    layer_steps = steps(cat, components)
    inputs = layer_inputs(config, pair, ctx)
    system_key = layer_key(base_key, SYSTEM, inputs[SYSTEM])
    payload_key = layer_key(system_key, PAYLOAD, inputs[PAYLOAD])
    return [
        LayerPlan(SYSTEM, tuple(parts[SYSTEM]), layer_steps[SYSTEM], inputs[SYSTEM], base_key, system_key),
        LayerPlan(PAYLOAD, tuple(parts[PAYLOAD]), layer_steps[PAYLOAD], inputs[PAYLOAD], system_key,
                  payload_key),
    ]


def layer_inputs(config: Config, pair: Pair, ctx: KeyContext) -> dict[str, dict[str, Any]]:
    """What the keys of `pair`'s system and payload layers cover, by layer name (the AMI key,
    kiln.aws.amikey, is made of the same)."""
    cat = catalog.load_cached(ctx.root)
    components = config.components_for(pair.target.name)
    parts = split(cat, components)
    layer_steps = steps(cat, components)
    build = config["build"]
    target = pair.target
    common = {"kiln": __version__, "tools": dict(ctx.tools), "disk_size_mb": build["disk_size_mb"],
              "zero_fill": build["zero_fill"], "builder": pair.builder.packer_source,
              "distribution": [target.distro, target.release, target.codename, target.family],
              "library": tree_digest(ctx.root, ["provision/lib.sh"])}
    system_inputs = {
        **common,
        "steps": [s.script for s in layer_steps[SYSTEM]],
        "scripts": component_digest(ctx.root, ["provision/packages.sh",
                                               *(f"components/{c}" for c in parts[SYSTEM])]),
        PACKAGE_LISTS: {c: cat[c].packages(target.family) for c in components},
        "env": [line for line in env_lines(ctx.env_text, cat, parts[SYSTEM], packages_of_all=True)
                if not line.split("=", 1)[0].endswith("_PACKAGES")],  # in PACKAGE_LISTS
        "built_packages": {c: s for c, s in sorted(ctx.packages.items()) if c in parts[SYSTEM]},
        "package_sources": dict(sorted(ctx.sources.items())),
    }
    payload_inputs = {
        **common,
        "target": target.name,
        "steps": [s.script for s in layer_steps[PAYLOAD]],
        "scripts": tree_digest(ctx.root, ["provision/manifest.sh", "provision/cleanup.sh",
                                          *(f"components/{c}" for c in parts[PAYLOAD])]),
        "programs": tree_digest(ctx.root, ["kiln_node", "kiln_bridge"]),
        "catalog": digest(cat.node_catalog(config.data)),
        "suites": tree_digest(ctx.root, ["tests/infra", *(f"components/{c}" for c in components
                                                          if cat[c].suites)]),
        "verify": bool(build["verify"]),
        "env": env_lines(ctx.env_text, cat, parts[PAYLOAD], packages_of_all=False),
        "built_packages": {c: s for c, s in sorted(ctx.packages.items()) if c in parts[PAYLOAD]},
    }
    return {SYSTEM: system_inputs, PAYLOAD: payload_inputs}


def component_digest(root: Path, relative: Sequence[str]) -> dict[str, str]:
    """tree_digest, with each component.json digested without its package lists (they are the
    system layer's PACKAGE_LISTS input, so that a package layer can tell "packages added" apart)."""
    out = tree_digest(root, relative)
    for rel in out:
        if Path(rel).name == catalog.FACTS:
            facts = json.loads((root / rel).read_text(encoding="utf-8"))
            facts.pop("packages", None)
            out[rel] = digest(facts)
    return out


def package_set(inputs: Mapping[str, Any]) -> frozenset[str]:
    """Every package a system layer's inputs install."""
    return frozenset(p for listed in inputs.get(PACKAGE_LISTS, {}).values() for p in listed)


def _without_packages(inputs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in inputs.items() if k != PACKAGE_LISTS}


@dataclass(frozen=True)
class Candidate:
    """A cached system layer: its key, its inputs, the base it stands on, when it was last used."""

    key: str
    inputs: Mapping[str, Any]
    base: str
    parent: str
    last_used: float


def package_parent(system: LayerPlan, base_key: str, cached: Sequence[Candidate]) -> Candidate | None:
    """The cached system layer a package layer can add `system`'s packages to: on the same base,
    with the same inputs but for package lists that `system`'s include (the most packages first,
    then the most recently used). None when there is none."""
    wanted = package_set(system.inputs)
    rest = _without_packages(system.inputs)
    fits = [c for c in cached if c.base == base_key and _without_packages(c.inputs) == rest
            and package_set(c.inputs) <= wanted]
    return max(fits, key=lambda c: (len(package_set(c.inputs)), c.last_used), default=None)


def with_package_layer(plan: list[LayerPlan], parent: Candidate) -> list[LayerPlan]:
    """`plan` with its system layer replaced by a package layer on `parent` (or by `parent` itself
    when it already holds every package: a package layer an earlier build made), the payload on top."""
    system, payload = plan
    added = tuple(sorted(package_set(system.inputs) - package_set(parent.inputs)))
    if added:
        key = layer_key(parent.key, SYSTEM, system.inputs)
        layer = LayerPlan(SYSTEM, (), (Step("provision/packages.sh", "packages added: " + " ".join(added)),),
                          system.inputs, parent.key, key, PACKAGES, added)
    else:
        layer = LayerPlan(SYSTEM, system.components, system.steps, system.inputs, parent.parent, parent.key)
    top = LayerPlan(PAYLOAD, payload.components, payload.steps, payload.inputs, layer.key,
                    layer_key(layer.key, PAYLOAD, payload.inputs))
    return [layer, top]


def explain(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Which inputs differ between two input records, one line each (nested records recursed)."""
    lines = []
    for key in sorted(set(old) | set(new)):
        where = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            lines += explain(a, b, f"{where}.")
        elif key not in old:
            lines.append(f"{where}: new")
        elif key not in new:
            lines.append(f"{where}: gone")
        else:
            lines.append(f"{where}: {_short(a)} -> {_short(b)}")
    return lines


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 70 else text[:67] + "..."
