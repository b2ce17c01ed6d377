"""The AMIs kiln baked: list them, pick the newest, prune old ones, finish a fresh build, find
the ones with a key (kiln.aws.amikey) and copy one to other regions.

kiln AMIs are the account's own images tagged `kiln:version` (packer/sources/amazon-ebs
tags every AMI it registers, in the build region and every copy region) and `kiln:key`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from botocore.exceptions import WaiterError

from kiln.aws.session import AWS_FAILURES, Aws, error_text, retry_on, tags_dict, tags_list
from kiln.errors import UserError

KILN_IMAGE_TAG = "kiln:version"
KEY_TAG = "kiln:key"
IN_PROGRESS = ("pending", "transient")  # EC2 image states on the way to available
COPY_DELAY = 15  # seconds between polls of a copy's state


@dataclass(frozen=True)
class Image:
    id: str
    name: str
    region: str
    created: str  # ISO 8601 from EC2: sorts as text
    tags: Mapping[str, str]
    snapshots: tuple[str, ...]
    state: str = "available"
    imds_support: str = ""  # "v2.0" once IMDSv2 is the launch default
    description: str = ""

    @property
    def target(self) -> str:
        return self.tags.get("kiln:target", "")


@dataclass
class PruneReport:
    deregistered: list[str] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _image(raw: Mapping[str, Any], region: str) -> Image:
    snapshots = tuple(m["Ebs"]["SnapshotId"] for m in raw.get("BlockDeviceMappings", [])
                      if m.get("Ebs", {}).get("SnapshotId"))
    return Image(raw["ImageId"], raw.get("Name", ""), region, raw.get("CreationDate", ""),
                 tags_dict(raw.get("Tags")), snapshots, raw.get("State", ""), raw.get("ImdsSupport", ""),
                 raw.get("Description", ""))


def list_images(aws: Aws, regions: Iterable[str], target: str | None = None) -> list[Image]:
    """kiln AMIs owned by this account in `regions`, newest first within each region."""
    filters = [{"Name": "tag-key", "Values": [KILN_IMAGE_TAG]}]
    if target:
        filters.append({"Name": "tag:kiln:target", "Values": [target]})
    images: list[Image] = []
    for region in regions:
        raw = aws.ec2(region).describe_images(Owners=["self"], Filters=filters)["Images"]
        images += sorted((_image(r, region) for r in raw), key=_age_key, reverse=True)
    return images


def _age_key(image: Image) -> tuple[str, str]:
    # CreationDate has one-second resolution; the name's build stamp breaks ties.
    return image.created, image.name


def newest(images: Iterable[Image], target: str) -> Image | None:
    mine = [i for i in images if i.target == target]
    return max(mine, key=_age_key) if mine else None


def prune_plan(images: Sequence[Image], keep: int) -> list[Image]:
    """Images beyond the newest `keep` of each (region, target): the ones prune removes."""
    if keep < 0:
        raise ValueError(f"keep must be 0 or more, got {keep}")
    doomed: list[Image] = []
    ordered = sorted(images, key=lambda i: (i.region, i.target))
    for _, group in groupby(ordered, key=lambda i: (i.region, i.target)):
        doomed += sorted(group, key=_age_key, reverse=True)[keep:]
    return doomed


def prune(aws: Aws, doomed: Sequence[Image]) -> PruneReport:
    """Deregister each image, then delete its snapshots (AWS refuses while an AMI uses them)."""
    report = PruneReport()
    for image in doomed:
        ec2 = aws.ec2(image.region)
        try:
            ec2.deregister_image(ImageId=image.id)
        except AWS_FAILURES as exc:  # report and go on: one stuck image must not block the rest
            report.problems.append(f"{image.region} {image.id}: not deregistered: {error_text(exc)}")
            continue
        report.deregistered.append(image.id)
        for snap in image.snapshots:
            try:
                ec2.delete_snapshot(SnapshotId=snap)
            except AWS_FAILURES as exc:
                report.problems.append(f"{image.region} {snap} (of {image.id}): not deleted: "
                                       f"{error_text(exc)}")
            else:
                report.snapshots.append(snap)
    return report


def amis_from_manifest(manifest: Mapping[str, Any]) -> dict[str, str]:
    """{region: ami id} of the last run in a Packer manifest ('r1:ami-1,r2:ami-2')."""
    builds = manifest.get("builds", [])
    last = manifest.get("last_run_uuid")
    run = [b for b in builds if b.get("packer_run_uuid") == last] or builds[-1:]
    if not run:
        raise ValueError("the Packer manifest lists no build")
    amis: dict[str, str] = {}
    for part in str(run[-1].get("artifact_id", "")).split(","):
        region, _, ami = part.partition(":")
        if not ami.startswith("ami-"):
            raise ValueError(f"unexpected artifact id in the Packer manifest: {part!r}")
        amis[region] = ami
    return amis


def require_imdsv2(aws: Aws, amis: Mapping[str, str]) -> list[str]:
    """Make IMDSv2 the launch default of every copy (Packer < 1.7 cannot set imds_support).
    Returns the problems; the AMIs exist either way, so the caller reports rather than undoes."""
    problems = []
    for region, ami in sorted(amis.items()):
        try:
            aws.ec2(region).modify_image_attribute(ImageId=ami, ImdsSupport={"Value": "v2.0"})
        except AWS_FAILURES as exc:
            problems.append(f"{region} {ami}: ImdsSupport not set: {error_text(exc)}")
    return problems


# -- images by key -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Keyed:
    """The kiln AMIs with one key, by region."""

    available: dict[str, Image] = field(default_factory=dict)  # the newest available one
    in_progress: dict[str, Image] = field(default_factory=dict)  # where none is available yet


def keyed_images(aws: Aws, regions: Iterable[str], key: str) -> dict[str, list[Image]]:
    """This account's AMIs tagged kiln:key=`key` in each region, any state, newest first."""
    filters = [{"Name": f"tag:{KEY_TAG}", "Values": [key]}]
    return {region: sorted((_image(r, region) for r in aws.ec2(region).describe_images(
        Owners=["self"], Filters=filters)["Images"]), key=_age_key, reverse=True) for region in regions}


def sort_keyed(found: Mapping[str, Sequence[Image]]) -> Keyed:
    """Per region, the newest available image, else one still on its way (failed, disabled or
    deregistered ones count as absent)."""
    out = Keyed()
    for region, images in found.items():
        ready = [i for i in images if i.state == "available"]
        coming = [i for i in images if i.state in IN_PROGRESS]
        if ready:
            out.available[region] = max(ready, key=_age_key)
        elif coming:
            out.in_progress[region] = max(coming, key=_age_key)
    return out


def describe(aws: Aws, amis: Mapping[str, str]) -> dict[str, Image]:
    return {region: _image(aws.ec2(region).describe_images(ImageIds=[ami])["Images"][0], region)
            for region, ami in sorted(amis.items())}


def copy_to(aws: Aws, image: Image, regions: Sequence[str], *, encrypted: bool,
            timeout: float) -> dict[str, str]:
    """Copy `image` into each region with its tags (encrypted with the region's default key when
    asked, as Packer's copies are), then wait until every copy is available. {region: copy id}."""
    made: dict[str, str] = {}

    def failed(what: str) -> UserError:
        started = ", ".join(f"{r} {a}" for r, a in sorted(made.items()))
        return UserError(f"copy of {image.region} {image.id} {what}" + (f" (copies made: {started})"
                                                                        if made else ""),
                         "see `aws ec2 describe-images` in that region; run ami.build again to retry "
                         "(it copies only where the key is missing)")

    for region in regions:
        ec2 = aws.ec2(region)
        try:
            new = ec2.copy_image(SourceRegion=image.region, SourceImageId=image.id, Name=image.name,
                                 Description=image.description or image.name, CopyImageTags=True,
                                 **({"Encrypted": True} if encrypted else {}))["ImageId"]
        except AWS_FAILURES as exc:
            raise failed(f"to {region} failed: {error_text(exc)}") from None
        made[region] = new
        # Not every endpoint honours CopyImageTags (stand-ins, older APIs); a copy without its key
        # would not be found again: tag it as the original (idempotent).
        retry_on({"InvalidAMIID.NotFound"}, lambda ec2=ec2, new=new: ec2.create_tags(
            Resources=[new], Tags=tags_list(image.tags)))
    for region, new in made.items():
        try:
            aws.ec2(region).get_waiter("image_available").wait(ImageIds=[new], WaiterConfig={
                "Delay": COPY_DELAY, "MaxAttempts": max(1, int(timeout // COPY_DELAY))})
        except WaiterError as exc:
            raise failed(f"to {region} ({new}) is not available after {timeout:.0f}s: {exc}") from None
    return made


def share(aws: Aws, amis: Mapping[str, str], accounts: Sequence[str]) -> list[str]:
    """Launch permission for each account on every image (what Packer's ami_users does)."""
    problems = []
    if not accounts:
        return problems
    for region, ami in sorted(amis.items()):
        try:
            aws.ec2(region).modify_image_attribute(ImageId=ami, LaunchPermission={
                "Add": [{"UserId": a} for a in accounts]})
        except AWS_FAILURES as exc:
            problems.append(f"{region} {ami}: not shared: {error_text(exc)}")
    return problems
