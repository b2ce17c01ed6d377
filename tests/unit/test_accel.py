"""The accelerator probe: cache keying, cached_only, resolve semantics, the kill-on-timeout
plumbing (with real processes), the synthetic guest, and one real probe against the installed
QEMU (on the PVM hosts kiln is developed on: /dev/kvm present, KVM guests hang, so TCG)."""

from __future__ import annotations

import json
import shutil
import struct
import time
from pathlib import Path

import pytest

from kiln.errors import UserError
from kiln.image import accel
from kiln.runner import GRACE_SECONDS

needs_qemu = pytest.mark.skipif(shutil.which(accel.QEMU) is None, reason=f"{accel.QEMU} is not installed")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")  # the host has no init reaping orphans: zombies are dead


def _dies(pid: int, within: float = 3.0) -> bool:
    """Signals are delivered asynchronously: give a killed process a moment to go."""
    deadline = time.monotonic() + within
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _cache(directory: Path, key: dict[str, object], verdict: str, reason: str) -> None:
    (directory / accel.CACHE_FILE).write_text(json.dumps({"key": key, "accel": verdict, "reason": reason}))


def _uncached() -> str:
    """What cached_only answers on this host when the cache has nothing that applies."""
    return "tcg" if accel.kvm_device_problem() else "unknown"


# --- names -----------------------------------------------------------------------------------


def test_each_tool_gets_its_own_name_for_the_accelerator() -> None:
    assert accel.qemu_accel_args("kvm") == ["-accel", "kvm"]
    assert accel.qemu_accel_args("tcg") == ["-accel", "tcg"]
    assert (accel.packer_accelerator("kvm"), accel.packer_accelerator("tcg")) == ("kvm", "tcg")
    assert (accel.libvirt_driver("kvm"), accel.libvirt_driver("tcg")) == ("kvm", "qemu")
    for helper in (accel.qemu_accel_args, accel.packer_accelerator, accel.libvirt_driver):
        with pytest.raises(ValueError):
            helper("unknown")


# --- /dev/kvm checks -------------------------------------------------------------------------


def test_missing_device_means_tcg(tmp_path: Path) -> None:
    problem = accel.kvm_device_problem(tmp_path / "kvm")
    assert problem is not None and problem.startswith("no ")


def test_a_device_that_is_not_kvm_is_refused() -> None:
    # /dev/null opens read-write but does not answer KVM_GET_API_VERSION.
    problem = accel.kvm_device_problem(Path("/dev/null"))
    assert problem is not None and "not a KVM device" in problem


# --- cache -----------------------------------------------------------------------------------


def test_cached_verdict_is_used_for_the_same_key(tmp_path: Path) -> None:
    _cache(tmp_path, accel.cache_key(), "kvm", "cached verdict")
    started = time.monotonic()
    hit = accel.probe(tmp_path, cached_only=True)
    assert (hit.accel, hit.reason, hit.cached) == ("kvm", "cached verdict", True)
    assert time.monotonic() - started < 2
    # force ignores the cache; with cached_only nothing boots either.
    assert accel.probe(tmp_path, force=True, cached_only=True).accel == _uncached()


@pytest.mark.parametrize("field, other", [("kernel", "5.10.0-other"), ("qemu", "QEMU emulator version 9.9"),
                                          ("dev_kvm", "flipped"), ("probe", accel.PROBE_VERSION - 1)])
def test_cached_verdict_of_another_key_is_ignored(tmp_path: Path, field: str, other: object) -> None:
    key = accel.cache_key()
    key[field] = (not key[field]) if other == "flipped" else other
    _cache(tmp_path, key, "kvm", "stale verdict")
    result = accel.probe(tmp_path, cached_only=True)
    assert (result.accel, result.cached) == (_uncached(), False)
    assert result.reason != "stale verdict"


def test_cached_only_never_boots_and_says_how_to_probe(tmp_path: Path) -> None:
    (tmp_path / accel.CACHE_FILE).write_text("{not json")
    started = time.monotonic()
    result = accel.probe(tmp_path, cached_only=True)
    assert time.monotonic() - started < 2
    if accel.kvm_device_problem() is None:
        assert (result.accel, result.reason) == ("unknown", "not probed yet (run `invoke doctor --probe`)")
    else:
        assert result.accel == "tcg" and result.reason == accel.kvm_device_problem()
    assert sorted(p.name for p in tmp_path.iterdir()) == [accel.CACHE_FILE]  # no logs: nothing booted


# --- resolve ---------------------------------------------------------------------------------


def test_resolve_tcg_never_probes(tmp_path: Path) -> None:
    result = accel.resolve("tcg", tmp_path)
    assert result.accel == "tcg"
    assert list(tmp_path.iterdir()) == []


def test_resolve_auto_follows_the_probe(tmp_path: Path) -> None:
    _cache(tmp_path, accel.cache_key(), "tcg", "KVM guest printed nothing")
    auto = accel.resolve("auto", tmp_path)
    assert (auto.accel, auto.reason, auto.cached) == ("tcg", "KVM guest printed nothing", True)
    _cache(tmp_path, accel.cache_key(), "kvm", "a KVM guest booted")
    assert accel.resolve("auto", tmp_path).accel == "kvm"


def test_forcing_kvm_keeps_kvm_and_warns_when_the_probe_disagrees(tmp_path: Path) -> None:
    _cache(tmp_path, accel.cache_key(), "tcg", "KVM guest printed nothing within 20s")
    forced = accel.resolve("kvm", tmp_path)
    assert forced.accel == "kvm"
    assert forced.reason.startswith("WARNING") and "KVM guest printed nothing within 20s" in forced.reason
    _cache(tmp_path, accel.cache_key(), "kvm", "a KVM guest booted in 0.9s")
    agreed = accel.resolve("kvm", tmp_path)
    assert agreed.accel == "kvm" and "WARNING" not in agreed.reason and "agrees" in agreed.reason


def test_resolve_refuses_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="hvf"):
        accel.resolve("hvf", tmp_path)


# --- the watch/kill plumbing, with real processes ---------------------------------------------


def test_timeout_stops_the_whole_process_group(tmp_path: Path) -> None:
    child = tmp_path / "child.pid"
    script = f"sleep 300 & echo $! > {child}; echo started; wait"
    started = time.monotonic()
    result = accel.watch(["sh", "-c", script], ["never printed"], timeout=1.5, log=tmp_path / "w.log")
    took = time.monotonic() - started
    assert result.timed_out and result.matched is None and result.lines == 1
    assert 1.5 <= took < 1.5 + GRACE_SECONDS
    assert _dies(int(child.read_text()))
    assert "timed out" in (tmp_path / "w.log").read_text()


def test_marker_ends_the_watch_early_and_stops_the_program(tmp_path: Path) -> None:
    child = tmp_path / "child.pid"
    script = f"sleep 300 & echo $! > {child}; echo booting; echo 'the MARKER line'; wait"
    started = time.monotonic()
    result = accel.watch(["sh", "-c", script], ["MARKER"], timeout=30)
    assert result.matched == "the MARKER line" and not result.timed_out
    assert time.monotonic() - started < 10
    assert _dies(int(child.read_text()))


def test_a_program_that_exits_reports_its_code() -> None:
    result = accel.watch(["sh", "-c", "echo 'qemu: could not open kernel'; exit 3"], ["MARKER"], timeout=30)
    assert (result.matched, result.timed_out, result.returncode) == (None, False, 3)
    assert result.last_line == "qemu: could not open kernel"


# --- probe guests ----------------------------------------------------------------------------


def test_synthetic_guest_is_a_loadable_multiboot_image() -> None:
    image = accel.long_mode_guest()
    fields = struct.unpack_from("<8I", image)
    magic, flags, checksum, header_addr, load_addr, load_end, bss_end, entry = fields
    assert magic == 0x1BADB002 and (magic + flags + checksum) & 0xFFFFFFFF == 0
    assert flags & 0x10000 and header_addr == load_addr == 0x100000 and load_end == bss_end == 0
    assert load_addr < entry < load_addr + len(image)
    assert accel.SYNTHETIC_MARKER.encode() in image


@needs_qemu
def test_synthetic_guest_reaches_long_mode_and_prints_under_tcg(tmp_path: Path) -> None:
    result = accel.boot(accel.synthetic_guest(tmp_path), "tcg", timeout=30)
    assert result.matched == accel.SYNTHETIC_MARKER, result


@pytest.fixture(scope="session")
def probe_kernel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The kernel the probe would boot: the host's, else Debian's cloud kernel via apt."""
    from kiln.paths import Paths

    kernel = accel.find_kernel(Paths().cache) or accel.fetch_kernel(tmp_path_factory.mktemp("kernel"))
    if kernel is None:
        pytest.skip("no readable host kernel, and apt-get download of the cloud kernel failed "
                    "(not a Debian/Ubuntu host, or no package lists)")
    return kernel


@needs_qemu
def test_kernel_guest_boots_to_its_root_mount_panic_under_tcg(tmp_path: Path, probe_kernel: Path) -> None:
    result = accel.boot(accel.kernel_guest(probe_kernel), "tcg", timeout=accel.TCG_PROOF_TIMEOUT,
                        log=tmp_path / "tcg.log")
    assert result.matched is not None and result.lines > 10, result
    assert "Linux version" in (tmp_path / "tcg.log").read_text(errors="replace")


@needs_qemu
def test_real_probe_reaches_a_verdict_within_its_timeout(tmp_path: Path) -> None:
    timeout = 10.0
    started = time.monotonic()
    result = accel.probe(tmp_path, force=True, timeout=timeout)
    took = time.monotonic() - started
    print(f"\nprobe: {result.accel} in {took:.1f}s: {result.reason}")
    assert result.accel in accel.ACCELS and result.reason
    # KVM's boot, a stop of the hung QEMU, then TCG proving the probe: all bounded.
    assert took < timeout + GRACE_SECONDS + max(accel.TCG_PROOF_TIMEOUT, timeout) + 5
    if accel.kvm_device_problem() is None:
        if result.accel == "tcg":
            assert "booted under TCG" in result.reason  # the probe proved itself
        cached = json.loads((tmp_path / accel.CACHE_FILE).read_text())
        assert cached["accel"] == result.accel and cached["key"] == accel.cache_key()
        assert (tmp_path / "accel-probe-kvm.log").exists()
        again = accel.probe(tmp_path)
        assert (again.accel, again.reason, again.cached) == (result.accel, result.reason, True)


# --- the probe kernel from the apt mirror --------------------------------------------------------


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is not installed (not a Debian host)")
def test_kernel_is_extracted_from_a_deb_without_its_modules(tmp_path: Path) -> None:
    import subprocess

    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: linux-image-9.9.9-test\nVersion: 1\nArchitecture: amd64\n"
        "Maintainer: kiln tests <kiln@example.invalid>\nDescription: probe kernel stand-in\n")
    (root / "boot").mkdir()
    (root / "boot" / "vmlinuz-9.9.9-test").write_bytes(b"\x7fKERNEL" * 1000)
    (root / "lib" / "modules" / "9.9.9-test").mkdir(parents=True)
    (root / "lib" / "modules" / "9.9.9-test" / "big.ko").write_bytes(b"m" * 4096)
    deb = tmp_path / "kernel.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(deb)], check=True,
                   capture_output=True)
    out = tmp_path / "out"
    out.mkdir()
    kernel = accel._extract_kernel(deb, out)
    assert kernel == out / "vmlinuz-9.9.9-test"
    assert kernel.read_bytes() == b"\x7fKERNEL" * 1000
    assert sorted(p.name for p in out.iterdir()) == ["vmlinuz-9.9.9-test"]


def test_a_fetched_kernel_in_the_cache_is_found_after_the_hosts_own(tmp_path: Path) -> None:
    cached = tmp_path / accel.PROBE_KERNEL_DIR / "vmlinuz-6.1.0-99-cloud-amd64"
    cached.parent.mkdir()
    cached.write_bytes(b"k" * (2 << 20))
    found = accel.find_kernel(tmp_path)
    host = accel.find_kernel()
    assert found == (host if host is not None else cached)
    (tmp_path / accel.PROBE_KERNEL_DIR / "vmlinuz-6.1.0-99-cloud-amd64").write_bytes(b"tiny")
    assert accel.find_kernel(tmp_path) == host  # a truncated file is not a kernel
