"""Every external step kiln runs has a bound: each kiln.runner.run() call (and each subprocess.run/
call/check_output) passes `timeout`, so a hung program ends with a message naming the step and its
log (kiln.runner.StepTimedOut) instead of a silent hang. Read from the source (ast)."""

from __future__ import annotations

import ast
from pathlib import Path

from kiln.paths import REPO_ROOT

# Calls without a bound that predate this check, per file, outside the modules that own builds and
# namespaces; a file may lose some, never gain one. The reasons:
KNOWN = {
    "kiln/image/validate.py": 1,  # shellcheck of the bake scripts
    "kiln/image/vm.py": 1,  # qemu-img create of the boot test's overlay
    "kiln/image/vmdk.py": 1,  # qemu-img convert to VMDK
    "kiln/keys.py": 1,  # ssh-keygen
    "kiln/packages/build.py": 2,  # the Mesos compile and package steps (hours, with progress)
    "kiln/vagrant/cluster.py": 1,  # `invoke ssh`: the user's interactive session
}
# The modules whose calls must all be bounded, whatever KNOWN says.
OWNED = ("kiln/runner.py", "kiln/image/build.py", "kiln/image/layered.py", "kiln/image/packer.py",
         "kiln/image/base.py", "kiln/image/boottest.py", "kiln/image/inbuild.py", "kiln/vagrant/netns.py",
         "kiln/nightly.py", "kiln/tasks/app.py")


def _unbounded(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        keywords = {k.arg for k in node.keywords}
        if None in keywords:  # **kwargs: the callee's default decides (checked where it is defined)
            continue
        on_subprocess = (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                         and func.value.id == "subprocess" and func.attr in ("run", "call", "check_output",
                                                                             "check_call"))
        named_run = isinstance(func, ast.Name) and func.id == "run"
        runner_run = (isinstance(func, ast.Attribute) and func.attr == "run"
                      and isinstance(func.value, ast.Name) and func.value.id == "runner")
        kiln_run = (named_run or runner_run) and "step" in keywords
        if (on_subprocess or kiln_run) and "timeout" not in keywords:
            found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    return found


def test_every_external_step_has_a_bound() -> None:
    found: dict[str, list[str]] = {}
    for path in sorted((REPO_ROOT / "kiln").rglob("*.py")):
        calls = _unbounded(path)
        if calls:
            found[str(path.relative_to(REPO_ROOT))] = calls
    owned = [call for name in OWNED for call in found.get(name, [])]
    assert owned == [], f"calls without a timeout: {owned}"
    grown = {name: calls for name, calls in found.items() if len(calls) > KNOWN.get(name, 0)}
    assert grown == {}, f"new calls without a timeout: {grown}"


def test_the_base_recipe_bounds_every_step_it_runs() -> None:
    """_Recipe.sh passes **kwargs to run(): its own default is the bound."""
    import inspect

    from kiln.image.base import STEP_TIMEOUT, _Recipe

    assert inspect.signature(_Recipe.sh).parameters["timeout"].default == STEP_TIMEOUT
