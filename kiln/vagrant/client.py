"""python-vagrant, each call bounded: kiln asks Vagrant through python-vagrant's API (status, box
list, ssh-config parsing), but a Vagrant that never answers (a provider that hangs) must end with
a message naming the call, not hang kiln. The library has no timeout of its own, so its two
command runners are given kiln.runner.query (python-vagrant is pinned below 2; the test of this
module checks that the library still runs its commands through them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import vagrant as python_vagrant
from kiln.runner import query
from kiln.vagrant.environment import vagrant_env

QUERY_SECONDS = 120.0  # `vagrant status` / `box list`: Ruby start-up plus the provider's answer


class Vagrant(python_vagrant.Vagrant):  # type: ignore[misc]
    """python_vagrant.Vagrant whose commands end after `timeout` seconds (StepTimedOut)."""

    def __init__(self, root: Path, *, timeout: float = QUERY_SECONDS, **kwargs: Any) -> None:
        kwargs.setdefault("env", vagrant_env(inherit=True))
        super().__init__(str(root), quiet_stdout=True, quiet_stderr=True, **kwargs)
        self.timeout = timeout

    def _run_vagrant_command(self, args: Any) -> str:
        command = self._make_vagrant_command(args)
        return query(command, step=f"vagrant {' '.join(str(a) for a in args if a is not None)}",
                     timeout=self.timeout, cwd=self.root, env=self.env)

    def _call_vagrant_command(self, args: Any) -> None:
        self._run_vagrant_command(args)
