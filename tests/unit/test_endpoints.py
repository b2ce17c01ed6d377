"""The services listed once a machine is up: only those of its role that its image holds.
`invoke up` (kiln/endpoints.py) and the Vagrantfiles (vagrant/kiln.rb) must list the same."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from kiln.vagrant.endpoints import endpoints, one_line

ROOT = Path(__file__).resolve().parents[2]
OFFLINE = ["docker", "haproxy", "java", "node", "qemu-kvm", "zookeeper"]
FULL = [*OFFLINE, "marathon", "mesos"]


def test_an_offline_image_lists_no_mesos_or_marathon() -> None:
    assert endpoints("standalone", "10.141.141.10", OFFLINE) == [
        ("ZooKeeper", "10.141.141.10:2181"), ("HAProxy", "http://10.141.141.10/")]
    assert one_line("agent", "10.0.0.5", OFFLINE) == "(no service UI in this image)"


def test_a_full_image_lists_every_service_of_the_role() -> None:
    assert [label for label, _ in endpoints("standalone", "10.0.0.1", FULL)] == [
        "Mesos", "Marathon", "ZooKeeper", "HAProxy", "Mesos agent"]
    assert endpoints("agent", "10.0.0.5", FULL) == [("Mesos agent", "http://10.0.0.5:5051")]
    assert "Mesos agent" not in dict(endpoints("master", "10.0.0.1", FULL))


def test_unknown_contents_list_everything_the_role_runs() -> None:
    assert endpoints("master", "10.0.0.1", None) == endpoints("master", "10.0.0.1", FULL)


@pytest.mark.skipif(shutil.which("ruby") is None,
                    reason="ruby is not installed (it comes with Debian's vagrant package)")
@pytest.mark.parametrize("components", [OFFLINE, FULL, None, []])
@pytest.mark.parametrize("role", ["standalone", "master", "agent"])
def test_the_vagrantfile_lists_the_same(role: str, components: list[str] | None) -> None:
    script = (f"require {json.dumps(str(ROOT / 'vagrant' / 'kiln.rb'))}; "
              "puts JSON.generate(Kiln.endpoints(ARGV[0], ARGV[1], JSON.parse(ARGV[2])))")
    done = subprocess.run(["ruby", "-e", script, "--", role, "10.1.2.3", json.dumps(components)],
                          capture_output=True, text=True, check=True)
    assert [tuple(pair) for pair in json.loads(done.stdout)] == endpoints(role, "10.1.2.3", components)
