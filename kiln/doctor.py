"""`invoke doctor`: which tools the user's goal needs, which are here, how to get the rest.

Every program kiln runs is in TOOLS with its Debian package and the goals that need it; a
missing one that the goal needs makes `invoke doctor --goal G` exit 2. Fast by design (no VM
boot): version queries run in parallel, and the KVM verdict comes from the accelerator probe's
cache (`invoke doctor --probe` refreshes it).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from kiln.paths import Paths
from kiln.runner import capture
from kiln.table import format_table

GOALS = ("build", "vagrant", "aws", "all")


@dataclass(frozen=True)
class Finding:
    name: str
    status: str  # found | missing | warn | info
    detail: str
    fix: str = ""
    goals: tuple[str, ...] = ()

    @property
    def blocking(self) -> bool:
        return self.status == "missing"


@dataclass(frozen=True)
class Tool:
    """An external program some task runs, the Debian package that has it (scripts/setup installs
    it) and the goals that need it. `version`: the arguments that make it print its version (None:
    it has none; being on PATH is enough)."""

    program: str
    package: str
    goals: tuple[str, ...]
    version: tuple[str, ...] | None = ("--version",)


# Every program kiln runs, for the goal that needs it. tests/unit/test_doctor_tools.py derives the
# programs from the code's own calls (which(), run(), capture(), ...) and checks that each is here
# and that scripts/setup installs its package: add a tool in all three places.
TOOLS: tuple[Tool, ...] = (
    Tool("packer", "packer", ("build", "aws")),
    Tool("qemu-system-x86_64", "qemu-system-x86", ("build", "vagrant")),
    Tool("qemu-img", "qemu-utils", ("build", "vagrant")),
    Tool("genisoimage", "genisoimage", ("build",)),  # Packer's cd_files (the cloud-init seed)
    Tool("shellcheck", "shellcheck", ("build",)),
    Tool("ssh", "openssh-client", ("build", "vagrant", "aws"), ("-V",)),
    Tool("ssh-keygen", "openssh-client", ("build", "vagrant", "aws"), None),
    Tool("git", "git", ("build",)),
    # base images (mmdebstrap into a loop-mounted disk) and package build roots
    Tool("mmdebstrap", "mmdebstrap", ("build",)),
    Tool("sfdisk", "fdisk", ("build",)),
    Tool("losetup", "mount", ("build",)),
    Tool("mount", "mount", ("build", "vagrant")),  # vagrant: netns masks /dev/kvm for a TCG libvirtd
    Tool("umount", "mount", ("build",)),
    Tool("mkfs.ext4", "e2fsprogs", ("build",), ("-V",)),
    Tool("extlinux", "extlinux", ("build",)),
    Tool("chroot", "coreutils", ("build",)),
    Tool("mkdir", "coreutils", ("build",)),  # the package sandbox's mount script
    Tool("sh", "dash", ("build", "vagrant"), None),  # runs the sandbox's and netns's mount scripts
    Tool("truncate", "coreutils", ("build",)),
    Tool("dd", "coreutils", ("build", "vagrant")),  # vagrant: the box image into libvirt's pool
    Tool("tar", "tar", ("build",)),
    Tool("unshare", "util-linux", ("build", "vagrant")),
    # the KVM probe's kernel, fetched from the host's apt mirror
    Tool("apt-get", "apt", ("build",)),
    Tool("apt-cache", "apt", ("build",)),
    Tool("dpkg-deb", "dpkg", ("build",)),
    # Vagrant clusters, and libvirtd in a network namespace of its own (nightly, tests)
    Tool("vagrant", "vagrant", ("vagrant",)),
    Tool("libvirtd", "libvirt-daemon-system", ("vagrant",)),
    Tool("virtlogd", "libvirt-daemon-system", ("vagrant",)),
    Tool("virsh", "libvirt-clients", ("vagrant",)),
    Tool("bash", "bash", ("vagrant",)),  # pipes the box image into virsh (pipefail)
    Tool("dnsmasq", "dnsmasq-base", ("vagrant",)),
    Tool("ip", "iproute2", ("vagrant",), ("-V",)),
    Tool("pgrep", "procps", ("vagrant",), ("-V",)),
    Tool("VBoxManage", "virtualbox", ("vagrant-vbox",)),
)
FIXES = {"VBoxManage": "install VirtualBox from virtualbox.org (optional: libvirt works too)"}
BY_PROGRAM = {t.program: t for t in TOOLS}
MBR_FILES = (Path("/usr/lib/syslinux/mbr/mbr.bin"), Path("/usr/lib/EXTLINUX/mbr.bin"))


def fix_for(tool: Tool) -> str:
    return FIXES.get(tool.program, f"apt-get install {tool.package}")


def _version_of(argv: list[str], pattern: str = r"\d+\.\d+(\.\d+)?") -> str | None:
    out = capture(argv, timeout=10, merge_stderr=True)
    if out is None:
        return None
    m = re.search(pattern, out)
    if m:
        return m.group(0)
    return out.strip().splitlines()[0][:40] if out.strip() else "installed"


def _tool(tool: Tool) -> Callable[[], Finding]:
    def check() -> Finding:
        name, fix, goals = tool.program, fix_for(tool), tool.goals
        path = shutil.which(name)
        if path is None:
            return Finding(name, "missing", "not on PATH", fix, goals)
        if tool.version is None:
            return Finding(name, "found", path, "", goals)
        version = _version_of([name, *tool.version])
        if version is None:
            return Finding(name, "warn", f"{path} found but `{name} {' '.join(tool.version)}` failed", fix,
                           goals)
        return Finding(name, "found", version, "", goals)

    return check


def _mbr() -> Finding:
    found = next((p for p in MBR_FILES if p.is_file()), None)
    if found is None:
        return Finding("mbr.bin", "missing", "syslinux's MBR (base images boot with extlinux)",
                       "apt-get install syslinux-common", ("build",))
    return Finding("mbr.bin", "found", str(found), "", ("build",))


def _packer() -> Finding:
    from kiln.image.packer import installed_version

    goals, fix = BY_PROGRAM["packer"].goals, fix_for(BY_PROGRAM["packer"])
    if shutil.which("packer") is None:
        return Finding("packer", "missing", "not on PATH", fix, goals)
    version = installed_version()
    if version is None:
        return Finding("packer", "warn", "`packer version` failed", fix, goals)
    mode = "plugins via `packer init`" if version.has_plugins else "builders built in (pre-1.7)"
    return Finding("packer", "found", f"{version} ({mode})", "", goals)


def _accelerator(cache_dir: Path, probe: bool) -> Callable[[], Finding]:
    def check() -> Finding:
        from kiln.image import accel

        goals = ("build", "vagrant")
        result = accel.probe(cache_dir, force=probe, cached_only=not probe)
        if result.accel == "kvm":
            return Finding("accelerator", "found", f"KVM runs guests ({result.reason})", "", goals)
        if result.accel == "tcg":
            return Finding("accelerator", "warn", f"TCG (software): {result.reason}",
                           "builds work, only slower; enable KVM (nested virtualization) for speed",
                           goals)
        return Finding("accelerator", "info", result.reason, "invoke doctor --probe", goals)

    return check


def _libvirtd() -> Finding:
    goals, fix = BY_PROGRAM["libvirtd"].goals, fix_for(BY_PROGRAM["libvirtd"])
    if shutil.which("libvirtd") is None:
        return Finding("libvirtd", "missing", "not installed", fix, goals)
    running = Path("/run/libvirt/libvirt-sock").exists()
    version = _version_of(["libvirtd", "--version"]) or "?"
    state = "running" if running else "installed, not running (vagrant up needs it)"
    return Finding("libvirtd", "found" if running else "warn", f"{version}, {state}",
                   "" if running else "systemctl start libvirtd", goals)


def _vagrant_libvirt() -> Finding:
    goals = ("vagrant",)
    fix = "apt-get install vagrant-libvirt"
    if shutil.which("vagrant") is None:
        return Finding("vagrant-libvirt", "missing", "vagrant not installed", fix, goals)
    if Path("/usr/share/vagrant-plugins/plugins.d/vagrant-libvirt.json").exists():
        return Finding("vagrant-libvirt", "found", "system plugin", "", goals)
    listing = capture(["vagrant", "plugin", "list"], timeout=15) or ""
    m = re.search(r"vagrant-libvirt \(([^,)]+)", listing)
    if m:
        return Finding("vagrant-libvirt", "found", m.group(1), "", goals)
    return Finding("vagrant-libvirt", "missing", "plugin not installed", fix, goals)


def _aws_credentials() -> Finding:
    goals = ("aws",)
    # The credential chain would otherwise ask the EC2 metadata service over the network.
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    try:
        import boto3
    except ImportError:
        return Finding("aws credentials", "missing", "boto3 not installed", "pip install boto3", goals)
    creds = boto3.Session().get_credentials()
    if creds is None:
        return Finding("aws credentials", "missing", "none in env, ~/.aws or SSO",
                       "aws configure (or export AWS_PROFILE / AWS_ACCESS_KEY_ID)", goals)
    return Finding("aws credentials", "found", f"from {creds.method}", "", goals)


def checks(paths: Paths, probe: bool = False) -> list[Callable[[], Finding]]:
    special: dict[str, Callable[[], Finding]] = {"packer": _packer, "libvirtd": _libvirtd}
    found = [special.get(t.program) or _tool(t) for t in TOOLS]
    return [*found, _mbr, _accelerator(paths.cache, probe), _vagrant_libvirt, _aws_credentials]


def run_checks(paths: Paths, goal: str = "all", probe: bool = False) -> list[Finding]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        findings = list(pool.map(lambda f: f(), checks(paths, probe)))
    if goal != "all":
        findings = [f for f in findings if goal in f.goals]
    return findings


def needed(findings: list[Finding], goal: str) -> list[Finding]:
    """Missing tools that block the goal: for 'all', whatever building or Vagrant needs (AWS
    credentials and VirtualBox are optional there)."""
    wanted = {"build", "vagrant"} if goal == "all" else {goal}
    return [f for f in findings if f.blocking and wanted & set(f.goals)]


def table(findings: list[Finding]) -> str:
    rows = [(f.name, f.status, f.detail, f.fix) for f in findings]
    return format_table(("tool", "status", "detail", "how to fix"), rows)
