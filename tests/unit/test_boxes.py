"""Box choice: a box built here (its catalog) wins over trial.box_url; none at all is a clear
error. The trial Vagrantfile's Ruby (vagrant/kiln.rb) asks kiln for the trial's description, so
what `vagrant up` boots is what `invoke up --shape 1` would: both are run here on the same trees."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from bake_samples import fake_bake, small_qcow2

from kiln.config.load import load_config
from kiln.errors import UserError
from kiln.image.artifacts import box_catalog, box_version
from kiln.paths import REPO_ROOT, Paths
from kiln.vagrant import boxes
from kiln.vagrant.render import render_cluster

needs_ruby = pytest.mark.skipif(shutil.which("ruby") is None,
                                reason="ruby is not installed (it comes with Debian's vagrant package)")


def _catalog(tree: Paths, provider: str = "libvirt", builder: str = "qemu",
             components: tuple[str, ...] = ()) -> Path:
    directory = tree.artifacts / f"debian-12-{builder}"
    directory.mkdir(parents=True)
    if components:
        (directory / "image-manifest.json").write_text(json.dumps(
            {"target": "debian-12", "components": {name: {"version": "1"} for name in components}}))
    box = directory / f"debian-12-{builder}.box"
    box.write_bytes(b"box")
    path = directory / "box-catalog.json"
    path.write_text(json.dumps(box_catalog("kiln/mesos-debian-12", "0.1.0.20261123120000", provider, box,
                                           "0" * 64)))
    return path


def test_a_locally_built_box_is_used_through_its_catalog(tree: Paths) -> None:
    path = _catalog(tree)
    box = boxes.resolve(load_config(tree), tree, "libvirt")
    assert box == boxes.Box("kiln/mesos-debian-12", "0.1.0.20261123120000", path.as_uri(), True)
    assert box.components is None  # no image manifest beside the catalog: contents unknown


def test_a_local_box_knows_its_components_from_the_image_manifest(tree: Paths) -> None:
    _catalog(tree, components=("zookeeper", "docker"))
    assert boxes.resolve(load_config(tree), tree, "libvirt").components == ("docker", "zookeeper")


def test_without_a_local_box_the_configured_url_is_used(tree: Paths) -> None:
    cfg = load_config(tree, sets=["trial.box_url=https://boxes.example.org/kiln.json"])
    assert boxes.resolve(cfg, tree, "libvirt") == boxes.Box("kiln/mesos-debian-12", "",
                                                            "https://boxes.example.org/kiln.json", False)


def test_no_box_at_all_says_how_to_get_one(tree: Paths) -> None:
    with pytest.raises(UserError) as caught:
        boxes.resolve(load_config(tree), tree, "virtualbox")
    assert "no virtualbox box: nothing built at" in str(caught.value)
    assert "invoke build --target debian-12 --builder virtualbox" in str(caught.value)


def test_every_build_gets_its_own_box_version() -> None:
    assert box_version("0.1.0", 0) == "0.1.0.19700101000000"
    assert box_version("0.1.0", 1795000000) == "0.1.0.20261118110640"


def _ruby_trial(tree: Paths, *argv: str, env: dict[str, str] | None = None) -> dict:
    """What the trial Vagrantfile's Ruby reads: it asks kiln (the tree's .venv python) to render it."""
    venv = tree.root / ".venv"
    if not venv.exists():
        venv.symlink_to(REPO_ROOT / ".venv")
    script = (f"require {json.dumps(str(tree.vagrant_templates / 'kiln.rb'))}; "
              f"puts JSON.generate(Kiln.trial({json.dumps(str(tree.root))}, ARGV, ENV.to_h))")
    done = subprocess.run(["ruby", "-e", script, "--", *argv], capture_output=True, text=True, check=True,
                          env={"PATH": "/usr/bin:/bin", "KILN_LIBVIRT_DRIVER": "qemu",
                               # the user's cache (and so the build key) is the one vagrant inherits
                               **{k: v for k, v in os.environ.items() if k == "KILN_CACHE_DIR"},
                               **(env or {})})
    return json.loads(done.stdout)


@needs_ruby
def test_the_trial_vagrantfile_and_shape_1_describe_the_same_node(tree: Paths) -> None:
    _catalog(tree, components=("zookeeper", "haproxy", "docker"))
    cfg = load_config(tree)
    python = json.loads(render_cluster(cfg, "1", tree, box=boxes.resolve(cfg, tree, "libvirt"))
                        .files["kiln-cluster.json"])
    ruby = _ruby_trial(tree)
    assert ruby["box"] == python["box"]
    assert python["box"]["components"] == ["docker", "haproxy", "zookeeper"]
    assert ruby["ssh"] == python["ssh"]
    assert ruby["wait_ready"] is python["wait_ready"] is True
    (rm,), (pm,) = ruby["machines"], python["machines"]
    assert rm["spec"] == pm["spec"]
    assert {k: rm[k] for k in ("name", "ip", "role")} == {k: pm[k] for k in ("name", "ip", "role")}
    assert (rm["cpus"], rm["memory_mb"]) == (cfg["trial"]["cpus"], cfg["trial"]["memory_mb"])


@needs_ruby
def test_the_trial_picks_the_box_of_the_provider_it_runs_with(tree: Paths) -> None:
    _catalog(tree)
    vbox = _catalog(tree, "virtualbox", "virtualbox")
    assert _ruby_trial(tree, "up", "--provider", "virtualbox")["box"]["url"] == vbox.as_uri()
    assert _ruby_trial(tree, "up", "--provider=virtualbox")["box"]["url"] == vbox.as_uri()
    assert _ruby_trial(tree, env={"VAGRANT_DEFAULT_PROVIDER": "virtualbox"})["box"]["url"] == vbox.as_uri()
    assert _ruby_trial(tree)["box"]["url"].endswith("debian-12-qemu/box-catalog.json")


def test_the_add_command_pins_a_catalog_version_or_names_a_plain_box() -> None:
    catalog = boxes.Box("kiln/mesos-debian-12", "0.1.0.20261123120000", "file:///b/box-catalog.json", True)
    assert boxes.add_command(catalog, "libvirt", "vagrant") == [
        "vagrant", "box", "add", "--provider", "libvirt", "--box-version", "0.1.0.20261123120000",
        "file:///b/box-catalog.json"]
    plain = boxes.Box("kiln/mesos-debian-12", "", "https://boxes.example.org/kiln.box", False)
    assert boxes.add_command(plain, "virtualbox", "vagrant") == [
        "vagrant", "box", "add", "--provider", "virtualbox", "--name", "kiln/mesos-debian-12",
        "https://boxes.example.org/kiln.box"]


def test_the_pool_volume_has_the_name_vagrant_libvirt_looks_for(tmp_path: Path) -> None:
    # As vagrant-libvirt 0.11.2 names it (seen in the pool after a `vagrant up`).
    assert boxes.libvirt_volume("kiln/mesos-debian-12", "0.1.0.20261123183432") == (
        "kiln-VAGRANTSLASH-mesos-debian-12_vagrant_box_image_0.1.0.20261123183432_box.img")
    assert boxes.box_image("kiln/mesos-debian-12", "0.1.0.1", tmp_path) == (
        tmp_path / "boxes" / "kiln-VAGRANTSLASH-mesos-debian-12" / "0.1.0.1" / "libvirt" / "box.img")


def test_nothing_to_seed_without_a_version_or_an_image_at_hand(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("VAGRANT_HOME", str(tmp_path))
    for box in (boxes.Box("kiln/x", "", "https://e.example/x.box", False),  # no version to name it by
                boxes.Box("kiln/x", "1.0", "https://e.example/c.json", False),  # remote, not added yet
                boxes.Box("kiln/x", "1.0", (tmp_path / "no-catalog.json").as_uri(), True)):
        assert boxes.pool_source(box) is None
        assert boxes.seed_libvirt_pool(box, tmp_path) is None


def test_the_pool_is_seeded_from_vagrants_copy_else_from_the_box_built_here(
        tree: Paths, tmp_path: Path, monkeypatch) -> None:
    image = small_qcow2(tmp_path)
    directory = fake_bake(tree.artifacts, image, {"base": {"version": "1"}}, version="0.1.0.7")
    box = boxes.Box("kiln/mesos-debian-12", "0.1.0.7", (directory / "box-catalog.json").as_uri(), True)
    monkeypatch.setenv("VAGRANT_HOME", str(tmp_path / "vagrant.d"))
    member = boxes.pool_source(box)  # not added to Vagrant yet: the local box's member, in place
    assert member is not None and member.box == (directory / "debian-12-qemu.box").resolve()
    with member.box.open("rb") as fh:
        fh.seek(member.offset)
        assert fh.read(member.size) == image.read_bytes()
    added = boxes.box_image(box.name, box.version, tmp_path / "vagrant.d")
    added.parent.mkdir(parents=True)
    shutil.copyfile(image, added)
    assert boxes.pool_source(box) == boxes.BoxImage(added.resolve(), 0, image.stat().st_size)
