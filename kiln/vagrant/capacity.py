"""Does a cluster fit this host? Checked before anything starts, with the numbers.

A VM needs its configured memory plus QEMU's own overhead; the host keeps a reserve for
itself (kiln, Vagrant, libvirt, the page cache the boxes are copied through).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kiln.errors import UserError

QEMU_OVERHEAD_MB = 192
HOST_RESERVE_MB = 1024


def available_mb(meminfo: Path = Path("/proc/meminfo")) -> int:
    """MemAvailable in MiB (what the kernel says can be allocated without swapping)."""
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    raise UserError(f"{meminfo} has no MemAvailable line: cannot tell whether the cluster fits")


def needed_mb(memory_per_vm: Sequence[int]) -> int:
    return sum(m + QEMU_OVERHEAD_MB for m in memory_per_vm) + HOST_RESERVE_MB


def check_fits(shape_name: str, memory_per_vm: Sequence[int], available: int | None = None) -> int:
    """The MiB the shape needs; a UserError with the numbers when the host has less."""
    have = available_mb() if available is None else available
    need = needed_mb(memory_per_vm)
    if need > have:
        vms = " + ".join(str(m) for m in memory_per_vm)
        raise UserError(
            f"shape {shape_name} does not fit: its {len(memory_per_vm)} VM(s) need {vms} MiB, "
            f"+ {QEMU_OVERHEAD_MB} MiB QEMU overhead each + {HOST_RESERVE_MB} MiB for the host "
            f"= {need} MiB; this host has {have} MiB available",
            "use a smaller shape, or lower cluster.master/agent.memory_mb "
            "(e.g. --set cluster.agent.memory_mb=1024)")
    return need
