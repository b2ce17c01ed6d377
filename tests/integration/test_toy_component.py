"""A component is one folder plus one config entry: a toy component added to a copy of the tree
(nothing else edited) is baked into a real Debian 12 chroot, applied by kiln-node, listed as an
endpoint, opened in the AWS security group and selected by the testinfra suites."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from chroot_bake import chroot_from, make_base_tar

from kiln.aws.network import ingress_rules
from kiln.config import catalog
from kiln.config.load import load_config
from kiln.config.targets import select_pairs
from kiln.image.layers import Step, steps
from kiln.image.render import provision_env
from kiln.image.verify import suites
from kiln.paths import REPO_ROOT, Paths

TOY_PORT = 7777
FACTS = {
    "$schema": "../component.schema.json",
    "description": "A toy web page, to show what adding a component takes.",
    "packages": {"apt": ["python3"], "dnf": ["python3"]},
    "units": {"toy": {"roles": ["standalone", "master"], "after": ["zookeeper"],
                      "probe": {"kind": "http", "port": "http", "path": "/"}}},
    "ports": {"http": {"port": TOY_PORT, "reach": ["cluster", "admin"], "why": "toy page"}},
    "endpoints": [{"label": "Toy", "port": "http", "scheme": "http", "roles": ["standalone", "master"]}],
    "config": {"type": "object", "additionalProperties": False, "required": ["greeting"],
               "properties": {"greeting": {"type": "string", "minLength": 1}}},
}
BAKE = """\
#!/usr/bin/env bash
# toy: a web page served by python3 on the toy port, installed disabled.
set -Eeuo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=../../provision/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../../provision" && pwd)/lib.sh"

kiln_need KILN_TOY_GREETING components.toy.greeting
pkg_install_listed
install -d -m 0755 /opt/toy
printf '%s\\n' "$KILN_TOY_GREETING" | write_file_if_changed /opt/toy/index.html 0644
install_unit toy <<EOF
[Unit]
Description=kiln toy page
[Service]
ExecStart=/usr/bin/python3 -m http.server $KILN_TOY_PORT_HTTP --directory /opt/toy
EOF
service_disable toy.service
record_component toy 1.0
"""
SUITE = """\
from kiln_infra import boot_only, port_open, require


def test_the_page_is_baked(host, components):
    require(components, "toy")
    assert host.file("/opt/toy/index.html").contains("hello from the toy")


def test_the_page_is_served(host, components, phase):
    boot_only(phase)
    require(components, "toy")
    assert port_open(host, TOY_PORT)
""".replace("TOY_PORT", str(TOY_PORT))


@pytest.fixture
def toy_tree(tree: Paths) -> Paths:
    """The tree copy with the toy's folder and config entry: the only two things added."""
    folder = tree.root / "components" / "toy"
    folder.mkdir()
    (folder / "component.json").write_text(json.dumps(FACTS, indent=2))
    (folder / "bake.sh").write_text(BAKE)
    (folder / "test_toy.py").write_text(SUITE)
    config = json.loads(tree.config.read_text())
    config["components"]["enabled"].append("toy")
    config["components"]["toy"] = {"greeting": "hello from the toy"}
    tree.config.write_text(json.dumps(config, indent=2))
    return tree


def test_the_host_side_sees_the_toy_everywhere(toy_tree: Paths) -> None:
    config = load_config(toy_tree)
    cat = catalog.load(toy_tree.root)
    node = cat.node_catalog(config.data)
    assert ("Toy", f"http://10.0.0.1:{TOY_PORT}") in catalog.endpoints(node, "master", "10.0.0.1", None)
    assert catalog.endpoints(node, "agent", "10.0.0.1", None) == [("Mesos agent", "http://10.0.0.1:5051")]
    rules = ingress_rules("sg-1", "198.51.100.7/32", cat.port_rules(config.data))
    opened = {(r["FromPort"], next(iter(r.get("UserIdGroupPairs") or r["IpRanges"])).get("GroupId", "admin"))
              for r in rules}
    assert {(TOY_PORT, "sg-1"), (TOY_PORT, "admin")} <= opened
    assert toy_tree.root / "components" / "toy" / "test_toy.py" in suites(toy_tree)
    order = [u["unit"] for u in node["units"]]
    assert order.index("zookeeper") < order.index("toy")
    system_steps = steps(cat, config.components_for("debian-12"))["system"]
    assert Step("components/toy/bake.sh", "component: toy") in system_steps
    (pair,) = select_pairs(config.data, ["debian-12"], ["qemu"])
    env = provision_env(config, pair, ["toy"], "rev", cat)
    assert "KILN_TOY_GREETING='hello from the toy'" in env and f"KILN_TOY_PORT_HTTP={TOY_PORT}" in env


def test_the_toy_s_settings_are_checked_by_its_own_schema(toy_tree: Paths) -> None:
    from kiln.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_config(toy_tree, sets=['components.toy.greeting=""'])
    assert "$.components.toy.greeting: expected minLength 1" in str(info.value)


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="chroot, mount and package installs need root")
@pytest.mark.skipif(shutil.which("mmdebstrap") is None,
                    reason="mmdebstrap is not installed (apt-get install mmdebstrap)")
def test_the_toy_is_baked_in_a_chroot_and_applied_by_kiln_node(toy_tree: Paths, tmp_path: Path) -> None:
    config = load_config(toy_tree)
    cat = catalog.load(toy_tree.root)
    (pair,) = select_pairs(config.data, ["debian-12"], ["qemu"])
    env_text = provision_env(config, pair, ["toy"], "test-revision", cat)
    with chroot_from(make_base_tar(), tmp_path / "bake", env_text, source=toy_tree.root) as box:
        for script in ("toy", "manifest"):
            done = box.run(script)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        manifest = json.loads(box.path("etc/kiln/manifest.json").read_text())
        assert manifest["components"]["toy"]["version"] == "1.0"
        baked = json.loads(box.path("etc/kiln/catalog.json").read_text())
        assert "toy" in [u["unit"] for u in baked["units"]]
        unit = box.path("etc/systemd/system/toy.service").read_text()
        assert f"http.server {TOY_PORT} --directory /opt/toy" in unit
        assert not list(box.path("etc/systemd/system").glob("*.wants/toy.service")), "installed disabled"
        spec = tmp_path / "node.json"
        spec.write_text(json.dumps({"cluster": "kiln", "role": "standalone", "node_id": 1, "name": "mesos",
                                    "ip": "10.141.141.10", "masters": ["10.141.141.10"], "options": {}}))
        applied = subprocess.run([sys.executable, "-m", "kiln_node", "apply", str(spec),
                                  "--root", str(box.root)],
                                 capture_output=True, text=True, cwd=REPO_ROOT, check=False)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert "not run: --root given: systemctl enable toy" in applied.stdout
        assert "systemctl start toy" in applied.stdout
        # The toy is in the image; the components this chroot never baked are skipped, by name.
        assert "zookeeper not in this image: skipping zookeeper" in applied.stdout
    print(textwrap.indent(applied.stdout, "  "))
