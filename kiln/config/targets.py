"""OS targets and builders as data.

A target comes from config.json's `targets` map. Which builders make sense for it
follows from what the entry provides, not from if-chains in templates:
`image` (an official cloud image) or `base` (a locally built image) -> qemu, virtualbox;
`ami` (an owner-filtered source AMI) -> amazon-ebs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kiln.errors import UserError


@dataclass(frozen=True)
class Builder:
    name: str
    packer_source: str  # Packer source type
    produces: str
    vagrant_provider: str | None
    tools: tuple[str, ...]
    needs: str  # which target block it builds from: "disk" (image/base) or "ami"


BUILDERS: dict[str, Builder] = {
    b.name: b
    for b in (
        Builder("qemu", "qemu", "qcow2 + libvirt box", "libvirt",
                ("packer", "qemu-system-x86_64", "qemu-img"), "disk"),
        # Made from the qemu image (converted, not provisioned again): no Packer source of its own.
        Builder("virtualbox", "", "virtualbox box (from the qemu image)", "virtualbox", ("qemu-img",),
                "disk"),
        Builder("amazon-ebs", "amazon-ebs", "AMI", None, ("packer",), "ami"),
    )
}


@dataclass(frozen=True)
class Target:
    name: str
    distro: str
    release: str
    codename: str
    family: str
    ssh_username: str
    image: Mapping[str, str] | None = None
    base: Mapping[str, str] | None = None
    ami: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def builders(self) -> tuple[str, ...]:
        has_disk = self.image is not None or self.base is not None
        return tuple(
            b.name
            for b in BUILDERS.values()
            if (b.needs == "disk" and has_disk) or (b.needs == "ami" and self.ami is not None)
        )

    def supports(self, builder: str) -> bool:
        return builder in self.builders

    @property
    def disk_source(self) -> str:
        """'image' for a downloaded cloud image, 'base' for a locally built one."""
        return "image" if self.image is not None else "base"


def load_targets(config: Mapping[str, Any]) -> dict[str, Target]:
    targets = {}
    for name, entry in config["targets"].items():
        known = {"distro", "release", "codename", "family", "ssh_username", "image", "base", "ami"}
        targets[name] = Target(
            name=name,
            distro=entry["distro"],
            release=entry["release"],
            codename=entry["codename"],
            family=entry["family"],
            ssh_username=entry["ssh_username"],
            image=entry.get("image"),
            base=entry.get("base"),
            ami=entry.get("ami"),
            extra={k: v for k, v in entry.items() if k not in known},
        )
    return targets


@dataclass(frozen=True)
class Pair:
    target: Target
    builder: Builder

    @property
    def name(self) -> str:
        return f"{self.target.name}-{self.builder.name}"


def select_pairs(
    config: Mapping[str, Any],
    targets: Iterable[str] | None = None,
    builders: Iterable[str] | None = None,
) -> list[Pair]:
    """Every target x builder pair that makes sense, narrowed by the user's choice.

    Without a choice, config's build.targets x build.builders. Naming an unknown target
    or builder, or a pair that cannot be built (debian-12 + amazon-ebs), is a UserError.
    """
    known = load_targets(config)
    want_t = list(targets) if targets else list(config["build"]["targets"])
    want_b = list(builders) if builders else list(config["build"]["builders"])
    problems = [f"unknown target '{t}' (known: {', '.join(sorted(known))})"
                for t in want_t if t not in known]
    problems += [f"unknown builder '{b}' (known: {', '.join(BUILDERS)})"
                 for b in want_b if b not in BUILDERS]
    if problems:
        raise UserError("; ".join(problems), "pick names from config.json `targets` and `build.builders`")
    pairs = [Pair(known[t], BUILDERS[b]) for t in want_t for b in want_b if known[t].supports(b)]
    explicit = bool(targets) and bool(builders)
    if explicit:
        impossible = [f"{t}-{b}" for t in want_t for b in want_b if not known[t].supports(b)]
        if impossible:
            raise UserError(
                f"no such build: {', '.join(impossible)}",
                "amazon-ebs needs an `ami` block in the target; qemu/virtualbox need `image` or `base`",
            )
    if not pairs:
        raise UserError("the selection names no buildable target x builder pair")
    return pairs
