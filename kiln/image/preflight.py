"""Problems a build would hit late, found before anything starts.

Each problem names the config key to change. Components without a source for a target
are never skipped silently: either the user points at a package or leaves it out, with
the reason printed.
"""

from __future__ import annotations

from kiln.config.load import Config
from kiln.config.targets import Pair


def component_problems(config: Config, pair: Pair) -> list[str]:
    target = pair.target
    comps = config["components"]
    chosen = config.components_for(target.name)
    problems: list[str] = []
    leave_out = ("or leave it out: --profile offline, or --set components.exclude.NAME="
                 "'\"reason\"'")
    if "mesos" in chosen:
        mesos = comps["mesos"]
        if mesos["package_url"]:
            if not mesos["package_sha256"]:
                problems.append("components.mesos.package_sha256: pin the sha256 of package_url")
        elif target.name not in mesos["supported_targets"]:
            problems.append(
                f"mesos: no package is known for {target.name} (AVENTER ships Ubuntu 24.04); "
                f"set components.mesos.package_url to a .deb/.rpm URL or local file "
                f"{leave_out.replace('NAME', 'mesos')}")
        elif not mesos["key_fingerprint"]:
            problems.append("components.mesos.key_fingerprint: pin the AVENTER signing key's "
                            "fingerprint (gpg --show-keys KEYFILE on a connected machine)")
    if "marathon" in chosen and not comps["marathon"]["sha256"]:
        problems.append(f"components.marathon.sha256: pin the sha256 of "
                        f"{comps['marathon']['url']} {leave_out.replace('NAME', 'marathon')}")
    zk = comps["zookeeper"]
    needs_tarball = zk["source"] == "tarball" or target.family == "dnf"
    if "zookeeper" in chosen and needs_tarball and not (zk["tarball_sha256"] or zk.get("tarball_sha512")):
        problems.append("components.zookeeper.tarball_sha256: pin the checksum of tarball_url")
    return problems
