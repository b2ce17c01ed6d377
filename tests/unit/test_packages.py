"""invoke package's pure parts: recipe keys, the compile's progress, versions, the sandbox command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kiln.errors import UserError
from kiln.packages import build, recipe, sandbox
from kiln.paths import REPO_ROOT

SOURCE = recipe.Source(Path("/src/mesos.tar.xz"), "f" * 64, "test")


@pytest.fixture
def recipe_copy(tmp_path: Path) -> recipe.Recipe:
    folder = tmp_path / "mesos"
    shutil.copytree(REPO_ROOT / "components" / "mesos", folder)
    return recipe.load(folder)


def test_the_compile_key_covers_source_patches_flags_and_toolchain(recipe_copy: recipe.Recipe) -> None:
    def key(rec: recipe.Recipe = recipe_copy, source: recipe.Source = SOURCE,
            packages: str = "gcc 12") -> str:
        return recipe.key(recipe.compile_inputs(rec, source, "debian-12", packages))

    first = key()
    assert key() == first
    assert key(source=recipe.Source(SOURCE.path, "e" * 64, "other")) != first
    assert key(packages="gcc 13") != first
    (recipe_copy.folder / recipe_copy.patches[0]).write_text("changed\n")
    assert key() != first


def test_scripts_shape_the_package_not_the_compile(recipe_copy: recipe.Recipe) -> None:
    compile_before = recipe.compile_inputs(recipe_copy, SOURCE, "debian-12", "gcc 12")
    package_before = recipe.key(recipe.package_inputs(recipe_copy, "c" * 64, "apt"))
    script = recipe_copy.folder / recipe.PACKAGE_SCRIPT
    script.write_text(script.read_text() + "\n# changed\n")
    unit = recipe_copy.folder / "files" / "mesos-master.service"
    reloaded = recipe.load(recipe_copy.folder.parent)
    assert recipe.compile_inputs(reloaded, SOURCE, "debian-12", "gcc 12") == compile_before
    assert recipe.key(recipe.package_inputs(reloaded, "c" * 64, "apt")) != package_before
    after_script = recipe.key(recipe.package_inputs(reloaded, "c" * 64, "apt"))
    unit.write_text(unit.read_text() + "# changed\n")
    assert recipe.key(recipe.package_inputs(reloaded, "c" * 64, "apt")) != after_script


def test_the_java_variant_swaps_flags_adds_packages_and_needs_the_network(recipe_copy: recipe.Recipe) -> None:
    java = recipe.with_java(recipe_copy)
    assert "--enable-java" in java.configure and "--disable-java" not in java.configure
    assert "maven" in java.family("apt")["build_depends"]
    inputs = recipe.compile_inputs(java, SOURCE, "debian-12", "gcc 12")
    assert inputs["network"] is True
    assert "network" not in recipe.compile_inputs(recipe_copy, SOURCE, "debian-12", "gcc 12")


def test_a_source_with_the_wrong_checksum_is_refused(tmp_path: Path, recipe_copy: recipe.Recipe) -> None:
    tarball = tmp_path / "mesos.tar.xz"
    tarball.write_bytes(b"not mesos")
    with pytest.raises(UserError, match="has sha256"):
        recipe.find_source(recipe_copy, tmp_path, str(tarball), "0" * 64)
    with pytest.raises(UserError, match="source_sha256 is empty"):
        recipe.find_source(recipe_copy, tmp_path, str(tarball), "")
    data = json.loads((recipe_copy.folder / "recipe.json").read_text())
    data["source"]["search"] = [str(tmp_path / "nowhere")]
    (recipe_copy.folder / "recipe.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="was not found"):
        recipe.find_source(recipe.load(recipe_copy.folder.parent), tmp_path)


def test_compiler_runs_are_counted_once_each() -> None:
    lines = [
        "/bin/bash ../libtool  --tag=CXX   --mode=compile g++ -DPACKAGE -c -o master.lo ../src/master.cpp",
        "libtool: compile:  g++ -DPACKAGE -c ../src/master.cpp  -fPIC -DPIC -o .libs/master.o",
        "g++ -c -o obj/so/re2/nfa.o -fPIC re2/nfa.cc",
        "g++ -o mesos-master main.o -lmesos",
        "make[2]: Entering directory '/kiln/work/obj/src'",
    ]
    assert [build.is_compiler_run(line) for line in lines] == [True, False, True, False, False]


def test_progress_says_done_expected_elapsed_and_an_estimate() -> None:
    said: list[str] = []
    progress = build.Progress(expected=400, say=said.append, started=0.0)
    progress.done = 100
    assert progress.summary(600.0) == \
        "    compiled 100/400 files, 10m00s elapsed, about 30m00s left (estimate)"
    assert build.Progress(expected=0, say=said.append, started=0.0).summary(4000.0) == \
        "    compiled 0 files, 1h06m elapsed"


def test_package_versions_say_target_and_origin(recipe_copy: recipe.Recipe) -> None:
    assert build.package_version(recipe_copy, "debian-12", prebuilt=False) == "1.11.1-1+kiln.debian12"
    assert build.package_version(recipe_copy, "debian-12", prebuilt=True) == "1.11.1-1+kiln.debian12.prebuilt"


def test_the_sandbox_isolates_network_pid_and_mounts() -> None:
    argv = sandbox.argv(Path("/r"), ["make"], binds=[sandbox.Bind(Path("/w"), "/kiln/work", read_only=False)],
                        env={"KILN_JOBS": "2"})
    assert argv[:8] == ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child",
                        "--net"]
    env_at = argv.index("/usr/bin/env")
    assert argv[env_at + 1] == "-i" and "KILN_JOBS=2" in argv[env_at:] and argv[-1] == "make"
    assert "/w" in argv and "rw" in argv
    assert "--net" not in sandbox.argv(Path("/r"), ["make"], network=True)
    with pytest.raises(ValueError):
        sandbox.argv(Path("/r"), ["x"], binds=[sandbox.Bind(Path("/a"), "../etc")])


def test_targets_of_one_release_share_their_packages() -> None:
    """Packages are keyed by distribution release, not target name: a second target made from
    debian-12's entry builds (and finds) the same package as debian-12."""
    from kiln.config.load import load_config
    from kiln.paths import Paths

    config = load_config(Paths(REPO_ROOT)).data
    config["targets"]["debian-12.9"] = dict(config["targets"]["debian-12"])
    assert build.platform_of(config, "debian-12.9") == build.platform_of(config, "debian-12") == "debian-12"
    assert build.platform_of(config, "amazonlinux-2023") == "amzn-2023"
