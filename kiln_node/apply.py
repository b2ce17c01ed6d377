"""`kiln-node apply`: make a node what its spec says, changing only what differs.

Order: stop units the spec no longer wants, write (or remove) files whose content differs,
then enable+start new units and restart units whose files changed, in dependency order.
The state file records what was done, so a second apply with the same spec does nothing.

Everything is read and checked before anything is written or run: a path under the root that a
symlink leads out of it, a file that is not UTF-8 text or not a regular file where kiln-node
reads or writes one, an unusable state file or image manifest stop the apply with one message
(files.FileProblem) and leave the node as it was.
"""

from __future__ import annotations

import sys
from typing import IO, Any, Dict, List, Optional, Set, Tuple

from kiln_node import catalog as catalogmod
from kiln_node import files, render, services, state
from kiln_node import spec as specmod

Action = Tuple[str, str]


class Plan:
    def __init__(self) -> None:
        self.writes: List[Tuple[str, str, int]] = []  # (path, content, mode), changed files only
        self.removals: List[str] = []
        self.hashes: Dict[str, str] = {}  # every file kiln-node now owns -> sha256
        self.skipped: List[str] = []
        self.units: List[str] = []
        self.stops: List[Action] = []
        self.starts: List[Action] = []

    @property
    def changed(self) -> List[str]:
        return sorted([p for p, _, _ in self.writes] + self.removals)

    @property
    def empty(self) -> bool:
        return not (self.writes or self.removals or self.stops or self.starts)


# The files the image brings, which kiln-node reads but never writes.
IMAGE_FILES = ((services.MANIFEST, "image manifest"), (catalogmod.PATH, "component catalog"))
IMAGE_FILE_MAX_BYTES = 4 << 20
IMAGE_FILE_MAX_DEPTH = 32


def check_image_files(root: str) -> None:
    """The image's manifest and component catalog, where present, must be regular files holding
    UTF-8 JSON, inside the root, before services and catalog interpret them: opening a FIFO there
    would block, a file nested thousands of levels deep would exhaust the parser's stack, a
    symlink could lead to another machine's files. Raises files.FileProblem."""
    for path, what in IMAGE_FILES:
        real = files.under(root, path)
        try:
            text = files.read_text(real, IMAGE_FILE_MAX_BYTES)
            if text is not None:
                files.loads_json(text, IMAGE_FILE_MAX_DEPTH, "a " + what)
        except (files.Unreadable, files.BadJSON) as exc:
            raise files.FileProblem("{}: unreadable {} ({}); it is written when the image is baked: restore "
                                    "it from the image, or rebuild the image".format(real, what, exc)) \
                from None


def make_plan(spec: Dict[str, Any], root: str, previous: Dict[str, Any]) -> Plan:
    plan = Plan()
    check_image_files(root)
    catalog = catalogmod.load(root)
    manifest = services.read_manifest(root)
    plan.units, plan.skipped = services.present(services.role_units(spec, catalog), manifest, catalog)
    present = None if manifest is None else list(manifest)
    wanted = {p: v for p, v in render.render(spec, catalog, present).items()
              if not services.readers(p, catalog) or set(services.readers(p, catalog)) & set(plan.units)}
    hosts_real = files.under(root, render.HOSTS)
    existing = files.read(hosts_real)
    hosts_mode = files.mode_of(hosts_real) if existing is not None else 0o644
    wanted[render.HOSTS] = (render.merge_hosts(existing or "", render.hosts_block(spec)), hosts_mode or 0o644)
    for path in sorted(wanted):
        content, mode = wanted[path]
        plan.hashes[path] = files.sha256(content)
        if files.differs(files.under(root, path), content, mode):
            plan.writes.append((path, content, mode))
    for path in sorted(previous["files"]):
        if path not in wanted and render.owned(path) and files.read(files.under(root, path)) is not None:
            plan.removals.append(path)
    affected: Set[str] = set()
    for path in plan.changed:
        affected.update(services.readers(path, catalog))
    before = [u for u in previous["units"] if u in catalogmod.order(catalog)]
    for unit in reversed(before):
        if unit not in plan.units:
            plan.stops += [("stop", unit), ("disable", unit)]
    for unit in plan.units:
        if unit not in before:
            plan.starts += [("enable", unit), ("start", unit)]
        elif unit in affected:
            plan.starts.append(("restart", unit))
    return plan


def apply(spec: Dict[str, Any], root: str = "/", manager: Optional[services.ServiceManager] = None,
          dry_run: bool = False, out: Optional[IO[str]] = None) -> int:
    """Apply a spec under `root`. Returns the exit code: 0 done, 1 some service action failed.
    Raises SpecError for a bad spec, files.FileProblem (state.StateError among them) for a file
    under the root that cannot be used as it is; nothing is written then."""
    out = out if out is not None else sys.stdout
    problems, _ = specmod.check(spec)
    if problems:
        raise specmod.SpecError(problems)
    previous = state.load(root)
    plan = make_plan(spec, root, previous)
    print("kiln-node: {}".format(describe(spec)), file=out)
    for line in plan.skipped:
        print("  " + line, file=out)
    if dry_run:
        return _dry_run(plan, out)
    if manager is None:
        manager = services.ServiceManager(out) if root == "/" else services.NotRunServiceManager(out)
    failed: List[str] = []
    kept = _run(manager, plan.stops, failed, out)
    for path, content, mode in plan.writes:
        files.write_atomic(files.under(root, path), content, mode)
        print("  wrote {}".format(path), file=out)
    for path in plan.removals:
        files.remove(files.under(root, path))
        print("  removed {} (no longer needed)".format(path), file=out)
    _run(manager, plan.starts, failed, out)
    units = [u for u in plan.units if u not in failed] + [u for u in kept if u not in plan.units]
    state.save(root, state.dump(spec, plan.hashes, units))
    note = "" if manager.runs or plan.empty else " (systemctl actions not run: --root given)"
    print("kiln-node: {}{}".format(summary(plan, failed), note), file=out, flush=True)
    return 1 if failed else 0


def _run(manager: services.ServiceManager, actions: List[Action], failed: List[str],
         out: IO[str]) -> List[str]:
    """Run actions in order; a unit whose action failed gets no further actions. Returns the units
    whose stop/disable failed (still running, so still ours)."""
    still_ours: List[str] = []
    for action, unit in actions:
        if unit in failed:
            continue
        try:
            manager.run(action, unit)
        except services.ServiceError as exc:
            print("  error: {}".format(exc), file=out)
            failed.append(unit)
            if action in ("stop", "disable"):
                still_ours.append(unit)
    return still_ours


def _dry_run(plan: Plan, out: IO[str]) -> int:
    for path, _, _ in plan.writes:
        print("  would write {}".format(path), file=out)
    for path in plan.removals:
        print("  would remove {}".format(path), file=out)
    for action, unit in plan.stops + plan.starts:
        print("  would run: systemctl {} {}".format(action, unit), file=out)
    print("kiln-node: {}".format("no change" if plan.empty else "dry run: nothing written, nothing run"),
          file=out, flush=True)
    return 0


def describe(spec: Dict[str, Any]) -> str:
    n = len(spec["masters"])
    if spec["role"] == "standalone":
        what = "standalone node"
    elif spec["role"] == "master":
        what = "master {} of {} (quorum {})".format(int(spec["node_id"]), n, specmod.quorum(spec))
    else:
        what = "agent of {} master(s)".format(n)
    return "{} {} = {} of cluster {}".format(spec["name"], spec["ip"], what, spec["cluster"])


def summary(plan: Plan, failed: List[str]) -> str:
    if plan.empty:
        return "no change"

    def units(*actions: str) -> str:
        names = [u for a, u in plan.stops + plan.starts if a in actions and u not in failed]
        return ", ".join(names) or "-"

    text = "{} file(s) changed; started: {}; restarted: {}; stopped: {}".format(
        len(plan.changed), units("start"), units("restart"), units("stop"))
    if failed:
        text += "; FAILED: {}".format(", ".join(failed))
    return text
