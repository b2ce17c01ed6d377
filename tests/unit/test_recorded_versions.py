"""The versions kiln records (components.d -> /etc/kiln/manifest.json -> build metadata -> report) are
what the image holds, never what the config says: config.json once said ZooKeeper 3.8.4 while Debian
12 installs 3.8.0, and the image said 3.8.4.

Static: no bake script passes a config value to record_component. For real: the bake scripts of
zookeeper, haproxy, node and marathon run as root on this Debian host in a mount namespace whose
/etc, /var, /opt and /usr are overlays (the host is never written; the packages are the host's, which
scripts/setup installs), and their records are compared with dpkg and with what was unpacked.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from kiln.config import catalog
from kiln.config.load import load_config
from kiln.config.targets import select_pairs
from kiln.image.render import provision_env
from kiln.paths import REPO_ROOT, Paths

BAKE_SCRIPTS = sorted(REPO_ROOT.glob("components/*/bake.sh"))
# kiln.env values that are kiln's own facts, not settings of a component
KILN_FACTS = {"KILN_VERSION"}  # base: kiln's own settings, versioned as the kiln that wrote them


def _record_calls(text: str) -> list[tuple[str, str]]:
    """(component, version argument) of every record_component call."""
    return re.findall(r'^\s*record_component\s+(\S+)\s+"?\$\{?([A-Za-z_][A-Za-z0-9_]*)', text, re.M)


def test_every_bake_script_records_its_component() -> None:
    names = {p.parent.name for p in BAKE_SCRIPTS}
    recorded = {c for p in BAKE_SCRIPTS for c, _ in _record_calls(p.read_text(encoding="utf-8"))}
    assert names == recorded
    assert "record_component_off rancher" in (REPO_ROOT / "components/rancher/bake.sh").read_text()


@pytest.mark.parametrize("script", BAKE_SCRIPTS, ids=[p.parent.name for p in BAKE_SCRIPTS])
def test_no_recorded_version_comes_from_a_setting(script: Path) -> None:
    """Every assignment to the variable a script records as the version reads no component setting
    (KILN_<COMPONENT>_*), and no fallback (${x:-$KILN_...}) puts one in its place."""
    text = script.read_text(encoding="utf-8")
    for component, variable in _record_calls(text):
        if variable in KILN_FACTS:
            assert component == "base", f"{script.parent.name} records kiln's version as its own"
            continue
        assignments = re.findall(rf"(?:^|[\s;(]){variable}=(.*)$", text, re.M)
        assignments += re.findall(rf"printf -v {variable} .*$", text, re.M)
        assert assignments, f"{script.parent.name}: ${variable} is never set"
        for rhs in assignments:
            settings = set(re.findall(r"\$\{?(KILN_[A-Z0-9_]+)", rhs)) - KILN_FACTS
            assert settings == set(), f"{script.parent.name}: {variable}={rhs} records a setting"
            if component != "base":
                assert "KILN_VERSION" not in rhs, f"{script.parent.name}: {variable}={rhs}: kiln's version"
        line = next(ln for ln in text.splitlines() if re.match(rf"\s*record_component\s+{component}\s", ln))
        assert ":-" not in line and "KILN_" not in line.replace("KILN_VERSION", ""), line


# -- for real ----------------------------------------------------------------------------------------

def _problem() -> str | None:
    if os.geteuid() != 0:
        return "the bake scripts run as root (and the test overlays /etc, /var, /opt, /usr)"
    if shutil.which("dpkg-query") is None:
        return "not a Debian machine: the bake scripts query dpkg"
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True,
                          check=False) if shutil.which("unshare") else None
    if done is None or done.returncode != 0:
        return "cannot make a mount namespace (unshare --mount)"
    return None


def _installed(package: str) -> str:
    done = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Abbrev} ${Version}", package],
                          capture_output=True, text=True, check=False)
    return done.stdout.split()[1] if done.stdout.startswith("ii") else ""


needs_root = pytest.mark.skipif(_problem() is not None, reason=str(_problem()))


def bake(tmp_path: Path, component: str, src: Path = REPO_ROOT, **overrides: str) -> tuple[
        subprocess.CompletedProcess[str], dict[str, object] | None]:
    """components/<component>/bake.sh with the kiln.env kiln renders for debian-12 (plus overrides),
    in a mount namespace over overlays; its components.d record, or None."""
    config = load_config(Paths(root=REPO_ROOT))
    (pair,) = select_pairs(config.data, ["debian-12"], ["qemu"])
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = tmp_path / "kiln.env"
    text = provision_env(config, pair, [component], "test", catalog.load(REPO_ROOT))
    env.write_text(text + "".join(f"{k}={shlex.quote(v)}\n" for k, v in overrides.items()), encoding="utf-8")
    record = tmp_path / "record.json"
    lines = ["set -e"]
    for top in ("etc", "var", "opt", "usr"):
        up, work = tmp_path / "overlay" / top / "up", tmp_path / "overlay" / top / "work"
        up.mkdir(parents=True)
        work.mkdir(parents=True)
        lines.append(f"mount -t overlay overlay -o lowerdir=/{top},upperdir={shlex.quote(str(up))},"
                     f"workdir={shlex.quote(str(work))} /{top}")
    lines += [f"KILN_ENV={shlex.quote(str(env))} KILN_SRC={shlex.quote(str(src))} "
              f"bash {shlex.quote(str(src / 'components' / component / 'bake.sh'))} && status=0 || status=$?",
              f"cp /etc/kiln/components.d/{component}.json {shlex.quote(str(record))} 2>/dev/null || true",
              "exit $status"]
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", "\n".join(lines)],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, check=False)
    return done, (json.loads(record.read_text(encoding="utf-8")) if record.exists() else None)


@needs_root
def test_zookeeper_records_what_dpkg_installed_not_the_configured_version(tmp_path: Path) -> None:
    installed = _installed("zookeeper")
    if not installed:
        pytest.skip("the zookeeper package is not installed (scripts/setup installs it)")
    configured = load_config(Paths(root=REPO_ROOT))["components"]["zookeeper"]["version"]
    # the package that holds the version; zookeeperd (the distro's service wrapper) is not needed
    done, record = bake(tmp_path, "zookeeper", KILN_ZOOKEEPER_PACKAGES="zookeeper")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert record is not None and record["version"] == installed and record["source"] == "distro"
    assert not installed.startswith(configured)  # 3.8.0-11+deb12u2 here, "3.8.4" in config.json
    assert not Path("/etc/kiln/components.d/zookeeper.json").exists()  # the host was not written


@needs_root
def test_haproxy_and_the_bridge_record_the_installed_versions(tmp_path: Path) -> None:
    installed = _installed("haproxy")
    if not installed:
        pytest.skip("the haproxy package is not installed (scripts/setup installs it)")
    done, record = bake(tmp_path, "haproxy")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    bridge = re.search(r'__version__ = "([^"]+)"', (REPO_ROOT / "kiln_bridge/__init__.py").read_text())
    assert record is not None and bridge is not None
    assert (record["version"], record["bridge_version"]) == (installed, bridge.group(1))


@needs_root
def test_node_records_the_installed_package_version_and_refuses_to_guess(tmp_path: Path) -> None:
    done, record = bake(tmp_path / "good", "node")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    node = re.search(r'__version__ = "([^"]+)"', (REPO_ROOT / "kiln_node/__init__.py").read_text())
    assert record is not None and node is not None and record["version"] == node.group(1)
    # a package without __version__: the bake stops instead of recording kiln's version in its place
    src = tmp_path / "src"
    for part in ("components", "provision", "kiln_node"):
        shutil.copytree(REPO_ROOT / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
    init = src / "kiln_node" / "__init__.py"
    init.write_text(re.sub(r"(?m)^__version__ = .*$", "", init.read_text()), encoding="utf-8")
    done, record = bake(tmp_path / "bad", "node", src=src)
    assert done.returncode == 1 and record is None
    assert "kiln_node/__init__.py has no __version__: cannot record what is installed" in done.stderr


def _marathon_tarball(tmp_path: Path, name: str, jar: str | None) -> tuple[str, str]:
    """A stand-in Marathon tarball (Marathon's host is gone): bin/marathon and, maybe, its jar."""
    top = tmp_path / "marathon-build"
    (top / "bin").mkdir(parents=True)
    (top / "bin/marathon").write_text("#!/bin/sh\necho stand-in marathon\n", encoding="utf-8")
    (top / "bin/marathon").chmod(0o755)
    (top / "lib").mkdir()
    if jar:
        (top / "lib" / jar).write_bytes(b"PK\x05\x06" + b"\0" * 18)
    tgz = tmp_path / name
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(top, arcname="marathon-build")
    return tgz.as_uri(), hashlib.sha256(tgz.read_bytes()).hexdigest()


@needs_root
@pytest.mark.parametrize(("name", "jar", "expected"), [
    ("marathon.tgz", "mesosphere.marathon.marathon-1.8.222-86475ddac.jar", "1.8.222-86475ddac"),
    ("marathon-1.8.222.tgz", "mesosphere.marathon.marathon-1.8.222-86475ddac.jar", "1.8.222-86475ddac"),
    ("marathon-1.9.109-4f2e3e8c.tgz", None, "1.9.109-4f2e3e8c"),
    ("marathon.tgz", None, ""),
], ids=["jar-only", "jar-over-name", "name-only", "neither"])
def test_marathon_records_the_version_its_tarball_holds(tmp_path: Path, name: str, jar: str | None,
                                                        expected: str) -> None:
    if shutil.which("java") is None:
        pytest.skip("no java on PATH: marathon's bake would install a JRE (ensure_java)")
    url, sha = _marathon_tarball(tmp_path, name, jar)
    done, record = bake(tmp_path, "marathon", KILN_MARATHON_URL=url, KILN_MARATHON_SHA256=sha,
                        KILN_MARATHON_VERSION="1.8.222")
    if not expected:  # components.marathon.version (1.8.222) is no fallback
        assert done.returncode == 1 and record is None
        assert f"cannot tell which Marathon version {url} holds" in done.stderr
        return
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert record is not None and record["version"] == expected
    assert record["install_dir"] == f"/opt/marathon-{expected}"
    assert ("components.marathon.version says 1.8.222" in done.stderr) == (not expected.startswith("1.8.222"))
