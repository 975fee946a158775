# SPDX-License-Identifier: Apache-2.0
"""The boot path checks names, digests and seal lines by hand (it does not import re):
each check accepts what the pattern it replaced accepted, and nothing with a newline."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from torcx import digestlist, profiles, schemas
from torcx.store import parse_bakery_filename

BAKERY = re.compile(r"^(?P<name>[^:]+?)-(?P<version>v?[0-9].*)\Z")
NAME = re.compile(r"[a-zA-Z0-9._-]{1,512}")
DIGEST_LINE = re.compile(rb"([0-9a-f]{32})  (.+)")
SEAL_LINE = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="(.*)"')


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="ab-v19:.\n", max_size=12))
def test_bakery_names(base):
    m = BAKERY.match(base)
    want = None
    if m and m["name"] not in (".", "..") and "\n" not in m["version"]:
        want = (m["name"], m["version"], "sysext")
    assert parse_bakery_filename(base + "-x86-64.raw", "x86-64") == want


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="aZ09._-:/ \n\u00e9", max_size=8) | st.text(max_size=600))
def test_profile_names(name):
    want = bool(NAME.fullmatch(name)) and name not in (".", "..")
    assert profiles.is_valid_name(name) is want


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=40) | st.builds(
    lambda h, p: h + b"  " + p, st.text(alphabet="0123456789abcdefA", min_size=31,
                                        max_size=33).map(str.encode), st.binary(max_size=6)))
def test_digest_lines(line):
    line = line.replace(b"\n", b"")
    m = DIGEST_LINE.fullmatch(line)
    ok = m is not None and not m.group(2).startswith((b"/", b"./")) \
        and b"/../" not in b"/" + m.group(2) + b"/"
    try:
        got = digestlist.parse(line + b"\n")
    except ValueError:
        got = None
    assert got == ({m.group(2): m.group(1).decode()} if ok else {} if not line else None)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet='AZ_9="\\$x \t', max_size=14))
def test_seal_lines(line):
    m = SEAL_LINE.fullmatch(line.strip())
    want = {m.group(1): re.sub(r"\\(.)", r"\1", m.group(2))} if m else {}
    assert schemas.parse_seal(line) == want


def test_seal_round_trip():
    values = {k: f'a"b$c`d\\e {k}' for k in schemas.SEAL_KEYS}
    assert schemas.parse_seal(schemas.format_seal(values)) == values
