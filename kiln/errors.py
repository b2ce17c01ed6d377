"""Error types shared by every kiln module.

A `UserError` is something the user can fix (bad config, missing tool, unreachable
package source). tasks.py turns it into one message and exit code 2. Anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path

USER_ERROR_EXIT = 2


class KilnError(Exception):
    """Base of kiln's own errors."""

    exit_code = 1


class UserError(KilnError):
    """A problem the user can fix; `hint` says how."""

    exit_code = USER_ERROR_EXIT

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  fix: {self.hint}" if self.hint else self.message


class ConfigError(UserError):
    """One or more problems in the merged configuration, reported together."""

    def __init__(self, problems: list[str], source: str = "configuration") -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{lines}")

    def __str__(self) -> str:
        return self.message


class MissingTool(UserError):
    """An external program kiln needs is not installed."""


class StepFailed(KilnError):
    """An external command failed; names the step, the command and its log."""

    def __init__(self, step: str, command: list[str], returncode: int, log: Path | None) -> None:
        self.step = step
        self.command = command
        self.returncode = returncode
        self.log = log
        where = f"; log: {log}" if log else ""
        super().__init__(
            f"step '{step}' failed (exit {returncode}): {' '.join(command)}{where}"
        )


class Interrupted(KilnError):
    """The user (or a signal) stopped a long step; cleanup has run."""

    exit_code = 130
