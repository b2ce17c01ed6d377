"""The environment every Vagrant call of kiln's gets: no update checks, no colour, the provider."""

from __future__ import annotations

import os


def vagrant_env(provider: str | None = None, *, inherit: bool = False) -> dict[str, str]:
    """Variables to add to a Vagrant call (the runner adds them to the current environment);
    `inherit` gives the whole environment, for APIs that replace it (python-vagrant, subprocess)."""
    env = {"VAGRANT_CHECKPOINT_DISABLE": "1", "CHECKPOINT_DISABLE": "1", "VAGRANT_NO_COLOR": "1"}
    if provider:
        env["VAGRANT_DEFAULT_PROVIDER"] = provider
    return {**os.environ, **env} if inherit else env
