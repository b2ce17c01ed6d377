"""Load config.json, apply overlays and --set values, validate, report every problem at once.

Precedence (later wins): config.json < --profile NAME (profiles/NAME.json) < each --config FILE
in the order given < each --set a.b.c=value in the order given. Dicts merge key by key;
lists and scalars replace.
"""

from __future__ import annotations

import contextlib
import copy
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln import strictjson
from kiln.config import catalog
from kiln.config.schema import json_type, schema_problems, short
from kiln.config.shapes import parse_shape
from kiln.errors import ConfigError
from kiln.paths import Paths
from kiln.strictjson import Limits, Refused


@dataclass(frozen=True)
class Config:
    data: dict[str, Any]
    sources: tuple[str, ...] = field(default=())
    warnings: tuple[str, ...] = field(default=())

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node

    @property
    def excluded(self) -> dict[str, str]:
        return dict(self.data["components"].get("exclude", {}))

    def components_for(self, target: str) -> list[str]:
        """Enabled components minus excluded ones, in the configured order."""
        excluded = self.excluded
        return [c for c in self.data["components"]["enabled"] if c not in excluded]


def deep_merge(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# -- reading JSON strictly (kiln/strictjson.py says what is refused) -------------------------------
MAX_FILE_BYTES = 8 << 20
MAX_DEPTH = 32  # config.json nests 5 levels
STRICT = Limits(max_bytes=MAX_FILE_BYTES, max_depth=MAX_DEPTH, max_number_chars=20,  # no setting needs 21
                what="a config file", nests=5)
# A flood of problems (20,000 unknown keys) is summed up, not printed whole.
MAX_SHOWN = 20
MAX_PROBLEM_CHARS = 300
PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def _read_json(path: Path, problems: list[str], label: str = "") -> dict[str, Any] | None:
    where = label or str(path)
    try:
        data = strictjson.loads(strictjson.read_text(path, STRICT), STRICT)
    except Refused as exc:
        problems.append(f"{where}: {exc}")
        return None
    except json.JSONDecodeError as exc:
        problems.append(f"{where}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg} (fix it there)")
        return None
    if not isinstance(data, dict):
        problems.append(f"{where}: expected a JSON object at the top, got {json_type(data)}")
        return None
    return data


def _profile_file(paths: Paths, profile: str, problems: list[str]) -> Path | None:
    """profiles/NAME.json, or a problem: NAME is a name in profiles/, never a path."""
    name = profile.removesuffix(".json")
    known = sorted(p.stem for p in paths.profiles.glob("*.json"))
    listed = f"(known: {', '.join(known) or 'none'})"
    if not PROFILE_NAME.fullmatch(name):
        problems.append(f"--profile {short(profile)}: expected the name of a file in profiles/ {listed}, "
                        "not a path; use --config FILE for a file elsewhere")
        return None
    path = paths.profiles / f"{name}.json"
    if not path.exists():
        problems.append(f"--profile {profile}: no such profile {listed}")
        return None
    if path.resolve().parent != paths.profiles.resolve():
        problems.append(f"--profile {profile}: {path} leads outside profiles/ (a symlink); "
                        "use --config FILE for a file elsewhere")
        return None
    return path


def _split_key(node: Any, dotted: str) -> list[str]:
    """Split a --set key on dots, keeping dotted names that exist (targets.ubuntu-24.04.x)."""
    parts = dotted.split(".")
    keys: list[str] = []
    i = 0
    while i < len(parts):
        chosen = parts[i]
        if isinstance(node, Mapping):
            for j in range(len(parts), i, -1):
                candidate = ".".join(parts[i:j])
                if candidate in node:
                    chosen, i = candidate, j - 1
                    break
        keys.append(chosen)
        node = node.get(chosen) if isinstance(node, Mapping) else None
        i += 1
    return keys


def parse_set(expr: str, data: Mapping[str, Any]) -> tuple[list[str], Any]:
    """'a.b.c=value' -> (['a','b','c'], value). Values are JSON when they parse, else strings;
    ValueError when the expression or its JSON value is refused."""
    if "=" not in expr:
        raise ValueError(f"--set {_quoted(expr)}: expected KEY.PATH=VALUE")
    key, raw = expr.split("=", 1)
    if not key or any(not p for p in key.split(".")):
        raise ValueError(f"--set {_quoted(expr)}: empty key segment in {_quoted(key)}")
    if key.count(".") >= MAX_DEPTH:
        raise ValueError(f"--set {_quoted(expr)}: a key path of more than {MAX_DEPTH} parts")
    try:
        value = strictjson.loads(raw, STRICT)
    except json.JSONDecodeError:
        value = raw
    except Refused as exc:
        raise ValueError(f"--set {_quoted(expr)}: {exc} (quote a string value as JSON: "
                         f"{key}='\"...\"')") from None
    return _split_key(data, key), value


def _quoted(text: str) -> str:
    return f"'{one_line(text, 80)}'"


def _apply_set(data: dict[str, Any], keys: list[str], value: Any) -> None:
    node = data
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[keys[-1]] = value


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def semantic_problems(data: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Cross-field checks JSON Schema cannot express. Returns (problems, warnings).

    load_config runs them only on data the schema accepts; values of another type are
    skipped here all the same, so that no input makes them crash."""
    problems: list[str] = []
    warnings: list[str] = []
    targets = _dict(data.get("targets"))
    _target_references(data, targets, problems)
    _cluster_problems(_dict(data.get("cluster")), problems)
    components = _dict(data.get("components"))
    enabled = _list(components.get("enabled"))
    for name in _dict(components.get("exclude")):
        if name not in enabled:
            warnings.append(f"$.components.exclude.{name}: not enabled anyway")
    rancher = _dict(components.get("rancher"))
    for kind in ("executor", "scheduler"):
        if rancher.get(f"{kind}_url") and not rancher.get(f"{kind}_sha256"):
            problems.append(f"$.components.rancher.{kind}_sha256: expected the sha256 of "
                            f"{kind}_url, got \"\" (downloads are never unverified)")
    _aws_problems(_dict(data.get("aws")), problems, warnings)
    ip = _dict(data.get("trial")).get("ip_address")
    if isinstance(ip, str):
        with contextlib.suppress(ValueError):
            if not ipaddress.IPv4Address(ip).is_private:
                warnings.append(f"$.trial.ip_address: {ip} is not a private address")
    return problems, warnings


def _known(targets: Mapping[str, Any]) -> str:
    names = sorted(targets)
    listed = ", ".join(names[:12])
    return listed + (f" and {len(names) - 12} more" if len(names) > 12 else "")


def _target_references(data: Mapping[str, Any], targets: Mapping[str, Any], problems: list[str]) -> None:
    """build.targets, trial.target and components.mesos.supported_targets name targets."""
    for i, name in enumerate(_list(_dict(data.get("build")).get("targets"))):
        if isinstance(name, str) and name not in targets:
            problems.append(f"$.build.targets[{i}]: expected a key of $.targets ({_known(targets)}), "
                            f"got {short(name)}")
    trial_target = _dict(data.get("trial")).get("target")
    if isinstance(trial_target, str) and trial_target and trial_target not in targets:
        problems.append(f"$.trial.target: expected a key of $.targets ({_known(targets)}), "
                        f"got {short(trial_target)}")
    mesos = _dict(_dict(data.get("components")).get("mesos"))
    for i, name in enumerate(_list(mesos.get("supported_targets"))):
        if isinstance(name, str) and name not in targets:
            problems.append(f"$.components.mesos.supported_targets[{i}]: expected a key of $.targets, "
                            f"got {short(name)}")


def _cluster_problems(cluster: Mapping[str, Any], problems: list[str]) -> None:
    shapes = _list(cluster.get("shapes"))
    first = cluster.get("first_host", 10)
    for i, text in enumerate(shapes):
        if not isinstance(text, str):
            continue
        try:
            shape = parse_shape(text)
        except ValueError as exc:
            problems.append(f"$.cluster.shapes[{i}]: {exc}")
            continue
        last = first + shape.nodes - 1 if type(first) is int else 0
        if last > 254:
            problems.append(f"$.cluster.shapes[{i}]: shape {text} needs host numbers up to {last}; "
                            f"expected at most 254 (lower cluster.first_host)")
    default = cluster.get("default_shape")
    if isinstance(default, str) and shapes and default not in shapes:
        problems.append(f"$.cluster.default_shape: expected one of $.cluster.shapes, got {short(default)}")
    prefix = cluster.get("network_prefix")
    if isinstance(prefix, str):
        try:
            ipaddress.IPv4Address(f"{prefix}.1")
        except ValueError:
            problems.append(f"$.cluster.network_prefix: expected three octets 0-255, got {short(prefix)}")


def _aws_problems(aws: Mapping[str, Any], problems: list[str], warnings: list[str]) -> None:
    ebs = _dict(aws.get("ebs"))
    if ebs.get("encrypted") and not ebs.get("kms_key_id") and aws.get("share_with_accounts"):
        problems.append("$.aws.share_with_accounts: an AMI encrypted with the AWS-managed default key "
                        "cannot be shared; set $.aws.ebs.kms_key_id to a customer KMS key "
                        "(or disable sharing)")
    cidr = aws.get("admin_cidr")
    if isinstance(cidr, str) and cidr:
        try:
            net = ipaddress.IPv4Network(cidr, strict=True)
        except ValueError as exc:
            problems.append(f"$.aws.admin_cidr: expected a CIDR like 203.0.113.0/24, "
                            f"got {short(cidr)} ({exc})")
        else:
            if net.prefixlen == 0:
                warnings.append("$.aws.admin_cidr: 0.0.0.0/0 opens SSH and the UIs to the whole internet")


def one_line(text: str, limit: int = MAX_PROBLEM_CHARS) -> str:
    """`text` on one line (control characters escaped) of at most `limit` characters."""
    flat = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def config_error(problems: Sequence[str], source: str = "configuration") -> ConfigError:
    """Every problem, each on one bounded line; a flood is cut to its first MAX_SHOWN."""
    lines = list(dict.fromkeys(one_line(p) for p in problems))
    if len(lines) <= MAX_SHOWN:
        return ConfigError(lines, source=source)
    error = ConfigError(lines[:MAX_SHOWN], source=source)
    error.problems = lines
    shown = "\n".join(f"  - {p}" for p in lines[:MAX_SHOWN])
    error.message = (f"{source}: {len(lines)} problems, the first {MAX_SHOWN} of them:\n{shown}\n"
                     f"  ... and {len(lines) - MAX_SHOWN} more")
    error.args = (error.message,)
    return error


def load_config(
    paths: Paths | None = None,
    overlays: Sequence[str | Path] = (),
    sets: Sequence[str] = (),
    profile: str | None = None,
) -> Config:
    """Merge and validate; raise ConfigError listing every problem found.

    The schema runs first: the cross-field checks see only data of the right types. An
    overlay's own "$schema" key is merged and validated like every other key."""
    paths = paths or Paths()
    problems: list[str] = []
    sources = [str(paths.config)]
    data = _read_json(paths.config, problems) or {}
    layers: list[Path] = []
    if profile:
        profile_file = _profile_file(paths, profile, problems)
        if profile_file is not None:
            layers.append(profile_file)
    layers.extend(Path(o) for o in overlays)
    for layer in layers:
        overlay = _read_json(layer, problems)
        if overlay is not None:
            data = deep_merge(data, overlay)
            sources.append(str(layer))
    for expr in sets:
        try:
            keys, value = parse_set(expr, data)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        _apply_set(data, keys, value)
        sources.append(f"--set {expr}")
    if problems:  # unreadable inputs: validating a partial merge would mislead
        raise config_error(problems)
    schema = catalog.load_cached(paths.root).config_schema(
        json.loads(paths.schema.read_text(encoding="utf-8")))
    problems = schema_problems(data, schema)
    if problems:
        raise config_error(problems)
    problems, warnings = semantic_problems(data)
    if problems:
        raise config_error(problems)
    return Config(data=data, sources=tuple(sources), warnings=tuple(one_line(w) for w in warnings))
