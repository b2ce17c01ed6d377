"""The accelerator probe: boot-sector layout, cache keying, resolve semantics, and one real
probe against the installed QEMU."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kiln import accel


def test_boot_sector_is_a_bootable_512_byte_sector() -> None:
    sector = accel.boot_sector()
    assert len(sector) == 512
    assert sector[-2:] == b"\x55\xaa"
    # `mov si, imm16` must point at the marker inside the sector loaded at 0x7c00.
    assert sector[5] == 0xBE
    address = sector[6] | sector[7] << 8
    assert sector[address - 0x7C00:].startswith(accel.MARKER)


def test_cached_only_never_boots_and_says_how_to_probe(tmp_path: Path) -> None:
    result = accel.probe(tmp_path, cached_only=True)
    if Path("/dev/kvm").exists():
        assert result.accel == "unknown"
        assert "invoke doctor --probe" in result.reason
    else:
        assert result.accel == "tcg"
    assert not (tmp_path / accel.CACHE_FILE).exists()


def test_cache_is_used_only_for_the_same_key(tmp_path: Path) -> None:
    cache = tmp_path / accel.CACHE_FILE
    cache.write_text(json.dumps({"key": accel._cache_key(), "accel": "kvm", "reason": "cached verdict",
                                 "cached": False, "seconds": 1.0}))
    hit = accel.probe(tmp_path, cached_only=True)
    assert (hit.accel, hit.reason, hit.cached) == ("kvm", "cached verdict", True)
    stale = {**accel._cache_key(), "kernel": "another-kernel"}
    cache.write_text(json.dumps({"key": stale, "accel": "kvm", "reason": "old", "cached": False,
                                 "seconds": 1.0}))
    assert accel.probe(tmp_path, cached_only=True).reason != "old"


def test_resolve_semantics(tmp_path: Path) -> None:
    assert accel.resolve("tcg", tmp_path).accel == "tcg"
    (tmp_path / accel.CACHE_FILE).write_text(json.dumps({
        "key": accel._cache_key(), "accel": "tcg", "reason": "KVM guest hung", "cached": False,
        "seconds": 0.0}))
    forced = accel.resolve("kvm", tmp_path)
    assert forced.accel == "kvm"
    assert "KVM guest hung" in forced.reason
    assert accel.resolve("auto", tmp_path).accel == "tcg"
    assert accel.packer_accelerator("kvm") == "kvm" and accel.libvirt_driver("tcg") == "qemu"


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86 not installed")
def test_real_probe_reaches_a_verdict_within_its_timeout(tmp_path: Path) -> None:
    result = accel.probe(tmp_path, force=True, timeout=15)
    assert result.accel in ("kvm", "tcg")
    assert result.reason
    # KVM timeout + the TCG proof run, plus slack; a hung probe would exceed this.
    assert result.seconds < 15 + 30 + 10
    assert json.loads((tmp_path / accel.CACHE_FILE).read_text())["accel"] == result.accel
    if result.accel == "tcg" and Path("/dev/kvm").exists():
        assert "ran under TCG" in result.reason  # the probe proved itself


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86 not installed")
def test_boot_sector_guest_prints_its_marker_under_tcg() -> None:
    ok, _seconds, note = accel.boots("tcg", 20, kernel=None)
    assert ok, note
