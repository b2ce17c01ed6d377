"""Which QEMU accelerator really works here: KVM when it runs a guest, TCG otherwise.

/dev/kvm existing proves nothing: nested setups (e.g. PVM) create VMs that run a
real-mode boot sector yet hang as soon as a Linux kernel sets up long mode. So the probe
boots a Linux kernel (the host's /boot/vmlinuz-*, no initrd) and waits for it to reach
its "cannot mount root" panic, which needs the whole early boot to work. The same boot
under TCG proves the probe itself works. Without a kernel on the host, a 512-byte boot
sector is the fallback (and the verdict says it is weaker). The verdict is cached per
host kernel release, QEMU version and /dev/kvm presence.
"""

from __future__ import annotations

import json
import os
import platform
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from kiln.runner import capture

MARKER = b"KILN-PROBE-OK"
KERNEL_MARKERS = (b"Kernel panic", b"VFS: Unable to mount root", b"Run /init")
CACHE_FILE = "accel-probe.json"
QEMU = "qemu-system-x86_64"


def boot_sector() -> bytes:
    """x86 real-mode code: print MARKER on COM1 (0x3f8), then halt forever."""
    code = bytes([
        0x31, 0xC0,        # xor ax, ax
        0x8E, 0xD8,        # mov ds, ax
        0xFC,              # cld
        0xBE, 0x17, 0x7C,  # mov si, 0x7c17 (the message)
        0xAC,              # .loop: lodsb
        0x84, 0xC0,        # test al, al
        0x74, 0x06,        # jz .done
        0xBA, 0xF8, 0x03,  # mov dx, 0x3f8
        0xEE,              # out dx, al
        0xEB, 0xF5,        # jmp .loop
        0xFA,              # .done: cli
        0xF4,              # hlt
        0xEB, 0xFC,        # jmp .done
    ])
    sector = code + MARKER + b"\r\n\0"
    return sector.ljust(510, b"\0") + b"\x55\xaa"


@dataclass(frozen=True)
class AccelProbe:
    accel: str  # "kvm" | "tcg" | "unknown"
    reason: str
    cached: bool = False
    seconds: float = 0.0


def _cache_key() -> dict[str, object]:
    qemu = (capture([QEMU, "--version"]) or "").splitlines()
    return {"kernel": platform.release(), "qemu": qemu[0] if qemu else "missing",
            "dev_kvm": os.path.exists("/dev/kvm")}


def host_kernel() -> Path | None:
    running = Path(f"/boot/vmlinuz-{platform.release()}")
    if running.exists():
        return running
    found = sorted(Path("/boot").glob("vmlinuz-*"))
    return found[-1] if found else None


def boots(accel: str, timeout: float, kernel: Path | None = None) -> tuple[bool, float, str]:
    """Boot the probe guest under `accel`; (booted far enough, seconds, note)."""
    exe = shutil.which(QEMU)
    if exe is None:
        return False, 0.0, f"{QEMU} not installed"
    with tempfile.TemporaryDirectory(prefix="kiln-probe-") as tmp:
        argv = [exe, "-accel", accel, "-nodefaults", "-display", "none", "-no-reboot",
                "-serial", "stdio"]
        if kernel is not None:
            markers = KERNEL_MARKERS
            argv += ["-m", "256", "-kernel", str(kernel),
                     "-append", "console=ttyS0 panic=-1 loglevel=4"]
        else:
            markers = (MARKER,)
            image = Path(tmp) / "probe.img"
            image.write_bytes(boot_sector())
            argv += ["-m", "16", "-drive", f"file={image},format=raw,if=ide"]
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        seen = b""
        fd = proc.stdout.fileno()  # type: ignore[union-attr]
        try:
            while proc.poll() is None:
                left = timeout - (time.monotonic() - started)
                if left <= 0:
                    return False, time.monotonic() - started, f"no boot output within {timeout:.0f}s"
                ready, _, _ = select.select([fd], [], [], min(left, 0.5))
                if ready:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        break
                    seen += chunk
                    if any(m in seen for m in markers):
                        return True, time.monotonic() - started, ""
            err = (proc.stderr.read() or b"").decode(errors="replace").strip()  # type: ignore[union-attr]
            return False, time.monotonic() - started, err.splitlines()[-1] if err else "qemu exited"
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
            proc.wait()


def _probe_now(timeout: float) -> AccelProbe:
    started = time.monotonic()
    if not os.path.exists("/dev/kvm"):
        return AccelProbe("tcg", "no /dev/kvm", seconds=0.0)
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return AccelProbe("tcg", "/dev/kvm is not accessible to this user (add it to group kvm)")
    kernel = host_kernel()
    what = f"kernel {kernel.name}" if kernel else "boot sector only (no /boot/vmlinuz-*: weaker probe)"
    ok, secs, note = boots("kvm", timeout, kernel)
    if ok:
        return AccelProbe("kvm", f"a KVM guest ({what}) booted in {secs:.1f}s",
                          seconds=time.monotonic() - started)
    tcg_ok, tsecs, tnote = boots("tcg", timeout * 2, kernel)
    proof = f"; the same guest ran under TCG in {tsecs:.1f}s" if tcg_ok else f"; TCG failed too: {tnote}"
    return AccelProbe("tcg", f"/dev/kvm exists but a KVM guest ({what}) did not run ({note}){proof}",
                      seconds=time.monotonic() - started)


def probe(cache_dir: Path, *, force: bool = False, cached_only: bool = False,
          timeout: float = 15.0) -> AccelProbe:
    cache = cache_dir / CACHE_FILE
    key = _cache_key()
    if not force and cache.exists():
        try:
            data = json.loads(cache.read_text())
            if data.get("key") == key:
                return AccelProbe(data["accel"], data["reason"], cached=True)
        except (ValueError, KeyError):
            pass
    if cached_only:
        if not os.path.exists("/dev/kvm"):
            return AccelProbe("tcg", "no /dev/kvm")
        return AccelProbe("unknown", "/dev/kvm present, not probed yet (run `invoke doctor --probe`)")
    result = _probe_now(timeout)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, **asdict(result)}, indent=2))
    tmp.replace(cache)
    return result


def resolve(requested: str, cache_dir: Path) -> AccelProbe:
    """'auto' probes (cached); 'kvm'/'tcg' are the user's word, with a warning if doubtful."""
    if requested == "tcg":
        return AccelProbe("tcg", "forced with --accel tcg")
    found = probe(cache_dir)
    if requested == "kvm":
        if found.accel == "kvm":
            return AccelProbe("kvm", "forced with --accel kvm; the probe agrees")
        return AccelProbe("kvm", f"forced with --accel kvm although the probe says: {found.reason}")
    return found


def packer_accelerator(accel: str) -> str:
    return "kvm" if accel == "kvm" else "tcg"


def libvirt_driver(accel: str) -> str:
    return "kvm" if accel == "kvm" else "qemu"


def qemu_accel_args(accel: str) -> list[str]:
    return ["-accel", packer_accelerator(accel)]
