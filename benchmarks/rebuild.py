#!/usr/bin/env python3
"""How much the layer cache saves: the same image built cold, then again after typical changes.

In a temporary copy of this checkout with an empty cache of its own (KILN_ROOT, KILN_CACHE_DIR),
one process, one machine:

    1. a cold build of debian-12 (qemu)
    2. a rebuild with nothing changed
    3. a rebuild after changing one file of the node configurator (kiln_node/render.py)
    4. a rebuild after changing one component setting (components.haproxy.poll_seconds)
    5. a rebuild after adding one package to a component (jq to the haproxy component)
    6. a cold build of a second target that shares the base and system layers

prints each wall time with its ratio to the cold build, the bytes the package cache downloaded,
which layers ran, and the cache's size. Mesos comes from the recipe's prebuilt tree (compiling
it takes an hour: `invoke package mesos` measures that on its own).

    .venv/bin/python benchmarks/rebuild.py [--keep DIR]

Missing tools, a --keep directory that holds something else, and a failed build end with one
`error:` line and exit code 2 (1 for a failed build), never a traceback; the tools are checked
before anything is copied.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MARKER = ".kiln-rebuild-benchmark"  # a --keep directory this benchmark made
INVOKE = [sys.executable, "-m", "invoke", "--search-root", str(ROOT)]
COMMON = ["--profile", "offline", "--set", "components.mesos.build.tree=prebuilt", "--builder", "qemu"]
SECOND = "debian-12.9"  # a second target with debian-12's base: it shares the base and system layers


def build(tree: Path, cache: Path, target: str = "debian-12") -> tuple[float, int, str]:
    env = {**os.environ, "KILN_ROOT": str(tree), "KILN_CACHE_DIR": str(cache)}
    started = time.monotonic()
    done = subprocess.run([*INVOKE, "build", *COMMON, "--target", target], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        print(done.stdout[-4000:], done.stderr[-3000:], file=sys.stderr)
        raise BenchError(f"the {target} build failed (exit {done.returncode}); its output is above", 1)
    fetched = sum(float(m) for m in re.findall(r"package cache: ([0-9.]+) MiB downloaded", done.stdout))
    state = done.stdout.strip().splitlines()[-1].split("(", 1)[-1].rstrip(")")
    return seconds, int(fetched * 2**20), state


class BenchError(Exception):
    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def preflight() -> None:
    """What the builds need, before anything is copied: root (the base image) and the build tools."""
    from kiln import doctor

    if os.geteuid() != 0:
        raise BenchError("the cold build makes a base image (loop devices, mount): run the benchmark as root")
    missing = [f"{t.program} ({doctor.fix_for(t)})" for t in doctor.TOOLS
               if "build" in t.goals and shutil.which(t.program) is None]
    if missing:
        raise BenchError(f"missing tools for a build: {', '.join(missing)} (scripts/setup installs them; "
                         "`invoke doctor --goal build` checks)")


def check_keep(keep: Path | None) -> None:
    """--keep DIR is refused when it holds anything this benchmark did not make (its kiln/ and cache/
    are replaced) or lies in the checkout it copies. Writes nothing."""
    if keep is None:
        return
    keep = keep.resolve()
    if keep == ROOT or (ROOT in keep.parents and (ROOT / "build") not in [keep, *keep.parents]):
        raise BenchError(f"--keep {keep}: inside the checkout it copies; pick a directory outside it "
                         f"(or under {ROOT / 'build'})")
    if keep.exists() and not keep.is_dir():
        raise BenchError(f"--keep {keep}: exists and is not a directory")
    if keep.is_dir() and any(keep.iterdir()) and not (keep / MARKER).exists():
        raise BenchError(f"--keep {keep}: holds files this benchmark did not make (it replaces kiln/ and "
                         "cache/ there); pick an empty or new directory")


def workdir(keep: Path | None) -> Path:
    """--keep DIR (checked), marked as this benchmark's; else a new temp dir."""
    if keep is None:
        return Path(tempfile.mkdtemp(prefix="kiln-rebuild-"))
    keep = keep.resolve()
    keep.mkdir(parents=True, exist_ok=True)
    (keep / MARKER).write_text("made by benchmarks/rebuild.py\n", encoding="utf-8")
    return keep


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temp dir, removed)")
    args = parser.parse_args(argv)
    try:
        check_keep(args.keep)  # options first, then tools; nothing is written before both pass
        preflight()
        return bench(workdir(args.keep), args.keep is not None)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def bench(work: Path, keep: bool) -> int:
    tree, cache = work / "kiln", work / "cache"
    shutil.rmtree(tree, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(".git", ".venv", "build", "__pycache__"))
    (tree / ".venv").symlink_to(ROOT / ".venv")
    config = json.loads((tree / "config.json").read_text())
    config["targets"][SECOND] = dict(config["targets"]["debian-12"])
    (tree / "config.json").write_text(json.dumps(config, indent=2))

    def edit_node() -> None:
        path = tree / "kiln_node" / "render.py"
        path.write_text(path.read_text() + "\n# benchmark: one configurator file changed\n")

    def edit_setting() -> None:
        data = json.loads((tree / "config.json").read_text())
        data["components"]["haproxy"]["poll_seconds"] += 1
        (tree / "config.json").write_text(json.dumps(data, indent=2))

    def add_package() -> None:
        path = tree / "components" / "haproxy" / "component.json"
        facts = json.loads(path.read_text())
        facts["packages"]["apt"].append("jq")
        path.write_text(json.dumps(facts, indent=2))

    steps = [("cold build", None, "debian-12"), ("no-op rebuild", None, "debian-12"),
             ("one configurator file", edit_node, "debian-12"),
             ("one component setting", edit_setting, "debian-12"),
             ("one added package", add_package, "debian-12"),
             ("second target, shared layers", None, SECOND)]
    rows = []
    try:
        for label, change, target in steps:
            if change is not None:
                change()
            seconds, fetched, state = build(tree, cache, target)
            rows.append((label, seconds, fetched, state))
            print(f"{label}: {seconds:.1f}s, {fetched / 2**20:.1f} MiB downloaded ({state})", flush=True)
        cold = rows[0][1]
        print("\n| step | wall time | ratio to cold | downloaded | layers |")
        print("|---|---|---|---|---|")
        for label, seconds, fetched, state in rows:
            ratio = seconds / cold
            print(f"| {label} | {seconds:.0f} s | {ratio:.3f} | {fetched / 2**20:.1f} MiB | {state} |")
        print(f"\ncache: {size(cache / 'layers') / 2**30:.2f} GiB of layers, "
              f"{size(cache / 'apt') / 2**20:.0f} MiB of packages, in {cache}")
        for published in sorted((tree / "build" / "artifacts").glob("[!.]*")):
            files = ", ".join(f"{p.name} {p.stat().st_size / 2**20:.0f} MiB"
                              for p in sorted(published.iterdir()) if p.stat().st_size >= 2**20)
            print(f"published {published.name}: {size(published) / 2**20:.0f} MiB ({files})")
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
