"""A bootable base qcow2 for targets that have no downloadable image (debian-12), built
offline from the distribution's apt mirror with mmdebstrap.

The image holds what Packer needs and no more: Debian's generic kernel, systemd, sshd, sudo,
python3, DHCP on eth0, and the build user with kiln's public key (no other key, no
password). Recipe: mmdebstrap minbase → MBR on a raw
file (sfdisk) → the partition loop-mounted by offset (no partition device nodes appear on
these hosts) → ext4 labelled root → configure → extlinux → qcow2.

eth0 is configured by ifupdown, not by a systemd-networkd catch-all. Vagrant's Debian guest
plugin writes private_network settings through networkd when networkd is active (the
qemu-kvm component enables it for br0) and into /etc/network/interfaces otherwise; ifupdown
on eth0 works with both paths, and networkd without a catch-all .network leaves eth0 alone,
so the "99-dhcp.network must sort after 50-vagrant-eth1.network" pitfall cannot happen.

The root file system grows to the disk's size at boot (kiln-growroot.service), because
Packer (disk_size) and Vagrant resize the image file, not the partition inside it.

The image is cached next to a fingerprint of its inputs (recipe version, suite, apt sources,
packages, user, public key): a second call with the same inputs returns at once. It is
built in a temp dir under the output's directory, under a lock, and renamed into place only
when complete; mounts and loop devices are released whatever happens (errors, Ctrl-C,
SIGTERM), and those left by a killed build are released by the next one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kiln.errors import StepFailed, UserError
from kiln.fileutil import locked
from kiln.keys import ensure_build_key
from kiln.runner import STOP_SIGNALS, StepTimedOut, raise_on_sigterm, run, which

# Bounds of the recipe's steps: a hung one ends with its name and the log, never a silent hang.
MMDEBSTRAP_TIMEOUT = 3600.0  # downloads and unpacks a few hundred packages
LONG_TIMEOUT = 1800.0  # extract the root file system, qemu-img convert (4 GiB)
STEP_TIMEOUT = 600.0  # every other step (sfdisk, mkfs, mount, chroot, extlinux, ...)
QUICK_TIMEOUT = 60.0  # losetup -j, umount, losetup -d
RECIPE_VERSION = 8
DISK_MB = 4096
PART_START = 2048  # sectors of 512 bytes: the usual 1 MiB alignment
HOSTNAME = "kiln"
PACKAGES = (
    # Debian's generic kernel, not the cloud flavour: that one is built without the AHCI and e1000
    # drivers VirtualBox's hardware needs (CONFIG_SATA_AHCI, CONFIG_E1000), and one base image
    # serves the qemu bake and the VirtualBox box made from it.
    "linux-image-amd64", "systemd-sysv", "openssh-server", "sudo", "python3", "udev", "kmod",
    "iproute2", "ca-certificates", "netbase", "ifupdown", "isc-dhcp-client", "extlinux",
    "initramfs-tools", "curl", "gnupg",
    # Vagrant sets the hostname with hostnamectl, which needs the system bus.
    "dbus",
    # ps/pgrep for provisioning scripts; growpart for kiln-growroot.service.
    "procps", "cloud-guest-utils",
)
TOOLS = {
    "mmdebstrap": "mmdebstrap", "sfdisk": "fdisk", "losetup": "mount", "mount": "mount",
    "umount": "mount", "mkfs.ext4": "e2fsprogs", "extlinux": "extlinux", "qemu-img": "qemu-utils",
    "chroot": "coreutils", "truncate": "coreutils", "dd": "coreutils", "tar": "tar",
}
MBR_CANDIDATES = (Path("/usr/lib/EXTLINUX/mbr.bin"), Path("/usr/lib/syslinux/mbr/mbr.bin"))
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
QCOW2_MAGIC = b"QFI\xfb"
WORK_PREFIX = ".build-"

Reporter = Callable[[str], None]


@dataclass(frozen=True)
class BaseImage:
    path: Path
    fingerprint: str
    cached: bool
    seconds: dict[str, float] = field(default_factory=dict)  # per stage, plus "total"
    size_bytes: int = 0


def apt_sources(suite: str, mirror: str) -> list[str]:
    """One-line apt sources for the base: the suite and its -updates from `mirror`, plus
    security updates where their location is known (Debian's CDN serves both trees)."""
    mirror = mirror.rstrip("/")
    lines = [f"deb {mirror} {suite} main", f"deb {mirror} {suite}-updates main"]
    parts = urlsplit(mirror)
    if parts.hostname == "deb.debian.org" and parts.path.rstrip("/") == "/debian":
        lines.append(f"deb {parts.scheme}://deb.debian.org/debian-security {suite}-security main")
    return lines


def fingerprint(*, suite: str, mirror: str, user: str, public_key: str,
                packages: tuple[str, ...] = PACKAGES) -> str:
    key = " ".join(public_key.split()[:2])  # the key itself, not its comment
    data = {"recipe": RECIPE_VERSION, "suite": suite, "sources": apt_sources(suite, mirror),
            "packages": sorted(packages), "user": user, "key": key, "disk_mb": DISK_MB,
            "hostname": HOSTNAME}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def fingerprint_for(target_cfg: dict[str, Any], build_dir: Path) -> str:
    """The fingerprint build_base would give this target's base image, without building it."""
    key = ensure_build_key(build_dir)
    public_key = Path(f"{key}.pub").read_text(encoding="utf-8").strip()
    return fingerprint(suite=target_cfg["codename"], mirror=target_cfg["base"]["mirror"],
                       user=target_cfg["ssh_username"], public_key=public_key)


def image_path(target_cfg: dict[str, Any], build_dir: Path) -> Path:
    """targets.<name>.base.path, relative to the repository root (build/'s parent)."""
    path = Path(target_cfg["base"]["path"])
    return path if path.is_absolute() else build_dir.parent / path


def stamp_path(image: Path) -> Path:
    return image.with_name(f"{image.name}.fingerprint")


def build_base(target_name: str, target_cfg: dict[str, Any], build_dir: Path, *, force: bool = False,
               log: Path | None = None, report: Reporter | None = None) -> BaseImage:
    """Build (or reuse) the base image of `target_name`; see the module docstring."""
    say = report or _print
    base_cfg = target_cfg.get("base")
    if not base_cfg:
        raise UserError(f"target {target_name} has no `base` block: it starts from a downloaded image")
    if target_cfg.get("distro") != "debian":
        raise UserError(f"target {target_name}: local base images are built for Debian only, "
                        f"not {target_cfg.get('distro')!r}")
    user = target_cfg["ssh_username"]
    if not USER_RE.match(user):
        raise UserError(f"targets.{target_name}.ssh_username {user!r} is not a valid user name")
    out = image_path(target_cfg, build_dir)
    key = ensure_build_key(build_dir)
    public_key = Path(f"{key}.pub").read_text(encoding="utf-8").strip()
    suite, mirror = target_cfg["codename"], base_cfg["mirror"]
    fp = fingerprint(suite=suite, mirror=mirror, user=user, public_key=public_key)
    if not force and _is_current(out, fp):
        _release_left_behind(out, log or build_dir / "logs" / f"base-{target_name}.log", say)
        return BaseImage(out, fp, True, {}, out.stat().st_size)

    if os.geteuid() != 0:
        raise UserError("building the base image needs root (loop devices, mount, chroot)",
                        "run it as root, e.g. `sudo invoke base`")
    tools = {name: which(name, f"apt-get install {package}") for name, package in TOOLS.items()}
    mbr = next((p for p in MBR_CANDIDATES if p.exists()), None)
    if mbr is None:
        raise UserError("extlinux's mbr.bin is missing", "apt-get install extlinux syslinux-common")
    log = log or build_dir / "logs" / f"base-{target_name}.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    with locked(out.parent / f".{out.name}.lock"):
        if not force and _is_current(out, fp):  # another process built it while we waited
            return BaseImage(out, fp, True, {}, out.stat().st_size)
        _release_stale(out.parent, tools, log, say)
        with _sigterm_raises():
            recipe = _Recipe(target_name, suite, mirror, user, public_key, tools, mbr, log, say)
            seconds = recipe.build(out, fp)
    return BaseImage(out, fp, False, seconds, out.stat().st_size)


def _print(message: str) -> None:
    print(message, flush=True)


def _is_current(image: Path, fp: str) -> bool:
    try:
        with image.open("rb") as fh:
            magic = fh.read(4)
        return magic == QCOW2_MAGIC and stamp_path(image).read_text(encoding="utf-8").strip() == fp
    except OSError:
        return False


def _release_left_behind(out: Path, log: Path, say: Reporter) -> None:
    """The image is current, but a killed build of it may have left a work dir (mounted, a loop
    device attached): release and remove it, under the image's lock (no build of it runs then)."""
    if not any(out.parent.glob(f"{WORK_PREFIX}*")) or os.geteuid() != 0:
        return
    tools = {name: shutil.which(name) for name in ("losetup", "umount")}
    if not all(tools.values()):
        return
    with locked(out.parent / f".{out.name}.lock"):
        _release_stale(out.parent, {k: str(v) for k, v in tools.items()}, log, say)


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM and SIGHUP raise Interrupted while building, so `finally` releases mounts and loops.
    Left alone when a handler is already installed (kiln.tasks.cli does) or off the main thread;
    a signal the process was started ignoring (SIGHUP under `nohup`) stays ignored."""
    if threading.current_thread() is not threading.main_thread() \
            or any(callable(signal.getsignal(sig)) for sig in STOP_SIGNALS):
        yield
        return
    previous = raise_on_sigterm()
    try:
        yield
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before)


def _mounted(path: Path) -> bool:
    target = str(path.resolve())
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            point = line.split()[4]
            decoded = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), point)
            if decoded == target:
                return True
    return False


def _loops_of(raw: Path, tools: dict[str, str]) -> list[str]:
    listing = run([tools["losetup"], "-j", str(raw)], step="losetup -j", quiet=True, check=False,
                  timeout=QUICK_TIMEOUT)
    return [line.split(":", 1)[0] for line in listing.output.splitlines() if line.startswith("/dev/loop")]


def _release(work: Path, tools: dict[str, str], log: Path | None) -> bool:
    """Unmount and detach what a build in `work` may hold; True if nothing is left mounted."""
    mnt = work / "mnt"
    if mnt.is_dir() and _mounted(mnt):
        done = run([tools["umount"], str(mnt)], step="base: umount", log=log, quiet=True, check=False,
                   timeout=QUICK_TIMEOUT)
        if done.returncode != 0:  # still busy: detach it now, the kernel finishes when it can
            run([tools["umount"], "-l", str(mnt)], step="base: umount -l", log=log, quiet=True,
                check=False, timeout=QUICK_TIMEOUT)
    raw = work / "disk.raw"
    if raw.exists():
        for loop in _loops_of(raw, tools):
            run([tools["losetup"], "-d", loop], step="base: losetup -d", log=log, quiet=True, check=False,
                timeout=QUICK_TIMEOUT)
    return not (mnt.is_dir() and _mounted(mnt))


def _release_stale(directory: Path, tools: dict[str, str], log: Path | None,
                   say: Reporter | None = None) -> None:
    """Work dirs of builds that were killed (we hold the lock, so none is alive)."""
    for work in directory.glob(f"{WORK_PREFIX}*"):
        if work.is_dir() and _release(work, tools, log):
            shutil.rmtree(work, ignore_errors=True)
            (say or _print)(f"==> base: released and removed {work}, left by an interrupted build")


class _Recipe:
    def __init__(self, target: str, suite: str, mirror: str, user: str, public_key: str,
                 tools: dict[str, str], mbr: Path, log: Path, say: Reporter) -> None:
        self.target, self.suite, self.mirror, self.user = target, suite, mirror, user
        self.public_key, self.tools, self.mbr, self.log, self.say = public_key, tools, mbr, log, say
        self.seconds: dict[str, float] = {}

    def sh(self, argv: list[str], step: str, timeout: float = STEP_TIMEOUT, **kwargs: Any) -> str:
        return run(argv, step=f"base {self.target}: {step}", log=self.log, quiet=True, timeout=timeout,
                   **kwargs).output

    def stage(self, name: str, func: Callable[[], None]) -> None:
        started = time.monotonic()
        func()
        took = time.monotonic() - started
        self.seconds[name] = round(took, 1)
        self.say(f"==> base: {name} ({took:.1f}s)")

    def build(self, out: Path, fp: str) -> dict[str, float]:
        started = time.monotonic()
        self.say(f"==> base: building {out.name} for {self.target} ({self.suite} from {self.mirror}; "
                 f"log: {self.log})")
        work = Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir=out.parent))
        try:
            tarball, raw, qcow = work / "rootfs.tar", work / "disk.raw", work / out.name
            self.stage("mmdebstrap", lambda: self.rootfs(tarball))
            self.stage("image assembly", lambda: self.assemble(work, tarball, raw))
            self.stage("qcow2 convert", lambda: self.sh(
                [self.tools["qemu-img"], "convert", "-O", "qcow2", str(raw), str(qcow)], "qemu-img convert",
                timeout=LONG_TIMEOUT))
            stamp = stamp_path(out)
            # Drop the old stamp first: an image whose stamp is missing or stale is never reused.
            stamp.unlink(missing_ok=True)
            qcow.replace(out)
            fresh = work / stamp.name
            fresh.write_text(fp + "\n", encoding="utf-8")
            fresh.replace(stamp)
        finally:
            if _release(work, self.tools, self.log):
                shutil.rmtree(work, ignore_errors=True)
        self.seconds["total"] = round(time.monotonic() - started, 1)
        self.say(f"==> base: {out} ready ({out.stat().st_size / 2**20:.0f} MiB, "
                 f"{self.seconds['total']:.1f}s)")
        return self.seconds

    def rootfs(self, tarball: Path) -> None:
        argv = [self.tools["mmdebstrap"], "--variant=minbase", f"--include={','.join(PACKAGES)}",
                self.suite, str(tarball), *apt_sources(self.suite, self.mirror)]
        try:
            self.sh(argv, "mmdebstrap", timeout=MMDEBSTRAP_TIMEOUT)
        except StepTimedOut:
            raise
        except StepFailed as exc:
            raise UserError(f"mmdebstrap could not build the {self.suite} root file system from "
                            f"{self.mirror}",
                            f"check that the mirror is reachable and serves {self.suite} "
                            f"(targets.{self.target}.base.mirror); details in {self.log}") from exc

    def assemble(self, work: Path, tarball: Path, raw: Path) -> None:
        t = self.tools
        self.sh([t["truncate"], "-s", f"{DISK_MB}M", str(raw)], "truncate")
        self.sh([t["sfdisk"], "--quiet", str(raw)], "sfdisk",
                input_text=f"label: dos\nstart={PART_START}, type=83, bootable\n")
        offset = PART_START * 512
        loop = self.sh([t["losetup"], "--find", "--show", "--offset", str(offset), "--sizelimit",
                        str(raw.stat().st_size - offset), str(raw)], "losetup").strip()
        if not loop.startswith("/dev/loop"):
            raise UserError(f"losetup gave no loop device ({loop!r})", "modprobe loop")
        mnt = work / "mnt"
        mnt.mkdir()
        self.sh([t["mkfs.ext4"], "-q", "-L", "root", loop], "mkfs.ext4")
        self.sh([t["mount"], loop, str(mnt)], "mount")
        self.sh([t["tar"], "-C", str(mnt), "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf",
                 str(tarball)], "extract the root file system", timeout=LONG_TIMEOUT)
        configure_rootfs(mnt, self.user, self.public_key)
        self.sh([t["chroot"], str(mnt), "/bin/sh", "-eu", "-c", user_script(self.user)], "create the user")
        self.sh([t["extlinux"], "--install", str(mnt / "boot/extlinux")], "extlinux --install")
        self.sh([t["umount"], str(mnt)], "umount")
        self.sh([t["losetup"], "-d", loop], "losetup -d")
        self.sh([t["dd"], f"if={self.mbr}", f"of={raw}", "bs=440", "count=1", "conv=notrunc",
                 "status=none"], "write the MBR boot code")


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)


GROWROOT_SCRIPT = """\
#!/bin/sh
# kiln: grow / to the end of its disk. Packer (disk_size) and Vagrant resize the image
# file; the partition and the file system inside stay as built until this runs.
set -eu
dev=$(findmnt -nvo SOURCE /)
name=${dev#/dev/}
[ -r "/sys/class/block/$name/partition" ] || exit 0
part=$(cat "/sys/class/block/$name/partition")
disk=/dev/$(basename "$(readlink -f "/sys/class/block/$name/..")")
rc=0
growpart "$disk" "$part" || rc=$?
[ "$rc" -le 1 ] || exit "$rc"  # 1: the partition already fills the disk
resize2fs "$dev"
# e2fsck and resize2fs (here, or systemd-fsck at boot) may zero the partition's first sector,
# which holds extlinux's boot record: without it the disk boots no more. Put it back, every boot.
if [ -f /boot/extlinux/extlinux.conf ] && command -v extlinux >/dev/null; then
  extlinux --install /boot/extlinux >/dev/null
fi
"""

GROWROOT_UNIT = """\
[Unit]
Description=Grow the root file system to fill its disk (kiln)
After=systemd-remount-fs.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/kiln-growroot
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
"""


def configure_rootfs(root: Path, user: str, public_key: str) -> None:
    """The files that make the tree boot from an MBR disk and let the build user in."""
    _write(root / "etc/fstab", "LABEL=root / ext4 defaults,errors=remount-ro 0 1\n")
    _write(root / "etc/hostname", f"{HOSTNAME}\n")
    _write(root / "etc/hosts",
           f"127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n\n"
           "::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n")
    _write(root / "etc/network/interfaces",
           "# kiln base image: eth0 by DHCP (net.ifnames=0 on the kernel command line).\n"
           "source /etc/network/interfaces.d/*\n\n"
           "auto lo\niface lo inet loopback\n\n"
           "allow-hotplug eth0\niface eth0 inet dhcp\n")
    _write(root / f"etc/sudoers.d/90-{user}", f"{user} ALL=(ALL) NOPASSWD:ALL\n", 0o440)
    _write(root / "root/.kiln-authorized_keys", public_key.strip() + "\n", 0o600)
    _write(root / "usr/local/sbin/kiln-growroot", GROWROOT_SCRIPT, 0o755)
    _write(root / "etc/systemd/system/kiln-growroot.service", GROWROOT_UNIT)
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "kiln-growroot.service"
    link.unlink(missing_ok=True)
    link.symlink_to("/etc/systemd/system/kiln-growroot.service")
    _write(root / "boot/extlinux/extlinux.conf", extlinux_conf(root))


# Mesos 1.11's Linux launcher and cgroups isolators know only the v1 hierarchy, which Debian 12's
# systemd still offers when asked on the kernel command line. It is asked for here, once: extlinux
# reads its configuration with its own ext4 reader, and an extlinux.conf rewritten in a later bake
# step (after kiln-growroot grew the file system) left the image unbootable, with no kernel message
# at all. Docker and the rest run on v1 as well.
CGROUP_V1 = "systemd.unified_cgroup_hierarchy=0"


def extlinux_conf(root: Path) -> str:
    # Debian keeps /vmlinuz and /initrd.img pointing at the newest kernel, so a kernel
    # upgraded during provisioning boots without touching this file.
    kernel, initrd = "/vmlinuz", "/initrd.img"
    if not (root / "vmlinuz").exists() or not (root / "initrd.img").exists():
        kernels = sorted((root / "boot").glob("vmlinuz-*"))
        initrds = sorted((root / "boot").glob("initrd.img-*"))
        if not kernels or not initrds:
            raise UserError("the base root file system has no kernel or initrd in /boot",
                            "check that the mirror serves linux-image-amd64 and initramfs-tools")
        kernel, initrd = f"/boot/{kernels[-1].name}", f"/boot/{initrds[-1].name}"
    return ("DEFAULT linux\nPROMPT 0\nTIMEOUT 0\n\nLABEL linux\n"
            f"  LINUX {kernel}\n  INITRD {initrd}\n"
            f"  APPEND root=LABEL=root rw console=ttyS0 net.ifnames=0 {CGROUP_V1}\n")


def user_script(user: str) -> str:
    """Runs inside the new root (chroot): the build user, its key, sudo rights checked."""
    return "\n".join([
        f"id -u {user} >/dev/null 2>&1 || useradd --create-home --shell /bin/bash {user}",
        f"install -d -m 0700 -o {user} -g {user} /home/{user}/.ssh",
        f"install -m 0600 -o {user} -g {user} /root/.kiln-authorized_keys /home/{user}/.ssh/authorized_keys",
        "rm -f /root/.kiln-authorized_keys",
        f"visudo -cqf /etc/sudoers.d/90-{user}",
        "passwd -l root >/dev/null",
    ])
