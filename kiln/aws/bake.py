"""`invoke ami.build`: Packer's amazon-ebs build of each target, then the AWS-side finish.

The build itself is kiln.image.build's (render, staged artifacts, metadata, atomic publish).
After Packer, kiln reads the AMI ids per region from Packer's manifest, makes IMDSv2 the
launch default of every copy where Packer could not (Packer < 1.7 has no imds_support),
and records the ids in build/artifacts/<target>-amazon-ebs/amis.json.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from kiln.aws.images import amis_from_manifest, require_imdsv2
from kiln.aws.session import Aws, connect
from kiln.config.load import Config, deep_merge
from kiln.config.targets import select_pairs
from kiln.errors import UserError
from kiln.image.artifacts import write_json
from kiln.image.build import BuildResult, build_pair
from kiln.image.packer import PackerVersion
from kiln.paths import Paths

AMI_RECORD = "amis.json"
PACKER_MANIFEST = "packer-manifest.json"


def with_region(config: Config, region: str | None) -> Config:
    """Config with the build region replaced; it is then no copy target of itself."""
    if not region:
        return config
    aws = config["aws"]
    copies = [r for r in aws["extra_regions"] if r != region]
    data = deep_merge(config.data, {"aws": {"region": region, "extra_regions": copies}})
    return dataclasses.replace(config, data=data)


def finish_images(aws: Aws, config: Config, packer_version: PackerVersion, staging: Path) -> dict[str, str]:
    """IMDSv2 on every copy (when Packer could not set it) and the record of the AMI ids."""
    manifest = json.loads((staging / PACKER_MANIFEST).read_text(encoding="utf-8"))
    amis = amis_from_manifest(manifest)
    set_by = "packer" if packer_version.has_plugins else "kiln"
    if config["aws"]["imdsv2_required"] and set_by == "kiln":
        problems = require_imdsv2(aws, amis)
        if problems:
            listed = ", ".join(f"{r}:{a}" for r, a in sorted(amis.items()))
            raise UserError("the AMIs were built but IMDSv2 could not be made their default "
                            f"({listed}):\n  - " + "\n  - ".join(problems),
                            "set it with `aws ec2 modify-image-attribute --image-id AMI --imds-support "
                            "v2.0` in each region, or deregister those AMIs")
    write_json(staging / AMI_RECORD, {
        "amis": amis,
        "imds_support": "v2.0" if config["aws"]["imdsv2_required"] else "",
        "imds_support_set_by": set_by if config["aws"]["imdsv2_required"] else "",
        "shared_with": list(config["aws"]["share_with_accounts"]),
    })
    return amis


def ami_targets(config: Config) -> list[str]:
    return [t for t in config["build"]["targets"] if "ami" in config["targets"].get(t, {})]


def build_amis(config: Config, paths: Paths, targets: Sequence[str], region: str | None = None,
               *, quiet: bool = False) -> list[tuple[BuildResult, Mapping[str, str]]]:
    """Bake each target's AMI; returns each build with its {region: ami id}."""
    from kiln.image.render import render_options

    config = with_region(config, region)
    # Packer reads the same credential chain: fail here, with the fix, rather than in Packer.
    aws = connect(config["aws"]["region"])
    chosen = list(targets) or ami_targets(config)
    if not chosen:
        raise UserError("no target with an `ami` block in build.targets", "pass --target ubuntu-24.04")
    pairs = select_pairs(config.data, chosen, ["amazon-ebs"])
    options = render_options(config, paths)
    results = []
    for pair in pairs:
        found: dict[str, str] = {}
        finish = functools.partial(_finish_into, found, aws, config, options.packer_version)
        results.append((build_pair(config, pair, paths, options, quiet=quiet, after_packer=finish),
                        found))
    return results


def _finish_into(found: dict[str, str], aws: Aws, config: Config, packer_version: PackerVersion,
                 staging: Path) -> None:
    found.update(finish_images(aws, config, packer_version, staging))
