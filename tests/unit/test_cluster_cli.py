"""`invoke up / status / ssh / ssh-config / down` as a user types them, for everything that is
decided before a VM starts: bad input exits 2 with one clear message and writes nothing.
(Machines themselves are brought up in tests/e2e/test_vagrant.py.)"""

from __future__ import annotations

import json
import subprocess

from cli_support import invoke

from kiln.paths import Paths
from kiln.vagrant.render import render_cluster


def _refused(result: subprocess.CompletedProcess[str], *phrases: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


def test_up_refuses_a_bad_shape(tree: Paths) -> None:
    _refused(invoke(tree, "up", "--shape", "3x"), "--shape: bad shape '3x': expected '1'")
    assert not (tree.root / "build" / "vagrant").exists()


def test_up_refuses_a_bad_name(tree: Paths) -> None:
    _refused(invoke(tree, "up", "--shape", "3m", "--name", "Bad_Name"), "--name 'Bad_Name': expected")


def test_up_without_any_box_says_how_to_get_one(tree: Paths) -> None:
    _refused(invoke(tree, "up", "--shape", "1"), "no libvirt box: nothing built at",
             "invoke build --target debian-12 --builder qemu")
    assert not (tree.root / "build" / "vagrant").exists()


def test_up_refuses_a_shape_that_does_not_fit_in_memory(tree: Paths) -> None:
    result = invoke(tree, "up", "--shape", "3m2a", "--set", "trial.box_url=https://boxes.example.org/b.json",
                    "--set", "cluster.agent.memory_mb=200000", "--accel", "tcg")
    _refused(result, "shape 3m2a does not fit: its 5 VM(s) need 1024 + 1024 + 1024 + 200000 + 200000 MiB",
             "MiB available")
    assert not (tree.root / "build" / "vagrant").exists()


def test_up_refuses_an_unknown_provider(tree: Paths) -> None:
    _refused(invoke(tree, "up", "--provider", "hyperv"), "unknown provider 'hyperv'")


def test_cluster_tasks_without_a_cluster_say_so(tree: Paths) -> None:
    for task in (["status"], ["ssh-config"], ["down"], ["test", "--cluster", "kiln-3m"], ["ssh", "m1"]):
        result = invoke(tree, *task)
        assert result.returncode == 2, (task, result.stderr)
        assert "no cluster" in result.stderr, (task, result.stderr)


def test_ssh_help_as_a_machine_name_shows_the_usage(tree: Paths) -> None:
    _refused(invoke(tree, "ssh", "-x"), "usage: invoke ssh NODE")


def test_ssh_names_the_machines_of_the_cluster(tree: Paths) -> None:
    from kiln.config.load import load_config
    from kiln.vagrant.render import write_cluster

    write_cluster(render_cluster(load_config(tree), "3m", tree))
    _refused(invoke(tree, "ssh", "m9", "--cluster", "kiln-3m"), "no machine 'm9' in cluster kiln-3m",
             "machines: m1, m2, m3")


def test_help_of_every_cluster_task(tree: Paths) -> None:
    for task, options in (("up", ["--shape", "--name", "--provider", "--accel", "--timeout"]),
                          ("status", ["--cluster"]), ("ssh", ["--cluster", "--command"]),
                          ("ssh-config", ["--cluster"]), ("down", ["--cluster", "--destroy"]),
                          ("test", ["--cluster", "--target"])):
        out = invoke(tree, "--help", task).stdout
        for option in options:
            assert option in out, (task, option)


def test_cluster_files_carry_each_node_spec_and_the_sizes(tree: Paths) -> None:
    from kiln.config.load import load_config
    from kiln.config.shapes import validate_spec

    cfg = load_config(tree, sets=["cluster.master.memory_mb=768"])
    files = render_cluster(cfg, "3m2a", tree, driver="kvm", name="lab")
    data = json.loads(files.files["kiln-cluster.json"])
    assert data["name"] == "lab" and data["shape"] == "3m2a" and data["libvirt"] == {"driver": "kvm"}
    assert data["wait_ready"] is False
    assert [(m["name"], m["ip"], m["role"], m["memory_mb"]) for m in data["machines"]] == [
        ("m1", "10.141.141.10", "master", 768), ("m2", "10.141.141.11", "master", 768),
        ("m3", "10.141.141.12", "master", 768), ("a1", "10.141.141.13", "agent", 2048),
        ("a2", "10.141.141.14", "agent", 2048)]
    for machine in data["machines"]:
        assert validate_spec(machine["spec"]) == []
        assert machine["spec"]["cluster"] == "lab"
        assert machine["spec"]["masters"] == ["10.141.141.10", "10.141.141.11", "10.141.141.12"]
    assert str(tree.vagrant_templates / "kiln.rb") in files.files["Vagrantfile"]
    assert files.directory == tree.build / "vagrant" / "lab"
