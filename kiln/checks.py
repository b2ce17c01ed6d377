"""The result rows of `invoke validate` (and of other check lists): kind, subject, result, detail.

A row's result says how much was checked: `pass` only when the whole check ran and passed;
`partial` when it passed with part of it left out (`vagrant validate -p`, which skips the provider
blocks; Packer validating a template whose source image checksum is not pinned), the detail saying
what; `skipped` when it did not run at all. Neither partial nor skipped counts as passed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kiln.table import format_table

PASS, PARTIAL, FAIL, SKIP = "pass", "partial", "FAIL", "skipped"
RESULTS = (PASS, PARTIAL, SKIP, FAIL)


@dataclass(frozen=True)
class Check:
    kind: str
    subject: str
    result: str
    detail: str = ""

    def __post_init__(self) -> None:
        if self.result not in RESULTS:
            raise ValueError(f"unknown check result {self.result!r}")
        if self.result in (PARTIAL, SKIP) and not self.detail:
            raise ValueError(f"a {self.result} check must say why: {self.kind} {self.subject}")


@dataclass
class Summary:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.result != FAIL for c in self.checks)

    def add(self, check: Check) -> None:
        self.checks.append(check)

    def count(self, result: str) -> int:
        return sum(1 for c in self.checks if c.result == result)

    def verdict(self) -> str:
        """'N passed, N partial, N skipped, N failed': only whole checks that ran count as passed."""
        words = {PASS: "passed", PARTIAL: "partial", SKIP: "skipped", FAIL: "failed"}
        line = ", ".join(f"{self.count(r)} {words[r]}" for r in (PASS, PARTIAL, SKIP, FAIL))
        if self.count(PARTIAL) or self.count(SKIP):
            line += " (partial and skipped checks did not check everything: see their detail)"
        return line

    def table(self) -> str:
        rows = [(c.kind, c.subject, c.result, c.detail) for c in self.checks]
        return format_table(("check", "subject", "result", "detail"), rows)
