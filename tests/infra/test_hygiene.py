"""Image hygiene, checked in the bake phase after cleanup: nothing of the build machine or
its users stays in the image."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _bake_only(phase: str) -> None:
    if phase != "bake":
        pytest.skip("hygiene is a property of the image as baked (run with --kiln-phase=bake)")


def test_no_ssh_host_keys(host) -> None:
    assert host.run("ls /etc/ssh/ssh_host_* 2>/dev/null").stdout.strip() == ""


def test_machine_id_is_empty(host) -> None:
    f = host.file("/etc/machine-id")
    assert f.exists and f.size == 0


def test_no_private_keys_in_home_dirs(host) -> None:
    found = host.run(
        "sudo find /root /home -type f \\( -name 'id_*' ! -name '*.pub' \\) 2>/dev/null").stdout
    assert found.strip() == ""


def test_no_shell_history(host) -> None:
    found = host.run("sudo find /root /home -name '.*_history' -size +0 2>/dev/null").stdout
    assert found.strip() == ""


def test_package_caches_are_empty(host) -> None:
    leftovers = host.run(
        "sudo find /var/cache/apt/archives /var/lib/apt/lists /var/cache/dnf -type f "
        "! -name lock ! -name partial 2>/dev/null | head -5").stdout
    assert leftovers.strip() == ""


def test_logs_are_small(host) -> None:
    # journald reopens (and preallocates) its files as soon as cleanup removes them.
    kib = int(host.run("sudo du -sk --exclude=journal /var/log | cut -f1").stdout.strip())
    assert kib < 1024, f"/var/log holds {kib} KiB besides the journal after cleanup"
    journal = host.run("sudo du -sk /var/log/journal 2>/dev/null | cut -f1").stdout.strip()
    journal = int(journal or 0)
    assert journal < 64 * 1024, f"the journal holds {journal} KiB after cleanup"
