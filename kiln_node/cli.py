"""Command line: `kiln-node apply SPEC.json [--root DIR] [--dry-run]`, `kiln-node validate SPEC.json`,
`kiln-node status [--json] [--root DIR]`.

Exit codes: 0 done, 1 the node could not be configured (a service action failed, a file could
not be written, a file under the root kiln-node cannot use: not UTF-8, not a regular file, an
unusable state file or image manifest, a symlink leading out of --root), 2 bad input: the spec
is wrong, or --root names / under another spelling or is not a directory (nothing was written);
status: 0 every service of the role is ready, 3 some are not yet, 1 nothing applied yet.
Every refusal is one line on stderr naming the file or argument and what to do.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, List, Optional

from kiln_node import __version__, apply, files, render, services, status
from kiln_node import spec as specmod

EPILOG = """\
apply writes the config files of the node's role under --root (default /) and, when the root
is /, enables and starts (or restarts) exactly the services whose config changed. With another
--root, systemd is left alone and the actions are printed; nothing is written outside that root
(a symlink leading out of it is refused), and / spelled otherwise (//, /..) is refused.
A second apply of the same spec changes nothing. Exit codes: 0 done, 1 failed (nothing written
when a file under the root cannot be used), 2 bad spec or --root (nothing written).
status probes each service of the applied role (ZooKeeper srvr, Mesos /state, Marathon /ping,
systemd for the rest): exit 0 all ready, 3 not yet, 1 no spec applied."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kiln-node", description="Configure this node from a kiln node spec.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version="kiln-node " + __version__)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    a = sub.add_parser("apply", help="write this node's config files and start its services")
    a.add_argument("spec", metavar="SPEC.json")
    a.add_argument("--root", default="/", help="apply under this directory instead of / (no systemctl)")
    a.add_argument("--dry-run", action="store_true", help="print what would change, write and run nothing")
    v = sub.add_parser("validate", help="check a node spec and print its problems")
    v.add_argument("spec", metavar="SPEC.json")
    s = sub.add_parser("status", help="probe the services of the applied role: ready or not, and why")
    s.add_argument("--json", action="store_true", help="print the status as JSON (what kiln reads)")
    s.add_argument("--root", default="/", help="read the applied state under this directory")
    return p


# A spec with thousands of problems (a generated file gone wrong) prints this many, then a count.
MAX_SHOWN = 20


def _error(message: str) -> None:
    print("kiln-node: error: {}".format(message), file=sys.stderr, flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    root = "/"
    if args.command in ("apply", "status"):
        try:
            root = files.resolve_root(args.root)
        except files.RootError as exc:
            _error("{}; nothing written".format(exc))
            return 2
    if args.command == "status":
        try:
            apply.check_image_files(root)
            return status.print_status(root, args.json, sys.stdout)
        except (files.FileProblem, services.ManifestError) as exc:
            _error(str(exc))
            return 1
    try:
        spec = _load(args.spec)
    except specmod.SpecError as exc:
        for line in exc.problems[:MAX_SHOWN]:
            _error("{}: {}".format(args.spec, line))
        n = len(exc.problems)
        more = " ({} shown, {} more not)".format(MAX_SHOWN, n - MAX_SHOWN) if n > MAX_SHOWN else ""
        print("kiln-node: {}: {} problem{} in the node spec{}; nothing written".format(
            args.spec, n, "" if n == 1 else "s", more), file=sys.stderr)
        return 2
    if args.command == "validate":
        print("kiln-node: {}: OK: {}".format(args.spec, apply.describe(spec)))
        return 0
    try:
        return apply.apply(spec, root=root, dry_run=args.dry_run)
    except (files.FileProblem, services.ManifestError, render.HostsError) as exc:
        _error(str(exc))
    except OSError as exc:
        _error("{}: {}".format(exc.filename or "", exc.strerror or exc))
    return 1


def _load(path: str) -> Dict[str, Any]:
    """The checked spec; warnings go to stderr, problems raise SpecError."""
    spec, warnings = specmod.load(path)
    for line in warnings:
        print("kiln-node: WARNING: {}".format(line), file=sys.stderr)
    return spec
