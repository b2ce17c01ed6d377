"""Which AMIs prune removes, which one launch picks, and what Packer's manifest says."""

from __future__ import annotations

import pytest

from kiln.aws.images import Image, amis_from_manifest, newest, prune_plan


def img(ami: str, target: str, created: str, region: str = "us-east-1", name: str = "") -> Image:
    return Image(ami, name or f"kiln-{target}-{ami}", region, created, {"kiln:target": target},
                 (f"snap-{ami}",))


IMAGES = [
    img("a1", "ubuntu-24.04", "2026-01-01T00:00:00.000Z"),
    img("a3", "ubuntu-24.04", "2026-03-01T00:00:00.000Z"),
    img("a2", "ubuntu-24.04", "2026-02-01T00:00:00.000Z"),
    img("b1", "amazonlinux-2023", "2026-01-05T00:00:00.000Z"),
    img("c1", "ubuntu-24.04", "2026-01-01T00:00:00.000Z", region="eu-west-1"),
    img("c2", "ubuntu-24.04", "2026-02-01T00:00:00.000Z", region="eu-west-1"),
]


@pytest.mark.parametrize(("keep", "doomed"), [
    (0, {"a1", "a2", "a3", "b1", "c1", "c2"}),
    (1, {"a1", "a2", "c1"}),
    (2, {"a1"}),
    (3, set()),
])
def test_prune_keeps_the_newest_n_per_region_and_target(keep: int, doomed: set[str]) -> None:
    assert {i.id for i in prune_plan(IMAGES, keep)} == doomed


def test_prune_rejects_a_negative_keep() -> None:
    with pytest.raises(ValueError):
        prune_plan(IMAGES, -1)


def test_same_second_builds_are_ordered_by_their_name_stamp() -> None:
    same = [img("x2", "t", "2026-01-01T00:00:00.000Z", name="kiln-t-0.1.0-20260101000002"),
            img("x1", "t", "2026-01-01T00:00:00.000Z", name="kiln-t-0.1.0-20260101000001")]
    assert newest(same, "t").id == "x2"  # type: ignore[union-attr]
    assert [i.id for i in prune_plan(same, 1)] == ["x1"]


def test_newest_of_a_target() -> None:
    assert newest(IMAGES, "ubuntu-24.04").id == "a3"  # type: ignore[union-attr]
    assert newest(IMAGES, "debian-12") is None


def test_manifest_of_the_last_run_with_copies() -> None:
    manifest = {"last_run_uuid": "r2", "builds": [
        {"packer_run_uuid": "r1", "artifact_id": "us-east-1:ami-0aaa"},
        {"packer_run_uuid": "r2", "artifact_id": "us-east-1:ami-0bbb,eu-west-1:ami-0ccc"}]}
    assert amis_from_manifest(manifest) == {"us-east-1": "ami-0bbb", "eu-west-1": "ami-0ccc"}


@pytest.mark.parametrize("manifest", [{"builds": []}, {"builds": [{"artifact_id": "box.qcow2"}]}])
def test_manifest_without_amis_is_an_error(manifest: dict) -> None:
    with pytest.raises(ValueError):
        amis_from_manifest(manifest)
