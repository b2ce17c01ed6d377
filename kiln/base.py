"""Build a bootable base qcow2 for targets with no downloadable image (debian-12), offline,
from the distribution's apt mirror with mmdebstrap.

The image holds just enough for Packer: a kernel, systemd, sshd, sudo, python3 and the
build user with kiln's key. It is cached next to a fingerprint of its inputs (suite,
mirror, packages, recipe version, user and key): a second call with the same inputs
returns at once. Everything is built in a temp dir and renamed into place on success;
mounts and loop devices are released whatever happens.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.errors import UserError
from kiln.keys import ensure_build_key
from kiln.paths import user_cache
from kiln.runner import run, which

RECIPE_VERSION = 4
DISK_SIZE = "4G"
PART_OFFSET = 2048 * 512
PACKAGES = (
    "linux-image-cloud-amd64", "systemd-sysv", "openssh-server", "sudo", "python3", "udev", "kmod",
    "iproute2", "ca-certificates", "netbase", "ifupdown", "isc-dhcp-client", "extlinux",
    "initramfs-tools", "curl", "gnupg", "procps", "less", "dbus",
)
TOOLS_HINT = "apt-get install mmdebstrap fdisk extlinux syslinux-common qemu-utils"


@dataclass(frozen=True)
class BaseImage:
    path: Path
    fingerprint: str
    cached: bool
    seconds: dict[str, float]


def fingerprint(suite: str, mirror: str, user: str, public_key: str) -> str:
    data = json.dumps({"recipe": RECIPE_VERSION, "suite": suite, "mirror": mirror,
                       "packages": sorted(PACKAGES), "user": user, "key": public_key}, sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()


class _Stages:
    def __init__(self, name: str, report: Callable[[str], None]) -> None:
        self.name, self.report, self.seconds = name, report, {}  # type: ignore[var-annotated]
        self.started = time.monotonic()

    def __call__(self, stage: str, func: Callable[[], Any]) -> Any:
        t0 = time.monotonic()
        result = func()
        took = time.monotonic() - t0
        self.seconds[stage] = round(took, 1)
        self.report(f"==> base {self.name}: {stage} ({took:.1f}s)")
        return result


def shared_cache() -> Path:
    """Base images outlive a checkout (CI clones afresh): keep them per machine too."""
    return user_cache() / "base"


def _link_or_copy(src: Path, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    tmp.replace(dest)


def _share(image: Path, shared: Path) -> None:
    try:
        shared.parent.mkdir(parents=True, exist_ok=True)
        for old in shared.parent.glob(shared.name.rsplit("-", 1)[0] + "-*.qcow2"):
            old.unlink()  # one image per target: the newest inputs win
        _link_or_copy(image, shared)
    except OSError as exc:
        print(f"warning: could not keep a copy of the base image in {shared.parent}: {exc}")


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)


def _configure(root: Path, user: str, public_key: str) -> None:
    """Files that make the rootfs boot and let Packer in."""
    _write(root / "etc/fstab", "LABEL=root / ext4 defaults,errors=remount-ro 0 1\n")
    _write(root / "etc/hostname", "kiln\n")
    _write(root / "etc/hosts", "127.0.0.1 localhost\n127.0.1.1 kiln\n::1 localhost ip6-localhost\n")
    _write(root / "etc/network/interfaces",
           "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\n"
           "allow-hotplug eth0\niface eth0 inet dhcp\n")
    _write(root / f"etc/sudoers.d/90-{user}", f"{user} ALL=(ALL) NOPASSWD:ALL\n", 0o440)
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    initrds = sorted((root / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise UserError("the base rootfs has no kernel or initrd in /boot",
                        "check the mirror and package list")
    _write(root / "boot/extlinux/extlinux.conf",
           "DEFAULT linux\nTIMEOUT 0\nPROMPT 0\n\nLABEL linux\n"
           f"  LINUX /boot/{kernels[-1].name}\n  INITRD /boot/{initrds[-1].name}\n"
           "  APPEND root=LABEL=root rw console=ttyS0 net.ifnames=0 biosdevname=0\n")
    _write(root / "root/kiln-authorized-key.pub", public_key + "\n", 0o600)


def _user_commands(user: str) -> str:
    return (
        f"id -u {user} >/dev/null 2>&1 || useradd --create-home --shell /bin/bash {user}; "
        f"install -d -m 0700 -o {user} -g {user} /home/{user}/.ssh; "
        f"install -m 0600 -o {user} -g {user} /root/kiln-authorized-key.pub "
        f"/home/{user}/.ssh/authorized_keys; rm -f /root/kiln-authorized-key.pub; "
        "passwd -l root >/dev/null; systemctl enable ssh.service >/dev/null 2>&1 || true"
    )


def build_base(target_name: str, target_cfg: dict[str, Any], build_dir: Path, *, force: bool = False,
               log: Path | None = None, report: Callable[[str], None] = print) -> BaseImage:
    base_cfg = target_cfg.get("base")
    if not base_cfg:
        raise UserError(f"target {target_name} has no `base` block")
    if target_cfg["distro"] != "debian":
        raise UserError(f"local base images are built for Debian only, not {target_cfg['distro']}")
    root_dir = build_dir.parent
    out = Path(base_cfg["path"])
    out = out if out.is_absolute() else root_dir / out
    key = ensure_build_key(build_dir)
    public_key = Path(f"{key}.pub").read_text().strip()
    user = target_cfg["ssh_username"]
    fp = fingerprint(target_cfg["codename"], base_cfg["mirror"], user, public_key)
    stamp = out.with_name(out.name + ".fingerprint")
    shared = shared_cache() / f"{target_name}-{fp[:16]}.qcow2"
    if not force and out.exists() and stamp.exists() and stamp.read_text().strip() == fp:
        report(f"==> base {target_name}: cached {out} (fingerprint {fp[:12]})")
        if not shared.exists():
            _share(out, shared)
        return BaseImage(out, fp, True, {})
    if not force and shared.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(shared, out)
        stamp.write_text(fp + "\n")
        report(f"==> base {target_name}: reused {shared} (fingerprint {fp[:12]})")
        return BaseImage(out, fp, True, {})

    tools = {t: which(t, TOOLS_HINT) for t in ("mmdebstrap", "sfdisk", "losetup", "mkfs.ext4",
                                               "extlinux", "qemu-img", "mount", "umount", "chroot")}
    mbr = Path("/usr/lib/EXTLINUX/mbr.bin")
    if not mbr.exists():
        raise UserError(f"{mbr} is missing", "apt-get install extlinux syslinux-common")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target_name}.", dir=out.parent))
    stages = _Stages(target_name, report)
    loop: str | None = None
    mnt = work / "mnt"
    mounted = False

    def sh(argv: list[str], step: str) -> None:
        run(argv, step=f"base {target_name}: {step}", log=log, quiet=True)

    try:
        tarball = work / "rootfs.tar"
        stages("mmdebstrap", lambda: sh(
            [tools["mmdebstrap"], "--quiet", "--variant=minbase", f"--include={','.join(PACKAGES)}",
             target_cfg["codename"], str(tarball), base_cfg["mirror"]], "mmdebstrap"))
        raw = work / "disk.raw"

        def partition_and_fill() -> None:
            nonlocal loop, mounted
            sh(["truncate", "-s", DISK_SIZE, str(raw)], "truncate")
            run([tools["sfdisk"], "--quiet", str(raw)], step="sfdisk", log=log, quiet=True,
                input_text="label: dos\nstart=2048, type=83, bootable\n")
            size = raw.stat().st_size - PART_OFFSET
            loop = run([tools["losetup"], "-f", "--show", "-o", str(PART_OFFSET), "--sizelimit",
                        str(size), str(raw)], step="losetup", log=log, quiet=True).output.strip()
            sh([tools["mkfs.ext4"], "-q", "-L", "root", loop], "mkfs.ext4")
            mnt.mkdir()
            sh([tools["mount"], loop, str(mnt)], "mount")
            mounted = True
            sh(["tar", "-C", str(mnt), "--numeric-owner", "-xpf", str(tarball)], "extract rootfs")
            _configure(mnt, user, public_key)
            sh([tools["chroot"], str(mnt), "/bin/sh", "-c", _user_commands(user)], "create user")
            sh([tools["extlinux"], "--install", str(mnt / "boot/extlinux")], "extlinux")
            sh([tools["umount"], str(mnt)], "umount")
            mounted = False
            sh([tools["losetup"], "-d", loop], "losetup -d")
            loop = None
            sh(["dd", f"if={mbr}", f"of={raw}", "bs=440", "count=1", "conv=notrunc", "status=none"], "mbr")

        stages("assemble disk", partition_and_fill)
        qcow = work / out.name
        stages("qcow2", lambda: sh([tools["qemu-img"], "convert", "-O", "qcow2", str(raw), str(qcow)],
                                   "qemu-img convert"))
        qcow.replace(out)
        stamp.write_text(fp + "\n")
        _share(out, shared)
        report(f"==> base {target_name}: {out} ({out.stat().st_size / 2**20:.0f} MiB, "
               f"{time.monotonic() - stages.started:.0f}s)")
        return BaseImage(out, fp, False, stages.seconds)
    finally:
        if mounted:
            run(["umount", "-l", str(mnt)], step="umount", log=log, quiet=True, check=False)
        if loop:
            run(["losetup", "-d", loop], step="losetup -d", log=log, quiet=True, check=False)
        shutil.rmtree(work, ignore_errors=True)
