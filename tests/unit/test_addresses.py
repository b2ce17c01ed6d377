"""A cluster is refused when another cluster's (or the trial's) running machines hold its
addresses; halted machines, other addresses and the cluster itself are no obstacle."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kiln.config.load import load_config
from kiln.errors import UserError
from kiln.paths import Paths
from kiln.vagrant import addresses
from kiln.vagrant.render import render_cluster, write_cluster


def _created(directory: Path, machine: str) -> None:
    state = directory / ".vagrant" / "machines" / machine / "libvirt"
    state.mkdir(parents=True)
    (state / "id").write_text("7c1e")


def _states(**by_name: str):
    seen: list[Path] = []

    def states(directory: Path) -> dict[str, str]:
        seen.append(directory)
        return dict(by_name)
    states.seen = seen  # type: ignore[attr-defined]
    return states


def _new(tree: Paths, shape: str, *sets: str) -> tuple[Path, list[str]]:
    import json

    files = render_cluster(load_config(tree, sets=list(sets)), shape, tree)
    return files.directory, [m["ip"] for m in json.loads(files.files["kiln-cluster.json"])["machines"]]


def test_running_machines_of_another_cluster_on_the_same_addresses_refuse_it(tree: Paths) -> None:
    other = write_cluster(render_cluster(load_config(tree), "3m", tree))
    _created(other, "m1")
    _created(other, "m2")
    directory, ips = _new(tree, "1")
    with pytest.raises(UserError) as caught:
        addresses.check_free(load_config(tree), tree, directory, ips,
                             states=_states(m1="running", m2="running", m3="not_created"))
    message = str(caught.value)
    assert "cluster kiln-3m is running on addresses this cluster needs: 10.141.141.10 (m1)" in message
    assert "invoke down --cluster kiln-3m" in message and "cluster.first_host=20" in message
    assert not directory.exists()


def test_halted_machines_hold_no_address(tree: Paths) -> None:
    other = write_cluster(render_cluster(load_config(tree), "3m", tree))
    _created(other, "m1")
    directory, ips = _new(tree, "3m2a")
    addresses.check_free(load_config(tree), tree, directory, ips, states=_states(m1="shutoff"))


def test_other_addresses_need_no_question_to_vagrant(tree: Paths) -> None:
    other = write_cluster(render_cluster(load_config(tree), "3m", tree))
    _created(other, "m1")
    directory, ips = _new(tree, "1", "cluster.network_prefix=10.141.142")
    states = _states(m1="running")
    addresses.check_free(load_config(tree), tree, directory, ips, states=states)
    assert states.seen == []


def test_a_cluster_does_not_stand_in_its_own_way(tree: Paths) -> None:
    mine = write_cluster(render_cluster(load_config(tree), "3m", tree))
    _created(mine, "m1")
    directory, ips = _new(tree, "3m")
    assert directory == mine
    addresses.check_free(load_config(tree), tree, directory, ips, states=_states(m1="running"))


def test_the_running_trial_holds_its_address(tree: Paths) -> None:
    cfg = load_config(tree)
    _created(tree.root, cfg["trial"]["vm_name"])
    directory, ips = _new(tree, "3m")
    with pytest.raises(UserError, match=r"the trial \(Vagrantfile at the top\) is running on addresses "
                                        r"this cluster needs: 10\.141\.141\.10"):
        addresses.check_free(cfg, tree, directory, ips,
                             states=_states(**{cfg["trial"]["vm_name"]: "running"}))


@pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant is not installed")
def test_a_stale_machine_id_is_not_taken_for_a_running_machine(tree: Paths) -> None:
    """Real Vagrant: an id file whose domain does not exist (or whose libvirt is not reachable)."""
    other = write_cluster(render_cluster(load_config(tree), "3m", tree))
    _created(other, "m1")
    states = addresses.vagrant_states(other)
    assert states.get("m1") not in addresses.HOLDING
    directory, ips = _new(tree, "1")
    addresses.check_free(load_config(tree), tree, directory, ips)
