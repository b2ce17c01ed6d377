"""What tasks.py needs beyond invoke: error -> exit code mapping and common options."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from invoke.exceptions import Exit

from kiln.config.load import Config, load_config
from kiln.errors import Interrupted, KilnError, StepFailed, UserError
from kiln.output import say, warn
from kiln.paths import Paths

__all__ = ["COMMON_HELP", "config_from", "handle_errors", "say", "split_csv", "warn"]

F = TypeVar("F", bound=Callable[..., Any])

COMMON_HELP = {
    "config": "Overlay config file (repeatable; later files win over earlier ones and config.json).",
    "set": "Override one value: KEY.PATH=VALUE, VALUE parsed as JSON when it is JSON (repeatable).",
    "profile": "Apply profiles/NAME.json first, e.g. 'offline' (debian-12/qemu, no Mesos/Marathon).",
}


def handle_errors(func: F) -> F:
    """Turn kiln's errors into one message on stderr and the right exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from kiln.runner import raise_on_sigterm

        raise_on_sigterm()
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise Exit(code=exc.exit_code) from None
        except StepFailed as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise Exit(code=exc.exit_code) from None
        except (KeyboardInterrupt, Interrupted) as exc:
            print(f"\ninterrupted: {exc or 'Ctrl-C'}", file=sys.stderr)
            raise Exit(code=Interrupted.exit_code) from None
        except KilnError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise Exit(code=exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def config_from(
    config: Sequence[str] | None, sets: Sequence[str] | None, profile: str | None,
    paths: Paths | None = None,
) -> Config:
    cfg = load_config(paths or Paths(), overlays=list(config or []), sets=list(sets or []),
                      profile=profile or None)
    for w in cfg.warnings:
        warn(w)
    return cfg


def split_csv(values: Sequence[str] | str | None) -> list[str]:
    """--target a,b --target c -> [a, b, c]."""
    if not values:
        return []
    items = [values] if isinstance(values, str) else list(values)
    return [part.strip() for item in items for part in item.split(",") if part.strip()]
