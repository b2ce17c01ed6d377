"""Baking kiln's components into a real Debian 12 chroot, for the integration tests: a cached
minbase bookworm tarball (mmdebstrap, keyed by its inputs), a fresh tree per use set up as
Packer leaves a build VM, and running bake scripts in it as Packer would. Packages come from
Debian's mirror; a policy-rc.d forbids service starts; mounts are released in a finally."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import subprocess
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kiln.config import catalog
from kiln.config.load import load_config
from kiln.paths import REPO_ROOT, Paths

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
INCLUDE = ("python3", "ca-certificates", "systemd", "openssh-server", "curl", "gnupg")
IMAGE_STEPS = ("manifest", "cleanup")  # provision/<step>.sh; everything else is a component's bake.sh
BUILD_TIME = "2026-01-02T03:04:05Z"
HOSTNAME = "kiln-bake"
CACHE = REPO_ROOT / "build" / "cache"
SNAPSHOT_DIRS = ("etc", "opt", "usr/local")


def say(message: str) -> None:
    print(f"[chroot-bake] {message}", flush=True)


def _mmdebstrap_version() -> str:
    out = subprocess.run(["mmdebstrap", "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def make_base_tar() -> Path:
    """A minbase bookworm tarball, rebuilt only when its inputs change."""
    recipe = {"suite": SUITE, "mirror": MIRROR, "variant": "minbase", "include": sorted(INCLUDE),
              "mmdebstrap": _mmdebstrap_version(), "arch": os.uname().machine}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    target = CACHE / "provision-chroot" / f"debian-12-minbase-{key}.tar"
    if target.exists():
        say(f"chroot base: cached {target.relative_to(REPO_ROOT)}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".tar.partial")
    started = time.monotonic()
    result = subprocess.run(
        ["mmdebstrap", "--quiet", "--format=tar", "--variant=minbase", f"--include={','.join(INCLUDE)}",
         SUITE, str(partial), MIRROR],
        capture_output=True, text=True, check=False, timeout=1800)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        pytest.fail(f"mmdebstrap failed:\n{result.stdout}\n{result.stderr}")
    partial.rename(target)
    (target.parent / f"{target.name}.recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")
    say(f"chroot base: built {target.relative_to(REPO_ROOT)} in {time.monotonic() - started:.1f} s")
    return target


# --------------------------------------------------------------------------------------------
# A chroot to bake in


@dataclass
class Chroot:
    root: Path
    mounts: list[Path] = field(default_factory=list)

    def path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")

    def run(self, script: str, env_file: str = "/tmp/kiln/kiln.env",
            timeout: int = 3600) -> subprocess.CompletedProcess[str]:
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
               "LANG": "C.UTF-8", "KILN_ENV": env_file, "KILN_SRC": "/tmp/kiln",
               "KILN_BUILD_TIME": BUILD_TIME}
        path = f"provision/{script}.sh" if script in IMAGE_STEPS else f"components/{script}/bake.sh"
        argv = ["/usr/sbin/chroot", str(self.root), "bash", f"/tmp/kiln/{path}"]
        return subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=timeout)

    def sh(self, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
               "HOME": "/root"}
        result = subprocess.run(["/usr/sbin/chroot", str(self.root), "/bin/sh", "-c", command], env=env,
                                capture_output=True, text=True, check=False, timeout=600)
        if check and result.returncode != 0:
            raise AssertionError(f"`{command}` failed in the chroot:\n{result.stdout}\n{result.stderr}")
        return result

    def mount(self, *args: str, at: str) -> None:
        point = self.path(at)
        point.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", *args, str(point)], check=True)
        self.mounts.append(point)

    def umount(self, at: str) -> None:
        point = self.path(at)
        if point in self.mounts:
            umount(point)
            self.mounts.remove(point)

    def umount_all(self) -> None:
        for point in reversed(self.mounts):
            umount(point)
        self.mounts.clear()

    def snapshot(self) -> dict[str, tuple[object, ...]]:
        """Type, mode, owner and content (sha256 or link target) of everything under /etc, /opt,
        /usr/local, plus dpkg's status database."""
        entries: dict[str, tuple[object, ...]] = {}
        for top in SNAPSHOT_DIRS:
            for dirpath, dirnames, filenames in os.walk(self.path(top)):
                for name in dirnames + filenames:
                    entries.update(entry(Path(dirpath) / name, self.root))
        entries.update(entry(self.path("var/lib/dpkg/status"), self.root))
        return entries


def umount(point: Path) -> None:
    if subprocess.run(["umount", str(point)], check=False).returncode != 0:
        subprocess.run(["umount", "-l", str(point)], check=False)


def entry(path: Path, root: Path) -> dict[str, tuple[object, ...]]:
    st = path.lstat()
    rel = "/" + str(path.relative_to(root))
    if stat.S_ISLNK(st.st_mode):
        return {rel: ("link", os.readlink(path))}
    meta = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    if stat.S_ISREG(st.st_mode):
        return {rel: ("file", *meta, hashlib.sha256(path.read_bytes()).hexdigest())}
    return {rel: ("dir" if stat.S_ISDIR(st.st_mode) else "other", *meta)}


def diff(before: dict[str, tuple[object, ...]], after: dict[str, tuple[object, ...]]) -> list[str]:
    out = [f"added {p}" for p in sorted(after.keys() - before.keys())]
    out += [f"removed {p}" for p in sorted(before.keys() - after.keys())]
    out += [f"changed {p}: {before[p]} -> {after[p]}" for p in sorted(before.keys() & after.keys())
            if before[p] != after[p]]
    return out


def standin_package(name: str, where: Path) -> Path:
    """The repo's package when it is runnable, else a minimal stand-in (printed as such)."""
    real = REPO_ROOT / name
    if (real / "__init__.py").is_file() and (real / "__main__.py").is_file():
        return real
    pkg = where / name
    if pkg.exists():
        return pkg
    say(f"{name}/ in the repo is not a runnable package yet: baking a minimal stand-in")
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""Stand-in for tests."""\n__version__ = "0.0.0+standin"\n')
    (pkg / "__main__.py").write_text(textwrap.dedent("""\
        import argparse
        parser = argparse.ArgumentParser(prog="standin")
        parser.add_argument("command", choices=["apply", "run"])
        parser.parse_args()
    """))
    return pkg


@contextlib.contextmanager
def chroot_from(base_tar: Path, work: Path, env_text: str, source: Path = REPO_ROOT) -> Iterator[Chroot]:
    """A fresh tree from `base_tar` set up as Packer leaves a build VM: /tmp/kiln holds components/,
    provision/, kiln_node/, kiln_bridge/, the rendered debian-12 kiln.env and catalog.json.
    Unmounts everything on exit."""
    root = work / "root"
    root.mkdir(parents=True)
    started = time.monotonic()
    subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-xpf", str(base_tar)], check=True)
    say(f"chroot copy: extracted in {time.monotonic() - started:.1f} s")
    box = Chroot(root)
    policy = box.path("usr/sbin/policy-rc.d")
    policy.write_text("#!/bin/sh\n# test chroot: no service may start\nexit 101\n")
    policy.chmod(0o755)
    box.path("etc/resolv.conf").unlink(missing_ok=True)
    shutil.copy("/etc/resolv.conf", box.path("etc/resolv.conf"))
    box.path("etc/hostname").write_text(HOSTNAME + "\n")
    src = box.path("tmp/kiln")
    shutil.copytree(source / "provision", src / "provision")
    shutil.copytree(source / "components", src / "components",
                    ignore=shutil.ignore_patterns("__pycache__"))
    config = load_config(Paths(source))
    (src / "catalog.json").write_text(json.dumps(catalog.load(source).node_catalog(config.data)))
    for name in ("kiln_node", "kiln_bridge"):
        shutil.copytree(standin_package(name, work / "standins"), src / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    (src / "kiln.env").write_text(env_text)
    archives = CACHE / "apt-archives" / "debian-12"
    archives.mkdir(parents=True, exist_ok=True)
    try:
        box.mount("-t", "proc", "proc", at="proc")
        # Keeps reruns from downloading every .deb again; unmounted before cleanup.sh runs.
        box.mount("--bind", str(archives), at="var/cache/apt/archives")
        yield box
    finally:
        box.umount_all()
