"""Builds that only redo what changed, for real: after the session's cold build (the nightly's, in
the session's own empty cache), a rebuild with nothing changed starts neither Packer nor QEMU and
keeps the box version; a change to one kiln-node file, in a copy of the tree, rebuilds only the
top layer, and an interrupted rebuild of that layer is not a cache hit afterwards; the result
boots and passes its suites."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from e2e_helpers import INVOKE, MESOS_SETS, PAIR

from kiln.paths import REPO_ROOT

pytestmark = [pytest.mark.vm, pytest.mark.slow]

BUILD = ["build", "--profile", "offline", *MESOS_SETS, "--target", "debian-12", "--builder", "qemu"]
WATCHED = ("packer", "qemu-system-x86_64", "qemu-img")


def _watching(bin_dir: Path, log: Path) -> dict[str, str]:
    """An environment in which packer and QEMU, when started, first write their command line to
    `log` (then run the real program)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for tool in WATCHED:
        real = shutil.which(tool)
        assert real, tool
        wrapper = bin_dir / tool
        wrapper.write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\nexec {real} "$@"\n')
        wrapper.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def _started(log: Path) -> list[str]:
    """What ran besides version queries (kiln asks packer and qemu for their versions: keys)."""
    lines = log.read_text().splitlines() if log.exists() else []
    return [ln for ln in lines if not ln.endswith((" version", " --version"))]


def _invoke(args: list[str], *, root: Path = REPO_ROOT, env: dict[str, str] | None = None,
            timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    environment = {**(env or os.environ), "KILN_ROOT": str(root)}
    started = time.monotonic()
    done = subprocess.run([*INVOKE, *args], cwd=REPO_ROOT, env=environment, capture_output=True, text=True,
                          timeout=timeout)
    print(f"$ invoke {' '.join(args)}  ({time.monotonic() - started:.0f}s, exit {done.returncode})")
    print(done.stdout[-6000:], done.stderr[-3000:])
    return done


@pytest.fixture(scope="module")
def published(nightly: subprocess.CompletedProcess[str], debian_box: Path) -> dict:
    return json.loads((debian_box.parent / "kiln-metadata.json").read_text())


def test_the_cold_build_built_every_layer(published: dict) -> None:
    stages = published["stages_seconds"]
    assert {"layer system", "layer payload", "publish"} <= set(stages), stages
    print("cold build stages:", stages)


def test_a_rebuild_with_nothing_changed_starts_neither_packer_nor_qemu(published: dict,
                                                                       tmp_path: Path) -> None:
    log = tmp_path / "started.log"
    catalog = REPO_ROOT / "build" / "artifacts" / PAIR / "box-catalog.json"
    before = json.loads(catalog.read_text())["versions"][0]["version"]
    started = time.monotonic()
    done = _invoke(BUILD, env=_watching(tmp_path / "bin", log))
    seconds = time.monotonic() - started
    assert done.returncode == 0
    assert f"up to date (key {published['key'][:16]})" in done.stdout
    assert _started(log) == [], "a no-op rebuild ran Packer or QEMU"
    assert json.loads(catalog.read_text())["versions"][0]["version"] == before == published["box_version"]
    print(f"no-op rebuild: {seconds:.1f}s")


@pytest.fixture(scope="module")
def changed_tree(published: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkout whose kiln-node differs by one line (a comment)."""
    tree = tmp_path_factory.mktemp("layered") / "kiln"
    shutil.copytree(REPO_ROOT, tree, ignore=shutil.ignore_patterns(".git", ".venv", "build", "__pycache__"))
    # The build key (which every layer key covers) is the session cache's: the same for both trees.
    target = tree / "kiln_node" / "render.py"
    target.write_text(target.read_text() + "\n# e2e: a kiln-node change that only the payload layer sees\n")
    return tree


def test_an_interrupted_layer_is_not_a_cache_hit(changed_tree: Path, own_cache: Path) -> None:
    env = {**os.environ, "KILN_ROOT": str(changed_tree)}
    proc = subprocess.Popen([*INVOKE, *BUILD], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen: list[str] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            seen.append(line)
            if "kiln[node]" in line:  # the payload layer is provisioning
                break
        assert proc.poll() is None, "".join(seen[-60:])
        assert any("layer system: cached" in line for line in seen), "".join(seen[-60:])
        os.kill(proc.pid, signal.SIGTERM)
        rest, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:  # a failed check above: stop the build (kiln cleans up on SIGTERM)
            os.killpg(proc.pid, signal.SIGTERM)
            proc.communicate(timeout=300)
    assert proc.returncode == 130, rest[-3000:]
    assert not [p for p in (own_cache / "layers").iterdir() if p.name.startswith(".tmp-")]
    explained = _invoke(["build", "--explain", *BUILD[1:]], root=changed_tree)
    assert explained.returncode == 0
    assert "system: unchanged" in explained.stdout or "nothing published" in explained.stdout
    assert not subprocess.run(["pgrep", "-f", f"packer build.*{changed_tree}"], capture_output=True).stdout


def test_a_kiln_node_change_rebuilds_only_the_payload_layer_and_boots(changed_tree: Path,
                                                                      published: dict) -> None:
    done = _invoke(BUILD, root=changed_tree)
    assert done.returncode == 0
    assert "layer system: cached" in done.stdout
    assert "built payload" in done.stdout, "the payload layer was not rebuilt"
    meta = json.loads((changed_tree / "build" / "artifacts" / PAIR / "kiln-metadata.json").read_text())
    system, payload = meta["layers"]
    assert system["key"] == published["layers"][0]["key"]
    assert payload["key"] != published["layers"][1]["key"]
    assert "layer system" not in meta["stages_seconds"]
    print("payload-only rebuild stages:", meta["stages_seconds"])
    booted = _invoke(["test", "--profile", "offline", "--target", "debian-12"], root=changed_tree)
    assert booted.returncode == 0
    report = (changed_tree / "build" / "reports" / f"{PAIR}-boot.xml").read_text()
    assert 'failures="0"' in report and 'errors="0"' in report
    qemu = subprocess.run(["pgrep", "-f", f"qemu-system-x86_64.*{changed_tree}"], capture_output=True)
    assert not qemu.stdout, "the boot test left its QEMU running"
