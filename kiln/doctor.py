"""`invoke doctor`: which tools the user's goal needs, which are here, how to get the rest.

Fast by design (no VM boot): version queries run in parallel, and the KVM verdict comes
from the accelerator probe's cache (`invoke doctor --probe` refreshes it).
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


def _version_of(argv: list[str], pattern: str = r"\d+\.\d+(\.\d+)?") -> str | None:
    out = capture(argv, timeout=10, merge_stderr=True)
    if out is None:
        return None
    m = re.search(pattern, out)
    if m:
        return m.group(0)
    return out.strip().splitlines()[0][:40] if out.strip() else "installed"


def _tool(name: str, argv: list[str], fix: str, goals: tuple[str, ...]) -> Callable[[], Finding]:
    def check() -> Finding:
        if shutil.which(argv[0]) is None:
            return Finding(name, "missing", "not on PATH", fix, goals)
        version = _version_of(argv)
        if version is None:
            return Finding(name, "warn", f"{argv[0]} found but `{' '.join(argv)}` failed", fix, goals)
        return Finding(name, "found", version, "", goals)

    return check


def _packer() -> Finding:
    from kiln.image.packer import installed_version

    goals = ("build", "aws")
    fix = "apt-get install packer"
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
    goals = ("vagrant",)
    fix = "apt-get install libvirt-daemon-system dnsmasq-base"
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
    return [
        _packer,
        _tool("qemu-system-x86_64", ["qemu-system-x86_64", "--version"],
              "apt-get install qemu-system-x86", ("build", "vagrant")),
        _tool("qemu-img", ["qemu-img", "--version"], "apt-get install qemu-utils", ("build",)),
        _accelerator(paths.cache, probe),
        _tool("mmdebstrap", ["mmdebstrap", "--version"], "apt-get install mmdebstrap", ("build",)),
        _tool("shellcheck", ["shellcheck", "--version"], "apt-get install shellcheck", ("build",)),
        _tool("ssh-keygen", ["ssh", "-V"], "apt-get install openssh-client", ("build", "vagrant", "aws")),
        _tool("vagrant", ["vagrant", "--version"], "apt-get install vagrant", ("vagrant",)),
        _vagrant_libvirt,
        _libvirtd,
        _tool("VirtualBox", ["VBoxManage", "--version"],
              "install VirtualBox from virtualbox.org (optional: libvirt works too)", ("vagrant-vbox",)),
        _aws_credentials,
    ]


def run_checks(paths: Paths, goal: str = "all", probe: bool = False) -> list[Finding]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        findings = list(pool.map(lambda f: f(), checks(paths, probe)))
    if goal != "all":
        findings = [f for f in findings if goal in f.goals]
    return findings


def needed(findings: list[Finding], goal: str) -> list[Finding]:
    """Missing tools that block the goal (VirtualBox is optional everywhere)."""
    return [f for f in findings if f.blocking and "vagrant-vbox" not in f.goals
            and ((goal == "all" and "aws" not in f.goals) or goal in f.goals)]


def table(findings: list[Finding]) -> str:
    rows = [(f.name, f.status, f.detail, f.fix) for f in findings]
    return format_table(("tool", "status", "detail", "how to fix"), rows)
