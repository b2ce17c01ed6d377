"""JSON Schema validation with messages a user can act on: '$.a.b: expected X, got Y'."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_$][A-Za-z0-9_.$-]{0,63}")


def key_part(key: Any) -> str:
    """`.name` for a key as typed in config.json; `["..."]` (escaped, cut) for any other key, so
    that a key holding a newline or a megabyte never breaks a message into lines."""
    if isinstance(key, int):
        return f"[{key}]"
    text = str(key)
    return f".{text}" if _PLAIN_KEY.fullmatch(text) else f"[{short(text)}]"


def _where(path: Iterable[Any]) -> str:
    return "$" + "".join(key_part(p) for p in path)


def short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def describe(error: ValidationError) -> list[str]:
    """Turn one jsonschema error into messages of the form '$.a.b: expected X, got Y'."""
    where = _where(error.absolute_path)
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    v, inst = error.validator, error.instance
    if v == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(inst) - set(allowed)) if isinstance(inst, Mapping) else []
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return [f"{where}{key_part(k)}: unknown key{hint}" for k in extra] or [f"{where}: {error.message}"]
    if v == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return [f"{where}: missing required key '{missing}'"]
    if v == "type":
        return [f"{where}: expected {error.validator_value}, got {json_type(inst)} {short(inst)}"]
    if v == "enum":
        opts = ", ".join(json.dumps(o) for o in error.validator_value)
        return [f"{where}: expected one of {opts}, got {short(inst)}"]
    if v == "format":
        return [f"{where}: expected an {error.validator_value} address, got {short(inst)}"]
    if v == "pattern":
        what = schema.get("description") or f"a string matching {error.validator_value}"
        return [f"{where}: expected {what}, got {short(inst)}"]
    if v in ("minimum", "maximum", "minItems", "maxItems", "minLength", "minProperties"):
        return [f"{where}: expected {v} {error.validator_value}, got {short(inst)}"]
    if v == "uniqueItems":
        return [f"{where}: expected unique items, got {short(inst)}"]
    if v == "propertyNames":
        return [f"{where}: invalid key {short(inst)}: {error.message}"]
    if v == "not" and isinstance(inst, Mapping) and "image" in inst and "base" in inst:
        return [f"{where}: expected either 'image' or 'base', got both"]
    return [f"{where}: {error.message}"]


def _leaf_errors(error: ValidationError) -> list[ValidationError]:
    if error.context:
        out: list[ValidationError] = []
        for sub in error.context:
            out.extend(_leaf_errors(sub))
        return out
    return [error]


def schema_problems(data: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    validator = Draft202012Validator(schema, format_checker=FormatChecker())
    problems: list[str] = []
    for err in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        for leaf in _leaf_errors(err):
            problems.extend(describe(leaf))
    return problems
