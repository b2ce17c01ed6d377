"""End to end on this machine, offline: bake the debian-12 image with real Packer + QEMU,
boot it, verify it. The slowest tests kiln has (TCG: minutes), and the proof that the
whole pipeline works.

Runs against the repository's own build/ (so the base image cache is shared with
`invoke build` and between CI runs on the same machine), with the offline profile. The
build itself is the one `invoke nightly` makes (conftest's `nightly` fixture): these tests
check what it left, then interrupt a second build.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_helpers import MESOS_SETS, NO_MESOS

from kiln.image import boximage
from kiln.paths import REPO_ROOT

pytestmark = [pytest.mark.vm, pytest.mark.slow]

PAIR = "debian-12-qemu"
ARTIFACTS = REPO_ROOT / "build" / "artifacts"
INVOKE = [sys.executable, "-m", "invoke", "--search-root", str(REPO_ROOT)]
BUILD = [*INVOKE, "build", "--profile", "offline", *MESOS_SETS, "--target", "debian-12", "--builder", "qemu"]


def _processes(pattern: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if "pgrep" not in ln]


def _no_leftovers() -> None:
    assert not (ARTIFACTS / f".{PAIR}.partial").exists(), "a staging directory was left behind"
    assert _processes("qemu-system-x86_64.*debian-12-qemu") == []
    assert _processes("packer build") == []


@pytest.fixture(scope="module")
def built(nightly: subprocess.CompletedProcess[str], debian_box: Path) -> Path:
    return debian_box.parent


def test_build_produces_image_box_manifests_and_metadata(built: Path) -> None:
    _no_leftovers()
    meta = json.loads((built / "kiln-metadata.json").read_text())
    files = meta["artifacts"]
    assert f"{PAIR}.box" in files and "image-manifest.json" in files
    assert not any(name.endswith((".qcow2", ".img")) for name in files), files  # the image is kept once
    image = boximage.locate(built / f"{PAIR}.box")
    info = subprocess.run(["qemu-img", "info", "--output=json", image.qemu_filename], capture_output=True,
                          text=True, check=True).stdout
    assert json.loads(info)["format"] == "qcow2" and "backing-filename" not in json.loads(info)
    for name, info in files.items():
        assert len(info["sha256"]) == 64, name
    components = meta["components"]
    for name in ("base", "java", "zookeeper", "docker", "haproxy", "qemu-kvm", "node"):
        assert components[name]["version"], name
    assert "marathon" not in components
    if not NO_MESOS:
        assert components["mesos"]["source"] == "build"
        assert components["mesos"]["version"].startswith("1.11.1")
    assert meta["tools"]["packer"] == "1.6.6" or meta["tools"]["packer"] >= "1.7"
    assert [layer["name"] for layer in meta["layers"]] == ["system", "payload"]
    assert meta["key"] == meta["layers"][-1]["key"]
    print("stage seconds:", meta["stages_seconds"])
    print("sizes (MiB):", {k: round(v["bytes"] / 2**20, 1) for k, v in files.items()})
    assert (ARTIFACTS.parent / "reports" / f"{PAIR}-inbuild.xml").exists()


def test_box_catalog_is_accepted_by_vagrant(built: Path, tmp_path: Path) -> None:
    catalog = json.loads((built / "box-catalog.json").read_text())
    provider = catalog["versions"][0]["providers"][0]
    assert provider["name"] == "libvirt"
    assert provider["url"] == (built / f"{PAIR}.box").as_uri()
    env = {**os.environ, "VAGRANT_HOME": str(tmp_path / "vagrant.d"), "VAGRANT_CHECKPOINT_DISABLE": "1"}
    add = subprocess.run(["vagrant", "box", "add", "--provider", "libvirt", str(built / "box-catalog.json")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert add.returncode == 0, add.stdout + add.stderr
    listing = subprocess.run(["vagrant", "box", "list"], capture_output=True, text=True, env=env)
    assert catalog["name"] in listing.stdout


def test_interrupted_build_leaves_no_artifact_no_layer_and_no_process(built: Path, own_cache: Path) -> None:
    """SIGTERM in the middle of provisioning a layer (--force: every layer is rebuilt): no
    staging dir, no QEMU, no packer, no new layer; the previous complete artifact stays."""
    before = (built / "kiln-metadata.json").read_bytes()
    layers_before = sorted(p.name for p in (own_cache / "layers").iterdir())
    proc = subprocess.Popen([*BUILD, "--force"], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if "kiln[packages]: installing" in line:  # the system layer's packages are going in
            break
    assert proc.poll() is None, "".join(seen[-50:])
    os.kill(proc.pid, signal.SIGTERM)
    rest, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, rest[-3000:]
    assert "interrupted" in rest
    _no_leftovers()
    assert (built / "kiln-metadata.json").read_bytes() == before
    assert sorted(p.name for p in (own_cache / "layers").iterdir()) == layers_before
