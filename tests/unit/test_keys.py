"""kiln's build key lives with the cache whose images trust it, so checkouts sharing a cache share
their base images and layers; an older checkout's build/keys pair is adopted, not replaced."""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kiln.keys import KEY_NAME, ensure_build_key, key_paths
from kiln.paths import Paths

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen is not installed")


def test_checkouts_sharing_a_cache_share_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path / "shared-cache"))
    first, second = Paths(root=tmp_path / "a"), Paths(root=tmp_path / "b")
    key = ensure_build_key(first.build)
    assert key == tmp_path / "shared-cache" / "keys" / KEY_NAME == first.keys / KEY_NAME
    assert ensure_build_key(second.build) == key
    assert key.stat().st_mode & 0o777 == 0o600
    assert not (first.build / "keys").exists()


def test_without_a_cache_setting_the_key_is_in_the_checkouts_cache(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KILN_CACHE_DIR", raising=False)
    paths = Paths(root=tmp_path / "checkout")
    assert ensure_build_key(paths.build) == paths.build / "cache" / "keys" / KEY_NAME


def test_an_older_checkouts_pair_is_adopted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path / "cache"))
    build = tmp_path / "checkout" / "build"
    (build / "keys").mkdir(parents=True)
    old = build / "keys" / KEY_NAME
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(old)], check=True)
    key = ensure_build_key(build)
    assert key.read_bytes() == old.read_bytes()
    assert Path(f"{key}.pub").read_bytes() == Path(f"{old}.pub").read_bytes()
    assert f"adopted {old}" in capsys.readouterr().out
    assert key.stat().st_mode & 0o777 == 0o600


def test_parallel_callers_get_one_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path / "cache"))
    builds = [tmp_path / f"checkout-{i}" / "build" for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        keys = list(pool.map(ensure_build_key, builds))
    assert len(set(keys)) == 1
    private, public = key_paths(builds[0])
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(private)], capture_output=True, text=True,
                             check=True).stdout.split()[:2]
    assert public.read_text().split()[:2] == derived
    assert sorted(p.name for p in private.parent.iterdir()) == sorted([".lock", KEY_NAME, f"{KEY_NAME}.pub"])
