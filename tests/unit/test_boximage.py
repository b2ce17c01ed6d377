"""The published image lives once, inside the libvirt box (kiln.image.publish.publish_box), and is
read there in place (kiln.image.boximage): by qemu-img here, as by the boot test's QEMU and the
VirtualBox conversion. Real qemu-img throughout (scripts/setup installs qemu-utils)."""

from __future__ import annotations

import gzip
import hashlib
import subprocess
import tarfile
from pathlib import Path

import pytest

from kiln.errors import KilnError, UserError
from kiln.image import boximage, publish

VAGRANTFILE = 'Vagrant.configure("2") do |config|\nend\n'


def _qemu_img(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def chain(tmp_path: Path) -> tuple[Path, Path]:
    """A two-layer chain like the cache's (a base, and a layer holding only what differs from
    it) and the raw disk the whole chain equals."""
    raw = tmp_path / "disk.raw"
    with raw.open("wb") as fh:
        fh.truncate(32 << 20)
        fh.seek(1 << 20)
        fh.write(b"base layer" * 1000)
    base = tmp_path / "base.qcow2"
    assert _qemu_img("convert", "-f", "raw", "-O", "qcow2", str(raw), str(base)).returncode == 0
    with raw.open("r+b") as fh:
        fh.seek(8 << 20)
        fh.write(b"top layer" * 1000)
    top = tmp_path / "top.qcow2"
    made = _qemu_img("convert", "-f", "raw", "-O", "qcow2", "-B", str(base), "-F", "qcow2",
                     str(raw), str(top))
    assert made.returncode == 0, made.stderr
    assert "backing file" in _qemu_img("info", str(top)).stdout
    return top, raw


def test_the_box_is_the_only_copy_and_its_image_is_the_flattened_chain(chain: tuple[Path, Path],
                                                                      tmp_path: Path) -> None:
    top, raw = chain
    out_dir = tmp_path / "staging"
    out_dir.mkdir()
    box = publish.publish_box(top, VAGRANTFILE, out_dir / "t-qemu.box")
    assert sorted(p.name for p in out_dir.iterdir()) == ["t-qemu.box"]
    with tarfile.open(box) as tar:
        assert tar.getnames() == ["metadata.json", "Vagrantfile", "box.img"]
    image = boximage.locate(box)
    info = _qemu_img("info", image.qemu_filename)
    assert info.returncode == 0 and "file format: qcow2" in info.stdout
    assert "backing file" not in info.stdout  # standalone: flattened
    compare = _qemu_img("compare", "-F", "raw", image.qemu_filename, str(raw))
    assert compare.returncode == 0, compare.stdout + compare.stderr


def test_the_image_read_in_place_equals_the_extracted_member(chain: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
    top, _ = chain
    box = publish.publish_box(top, VAGRANTFILE, tmp_path / "t-qemu.box")
    image = boximage.locate(box)
    with tarfile.open(box) as tar:
        fh = tar.extractfile(boximage.IMAGE_MEMBER)
        assert fh is not None
        extracted = fh.read()
    assert (image.size, image.sha256()) == (len(extracted), hashlib.sha256(extracted).hexdigest())
    assert image.box == box.resolve() and image.name == "t-qemu.box:box.img"


def test_an_overlay_can_sit_on_the_image_inside_the_box(chain: tuple[Path, Path], tmp_path: Path) -> None:
    """What the boot test does: a throwaway overlay whose backing file is the box's image."""
    top, raw = chain
    box = publish.publish_box(top, VAGRANTFILE, tmp_path / "t-qemu.box")
    before = box.read_bytes()
    overlay = tmp_path / "overlay.qcow2"
    created = _qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                        boximage.qemu_filename(boximage.locate(box)), str(overlay))
    assert created.returncode == 0, created.stderr
    write = subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 7 0 65536", str(overlay)],
                           capture_output=True, text=True, timeout=60)
    assert write.returncode == 0, write.stderr
    assert _qemu_img("compare", "-F", "raw", str(overlay), str(raw)).returncode == 1  # the overlay changed
    assert box.read_bytes() == before  # the box did not


def test_a_plain_qcow2_file_is_named_by_its_absolute_path(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert boximage.qemu_filename(Path("x.qcow2")) == str(tmp_path / "x.qcow2")


def _tar(path: Path, members: dict[str, bytes], mode: str = "w") -> Path:
    import io

    with tarfile.open(path, mode) as tar:  # type: ignore[call-overload]
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: _tar(p, {"metadata.json": b"{}"}), "holds no box.img"),
    (lambda p: _tar(p, {"box.img": b"QFI\xfb" * 100}, "w:gz"), "not a readable uncompressed box"),
    (lambda p: p.write_bytes(gzip.compress(b"x" * 100)), "not a readable uncompressed box"),
    (lambda p: p.write_bytes(b""), "not a readable uncompressed box"),
])
def test_what_is_not_a_plain_box_is_one_clear_error(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    box = tmp_path / "x.box"
    make(box)
    with pytest.raises(UserError, match=message):
        boximage.locate(box)


def test_a_truncated_box_is_refused(tmp_path: Path) -> None:
    box = _tar(tmp_path / "x.box", {"box.img": b"QFI\xfb" * 100_000})
    image = boximage.locate(box)
    with box.open("r+b") as fh:
        fh.truncate(image.offset + 1000)
    with pytest.raises(UserError, match="truncated"):
        boximage.locate(box)
    with pytest.raises(UserError, match="truncated"):
        image.sha256()


def test_a_failed_flatten_leaves_no_box_and_no_hidden_image(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-layer.qcow2"
    out_dir = tmp_path / "staging"
    out_dir.mkdir()
    with pytest.raises(KilnError):
        publish.publish_box(missing, VAGRANTFILE, out_dir / "t-qemu.box")
    assert list(out_dir.iterdir()) == []
