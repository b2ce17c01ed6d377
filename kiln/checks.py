"""The result rows of `invoke validate` (and of other check lists): kind, subject, result, detail."""

from __future__ import annotations

from dataclasses import dataclass, field

from kiln.table import format_table

PASS, FAIL, SKIP = "pass", "FAIL", "skipped"


@dataclass(frozen=True)
class Check:
    kind: str
    subject: str
    result: str
    detail: str = ""


@dataclass
class Summary:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.result != FAIL for c in self.checks)

    def add(self, check: Check) -> None:
        self.checks.append(check)

    def table(self) -> str:
        rows = [(c.kind, c.subject, c.result, c.detail) for c in self.checks]
        return format_table(("check", "subject", "result", "detail"), rows)
