"""The nightly report's data: a Run of Entries (target x builder, or a cluster shape), each
with stage durations, artifact sizes, component versions and testinfra checks.

Results are derived from what happened (stages, checks, a reason for not running), never
set by hand, so nothing can be reported as passed without evidence.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

ENTRY_RESULTS = ("pass", "fail", "error", "not-run")
CHECK_RESULTS = ("pass", "fail", "error", "skip")
# A matrix cell takes the worst result over its hosts; higher is worse.
_SEVERITY = {"error": 4, "fail": 3, "not-run": 2, "pass": 1, "skip": 0}


def worst(results: Iterable[str]) -> str | None:
    return max(results, key=lambda r: _SEVERITY[r], default=None)


@dataclass(frozen=True)
class Check:
    """One testinfra test on one host. `id` is `file.py::[Class::]test[params]`, without the host."""

    id: str
    result: str
    host: str = ""
    message: str = ""
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.result not in CHECK_RESULTS:
            raise ValueError(f"check {self.id}: result {self.result!r} is not one of {CHECK_RESULTS}")

    @property
    def suite(self) -> str:
        return self.id.split("::", 1)[0]

    @property
    def name(self) -> str:
        return self.id.split("::", 1)[-1]

    @property
    def failed(self) -> bool:
        return self.result in ("fail", "error")


@dataclass
class Entry:
    """What the nightly did with one target x builder (shape "" = single node) or one cluster.

    The result is derived, never set: not run (with its reason) beats an error of kiln
    itself, which beats failed stages or checks; an entry that ran no check is an error,
    so nothing counts as passed without evidence.
    """

    name: str
    target: str
    builder: str
    shape: str = ""
    not_run: str = ""
    error: str = ""
    stages: dict[str, float] = field(default_factory=dict)
    stage_failures: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, int] = field(default_factory=dict)
    components: dict[str, str] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)

    @property
    def result(self) -> str:
        if self.not_run:
            return "not-run"
        if self.error or (not self.checks and not self.stage_failures):
            return "error"
        if self.stage_failures or any(c.failed for c in self.checks):
            return "fail"
        return "pass"

    @property
    def reason(self) -> str:
        """One line saying why the entry did not pass ("" when it passed)."""
        result = self.result
        if result == "not-run":
            return self.not_run
        if result == "error":
            return self.error or "no checks ran"
        if result == "pass":
            return ""
        parts = [f"{stage} failed" for stage in self.stage_failures]
        failing = sum(1 for c in self.checks if c.failed)
        if failing:
            parts.append(f"{failing} failing check{'s' if failing > 1 else ''}")
        return ", ".join(parts)

    @property
    def ran(self) -> bool:
        """Whether there are checks to compare (a not-run or early-crashed entry has none)."""
        return bool(self.checks)

    @property
    def seconds(self) -> float:
        return round(sum(self.stages.values()), 1)

    def cells(self) -> dict[str, list[Check]]:
        """Checks by id, each with its hosts (a cluster entry runs a check on every node)."""
        out: dict[str, list[Check]] = {}
        for check in self.checks:
            out.setdefault(check.id, []).append(check)
        return out

    def cell_result(self, check_id: str) -> str | None:
        return worst(c.result for c in self.cells().get(check_id, []))


@dataclass
class Run:
    started: datetime
    finished: datetime
    host: dict[str, str] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)
    kiln_version: str = ""
    git_revision: str = ""
    entries: list[Entry] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return round((self.finished - self.started).total_seconds(), 1)

    @property
    def verdict(self) -> str:
        """fail if anything failed; not-run if nothing ran (nothing was verified); else pass."""
        results = {e.result for e in self.entries}
        if results & {"fail", "error"}:
            return "fail"
        return "pass" if "pass" in results else "not-run"

    def counts(self) -> dict[str, int]:
        return {r: sum(1 for e in self.entries if e.result == r) for r in ENTRY_RESULTS}

    def entry(self, name: str) -> Entry | None:
        return next((e for e in self.entries if e.name == name), None)


def entry_name(target: str, builder: str, shape: str = "") -> str:
    """`debian-12-qemu`, or `debian-12-qemu cluster 3m` for a cluster shape."""
    base = f"{target}-{builder}"
    return f"{base} cluster {shape}" if shape else base


def iso_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("report times must be timezone-aware (datetime.now(UTC))")
    return moment.astimezone(UTC).isoformat(timespec="seconds")
