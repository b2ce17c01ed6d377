"""Files a caller insists on (KILN_EXPECT_FILES, colon separated): `invoke nightly
--expect-file PATH` sets it to prove, end to end, that one failing check fails the night and
shows in every report. Boot phase only, so the bake itself is unaffected."""

from __future__ import annotations

import os

import pytest
from kiln_infra import boot_only

EXPECTED = [p for p in os.environ.get("KILN_EXPECT_FILES", "").split(":") if p]


@pytest.mark.skipif(not EXPECTED,
                    reason="KILN_EXPECT_FILES is not set (only `invoke nightly --expect-file` sets it)")
@pytest.mark.parametrize("path", EXPECTED or ["-"])
def test_expected_file_exists(host, phase, path) -> None:
    boot_only(phase)
    assert host.file(path).exists, f"{path} is missing on this node"
