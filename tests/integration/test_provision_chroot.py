"""Bake the components into a real Debian 12 chroot, twice, and check what the image holds.

A minbase bookworm tree is made with mmdebstrap (cached under build/cache/ by its package list),
extracted per session, and every offline-capable component runs in it as Packer would run it,
with the debian-12 kiln.env rendered by kiln itself. Packages come from Debian's mirror (the only
network source used; local fixture files are served from 127.0.0.1). A policy-rc.d forbids
service starts, /proc is mounted for the JVM's package scripts and unmounted in a finally.

Stand-ins, named as such: Mesos and Marathon have no offline source, so mesos.sh and marathon.sh
install a locally built .deb / tarball with the same layout (binaries are shell stubs); when the
repo's kiln_node/ or kiln_bridge/ is not a runnable package yet, a minimal one takes its place.

The lib.sh download and key checks run on the host against local files and 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tarfile
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
from chroot_bake import (
    BUILD_TIME,
    HOSTNAME,
    Chroot,
    chroot_from,
    diff,
    make_base_tar,
    say,
)

from kiln.config import catalog
from kiln.config.load import load_config
from kiln.config.targets import select_pairs
from kiln.image.render import provision_env
from kiln.paths import REPO_ROOT, Paths

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="chroot, mount and package installs need root"),
    pytest.mark.skipif(shutil.which("mmdebstrap") is None,
                       reason="mmdebstrap is not installed (apt-get install mmdebstrap)"),
]

COMPONENTS = ("base", "java", "zookeeper", "docker", "haproxy", "qemu-kvm", "node", "rancher")
# What the packages of each component are called in Debian 12 (exact versions must match).
PACKAGE_OF = {"java": "openjdk-17-jre-headless", "zookeeper": "zookeeper", "docker": "docker.io",
              "haproxy": "haproxy", "qemu-kvm": "qemu-system-x86"}
CLUSTER_UNITS = ("zookeeper.service", "docker.service", "docker.socket", "containerd.service",
                 "haproxy.service", "kiln-haproxy-bridge.service")
CHANGE_LOG = re.compile(r"kiln\[[^]]+\]: (installing|updating package lists|wrote|mode|linked|installed|"
                        r"enabled|disabled|stopped|created system user|downloading)\b")


# --------------------------------------------------------------------------------------------
# The base tree


@pytest.fixture(scope="session")
def base_tar() -> Path:
    """A minbase bookworm tarball, rebuilt only when its inputs change."""
    return make_base_tar()


# --------------------------------------------------------------------------------------------
# A chroot to bake in


def _env_text(**overrides: str) -> str:
    config = load_config(Paths(root=REPO_ROOT))
    (pair,) = select_pairs(config.data, ["debian-12"], ["qemu"])
    text = provision_env(config, pair, [*COMPONENTS], "test-revision", catalog.load(REPO_ROOT))
    for key, value in overrides.items():
        text += f"{key}={shlex.quote(value)}\n"
    return text


@pytest.fixture(scope="module")
def chroot(base_tar: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chroot]:
    with chroot_from(base_tar, tmp_path_factory.mktemp("provision-chroot"), _env_text()) as box:
        yield box


# --------------------------------------------------------------------------------------------
# Two bake runs


@dataclass
class Run:
    seconds: float
    output: dict[str, subprocess.CompletedProcess[str]]
    snapshot: dict[str, tuple[object, ...]]


@dataclass
class Baked:
    box: Chroot
    runs: list[Run]
    manifest: dict[str, object]
    sshd_t: str


def _bake(box: Chroot, number: int) -> Run:
    started = time.monotonic()
    output = {}
    for component in (*COMPONENTS, "manifest"):
        result = box.run(component)
        output[component] = result
        if result.returncode != 0:
            pytest.fail(f"run {number}: {component}.sh failed ({result.returncode}):\n"
                        f"{result.stdout[-6000:]}\n{result.stderr[-6000:]}")
    seconds = time.monotonic() - started
    say(f"run {number}: {len(output)} scripts in {seconds:.1f} s")
    return Run(seconds, output, box.snapshot())


@pytest.fixture(scope="module")
def baked(chroot: Chroot) -> Baked:
    runs = [_bake(chroot, 1), _bake(chroot, 2)]
    manifest = json.loads(chroot.path("etc/kiln/manifest.json").read_text())
    sshd_t = chroot.sh("mkdir -p /run/sshd && /usr/sbin/sshd -T").stdout
    return Baked(chroot, runs, manifest, sshd_t)


def test_second_run_installs_nothing_and_changes_no_file(baked: Baked) -> None:
    first, second = baked.runs
    assert diff(first.snapshot, second.snapshot) == []
    changes = [f"{component}: {line}" for component, result in second.output.items()
               for line in result.stdout.splitlines() if CHANGE_LOG.search(line)]
    assert changes == []
    # ...while the first run did the work (so the check above can fail).
    assert any("installing:" in r.stdout for r in first.output.values())
    assert "updating package lists" in first.output["base"].stdout


def test_manifest_lists_components_with_the_installed_versions(baked: Baked) -> None:
    m = baked.manifest
    assert (m["kiln_version"], m["target"], m["distro"], m["release"]) == ("0.1.0", "debian-12",
                                                                         "debian", "12")
    assert m["build_time"] == BUILD_TIME
    assert m["git_revision"] == "test-revision"
    components = m["components"]
    assert isinstance(components, dict)
    assert sorted(components) == sorted(c for c in COMPONENTS if c != "rancher")
    assert set(m["enabled"]) - set(components) - set(m["not_baked"]) == set()  # none left silent
    for component, package in PACKAGE_OF.items():
        installed = baked.box.sh(f"dpkg-query -W -f='${{Version}}' {package}").stdout
        assert components[component]["version"] == installed, component
    assert components["base"]["version"] == "0.1.0"
    assert components["base"]["nofile_limit"] == 65536
    node_version = re.search(r'__version__ = "([^"]+)"',
                             baked.box.path("opt/kiln/lib/kiln_node/__init__.py").read_text())
    assert node_version is not None
    assert components["node"]["version"] == node_version.group(1)
    text = baked.box.path("etc/kiln/manifest.json").read_text()
    assert text == json.dumps(m, sort_keys=True, indent=2) + "\n"


def _wants_links(box: Chroot, unit: str) -> list[str]:
    """The .wants/ symlinks that enable `unit` (they point into the chroot, so never follow them)."""
    wants = box.path("etc/systemd/system").glob("*.wants")
    return [str((d / unit).relative_to(box.root)) for d in wants if os.path.lexists(d / unit)]


def test_cluster_services_are_installed_but_not_enabled(baked: Baked) -> None:
    box = baked.box
    for unit in ("zookeeper", "kiln-haproxy-bridge"):
        assert box.path(f"etc/systemd/system/{unit}.service").is_file()
    for unit in CLUSTER_UNITS:
        assert _wants_links(box, unit) == [], unit
        state = box.sh(f"systemctl is-enabled {unit}", check=False).stdout.strip()
        assert state in ("disabled", ""), f"{unit}: {state}"
    for name in ("zookeeper", "docker", "haproxy", "containerd"):
        assert list(box.root.glob(f"etc/rc[2345].d/S*{name}")) == [], name


def test_image_services_are_enabled(baked: Baked) -> None:
    box = baked.box
    assert _wants_links(box, "kiln-ssh-hostkeys.service")
    unit = box.path("etc/systemd/system/kiln-ssh-hostkeys.service").read_text()
    assert "ExecStart=/usr/bin/ssh-keygen -A" in unit
    assert "Before=ssh.service sshd.service" in unit
    for enabled in ("kiln-ssh-hostkeys.service", "systemd-timesyncd.service", "systemd-networkd.service"):
        assert box.sh(f"systemctl is-enabled {enabled}", check=False).stdout.strip() == "enabled", enabled
    # networkd runs only for br0 here: boot must not wait for links it does not manage.
    state = box.sh("systemctl is-enabled systemd-networkd-wait-online.service", check=False).stdout.strip()
    assert state == "disabled"


def test_sshd_refuses_passwords_and_root(baked: Baked) -> None:
    dropin = baked.box.path("etc/ssh/sshd_config.d/00-kiln-hardening.conf").read_text()
    assert "PasswordAuthentication no" in dropin
    config = baked.sshd_t.lower().splitlines()
    for setting in ("passwordauthentication no", "permitrootlogin no", "kbdinteractiveauthentication no"):
        assert setting in config


def test_hostname_resolves(baked: Baked) -> None:
    hosts = baked.box.path("etc/hosts").read_text().splitlines()
    assert f"127.0.1.1\t{HOSTNAME}" in hosts
    assert HOSTNAME in baked.box.sh(f"getent hosts {HOSTNAME}").stdout


def test_limits_and_container_sysctls(baked: Baked) -> None:
    box = baked.box
    systemd = box.path("etc/systemd/system.conf.d/90-kiln-limits.conf").read_text()
    assert "DefaultLimitNOFILE=65536:524288" in systemd.splitlines()
    pam = box.path("etc/security/limits.d/90-kiln-nofile.conf").read_text()
    assert "* soft nofile 65536" in [" ".join(line.split()) for line in pam.splitlines()]
    sysctl = box.path("etc/sysctl.d/90-kiln-containers.conf").read_text()
    for key in ("net.ipv4.ip_forward = 1", "net.bridge.bridge-nf-call-iptables = 1",
                "fs.inotify.max_user_watches = 524288", "vm.max_map_count = 262144"):
        assert key in sysctl
    assert "br_netfilter" in box.path("etc/modules-load.d/kiln-containers.conf").read_text().split()


def test_qemu_bridge_and_nested_virtualization(baked: Baked) -> None:
    box = baked.box
    assert "allow br0" in box.path("etc/qemu/bridge.conf").read_text().splitlines()
    netdev = box.path("etc/systemd/network/50-kiln-br0.netdev").read_text()
    network = box.path("etc/systemd/network/50-kiln-br0.network").read_text()
    assert "Kind=bridge" in netdev
    assert "Name=br0" in network and "Address=192.168.200.1/24" in network
    # Only br0 is matched: networkd leaves the VM's own interface alone.
    assert [p.name for p in box.path("etc/systemd/network").glob("*.network")] == ["50-kiln-br0.network"]
    nested = box.path("etc/modprobe.d/kiln-nested.conf").read_text()
    assert "options kvm_intel nested=1" in nested and "options kvm_amd nested=1" in nested
    assert box.path("usr/bin/qemu-system-x86_64").exists()


def test_docker_has_apparmor_tools(baked: Baked) -> None:
    assert baked.box.path("usr/bin/docker").exists()
    assert any(baked.box.path(p).exists() for p in ("sbin/apparmor_parser", "usr/sbin/apparmor_parser"))


def test_kiln_commands_run_from_the_image(baked: Baked) -> None:
    box = baked.box
    for command, package in (("kiln-node", "kiln_node"), ("kiln-haproxy-bridge", "kiln_bridge")):
        wrapper = box.path(f"usr/local/sbin/{command}")
        assert wrapper.stat().st_mode & 0o111
        assert f"PYTHONPATH=/opt/kiln/lib exec python3 -m {package}" in wrapper.read_text()
        assert box.sh(f"{command} --help").returncode == 0
    unit = box.path("etc/systemd/system/kiln-haproxy-bridge.service").read_text()
    assert "EnvironmentFile=-/etc/kiln/haproxy-bridge.env" in unit
    assert "ExecStart=/usr/local/sbin/kiln-haproxy-bridge run" in unit


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _systemd_argv(exec_start: str, env: dict[str, str]) -> list[str]:
    """ExecStart= expanded the way systemd does: ${X} is one word, a lone $X splits on spaces."""
    argv: list[str] = []
    for word in shlex.split(exec_start):
        bare = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if bare:
            argv += env.get(bare.group(1), "").split()
        else:
            argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
    return argv


def _environment_file(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            env[key.strip()] = shlex.split(value)[0] if value.strip() else ""
    return env


def _zookeeper_answers_ruok(box: Chroot, environment: str) -> str:
    """Run zookeeper.service's own ExecStart line (as user zookeeper, with its EnvironmentFile)
    against a scratch config on a free 127.0.0.1 port, expect `imok` to `ruok`; return its log."""
    unit = box.path("etc/systemd/system/zookeeper.service").read_text()
    exec_start = re.search(r"^ExecStart=(.+)$", unit, re.M)
    assert exec_start is not None
    env = _environment_file(box.sh(f"cat {environment}").stdout)
    port = _free_port()
    scratch = box.path("tmp/zk-test")
    (scratch / "data").mkdir(parents=True)
    (scratch / "zoo.cfg").write_text(f"tickTime=2000\ndataDir=/tmp/zk-test/data\nclientPort={port}\n"
                                     "clientPortAddress=127.0.0.1\n")
    box.sh("chown -R zookeeper:zookeeper /tmp/zk-test")
    env["ZOOCFG"] = "/tmp/zk-test/zoo.cfg"
    argv = _systemd_argv(exec_start.group(1), env)
    proc = subprocess.Popen(["/usr/sbin/chroot", "--userspec=zookeeper:zookeeper", str(box.root), *argv],
                            env={"PATH": "/usr/bin:/bin", "HOME": "/var/lib/zookeeper"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    answer = b""
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"ruok")
                answer = s.recv(16)
                if answer == b"imok":
                    break
            time.sleep(1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            log, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            log, _ = proc.communicate()
        shutil.rmtree(scratch, ignore_errors=True)
    assert answer == b"imok", f"ZooKeeper did not answer ruok; its output:\n{log[-4000:]}"
    return log


def test_zookeeper_unit_command_serves_clients(baked: Baked) -> None:
    """Debian's LSB script reported success without a server; kiln's unit must really run one."""
    box = baked.box
    unit = box.path("etc/systemd/system/zookeeper.service").read_text()
    assert "User=zookeeper" in unit
    assert "EnvironmentFile=/etc/zookeeper/conf/environment" in unit
    assert box.sh("readlink -f /etc/zookeeper/conf").stdout.strip() == "/etc/zookeeper/conf_kiln"
    assert "dataDir=/var/lib/zookeeper" in box.sh("cat /etc/zookeeper/conf/zoo.cfg").stdout.splitlines()
    log = _zookeeper_answers_ruok(box, "/etc/zookeeper/conf/environment")
    assert "NOP" not in log and "INFO" in log, f"ZooKeeper should log to the journal:\n{log[:2000]}"


def _haproxy_config() -> dict[str, int]:
    return load_config(Paths(root=REPO_ROOT)).data["components"]["haproxy"]


def test_haproxy_bridge_gets_bake_time_defaults_that_boot_values_override(baked: Baked) -> None:
    box = baked.box
    wanted = _haproxy_config()
    defaults = box.path("etc/default/kiln-haproxy-bridge").read_text()
    assert f"KILN_BRIDGE_VHOST_PORT={wanted['vhost_port']}" in defaults.splitlines()
    assert f"KILN_BRIDGE_POLL_SECONDS={wanted['poll_seconds']}" in defaults.splitlines()
    components = baked.manifest["components"]
    assert isinstance(components, dict)
    record = components["haproxy"]
    assert (record["vhost_port"], record["poll_seconds"]) == (wanted["vhost_port"], wanted["poll_seconds"])
    unit = box.path("etc/systemd/system/kiln-haproxy-bridge.service").read_text()
    files = re.findall(r"^EnvironmentFile=(.+)$", unit, re.M)
    assert files == ["/etc/default/kiln-haproxy-bridge", "-/etc/kiln/haproxy-bridge.env"]
    apps = box.path("tmp/bridge-apps.json")
    apps.write_text('{"apps": [{"id": "/a", "ports": [10001], '
                    '"tasks": [{"host": "10.0.0.1", "ports": [31000]}]}]}')
    boot_env = box.path("etc/kiln/haproxy-bridge.env")
    try:
        for boot_text, port in (None, wanted["vhost_port"]), ("KILN_BRIDGE_VHOST_PORT=18081\n", 18081):
            if boot_text is not None:
                boot_env.write_text(boot_text)
            # systemd's rule for several EnvironmentFile=: read in order, a later file's value wins.
            env: dict[str, str] = {}
            for name in files:
                path = box.path(name.lstrip("-"))
                if path.exists():
                    env.update(_environment_file(path.read_text()))
            assigned = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
            config = box.sh(f"env {assigned} kiln-haproxy-bridge render --from-file /tmp/bridge-apps.json"
                            " > /tmp/bridge.cfg && cat /tmp/bridge.cfg").stdout
            assert f"frontend vhosts\n  bind 0.0.0.0:{port}\n" in config
            # The image's own haproxy accepts the hardened global section (user, chroot, socket).
            assert "  user haproxy\n  group haproxy\n  chroot /var/lib/haproxy\n" in config
            assert "Configuration file is valid" in box.sh("haproxy -c -f /tmp/bridge.cfg").stdout
    finally:
        boot_env.unlink(missing_ok=True)
        apps.unlink()
        box.path("tmp/bridge.cfg").unlink(missing_ok=True)


def test_haproxy_unit_makes_the_stats_socket_directory(baked: Baked) -> None:
    box = baked.box
    dropin = box.path("etc/systemd/system/haproxy.service.d/kiln.conf").read_text()
    (pre,) = re.findall(r"^ExecStartPre=(.+)$", dropin, re.M)
    # Run the drop-in's own command in the image, as systemd would before haproxy starts.
    out = box.sh(f"rm -rf /run/haproxy && {pre} && stat -c '%U:%G %a' /run/haproxy").stdout
    assert out.strip() == "haproxy:haproxy 2775"
    assert box.sh(f"{pre} && stat -c '%U:%G %a' /run/haproxy").stdout.strip() == "haproxy:haproxy 2775"
    box.sh("rm -rf /run/haproxy")


@pytest.mark.parametrize(("key", "value", "message"), [
    ("KILN_HAPROXY_VHOST_PORT", "70000", "components.haproxy.vhost_port must be a whole number from 1 to "
     "65535 (got '70000'"),
    ("KILN_HAPROXY_VHOST_PORT", "0", "components.haproxy.vhost_port must be a whole number from 1 to 65535"),
    ("KILN_HAPROXY_POLL_SECONDS", "5s", "components.haproxy.poll_seconds must be a whole number from 1 to "
     "3600 (got '5s'"),
    ("KILN_HAPROXY_POLL_SECONDS", "", "components.haproxy.poll_seconds is empty"),
])
def test_haproxy_refuses_bad_bridge_values(baked: Baked, key: str, value: str, message: str) -> None:
    box = baked.box
    before = box.snapshot()
    result = box.run("haproxy", env_file=_write_env(box, "haproxy-bad", **{key: value}))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"kiln[haproxy]: ERROR: {message}"), result.stderr
    assert "installing" not in result.stdout and "wrote" not in result.stdout
    assert diff(before, box.snapshot()) == []


# --------------------------------------------------------------------------------------------
# Components that must refuse, or stay off


def _write_env(box: Chroot, name: str, **overrides: str) -> str:
    inside = f"/tmp/kiln/{name}.env"
    box.path(inside).write_text(_env_text(**overrides))
    return inside


def test_mesos_built_by_kiln_without_its_package_fails_early(baked: Baked) -> None:
    box = baked.box
    before = box.snapshot()
    started = time.monotonic()
    result = box.run("mesos")  # config.json's source is build; this env passes no package
    seconds = time.monotonic() - started
    assert result.returncode != 0
    assert "components.mesos.source is build, but kiln passed no package" in result.stderr
    assert "invoke package mesos --target debian-12" in result.stderr
    assert "installing" not in result.stdout
    assert seconds < 10, "the check must come before any download or install"
    assert diff(before, box.snapshot()) == []


def test_mesos_from_aventer_on_a_target_it_does_not_serve_fails_early(baked: Baked) -> None:
    box = baked.box
    env = _write_env(box, "mesos-unsupported", KILN_MESOS_SOURCE="aventer",
                     KILN_MESOS_SUPPORTED_TARGETS="ubuntu-24.04")
    before = box.snapshot()
    result = box.run("mesos", env_file=env)
    assert result.returncode != 0
    assert "no Mesos package source for target debian-12" in result.stderr
    assert "components.mesos.supported_targets = [ubuntu-24.04]" in result.stderr
    assert "installing" not in result.stdout
    assert diff(before, box.snapshot()) == []


def test_mesos_on_a_supported_target_needs_a_pinned_key_fingerprint(baked: Baked) -> None:
    box = baked.box
    env = _write_env(box, "mesos-supported", KILN_TARGET="ubuntu-24.04", KILN_MESOS_SOURCE="aventer",
                     KILN_MESOS_KEY_FINGERPRINT="")
    result = box.run("mesos", env_file=env)
    assert result.returncode != 0
    assert "components.mesos.key_fingerprint is empty" in result.stderr
    assert not box.path("etc/apt/sources.list.d/kiln-mesos.list").exists()
    assert not box.path("etc/apt/keyrings/aventer.asc").exists()


def test_rancher_is_off_without_urls(baked: Baked) -> None:
    result = baked.runs[1].output["rancher"]
    assert result.returncode == 0
    assert "kiln[rancher]: not baked: rancher (components.rancher.executor_url and scheduler_url are empty" \
        in result.stdout
    assert not baked.box.path("etc/kiln/components.d/rancher.json").exists()
    # enabled but off: the manifest says why, and that it was meant to be there
    assert "rancher" in baked.manifest["enabled"]
    assert baked.manifest["not_baked"]["rancher"].startswith("components.rancher.executor_url and")
    assert not list(baked.box.path("etc/systemd/system").glob("rancher-mesos-*"))


def test_marathon_without_a_pinned_checksum_fails_clearly(baked: Baked) -> None:
    # config.json ships Marathon's URL without a sha256 (the host is gone; pin your mirror's).
    result = baked.box.run("marathon")
    assert result.returncode != 0
    assert "components.marathon.sha256 is empty" in result.stderr
    assert not baked.box.path("opt/marathon").exists()


# --------------------------------------------------------------------------------------------
# Stand-in packages for the components without an offline source


def _build_mesos_standin(work: Path) -> Path:
    """A .deb shaped like aventer-mesos: mesos-master/mesos-agent (shell stubs) and units that
    its maintainer script enables, as a packaged service would be."""
    pkg = work / "mesos-standin"
    for d in ("DEBIAN", "usr/sbin", "lib/systemd/system"):
        (pkg / d).mkdir(parents=True)
    (pkg / "DEBIAN/control").write_text(textwrap.dedent("""\
        Package: kiln-mesos-standin
        Version: 1.11.0-0.kiln1
        Architecture: all
        Maintainer: kiln tests <tests@kiln.invalid>
        Description: stand-in for aventer-mesos in kiln's chroot tests
    """))
    postinst = pkg / "DEBIAN/postinst"
    postinst.write_text("#!/bin/sh\nset -e\nif [ \"$1\" = configure ]; then\n"
                        "  deb-systemd-helper enable mesos-master.service mesos-agent.service\nfi\n")
    postinst.chmod(0o755)
    for role in ("master", "agent"):
        binary = pkg / f"usr/sbin/mesos-{role}"
        binary.write_text(f"#!/bin/sh\necho stand-in mesos-{role}\n")
        binary.chmod(0o755)
        (pkg / f"lib/systemd/system/mesos-{role}.service").write_text(
            f"[Unit]\nDescription=stand-in\n[Service]\nExecStart=/usr/sbin/mesos-{role}\n"
            "[Install]\nWantedBy=multi-user.target\n")
    deb = work / "kiln-mesos-standin_1.11.0-0.kiln1_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(pkg), str(deb)], check=True,
                   capture_output=True)
    return deb


def _signed_flat_repository(deb: Path, out: Path, gnupg_home: Path, signer: str) -> None:
    """A flat apt repository (Packages, Release, InRelease) holding `deb`, signed by `signer`."""
    out.mkdir(parents=True)
    shutil.copy(deb, out)
    packages = subprocess.run(["dpkg-scanpackages", "--multiversion", "."], cwd=out, check=True,
                              capture_output=True).stdout
    (out / "Packages").write_bytes(packages)
    (out / "Packages.gz").write_bytes(gzip.compress(packages))
    date = time.strftime("%a, %d %b %Y %H:%M:%S UTC", time.gmtime(time.time() - 60))
    sums = "".join(f" {hashlib.sha256((out / n).read_bytes()).hexdigest()} {(out / n).stat().st_size} {n}\n"
                   for n in ("Packages", "Packages.gz"))
    (out / "Release").write_text(f"Origin: kiln-test\nLabel: kiln-test\nCodename: kiln-test\nDate: {date}\n"
                                 f"Architectures: all amd64\nSHA256:\n{sums}")
    subprocess.run(["gpg", "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", "",
                    "--local-user", signer, "--clearsign", "--output", str(out / "InRelease"),
                    str(out / "Release")],
                   env={**os.environ, "GNUPGHOME": str(gnupg_home)}, check=True, capture_output=True)


def test_mesos_from_a_signed_repository(base_tar: Path, tmp_path: Path, gnupg_home: Path,
                                        signing_keys: dict[str, tuple[Path, str]]) -> None:
    """The AVENTER path (a supported target), against a local signed repository stand-in: key
    fetched and pinned by fingerprint, apt line with signed-by, lists refreshed because a source
    was added, package installed with its services disabled; an expired key stops it."""
    key, fingerprint = signing_keys["valid"]
    expired_key, expired_fingerprint = signing_keys["expired"]
    www = tmp_path / "www"
    deb = _build_mesos_standin(tmp_path)
    _signed_flat_repository(deb, www / "repo", gnupg_home, fingerprint)
    shutil.copy(key, www / "aventer.asc")
    shutil.copy(expired_key, www / "expired.asc")
    with _http_server(www) as base, chroot_from(base_tar, tmp_path / "fresh", _env_text()) as box:
        settings = {"KILN_MESOS_SOURCE": "aventer",
                    "KILN_MESOS_SUPPORTED_TARGETS": "ubuntu-24.04 debian-12",
                    "KILN_MESOS_PACKAGE": "kiln-mesos-standin",
                    "KILN_MESOS_APT_REPO": f"deb [signed-by=/etc/apt/keyrings/aventer.asc] {base}/repo/ ./",
                    "KILN_MESOS_KEY_URL": f"{base}/aventer.asc"}
        env = _write_env(box, "mesos-repo", KILN_MESOS_KEY_FINGERPRINT=fingerprint.lower(), **settings)
        # As after base.sh: fresh package lists, before any Mesos source exists.
        box.sh("bash -c '. /tmp/kiln/provision/lib.sh && apt_update >/dev/null'")
        first = box.run("mesos", env_file=env)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        assert "updating package lists" in first.stdout, "a new source makes the lists stale"
        assert box.path("etc/apt/keyrings/aventer.asc").read_bytes() == key.read_bytes()
        assert "signed-by=/etc/apt/keyrings/aventer.asc" in box.path(
            "etc/apt/sources.list.d/kiln-mesos.list").read_text()
        for role in ("master", "agent"):
            assert _wants_links(box, f"mesos-{role}.service") == []
        record = json.loads(box.path("etc/kiln/components.d/mesos.json").read_text())
        assert (record["version"], record["source"]) == ("1.11.0-0.kiln1", "aventer")
        assert record["key_fingerprint"] == fingerprint

        before = box.snapshot()
        _QuietHandler.requests.clear()
        second = box.run("mesos", env_file=env)
        assert second.returncode == 0, second.stderr
        assert [line for line in second.stdout.splitlines() if CHANGE_LOG.search(line)] == []
        assert diff(before, box.snapshot()) == []
        assert _QuietHandler.requests == [], "a verified key is not fetched again"

        expired = _write_env(box, "mesos-expired", KILN_MESOS_KEY_FINGERPRINT=expired_fingerprint,
                             **{**settings, "KILN_MESOS_KEY_URL": f"{base}/expired.asc"})
        result = box.run("mesos", env_file=expired)
        assert result.returncode != 0
        assert "EXPIRED on 2020-06-01" in result.stderr and "components.mesos.key_url" in result.stderr
        assert box.path("etc/apt/keyrings/aventer.asc").read_bytes() == key.read_bytes()


def test_mesos_from_a_pinned_package_file_is_installed_disabled(baked: Baked,
                                                               tmp_path: Path) -> None:
    box = baked.box
    deb = _build_mesos_standin(tmp_path)
    inside = "/tmp/kiln/fixtures/" + deb.name
    box.path(inside).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(deb, box.path(inside))
    sha = hashlib.sha256(deb.read_bytes()).hexdigest()

    wrong = _write_env(box, "mesos-wrong", KILN_MESOS_PACKAGE_URL=inside, KILN_MESOS_PACKAGE_SHA256="0" * 64)
    result = box.run("mesos", env_file=wrong)
    assert result.returncode != 0
    assert "checksum mismatch" in result.stderr and "components.mesos.package_sha256" in result.stderr
    assert box.sh("dpkg-query -W kiln-mesos-standin", check=False).returncode != 0

    env = _write_env(box, "mesos-file", KILN_MESOS_PACKAGE_URL=inside, KILN_MESOS_PACKAGE_SHA256=sha)
    first = box.run("mesos", env_file=env)
    assert first.returncode == 0, first.stdout + first.stderr
    for role in ("master", "agent"):
        assert _wants_links(box, f"mesos-{role}.service") == []
    for d in ("etc/mesos", "etc/mesos-master", "etc/mesos-agent"):
        assert box.path(d).is_dir()
    record = json.loads(box.path("etc/kiln/components.d/mesos.json").read_text())
    assert record["version"] == "1.11.0-0.kiln1"
    assert record["package"] == "kiln-mesos-standin"
    before = box.snapshot()
    second = box.run("mesos", env_file=env)
    assert second.returncode == 0, second.stderr
    assert [line for line in second.stdout.splitlines() if CHANGE_LOG.search(line)] == []
    assert diff(before, box.snapshot()) == []


@contextlib.contextmanager
def _http_server(directory: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: object) -> None:
        _QuietHandler.requests.append(self.path)


def test_marathon_from_a_pinned_tarball(baked: Baked, tmp_path: Path) -> None:
    box = baked.box
    top = tmp_path / "marathon-1.8.222-kilntest"
    (top / "bin").mkdir(parents=True)
    (top / "bin/marathon").write_text("#!/bin/sh\necho stand-in marathon\n")
    (top / "bin/marathon").chmod(0o755)
    (top / "lib").mkdir()
    served = tmp_path / "www"
    served.mkdir()
    tgz = served / "marathon-1.8.222-kilntest.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(top, arcname=top.name)
    sha = hashlib.sha256(tgz.read_bytes()).hexdigest()
    with _http_server(served) as base:
        env = _write_env(box, "marathon", KILN_MARATHON_URL=f"{base}/{tgz.name}", KILN_MARATHON_SHA256=sha)
        first = box.run("marathon", env_file=env)
        assert first.returncode == 0, first.stdout + first.stderr
        before = box.snapshot()
        second = box.run("marathon", env_file=env)
        assert second.returncode == 0, second.stderr
    assert [line for line in second.stdout.splitlines() if CHANGE_LOG.search(line)] == []
    assert diff(before, box.snapshot()) == []
    assert os.readlink(box.path("opt/marathon")) == "marathon-1.8.222-kilntest"
    unit = box.path("etc/systemd/system/marathon.service").read_text()
    assert "EnvironmentFile=/etc/kiln/marathon.env" in unit
    assert "ExecStart=/opt/marathon/bin/marathon" in unit
    assert "User=marathon" in unit
    assert _wants_links(box, "marathon.service") == []
    assert box.sh("getent passwd marathon").returncode == 0
    record = json.loads(box.path("etc/kiln/components.d/marathon.json").read_text())
    assert record["version"] == "1.8.222-kilntest"


def test_rancher_binaries_from_pinned_urls(baked: Baked, tmp_path: Path) -> None:
    box = baked.box
    served = tmp_path / "www"
    served.mkdir()
    sums = {}
    for role in ("executor", "scheduler"):
        binary = served / f"rancher-mesos-{role}"
        binary.write_text(f"#!/bin/sh\necho stand-in {role}\n")
        sums[role] = hashlib.sha256(binary.read_bytes()).hexdigest()
    with _http_server(served) as base:
        scheduler_only = {"KILN_RANCHER_SCHEDULER_URL": f"{base}/rancher-mesos-scheduler"}
        unpinned = _write_env(box, "rancher-unpinned", **scheduler_only)
        result = box.run("rancher", env_file=unpinned)
        assert result.returncode != 0
        assert "components.rancher.scheduler_sha256 is empty" in result.stderr
        assert not box.path("usr/local/bin/rancher-mesos-scheduler").exists()

        env = _write_env(box, "rancher", KILN_RANCHER_EXECUTOR_URL=f"{base}/rancher-mesos-executor",
                         KILN_RANCHER_EXECUTOR_SHA256=sums["executor"],
                         KILN_RANCHER_SCHEDULER_URL=f"{base}/rancher-mesos-scheduler",
                         KILN_RANCHER_SCHEDULER_SHA256=sums["scheduler"])
        first = box.run("rancher", env_file=env)
        assert first.returncode == 0, first.stdout + first.stderr
        before = box.snapshot()
        second = box.run("rancher", env_file=env)
        assert second.returncode == 0, second.stderr
    assert [line for line in second.stdout.splitlines() if CHANGE_LOG.search(line)] == []
    assert diff(before, box.snapshot()) == []
    for role in ("executor", "scheduler"):
        binary = box.path(f"usr/local/bin/rancher-mesos-{role}")
        assert binary.stat().st_mode & 0o777 == 0o755
        unit = box.path(f"etc/systemd/system/rancher-mesos-{role}.service").read_text()
        assert "EnvironmentFile=/etc/kiln/rancher.env" in unit
        assert f"ExecStart=/usr/local/bin/rancher-mesos-{role}" in unit
        assert _wants_links(box, f"rancher-mesos-{role}.service") == []
    record = json.loads(box.path("etc/kiln/components.d/rancher.json").read_text())
    assert record["version"] == "sha256:" + sums["executor"]
    assert record["scheduler_sha256"] == sums["scheduler"]


def _zookeeper_tarball(baked: Baked, out: Path) -> Path:
    """An apache-zookeeper-<v>-bin.tar.gz look-alike (Apache's download host is unreachable here)
    made of the ZooKeeper jars Debian installed: bin/, conf/, lib/zookeeper-<v>.jar + deps."""
    java = baked.box.path("usr/share/java")
    top = out / "apache-zookeeper-3.8.0-bin"
    (top / "lib").mkdir(parents=True)
    (top / "bin").mkdir()
    (top / "conf").mkdir()
    # One SLF4J binding (log4j 1.2, as Apache's 3.8 tarball has logback): drop the others.
    skip = ("zookeeper-contrib", "slf4j-nop", "slf4j-simple", "slf4j-jdk14", "slf4j-jcl", "log4j-over-slf4j")
    for jar in java.glob("*.jar"):
        if jar.is_symlink() or jar.name.startswith(skip):
            continue
        name = "zookeeper-3.8.0.jar" if jar.name == "zookeeper.jar" else jar.name
        shutil.copy(jar, top / "lib" / name)
    shutil.copy(baked.box.path("etc/zookeeper/conf_example/log4j.properties"), top / "conf")
    (top / "bin/zkServer.sh").write_text("#!/bin/sh\n")
    tgz = out / "apache-zookeeper-3.8.0-bin.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(top, arcname=top.name)
    return tgz


def test_zookeeper_from_a_tarball(baked: Baked, base_tar: Path, tmp_path: Path) -> None:
    """components.zookeeper.source = "tarball" (what Amazon Linux 2023 gets), in a fresh tree."""
    served = tmp_path / "www"
    served.mkdir()
    tgz = _zookeeper_tarball(baked, served)
    sha = hashlib.sha256(tgz.read_bytes()).hexdigest()
    with _http_server(served) as base, chroot_from(base_tar, tmp_path / "fresh", _env_text()) as box:
        env = _write_env(box, "zk-tarball", KILN_ZOOKEEPER_SOURCE="tarball", KILN_ZOOKEEPER_VERSION="3.8.0",
                         KILN_ZOOKEEPER_TARBALL_URL=f"{base}/{tgz.name}", KILN_ZOOKEEPER_TARBALL_SHA256=sha)
        first = box.run("zookeeper", env_file=env)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        before = box.snapshot()
        second = box.run("zookeeper", env_file=env)
        assert second.returncode == 0, second.stderr
        assert [line for line in second.stdout.splitlines() if CHANGE_LOG.search(line)] == []
        assert diff(before, box.snapshot()) == []
        assert os.readlink(box.path("opt/zookeeper")) == "zookeeper-3.8.0"
        assert box.path("etc/zookeeper/conf").is_dir() and not box.path("etc/zookeeper/conf").is_symlink()
        environment = box.path("etc/zookeeper/conf/environment").read_text()
        assert 'CLASSPATH="/etc/zookeeper/conf:/opt/zookeeper/lib/*"' in environment.splitlines()
        record = json.loads(box.path("etc/kiln/components.d/zookeeper.json").read_text())
        assert (record["version"], record["source"]) == ("3.8.0", "tarball")
        assert _wants_links(box, "zookeeper.service") == []
        log = _zookeeper_answers_ruok(box, "/etc/zookeeper/conf/environment")
        assert "INFO" in log


# --------------------------------------------------------------------------------------------
# lib.sh on the host: downloads and repository keys


@pytest.fixture
def lib_env(tmp_path: Path) -> Path:
    env = tmp_path / "kiln.env"
    env.write_text("KILN_TARGET=debian-12\nKILN_DISTRO=debian\nKILN_FAMILY=apt\nKILN_VERSION=0.1.0\n")
    return env


def _lib(env: Path, snippet: str, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    script = f'set -Eeuo pipefail; . "{REPO_ROOT}/provision/lib.sh"; {snippet}'
    return subprocess.run(["bash", "-c", script, "lib-test", *args],
                          env={"PATH": os.environ["PATH"], "KILN_ENV": str(env), "KILN_COMPONENT": "mesos",
                               **extra},
                          capture_output=True, text=True, check=False, timeout=120)


@pytest.mark.parametrize("tool", ["curl", "python3"])
def test_download_verifies_the_checksum(lib_env: Path, tmp_path: Path, tool: str) -> None:
    served = tmp_path / "www"
    served.mkdir()
    payload = served / "payload.bin"
    payload.write_bytes(os.urandom(4096))
    sha256 = hashlib.sha256(payload.read_bytes()).hexdigest()
    sha512 = hashlib.sha512(payload.read_bytes()).hexdigest()
    dest = tmp_path / "out" / "payload.bin"
    with _http_server(served) as base:
        url = f"{base}/payload.bin"
        wrong = _lib(lib_env, 'download "$1" "$2" "$3" components.x.sha256', url, str(dest), "1" * 64,
                     KILN_FETCH_TOOL=tool)
        assert wrong.returncode != 0
        assert "checksum mismatch" in wrong.stderr and sha256 in wrong.stderr
        assert not dest.exists() and not dest.with_name("payload.bin.part").exists()

        for good in (sha256, "sha256:" + sha256.upper(), sha512):
            ok = _lib(lib_env, 'download "$1" "$2" "$3"', url, str(dest), good, KILN_FETCH_TOOL=tool)
            assert ok.returncode == 0, ok.stderr
            assert dest.read_bytes() == payload.read_bytes()

        _QuietHandler.requests.clear()
        again = _lib(lib_env, 'download "$1" "$2" "$3"', url, str(dest), sha256, KILN_FETCH_TOOL=tool)
        assert again.returncode == 0 and _QuietHandler.requests == [], "a verified file is not fetched again"

        empty = _lib(lib_env, 'download "$1" "$2" ""', url, str(tmp_path / "x"), KILN_FETCH_TOOL=tool)
        assert empty.returncode != 0
        assert "refusing to download" in empty.stderr and "without a checksum" in empty.stderr

        missing = _lib(lib_env, 'download "$1" "$2" "$3" components.x.sha256', f"{base}/nope",
                       str(tmp_path / "y"), sha256, KILN_FETCH_TOOL=tool, KILN_DOWNLOAD_RETRIES="1")
        assert missing.returncode != 0
        assert "could not download" in missing.stderr


@pytest.fixture(scope="module")
def gnupg_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    try:
        yield home
    finally:  # the agent gpg started for this home, and only that one
        subprocess.run(["gpgconf", "--kill", "all"], env={**os.environ, "GNUPGHOME": str(home)}, check=False)


@pytest.fixture(scope="module")
def signing_keys(gnupg_home: Path) -> dict[str, tuple[Path, str]]:
    """Real OpenPGP keys: one valid, one expired on 2020-06-01, one whose only signing subkey
    expired then (made with gpg's --faked-system-time)."""
    out = gnupg_home.parent / f"{gnupg_home.name}-keys"
    out.mkdir()
    env = {**os.environ, "GNUPGHOME": str(gnupg_home)}
    gpg = ["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", ""]

    def fingerprint(uid: str) -> str:
        listing = subprocess.run(["gpg", "--with-colons", "--list-keys", uid], env=env, check=True,
                                 capture_output=True, text=True).stdout
        return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))

    subprocess.run([*gpg, "--quick-gen-key", "valid <valid@kiln.invalid>", "ed25519", "sign", "never"],
                   env=env, check=True, capture_output=True)
    subprocess.run([*gpg, "--faked-system-time", "20200101T000000", "--quick-gen-key",
                    "expired <expired@kiln.invalid>", "ed25519", "sign", "2020-06-01"],
                   env=env, check=True, capture_output=True)
    subprocess.run([*gpg, "--faked-system-time", "20190101T000000", "--quick-gen-key",
                    "subkey <subkey@kiln.invalid>", "ed25519", "cert", "never"],
                   env=env, check=True, capture_output=True)
    subprocess.run([*gpg, "--faked-system-time", "20200101T000000", "--quick-add-key",
                    fingerprint("subkey@kiln.invalid"), "ed25519", "sign", "2020-06-01"],
                   env=env, check=True, capture_output=True)
    keys = {}
    for name in ("valid", "expired", "subkey"):
        uid = f"{name}@kiln.invalid"
        path = out / f"{name}.asc"
        path.write_bytes(subprocess.run(["gpg", "--armor", "--export", uid], env=env, check=True,
                                        capture_output=True).stdout)
        keys[name] = (path, fingerprint(uid))
    return keys


Keys = dict[str, tuple[Path, str]]


def test_gpg_key_check_accepts_the_pinned_key(lib_env: Path, signing_keys: Keys) -> None:
    path, fpr = signing_keys["valid"]
    spaced = " ".join(fpr[i:i + 4] for i in range(0, 40, 4)).lower()
    result = _lib(lib_env, 'gpg_key_check "$1" "$2" components.mesos', str(path), spaced)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", ["expired", "subkey"])
def test_gpg_key_check_names_expiry_date_and_fix(lib_env: Path, name: str, signing_keys: Keys) -> None:
    path, fpr = signing_keys[name]
    result = _lib(lib_env, 'gpg_key_check "$1" "$2" components.mesos', str(path), fpr)
    assert result.returncode == 1
    assert "EXPIRED on 2020-06-01" in result.stderr
    assert "components.mesos.key_url" in result.stderr and "components.mesos.key_fingerprint" in result.stderr


def test_gpg_key_check_refuses_another_key_or_no_fingerprint(lib_env: Path, signing_keys: Keys) -> None:
    path, fpr = signing_keys["valid"]
    _, other = signing_keys["expired"]
    wrong = _lib(lib_env, 'gpg_key_check "$1" "$2" components.mesos', str(path), other)
    assert wrong.returncode == 1
    assert fpr in wrong.stderr and other in wrong.stderr
    empty = _lib(lib_env, 'gpg_key_check "$1" "" components.mesos', str(path))
    assert empty.returncode == 1
    assert "components.mesos.key_fingerprint is empty" in empty.stderr


# --------------------------------------------------------------------------------------------
# Image hygiene (runs last: it changes the tree)


def test_cleanup_leaves_no_build_machine_state(baked: Baked) -> None:
    box = baked.box
    box.umount("var/cache/apt/archives")  # the shared .deb cache must survive apt-get clean
    box.sh("mkdir -p /home/kiln/.ssh /root/.ssh && echo ls > /root/.bash_history && "
           "echo ls > /home/kiln/.bash_history && echo 1 > /home/kiln/.python_history && "
           "ssh-keygen -q -t ed25519 -N '' -f /home/kiln/.ssh/id_ed25519 && "
           "cp /home/kiln/.ssh/id_ed25519.pub /home/kiln/.ssh/authorized_keys && "
           "ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/deploy_key && "
           "echo not-a-deb > /var/cache/apt/archives/fake_1.0_all.deb && "
           "echo 0123456789abcdef0123456789abcdef > /etc/machine-id && "
           "echo noisy > /var/log/kiln-test.log && echo old | gzip > /var/log/kiln-test.log.1.gz")
    assert list(box.root.glob("etc/ssh/ssh_host_*"))
    assert list(box.root.glob("var/lib/apt/lists/*_Packages"))
    result = box.run("cleanup")
    assert result.returncode == 0, result.stdout + result.stderr
    assert list(box.root.glob("etc/ssh/ssh_host_*")) == []
    assert box.path("etc/machine-id").read_text() == ""
    assert not box.path("var/lib/dbus/machine-id").exists()
    for history in ("root/.bash_history", "home/kiln/.bash_history", "home/kiln/.python_history"):
        assert not box.path(history).exists(), history
    assert not box.path("home/kiln/.ssh/id_ed25519").exists()
    assert not box.path("root/.ssh/deploy_key").exists()
    assert box.path("home/kiln/.ssh/authorized_keys").read_text().startswith("ssh-ed25519 ")
    assert [p.name for p in box.path("var/lib/apt/lists").iterdir() if p.is_file() and p.name != "lock"] == []
    assert list(box.root.glob("var/cache/apt/archives/*.deb")) == []
    assert box.path("var/log/kiln-test.log").stat().st_size == 0
    assert not box.path("var/log/kiln-test.log.1.gz").exists()
    # What the image keeps: its manifest, units and the first-boot host key service.
    assert box.path("etc/kiln/manifest.json").is_file()
    assert _wants_links(box, "kiln-ssh-hostkeys.service")
