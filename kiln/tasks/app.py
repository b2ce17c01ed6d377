"""The operations behind each invoke task, free of invoke so tests can call them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.checks import Summary
from kiln.config.load import Config
from kiln.config.targets import select_pairs
from kiln.errors import UserError
from kiln.image.render import RenderedPair, RenderOptions, render_all, render_options
from kiln.image.validate import packer_checks, shellcheck_checks
from kiln.output import say
from kiln.paths import Paths
from kiln.vagrant.render import vagrant_checks


@dataclass(frozen=True)
class RenderResult:
    packer: list[RenderedPair]
    vagrant: list[Path]
    options: RenderOptions


def render(
    config: Config, paths: Paths, targets: Sequence[str] = (), builders: Sequence[str] = (),
    shapes: Sequence[str] | None = None,
) -> RenderResult:
    from kiln.vagrant.render import render_cluster, write_cluster

    pairs = select_pairs(config.data, targets or None, builders or None)
    # Render every Vagrantfile in memory before writing anything (the build key included).
    clusters = [render_cluster(config, s, paths) for s in (shapes if shapes is not None
                                                          else config["cluster"]["shapes"])]
    options = render_options(config, paths)
    for name, reason in config.excluded.items():
        say(f"--> component {name} excluded: {reason}")
    rendered = render_all(config, pairs, paths, options)
    vagrant_dirs = [write_cluster(c) for c in clusters]
    return RenderResult(rendered, vagrant_dirs, options)


def validate(config: Config, paths: Paths, targets: Sequence[str] = (),
             builders: Sequence[str] = ()) -> Summary:
    result = render(config, paths, targets, builders)
    summary = Summary()
    say(f"==> packer validate: {sum(len(r.templates) for r in result.packer)} template(s) "
        f"(Packer {result.options.packer_version})")
    for check in packer_checks(result.packer, paths):
        summary.add(check)
    say("==> shellcheck: components/*/bake.sh, components/*/package/*.sh, provision/*.sh")
    for check in shellcheck_checks(paths):
        summary.add(check)
    say(f"==> vagrant validate: the trial Vagrantfile and {len(result.vagrant)} cluster Vagrantfile(s)")
    for check in vagrant_checks([paths.root, *result.vagrant], paths):
        summary.add(check)
    return summary


def reap(paths: Paths) -> list[str]:
    """Stop and remove what kiln runs that are gone (killed) left, one line each: their processes,
    staging directories and SSH masters (kiln.runner's run records), and, as root, their network
    namespaces, daemons and guard routes (kiln.vagrant.netns)."""
    from kiln import runner

    runner.configure_records(paths.cache / "runs", paths.root)
    lines = runner.reap_stale()
    if os.geteuid() == 0 and shutil.which("ip"):
        from kiln.vagrant import netns

        lines += netns.reap_stale()
    return lines


def clean(paths: Paths, everything: bool = False) -> list[Path]:
    """Remove generated files; keep caches (base images, probe results) unless everything. First
    what killed runs left is reported and removed (reap); refused while another kiln run works in
    this tree (its staging and logs are under build/)."""
    from kiln import runner

    for line in reap(paths):
        say(f"==> {line}")
    live = runner.live_runs(paths.root)
    if live:
        raise UserError(f"{live[0].describe()} is still working in {paths.root}"
                        + (f" (and {len(live) - 1} more)" if len(live) > 1 else ""),
                        f"wait for it to end, or stop it (kill {live[0].pid}: it cleans up after itself), "
                        "then run `invoke clean` again")
    if not paths.build.exists():
        return []
    keep = set() if everything else {"cache", "base", "keys"}
    vagrant = paths.build / "vagrant"
    if "vagrant" not in keep and any(vagrant.glob("*/.vagrant/machines/*/*/id")):
        raise UserError(f"{vagrant} holds running or halted Vagrant machines",
                        "run `invoke down --destroy` first")
    removed = []
    for child in sorted(paths.build.iterdir()):
        if child.name in keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
        removed.append(child)
    return removed


# -- invoke clean --boxes -------------------------------------------------------------------------

@dataclass(frozen=True)
class BoxPlan:
    """What `invoke clean --boxes` removes: kiln's box folder in Vagrant's home and the box images
    vagrant-libvirt (or kiln) put into libvirt's pool."""

    box_name: str
    folder: Path  # <VAGRANT_HOME>/boxes/<name with / as -VAGRANTSLASH->
    volumes: list[str]
    pool_note: str  # why the pool was not looked at, or ""


def box_stays(box: Any) -> str:
    """What `invoke down --destroy` leaves behind: the box the cluster booted (its "box" entry in
    kiln-cluster.json), and how to remove it; "" when the entry names none."""
    from kiln.vagrant.boxes import vagrant_home

    if not isinstance(box, dict) or not box.get("name"):
        return ""
    version = f" {box['version']}" if box.get("version") else ""
    return (f"the box {box['name']}{version} stays: in Vagrant's boxes ({vagrant_home() / 'boxes'}) and, "
            "with libvirt, as an image in libvirt's default pool (about 1 GB each); "
            "`invoke clean --boxes` removes kiln's boxes")


def libvirt_uri() -> str:
    """The libvirt connection whose pool holds box images: vagrant-libvirt's qemu:///system, unless
    KILN_LIBVIRT_URI names another (tests use virsh's test driver)."""
    import os

    return os.environ.get("KILN_LIBVIRT_URI") or "qemu:///system"


def plan_boxes(config: Config, paths: Paths, libvirt_uri: str = "qemu:///system",
               pool: str = "default") -> BoxPlan:
    """Find kiln's boxes (trial.box_name: local builds and box_url share it); refuse while machines
    of the trial or of a cluster exist, since they boot from those images."""
    from kiln.vagrant.boxes import vagrant_home

    users = [*paths.root.glob(".vagrant/machines/*/*/id"),
             *paths.build.glob("vagrant/*/.vagrant/machines/*/*/id")]
    if users:
        raise UserError(f"Vagrant machines may still use kiln's box (in {users[0].parents[3]})",
                        "run `invoke down --destroy` (clusters) or `vagrant destroy` (the trial) first")
    name = config["trial"]["box_name"]
    folder = vagrant_home() / "boxes" / name.replace("/", "-VAGRANTSLASH-")
    volumes, note = _pool_volumes(name, libvirt_uri, pool)
    return BoxPlan(name, folder, volumes, note)


def _pool_volumes(box_name: str, uri: str, pool: str) -> tuple[list[str], str]:
    """The pool's volumes named like kiln/vagrant/boxes.py libvirt_volume() of this box, any version."""
    import shutil as _shutil

    from kiln.runner import capture
    from kiln.vagrant.boxes import libvirt_volume

    virsh = _shutil.which("virsh")
    if virsh is None:
        return [], "virsh is not installed (apt-get install libvirt-clients): libvirt's pool not checked"
    listing = capture([virsh, "-c", uri, "vol-list", "--pool", pool], timeout=30, merge_stderr=True)
    if listing is None:
        return [], f"libvirt at {uri} did not list pool {pool!r}: its volumes were not checked"
    prefix, suffix = libvirt_volume(box_name, "<version>").split("<version>")
    names = [line.split()[0] for line in listing.splitlines()[2:] if line.strip()]
    return [n for n in names if n.startswith(prefix) and n.endswith(suffix)], ""


def remove_boxes(plan: BoxPlan, libvirt_uri: str = "qemu:///system", pool: str = "default") -> list[str]:
    """Remove what plan_boxes found; one line per thing removed."""
    from kiln.runner import run, which

    done = []
    if plan.folder.is_dir():
        size = sum(f.stat().st_size for f in plan.folder.rglob("*") if f.is_file() and not f.is_symlink())
        versions = sorted(p.name for p in plan.folder.iterdir() if p.is_dir())
        shutil.rmtree(plan.folder)
        done.append(f"Vagrant box {plan.box_name} ({', '.join(versions) or 'no version'}) from "
                    f"{plan.folder.parent}: {size / 2**20:.0f} MiB")
    if plan.volumes:
        virsh = which("virsh", "apt-get install libvirt-clients")
        for volume in plan.volumes:
            run([virsh, "-c", libvirt_uri, "vol-delete", "--pool", pool, volume],
                step=f"virsh vol-delete {volume}", quiet=True, timeout=120)
            done.append(f"libvirt volume {volume} from pool {pool} ({libvirt_uri})")
    return done
