"""In-build verification, run by Packer's shell-local provisioner before the image is
accepted: the bake-phase testinfra suites against the build VM over SSH. A failing
check exits non-zero, which fails the Packer build (and kiln discards the artifact).

    python -m kiln.inbuild connect --host H --port P --user U --key KEY --name PAIR
    python -m kiln.inbuild verify  --host H --port P --user U --key KEY --name PAIR

Cleanup removes the SSH host keys, after which sshd accepts no new connection. So
`connect` runs before cleanup and opens a persistent OpenSSH master connection, and
`verify` (after cleanup) runs every check through it, then closes it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from kiln import sshconfig
from kiln.paths import Paths
from kiln.verify import run_suites


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kiln.inbuild", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("connect", "verify"))
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--user", required=True)
    parser.add_argument("--key", required=True, type=Path)
    parser.add_argument("--name", required=True, help="the build pair, e.g. debian-12-qemu")
    parser.add_argument("--extra", action="append", default=[],
                        help="extra pytest argument (repeatable), e.g. a -k filter")
    args = parser.parse_args(argv)
    paths = Paths()
    workdir = paths.build / "verify" / args.name
    cfg = sshconfig.write(workdir / "inbuild.ssh_config",
                          [sshconfig.SshHost("build-vm", args.host, args.port, args.user, args.key)],
                          control_dir=workdir / "ssh-control", persist="1800s")
    if args.action == "connect":
        opened = subprocess.run(["ssh", "-F", str(cfg), "-fN", "-o", "ControlPersist=1800", "build-vm"],
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
        if opened.returncode != 0:
            print(f"==> could not open the verification connection: {opened.stderr.strip()}",
                  file=sys.stderr, flush=True)
        return opened.returncode
    report = paths.reports / f"{args.name}-inbuild.xml"
    print(f"==> in-build verification of {args.name} (report: {report})", flush=True)
    try:
        result = run_suites(paths, ssh_config=cfg, hosts=["build-vm"], phase="bake", report=report,
                            extra=args.extra)
    finally:
        sshconfig.close_master(cfg, "build-vm")
    if result.returncode != 0:
        print(f"==> in-build verification FAILED: the image is not accepted (report: {report})",
              file=sys.stderr, flush=True)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
