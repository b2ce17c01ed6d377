"""A fresh machine: every program kiln runs is checked by `invoke doctor` for a goal and installed
by scripts/setup, and a missing one fails the goal that needs it.

The list of programs is derived from the code's own tool calls (which(), run(), capture(),
subprocess calls, shutil.which(), the argv of a namespace), read with ast, so that the code,
doctor's table and scripts/setup cannot drift apart.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kiln import doctor
from kiln.paths import REPO_ROOT, Paths

CALLS = {"which", "run", "capture", "Popen", "check_output", "check_call", "call", "argv"}
# Tools doctor names whose package scripts/setup cannot install from Debian's archive.
NOT_FROM_APT = {"VBoxManage": "VirtualBox is not in Debian main; doctor says to get it from virtualbox.org"}
INVOKE = [sys.executable, "-m", "invoke", "--search-root", str(REPO_ROOT)]


def _constants(tree: ast.Module) -> dict[str, ast.expr]:
    """Module-level NAME = value assignments."""
    out: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out.update({t.id: node.value for t in targets if isinstance(t, ast.Name)})
    return out


def _strings(node: ast.expr | None, constants: dict[str, ast.expr], loops: dict[str, list[str]]) -> list[str]:
    """The program names an expression stands for: a literal, a module constant, a loop variable."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Name):
        if node.id in loops:
            return loops[node.id]
        return _strings(constants.get(node.id), constants, {}) if node.id in constants else []
    return []


def _loop_values(tree: ast.Module, constants: dict[str, ast.expr]) -> dict[str, list[str]]:
    """Loop variables bound to literal program names: `for tool in ("ip", ...)`, and the keys of a
    module-level dict iterated as `for name, package in TOOLS.items()`."""
    loops: dict[str, list[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.For | ast.comprehension):
            target, source = node.target, node.iter
            if isinstance(target, ast.Tuple) and target.elts and isinstance(target.elts[0], ast.Name):
                target = target.elts[0]
            if not isinstance(target, ast.Name):
                continue
            if isinstance(source, ast.Call) and isinstance(source.func, ast.Attribute) \
                    and source.func.attr in ("items", "keys") and isinstance(source.func.value, ast.Name):
                source = constants.get(source.func.value.id)  # type: ignore[assignment]
            if isinstance(source, ast.Dict):
                loops[target.id] = [k.value for k in source.keys
                                    if isinstance(k, ast.Constant) and isinstance(k.value, str)]
            elif isinstance(source, ast.Tuple | ast.List):
                loops[target.id] = [e.value for e in source.elts
                                    if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return loops


def programs_in_code() -> dict[str, set[str]]:
    """{program: {where it is called}} over every module of the host package."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO_ROOT / "kiln").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        constants = _constants(tree)
        loops = _loop_values(tree, constants)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name not in CALLS:
                continue
            first = node.args[0]
            if isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Call):
                continue  # a method of a fresh object (Program(...).run(argv)): not a program call
            if isinstance(first, ast.List | ast.Tuple):
                first = first.elts[0] if first.elts else None  # type: ignore[assignment]
            elif name != "which":
                continue  # run(argv) with a variable: its program is found where argv is built
            for program in _strings(first, constants, loops):
                found.setdefault(program, set()).add(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    return found


def setup_packages() -> set[str]:
    text = (REPO_ROOT / "scripts" / "setup").read_text(encoding="utf-8")
    block = re.search(r"^APT_PACKAGES=\((.*?)^\)", text, re.S | re.M)
    assert block, "scripts/setup has no APT_PACKAGES=( ... ) list"
    return {w for line in block.group(1).splitlines() for w in line.split("#")[0].split()}


def test_the_derivation_finds_the_tools_kiln_is_known_to_run() -> None:
    """The ast walk itself: it must see literal calls, module constants, tool tables and loops."""
    found = programs_in_code()
    assert {"packer", "qemu-img", "vagrant", "virsh", "ssh", "ssh-keygen", "ip", "pgrep"} <= set(found)
    assert {"mkfs.ext4", "sfdisk", "losetup", "extlinux"} <= set(found)  # kiln/image/base.py TOOLS
    assert "qemu-system-x86_64" in found  # kiln/image/accel.py QEMU constant
    assert {"virtlogd", "dnsmasq"} <= set(found)  # kiln/vagrant/netns.py: for tool in (...)


def test_every_program_kiln_runs_is_in_doctors_table_and_installed_by_setup() -> None:
    found = programs_in_code()
    absent = {p: sorted(w) for p, w in found.items() if p not in doctor.BY_PROGRAM}
    assert absent == {}, "programs kiln runs that `invoke doctor` does not check"
    packages = setup_packages()
    uninstalled = {t.program: t.package for t in doctor.TOOLS
                   if t.package not in packages and t.program not in NOT_FROM_APT}
    assert uninstalled == {}, "doctor's packages that scripts/setup does not install"
    assert {"e2fsprogs", "iproute2"} <= packages
    assert all(t.goals for t in doctor.TOOLS)
    assert all(g in (*doctor.GOALS, "vagrant-vbox") for t in doctor.TOOLS for g in t.goals)


def _owner(program: str) -> str | None:
    """The Debian package whose file list holds the program found on PATH (usrmerge aware)."""
    path = shutil.which(program)
    if path is None:
        return None
    real = Path(path).resolve()
    candidates = {path, str(real)}
    for p in list(candidates):
        if p.startswith("/usr/"):
            candidates.add(p[4:])
    for candidate in sorted(candidates):
        done = subprocess.run(["dpkg-query", "-S", candidate], capture_output=True, text=True, check=False)
        if done.returncode == 0:
            return done.stdout.split(":")[0].split(",")[0].strip()
    return None


def _depends(package: str) -> set[str]:
    done = subprocess.run(["dpkg-query", "-W", "-f", "${Depends},${Pre-Depends}", package],
                          capture_output=True, text=True, check=False)
    return {re.split(r"[ :(]", d.strip())[0] for d in re.split(r"[,|]", done.stdout) if d.strip()}


def test_doctors_packages_are_the_ones_that_hold_the_programs() -> None:
    """On this Debian machine: `dpkg -S` of each program found names doctor's package (or a package
    doctor's package depends on: libvirt-daemon-system brings libvirt-daemon's libvirtd)."""
    if shutil.which("dpkg-query") is None:
        pytest.skip("dpkg-query is missing: not a Debian/Ubuntu machine, package ownership unknown")
    checked, wrong = [], {}
    for tool in doctor.TOOLS:
        owner = _owner(tool.program)
        if owner is None:
            continue
        checked.append(tool.program)
        if owner != tool.package and owner not in _depends(tool.package):
            wrong[tool.program] = (tool.package, owner)
    assert wrong == {}
    assert len(checked) >= 20, f"only {checked} are installed here"


# -- invoke doctor on a PATH that lacks a tool ---------------------------------------------------------

def _path_without(tmp_path: Path, *left_out: str) -> str:
    """A PATH of links to every program doctor knows that is installed here, minus `left_out`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in doctor.TOOLS:
        real = shutil.which(tool.program)
        if real and tool.program not in left_out:
            (bin_dir / tool.program).symlink_to(real)
    return str(bin_dir)


def _doctor(tree: Paths, path: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KILN_ROOT": str(tree.root), "PATH": path,
           "KILN_CACHE_DIR": str(tree.root / "cache")}
    return subprocess.run([*INVOKE, "doctor", *args], capture_output=True, text=True, env=env, timeout=180,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(("goal", "left_out", "package"), [
    ("build", "mkfs.ext4", "e2fsprogs"),
    ("build", "sfdisk", "fdisk"),
    ("vagrant", "ip", "iproute2"),
    ("vagrant", "virsh", "libvirt-clients"),
    ("all", "packer", "packer"),  # 'all' skipped tools that AWS needs too: packer, ssh
    ("all", "ssh-keygen", "openssh-client"),
])
def test_doctor_fails_the_goal_when_a_tool_it_needs_is_missing(tree: Paths, tmp_path: Path, goal: str,
                                                              left_out: str, package: str) -> None:
    result = _doctor(tree, _path_without(tmp_path, left_out), "--goal", goal)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    row = next((ln for ln in result.stdout.splitlines() if ln.split()[:2] == [left_out, "missing"]), "")
    assert row.endswith(f"apt-get install {package}"), result.stdout
    assert left_out in result.stdout.strip().splitlines()[-1].split(": ", 1)[1].split(", ")
    assert f"missing for '{goal}'" in result.stdout


def test_doctor_passes_the_build_goal_when_every_tool_is_here(tree: Paths, tmp_path: Path) -> None:
    absent = [t.program for t in doctor.TOOLS if "build" in t.goals and shutil.which(t.program) is None]
    if absent:
        pytest.skip(f"not installed on this machine: {', '.join(absent)} (scripts/setup installs them)")
    result = _doctor(tree, _path_without(tmp_path), "--goal", "build")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {ln.split()[0]: ln.split()[1] for ln in result.stdout.splitlines()[2:] if ln.strip()}
    assert {t.program for t in doctor.TOOLS if "build" in t.goals} <= set(rows)
    assert "missing" not in rows.values()
