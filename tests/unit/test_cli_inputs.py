"""Hostile option values for every `invoke` task, as a user types them.

Each case must end with exit code 2 and one short message naming the option and what to give
instead; no traceback, and nothing written or removed anywhere in the (copied) tree: every option
is checked before the first file is written. `invoke TASK --help` only prints help, for every task.
AWS cases never leave 127.0.0.0/8: the endpoint and any proxy point at a closed local port.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cli_support import assert_refused, invoke, snapshot

from kiln.paths import REPO_ROOT, Paths
from kiln.tasks.cli import KilnTask


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def local_aws_env(endpoint: str | None) -> dict[str, str]:
    """Dummy credentials, the developer's AWS files out of reach, every request kept on 127.0.0.1."""
    proxy = f"http://127.0.0.1:{closed_port()}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/nonexistent/kiln-aws-config",
           "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/kiln-aws-credentials",
           "HTTPS_PROXY": proxy, "HTTP_PROXY": proxy, "https_proxy": proxy, "http_proxy": proxy,
           "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    return env


# -- the table ------------------------------------------------------------------------------------

Setup = Callable[[Paths], list[str]]  # prepares the tree, returns extra arguments


def nothing(tree: Paths) -> list[str]:
    return []


def a_file(name: str) -> Setup:
    def make(tree: Paths) -> list[str]:
        path = tree.root / name
        path.write_text("not a directory\n", encoding="utf-8")
        return [str(path)]

    return make


def generated_files(tree: Paths) -> list[str]:
    """Something `invoke clean` would remove, so that a refused clean is seen to remove nothing."""
    (tree.build / "packer" / "debian-12-qemu").mkdir(parents=True)
    (tree.build / "packer" / "debian-12-qemu" / "kiln.pkr.hcl").write_text("# rendered\n", encoding="utf-8")
    return []


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    phrases: tuple[str, ...]
    setup: Setup = nothing
    aws: str = ""  # "closed": AWS_ENDPOINT_URL at a closed local port; "none": no endpoint override
    env: dict[str, str] = field(default_factory=dict)


CASES = [
    # whole numbers given words, or out of range: one line while invoke parses, not its traceback
    Case("parallel-abc", ("build", "--parallel", "abc"),
         ("--parallel 'abc': expected a whole number from 1 to 64", "e.g. --parallel 1")),
    Case("parallel-0", ("build", "--parallel", "0"), ("--parallel 0: expected a whole number from 1 to 64",)),
    Case("parallel-float", ("build", "--parallel=1.5"), ("--parallel '1.5': expected a whole number",)),
    Case("parallel-huge", ("build", "--parallel", "9" * 5000), ("--parallel", "expected a whole number")),
    Case("timeout-abc", ("up", "--timeout", "abc"),
         ("--timeout 'abc': expected a whole number from 1 to 86400", "e.g. --timeout 900")),
    Case("timeout-huge", ("up", "--timeout", "99999999999"),
         ("--timeout 99999999999: expected a whole number",)),
    Case("keep-abc", ("ami.prune", "--keep", "abc"), ("--keep 'abc': expected a whole number from 0 to 1000",
                                                       "e.g. --keep 3")),
    Case("keep-negative", ("ami.prune", "--keep", "-1"),
         ("--keep -1: expected a whole number from 0 to 1000",)),
    Case("jobs-abc", ("package", "mesos", "--jobs", "abc"),
         ("--jobs 'abc': expected a whole number from 0 to 256",)),
    Case("launch-timeout-abc", ("ami.launch", "--timeout", "abc"),
         ("--timeout 'abc': expected a whole number",)),
    Case("destroy-timeout-0", ("ami.destroy", "kiln-3m", "--timeout", "0"),
         ("--timeout 0: expected a whole",)),
    # lists that name nothing never mean "all"
    Case("target-comma", ("render", "--target", ","),
         ("--target ',': an empty name", "e.g. --target debian-12")),
    Case("target-empty", ("render", "--target", ""), ("--target '': an empty name",)),
    Case("target-double-comma", ("render", "--target", "debian-12,,ubuntu-24.04"),
         ("--target 'debian-12,,ubuntu-24.04': an empty name",)),
    Case("builder-comma", ("validate", "--builder", " , "), ("--builder ' , ': an empty name",)),
    Case("nightly-targets-comma", ("nightly", "--targets", ","), ("--targets ',': an empty name",)),
    Case("nightly-builders-comma", ("nightly", "--builders", ","), ("--builders ',': an empty name",)),
    Case("nightly-unknown-builder", ("nightly", "--builders", "qemu,vmware"),
         ("unknown builder(s): vmware", "known: qemu, virtualbox, amazon-ebs")),
    Case("build-target-comma", ("build", "--target", ","), ("--target ',': an empty name",)),
    Case("pin-target-comma", ("pin", "--target", ","), ("--target ',': an empty name",)),
    # words from a fixed set
    Case("accel-fast", ("build", "--accel", "fast"), ("--accel 'fast': expected one of auto, kvm, tcg",)),
    Case("up-accel-fast", ("up", "--accel", "fast"), ("--accel 'fast': expected one of auto, kvm, tcg",)),
    Case("test-accel-fast", ("test", "--accel", "fast"), ("--accel 'fast': expected one of auto, kvm, tcg",)),
    Case("goal-mars", ("doctor", "--goal", "mars"),
         ("--goal 'mars': expected one of build, vagrant, aws, all",)),
    # control characters in any option (a name that would become a directory, a shape, a path)
    Case("name-newline", ("up", "--shape", "3m", "--name", "lab\n"),
         ("--name 'lab\\n': holds a control character", "without them")),
    Case("shape-newline", ("up", "--shape", "3m\n"), ("--shape '3m\\n': holds a control character",)),
    Case("nightly-shape-newline", ("nightly", "--cluster-shape", "3m\n"),
         ("--cluster-shape '3m\\n': holds a control character",)),
    Case("render-shape-newline", ("render", "--set", 'cluster.shapes=["3m\\n"]'),
         ("$.cluster.shapes[0]: expected '1'",)),
    Case("cluster-escape", ("status", "--cluster", "kiln\x1b[2J"),
         ("--cluster 'kiln\\x1b[2J': holds a control",)),
    Case("config-path-newline", ("render", "--config", "a\nb.json"),
         ("--config 'a\\nb.json': holds a control",)),
    Case("profile-newline", ("render", "--profile", "offline\n"),
         ("--profile 'offline\\n': holds a control",)),
    Case("set-newline", ("render", "--set", "trial.vm_name=a\nb"),
         ("--set 'trial.vm_name=a\\nb': holds a contr",)),
    Case("ssh-node-tab", ("ssh", "m\t1"), ("--node 'm\\t1': holds a control character",)),
    Case("report-from-newline", ("report", "--from", "x\n.json"), ("--from 'x\\n.json': holds a control",)),
    Case("aws-name-newline", ("ami.status", "lab\n"), ("--name 'lab\\n': holds a control character",),
         aws="closed"),
    # checks before writes: a bad later option, and nothing is created
    Case("render-unknown-builder", ("render", "--builder", "hyperv"), ("hyperv",)),
    Case("base-second-target-without-base", ("base", "--target", "debian-12,ubuntu-24.04"),
         ("target 'ubuntu-24.04' has no `base` block", "targets with one: debian-12")),
    Case("nightly-bad-shape", ("nightly", "--cluster-shape", "3x"),
         ("--cluster-shape: bad shape '3x'", "or --cluster-shape '' for no cluster")),
    Case("nightly-report-dir-is-a-file", ("nightly", "--report-dir"),
         ("exists and is not a directory", "name a directory"), setup=a_file("report-file")),
    Case("nightly-relative-expect-file", ("nightly", "--expect-file", "canary"),
         ("--expect-file 'canary': expected an absolute path", "e.g. --expect-file /etc/kiln/canary")),
    Case("nightly-unknown-target", ("nightly", "--targets", "fedora-40"), ("unknown target(s): fedora-40",)),
    Case("pin-unknown-target", ("pin", "--target", "ubuntu-24.04,fedora-40"),
         ("--target 'fedora-40': no downloadable image to pin", "targets with one: ")),
    Case("clean-boxes-bad-config", ("clean", "--boxes", "--set", "trial.box_name=5"),
         ("$.trial.box_name: expected string, got integer 5",), setup=generated_files),
    Case("report-missing-json", ("report", "--from", "/nonexistent/nightly.json", "--report-dir"),
         ("/nonexistent/nightly.json",), setup=lambda tree: [str(tree.root / "new-reports")]),
    Case("profile-dotdot", ("build", "--profile", "../profiles/offline"),
         ('--profile "../profiles/offline": expected the name of a file in profiles/',)),
    # AWS: regions checked before any request; nothing leaves 127.0.0.1
    Case("region-unknown", ("ami.list", "--region", "mars-east-1"),
         ("unknown AWS region 'mars-east-1'", "set aws.region or pass --region"), aws="none"),
    Case("region-typo", ("ami.list", "--region", "us-est-1"),
         ("unknown AWS region 'us-est-1'", "or us-east-1"), aws="none"),
    Case("region-malformed", ("ami.status", "lab", "--region", "us east 1"),
         ("AWS region 'us east 1': not a region name",), aws="none"),
    Case("region-config", ("ami.list", "--set", "aws.region=zz-nowhere-9"),
         ("unknown AWS region 'zz-nowhere-9'",), aws="none"),
    Case("test-aws-region", ("test", "--aws", "lab", "--region", "mars-east-1"),
         ("unknown AWS region 'mars-east-1'",), aws="none"),
    Case("build-extra-region", ("ami.build", "--set", 'aws.extra_regions=["eu-nowhere-1"]'),
         ("unknown AWS region 'eu-nowhere-1'",), aws="none"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_option_is_refused_with_one_message_and_nothing_written(tree: Paths, case: Case) -> None:
    extra = case.setup(tree)
    env = dict(case.env)
    if case.aws:
        env.update(local_aws_env(f"http://127.0.0.1:{closed_port()}" if case.aws == "closed" else None))
    before = snapshot(tree.root)
    result = invoke(tree, *case.args, *extra, env=env)
    assert_refused(result, case.phrases)
    assert snapshot(tree.root) == before, "a refused option wrote, changed or removed files"


def test_the_table_holds_enough_cases() -> None:
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)


# -- AWS endpoints ---------------------------------------------------------------------------------

def test_an_unreachable_endpoint_is_reported_within_seconds(tree: Paths) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    result = invoke(tree, "ami.list", env=local_aws_env(endpoint))
    elapsed = time.monotonic() - started
    assert_refused(result, (f"cannot reach AWS EC2 for us-east-1 at {endpoint}", "Connection refused",
                            "fix: check the network"))
    assert elapsed < 12, f"took {elapsed:.1f}s (botocore's retries take 20-30 s)"


@pytest.fixture
def moto_endpoint() -> Iterator[str]:
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed (scripts/setup)")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=closed_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def test_a_reachable_endpoint_passes_the_same_checks(tree: Paths, moto_endpoint: str) -> None:
    """The other side of the two tests above: a known region at a listening endpoint works."""
    result = invoke(tree, "ami.list", "--region", "eu-west-1", env=local_aws_env(moto_endpoint))
    assert result.returncode == 0, result.stderr
    assert "no kiln AMIs found" in result.stdout


# -- --help, for every task --------------------------------------------------------------------------

def _collection() -> object:
    spec = importlib.util.spec_from_file_location("kiln_tasks_under_test", REPO_ROOT / "tasks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ns


def test_every_task_is_a_kiln_task() -> None:
    ns = _collection()
    names = sorted(ns.task_names)  # type: ignore[attr-defined]
    assert len(names) >= 20
    assert [n for n in names if not isinstance(ns[n], KilnTask)] == []  # type: ignore[index]


def test_help_of_every_task_only_prints_help(tree: Paths) -> None:
    """`invoke TASK --help` (and -h): exit 0, the task's usage, nothing run or written, for every task;
    tasks with a positional argument used to take --help as its value and run."""
    ns = _collection()
    names = sorted(ns.task_names)  # type: ignore[attr-defined]
    positional = [n for n in names if ns[n].positional]  # type: ignore[index]
    assert {"ssh", "package", "ami.destroy", "ami.status", "ami.ssh-config"} <= set(positional)
    calls = [(n, "--help") for n in names] + [(n, "-h") for n in positional]
    env = local_aws_env(f"http://127.0.0.1:{closed_port()}")
    before = snapshot(tree.root)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda call: (call, invoke(tree, *call, env=env)), calls))
    problems = []
    for (name, flag), result in results:
        usage = f"Usage: inv[oke] [--core-opts] {name} "
        if result.returncode != 0 or not result.stdout.startswith(usage) or result.stderr.strip() \
                or "Docstring:" not in result.stdout or "Options:" not in result.stdout:
            problems.append(f"invoke {name} {flag}: exit {result.returncode}\n{result.stdout[:300]}"
                            f"{result.stderr[:300]}")
    assert problems == []
    assert snapshot(tree.root) == before


def test_task_help_after_the_name_is_invokes_own_help(tree: Paths) -> None:
    ours = invoke(tree, "ami.destroy", "--help")
    theirs = invoke(tree, "--help", "ami.destroy")
    assert ours.returncode == theirs.returncode == 0
    assert ours.stdout == theirs.stdout
    assert "--timeout=INT" in ours.stdout and "Terminate a cluster's instances" in ours.stdout


# -- down --destroy and clean --boxes ----------------------------------------------------------------

def test_the_box_that_stays_after_down_destroy_is_named_with_its_removal(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from kiln.tasks.app import box_stays

    monkeypatch.setenv("VAGRANT_HOME", str(tmp_path))
    box = {"name": "kiln/mesos-debian-12", "version": "0.1.0-20260101000000", "url": "file:///x",
           "components": None}
    assert box_stays(box) == (
        f"the box kiln/mesos-debian-12 0.1.0-20260101000000 stays: in Vagrant's boxes ({tmp_path / 'boxes'}) "
        "and, with libvirt, as an image in libvirt's default pool (about 1 GB each); "
        "`invoke clean --boxes` removes kiln's boxes")
    assert box_stays(None) == "" and box_stays({"name": ""}) == ""


def test_down_destroy_says_the_box_stays(tree: Paths, tmp_path_factory: pytest.TempPathFactory) -> None:
    import shutil

    if shutil.which("vagrant") is None:
        pytest.skip("vagrant is not installed (scripts/setup installs it): down runs `vagrant destroy`")
    if not Path("/run/libvirt/libvirt-sock").exists():
        pytest.skip("no system libvirtd: `vagrant destroy` of a libvirt cluster connects to qemu:///system "
                    "even without machines (tests/e2e/test_vagrant.py runs down in a namespace of its own)")
    from kiln.config.load import load_config
    from kiln.keys import ensure_build_key
    from kiln.vagrant.boxes import Box
    from kiln.vagrant.render import render_cluster, write_cluster

    box = Box("kiln/mesos-debian-12", "0.1.0-20260101000000", "https://boxes.example.org/catalog.json", False)
    ensure_build_key(tree.build)  # the Vagrantfile names it; `vagrant destroy` checks it exists
    write_cluster(render_cluster(load_config(tree), "1", tree, box=box, name="lab"))
    home = tmp_path_factory.mktemp("vagrant-home")
    result = invoke(tree, "down", "--cluster", "lab", "--destroy", env={"VAGRANT_HOME": str(home)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "lab: destroyed" in result.stdout
    assert "the box kiln/mesos-debian-12 0.1.0-20260101000000 stays" in result.stdout
    assert "`invoke clean --boxes` removes kiln's boxes" in result.stdout


def _fake_box(home: Path, name: str, version: str, provider: str = "libvirt") -> Path:
    """A box as `vagrant box add` leaves it: what `vagrant box list` reads."""
    folder = home / "boxes" / name.replace("/", "-VAGRANTSLASH-") / version / provider
    folder.mkdir(parents=True)
    metadata = {"provider": provider, "format": "qcow2"}
    (folder / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    (folder / "box.img").write_bytes(b"\0" * (3 << 20))
    (folder.parent.parent / "metadata_url").write_text("file:///dev/null", encoding="utf-8")
    return folder


def _test_pool(path: Path, names: list[str]) -> str:
    """A libvirt URI of virsh's test driver whose default pool holds volumes of these names (each
    virsh call starts from this file: no daemon, nothing of the host's libvirt is touched)."""
    volumes = "".join(f"<volume><name>{n}</name><capacity>1</capacity><allocation>1</allocation>"
                      f"<target><path>/pool/{n}</path></target></volume>" for n in names)
    path.write_text(f"<node><pool type='dir'><name>default</name><uuid>35bb2ad9-388a-cdfe-461a-b8907f6e53fe"
                    f"</uuid><capacity>10</capacity><allocation>0</allocation><available>10</available><source/>"
                    f"<target><path>/pool</path></target>{volumes}</pool></node>", encoding="utf-8")
    return f"test://{path}"


def _vagrant_boxes(home: Path) -> str:
    done = subprocess.run(["vagrant", "box", "list"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "VAGRANT_HOME": str(home)}, stdin=subprocess.DEVNULL)
    return done.stdout


def test_clean_boxes_removes_kiln_boxes_only(tree: Paths, tmp_path_factory: pytest.TempPathFactory) -> None:
    import shutil

    from kiln.vagrant.boxes import libvirt_volume

    for tool in ("vagrant", "virsh"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/setup installs it): it lists boxes and volumes")
    home = tmp_path_factory.mktemp("vagrant-home")
    volume = libvirt_volume("kiln/mesos-debian-12", "0.1.0-20260101000000")
    uri = _test_pool(home / "node.xml", [volume, libvirt_volume("someone/else", "1.0")])
    _fake_box(home, "kiln/mesos-debian-12", "0.1.0-20260101000000")
    _fake_box(home, "kiln/mesos-debian-12", "0.1.0-20260102000000")
    _fake_box(home, "someone/else", "1.0")
    listed = _vagrant_boxes(home)
    assert "kiln/mesos-debian-12" in listed and "someone/else" in listed, listed
    result = invoke(tree, "clean", "--boxes", env={"VAGRANT_HOME": str(home), "KILN_LIBVIRT_URI": uri})
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"removed libvirt volume {volume} from pool default ({uri})" in result.stdout
    assert "someone" not in result.stdout
    assert (f"removed Vagrant box kiln/mesos-debian-12 (0.1.0-20260101000000, 0.1.0-20260102000000) from "
            f"{home / 'boxes'}: 6 MiB") in result.stdout
    listed = _vagrant_boxes(home)
    assert "kiln/mesos-debian-12" not in listed and "someone/else" in listed, listed


def test_clean_boxes_is_refused_while_machines_exist(tree: Paths,
                                                     tmp_path_factory: pytest.TempPathFactory) -> None:
    home = tmp_path_factory.mktemp("vagrant-home")
    box = _fake_box(home, "kiln/mesos-debian-12", "0.1.0-1")
    machine = tree.build / "vagrant" / "lab" / ".vagrant" / "machines" / "m1" / "libvirt" / "id"
    machine.parent.mkdir(parents=True)
    machine.write_text("uuid\n", encoding="utf-8")
    before = snapshot(tree.root)
    result = invoke(tree, "clean", "--boxes", env={"VAGRANT_HOME": str(home),
                                                   "KILN_LIBVIRT_URI": "test:///default"})
    assert_refused(result, ("Vagrant machines may still use kiln's box", "run `invoke down --destroy`"))
    assert box.is_dir() and snapshot(tree.root) == before


def test_clean_boxes_finds_and_deletes_kiln_volumes_in_a_libvirt_pool(tree: Paths, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Against virsh's own test driver (a pool described in XML, no daemon): the volumes named like
    kiln/vagrant/boxes.py libvirt_volume() of trial.box_name are found and deleted, others are not."""
    import shutil

    from kiln.config.load import load_config
    from kiln.tasks import app
    from kiln.vagrant.boxes import libvirt_volume

    if shutil.which("virsh") is None:
        pytest.skip("virsh is not installed (apt-get install libvirt-clients; scripts/setup does)")
    monkeypatch.setenv("VAGRANT_HOME", str(tmp_path / "vagrant-home"))
    ours = [libvirt_volume("kiln/mesos-debian-12", v) for v in ("0.1.0-1", "0.1.0-2")]
    uri = _test_pool(tmp_path / "node.xml",
                     [*ours, libvirt_volume("someone/else", "1.0"), "kiln-mesos-debian-12.img"])
    plan = app.plan_boxes(load_config(tree), tree, libvirt_uri=uri)
    assert plan.volumes == ours and plan.pool_note == ""
    done = app.remove_boxes(plan, libvirt_uri=uri)  # vol-delete fails (StepFailed) on a name not in the pool
    assert done == [f"libvirt volume {v} from pool default ({uri})" for v in ours]
    unreachable = app.plan_boxes(load_config(tree), tree, libvirt_uri=f"test://{tmp_path / 'none.xml'}")
    assert unreachable.volumes == [] and "did not list pool 'default'" in unreachable.pool_note
