"""The trial's box image into libvirt's pool before `vagrant up` (python -m kiln.vagrant.trial
--seed-pool, which the Vagrantfile's before-up trigger runs), against a real libvirtd in a
namespace of the test's own: the volume gets the name vagrant-libvirt looks for and exactly the
image's bytes, read in place from the box built here (a small real qcow2 packed by kiln's own
publish step, tests/bake_samples.py); a second run finds it and does nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bake_samples import fake_bake, small_qcow2

from kiln.paths import Paths
from kiln.vagrant import boxes, netns

WHY = netns.problem()
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"needs its own libvirtd in a namespace: {WHY}")


def test_the_trial_seeds_the_pool_from_the_box_built_here(tree: Paths, tmp_path: Path) -> None:
    image = small_qcow2(tmp_path)
    trial = json.loads(tree.config.read_text())["trial"]
    fake_bake(tree.artifacts, image, {"base": {"version": "1"}}, version="0.1.0.20261202120000")
    volume = boxes.libvirt_volume("kiln/mesos-debian-12", "0.1.0.20261202120000")
    assert trial["box_name"] == "kiln/mesos-debian-12"  # the name fake_bake's catalog gives
    env = {**os.environ, "KILN_ROOT": str(tree.root), "VAGRANT_HOME": str(tmp_path / "vagrant.d")}
    seed = [sys.executable, "-m", "kiln.vagrant.trial", "--seed-pool"]
    with netns.libvirt_namespace(f"kiln-pool-{os.getpid()}", tmp_path / "logs", kvm=False) as ns:
        try:
            first = subprocess.run(ns.argv(seed), env=env, capture_output=True, text=True, timeout=300)
            assert first.returncode == 0, first.stderr
            assert f"kiln: box image uploaded into libvirt's pool as {volume}" in first.stderr
            path = ns.virsh("vol-path", "--pool", "default", volume, check=True).stdout.strip()
            assert Path(path).read_bytes() == image.read_bytes()
            info = ns.virsh("vol-dumpxml", "--pool", "default", volume, check=True).stdout
            assert "<format type='qcow2'/>" in info and f"<capacity unit='bytes'>{64 << 20}<" in info
            again = subprocess.run(ns.argv(seed), env=env, capture_output=True, text=True, timeout=300)
            assert (again.returncode, again.stderr) == (0, "")
        finally:
            for name in ns.new_volumes():
                ns.virsh("vol-delete", "--pool", "default", name)


def test_without_a_libvirtd_the_trial_goes_on_with_a_note(tree: Paths, tmp_path: Path) -> None:
    """Outside any namespace of the test's, nothing answers on qemu:///system here (CI hosts
    run no system libvirtd): --seed-pool says so and exits 0, so `vagrant up` goes on."""
    if subprocess.run(["virsh", "-c", "qemu:///system", "version"], capture_output=True,
                      timeout=30).returncode == 0:
        pytest.skip("a system libvirtd answers on this host: the seed would really upload")
    fake_bake(tree.artifacts, small_qcow2(tmp_path), {"base": {"version": "1"}})
    env = {**os.environ, "KILN_ROOT": str(tree.root), "VAGRANT_HOME": str(tmp_path / "vagrant.d")}
    result = subprocess.run([sys.executable, "-m", "kiln.vagrant.trial", "--seed-pool"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "the box image was not put into libvirt's pool" in result.stderr
    assert "vagrant-libvirt uploads it itself" in result.stderr
    assert "Traceback" not in result.stderr
