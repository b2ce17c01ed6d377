"""Load config.json, apply overlays and --set values, validate, report every problem at once.

Precedence (later wins): config.json < --profile NAME (profiles/NAME.json) < each --config FILE
in the order given < each --set a.b.c=value in the order given. Dicts merge key by key;
lists and scalars replace.
"""

from __future__ import annotations

import copy
import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln.config import catalog
from kiln.config.schema import json_type, schema_problems, short
from kiln.config.shapes import parse_shape
from kiln.errors import ConfigError
from kiln.paths import Paths


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


def _read_json(path: Path, problems: list[str]) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.append(f"{path}: file not found")
        return None
    except OSError as exc:
        problems.append(f"{path}: cannot read ({exc.strerror})")
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        problems.append(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path}: expected a JSON object at the top, got {json_type(data)}")
        return None
    return data


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
    """'a.b.c=value' -> (['a','b','c'], value). Values are JSON when they parse, else strings."""
    if "=" not in expr:
        raise ValueError(f"--set '{expr}': expected KEY.PATH=VALUE")
    key, raw = expr.split("=", 1)
    if not key or any(not p for p in key.split(".")):
        raise ValueError(f"--set '{expr}': empty key segment in '{key}'")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return _split_key(data, key), value


def _apply_set(data: dict[str, Any], keys: list[str], value: Any) -> None:
    node = data
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[keys[-1]] = value


def semantic_problems(data: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Cross-field checks JSON Schema cannot express. Returns (problems, warnings)."""
    problems: list[str] = []
    warnings: list[str] = []
    targets = data.get("targets", {})
    build = data.get("build", {})
    for i, name in enumerate(build.get("targets", [])):
        if name not in targets:
            problems.append(f"$.build.targets[{i}]: expected a key of $.targets "
                            f"({', '.join(sorted(targets))}), got {short(name)}")
    trial_target = data.get("trial", {}).get("target")
    if isinstance(trial_target, str) and trial_target and trial_target not in targets:
        problems.append(f"$.trial.target: expected a key of $.targets ({', '.join(sorted(targets))}), "
                        f"got {short(trial_target)}")
    cluster = data.get("cluster", {})
    shapes = cluster.get("shapes", [])
    for i, text in enumerate(shapes):
        try:
            shape = parse_shape(text)
        except ValueError as exc:
            problems.append(f"$.cluster.shapes[{i}]: {exc}")
            continue
        last = int(cluster.get("first_host", 10)) + shape.nodes - 1
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
    components = data.get("components", {})
    enabled = components.get("enabled", [])
    for name in components.get("exclude", {}):
        if name not in enabled:
            warnings.append(f"$.components.exclude.{name}: not enabled anyway")
    mesos = components.get("mesos", {})
    for i, name in enumerate(mesos.get("supported_targets", [])):
        if name not in targets:
            problems.append(f"$.components.mesos.supported_targets[{i}]: expected a key of $.targets, "
                            f"got {short(name)}")
    rancher = components.get("rancher", {})
    for kind in ("executor", "scheduler"):
        if rancher.get(f"{kind}_url") and not rancher.get(f"{kind}_sha256"):
            problems.append(f"$.components.rancher.{kind}_sha256: expected the sha256 of "
                            f"{kind}_url, got \"\" (downloads are never unverified)")
    aws = data.get("aws", {})
    ebs = aws.get("ebs", {})
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
    for section in ("trial",):
        ip = data.get(section, {}).get("ip_address")
        if isinstance(ip, str):
            try:
                addr = ipaddress.IPv4Address(ip)
            except ValueError:
                continue
            if not addr.is_private:
                warnings.append(f"$.{section}.ip_address: {ip} is not a private address")
    return problems, warnings


def load_config(
    paths: Paths | None = None,
    overlays: Sequence[str | Path] = (),
    sets: Sequence[str] = (),
    profile: str | None = None,
) -> Config:
    """Merge and validate; raise ConfigError listing every problem found."""
    paths = paths or Paths()
    problems: list[str] = []
    sources = [str(paths.config)]
    data = _read_json(paths.config, problems) or {}
    layers: list[Path] = []
    if profile:
        profile_file = paths.profiles / f"{profile}.json"
        if not profile_file.exists():
            known = sorted(p.stem for p in paths.profiles.glob("*.json"))
            problems.append(f"--profile {profile}: no such profile (known: {', '.join(known) or 'none'})")
        else:
            layers.append(profile_file)
    layers.extend(Path(o) for o in overlays)
    for layer in layers:
        overlay = _read_json(layer, problems)
        if overlay is not None:
            overlay.pop("$schema", None)
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
        raise ConfigError(problems)
    schema = catalog.load_cached(paths.root).config_schema(
        json.loads(paths.schema.read_text(encoding="utf-8")))
    problems = schema_problems(data, schema)
    semantic, warnings = semantic_problems(data)
    problems.extend(p for p in semantic if p not in problems)
    if problems:
        raise ConfigError(problems)
    return Config(data=data, sources=tuple(sources), warnings=tuple(warnings))
