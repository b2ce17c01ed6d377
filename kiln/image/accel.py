"""Which QEMU accelerator really works on this machine: KVM when it runs a guest, TCG otherwise.

A /dev/kvm that opens and answers KVM_GET_API_VERSION proves little: nested setups such as
PVM create VMs happily, run a boot sector and even a hand-made 64-bit guest, yet spin
forever on a Linux kernel ("kvm-pvm: INTERNAL_ERROR"). So the probe boots a real Linux
kernel (the host's own, no initrd, `panic=-1` with `-no-reboot`) and waits for it to reach
"VFS: Unable to mount root", which needs the whole early boot (long mode, paging,
interrupts, timers, SMP bring-up) to work. A guest that prints nothing before the timeout
is killed (its process group, by PID, through kiln.runner). When KVM fails, the same boot
under TCG must succeed, which proves the probe itself works; otherwise the verdict is
"inconclusive" and is not cached.

Without a readable host kernel (Ubuntu keeps /boot/vmlinuz-* root-only; containers and
microVMs have none), the probe takes Debian's cloud kernel from the apt mirror (`apt-get
download`, cached in `cache_dir/probe-kernel/`). Only when that fails too is a synthetic
64-bit guest the fallback, and the verdict says it is the weaker one; on a PVM host (module
kvm_pvm loaded), where such a guest runs but Linux does not, the weak evidence is not trusted.
Verdicts are cached in `cache_dir` keyed by host kernel release, QEMU version, /dev/kvm
presence and probe version.

Nothing here prints; callers decide what to show.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import re
import shutil
import struct
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kiln.errors import StepFailed, UserError
from kiln.fileutil import write_atomic
from kiln.runner import capture, run

QEMU = "qemu-system-x86_64"
CACHE_FILE = "accel-probe.json"
PROBE_VERSION = 3
NOT_PROBED = "not probed yet (run `invoke doctor --probe`)"
KERNEL_MARKERS = ("VFS: Unable to mount root", "Kernel panic - not syncing")
SYNTHETIC_MARKER = "KILN-PROBE-OK"
# TCG only has to prove the probe works; a loaded 2-core machine boots the kernel in 4-12 s.
TCG_PROOF_TIMEOUT = 60.0
KVM_GET_API_VERSION = 0xAE00
KVM_API_VERSION = 12
ACCELS = ("kvm", "tcg")
KVM_DEVICE = Path("/dev/kvm")
# Nested KVM through PVM runs only PVM-aware guest kernels: a standard Linux guest hangs.
PVM_MODULE = Path("/sys/module/kvm_pvm")
PROBE_KERNEL_PACKAGE = "linux-image-cloud-amd64"
PROBE_KERNEL_DIR = "probe-kernel"


@dataclass(frozen=True)
class AccelProbe:
    accel: str  # "kvm" | "tcg" | "unknown" (cached_only and nothing cached)
    reason: str
    cached: bool = False
    seconds: float = 0.0


@dataclass(frozen=True)
class ProbeGuest:
    description: str
    args: tuple[str, ...]
    markers: tuple[str, ...]
    thorough: bool  # a real Linux kernel (strong evidence) or the synthetic guest (weak)


@dataclass(frozen=True)
class Watch:
    """What a watched program did before it printed a marker, exited or was killed."""

    matched: str | None
    seconds: float
    lines: int  # lines of guest output (QEMU's own warnings excluded)
    timed_out: bool
    returncode: int | None
    last_line: str


class _Matched(Exception):
    def __init__(self, line: str) -> None:
        super().__init__(line)
        self.line = line


# --- what is asked of the accelerator ------------------------------------------------------


def qemu_accel_args(accel: str) -> list[str]:
    return ["-accel", _checked(accel)]


def packer_accelerator(accel: str) -> str:
    return _checked(accel)


def libvirt_driver(accel: str) -> str:
    return "kvm" if _checked(accel) == "kvm" else "qemu"


def _checked(accel: str) -> str:
    if accel not in ACCELS:
        raise ValueError(f"accelerator must be one of {ACCELS}, not {accel!r}")
    return accel


# --- cheap checks -----------------------------------------------------------------------------


def kvm_device_problem(device: Path = KVM_DEVICE) -> str | None:
    """Why `device` cannot be used for KVM at all, or None if it opens and speaks KVM."""
    if not device.exists():
        return f"no {device} (no hardware virtualization, or the kvm module is not loaded)"
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"{device} cannot be opened ({exc.strerror}); add your user to group kvm"
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION)
    except OSError as exc:
        return f"{device} is not a KVM device (KVM_GET_API_VERSION: {exc.strerror})"
    finally:
        os.close(fd)
    if version != KVM_API_VERSION:
        return f"{device} speaks KVM API {version}, QEMU needs {KVM_API_VERSION}"
    return None


def cache_key() -> dict[str, object]:
    version = (capture([QEMU, "--version"]) or "").splitlines()
    return {
        "kernel": platform.release(),
        "qemu": version[0].strip() if version else "missing",
        "dev_kvm": KVM_DEVICE.exists(),
        "probe": PROBE_VERSION,
    }


# --- the probe guests -------------------------------------------------------------------------


def _natural(path: Path) -> list[object]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(path))]


def find_kernel(cache_dir: Path | None = None) -> Path | None:
    """A readable x86 Linux kernel image: the host's running one first, then the newest host
    kernel, then one fetched earlier into `cache_dir` by fetch_kernel()."""
    release = platform.release()
    preferred = [Path(f"/boot/vmlinuz-{release}"), Path(f"/usr/lib/modules/{release}/vmlinuz")]
    others = sorted([*Path("/boot").glob("vmlinuz-*"), *Path("/usr/lib/modules").glob("*/vmlinuz")],
                    key=_natural, reverse=True)
    fetched = sorted((cache_dir / PROBE_KERNEL_DIR).glob("vmlinuz-*"), key=_natural, reverse=True) \
        if cache_dir is not None else []
    for path in [*preferred, *others, *fetched]:
        if path.is_file() and os.access(path, os.R_OK) and path.stat().st_size > 1 << 20:
            return path
    return None


def _kernel_package() -> str | None:
    """The versioned package behind the cloud kernel metapackage (apt-cache depends)."""
    out = capture(["apt-cache", "depends", PROBE_KERNEL_PACKAGE]) or ""
    found = re.search(r"Depends:\s*(linux-image-[0-9][^\s]*)", out)
    return found.group(1) if found else None


def fetch_kernel(cache_dir: Path, log: Path | None = None) -> Path | None:
    """Debian's cloud kernel from the apt mirror, extracted into `cache_dir`; None when apt
    cannot provide it (not a Debian/Ubuntu host, no mirror, no package lists)."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        return None
    package = _kernel_package()
    if package is None:
        return None
    target_dir = cache_dir / PROBE_KERNEL_DIR
    target_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kiln-kernel-", dir=target_dir) as tmp:
        got = run(["apt-get", "download", package], step="probe: apt-get download kernel", cwd=Path(tmp),
                  log=log, quiet=True, check=False, timeout=300)
        debs = sorted(Path(tmp).glob("*.deb"))
        if got.returncode != 0 or not debs:
            return None
        kernel = _extract_kernel(debs[0], Path(tmp))
        if kernel is None:
            return None
        final = target_dir / kernel.name
        kernel.replace(final)
    return final


def _extract_kernel(deb: Path, workdir: Path) -> Path | None:
    """./boot/vmlinuz-* out of a kernel .deb, without unpacking its modules."""
    import subprocess
    import tarfile

    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        found: Path | None = None
        with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
            for member in archive:
                name = Path(member.name).name
                if member.isfile() and member.name.lstrip("./").startswith("boot/vmlinuz-"):
                    source = archive.extractfile(member)
                    if source is not None:
                        found = workdir / name
                        found.write_bytes(source.read())
                    break
        proc.stdout.read()
    return found


def long_mode_guest() -> bytes:
    """A multiboot image that switches to 64-bit long mode with paging and prints
    SYNTHETIC_MARKER on COM1. QEMU's -kernel loads it at 1 MiB (multiboot address fields)."""
    base, pml4, pdpt, pd = 0x100000, 0x1000, 0x2000, 0x3000
    entry, gdt, gdtr, msg = 0x20, 0x80, 0x98, 0xA0
    long64 = entry + 0x39

    def p32(value: int) -> bytes:
        return struct.pack("<I", value)

    magic, flags = 0x1BADB002, 0x00010000  # flags: the header carries load addresses
    header = struct.pack("<8I", magic, flags, -(magic + flags) & 0xFFFFFFFF, base, base, 0, 0,
                         base + entry)
    enter = (
        b"\xfa"                                                   # cli
        + b"\x0f\x01\x15" + p32(base + gdtr)                      # lgdt [gdtr]
        + b"\x0f\x20\xe0\x83\xc8\x20\x0f\x22\xe0"                 # cr4 |= PAE
        + b"\xb8" + p32(base + pml4) + b"\x0f\x22\xd8"            # cr3 = PML4
        + b"\xb9\x80\x00\x00\xc0\x0f\x32\x0d\x00\x01\x00\x00\x0f\x30"  # EFER |= LME
        + b"\x0f\x20\xc0\x0d\x01\x00\x00\x80\x0f\x22\xc0"         # cr0 |= PG | PE
        + b"\xea" + p32(base + long64) + b"\x08\x00"              # jmp 0x08:long64
    )
    assert entry + len(enter) == long64
    lea_end = long64 + 15
    print_loop = (
        b"\x66\xb8\x10\x00\x8e\xd8\x8e\xd0"                       # ds = ss = 0x10
        + b"\x48\x8d\x35" + struct.pack("<i", msg - lea_end)      # lea rsi, [rip + msg]
        + b"\x66\xba\xf8\x03"                                     # mov dx, 0x3f8 (COM1)
        + b"\xac\x84\xc0\x74\x03\xee\xeb\xf8"                     # lodsb; jz done; out; loop
        + b"\xfa\xf4\xeb\xfc"                                     # done: cli; hlt; jmp done
    )
    image = bytearray(0x4000)
    code = header + enter + print_loop
    image[: len(code)] = code
    struct.pack_into("<3Q", image, gdt, 0, 0x00AF9A000000FFFF, 0x00CF92000000FFFF)
    struct.pack_into("<HI", image, gdtr, 3 * 8 - 1, base + gdt)
    image[msg: msg + len(SYNTHETIC_MARKER) + 3] = SYNTHETIC_MARKER.encode() + b"\r\n\0"
    # Identity map of the first 2 MiB: PML4[0] -> PDPT[0] -> PD[0] (one large page).
    struct.pack_into("<Q", image, pml4, (base + pdpt) | 0x3)
    struct.pack_into("<Q", image, pdpt, (base + pd) | 0x3)
    struct.pack_into("<Q", image, pd, 0x83)
    return bytes(image)


def kernel_guest(kernel: Path) -> ProbeGuest:
    return ProbeGuest(f"Linux kernel {kernel}",
                      ("-m", "256", "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1"),
                      KERNEL_MARKERS, thorough=True)


def synthetic_guest(workdir: Path) -> ProbeGuest:
    image = workdir / "kiln-probe-guest.bin"
    image.write_bytes(long_mode_guest())
    return ProbeGuest("synthetic 64-bit guest (no readable Linux kernel on this host)",
                      ("-m", "16", "-kernel", str(image)), (SYNTHETIC_MARKER,), thorough=False)


def probe_guest(workdir: Path, cache_dir: Path | None = None) -> ProbeGuest:
    """A real kernel when one can be had (host, cache, apt mirror); the synthetic guest if not."""
    kernel = find_kernel(cache_dir)
    if kernel is None and cache_dir is not None:
        kernel = fetch_kernel(cache_dir, cache_dir / "accel-probe-kernel.log")
    return kernel_guest(kernel) if kernel is not None else synthetic_guest(workdir)


# --- watching a program -----------------------------------------------------------------------


def watch(argv: Sequence[str], markers: Sequence[str], timeout: float, log: Path | None = None) -> Watch:
    """Run `argv` until a line contains one of `markers`, it exits, or `timeout` passes.

    Whatever still runs at the end (after a marker or the timeout) is stopped with its whole
    process group by kiln.runner: a hung QEMU spinning on a broken accelerator included.
    """
    noise = f"{Path(argv[0]).name}:"
    counted = {"lines": 0}
    last = [""]

    def on_line(line: str) -> None:
        if not line.startswith(noise):
            counted["lines"] += 1
        if line.strip():
            last[0] = line.strip()
        for marker in markers:
            if marker in line:
                raise _Matched(line.strip())

    started = time.monotonic()
    try:
        result = run(list(argv), step=f"probe: {Path(argv[0]).name}", log=log, quiet=True, check=False,
                     timeout=timeout, on_line=on_line)
    except _Matched as hit:
        return Watch(hit.line, time.monotonic() - started, counted["lines"], False, None, last[0])
    except StepFailed:  # with check=False only the watchdog raises it
        return Watch(None, time.monotonic() - started, counted["lines"], True, None, last[0])
    return Watch(None, time.monotonic() - started, counted["lines"], False, result.returncode, last[0])


def boot(guest: ProbeGuest, accel: str, timeout: float, log: Path | None = None) -> Watch:
    qemu = shutil.which(QEMU)
    if qemu is None:
        raise UserError(f"{QEMU} is not installed", "apt-get install qemu-system-x86")
    argv = [qemu, *qemu_accel_args(accel), "-nodefaults", "-display", "none", "-no-reboot",
            "-serial", "stdio", *guest.args]
    if log is not None:
        log.unlink(missing_ok=True)
    return watch(argv, guest.markers, timeout, log)


def _failure(w: Watch, timeout: float) -> str:
    if w.timed_out and w.lines == 0:
        return f"printed nothing within {timeout:.0f}s (QEMU killed)"
    if w.timed_out:
        return f"printed {w.lines} lines but did not finish booting within {timeout:.0f}s (QEMU killed)"
    return f"QEMU exited with {w.returncode}: {w.last_line or 'no output'}"


def _probe_now(cache_dir: Path, timeout: float) -> tuple[AccelProbe, bool]:
    """Boot the probe guest; (verdict, conclusive). Assumes /dev/kvm passed the cheap checks."""
    started = time.monotonic()
    if shutil.which(QEMU) is None:
        return AccelProbe("tcg", f"{QEMU} is not installed (apt-get install qemu-system-x86)"), False
    kvm_log, tcg_log = cache_dir / "accel-probe-kvm.log", cache_dir / "accel-probe-tcg.log"
    with tempfile.TemporaryDirectory(prefix="kiln-probe-") as tmp:
        guest = probe_guest(Path(tmp), cache_dir)
        kvm = boot(guest, "kvm", timeout, kvm_log)
        if kvm.matched and not guest.thorough and PVM_MODULE.exists():
            return AccelProbe("tcg", f"a KVM guest ({guest.description}) booted, but this host's KVM is "
                                     "PVM (module kvm_pvm), where standard Linux guests hang, and no Linux "
                                     "kernel could be found or fetched to prove otherwise",
                              seconds=time.monotonic() - started), True
        if kvm.matched:
            reason = f"a KVM guest ({guest.description}) booted in {kvm.seconds:.1f}s"
            if not guest.thorough:
                reason += ("; weaker probe: nested hosts can run this guest and still hang Linux; "
                           "if VMs hang at boot use --accel tcg")
            return AccelProbe("kvm", reason, seconds=time.monotonic() - started), True
        tcg_timeout = max(TCG_PROOF_TIMEOUT, timeout)
        tcg = boot(guest, "tcg", tcg_timeout, tcg_log)
    failed = f"/dev/kvm is present but a KVM guest ({guest.description}) {_failure(kvm, timeout)}"
    if tcg.matched:
        return AccelProbe("tcg", f"{failed}; the same guest booted under TCG in {tcg.seconds:.1f}s",
                          seconds=time.monotonic() - started), True
    return AccelProbe("tcg", f"{failed}; inconclusive: under TCG it {_failure(tcg, tcg_timeout)} too "
                             f"(logs: {kvm_log}, {tcg_log})",
                      seconds=time.monotonic() - started), False


# --- the cached verdict -----------------------------------------------------------------------


def _read_cache(path: Path, key: dict[str, object]) -> AccelProbe | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key or data.get("accel") not in ACCELS:
        return None
    return AccelProbe(str(data["accel"]), str(data.get("reason", "")), cached=True)


def _write_cache(path: Path, key: dict[str, object], verdict: AccelProbe) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"key": key, "accel": verdict.accel, "reason": verdict.reason,
              "seconds": round(verdict.seconds, 1),
              "probed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_atomic(path, json.dumps(record, indent=2) + "\n")


def probe(cache_dir: Path, *, force: bool = False, cached_only: bool = False,
          timeout: float = 20.0) -> AccelProbe:
    """The accelerator to use here. `force` ignores the cache; `cached_only` never boots a
    guest and answers "unknown" when the cache has nothing for this host (both given: unknown
    unless /dev/kvm is unusable). `timeout` bounds the KVM boot; when KVM fails, a TCG boot
    of at most max(TCG_PROOF_TIMEOUT, timeout) follows to prove the probe itself."""
    started = time.monotonic()
    path = cache_dir / CACHE_FILE
    key = cache_key()
    if not force:
        hit = _read_cache(path, key)
        if hit is not None:
            return AccelProbe(hit.accel, hit.reason, cached=True, seconds=time.monotonic() - started)
    problem = kvm_device_problem()
    if problem is not None:
        return AccelProbe("tcg", problem, seconds=time.monotonic() - started)
    if cached_only:
        return AccelProbe("unknown", NOT_PROBED, seconds=time.monotonic() - started)
    verdict, conclusive = _probe_now(cache_dir, timeout)
    if conclusive:
        _write_cache(path, key, verdict)
    return verdict


def resolve(requested: str, cache_dir: Path) -> AccelProbe:
    """The accelerator for a run: "auto" follows the (cached) probe; "kvm" and "tcg" are the
    user's choice. Forcing kvm where the probe fails still gives kvm, with a warning reason."""
    if requested == "tcg":
        return AccelProbe("tcg", "requested (accelerator = tcg)")
    if requested not in ("auto", "kvm"):
        raise UserError(f"unknown accelerator {requested!r}",
                        "use auto (probe whether KVM runs a guest), kvm or tcg")
    found = probe(cache_dir)
    if requested == "auto":
        return found
    if found.accel == "kvm":
        return AccelProbe("kvm", f"requested (accelerator = kvm); the probe agrees: {found.reason}",
                          cached=found.cached, seconds=found.seconds)
    return AccelProbe("kvm", f"WARNING: kvm requested although the probe found it unusable, VMs may "
                             f"hang or fail to start: {found.reason}",
                      cached=found.cached, seconds=found.seconds)
