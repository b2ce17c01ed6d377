"""`invoke ami.build`: Packer's amazon-ebs build of each target, then the AWS-side finish; or,
when an AMI with the build's key exists, that AMI.

First the key (kiln.aws.amikey). When the build region has an available kiln AMI tagged
kiln:key=<key>, Packer does not run: that AMI is used, copied to the copy regions that have none
with the key (or theirs used), and recorded as a build records it. An AMI with the key that is
still pending (another build registering or copying it) stops the build with a UserError: kiln
does not wait for someone else's build, and baking another would only make a second one. With
force, none of this is looked at.

A build is kiln.image.build's (render, staged artifacts, metadata, atomic publish), with the key in
the AMIs' tags and names. After Packer, kiln reads the AMI ids per region from Packer's manifest,
makes IMDSv2 the launch default of every copy where Packer could not (Packer < 1.7 has no
imds_support), and records the ids in build/artifacts/<target>-amazon-ebs/amis.json.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kiln import __version__
from kiln.aws import amikey, images
from kiln.aws.images import KEY_TAG, amis_from_manifest, require_imdsv2
from kiln.aws.session import Aws, connect
from kiln.config.load import Config, deep_merge
from kiln.config.targets import Pair, select_pairs
from kiln.errors import UserError
from kiln.fileutil import locked
from kiln.image.artifacts import GUEST_MANIFEST, METADATA, artifact_files, publish, write_json
from kiln.image.build import BuildResult, Stages, _packages, build_pair
from kiln.image.packer import PackerVersion
from kiln.image.preflight import component_problems
from kiln.image.render import RenderOptions
from kiln.output import say, warn
from kiln.paths import Paths

AMI_RECORD = "amis.json"
PACKER_MANIFEST = "packer-manifest.json"
COPY_TIMEOUT = 3600.0  # seconds a copy to another region may take to become available


def with_region(config: Config, region: str | None) -> Config:
    """Config with the build region replaced; it is then no copy target of itself."""
    if not region:
        return config
    aws = config["aws"]
    copies = [r for r in aws["extra_regions"] if r != region]
    data = deep_merge(config.data, {"aws": {"region": region, "extra_regions": copies}})
    return dataclasses.replace(config, data=data)


def finish_images(aws: Aws, config: Config, packer_version: PackerVersion, staging: Path,
                  key: amikey.AmiKey | None = None) -> dict[str, str]:
    """IMDSv2 on every copy (when Packer could not set it) and the record of the AMI ids."""
    manifest = json.loads((staging / PACKER_MANIFEST).read_text(encoding="utf-8"))
    amis = amis_from_manifest(manifest)
    set_by = "packer" if packer_version.has_plugins else "kiln"
    if config["aws"]["imdsv2_required"] and set_by == "kiln":
        _imdsv2_everywhere(aws, amis, "were built")
    write_json(staging / AMI_RECORD, _ami_record(config, amis, set_by, key))
    return amis


def _imdsv2_everywhere(aws: Aws, amis: Mapping[str, str], done: str) -> None:
    problems = require_imdsv2(aws, amis)
    if problems:
        listed = ", ".join(f"{r}:{a}" for r, a in sorted(amis.items()))
        raise UserError(f"the AMIs {done} but IMDSv2 could not be made their default "
                        f"({listed}):\n  - " + "\n  - ".join(problems),
                        "set it with `aws ec2 modify-image-attribute --image-id AMI --imds-support "
                        "v2.0` in each region, or deregister those AMIs")


def _ami_record(config: Config, amis: Mapping[str, str], set_by: str, key: amikey.AmiKey | None,
                **extra: Any) -> dict[str, Any]:
    required = config["aws"]["imdsv2_required"]
    return {
        "amis": dict(amis),
        "imds_support": "v2.0" if required else "",
        "imds_support_set_by": set_by if required else "",
        "shared_with": list(config["aws"]["share_with_accounts"]),
        **({"key": key.key, "key_chain": key.record()["chain"]} if key else {}),
        **extra,
    }


def ami_targets(config: Config) -> list[str]:
    return [t for t in config["build"]["targets"] if "ami" in config["targets"].get(t, {})]


def with_key(config: Config, key: str) -> Config:
    """Config whose AMIs carry `key`: the tag kiln:key on every AMI Packer registers (aws.tags go
    there), and its first 16 hex digits in the AMI name (packer/sources/amazon-ebs.pkr.hcl.j2)."""
    return dataclasses.replace(config, data=deep_merge(config.data, {"aws": {"tags": {KEY_TAG: key}}}))


def build_amis(config: Config, paths: Paths, targets: Sequence[str], region: str | None = None,
               *, quiet: bool = False, force: bool = False) -> list[tuple[BuildResult, Mapping[str, str]]]:
    """Bake each target's AMI, or use the one with its key; returns each build with its
    {region: ami id}."""
    from kiln.image.render import render_options

    config = with_region(config, region)
    # Packer reads the same credential chain: fail here, with the fix, rather than in Packer.
    aws = connect(config["aws"]["region"])
    chosen = list(targets) or ami_targets(config)
    if not chosen:
        raise UserError("no target with an `ami` block in build.targets", "pass --target ubuntu-24.04")
    pairs = select_pairs(config.data, chosen, ["amazon-ebs"])
    options = render_options(config, paths)
    return [_build_or_reuse(aws, config, pair, paths, options, quiet=quiet, force=force) for pair in pairs]


def pair_key(aws: Aws, config: Config, pair: Pair, paths: Paths,
             options: RenderOptions) -> amikey.AmiKey:
    """The key of `pair`'s AMI now: the source AMI resolved in the build region, the packages kiln
    builds for it (built when missing, as the build would first)."""
    assert pair.target.ami is not None
    packages = _packages(config, pair, paths)  # what build_pair bakes, the same way
    source = amikey.resolve_source(aws, config["aws"]["region"], pair.target.ami)
    if not source:
        warn(f"{pair.name}: no AMI of owners {', '.join(pair.target.ami['owners'])} matches "
             f"{pair.target.ami['name_filter']!r} in {config['aws']['region']}: Packer will find none either")
    ctx = amikey.key_context(config, pair, paths.root, options.packer_version, packages)
    return amikey.ami_key(config, pair, ctx, source)


def _build_or_reuse(aws: Aws, config: Config, pair: Pair, paths: Paths, options: RenderOptions, *,
                    quiet: bool, force: bool) -> tuple[BuildResult, Mapping[str, str]]:
    problems = component_problems(config, pair)
    if problems:
        raise UserError(f"{pair.name} cannot be built as configured:\n  - " + "\n  - ".join(problems))
    stages = Stages(pair.name)
    key = stages.run("key", lambda: pair_key(aws, config, pair, paths, options))
    say(f"==> [{pair.name}] AMI key {key.key}")
    home = config["aws"]["region"]
    regions = [home, *config["aws"]["extra_regions"]]
    if force:
        say(f"==> [{pair.name}] --force: baking without looking for an AMI with this key")
    else:
        found = images.sort_keyed(stages.run("AMIs with this key", lambda: images.keyed_images(
            aws, regions, key.key)))
        if found.in_progress:
            listed = ", ".join(f"{r} {i.id} ({i.state})" for r, i in sorted(found.in_progress.items()))
            raise UserError(f"{pair.name}: an AMI with key {key.short} is still on its way in {listed}: "
                            "another build is registering or copying it",
                            "run ami.build again once it is available (`aws ec2 wait image-available "
                            "--image-ids AMI --region REGION`), or pass --force to bake another")
        if home in found.available:
            image = found.available[home]
            say(f"==> [{pair.name}] up to date (AMI {image.id} has key {key.key}): Packer does not run")
            amis = _reuse(aws, config, pair, paths, key, found, stages, options)
            return BuildResult(pair.name, paths.artifacts / pair.name, stages.seconds, up_to_date=True,
                               key=key.key), amis
    found_ids: dict[str, str] = {}
    finish = functools.partial(_finish_into, found_ids, aws, config, options.packer_version, key)
    result = build_pair(with_key(config, key.key), pair, paths, options, quiet=quiet, after_packer=finish)
    return dataclasses.replace(result, key=key.key), found_ids


def _finish_into(found: dict[str, str], aws: Aws, config: Config, packer_version: PackerVersion,
                 key: amikey.AmiKey, staging: Path) -> None:
    found.update(finish_images(aws, config, packer_version, staging, key))


def _reuse(aws: Aws, config: Config, pair: Pair, paths: Paths, key: amikey.AmiKey, found: images.Keyed,
           stages: Stages, options: RenderOptions) -> dict[str, str]:
    """The home region's AMI with the key, copied where the copy regions have none, finished as a
    build finishes its AMIs (IMDSv2, sharing) and recorded."""
    home = config["aws"]["region"]
    image = found.available[home]
    amis = {region: i.id for region, i in found.available.items()}
    missing = [r for r in config["aws"]["extra_regions"] if r not in found.available]
    for region, there in sorted(found.available.items()):
        if region != home:
            say(f"==> [{pair.name}] {region}: {there.id} has the key too")
    if missing:
        amis.update(stages.run(f"copy {image.id} to {', '.join(missing)}", lambda: images.copy_to(
            aws, image, missing, encrypted=config["aws"]["ebs"]["encrypted"], timeout=COPY_TIMEOUT)))
    set_by = "already set"
    if config["aws"]["imdsv2_required"]:
        lacking = {r: i.id for r, i in images.describe(aws, amis).items() if i.imds_support != "v2.0"}
        if lacking:  # copies, or a build whose finish failed halfway
            _imdsv2_everywhere(aws, lacking, "exist")
            set_by = "kiln"
    for problem in images.share(aws, amis, config["aws"]["share_with_accounts"]):
        warn(problem)
    record = _ami_record(config, amis, set_by, key, reused={"region": home, "ami": image.id},
                         copied={r: amis[r] for r in missing})
    stages.run("record", lambda: _record(config, pair, paths, key, record, stages, options))
    return amis


def _record(config: Config, pair: Pair, paths: Paths, key: amikey.AmiKey, record: Mapping[str, Any],
            stages: Stages, options: RenderOptions) -> None:
    """build/artifacts/<pair>/ as a build leaves it, swapped in whole: amis.json and kiln-metadata.json
    (with the image manifest of the published build when that build made this AMI: same key)."""
    final = paths.artifacts / pair.name
    staging = paths.artifacts / f".{pair.name}.reused"
    with locked(paths.artifacts / f".{pair.name}.lock"):
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            if recorded_key(final) == key.key and (final / GUEST_MANIFEST).is_file():
                shutil.copy2(final / GUEST_MANIFEST, staging / GUEST_MANIFEST)
            write_json(staging / AMI_RECORD, record)
            guest = staging / GUEST_MANIFEST
            write_json(staging / METADATA, {
                "key": key.key,
                "pair": pair.name,
                "target": pair.target.name,
                "builder": pair.builder.name,
                "project": config["project"],
                "git_revision": options.git_revision,
                # No tool ran: the Packer version is the one the key was computed for.
                "tools": {"packer": str(options.packer_version), "kiln": __version__},
                "components": json.loads(guest.read_text())["components"] if guest.is_file() else {},
                "stages_seconds": stages.seconds,
                "artifacts": artifact_files(staging),
                "reused": record["reused"],
            })
            publish(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def recorded_key(artifact: Path) -> str:
    """The key in an artifact directory's amis.json ("" when there is none)."""
    try:
        return str(json.loads((artifact / AMI_RECORD).read_text(encoding="utf-8")).get("key", ""))
    except (OSError, ValueError, AttributeError):
        return ""
