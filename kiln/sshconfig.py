"""OpenSSH client configs for testinfra and users (`ssh -F FILE NAME`)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SshHost:
    alias: str
    hostname: str
    port: int
    user: str
    key: Path


def render(hosts: Sequence[SshHost], control_dir: Path | None = None,
           persist: str = "60s") -> str:
    """One Host block per machine; ControlMaster makes testinfra's many commands cheap."""
    blocks = []
    for h in hosts:
        lines = [
            f"Host {h.alias}",
            f"  HostName {h.hostname}",
            f"  Port {h.port}",
            f"  User {h.user}",
            f"  IdentityFile {h.key}",
            "  IdentitiesOnly yes",
            # Build and test VMs get new host keys on every boot.
            "  StrictHostKeyChecking no",
            "  UserKnownHostsFile /dev/null",
            "  LogLevel ERROR",
            "  ConnectTimeout 10",
            "  ServerAliveInterval 15",
        ]
        if control_dir is not None:
            lines += ["  ControlMaster auto", f"  ControlPath {control_dir}/%C",
                      f"  ControlPersist {persist}"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def short_control_dir(wanted: Path) -> Path:
    """Unix socket paths are limited to ~108 bytes; %C adds 40 and ssh a temp suffix."""
    if len(str(wanted)) <= 40:
        return wanted
    return Path(tempfile.gettempdir()) / f"kiln-ssh-{os.getuid()}"


def write(path: Path, hosts: Sequence[SshHost], control_dir: Path | None = None,
          persist: str = "60s") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if control_dir is not None:
        control_dir = short_control_dir(control_dir)
    if control_dir is not None:
        control_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(render(hosts, control_dir, persist), encoding="utf-8")
    path.chmod(0o600)
    return path


def close_master(config: Path, alias: str) -> None:
    """End a persistent master connection opened through `config` (no error if none)."""
    subprocess.run(["ssh", "-F", str(config), "-O", "exit", alias], capture_output=True,
                   check=False, timeout=30)
