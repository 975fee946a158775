# SPDX-License-Identifier: Apache-2.0
"""torcx.jsontext reads and writes exactly what json does, without importing it."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torcx import jsontext

SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text())
KEYS = st.text() | st.integers(-1000, 1000)
DOCS = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5)
                    | st.dictionaries(st.text(), inner, max_size=5)
                    | st.tuples(inner, inner), max_leaves=40)
# The option sets torcx writes with (schemas.dumps, the unit plan, the JSON report).
OPTIONS = [dict(sort_keys=True, indent=2, ensure_ascii=False),
           dict(separators=(",", ":"), ensure_ascii=True),
           dict(indent=1, sort_keys=True), dict(indent=0), dict()]


@settings(max_examples=300, deadline=None)
@given(DOCS)
def test_dumps_writes_what_json_writes(doc):
    for options in OPTIONS:
        assert jsontext.dumps(doc, **options) == json.dumps(doc, **options)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(KEYS | st.floats() | st.booleans() | st.none(), SCALARS, max_size=6))
def test_non_string_keys_are_written_like_json(doc):
    assert jsontext.dumps(doc) == json.dumps(doc)


@settings(max_examples=300, deadline=None)
@given(DOCS, st.sampled_from(["", " ", "\n\t", "\r\n  "]))
def test_loads_reads_what_json_reads(doc, space):
    text = space + json.dumps(doc, indent=2) + space
    got, want = jsontext.loads(text), json.loads(text)
    assert repr(got) == repr(want) or _same(got, want)


def _same(a, b) -> bool:  # NaN != NaN: compare structure
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


@pytest.mark.parametrize("text", [
    "", " ", "{", '{"a": 1,}', "[1, 2] 3", "[1] x", "\ufeff{}", '{"a": "\x01"}', "01",
    '"abc', "nul", "[1,,2]", '{"a" 1}', "1e999999x", "-", "[" * 10 + "]" * 9,
])
def test_loads_fails_with_the_error_json_gives(text):
    with pytest.raises(json.JSONDecodeError) as want:
        json.loads(text)
    with pytest.raises(json.JSONDecodeError) as got:
        jsontext.loads(text)
    assert (got.value.msg, got.value.pos) == (want.value.msg, want.value.pos)


def test_bytes_are_read_like_json():
    assert jsontext.loads(b'{"a": [1, 2.5]}') == {"a": [1, 2.5]}


def test_what_json_cannot_write_fails_the_same_way():
    for bad in ({1, 2}, {"a": object()}, {(1, 2): 3}):
        with pytest.raises(TypeError):
            json.dumps(bad)
        with pytest.raises(TypeError):
            jsontext.dumps(bad)


def test_it_imports_neither_json_nor_re():
    root = os.path.dirname(os.path.dirname(os.path.abspath(jsontext.__file__)))
    code = (f"import sys; sys.path.insert(0, {root!r}); import torcx.jsontext as j; "
            "j.dumps(j.loads('{\"a\": [1, 2.5, null, \"\\u00e9\"]}'), indent=2, sort_keys=True); "
            "print(sorted(m for m in ('json', 're', 'enum') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
