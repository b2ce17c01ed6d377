"""The operations behind each invoke task, free of invoke so tests can call them."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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
    options = render_options(config, paths)
    for name, reason in config.excluded.items():
        say(f"--> component {name} excluded: {reason}")
    # Render every Vagrantfile in memory before writing anything.
    clusters = [render_cluster(config, s, paths) for s in (shapes if shapes is not None
                                                          else config["cluster"]["shapes"])]
    rendered = render_all(config, pairs, paths, options)
    vagrant_dirs = [write_cluster(c) for c in clusters]
    return RenderResult(rendered, vagrant_dirs, options)


def validate(config: Config, paths: Paths, targets: Sequence[str] = (),
             builders: Sequence[str] = ()) -> Summary:
    result = render(config, paths, targets, builders)
    summary = Summary()
    say(f"==> packer validate: {len(result.packer)} template(s) "
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


def clean(paths: Paths, everything: bool = False) -> list[Path]:
    """Remove generated files; keep caches (base images, probe results) unless everything."""
    if not paths.build.exists():
        return []
    keep = set() if everything else {"cache", "base", "keys"}
    removed = []
    for child in sorted(paths.build.iterdir()):
        if child.name in keep:
            continue
        if child.name == "vagrant" and any(child.glob("*/.vagrant/machines/*/*/id")):
            raise UserError(f"{child} holds running or halted Vagrant machines",
                            "run `invoke down --destroy` first")
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
        removed.append(child)
    return removed
