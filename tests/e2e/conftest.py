"""Fixtures for the VM tests: the debian-12 box, and a network namespace with its own libvirtd
in which every Vagrant machine, its networks and everything that talks to it live (the
network rule: nothing a test starts is reachable from, or reaches, the host's networks)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import CANARY, CATALOG, INVOKE, MESOS_SETS, NIGHTLY_REPORTS

from kiln.image import accel
from kiln.paths import REPO_ROOT, Paths
from kiln.vagrant import netns


@pytest.fixture(scope="session")
def nightly() -> subprocess.CompletedProcess[str]:
    """`invoke nightly --targets debian-12,ubuntu-24.04 --builders qemu,amazon-ebs`, run once for
    the whole session: it builds the debian-12 image (the other VM tests use that build), boots
    and verifies it, reports ubuntu-24.04 as not run (it cannot be built offline), and reports.
    A canary check (--expect-file of a file no image has) must fail it, in every report form.
    Within CI's time the night is narrowed: no VirtualBox entry (the conversion and a boot of a
    kiln box on VirtualBox's hardware are tests/integration/test_virtualbox_boot.py's) and no
    cluster entry (clusters are test_vagrant.py's)."""
    started = time.monotonic()
    done = subprocess.run([*INVOKE, "nightly", "--profile", "offline", *MESOS_SETS,
                           "--targets", "debian-12,ubuntu-24.04", "--builders", "qemu,amazon-ebs",
                           "--cluster-shape", "",
                           "--report-dir", str(NIGHTLY_REPORTS), "--expect-file", CANARY],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=3 * 3600)
    print(done.stdout[-6000:], done.stderr[-3000:])
    print(f"invoke nightly took {time.monotonic() - started:.0f}s")
    return done


@pytest.fixture(scope="session")
def debian_box() -> Path:
    """The box catalog of the debian-12 image (in a full run the nightly, which runs first,
    built it); built here when there is none."""
    if not CATALOG.exists():
        started = time.monotonic()
        build = subprocess.run([*INVOKE, "build", "--profile", "offline", *MESOS_SETS, "--target",
                                "debian-12", "--builder", "qemu", "--quiet"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=3600)
        print(build.stdout[-3000:], build.stderr[-3000:])
        print(f"build for the Vagrant tests took {time.monotonic() - started:.0f}s")
        assert build.returncode == 0, build.stderr
    return CATALOG


@pytest.fixture(scope="session")
def libvirt_ns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[netns.LibvirtNamespace]:
    why = netns.problem()
    if why is not None:
        pytest.skip(f"Vagrant VM tests need their own libvirtd in a network namespace: {why}")
    logs = REPO_ROOT / "build" / "logs" / "e2e-libvirt"
    kvm = accel.resolve("auto", Paths().cache).accel == "kvm"
    with netns.libvirt_namespace(f"kiln-e2e-{os.getpid()}", logs, kvm=kvm) as ns:
        yield ns
        for volume in ns.new_volumes():  # only what this session's machines and boxes put there
            ns.virsh("vol-delete", "--pool", "default", volume)


@pytest.fixture(scope="session")
def vagrant_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A Vagrant home of the test session's own: boxes are added from the catalog afresh."""
    home = tmp_path_factory.mktemp("vagrant.d")
    return {**os.environ, "VAGRANT_HOME": str(home), "VAGRANT_CHECKPOINT_DISABLE": "1",
            "VAGRANT_NO_COLOR": "1", "VAGRANT_DEFAULT_PROVIDER": "libvirt"}

