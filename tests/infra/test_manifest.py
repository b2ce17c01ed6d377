"""What the image was meant to hold is what it holds: every component kiln baked the image with
(the manifest's "enabled") left a record with its exact version, or the reason it is off."""

from __future__ import annotations

from kiln_infra import Components, missing_records


def test_every_enabled_component_left_a_record_or_a_reason(components: Components) -> None:
    missing = missing_records(components)
    assert missing == [], (f"enabled for this image but no record in /etc/kiln/manifest.json and no reason "
                           f"(record_component_off): {', '.join(missing)}; their bake scripts did not "
                           "finish, or skipped themselves silently")


def test_every_record_has_a_version(components: Components) -> None:
    empty = sorted(n for n, record in components.items()
                   if not (isinstance(record, dict) and str(record.get("version", "")).strip()))
    assert empty == [], f"records without a version: {', '.join(empty)}"


def test_nothing_is_both_baked_and_off(components: Components) -> None:
    assert sorted(set(components) & set(components.not_baked)) == []
