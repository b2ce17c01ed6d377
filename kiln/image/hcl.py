"""Literal values for HCL2 templates.

JSON literals are valid HCL2 expressions for strings, numbers, booleans, lists and
objects, except that HCL interpolates `${` and `%{` inside strings: those are escaped.
"""

from __future__ import annotations

import json
from typing import Any


def _escape(text: str) -> str:
    return text.replace("${", "$${").replace("%{", "%%{")


def hcl(value: Any) -> str:
    if isinstance(value, str):
        return _escape(json.dumps(value))
    if isinstance(value, bool) or value is None or isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(hcl(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{json.dumps(str(k))} = {hcl(v)}" for k, v in sorted(value.items()))
        return "{ " + inner + " }" if inner else "{}"
    raise TypeError(f"no HCL literal for {type(value).__name__}")
