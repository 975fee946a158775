# SPDX-License-Identifier: Apache-2.0
"""JSON for the boot path, without importing :mod:`json`.

``import json`` imports ``re`` and ``enum`` and compiles its patterns: about
9 ms of each of the boot's two Python starts on a 2-core machine. ``loads``
runs json's own C scanner (``_json``) and, on a malformed document, json
itself, to raise its exact error. ``dumps`` writes what ``json.dumps`` writes
with the same options for the types torcx documents hold (dict, list, tuple,
str, int, float, bool, None); like json with ``check_circular=False``, a
document that contains itself is a RecursionError.
"""

from __future__ import annotations

try:
    from _json import encode_basestring, encode_basestring_ascii, make_scanner
except ImportError:  # an interpreter without json's accelerator: json itself
    make_scanner = None

__all__ = ["dumps", "loads"]

_WHITESPACE = " \t\n\r"
_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}


class _Decoder:
    """The attributes json's C scanner reads from a json.JSONDecoder."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__
    memo: dict = {}


_scan = make_scanner(_Decoder()) if make_scanner is not None else None


def loads(text):
    """``json.loads(text)``: the same value, or the same JSONDecodeError."""
    if _scan is not None and isinstance(text, str):
        start = len(text) - len(text.lstrip(_WHITESPACE))
        try:
            value, end = _scan(text, start)
        except (StopIteration, ValueError):
            pass  # json says what is wrong, below
        else:
            if end == len(text) or not text[end:].strip(_WHITESPACE):
                return value
    import json

    return json.loads(text)


def dumps(value, *, indent: int | None = None, sort_keys: bool = False,
          ensure_ascii: bool = True, separators: tuple[str, str] | None = None) -> str:
    """``json.dumps(value, ...)`` with these options."""
    if make_scanner is None:
        import json

        return json.dumps(value, indent=indent, sort_keys=sort_keys,
                          ensure_ascii=ensure_ascii, separators=separators)
    item_sep, key_sep = separators or ("," if indent is not None else ", ", ": ")
    step = None if indent is None else " " * indent
    out: list[str] = []
    _encode(value, out, encode_basestring_ascii if ensure_ascii else encode_basestring,
            step, 0, item_sep, key_sep, sort_keys)
    return "".join(out)


def _scalar(value, string) -> str | None:
    if isinstance(value, str):
        return string(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if value in (float("inf"), float("-inf")):
            return "Infinity" if value > 0 else "-Infinity"
        return float.__repr__(value)
    return None


def _key(key) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, (int, float)) or key is None:  # bool is an int
        return _scalar(key, None)
    raise TypeError(f"keys must be str, int, float, bool or None, not {key.__class__.__name__}")


def _encode(value, out, string, step, level, item_sep, key_sep, sort_keys) -> None:
    text = _scalar(value, string)
    if text is not None:
        out.append(text)
        return
    if isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        opening, closing = "{", "}"
        items = sorted(value.items()) if sort_keys else value.items()
    elif isinstance(value, (list, tuple)):
        if not value:
            out.append("[]")
            return
        opening, closing = "[", "]"
        items = value
    else:
        raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")
    if step is None:
        inner, separator = "", item_sep
    else:
        inner = "\n" + step * (level + 1)
        separator = item_sep + inner
    out.append(opening + inner)
    first = True
    for item in items:
        if not first:
            out.append(separator)
        first = False
        if closing == "}":
            out.append(string(_key(item[0])) + key_sep)
            item = item[1]
        _encode(item, out, string, step, level + 1, item_sep, key_sep, sort_keys)
    if step is not None:
        out.append("\n" + step * level)
    out.append(closing)
