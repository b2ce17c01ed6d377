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

CALLS = {"which", "run", "capture", "Popen", "check_output", "check_call", "call", "argv", "have"}
# Where the host runs programs: the host package, the task file, the benchmarks.
HOST_CODE = ("kiln", "tasks.py", "benchmarks")
SHELLS = {"sh", "bash", "/bin/sh", "/bin/bash", "/usr/bin/sh", "/usr/bin/bash"}
# Words before a command (keywords, exec) and builtins (the whole command runs no program).
SHELL_PREFIXES = {"if", "then", "else", "elif", "while", "until", "do", "!", "{", "exec", "time", "command"}
SHELL_BUILTINS = {"set", "shift", "cd", "export", "local", "read", "return", "exit", "trap", "eval", "fi",
                  "done", "esac", "for", "case", "[", "[[", "test", "true", "false", ":", "echo", "printf",
                  "wait", "break", "continue", "}", "unset", "in"}
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


def _text(node: ast.expr | None, constants: dict[str, ast.expr]) -> str:
    """The text of a string expression: a literal, a module constant, or an f-string's literal parts
    (each placeholder becomes the word X)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name) and node.id in constants:
        return _text(constants[node.id], constants)
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "X" for v in node.values)
    return ""


def _literals(nodes: list[ast.expr | None]) -> list[str]:
    return [n.value for n in nodes if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _bound_values(target: ast.expr, source: ast.expr,
                  constants: dict[str, ast.expr]) -> tuple[str, list[str]]:
    """(name, program names) a loop binds: `for tool in ("ip", ...)`, and the keys of a module-level
    dict iterated as `for name, package in TOOLS.items()`; ("", []) for any other loop."""
    if isinstance(target, ast.Tuple) and target.elts and isinstance(target.elts[0], ast.Name):
        target = target.elts[0]
    if not isinstance(target, ast.Name):
        return "", []
    if isinstance(source, ast.Call) and isinstance(source.func, ast.Attribute) \
            and source.func.attr in ("items", "keys") and isinstance(source.func.value, ast.Name):
        source = constants.get(source.func.value.id)  # type: ignore[assignment]
    if isinstance(source, ast.Name):
        source = constants.get(source.id)  # type: ignore[assignment]
    if isinstance(source, ast.Dict):
        return target.id, _literals(list(source.keys))
    if isinstance(source, ast.Tuple | ast.List):
        return target.id, _literals(list(source.elts))
    return "", []


def _loops_around(node: ast.AST, parents: dict[ast.AST, ast.AST],
                  constants: dict[str, ast.expr]) -> dict[str, list[str]]:
    """The loop variables in scope at `node`, innermost loop first (a name bound by two loops of one
    module is resolved by the loop that encloses the call)."""
    loops: dict[str, list[str]] = {}
    here = parents.get(node)
    while here is not None:
        generators = [here] if isinstance(here, ast.For) else getattr(here, "generators", []) \
            if isinstance(here, ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp) else []
        for gen in generators:
            name, values = _bound_values(gen.target, gen.iter, constants)
            if name and name not in loops:
                loops[name] = values
        here = parents.get(here)
    return loops


def shell_programs(script: str) -> list[str]:
    """The programs a shell script runs: the first word of each simple command (after keywords,
    `exec`, and VAR=value assignments), builtins left out."""
    found = []
    for command in re.split(r"\n|;|&&|\|\||\||\$\(|`|\bthen\b|\bdo\b|\belse\b", script):
        words = command.split()
        while words and (words[0] in SHELL_PREFIXES or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", words[0])):
            words = words[1:]
        if words and words[0] in SHELL_BUILTINS:
            continue
        if words and not words[0].startswith(("#", "$", '"', "'", "-")) \
                and re.fullmatch(r"[\w./+-]+", words[0]):
            found.append(words[0].rsplit("/", 1)[-1])
    return found


def _host_shell_scripts(node: ast.List | ast.Tuple, constants: dict[str, ast.expr]) -> list[tuple[str, str]]:
    """Scripts an argv literal runs with the host's shell: [..., "sh", "-c", SCRIPT, ...]; not those run
    inside another root (an argv that chroots first)."""
    words = [_text(e, constants) if not isinstance(e, ast.Subscript) else _subscript(e) for e in node.elts]
    scripts = []
    for i, word in enumerate(words):
        if word in SHELLS and "chroot" not in words[:i]:
            rest = words[i + 1:]
            if "-c" in rest[:3]:
                at = i + 1 + rest.index("-c") + 1
                if at < len(node.elts):
                    scripts.append((word, _text(node.elts[at], constants)))
    return scripts


def _subscript(node: ast.Subscript) -> str:
    """tools["chroot"] names the program chroot."""
    key = node.slice
    return key.value if isinstance(key, ast.Constant) and isinstance(key.value, str) else ""


def _host_files() -> list[Path]:
    files: list[Path] = []
    for name in HOST_CODE:
        path = REPO_ROOT / name
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return files


def programs_in_code() -> dict[str, set[str]]:
    """{program: {where it is called}} over the host's code: every call that runs or looks up a
    program, argv defaults (`unshare: str = "unshare"`), argv-building functions' literal returns,
    the host's program for each shell it starts, and the programs of the scripts that shell runs."""
    found: dict[str, set[str]] = {}

    def add(program: str, path: Path, line: int) -> None:
        found.setdefault(program.rsplit("/", 1)[-1], set()).add(f"{path.relative_to(REPO_ROOT)}:{line}")

    for path in _host_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        constants = _constants(tree)
        parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
        for node in ast.walk(tree):
            loops = _loops_around(node, parents, constants)
            if isinstance(node, ast.FunctionDef):
                # def argv(..., unshare: str = "unshare"): the default is the program run
                named = [*node.args.args, *node.args.kwonlyargs]
                defaults = [*([None] * (len(node.args.args) - len(node.args.defaults))), *node.args.defaults,
                            *node.args.kw_defaults]
                for arg, default in zip(named, defaults, strict=True):
                    if isinstance(default, ast.Constant) and default.value == arg.arg:
                        add(arg.arg, path, node.lineno)
                if node.name.endswith("argv"):  # def libvirtd_argv(): return ["libvirtd"]
                    for ret in ast.walk(node):
                        if isinstance(ret, ast.Return) and isinstance(ret.value, ast.List) and ret.value.elts:
                            for program in _strings(ret.value.elts[0], constants, loops):
                                add(program, path, ret.lineno)
            if isinstance(node, ast.List | ast.Tuple):
                for shell, script in _host_shell_scripts(node, constants):
                    for program in [shell, *shell_programs(script)]:
                        add(program, path, node.lineno)
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
            elif name not in ("which", "have"):
                continue  # run(argv) with a variable: its program is found where argv is built
            for program in _strings(first, constants, loops):
                add(program, path, node.lineno)
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


def test_the_derivation_reads_host_shell_scripts_and_argv_defaults() -> None:
    """Programs that only a shell script the host runs names (the package sandbox's mount script,
    netns's libvirtd wrapper), the shell itself, and argv defaults (sandbox.argv's unshare)."""
    found = programs_in_code()
    assert {"sh", "mkdir", "chroot", "mount", "unshare"} <= set(found)
    assert any(site.startswith("kiln/packages/sandbox.py") for site in found["mkdir"])
    assert any(site.startswith("kiln/vagrant/netns.py") for site in found["mount"])
    script = 'set -eu\nroot=$1; shift 3\nwhile [ "$1" != -- ]; do mkdir -p "$x"; done\nexec chroot "$root"'
    assert shell_programs(script) == ["mkdir", "chroot"]
    assert shell_programs("X=1 ip link set lo up && exec libvirtd | tee log") == ["ip", "libvirtd", "tee"]


# Where a program is called says which goal needs it (kiln/image: building, ...); code that serves
# every goal (keys, ssh, the runner, doctor, nightly, tasks.py, benchmarks) is not mapped.
GOAL_OF = {"kiln/image/": "build", "kiln/packages/": "build", "kiln/vagrant/": "vagrant", "kiln/aws/": "aws",
           "kiln/tasks/app.py": "vagrant"}  # app.py runs virsh for `invoke clean --boxes`
OPTIONAL = {"VBoxManage"}  # goal 'vagrant-vbox': VirtualBox is optional (libvirt works too)


def test_each_program_is_checked_for_the_goals_whose_code_runs_it() -> None:
    wrong = {}
    for program, sites in programs_in_code().items():
        tool = doctor.BY_PROGRAM.get(program)
        if tool is None or program in OPTIONAL:
            continue
        for site in sites:
            goal = next((g for prefix, g in GOAL_OF.items() if site.startswith(prefix)), None)
            if goal is not None and goal not in tool.goals:
                wrong.setdefault(program, set()).add(f"{site} needs it for '{goal}'")
    assert wrong == {}, "doctor does not check these for the goal that runs them"


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
