"""The node spec: loading, checking and defaults.

The structure is defined once, in spec.schema.json (JSON Schema 2020-12). The host validates
with jsonschema; the node has only the standard library, so this module interprets the
subset of keywords that schema uses. Messages follow the host's style: '$.a.b: what is wrong'.
Cross-field rules JSON Schema cannot express live in semantic_problems(), used by both sides.

A spec file is read strictly (files.loads_json): a regular UTF-8 file of at most MAX_SPEC_BYTES,
JSON without NaN, overlong numbers or repeated keys, nested at most MAX_DEPTH levels.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import re
from typing import Any, Dict, List, Tuple

from kiln_node import files

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "spec.schema.json")
ROLES = ("standalone", "master", "agent")
MAX_SPEC_BYTES = 1 << 20  # a spec is a few hundred bytes; a cluster of 255 masters a few KB
MAX_DEPTH = 16  # a spec nests 4 levels (options.agent.attributes)
CONTROL_MESSAGE = "control characters (such as a newline) are not allowed"

DEFAULT_OPTIONS = {
    "marathon": True,
    "haproxy": True,
    "agent": {"attributes": {}, "resources": {}},
    "work_dir": "/var/lib/mesos",
    "containerizers": "docker,mesos",
    "executor_registration_timeout": "5mins",
    "rancher": {"cattle_url": "", "access_key": "", "secret_key": "", "ip_cidr": ""},
}

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "null": lambda v: v is None,
}


class SpecError(Exception):
    """The spec cannot be used; `problems` holds one message per problem."""

    def __init__(self, problems: List[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_schema() -> Dict[str, Any]:
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        return json.load(f)


def load(path: str) -> Tuple[Dict[str, Any], List[str]]:
    """Read and check a spec file: (spec, warnings). Raises SpecError listing every problem, each
    to be shown after the file's name."""
    try:
        text = files.read_text(path, MAX_SPEC_BYTES)
    except files.Unreadable as exc:
        raise SpecError(["{}: pass the node spec, a UTF-8 JSON file of at most {} bytes".format(
            exc, MAX_SPEC_BYTES)]) from None
    if text is None:
        raise SpecError(["no such file: pass the path of the node spec (a JSON file)"])
    try:
        spec = files.loads_json(text, MAX_DEPTH, "a node spec")
    except files.BadJSON as exc:
        raise SpecError([str(exc)]) from None
    problems, warnings = check(spec)
    if problems:
        raise SpecError(problems)
    return spec, warnings


def check(spec: Any) -> Tuple[List[str], List[str]]:
    """(problems, warnings) of a spec: the schema's checks, then the cross-field ones."""
    problems = schema_problems(spec, load_schema())
    more, warnings = semantic_problems(spec)
    # A string with a control character fails its pattern too: one message per problem, the clearer.
    marked = {where for where, _ in _unprintable(spec)}
    problems = [p for p in problems if p.split(": ", 1)[0] not in marked]
    return problems + more, warnings


# -- the JSON Schema subset ---------------------------------------------------------------

def schema_problems(value: Any, schema: Dict[str, Any]) -> List[str]:
    problems: List[str] = []
    _validate(value, schema, schema, "$", problems)
    return problems


def _validate(value: Any, node: Dict[str, Any], root: Dict[str, Any], where: str, out: List[str]) -> None:
    if "$ref" in node:
        node = _resolve(node["$ref"], root)
    if "enum" in node and value not in node["enum"]:
        options = ", ".join(json.dumps(o) for o in node["enum"])
        out.append("{}: expected one of {}, got {}".format(where, options, _short(value)))
        return
    if "type" in node:
        types = node["type"] if isinstance(node["type"], list) else [node["type"]]
        if not any(_TYPES[t](value) for t in types):
            expected = node["type"] if isinstance(node["type"], str) else repr(node["type"])
            out.append("{}: expected {}, got {} {}".format(where, expected, _json_type(value), _short(value)))
            return
    if isinstance(value, str):
        _check_string(value, node, where, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        for key, bad in (("minimum", lambda lim: value < lim), ("maximum", lambda lim: value > lim)):
            if key in node and bad(node[key]):
                out.append("{}: expected {} {}, got {}".format(where, key, node[key], _short(value)))
    elif isinstance(value, list):
        _check_array(value, node, root, where, out)
    elif isinstance(value, dict):
        _check_object(value, node, root, where, out)


def _check_string(value: str, node: Dict[str, Any], where: str, out: List[str]) -> None:
    if "minLength" in node and len(value) < node["minLength"]:
        out.append("{}: expected minLength {}, got {}".format(where, node["minLength"], _short(value)))
    if "pattern" in node and not _pattern(node["pattern"]).search(value):
        what = node.get("description") or "a string matching {}".format(node["pattern"])
        out.append("{}: expected {}, got {}".format(where, what, _short(value)))


def _check_array(value: List[Any], node: Dict[str, Any], root: Dict[str, Any], where: str,
                 out: List[str]) -> None:
    for key, bad in (("minItems", lambda n: len(value) < n), ("maxItems", lambda n: len(value) > n)):
        if key in node and bad(node[key]):
            out.append("{}: expected {} {}, got {}".format(where, key, node[key], _short(value)))
    if node.get("uniqueItems") and len({json.dumps(v, sort_keys=True) for v in value}) != len(value):
        out.append("{}: expected unique items, got {}".format(where, _short(value)))
    if "items" in node:
        for i, item in enumerate(value):
            _validate(item, node["items"], root, "{}[{}]".format(where, i), out)


def _check_object(value: Dict[str, Any], node: Dict[str, Any], root: Dict[str, Any], where: str,
                  out: List[str]) -> None:
    for key in node.get("required", []):
        if key not in value:
            out.append("{}: missing required key '{}'".format(where, key))
    known = node.get("properties", {})
    extra = node.get("additionalProperties", True)
    allowed = ", ".join(sorted(known))
    for key in sorted(value):
        if "propertyNames" in node:
            _validate(key, node["propertyNames"], root, where, out)
        if key in known:
            _validate(value[key], known[key], root, "{}.{}".format(where, key), out)
        elif extra is False:
            hint = " (allowed: {})".format(allowed) if allowed else ""
            out.append("{}.{}: unknown key{}".format(where, key, hint))
        elif isinstance(extra, dict):
            _validate(value[key], extra, root, "{}.{}".format(where, key), out)


@functools.lru_cache(maxsize=None)
def _pattern(pattern: str) -> "re.Pattern[str]":
    """A JSON Schema pattern as a Python regex. JSON Schema patterns are ECMA-262 regexes, where `$`
    (outside a character class) is the end of the string only; in Python's re it also matches
    before a final newline, so "m1\\n" would pass "^m1$". `$` becomes `\\Z`."""
    out: List[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "$":
            char = "\\Z"
        out.append(char)
        i += 1
    return re.compile("".join(out))


def _resolve(ref: str, root: Dict[str, Any]) -> Dict[str, Any]:
    if not ref.startswith("#/"):
        raise ValueError("only local $refs are supported, got {}".format(ref))
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _json_type(value: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array"):
        if _TYPES[name](value):
            return name
    return "object"


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


# -- cross-field rules --------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _ipv4_pattern() -> "re.Pattern[str]":
    return _pattern(load_schema()["$defs"]["ipv4"]["pattern"])


def _is_ipv4(value: Any) -> bool:
    return isinstance(value, str) and bool(_ipv4_pattern().search(value))


def _is_node_id(value: Any) -> bool:
    return _TYPES["integer"](value) and 1 <= value <= 255


def semantic_problems(spec: Any) -> Tuple[List[str], List[str]]:
    """Rules JSON Schema cannot express; tolerant of a spec that failed the schema."""
    problems: List[str] = []
    warnings: List[str] = []
    if not isinstance(spec, dict):
        return problems, warnings
    problems += ["{}: {}".format(where, message) for where, message in _unprintable(spec)]
    role, ip, node_id = spec.get("role"), spec.get("ip"), spec.get("node_id")
    masters = spec.get("masters")
    if not (isinstance(masters, list) and all(isinstance(m, str) for m in masters)):
        masters = None
    # Fields the schema rejects are not checked again here: one message per problem.
    if masters is not None and _is_ipv4(ip):
        _role_rules(role, ip, node_id, masters, problems)
    if masters and len(masters) % 2 == 0:
        n = len(masters)
        warnings.append("$.masters: {} masters is an even number: the quorum of {} tolerates {} failed "
                        "master(s), no more than {} masters would; use an odd number for ZooKeeper and "
                        "the Mesos quorum".format(n, n // 2 + 1, (n - 1) // 2, n - 1))
    options = spec.get("options")
    if isinstance(options, dict):
        _option_rules(options, problems)
    return problems, warnings


def _role_rules(role: Any, ip: str, node_id: Any, masters: List[str], out: List[str]) -> None:
    if role == "master":
        if ip not in masters:
            out.append("$.ip: a master's ip must be one of $.masters {}, got {}".format(
                _short(masters), _short(ip)))
        elif _is_node_id(node_id) and node_id != masters.index(ip) + 1:
            position = masters.index(ip)
            out.append("$.node_id: this master is $.masters[{}] ({}), so its node_id must be {}, got {}"
                       .format(position, ip, position + 1, _short(node_id)))
    elif role == "standalone" and masters != [ip]:
        out.append("$.masters: a standalone node is its own only master: expected [{}], got {}".format(
            _short(ip), _short(masters)))
    elif role == "agent" and ip in masters:
        out.append("$.ip: an agent's ip must not be one of $.masters (a node that is both is role "
                   "'standalone'), got {}".format(_short(ip)))


def _option_rules(options: Dict[str, Any], out: List[str]) -> None:
    containerizers = options.get("containerizers")
    if isinstance(containerizers, str) and containerizers.count(",") == 1:
        first, second = containerizers.split(",")
        if first == second:
            out.append("$.options.containerizers: {} is listed twice".format(first))
    rancher = options.get("rancher")
    if not isinstance(rancher, dict):
        return
    if any(isinstance(v, str) and v for v in rancher.values()):
        for key in ("cattle_url", "access_key", "secret_key"):
            if rancher.get(key) in (None, ""):
                out.append("$.options.rancher.{}: required once any rancher option is set "
                           "(leave all empty to turn Rancher off)".format(key))
    cidr = rancher.get("ip_cidr")
    if isinstance(cidr, str) and cidr:
        try:
            ipaddress.IPv4Interface(cidr)
        except ValueError:
            out.append("$.options.rancher.ip_cidr: expected an IPv4 CIDR such as 192.168.200.1/24, got {}"
                       .format(_short(cidr)))


def _bad_character(text: str) -> str:
    """What is wrong with the characters of `text` for a config file line, or ""."""
    for char in text:
        code = ord(char)
        if code < 32 or 127 <= code < 160 or code in (0x2028, 0x2029):
            return CONTROL_MESSAGE
        if 0xD800 <= code < 0xE000:
            return "not valid Unicode text (a lone surrogate such as \\ud800)"
    return ""


def _unprintable(spec: Any) -> List[Tuple[str, str]]:
    """(where, message) of every string, key or value, with control characters (C0, DEL, C1, the
    Unicode line and paragraph separators) or lone surrogates. Iterative: a deep value cannot
    exhaust the stack."""
    found: List[Tuple[str, str]] = []
    stack: List[Tuple[Any, str]] = [(spec, "$")]
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            message = _bad_character(value)
            if message:
                found.append((where, "{}, got {}".format(message, _short(value))))
        elif isinstance(value, dict):
            for key in sorted(value, key=str, reverse=True):
                stack.append((value[key], "{}.{}".format(where, key)))
                stack.append((key, where))
        elif isinstance(value, list):
            stack.extend((item, "{}[{}]".format(where, i)) for i, item in reversed(list(enumerate(value))))
    return found


# -- defaults -----------------------------------------------------------------------------

def options_of(spec: Dict[str, Any]) -> Dict[str, Any]:
    """The spec's options over DEFAULT_OPTIONS (nested objects merged one level deep)."""
    given = spec.get("options") or {}
    merged: Dict[str, Any] = {}
    for key, default in DEFAULT_OPTIONS.items():
        value = given.get(key, default)
        if isinstance(default, dict):
            value = {**default, **(value or {})}
        merged[key] = value
    return merged


def rancher_configured(options: Dict[str, Any]) -> bool:
    """Whether Rancher is on, given options_of(spec) (not the spec itself)."""
    return bool(options["rancher"].get("cattle_url"))


def quorum(spec: Dict[str, Any]) -> int:
    return len(spec["masters"]) // 2 + 1
