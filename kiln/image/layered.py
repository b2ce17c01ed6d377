"""A qemu pair built as a chain of cached layers (see kiln.image.layers), then published.

For each layer in order: a cache hit is used as it is; a miss is built by Packer from an overlay
on its parent (qemu-img create -b -F) into a staging directory of the store, which becomes the
layer only once Packer and the in-build checks succeeded. With the top layer's key equal to the
published artifact's, nothing runs at all: "up to date". Package downloads go through kiln's
package cache (kiln.image.aptcache) while layers build.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from kiln import sshconfig
from kiln.config.load import Config
from kiln.config.targets import Pair
from kiln.errors import KilnError
from kiln.image import aptcache, layers, packer, publish
from kiln.image.artifacts import (
    CATALOG,
    GUEST_MANIFEST,
    METADATA,
    artifact_files,
    box_catalog,
    box_version,
    write_json,
)
from kiln.image.base import apt_sources, build_base, fingerprint_for
from kiln.image.render import RenderedPair, RenderOptions
from kiln.image.store import Layer, Store
from kiln.output import say, warn
from kiln.paths import Paths
from kiln.runner import capture, record, run, unrecord, which

SOURCE_TIMEOUT = 15.0
# One Packer build of one layer, provisioning and in-build checks included, counts as hung after
# this long (a fresh Mesos image under TCG takes about an hour here); `invoke build --timeout`.
PACKER_TIMEOUT = 4 * 3600.0
VERIFY_HOST = "build-vm"  # the in-build verification's SSH alias (kiln.image.inbuild)

# Layered builds running in this process (parallel builds are threads): the store's sweep runs
# only when none is, since the staging dirs of this process's builds all carry its PID.
_ACTIVE = 0
_ACTIVE_LOCK = threading.Lock()


@dataclass(frozen=True)
class Outcome:
    built: list[str]  # layer names built in this run (empty: everything came from the cache)
    key: str
    up_to_date: bool
    downloaded: int  # bytes the package cache fetched upstream


def tool_versions() -> dict[str, str]:
    pv = packer.installed_version()
    qemu = (capture(["qemu-system-x86_64", "--version"]) or "").splitlines()
    return {"packer": str(pv) if pv else "missing", "qemu": qemu[0] if qemu else "missing"}


def source_state(lines: list[str]) -> dict[str, str]:
    """apt source line -> sha256 of its InRelease: a new package anywhere in a suite changes it."""
    state = {}
    for line in lines:
        words = line.split()
        url, suite = words[1].rstrip("/"), words[2]
        try:
            got = requests.get(f"{url}/dists/{suite}/InRelease", timeout=SOURCE_TIMEOUT)
            got.raise_for_status()
            state[line] = hashlib.sha256(got.content).hexdigest()
        except requests.RequestException as exc:
            warn(f"package source {url} {suite}: state unknown ({type(exc).__name__}); keys say so")
            state[line] = "unreachable"
    return state


def base_layer(config: Config, pair: Pair, paths: Paths, store: Store,
               force_base: bool) -> tuple[str, Path | None]:
    """(key, disk) of what the system layer starts from: kiln's base image in the store, or the
    cloud image Packer downloads (key from its URL and sha256; no disk here)."""
    target = pair.target
    if target.base is None:
        assert target.image is not None
        return layers.digest({"image": target.image["url"], "sha256": target.image["sha256"]}), None
    image = build_base(target.name, config["targets"][target.name], paths.build, force=force_base,
                       log=paths.logs / f"base-{target.name}.log")
    key = layers.digest({"base": image.fingerprint})
    found = store.get(key)
    if found is None:
        work = store.staging(key)
        record("path", work)
        try:
            try:
                os.link(image.path, work / "disk.qcow2")
            except OSError:
                shutil.copy2(image.path, work / "disk.qcow2")
            found = store.commit(work, key, {"name": "base", "parent": "", "pair": pair.name,
                                             "inputs": {"fingerprint": image.fingerprint}})
        finally:
            shutil.rmtree(work, ignore_errors=True)
            unrecord("path", work)
    return key, found.disk


def plan_for(config: Config, pair: Pair, paths: Paths, options: RenderOptions,
             rendered: RenderedPair, base_key: str) -> list[layers.LayerPlan]:
    sources = apt_sources(pair.target.codename, pair.target.base["mirror"]) if pair.target.base else []
    ctx = layers.KeyContext(root=paths.root, env_text=rendered.files["kiln.env"],
                            packages={p.component: p.sha256 for p in options.packages},
                            sources=source_state(sources), tools=tool_versions())
    return layers.plan(config, pair, base_key, ctx)


def base_key_for(config: Config, pair: Pair, paths: Paths) -> str:
    """base_layer's key, without building the base image."""
    target = pair.target
    if target.base is None:
        assert target.image is not None
        return layers.digest({"image": target.image["url"], "sha256": target.image["sha256"]})
    return layers.digest({"base": fingerprint_for(config["targets"][target.name], paths.build)})


def build(config: Config, pair: Pair, paths: Paths, options: RenderOptions, rendered: RenderedPair, *,
          staging: Path, final: Path, stage: Callable[[str, Callable[[], Any]], Any], quiet: bool,
          force: bool, force_base: bool, timeout: float = PACKER_TIMEOUT) -> Outcome:
    """Build the chain of layers of a qemu pair into `staging`. The caller holds the pair's lock
    (kiln.image.build.build_pair), so no other build of this pair runs meanwhile."""
    store = Store(paths.cache)
    with _active(store, pair):
        base_key, base_disk = stage("base layer", lambda: base_layer(config, pair, paths, store, force_base))
        sources = apt_sources(pair.target.codename, pair.target.base["mirror"]) if pair.target.base else []
        plan = stage("keys", lambda: plan_for(config, pair, paths, options, rendered, base_key))
        if not force:
            plan = on_cached_packages(plan, base_key, store, pair)
        top = plan[-1]
        published = _published_key(final)
        if published == top.key and not force and all(store.get(p.key) for p in plan):
            for p in plan:
                store.touch(store.get(p.key))  # type: ignore[arg-type]
            say(f"==> [{pair.name}] up to date (key {top.key[:16]}): nothing to build")
            return Outcome([], top.key, True, 0)
        built: list[str] = []
        parent_disk = first_parent_disk(plan[0], base_key, base_disk, store)
        with aptcache.running(paths.cache / "apt", aptcache.hosts_of(sources)) as proxy:
            for layer_plan in plan:
                hit = None if force else store.get(layer_plan.key)
                if hit is not None:
                    store.touch(hit)
                    say(f"==> [{pair.name}] layer {layer_plan.name}: cached ({layer_plan.key[:16]})")
                    if layer_plan is top:
                        _restore_records(hit, staging)
                else:
                    hit = stage(f"layer {layer_plan.name}",
                                lambda lp=layer_plan, pd=parent_disk: _build_layer(
                                    lp, pd, pair, paths, options, rendered, staging, store, proxy, quiet,
                                    timeout, base_key))
                    built.append(layer_plan.name)
                parent_disk = hit.disk
            downloaded = proxy.stats.fetched_bytes
            say(f"==> [{pair.name}] package cache: {downloaded / 2**20:.1f} MiB downloaded, "
                f"{proxy.stats.cached_bytes / 2**20:.1f} MiB served from the cache")
        top_layer = store.get(top.key)
        assert top_layer is not None
        stage("publish", lambda: _publish(config, pair, top_layer, plan, staging, rendered))
        return Outcome(built, top.key, False, downloaded)


def first_parent_disk(first: layers.LayerPlan, base_key: str, base_disk: Path | None,
                      store: Store) -> Path | None:
    """The disk the chain's first layer starts from: the base, or for a package layer the cached
    system layer it adds packages to."""
    if first.parent == base_key:
        return base_disk
    parent = store.get(first.parent)
    if parent is None:
        raise KilnError(f"layer {first.name} ({first.key[:16]}) stands on {first.parent[:16]}, which is "
                        f"no longer in the cache {store.root}: run the build again")
    store.touch(parent)
    return parent.disk


def cached_system_layers(store: Store) -> list[layers.Candidate]:
    """The store's system layers, as candidates for a package layer (kiln.image.layers)."""
    return [layers.Candidate(layer.key, layer.meta.get("inputs", {}),
                             str(layer.meta.get("base") or layer.parent), layer.parent, layer.last_used)
            for layer in store.layers() if layer.name == layers.SYSTEM]


def on_cached_packages(plan: list[layers.LayerPlan], base_key: str, store: Store, pair: Pair,
                       tell: bool = True) -> list[layers.LayerPlan]:
    """`plan`, or, when its system layer is not cached but one that lacks only some of its
    packages is, the plan with a package layer on that one."""
    if store.get(plan[0].key) is not None:
        return plan
    parent = layers.package_parent(plan[0], base_key, cached_system_layers(store))
    if parent is None:
        return plan
    chosen = layers.with_package_layer(plan, parent)
    if chosen[0].added and tell:
        say(f"==> [{pair.name}] only packages were added ({' '.join(chosen[0].added)}): a package layer "
            f"on the cached system layer {parent.key[:16]} instead of the whole system layer")
    return chosen


def _published_key(final: Path) -> str:
    try:
        return str(json.loads((final / METADATA).read_text(encoding="utf-8")).get("key", ""))
    except (OSError, ValueError):
        return ""


@contextmanager
def _active(store: Store, pair: Pair) -> Iterator[None]:
    """Count this layered build; the first one of the process sweeps what killed builds left in
    the store (their `.tmp-<key>-<pid>` dirs), under the store's lock."""
    global _ACTIVE
    with _ACTIVE_LOCK:
        if _ACTIVE == 0:
            with store.lock():
                for left in store.sweep():
                    say(f"==> [{pair.name}] removed {left}, left by an interrupted build")
        _ACTIVE += 1
    try:
        yield
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE -= 1


def verify_ssh_config(paths: Paths, pair: Pair) -> Path:
    """The ssh_config of the in-build verification's master connection (kiln.image.inbuild)."""
    return paths.build / "verify" / pair.name / "inbuild.ssh_config"


def close_verify_master(paths: Paths, pair: Pair) -> None:
    """End the in-build verification's SSH master, whatever the Packer build did (it closes the
    master itself when it gets to `verify`; a build failing between `connect` and `verify` does not)."""
    config = verify_ssh_config(paths, pair)
    if config.is_file():
        sshconfig.close_master(config, VERIFY_HOST)


def run_packer(argv: list[str], *, step: str, template_dir: Path, log: Path, quiet: bool, timeout: float,
               paths: Paths, pair: Pair) -> None:
    """One `packer build`, bounded by `timeout`; the verification's SSH master is closed after it
    on every path (and recorded meanwhile, for the next run if this one is killed)."""
    config = verify_ssh_config(paths, pair)
    record("ssh", config, host=VERIFY_HOST)
    try:
        run(argv, step=step, cwd=template_dir, log=log, quiet=quiet, timeout=timeout,
            env={"CHECKPOINT_DISABLE": "1", "PACKER_NO_COLOR": "1"})
    finally:
        close_verify_master(paths, pair)
        unrecord("ssh", config)


def _build_layer(plan: layers.LayerPlan, parent_disk: Path | None, pair: Pair, paths: Paths,
                 options: RenderOptions, rendered: RenderedPair, staging: Path, store: Store,
                 proxy: aptcache.Proxy, quiet: bool, timeout: float = PACKER_TIMEOUT,
                 base_key: str = "") -> Layer:
    work = store.staging(plan.key)
    record("path", work)
    log = paths.logs / f"{pair.name}-{plan.name}.log"
    log.unlink(missing_ok=True)
    try:
        variables = {"output_directory": str(work / "output"), "artifact_directory": str(staging),
                     "accelerator": options.accelerator, "git_revision": options.git_revision,
                     "apt_proxy": proxy.guest_url}
        if parent_disk is not None:
            overlay = work / "parent-overlay.qcow2"
            qemu_img = which("qemu-img", publish.QEMU_IMG_HINT)
            run([qemu_img, "create", "-q", "-f", "qcow2", "-b", str(parent_disk), "-F", "qcow2",
                 str(overlay)], step=f"{pair.name}: overlay on the parent layer", log=log, quiet=True,
                timeout=120)
            variables.update(source_image=str(overlay), source_checksum="none")
        template_dir = rendered.directory / plan.template_name
        if options.packer_version.has_plugins:
            packer.init(template_dir, log=log)
        argv = [packer.find_packer(), "build", "-color=false", "-on-error=cleanup"]
        for key, value in sorted(variables.items()):
            argv += ["-var", f"{key}={value}"]
        argv.append(".")
        run_packer(argv, step=f"packer build {pair.name} ({plan.name} layer)", template_dir=template_dir,
                   log=log, quiet=quiet, timeout=timeout, paths=paths, pair=pair)
        (work / "output" / "disk.qcow2").rename(work / "disk.qcow2")
        shutil.rmtree(work / "output")
        (work / "parent-overlay.qcow2").unlink(missing_ok=True)
        if (staging / GUEST_MANIFEST).is_file():  # the top layer's records travel with it
            shutil.copy2(staging / GUEST_MANIFEST, work / GUEST_MANIFEST)
        meta = {"name": plan.name, "parent": plan.parent, "pair": pair.name, "inputs": plan.inputs,
                "base": base_key}
        if plan.added:
            meta["added"] = list(plan.added)
        return store.commit(work, plan.key, meta)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        unrecord("path", work)


def _restore_records(layer: Layer, staging: Path) -> None:
    if (layer.directory / GUEST_MANIFEST).is_file():
        shutil.copy2(layer.directory / GUEST_MANIFEST, staging / GUEST_MANIFEST)


def _publish(config: Config, pair: Pair, top: Layer, plan: list[layers.LayerPlan], staging: Path,
             rendered: RenderedPair) -> None:
    box = publish.publish_box(top.disk, rendered.files["box.Vagrantfile"], staging / f"{pair.name}.box")
    (staging / "packer-manifest.json").unlink(missing_ok=True)
    files = artifact_files(staging)
    version = box_version(config["project"]["version"], float(top.meta["created"]))
    final_box = staging.parent / pair.name / box.name
    write_json(staging / CATALOG, {
        **box_catalog(config["trial"]["box_name"], version, "libvirt", final_box, files[box.name]["sha256"]),
        "description": f"kiln Mesos image {pair.name}, key {top.key}",
    })
    records = {"key": top.key, "box_version": version,
               "layers": [{"name": p.name, "key": p.key, "parent": p.parent, "inputs": p.inputs}
                          for p in plan]}
    (staging / "layers.json").write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")


def explain(final: Path, plan: list[layers.LayerPlan]) -> list[str]:
    """Why a build would rebuild: for each layer, the inputs that differ from the published one's."""
    try:
        old = json.loads((final / "layers.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [f"nothing published at {final}: everything is built"]
    lines = []
    previous = {entry["name"]: entry for entry in old["layers"]}
    for p in plan:
        before = previous.get(p.name)
        if p.added:
            lines.append(f"{p.name}: a package layer adding {' '.join(p.added)} on the cached system layer "
                         f"{p.parent[:16]} ({p.key[:16]})")
        elif before is None:
            lines.append(f"{p.name}: new layer")
        elif before["key"] == p.key:
            lines.append(f"{p.name}: unchanged ({p.key[:16]})")
        else:
            changed = layers.explain(before["inputs"], p.inputs)
            if before["parent"] != p.parent:
                changed.insert(0, "parent layer changed")
            lines.append(f"{p.name}: rebuilt ({before['key'][:16]} -> {p.key[:16]}):")
            lines += [f"    {c}" for c in changed]
    return lines


def metadata_extra(final_or_staging: Path) -> Mapping[str, Any]:
    try:
        return json.loads((final_or_staging / "layers.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
