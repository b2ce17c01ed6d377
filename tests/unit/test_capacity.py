"""A shape that does not fit the host's memory is refused up front, with the numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.errors import UserError
from kiln.vagrant import capacity


def test_available_memory_comes_from_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24682304 kB\nMemFree:        20000000 kB\n"
                       "MemAvailable:   23000064 kB\n")
    assert capacity.available_mb(meminfo) == 22461
    assert capacity.available_mb() > 0  # this host's own


def test_a_shape_that_fits_returns_what_it_needs() -> None:
    need = capacity.check_fits("3m", [1024, 1024, 1024], available=8000)
    assert need == 3 * (1024 + capacity.QEMU_OVERHEAD_MB) + capacity.HOST_RESERVE_MB


def test_a_shape_that_does_not_fit_says_by_how_much() -> None:
    with pytest.raises(UserError) as caught:
        capacity.check_fits("3m2a", [1024, 1024, 1024, 2048, 2048], available=4096)
    text = str(caught.value)
    assert "shape 3m2a does not fit: its 5 VM(s) need 1024 + 1024 + 1024 + 2048 + 2048 MiB" in text
    assert f"= {7168 + 5 * capacity.QEMU_OVERHEAD_MB + capacity.HOST_RESERVE_MB} MiB" in text
    assert "this host has 4096 MiB available" in text
    assert "cluster.agent.memory_mb" in text
