"""invoke package NAME: build a component from source into the target's native package.

Steps, each cached (see recipe.py for the two keys):
1. the build root of the target (buildroot.py);
2. compile: compile.sh in the root, in <cache>/work/<name>-<compile key>/ (kept between
   runs, so an interrupted compile resumes), then the installed tree saved as
   <cache>/packages/<name>/<target>/tree-<compile key>.tar and the work dir removed;
3. package: package.sh turns the tree into a .deb (or .rpm) in
   <cache>/packages/<name>/<target>/<package key>/, with package.json (key, inputs,
   sha256, size, file list) written last: a directory without it is not a package.

A compile prints a progress line every `PROGRESS_SECONDS`: compiler runs done / expected
(the recipe's compile_units, measured on a previous build), elapsed, and an estimate.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln.errors import StepFailed
from kiln.fileutil import locked, write_atomic
from kiln.packages import buildroot, sandbox
from kiln.packages import recipe as recipes
from kiln.runner import run

PROGRESS_SECONDS = 60.0
META = "package.json"
Say = Callable[[str], None]


@dataclass
class Progress:
    """Counts compiler runs in compile.sh's output and says how far the compile is."""

    expected: int
    say: Say
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    step: str = ""
    _last: float = 0.0

    def line(self, text: str) -> None:
        if text.startswith("kiln-step: "):
            self.step = text[len("kiln-step: "):]
            self.say(f"==> compile: {self.step}")
        elif is_compiler_run(text):
            self.done += 1
        now = time.monotonic()
        if self.step == "compile" and now - self._last >= PROGRESS_SECONDS:
            self._last = now
            self.say(self.summary(now))

    def summary(self, now: float) -> str:
        elapsed = now - self.started
        text = f"    compiled {self.done}"
        if self.expected:
            text += f"/{self.expected}"
        text += f" files, {_clock(elapsed)} elapsed"
        if self.expected and self.done:
            left = max(self.expected - self.done, 0) * elapsed / self.done
            text += f", about {_clock(left)} left (estimate)"
        return text


def is_compiler_run(line: str) -> bool:
    """One line per file compiled: make echoes each compile command once (a libtool compile
    echoes the libtool call, then libtool repeats it as "libtool: compile:"; count the first)."""
    if line.startswith("libtool: ") or " -c " not in f" {line} ":
        return False
    words = line.split()
    return bool(words) and (words[0].endswith(("gcc", "g++", "cc", "c++")) or "--mode=compile" in words)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


@dataclass(frozen=True)
class Built:
    path: Path  # the .deb/.rpm
    meta: dict[str, Any]
    cached: bool


def package_dir(cache: Path, name: str, target: str) -> Path:
    return cache / "packages" / name / target


def compile_tree(rec: recipes.Recipe, source: recipes.Source, root: buildroot.BuildRoot, target: str,
                 cache: Path, *, jobs: int, log: Path, say: Say, force: bool = False) -> Path:
    """The installed tree of `rec` as a tar, compiled when not cached."""
    inputs = recipes.compile_inputs(rec, source, target, root.packages)
    ckey = recipes.key(inputs)
    out_dir = package_dir(cache, rec.name, target)
    tree = out_dir / f"tree-{ckey[:16]}.tar"
    work = cache / "work" / f"{rec.name}-{target}-{ckey[:16]}"
    with locked(cache / "work" / f".{work.name}.lock"):
        if tree.is_file() and not force:
            say(f"==> compile: cached tree {tree.name} (compile key {ckey[:16]})")
            return tree
        if force and work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        write_atomic(work / "kiln-inputs.json", json.dumps(inputs, indent=2, sort_keys=True) + "\n")
        src_dir = source.path if source.path.is_dir() else source.path.parent
        inner_source = "/kiln/src" if source.path.is_dir() else f"/kiln/src/{source.path.name}"
        env = {
            "KILN_SOURCE": inner_source,
            "KILN_PATCHES": "\n".join(rec.patches),
            "KILN_CONFIGURE": "\n".join(rec.configure),
            "KILN_DROP": "\n".join(rec.drop),
            "KILN_JOBS": str(jobs),
        }
        binds = [sandbox.Bind(src_dir, "/kiln/src"), sandbox.Bind(rec.folder, "/kiln/recipe"),
                 sandbox.Bind(work, "/kiln/work", read_only=False)]
        script = f"/kiln/recipe/{recipes.COMPILE_SCRIPT}"
        command = sandbox.argv(root.path, ["nice", "-n", "19", "/bin/bash", script], binds=binds, env=env)
        progress = Progress(rec.compile_units, say)
        say(f"==> compile: {rec.name} {rec.version} for {target} with {jobs} jobs; log: {log} "
            f"(work dir {work}, kept until the tree is saved: an interrupted compile resumes)")
        started = time.monotonic()
        try:
            run(command, step=f"compile {rec.name}", log=log, quiet=True, on_line=progress.line)
        except StepFailed as exc:
            raise StepFailed(f"compile {rec.name} (last step: {progress.step or 'start'})", exc.command,
                             exc.returncode, log) from None
        seconds = time.monotonic() - started
        say(progress.summary(time.monotonic()).replace("    compiled", "==> compile: done,"))
        out_dir.mkdir(parents=True, exist_ok=True)
        _save_tree(work / "stage", tree, {**inputs, "compile_key": ckey, "compiler_runs": progress.done,
                                          "seconds": round(seconds, 1)})
        shutil.rmtree(work)
    return tree


def _save_tree(stage: Path, tree: Path, meta: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{tree.name}.", dir=tree.parent)
    os.close(fd)
    try:
        with tarfile.open(tmp, "w") as tar:
            tar.add(stage, arcname=".", filter=_root_owned)
        write_atomic(tree.with_suffix(".json"), json.dumps(meta, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, tree)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


