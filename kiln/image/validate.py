"""`invoke validate`: real `packer validate` on every rendered template and shellcheck on the
bake scripts (components/, provision/); `vagrant validate` is kiln.vagrant.render's. The caller
collects the rows into one kiln.checks.Summary and decides the exit code from `Summary.ok`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kiln.checks import FAIL, PARTIAL, PASS, SKIP, Check
from kiln.errors import MissingTool
from kiln.image import packer
from kiln.image.render import RenderedPair
from kiln.paths import Paths
from kiln.runner import run, which


def _first_error(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    # Packer prints "Error: N error(s) occurred:" and then the errors as "* ..." lines.
    for prefix in ("* ", "Error"):
        for ln in lines:
            if ln.startswith(prefix):
                return ln.removeprefix("* ")[:160]
    return (lines[-1] if lines else "no output")[:160]


def _validate_one(item: RenderedPair, template: Path, version: packer.PackerVersion | None,
                  paths: Paths) -> Check:
    layer = template.parent.name if template.parent != item.directory else ""
    subject = f"{item.pair.name} ({layer})" if layer else item.pair.name
    log = paths.logs / f"validate-{item.pair.name}{'-' + layer if layer else ''}.log"
    log.unlink(missing_ok=True)
    # Packer refuses an existing output directory; a build may be running, so point
    # validation at a path that never exists.
    variables: dict[str, str] = {"output_directory": str(item.directory / "validate-output")}
    note = ""
    if item.pair.builder.needs == "disk" and item.pair.target.image is not None \
            and not item.pair.target.image["sha256"] and layer in ("", "system"):  # the others: kiln's disks
        # A checksum file URL would be fetched by validate; offline that fails.
        variables["source_checksum"] = "none"
        note = "source image sha256 not pinned (`invoke pin`): validated with checksum none"
    if version is not None and version.has_plugins:
        init = packer.init(template.parent, log=log)
        if init.returncode != 0:
            return Check("packer init", subject, FAIL, _first_error(init.output))
    result = packer.validate(template.parent, variables=variables, log=log)
    if result.returncode == 0:
        # Validated with `source_checksum = none`: the template's checksum is not what was checked.
        return Check("packer validate", subject, PARTIAL if note else PASS, note)
    return Check("packer validate", subject, FAIL, f"{_first_error(result.output)} (log: {log})")


def packer_checks(rendered: Sequence[RenderedPair], paths: Paths) -> list[Check]:
    try:
        exe = packer.find_packer()
    except MissingTool as exc:
        return [Check("packer validate", r.pair.name, FAIL, str(exc)) for r in rendered]
    version = packer.installed_version(exe)
    checks = []
    for item in rendered:
        if not item.templates:
            checks.append(Check("packer validate", item.pair.name, SKIP,
                                "no Packer build: the box is made from the qemu image"))
            continue
        for template in item.templates:
            checks.append(_validate_one(item, template, version, paths))
    return checks


def bake_scripts(paths: Paths) -> list[Path]:
    """Every shell script kiln runs while baking: components' bake.sh and package scripts, and
    the shared library and image-wide steps in provision/."""
    found = [*paths.root.glob("components/*/bake.sh"), *paths.root.glob("components/*/package/*.sh"),
             *paths.provision.glob("*.sh")]
    return sorted(found)


def shellcheck_checks(paths: Paths) -> list[Check]:
    scripts = bake_scripts(paths)
    if not scripts:
        return [Check("shellcheck", "components/, provision/", SKIP, "no scripts found")]
    try:
        exe = which("shellcheck", "apt-get install shellcheck")
    except MissingTool as exc:
        return [Check("shellcheck", "components/, provision/", FAIL, str(exc))]
    checks = []
    for script in scripts:
        result = run([exe, "-x", "-f", "gcc", script.name], step="shellcheck",
                     cwd=script.parent, quiet=True, check=False)
        rel = str(script.relative_to(paths.root))
        if result.returncode == 0:
            checks.append(Check("shellcheck", rel, PASS))
        else:
            n = len([ln for ln in result.output.splitlines() if ln.strip()])
            checks.append(Check("shellcheck", rel, FAIL,
                                f"{n} finding(s): {_first_error(result.output)}"))
    return checks
