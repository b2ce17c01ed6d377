"""Real `vagrant validate` on the trial Vagrantfile and every rendered cluster shape, for both
providers. VirtualBox is not installed here and Vagrant refuses to validate its provider block
without it, so that provider is validated with -p (provider blocks skipped) and says so."""

from __future__ import annotations

import shutil

import pytest

from kiln.checks import FAIL, PARTIAL, PASS
from kiln.config.load import load_config
from kiln.keys import ensure_build_key
from kiln.paths import REPO_ROOT, Paths
from kiln.vagrant.render import render_cluster, validate_check, write_cluster

pytestmark = pytest.mark.skipif(shutil.which("vagrant") is None,
                                reason="vagrant is not installed (scripts/setup installs it)")


@pytest.mark.parametrize("provider", ["libvirt", "virtualbox"])
def test_the_trial_and_every_shape_validate(tree: Paths, provider: str) -> None:
    ensure_build_key(tree.build)  # Vagrant checks that private_key_path exists
    # the top-level Vagrantfile asks kiln (.venv/bin/python -m kiln.vagrant.trial) for the trial
    (tree.root / ".venv").symlink_to(REPO_ROOT / ".venv")
    cfg = load_config(tree, sets=['cluster.shapes=["1", "3m", "3m2a", "5m3a"]'])
    directories = [write_cluster(render_cluster(cfg, shape, tree)) for shape in cfg["cluster"]["shapes"]]
    checks = [validate_check(d, tree, provider) for d in [tree.root, *directories]]
    # -p (provider blocks not checked) is a partial pass, and its detail says why
    expected = [PARTIAL if "not checked" in c.detail else PASS for c in checks]
    assert [c.result for c in checks] == expected, [(c.subject, c.detail) for c in checks]
    if provider == "virtualbox" and shutil.which("VBoxManage") is None:
        assert all("VirtualBox not installed" in c.detail for c in checks)
        assert all(c.result == PARTIAL for c in checks)


def test_a_broken_libvirt_block_fails_validation(tree: Paths) -> None:
    ensure_build_key(tree.build)
    cfg = load_config(tree)
    directory = write_cluster(render_cluster(cfg, "3m", tree))
    library = tree.vagrant_templates / "kiln.rb"
    bogus = 'lv.graphics_type = "none"\n          lv.no_such_option = 1'
    library.write_text(library.read_text().replace('lv.graphics_type = "none"', bogus))
    check = validate_check(directory, tree, "libvirt")
    assert check.result == FAIL
    assert "no_such_option" in check.detail or "libvirt" in check.detail.lower()
