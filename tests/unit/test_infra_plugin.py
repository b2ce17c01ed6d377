"""The suites' plugin (tests/infra/kiln_infra.py) tells a component that is off on purpose from one that
failed to bake: an enabled component without a manifest record fails, unless its bake script recorded
why it is off (record_component_off); a component not enabled for the image (left out, or excluded
like Marathon in the offline profile) skips.

The logic is checked as plain functions, then for real: rancher's bake.sh (no URLs: off) and
provision/manifest.sh run as root in a mount namespace whose /etc is an overlay (the host's /etc is
never written), and the real plugin runs the image-wide suite against that /etc over testinfra's local
backend.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kiln.config import catalog
from kiln.config.load import load_config
from kiln.config.targets import select_pairs
from kiln.image.render import provision_env
from kiln.paths import REPO_ROOT, Paths

sys.path.insert(0, str(REPO_ROOT / "tests" / "infra"))
import kiln_infra

OFF = "components.rancher.executor_url and scheduler_url are empty"


def manifest(components: dict[str, Any], enabled: list[str] | None = None,
             not_baked: dict[str, str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"components": components}
    if enabled is not None:
        out["enabled"] = enabled
    if not_baked is not None:
        out["not_baked"] = not_baked
    return out


def outcome(components: kiln_infra.Components, name: str) -> tuple[str, str]:
    try:
        record = kiln_infra.require(components, name)
    except pytest.skip.Exception as exc:
        return "skip", str(exc.msg)
    except pytest.fail.Exception as exc:
        return "fail", str(exc.msg)
    return "record", json.dumps(record)


OFFLINE = manifest({"base": {"version": "0.1.0"}, "mesos": {"version": "1.11.1-1+kiln.debian12"}},
                   ["base", "mesos", "haproxy", "rancher"], {"rancher": OFF})


@pytest.mark.parametrize(("name", "result", "says"), [
    ("mesos", "record", '"1.11.1-1+kiln.debian12"'),
    ("rancher", "skip", f"rancher is enabled but not baked into this image: {OFF}"),
    ("haproxy", "fail", "haproxy is enabled for this image but left no record in /etc/kiln/manifest.json and "
                        "no reason"),
    ("marathon", "skip", "marathon is not enabled for this image (components.enabled, components.exclude)"),
], ids=["recorded", "off-with-reason", "silent", "excluded"])
def test_require(name: str, result: str, says: str) -> None:
    got = outcome(kiln_infra.components_of(OFFLINE), name)
    assert got[0] == result and says in got[1], got


def test_missing_records_are_the_silent_enabled_components() -> None:
    assert kiln_infra.missing_records(kiln_infra.components_of(OFFLINE)) == ["haproxy"]
    assert kiln_infra.missing_records(kiln_infra.components_of(OFFLINE, expect="haproxy,java")) == \
        ["haproxy", "java"]


def test_an_older_manifest_relies_on_kiln_expect() -> None:
    """Images from before "enabled" was recorded: --kiln-expect (the in-build run passes the rendered
    components) is what says a component was meant to be there."""
    old = manifest({"base": {"version": "0.1.0"}})
    assert outcome(kiln_infra.components_of(old), "java")[0] == "skip"
    assert outcome(kiln_infra.components_of(old, expect="base,java"), "java")[0] == "fail"
    assert kiln_infra.missing_records(kiln_infra.components_of(old)) == []


@pytest.mark.parametrize("bad", [{"enabled": "base"}, {"not_baked": ["rancher"]}, {"components": []}])
def test_a_malformed_manifest_fails_loudly(bad: dict[str, Any]) -> None:
    with pytest.raises(AssertionError, match=r"manifest\.json"):
        kiln_infra.components_of({**manifest({}, [], {}), **bad})


# -- for real: the bake scripts write it, the plugin reads it -----------------------------------------

def _namespace_problem() -> str | None:
    if os.geteuid() != 0:
        return "the bake scripts run as root (and the test overlays /etc in a mount namespace)"
    if shutil.which("unshare") is None:
        return "unshare is not installed (util-linux)"
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True,
                          check=False)
    return None if done.returncode == 0 else f"cannot make a mount namespace: {done.stderr.decode()[:200]}"


def bake_and_check(tmp_path: Path, enabled: list[str],
                   suites: list[str]) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """rancher/bake.sh and manifest.sh with a kiln.env that kiln renders for debian-12 (its components
    `enabled`), then the plugin's suites over the local backend; all inside one mount namespace."""
    config = load_config(Paths(root=REPO_ROOT))
    (pair,) = select_pairs(config.data, ["debian-12"], ["qemu"])
    cat = catalog.load(REPO_ROOT)
    src = tmp_path / "src"
    src.mkdir()
    (src / "kiln.env").write_text(provision_env(config, pair, enabled, "test", cat), encoding="utf-8")
    (src / "catalog.json").write_text(json.dumps(cat.node_catalog(config.data)), encoding="utf-8")
    upper, work, out = tmp_path / "upper", tmp_path / "work", tmp_path / "manifest.json"
    upper.mkdir()
    work.mkdir()
    pytest_argv = [sys.executable, "-m", "pytest", "-p", "kiln_infra", "-p", "no:cacheprovider", "-q",
                   "--hosts=local://", "--kiln-phase=bake", "-o", "python_files=test_*.py", *suites]
    script = "\n".join([
        "set -e",
        f"mount -t overlay overlay -o lowerdir=/etc,upperdir={shlex.quote(str(upper))},"
        f"workdir={shlex.quote(str(work))} /etc",
        f"export KILN_ENV={shlex.quote(str(src / 'kiln.env'))} KILN_SRC={shlex.quote(str(src))}",
        f"bash {shlex.quote(str(REPO_ROOT / 'components/rancher/bake.sh'))}",
        f"bash {shlex.quote(str(REPO_ROOT / 'provision/manifest.sh'))}",
        f"cp /etc/kiln/manifest.json {shlex.quote(str(out))}",
        f"cd {shlex.quote(str(REPO_ROOT))}",
        f"PYTHONPATH={shlex.quote(str(REPO_ROOT / 'tests' / 'infra'))} {shlex.join(pytest_argv)}",
    ])
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, check=False)
    assert out.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    return done, json.loads(out.read_text(encoding="utf-8"))


@pytest.mark.skipif(_namespace_problem() is not None, reason=str(_namespace_problem()))
def test_rancher_off_is_recorded_with_its_reason_and_the_suite_passes(tmp_path: Path) -> None:
    etc_had_kiln = Path("/etc/kiln").exists()
    done, written = bake_and_check(tmp_path, ["rancher"], ["tests/infra/test_manifest.py"])
    assert written["enabled"] == ["rancher"] and written["components"] == {}
    assert written["not_baked"]["rancher"].startswith(OFF)
    assert f"kiln[rancher]: not baked: rancher ({OFF}" in done.stdout  # as test_provision_chroot expects
    assert "kiln[manifest]: not baked although enabled: rancher (components.rancher" in done.stdout
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "3 passed" in done.stdout
    assert Path("/etc/kiln").exists() == etc_had_kiln  # the host's /etc was never written


@pytest.mark.skipif(_namespace_problem() is not None, reason=str(_namespace_problem()))
def test_an_enabled_component_that_left_no_record_fails_the_suites(tmp_path: Path) -> None:
    done, written = bake_and_check(tmp_path, ["rancher", "java"],
                                   ["tests/infra/test_manifest.py", "components/java/test_java.py"])
    assert written["enabled"] == ["rancher", "java"] and "java" not in written["not_baked"]
    assert "WARNING: enabled but left no record and no reason (record_component_off): java" in done.stderr
    assert done.returncode == 1, done.stdout[-4000:]
    assert "2 failed, 2 passed" in done.stdout, done.stdout[-4000:]
    assert "enabled for this image but no record in /etc/kiln/manifest.json and no reason " \
           "(record_component_off): java" in done.stdout
    assert "java is enabled for this image but left no record" in done.stdout
