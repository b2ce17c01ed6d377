"""kiln's python-vagrant client: the library's calls go through kiln's bounded query, so a Vagrant
that hangs ends with a message naming the call. A `vagrant` on PATH that sleeps stands in for a
provider that never answers (its timing out proves the library ran it through kiln's query); a real
`vagrant box list` shows the library and the real Vagrant still agree."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from kiln.runner import StepTimedOut, group_members
from kiln.vagrant.client import Vagrant


def _fake_vagrant(tmp_path: Path, body: str) -> str:
    exe = tmp_path / "bin" / "vagrant"
    exe.parent.mkdir()
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(0o755)
    return str(exe)


def test_a_hanging_vagrant_ends_with_the_call_named(tmp_path: Path) -> None:
    client = Vagrant(tmp_path, timeout=1.0)
    client._vagrant_exe = _fake_vagrant(tmp_path, "echo $$ > \"$0.pid\"; exec sleep 300")
    started = time.monotonic()
    with pytest.raises(StepTimedOut, match=r"step 'vagrant status --machine-readable' timed out after 1"):
        client.status()
    assert time.monotonic() - started < 10
    pid = int((tmp_path / "bin" / "vagrant.pid").read_text())
    assert not group_members(pid), "the hung vagrant outlived the bound"


def test_a_failing_vagrant_raises_as_check_output_does(tmp_path: Path) -> None:
    client = Vagrant(tmp_path, timeout=10.0)
    client._vagrant_exe = _fake_vagrant(tmp_path, "echo nope >&2; exit 3")
    with pytest.raises(subprocess.CalledProcessError) as info:
        client.box_list()
    assert info.value.returncode == 3 and b"nope" in info.value.stderr


@pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant is not installed")
def test_the_real_vagrant_answers_the_bounded_client(tmp_path: Path) -> None:
    env = {**os.environ, "VAGRANT_HOME": str(tmp_path / "vagrant.d"), "VAGRANT_CHECKPOINT_DISABLE": "1"}
    client = Vagrant(tmp_path, env=env)
    assert client.box_list() == []  # an empty VAGRANT_HOME has no boxes
