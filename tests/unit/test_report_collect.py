"""build_facts reads the kiln-metadata.json that kiln.image.build writes for every built pair."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kiln.errors import UserError
from kiln.image.artifacts import METADATA, artifact_files, write_json
from kiln.report import build_facts


def _artifact_dir(tmp_path: Path) -> Path:
    """An artifact directory laid out as kiln.image.build._write_metadata leaves it."""
    directory = tmp_path / "debian-12-qemu"
    directory.mkdir()
    (directory / "debian-12-qemu.box").write_bytes(b"\0" * 3000)
    (directory / "image-manifest.json").write_text(json.dumps({"components": {
        "zookeeper": {"version": "3.8.4-1", "source": "apt"}, "node": {"version": "0.1.0"}}}))
    write_json(directory / METADATA, {
        "pair": "debian-12-qemu",
        "tools": {"packer": "1.6.6", "qemu": "QEMU emulator version 7.2.15", "kiln": "0.1.0"},
        "components": json.loads((directory / "image-manifest.json").read_text())["components"],
        "stages_seconds": {"render": 0.4, "source image": 1.2, "packer build": 812.5},
        "artifacts": artifact_files(directory),
    })
    return directory


def test_build_facts(tmp_path: Path) -> None:
    facts = build_facts(_artifact_dir(tmp_path))
    assert facts.stages == {"render": 0.4, "source image": 1.2, "packer build": 812.5}
    # The metadata file is written with sorted keys, so the run order is not in it.
    assert list(facts.stages) == ["packer build", "render", "source image"]
    assert facts.artifacts["debian-12-qemu.box"] == 3000 and "image-manifest.json" in facts.artifacts
    assert facts.components == {"zookeeper": "3.8.4-1", "node": "0.1.0"}
    assert facts.tools["packer"] == "1.6.6"


@pytest.mark.parametrize("content", [None, "{", '{"artifacts": {"a.qcow2": {"sha256": "x"}}}'])
def test_missing_or_broken_metadata_is_a_user_error(tmp_path: Path, content: str | None) -> None:
    if content is not None:
        (tmp_path / METADATA).write_text(content)
    with pytest.raises(UserError, match="cannot read build metadata"):
        build_facts(tmp_path)
