"""What a finished build left in build/artifacts/<pair>/kiln-metadata.json, in report terms."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.errors import UserError
from kiln.image.artifacts import METADATA


@dataclass(frozen=True)
class BuildFacts:
    # Seconds per build stage, in alphabetical order: kiln.image.artifacts.write_json sorts keys.
    # BuildResult.seconds has the same values in the order the stages ran; prefer it.
    stages: dict[str, float]
    artifacts: dict[str, int]  # bytes per file
    components: dict[str, str]  # name -> exact version from the image's manifest
    tools: dict[str, str]  # packer, qemu, kiln versions used for the build


def build_facts(artifact_dir: Path) -> BuildFacts:
    """Read kiln-metadata.json of one built pair (see kiln.image.build._write_metadata)."""
    path = artifact_dir / METADATA
    try:
        meta: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return BuildFacts(
            stages={str(k): float(v) for k, v in meta.get("stages_seconds", {}).items()},
            artifacts={str(k): int(v["bytes"]) for k, v in meta.get("artifacts", {}).items()},
            components={str(k): str(v.get("version", "")) if isinstance(v, dict) else str(v)
                        for k, v in meta.get("components", {}).items()},
            tools={str(k): str(v) for k, v in meta.get("tools", {}).items()},
        )
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise UserError(f"cannot read build metadata {path}: {exc}",
                        "rebuild the pair; a complete artifact directory always has it") from None
