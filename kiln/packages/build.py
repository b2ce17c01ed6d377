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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln.errors import StepFailed, UserError
from kiln.fileutil import locked, write_atomic
from kiln.packages import buildroot, sandbox
from kiln.packages import recipe as recipes
from kiln.paths import Paths
from kiln.runner import run

PROGRESS_SECONDS = 60.0
META = "package.json"
Say = Callable[[str], None]


class NotBuilt(Exception):
    """ensure(..., build=False) found no cached package for the current inputs."""


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
                 cache: Path, *, jobs: int, log: Path, say: Say, force: bool = False,
                 build: bool = True) -> Path:
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
        if not build:
            raise NotBuilt(f"{rec.name} is not compiled for these inputs (compile key {ckey[:16]})")
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
        command = sandbox.argv(root.path, ["nice", "-n", "19", "/bin/bash", script], binds=binds, env=env,
                               network=bool(rec.data.get("network")))
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
        os.chmod(tmp, 0o644)
        write_atomic(tree.with_suffix(".json"), json.dumps(meta, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, tree)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info




@dataclass(frozen=True)
class Tree:
    """An installed tree to package: compiled here, or prebuilt (a tarball someone else made)."""

    path: Path
    key: str  # the compile key, or the prebuilt tarball's sha256
    prefix: str
    origin: str  # "compiled" or "prebuilt <file>"


def package_version(rec: recipes.Recipe, target: str, prebuilt: bool) -> str:
    """1.11.1-1+kiln.debian12 (compiled here); a prebuilt tree's package says so in its version."""
    tag = "kiln." + target.replace("-", "").replace(".", "")
    return f"{rec.version}-{rec.revision}+{tag}" + (".prebuilt" if prebuilt else "")


def make_package(rec: recipes.Recipe, tree: Tree, root: buildroot.BuildRoot, target: str, family: str,
                 cache: Path, *, log: Path, say: Say, force: bool = False, build: bool = True) -> Built:
    """The package of `tree`, built when its key has no complete package in the cache."""
    fam = rec.family(family)
    inputs = {**recipes.package_inputs(rec, tree.key, family), "prefix": tree.prefix, "target": target,
              "version": package_version(rec, target, tree.origin != "compiled")}
    pkey = recipes.key(inputs)
    final = package_dir(cache, rec.name, target) / pkey[:16]
    with locked(final.parent / f".{final.name}.lock"):
        meta_file = final / META
        if meta_file.is_file() and not force:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
            return Built(final / meta["file"], meta, True)
        if not build:
            raise NotBuilt(f"{rec.name} is not packaged for these inputs (package key {pkey[:16]})")
        work = Path(tempfile.mkdtemp(prefix=f".{rec.name}-package-", dir=final.parent))
        try:
            env = {"KILN_NAME": rec.name, "KILN_VERSION": inputs["version"], "KILN_FORMAT": fam["format"],
                   "KILN_SUMMARY": str(rec.data.get("summary", rec.name)),
                   "KILN_HOMEPAGE": str(rec.data.get("homepage", "")), "KILN_PREFIX": tree.prefix,
                   "KILN_RUNTIME_DEPENDS": "\n".join(fam["runtime_depends"]),
                   "KILN_TREE_FILE": tree.path.name}
            binds = [sandbox.Bind(tree.path.parent, "/kiln/tree"), sandbox.Bind(rec.folder, "/kiln/recipe"),
                     sandbox.Bind(work, "/kiln/work", read_only=False)]
            script = f"/kiln/recipe/{recipes.PACKAGE_SCRIPT}"
            say(f"==> package: {rec.name} {inputs['version']} ({fam['format']}) from the {tree.origin} tree")
            started = time.monotonic()
            notes: list[str] = []
            try:
                run(sandbox.argv(root.path, ["/bin/bash", script], binds=binds, env=env),
                    step=f"package {rec.name}", log=log, quiet=True,
                    on_line=lambda line: notes.append(line) if line.startswith("kiln-") else None)
            except StepFailed as exc:
                errors = [n for n in notes if n.startswith("kiln-package: error")]
                raise UserError(errors[-1].removeprefix("kiln-package: error: ") if errors
                                else f"packaging {rec.name} failed", f"details in {log}") from exc
            out = work / "out"
            produced = next(n.split(": ", 1)[1] for n in notes if n.startswith("kiln-package: "))
            meta = {
                "name": rec.name, "version": inputs["version"], "format": fam["format"], "file": produced,
                "key": pkey, "inputs": inputs, "tree": {"key": tree.key, "origin": tree.origin},
                "sha256": recipes.sha256_file(out / produced), "size": (out / produced).stat().st_size,
                "depends": (out / "depends.txt").read_text(encoding="utf-8").split("\n")[:-1],
                "files": (out / "files.txt").read_text(encoding="utf-8").split("\n")[:-1],
                "seconds": round(time.monotonic() - started, 1),
            }
            shutil.rmtree(final, ignore_errors=True)
            final.mkdir(parents=True)
            (out / produced).rename(final / produced)
            write_atomic(meta_file, json.dumps(meta, indent=2, sort_keys=True) + "\n")  # last: complete
        finally:
            shutil.rmtree(work, ignore_errors=True)
    say(f"==> package: {final / produced} ({meta['size'] / 2**20:.1f} MiB, {meta['seconds']:.0f}s)")
    return Built(final / produced, meta, False)


def prebuilt_tree(path: Path, sha256: str, prefix: str) -> Tree:
    """A tree someone else compiled (e.g. ../shared/mesos/*.tar.xz), checked against its sha256."""
    if not path.is_file():
        raise UserError(f"prebuilt tree {path} does not exist")
    actual = recipes.sha256_file(path)
    if sha256 and actual != sha256.lower():
        raise UserError(f"prebuilt tree {path} has sha256 {actual}, expected {sha256}")
    return Tree(path, actual, prefix, f"prebuilt {path.name}")


def ensure(config: Mapping[str, Any], paths: Paths, name: str, target: str, *, force: bool = False,
           jobs: int = 0, say: Say, build: bool = True) -> Built:
    """`invoke package NAME --target T`: the cached package, or build it (compiling when the tree
    is not cached either). components.<name>.build selects the source or a prebuilt tree."""
    component = paths.root / "components" / name
    rec = recipes.load(component)
    settings = dict(config["components"].get(name, {}).get("build", {}))
    if settings.get("java"):
        rec = recipes.with_java(rec)
    if target not in config["targets"]:
        known = ", ".join(sorted(config["targets"]))
        raise UserError(f"--target {target!r}: unknown target (known: {known})")
    target_cfg = config["targets"][target]
    family = target_cfg["family"]
    fam = rec.family(family)
    cache = paths.cache
    log = paths.logs / f"package-{name}-{target}.log"
    # Packages are made for a distribution release, not a target name: two targets of the same
    # release (debian-12 and a variant of it) share the build root, the compiled tree and the package.
    platform = platform_of(config, target)
    root = buildroot.ensure(platform, target_cfg, list(fam["build_depends"]), cache, log=log, say=say)
    if settings.get("tree") == "prebuilt":
        tree = recipes.prebuilt(rec, paths.root, platform)
        tree = prebuilt_tree(tree.path, tree.sha256, tree.prefix)
    elif settings.get("tree"):
        tree_path = Path(settings["tree"])
        tree_path = tree_path if tree_path.is_absolute() else paths.root / tree_path
        tree = prebuilt_tree(tree_path, str(settings.get("tree_sha256", "")),
                             str(settings.get("tree_prefix") or "/usr/local"))
    else:
        source = recipes.find_source(rec, paths.root, str(settings.get("source", "")),
                                     str(settings.get("source_sha256", "")))
        path = compile_tree(rec, source, root, platform, cache, jobs=jobs or int(settings.get("jobs", 2)),
                            log=log, say=say, force=force, build=build)
        compiled = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        tree = Tree(path, compiled["compile_key"], _prefix(rec), "compiled")
    return make_package(rec, tree, root, platform, family, cache, log=log, say=say, force=force, build=build)


def platform_of(config: Mapping[str, Any], target: str) -> str:
    """The distribution release a target's packages are built for: "<distro>-<release>" (debian-12)."""
    from kiln.config.targets import load_targets

    facts = load_targets(config)[target]
    return f"{facts.distro}-{facts.release}"


def _prefix(rec: recipes.Recipe) -> str:
    flag = next((f for f in rec.configure if f.startswith("--prefix=")), "--prefix=/usr/local")
    return flag.split("=", 1)[1]


def wanted(config: Mapping[str, Any], paths: Paths, components: Sequence[str]) -> list[str]:
    """The components among `components` whose config asks for the package kiln builds."""
    return [c for c in components
            if (paths.root / "components" / c / recipes.RECIPE_FILE).is_file()
            and config["components"].get(c, {}).get("source") == "build"]
