"""kiln/strictjson.py: what it refuses, and that every refusal can be printed.

The config and report loaders' own tests (test_config_inputs.py, test_report_inputs.py) run the
same refusals end to end through `invoke`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kiln.strictjson import Limits, Refused, loads, read_text

LIMITS = Limits(max_bytes=100, max_depth=4, max_number_chars=5, what="a test file", nests=2)


@pytest.mark.parametrize(("text", "says"), [
    ('{"a": NaN}', "NaN is not a JSON number; give a finite number"),
    ("[-Infinity]", "-Infinity is not a JSON number"),
    ("123456", "the number 123456... has 6 characters; give one of at most 5"),
    ("1e400", "the number 1e400 is beyond a float's range"),
    ('{"a": 1, "a": 2}', 'the key "a" appears twice in one object; keep one'),
    ("[[[[[]]]]]", "nested more than 4 levels deep; a test file nests 2"),
    ("[" * 5000 + "]" * 5000, "nested more than 4 levels deep"),
    ('{"a": {"b": ["\\ud800"]}}', "a/b/0 is not text (it holds a lone surrogate such as \\ud800)"),
    ('"\\udfff"', "(top) is not text"),
    ('{"\\ud800x": 1}', '"\\ud800x" is not text'),
])
def test_refused_json_says_what_and_prints(text: str, says: str) -> None:
    with pytest.raises(Refused) as caught:
        loads(text, LIMITS)
    assert says in str(caught.value)
    str(caught.value).encode("utf-8")  # a message that cannot be printed would be a crash instead


def test_accepted_json_is_plain_python_values() -> None:
    assert loads('{"a": [1, 2.5, "x", null, true], "b": {"c": -3}}', LIMITS) == \
        {"a": [1, 2.5, "x", None, True], "b": {"c": -3}}


def test_not_json_at_all_is_the_parser_own_error() -> None:
    with pytest.raises(json.JSONDecodeError):
        loads('{"a": ', LIMITS)


def test_read_text_takes_regular_utf8_files_within_the_limit(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text('{"é": 1}', encoding="utf-8")
    assert read_text(good, LIMITS) == '{"é": 1}'
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 101)
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'"caf\xe9"')
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # opened without blocking, then refused
    for path, says in [(big, "larger than 100 bytes, too large for a test file"),
                       (latin, "not UTF-8 text (byte 0xe9 at offset 4)"),
                       (fifo, "cannot read: a FIFO, not a regular file"),
                       (tmp_path, "cannot read: a directory, not a regular file"),
                       (tmp_path / "missing.json", "file not found")]:
        with pytest.raises(Refused, match=says.replace("(", r"\(").replace(")", r"\)")):
            read_text(path, LIMITS)
