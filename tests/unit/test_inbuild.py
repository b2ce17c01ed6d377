"""In-build verification's key handling: Packer's temporary EC2 key arrives in the environment."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from kiln.image import inbuild


def test_a_key_from_the_environment_becomes_a_private_file(tmp_path: Path, monkeypatch) -> None:
    text = "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----"
    monkeypatch.setenv("KILN_INBUILD_KEY", text)
    path = inbuild._key_from_env("KILN_INBUILD_KEY", tmp_path / "verify")
    assert path.read_text() == text + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_empty_key_variable_stops_verification_with_its_name(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("KILN_INBUILD_KEY", "")
    with pytest.raises(SystemExit, match=r"\$KILN_INBUILD_KEY holds no private key"):
        inbuild._key_from_env("KILN_INBUILD_KEY", tmp_path)
