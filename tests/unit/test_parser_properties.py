# SPDX-License-Identifier: Apache-2.0
"""Property tests for the parsers: any input gives a value or the one documented error."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from torcx import paths as tpaths
from torcx import profiles, schemas
from torcx.errors import ConfigError, SchemaError
from torcx.store import FORMATS, archive_filename, parse_archive_filename

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=20,
)
KINDS = ["torcx-config-v0", "profile-manifest-v0", "profile-manifest-v1",
         "image-manifest-v0", "remote-manifest-v0", "torcx-remote-contents-v1"]
# Documents shaped like the real ones, with arbitrary values where fields go.
shaped = st.fixed_dictionaries({
    "kind": st.sampled_from(KINDS) | st.text(max_size=5),
    "value": st.dictionaries(
        st.sampled_from(["images", "base_dir", "store_paths", "bin", "units", "base_url",
                         "keys", "name"]),
        json_values | st.lists(st.dictionaries(
            st.sampled_from(["name", "reference", "remote", "versions", "armored_keyring",
                             "version", "format", "hash", "location"]),
            json_values | st.text(max_size=6), max_size=5), max_size=3),
        max_size=4),
})
PARSERS = [schemas.parse_config, schemas.parse_profile, schemas.parse_image_manifest,
           schemas.parse_remote_manifest, schemas.parse_remote_contents,
           schemas.parse_profile_list, schemas.parse_image_list]


@given(st.one_of(json_values, shaped), st.sampled_from(PARSERS))
def test_parsers_raise_only_schema_errors(doc, parser):
    """Whatever the document, a parser returns a value or raises SchemaError naming '$'."""
    try:
        parser(doc, "f.json")
    except SchemaError as e:
        assert e.filename == "f.json"
        assert e.jsonpath.startswith("$")


@given(st.binary(max_size=64) | st.text(max_size=64))
def test_load_json_raises_only_schema_errors(data):
    """Arbitrary bytes or text either decode or give a SchemaError at $."""
    try:
        schemas.load_json(data, "f.json")
    except SchemaError as e:
        assert e.jsonpath == "$"


@given(st.lists(st.tuples(st.from_regex(r"[a-z0-9._-]{1,8}", fullmatch=True),
                          st.from_regex(r"[a-z0-9.-]{0,6}", fullmatch=True)), max_size=5))
def test_profile_dump_parse_round_trip(pairs):
    """Profiles written by dumps() parse back to the same images (when names are valid)."""
    images = [schemas.ImageRef(n, r) for n, r in pairs
              if n not in (".", "..") and r not in (".", "..")]
    text = schemas.dumps(schemas.profile_doc(images))
    assert schemas.parse_profile(json.loads(text), "f").images == images
    assert schemas.dumps(json.loads(text)) == text


@given(st.text(max_size=40))
def test_next_profile_gives_a_valid_name_or_a_config_error(text):
    """next-profile parsing yields None, a valid profile name, or ConfigError."""
    try:
        name = profiles.parse_next_profile(text)
    except ConfigError:
        return
    assert name is None or profiles.check_name(name) == name


@given(st.from_regex(r"[a-zA-Z0-9._-]{1,40}", fullmatch=True),
       st.sampled_from(["", " ", "\n", "\t \n"]), st.booleans())
def test_next_profile_ignores_blanks_and_json_suffix(name, blank, suffix):
    """Surrounding blanks and a .json suffix never change the name read."""
    if name in (".", "..") or name.endswith(".json"):
        return
    text = f"{blank}{name}{'.json' if suffix else ''}{blank}"
    assert profiles.parse_next_profile(text) == name


@given(st.from_regex(r"[a-zA-Z0-9._+-]{1,20}", fullmatch=True),
       st.from_regex(r"[a-zA-Z0-9._+-]{1,20}", fullmatch=True), st.sampled_from(FORMATS))
def test_archive_filename_round_trip(name, ref, fmt):
    """Every valid name, reference and format survives archive_filename/parse."""
    if name in (".", ".."):
        return
    assert parse_archive_filename(archive_filename(name, ref, fmt)) == (name, ref, fmt)


@given(st.from_regex(r"[A-Za-z0-9._~-]{0,20}", fullmatch=True),
       st.sampled_from(['"{}"', "'{}'", "{}"]))
def test_os_release_value_unquoted(value, quoting):
    """VERSION_ID reads the same bare, single- or double-quoted."""
    text = f"NAME=x\nVERSION_ID={quoting.format(value)}\n"
    assert tpaths.parse_os_release(text)["VERSION_ID"] == value
