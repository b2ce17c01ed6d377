"""What changed since the previous nightly run: pure functions over two Runs.

Checks are compared as matrix cells (entry x check id, worst result over the entry's
hosts), and only where the entry ran checks both times: an entry that did not run says
so once, as a result change, instead of listing every check as disappeared.
Durations and sizes are compared where both runs have the value; a change counts when
it is over the ratio (either direction) and over an absolute floor, so that 2 s -> 4 s
or a few KiB of log do not raise an alarm every night.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from kiln.report.model import Entry, Run

ABSENT = "absent"


@dataclass(frozen=True)
class Thresholds:
    ratio: float = 0.20
    min_seconds: float = 5.0
    min_bytes: int = 1 << 20


@dataclass(frozen=True)
class CheckChange:
    entry: str
    check: str
    before: str  # a check result, or "absent"
    after: str
    message: str = ""


@dataclass(frozen=True)
class ResultChange:
    entry: str
    before: str  # an entry result, or "absent" for an entry new in this run
    after: str
    reason: str = ""


@dataclass(frozen=True)
class VersionChange:
    entry: str
    component: str
    before: str  # "" when the component is new
    after: str  # "" when it is gone


@dataclass(frozen=True)
class AmountChange:
    entry: str
    name: str  # stage or artifact file
    before: float
    after: float

    @property
    def ratio(self) -> float:
        """+0.25 = 25% more; inf when the previous value was 0."""
        return (self.after - self.before) / self.before if self.before else float("inf")


@dataclass(frozen=True)
class Diff:
    results: list[ResultChange] = field(default_factory=list)
    new_failures: list[CheckChange] = field(default_factory=list)
    fixed: list[CheckChange] = field(default_factory=list)
    appeared: list[CheckChange] = field(default_factory=list)
    disappeared: list[CheckChange] = field(default_factory=list)
    versions: list[VersionChange] = field(default_factory=list)
    durations: list[AmountChange] = field(default_factory=list)
    sizes: list[AmountChange] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not any((self.results, self.new_failures, self.fixed, self.appeared, self.disappeared,
                        self.versions, self.durations, self.sizes))


def diff_runs(previous: Run, current: Run, thresholds: Thresholds | None = None) -> Diff:
    limits = thresholds or Thresholds()
    before = {e.name: e for e in previous.entries}
    diff = Diff()
    for entry in current.entries:
        old = before.get(entry.name)
        if old is None:
            diff.results.append(ResultChange(entry.name, ABSENT, entry.result, entry.reason))
            continue
        if old.result != entry.result:
            diff.results.append(ResultChange(entry.name, old.result, entry.result, entry.reason))
        if old.ran and entry.ran:
            _diff_checks(old, entry, diff)
        diff.versions.extend(_diff_versions(old, entry))
        diff.durations.extend(_diff_amounts(entry.name, old.stages, entry.stages, limits.ratio,
                                            limits.min_seconds))
        diff.sizes.extend(_diff_amounts(entry.name, old.artifacts, entry.artifacts, limits.ratio,
                                        limits.min_bytes))
    names = {e.name for e in current.entries}
    diff.results.extend(ResultChange(e.name, e.result, ABSENT)
                        for e in previous.entries if e.name not in names)
    return diff


def _diff_checks(old: Entry, new: Entry, diff: Diff) -> None:
    old_cells, new_cells = old.cells(), new.cells()
    for check_id, checks in new_cells.items():
        now = new.cell_result(check_id) or ABSENT
        was = old.cell_result(check_id) or ABSENT
        message = next((c.message for c in checks if c.result == now), "")
        if now in ("fail", "error") and was not in ("fail", "error"):
            diff.new_failures.append(CheckChange(new.name, check_id, was, now, message))
        elif was in ("fail", "error") and now not in ("fail", "error"):
            diff.fixed.append(CheckChange(new.name, check_id, was, now))
        elif was == ABSENT:
            diff.appeared.append(CheckChange(new.name, check_id, was, now))
    for check_id in old_cells:
        if check_id not in new_cells:
            diff.disappeared.append(CheckChange(new.name, check_id, old.cell_result(check_id) or ABSENT,
                                                ABSENT))


def _diff_versions(old: Entry, new: Entry) -> list[VersionChange]:
    # An entry that did not get as far as reading the image manifest has no versions:
    # that is no evidence that components were removed.
    if not old.components or not new.components:
        return []
    names = sorted(set(old.components) | set(new.components))
    return [VersionChange(new.name, n, old.components.get(n, ""), new.components.get(n, ""))
            for n in names if old.components.get(n, "") != new.components.get(n, "")]


def _diff_amounts(entry: str, old: Mapping[str, float], new: Mapping[str, float], ratio: float,
                  floor: float) -> list[AmountChange]:
    out = []
    for name, after in new.items():
        if name not in old:
            continue
        change = AmountChange(entry, name, old[name], after)
        if abs(after - old[name]) >= floor and abs(change.ratio) > ratio:
            out.append(change)
    return out
