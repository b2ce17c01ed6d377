"""Problems a build would hit late, found before anything starts.

Each problem names the config key to change. Components without a source for a target are
never skipped silently: either the user points at a package or leaves it out, with the reason
printed.
"""

from __future__ import annotations

from typing import Any

from kiln.config.load import Config
from kiln.config.targets import Pair

LEAVE_OUT = "or leave it out: --set components.exclude.NAME='\"reason\"'"


def component_problems(config: Config, pair: Pair) -> list[str]:
    chosen = config.components_for(pair.target.name)
    comps = config["components"]
    problems: list[str] = []
    if "mesos" in chosen:
        problems += _mesos(comps["mesos"], pair, marathon="marathon" in chosen)
    if "marathon" in chosen and not comps["marathon"]["sha256"]:
        problems.append(f"components.marathon.sha256: pin the sha256 of {comps['marathon']['url']} "
                        f"{LEAVE_OUT.replace('NAME', 'marathon')}")
    zk = comps["zookeeper"]
    needs_tarball = zk["source"] == "tarball" or pair.target.family == "dnf"
    if "zookeeper" in chosen and needs_tarball and not (zk["tarball_sha256"] or zk.get("tarball_sha512")):
        problems.append("components.zookeeper.tarball_sha256: pin the checksum of tarball_url")
    return problems


def _mesos(mesos: dict[str, Any], pair: Pair, *, marathon: bool) -> list[str]:
    target = pair.target
    source = mesos["source"]
    problems = []
    if source == "build":
        if target.family != "apt" or target.base is None:
            problems.append(
                f"components.mesos.source = build: kiln builds Mesos packages in a Debian build root made "
                f"like the base image, which {target.name} has not (the recipe's {target.family} path is "
                f"written but has never run); set source = package_url with a package built for "
                f"{target.name}, {LEAVE_OUT.replace('NAME', 'mesos')}")
        if marathon and not mesos["build"].get("java"):
            problems.append(
                "marathon: Marathon drives Mesos through libmesos's Java (JNI) bindings, which kiln's Mesos "
                "build leaves out (components.mesos.build.java = false: the Java build needs a JDK and "
                "Maven's repositories, i.e. a connected machine); "
                + LEAVE_OUT.replace("NAME", "marathon"))
    elif source == "package_url":
        if not mesos["package_url"]:
            problems.append("components.mesos.package_url: set it to a Mesos .deb/.rpm for "
                            f"{target.name} (source = package_url)")
        elif not mesos["package_sha256"]:
            problems.append("components.mesos.package_sha256: pin the sha256 of package_url")
    elif source == "aventer":
        if target.name not in mesos["supported_targets"]:
            listed = ", ".join(mesos["supported_targets"]) or "no target"
            problems.append(f"mesos: AVENTER's repository is configured for {listed}, not {target.name}; "
                            f"use source = build or package_url, {LEAVE_OUT.replace('NAME', 'mesos')}")
        elif not mesos["key_fingerprint"]:
            problems.append("components.mesos.key_fingerprint: pin the AVENTER signing key's "
                            "fingerprint (gpg --show-keys KEYFILE on a connected machine)")
        if marathon:
            problems.append(
                "marathon: AVENTER's packages come from m3scluster/clusterd, built without the Java (JNI) "
                "bindings Marathon needs (since 2023); use components.mesos.source = build with "
                "build.java = true on a connected machine, " + LEAVE_OUT.replace("NAME", "marathon"))
    return problems
