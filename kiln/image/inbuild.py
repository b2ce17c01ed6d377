"""In-build verification, run by Packer's shell-local provisioner before the image is
accepted: the bake-phase testinfra suites against the build VM over SSH. A failing
check exits non-zero, which fails the Packer build (and kiln discards the artifact).

    python -m kiln.image.inbuild connect --host H --port P --user U --key KEY --name PAIR
    python -m kiln.image.inbuild verify  --host H --port P --user U --key KEY --name PAIR

(`--key-from-env VAR` instead of `--key`: the private key's text is in VAR, as Packer gives
its temporary EC2 key pair; it is written to a 0600 file in the verification directory.)

Cleanup removes the SSH host keys, after which sshd accepts no new connection. So
`connect` runs before cleanup and opens a persistent OpenSSH master connection, and
`verify` (after cleanup) runs every check through it, then closes it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from kiln import sshconfig
from kiln.image.verify import run_suites
from kiln.paths import Paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kiln.image.inbuild", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("connect", "verify"))
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--user", required=True)
    key = parser.add_mutually_exclusive_group(required=True)
    key.add_argument("--key", type=Path, help="private key file")
    key.add_argument("--key-from-env", metavar="VAR", help="environment variable holding the private key")
    parser.add_argument("--name", required=True, help="the build pair, e.g. debian-12-qemu")
    parser.add_argument("--extra", action="append", default=[],
                        help="extra pytest argument (repeatable), e.g. a -k filter")
    parser.add_argument("--expect", default="",
                        help="components the image must hold, comma separated (a missing one fails)")
    args = parser.parse_args(argv)
    paths = Paths()
    workdir = paths.build / "verify" / args.name
    key_file = args.key if args.key is not None else _key_from_env(args.key_from_env, workdir)
    cfg = sshconfig.write(workdir / "inbuild.ssh_config",
                          [sshconfig.SshHost("build-vm", args.host, args.port, args.user, key_file)],
                          control_dir=workdir / "ssh-control", persist="1800s")
    if args.action == "connect":
        return _connect(cfg, args.host, args.port)
    report = paths.reports / f"{args.name}-inbuild.xml"
    print(f"==> in-build verification of {args.name} (report: {report})", flush=True)
    try:
        result = run_suites(paths, ssh_config=cfg, hosts=["build-vm"], phase="bake", report=report,
                            extra=args.extra, expect=[c for c in args.expect.split(",") if c])
    finally:
        sshconfig.close_master(cfg, "build-vm")
    if result.returncode != 0:
        print(f"==> in-build verification FAILED: the image is not accepted (report: {report})",
              file=sys.stderr, flush=True)
    return result.returncode


CONNECT_TIMEOUT = 120.0


def _connect(cfg: Path, host: str, port: int, timeout: float = CONNECT_TIMEOUT) -> int:
    """Open the master connection (`ssh -fN`: ssh puts it in the background, in a session of its
    own, which is why this is not kiln.runner.run: run() ends what a step leaves in its process
    group). Bounded: a VM that stops answering ends the step with a message, not a hang. kiln
    closes the master after the Packer build whatever happened (kiln.image.layered.run_packer)."""
    try:
        opened = subprocess.run(["ssh", "-F", str(cfg), "-fN", "-o", "ControlPersist=1800", "build-vm"],
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"==> in-build verification: step 'open the SSH connection to {host}:{port}' timed out "
              f"after {timeout:.0f}s (ssh_config {cfg}); Packer's log has the build's side",
              file=sys.stderr, flush=True)
        return 1
    if opened.returncode != 0:
        print(f"==> could not open the verification connection: {opened.stderr.strip()}",
              file=sys.stderr, flush=True)
    return opened.returncode


def _key_from_env(variable: str, workdir: Path) -> Path:
    text = os.environ.get(variable, "")
    if "PRIVATE KEY" not in text:
        raise SystemExit(f"==> in-build verification: ${variable} holds no private key")
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "build-instance.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text if text.endswith("\n") else text + "\n")
    return path


if __name__ == "__main__":
    sys.exit(main())
