"""Vagrant side: render cluster Vagrantfiles and validate them.

Each cluster lives in build/vagrant/<cluster>-<shape>/ with a Vagrantfile (from
vagrant/Vagrantfile.j2) and kiln-cluster.json (machines, sizes, node specs) that the
Vagrantfile reads, so the Ruby stays generic and the data stays JSON.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from kiln.checks import FAIL, PARTIAL, PASS, SKIP, Check
from kiln.config import catalog
from kiln.config.load import Config
from kiln.config.shapes import Shape, node_specs, parse_shape
from kiln.paths import Paths
from kiln.runner import capture, run
from kiln.vagrant.boxes import Box
from kiln.vagrant.environment import vagrant_env

VAGRANT_HINT = "apt-get install vagrant vagrant-libvirt (or a HashiCorp release)"


@dataclass(frozen=True)
class ClusterFiles:
    name: str
    shape: Shape
    directory: Path
    files: dict[str, str]


def cluster_data(config: Config, shape: Shape, paths: Paths, *, driver: str, box: Box,
                 name: str | None = None) -> dict[str, Any]:
    """What vagrant/kiln.rb reads from kiln-cluster.json, for a cluster and for the trial alike:
    the machines with their node specs, the box, and the component catalog's endpoints and probe
    kinds (so the Ruby prints the UIs and the host judges readiness from the same facts)."""
    cluster = dict(config["cluster"])
    if name:
        cluster["name"] = name
    trial = config["trial"]
    machines = []
    for spec in node_specs(shape, cluster):
        sizing = cluster[spec["role"]]
        if spec["role"] == "standalone":
            spec["name"] = trial["vm_name"]
        machines.append({
            "name": spec["name"],
            "ip": spec["ip"],
            "role": spec["role"],
            "cpus": sizing["cpus"],
            "memory_mb": sizing["memory_mb"],
            "spec": spec,
        })
    user = config["targets"].get(trial["target"], {}).get("ssh_username", "vagrant")
    return {
        "name": name or f"{cluster['name']}-{shape.name}",
        "shape": shape.name,
        "box": box.as_json(),
        "ssh": {"username": user, "private_key": str(paths.keys / "kiln_ed25519")},
        "libvirt": {"driver": driver},
        # A standalone node waits for its own services in the provisioner; cluster members
        # cannot (with a sequential provider the first master would wait for peers not yet
        # created), so `invoke up` waits for them from the host.
        "wait_ready": shape.standalone,
        "machines": machines,
        "catalog": catalog.load_cached(paths.root).node_catalog(config.data),
    }


def render_cluster(config: Config, shape_text: str, paths: Paths, *, driver: str = "qemu",
                   box: Box | None = None, name: str | None = None) -> ClusterFiles:
    shape = parse_shape(shape_text)
    if box is None:  # rendering for validation only: any box name will do
        box = Box(config["trial"]["box_name"], "", config["trial"]["box_url"], False)
    data = cluster_data(config, shape, paths, driver=driver, box=box, name=name)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(paths.vagrant_templates)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    vagrantfile = env.get_template("Vagrantfile.j2").render(
        cluster=data["name"], shape=shape.name, library=str(paths.vagrant_templates / "kiln.rb"))
    files = {
        "Vagrantfile": vagrantfile,
        "kiln-cluster.json": json.dumps(data, indent=2, sort_keys=True) + "\n",
    }
    return ClusterFiles(data["name"], shape, paths.build / "vagrant" / data["name"], files)


def write_cluster(item: ClusterFiles) -> Path:
    item.directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{item.name}.", dir=item.directory.parent))
    try:
        for rel, text in item.files.items():
            (staging / rel).write_text(text, encoding="utf-8")
        item.directory.mkdir(exist_ok=True)
        # Keep .vagrant/ (machine state) of an existing cluster: replace files one by one.
        for rel in item.files:
            (staging / rel).replace(item.directory / rel)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return item.directory


def validate_check(directory: Path, paths: Paths, provider: str = "libvirt") -> Check:
    subject = f"{directory.relative_to(paths.root)} ({provider})"
    exe = shutil.which("vagrant")
    if exe is None:
        return Check("vagrant validate", subject, SKIP, f"vagrant not installed: {VAGRANT_HINT}")
    argv = [exe, "validate"]
    detail = ""
    if provider == "libvirt" and not _libvirt_plugin_installed() \
            and "vagrant-libvirt" not in (capture([exe, "plugin", "list"]) or ""):
        argv.append("-p")
        detail = "vagrant-libvirt not installed: provider blocks not checked"
    if provider == "virtualbox" and shutil.which("VBoxManage") is None:
        argv.append("-p")
        detail = "VirtualBox not installed: provider blocks not checked (vagrant refuses without it)"
    result = run(argv, step="vagrant validate", cwd=directory, env=vagrant_env(provider), quiet=True,
                 check=False, timeout=120)
    if result.returncode == 0:
        # With -p the provider blocks were not checked: a partial pass, and the detail says so.
        return Check("vagrant validate", subject, PARTIAL if "-p" in argv else PASS, detail)
    # A Ruby exception ends in its backtrace ("from /usr/bin/vagrant:25:in ..."): name the error instead.
    lines = [ln.strip() for ln in result.output.splitlines()
             if ln.strip() and not ln.strip().startswith("from ")]
    return Check("vagrant validate", subject, FAIL, (lines[-1] if lines else "failed")[:160])


def _libvirt_plugin_installed() -> bool:
    # Debian's vagrant-libvirt package is a system plugin that `vagrant plugin list` omits.
    return Path("/usr/share/vagrant-plugins/plugins.d/vagrant-libvirt.json").exists()


def vagrant_checks(vagrant_dirs: list[Path], paths: Paths) -> list[Check]:
    """`vagrant validate` of each Vagrantfile for both providers."""
    return [validate_check(d, paths, provider) for d in vagrant_dirs
            for provider in ("libvirt", "virtualbox")]
