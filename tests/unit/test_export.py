"""`invoke export` (kiln/image/export.py): the published image out of its box, as qcow2 or raw.

The bake is made by hand around a small real qcow2 (tests/bake_samples.py), its box packed by
kiln's own publish step; qemu-img is real."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from bake_samples import fake_bake, small_qcow2
from cli_support import assert_refused, invoke, snapshot

from kiln.image import export
from kiln.paths import Paths

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img is not installed")


@pytest.fixture
def baked(tree: Paths, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tree's build/artifacts/ holding a debian-12 QEMU bake; returns the qcow2 inside its box."""
    image = small_qcow2(tmp_path_factory.mktemp("image"))
    fake_bake(tree.artifacts, image, {"base": {"version": "1"}})
    return image


def test_qcow2_is_the_box_image_byte_for_byte(tree: Paths, baked: Path) -> None:
    result = invoke(tree, "export")
    assert result.returncode == 0, result.stderr
    out = tree.build / "exports" / "debian-12-qemu.qcow2"
    assert out.read_bytes() == baked.read_bytes()
    sha = hashlib.sha256(baked.read_bytes()).hexdigest()
    assert f"image sha256 {sha}" in result.stdout
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary file left


def test_raw_is_the_same_disk_and_sparse(tree: Paths, baked: Path, tmp_path: Path) -> None:
    out = tmp_path / "disk.img"
    result = invoke(tree, "export", "--format", "raw", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size == 64 << 20
    assert out.stat().st_blocks * 512 < 32 << 20  # 10 MiB of data in 64 MiB: holes stay holes
    same = subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", str(baked), str(out)],
                          capture_output=True, text=True, check=False)
    assert same.returncode == 0, same.stdout + same.stderr


def test_an_existing_file_is_kept_unless_forced(tree: Paths, baked: Path, tmp_path: Path) -> None:
    out = tmp_path / "image.qcow2"
    out.write_text("keep me")
    assert_refused(invoke(tree, "export", "--output", str(out)), (f"--output {out}: exists", "--force"))
    assert out.read_text() == "keep me"
    result = invoke(tree, "export", "--output", str(out), "--force")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == baked.read_bytes()


@pytest.mark.parametrize(("args", "phrases"), [
    (("--format", "vmdk"), ("--format 'vmdk': expected one of",)),
    (("--target", "debian-13"), ("--target 'debian-13': no such target", "pick one of")),
    (("--target", "ubuntu-24.04"), ("no QEMU bake of ubuntu-24.04", "invoke build --target ubuntu-24.04")),
    (("--output", "/"), ("--output /: is a directory",)),
])
def test_bad_requests_are_one_error_and_write_nothing(tree: Paths, baked: Path, args: tuple[str, ...],
                                                      phrases: tuple[str, ...]) -> None:
    before = snapshot(tree.root)
    assert_refused(invoke(tree, "export", *args), phrases)
    assert snapshot(tree.root) == before


def test_a_box_changed_after_its_build_is_refused(tree: Paths, baked: Path) -> None:
    box = tree.artifacts / "debian-12-qemu" / "debian-12-qemu.box"
    with box.open("r+b") as fh:  # one byte of the image inside the box
        fh.seek(box.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))
    before = snapshot(tree.root)
    assert_refused(invoke(tree, "export"), ("does not match its bake", "changed after the build?"))
    assert snapshot(tree.root) == before


@pytest.mark.parametrize(("fmt", "step"), [("qcow2", "_copy"), ("raw", "run")])
def test_an_interrupt_leaves_no_file(tree: Paths, baked: Path, tmp_path: Path, fmt: str, step: str,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C (SIGTERM becomes the same in a task) once the partial file is written."""
    out = tmp_path / "out" / "image"
    real = getattr(export, step)

    def interrupted(*args: object, **kwargs: object) -> None:
        real(*args, **kwargs)
        assert [p.name for p in out.parent.iterdir()] == [f".image.partial-{os.getpid()}"]
        raise KeyboardInterrupt

    monkeypatch.setattr(export, step, interrupted)
    with pytest.raises(KeyboardInterrupt):
        export.export_image(tree.artifacts, "debian-12", fmt, out)
    assert list(out.parent.iterdir()) == []
