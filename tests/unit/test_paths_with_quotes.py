"""A checkout (and so every path kiln renders) whose path has spaces and quotes: the rendered
templates still validate, and each path reaches the program that reads it as one whole argument.
The in-build verification's shell-local commands once broke here: `--key /home/me/my kiln/...` split
into two words, and a `"` in the path ended the HCL string (`packer validate` failed).

Real tools: packer validate, vagrant validate, /bin/sh running the rendered commands (with the Python
they start replaced by a stand-in that prints its arguments), bash sourcing kiln.env."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kiln.checks import FAIL
from kiln.config.load import load_config
from kiln.config.targets import select_pairs
from kiln.image import packer
from kiln.image.render import PackerRef, RenderOptions, render_all, shell_local_command
from kiln.image.validate import packer_checks
from kiln.paths import Paths
from kiln.vagrant.render import render_cluster, validate_check, write_cluster

HOSTILE = "my kiln's \"tree\" $HOME `x` \\ end"


@pytest.fixture
def quoted(tree: Paths, tmp_path_factory: pytest.TempPathFactory) -> Paths:
    """The test tree moved under a directory named like HOSTILE."""
    parent = tmp_path_factory.mktemp("paths") / HOSTILE
    shutil.copytree(tree.root, parent, symlinks=True)
    return Paths(root=parent)


@pytest.fixture
def key(quoted: Paths) -> Path:
    path = quoted.root / "keys dir" / "it's \"the\" key"
    path.parent.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def _options(key: Path, extra: tuple[str, ...] = ()) -> RenderOptions:
    version = packer.installed_version() or packer.ASSUMED_VERSION
    return RenderOptions(packer_version=version, git_revision="test", accelerator="tcg", ssh_key=key,
                         verify_extra=extra)


def _verify_steps(text: str) -> list[tuple[str, list[str]]]:
    """(command, environment) of each shell-local step that runs kiln.image.inbuild: its `inline`
    line and the `environment_vars` line under it, HCL escapes undone."""
    def strings(line: str) -> list[str]:
        value = line.split("=", 1)[1].strip()
        return [s.replace("$${", "${").replace("%%{", "%{") for s in json.loads(value)]

    lines = text.splitlines()
    return [(strings(line)[0], strings(lines[i + 1])) for i, line in enumerate(lines)
            if line.strip().startswith("inline") and "kiln.image.inbuild" in line]


def test_a_command_word_stays_one_word_through_hcl_and_the_shell(tmp_path: Path) -> None:
    literal = shell_local_command(["/opt/py thon", "-m", "x", HOSTILE, PackerRef("${build.Host}")])
    assert literal.endswith(' ${build.Host}"') and "$${" not in literal.replace("$HOME", "")
    (command,) = json.loads(f"[{literal}]")
    assert shlex.split(command.replace("${build.Host}", "10.0.2.15")) == [
        "/opt/py thon", "-m", "x", HOSTILE, "10.0.2.15"]


@pytest.mark.skipif(shutil.which("packer") is None,
                    reason="packer is not installed (scripts/setup installs it)")
def test_rendered_templates_validate_and_hand_over_whole_paths(quoted: Paths, key: Path,
                                                               tmp_path: Path) -> None:
    cfg = load_config(quoted, sets=['build.targets=["debian-12", "ubuntu-24.04"]',
                                    'build.builders=["qemu", "amazon-ebs"]'])
    items = render_all(cfg, select_pairs(cfg.data), quoted, _options(key, ("-k not slow and 'x y'",)))
    assert len(items) == 3  # debian-12 qemu; ubuntu-24.04 qemu and amazon-ebs
    checks = packer_checks(items, quoted)
    assert [c for c in checks if c.result == FAIL] == []
    # The shell-local commands, as /bin/sh runs them, with Packer's references filled in and the
    # Python they start replaced by a stand-in that prints its arguments.
    printer = tmp_path / "print args"
    printer.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    printer.chmod(0o755)
    seen = 0
    for item in items:
        for template in item.templates:
            text = template.read_text(encoding="utf-8")
            for command, env in _verify_steps(text):
                seen += 1
                assert env[0] == f"KILN_ROOT={quoted.root}"
                filled = (command.replace("${build.Host}", "127.0.0.1").replace("${build.Port}", "2222")
                          .replace("${build.User}", "debian")
                          .replace(shlex.quote(sys.executable), shlex.quote(str(printer)), 1))
                done = subprocess.run(["/bin/sh", "-c", filled], capture_output=True, text=True, check=True,
                                      env={"PATH": os.environ.get("PATH", ""), "HOME": "/nonexistent"})
                argv = json.loads(done.stdout)
                assert argv[:2] == ["-m", "kiln.image.inbuild"] and argv[2] in ("connect", "verify")
                if item.pair.builder.needs == "ami":
                    assert argv[argv.index("--key-from-env") + 1] == "KILN_INBUILD_KEY"
                    assert env[1] == "KILN_INBUILD_KEY=${build.SSHPrivateKey}"
                else:
                    assert argv[argv.index("--key") + 1] == str(key)
                if argv[2] == "verify":
                    assert argv[-1] == "--extra=-k not slow and 'x y'"
    assert seen >= 4  # connect and verify of the payload layer of each pair that verifies


def test_kiln_env_gives_bash_the_values_whole(quoted: Paths, key: Path) -> None:
    url = "https://example.org/it's?a=\"b\"&c=$HOME&d=`id`"
    cfg = load_config(quoted, sets=['build.targets=["debian-12"]', 'build.builders=["qemu"]',
                                    f"components.marathon.url={json.dumps(url)}"])
    (item,) = render_all(cfg, select_pairs(cfg.data), quoted, _options(key))
    env = item.directory / "kiln.env"
    script = 'set -eu; . "$1"; printf "%s\\n" "$KILN_MARATHON_URL" "$KILN_TARGET"'
    done = subprocess.run(["bash", "-c", script, "bash", str(env)], capture_output=True, text=True,
                          check=True)
    assert done.stdout.splitlines() == [url, "debian-12"]


@pytest.mark.skipif(shutil.which("vagrant") is None,
                    reason="vagrant is not installed (scripts/setup installs it)")
def test_a_cluster_vagrantfile_under_such_a_path_validates(quoted: Paths) -> None:
    from kiln.keys import ensure_build_key

    ensure_build_key(quoted.build)
    directory = write_cluster(render_cluster(load_config(quoted), "1", quoted))
    assert HOSTILE in str(directory)
    check = validate_check(directory, quoted, "libvirt")
    assert check.result != FAIL, check.detail
