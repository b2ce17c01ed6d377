"""What tasks.py needs beyond invoke: error -> exit code mapping, common options, and the checks
every option gets before a task runs.

Every kiln task is made with `task` from here (a `KilnTask`), which makes three promises invoke
alone does not keep:
- a whole-number option given a word (`--parallel abc`) or a number out of its range ends in one
  line and exit code 2 while invoke parses the command line, not in invoke's ValueError traceback;
- `invoke TASK --help` prints the task's help even when TASK takes a positional argument (invoke's
  parser would hand `--help` over as that argument's value and run the task);
- no option value holds a control character (a newline in `--name` would become a directory name),
  except the ones listed as free text (`invoke ssh --command`).
"""

from __future__ import annotations

import functools
import sys
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from invoke import Collection, Program, Task
from invoke import task as invoke_task
from invoke.exceptions import Exit
from invoke.parser import Argument

from kiln.config.load import Config, load_config, one_line
from kiln.errors import Interrupted, KilnError, StepFailed, UserError
from kiln.output import say, warn
from kiln.paths import Paths

__all__ = ["COMMON_HELP", "KilnTask", "config_from", "enable_help", "handle_errors", "one_of", "say",
           "split_csv", "task", "warn"]

F = TypeVar("F", bound=Callable[..., Any])

COMMON_HELP = {
    "config": "Overlay config file (repeatable; later files win over earlier ones and config.json).",
    "set": "Override one value: KEY.PATH=VALUE, VALUE parsed as JSON when it is JSON (repeatable).",
    "profile": ("Apply profiles/NAME.json first, e.g. 'offline' (debian-12/qemu, Mesos built here, "
                "no Marathon)."),
}
HELP_WORDS = ("--help", "-h")
CONTROL = ("Cc", "Zl", "Zp")  # control characters, and the line and paragraph separators
ACCELERATORS = ("auto", "kvm", "tcg")


def _fail(message: str) -> Exit:
    """The Exit that prints `error: message` and ends with the user-error exit code."""
    return Exit(f"error: {message}", code=UserError.exit_code)


class WholeNumber(Argument):
    """An int option that refuses a word or an out-of-range number with one line (invoke's own
    int() conversion would end in a ValueError traceback)."""

    bounds: tuple[int | None, int | None] = (None, None)

    def set_value(self, value: Any, cast: bool = True) -> None:
        flag = f"--{self.name}"
        low, high = self.bounds
        expected = "a whole number" + (f" from {low} to {high}" if low is not None and high is not None
                                       else f" of at least {low}" if low is not None else "")
        example = f"e.g. {flag} {self.default if isinstance(self.default, int) else low or 1}"
        try:
            number = int(str(value).strip(), 10) if cast else int(value)
        except ValueError:
            raise _fail(f"{flag} {one_line(repr(str(value)), 80)}: expected {expected}, {example}") from None
        if (low is not None and number < low) or (high is not None and number > high):
            raise _fail(f"{flag} {number}: expected {expected}, {example}")
        super().set_value(number, cast=False)


class KilnTask(Task):  # type: ignore[type-arg]
    """An invoke Task with kiln's option checks (see the module docstring).

    bounds: {"parallel": (1, 64)} limits whole-number options; free_text: options that may hold
    control characters."""

    def __init__(self, body: Callable[..., Any], *, bounds: Mapping[str, tuple[int | None, int | None]]
                 | None = None, free_text: Iterable[str] = (), **kwargs: Any) -> None:
        super().__init__(body, **kwargs)
        self.bounds = dict(bounds or {})
        self.free_text = frozenset(free_text)
        self._help_texts = dict(self.help)  # invoke's get_arguments consumes self.help
        self.qualified_name = self.name
        self.root: Collection | None = None

    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list[Argument]:
        self.help = dict(self._help_texts)
        arguments = super().get_arguments(ignore_unknown_help)
        for argument in arguments:
            if argument.kind is int:
                argument.__class__ = WholeNumber
                argument.bounds = self.bounds.get(argument.attr_name or argument.name, (None, None))
        return arguments

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._asks_for_help(args[1:], kwargs):
            print_help(self)
            return None
        for name, value in kwargs.items():
            if name not in self.free_text:
                _refuse_control_characters(name, value)
        return super().__call__(*args, **kwargs)

    def _asks_for_help(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> bool:
        given = [*args, *(kwargs.get(name) for name in self.positional)]
        return any(isinstance(v, str) and v in HELP_WORDS for v in given)


def _refuse_control_characters(name: str, value: Any) -> None:
    values = value if isinstance(value, list | tuple) else [value]
    for item in values:
        if isinstance(item, str) and any(unicodedata.category(ch) in CONTROL for ch in item):
            flag = "--" + name.rstrip("_").replace("_", "-")
            raise _fail(f"{flag} {one_line(repr(item), 80)}: holds a control character (a newline, tab, "
                        "escape, ...); give the value on one line without them")


def task(*args: Any, **kwargs: Any) -> Any:
    """invoke's @task, making a KilnTask."""
    return invoke_task(*args, klass=KilnTask, **kwargs)


def enable_help(root: Collection) -> Collection:
    """Tell each task its full name (ami.destroy) and the collection it is in, for print_help."""
    for name in root.task_names:
        found = root[name]
        if isinstance(found, KilnTask):
            found.qualified_name = name
            found.root = root
    return root


def print_help(found: KilnTask) -> None:
    """What `invoke --help NAME` prints (invoke's own Program, named as invoke names itself)."""
    root = found.root if found.root is not None else Collection(found)
    Program(namespace=root, binary="inv[oke]").run(["invoke", "--help", found.qualified_name], exit=False)


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


def split_csv(values: Sequence[str] | str | None, option: str = "--target") -> list[str]:
    """--target a,b --target c -> [a, b, c]. Given but naming nothing (`--target ,`, an empty
    name between commas) is a UserError: it never silently means "all"."""
    if not values:
        return []
    items = [values] if isinstance(values, str) else list(values)
    names = [part.strip() for item in items for part in item.split(",")]
    if not any(names) or not all(names):
        given = ",".join(items)
        raise UserError(f"{option} {one_line(repr(given), 80)}: an empty name",
                        f"name one or more, comma separated, e.g. {option} debian-12; "
                        f"leave {option} out for the default")
    return names


def one_of(option: str, value: str, allowed: Sequence[str]) -> str:
    """`value` if it is one of `allowed` (or empty: the default), else a UserError."""
    if value and value not in allowed:
        raise UserError(f"{option} {one_line(repr(value), 80)}: expected one of {', '.join(allowed)}")
    return value
