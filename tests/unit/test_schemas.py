# SPDX-License-Identifier: Apache-2.0
"""Every JSON kind: valid documents parse, every fault names the file and JSON path."""

from __future__ import annotations

import copy
import json
import os
import stat

import pytest

from torcx import schemas
from torcx.errors import SchemaError

SHA = "sha512-" + "ab" * 64

VALID = {
    "config": {"kind": "torcx-config-v0",
               "value": {"base_dir": "/b", "run_dir": "/r", "conf_dir": "/c",
                         "store_paths": ["/s1", "/s2"]}},
    "profile": {"kind": "profile-manifest-v0",
                "value": {"images": [{"name": "docker", "reference": "20.10"},
                                     {"name": "off", "reference": ""}]}},
    "profile_v1": {"kind": "profile-manifest-v1",
                   "value": {"images": [{"name": "docker", "reference": "20.10",
                                         "remote": "flatcar"}]}},
    "image_manifest": {"kind": "image-manifest-v0",
                       "value": {"bin": ["/bin/docker"], "units": ["/lib/systemd/system"],
                                 "network": [], "sysusers": ["/s.conf"],
                                 "tmpfiles": ["/t.conf"], "udev_rules": ["/u.rules"]}},
    "remote_manifest": {"kind": "remote-manifest-v0",
                        "value": {"base_url": "https://example.com/{{.VERSION_ID}}/",
                                  "keys": [{"armored_keyring": "keys/a.asc"}]}},
    "remote_contents": {"kind": "torcx-remote-contents-v1",
                        "value": {"images": [{"name": "docker", "defaultVersion": "20.10",
                                              "versions": [{"version": "20.10",
                                                            "format": "tgz", "hash": SHA,
                                                            "location": "docker.torcx.tgz"}]}]}},
    "profile_list": {"kind": "torcx-profile-list-v0",
                     "value": {"lower_profile_names": ["vendor"], "user_profile_name": None,
                               "current_profile_path": "/run/torcx/profile.json",
                               "next_profile_name": "user", "profiles": ["user", "vendor"]}},
    "image_list": {"kind": "torcx-image-list-v0",
                   "value": [{"name": "docker", "reference": "20.10",
                              "filepath": "/usr/share/torcx/store/docker:20.10.torcx.tgz"}]},
}

PARSERS = {
    "config": schemas.parse_config,
    "profile": schemas.parse_profile,
    "profile_v1": schemas.parse_profile,
    "image_manifest": schemas.parse_image_manifest,
    "remote_manifest": schemas.parse_remote_manifest,
    "remote_contents": schemas.parse_remote_contents,
    "profile_list": schemas.parse_profile_list,
    "image_list": schemas.parse_image_list,
}


def mutate(kind, edit):
    doc = copy.deepcopy(VALID[kind])
    edit(doc)
    return doc


def setitem(path, value):
    def edit(doc):
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


def delitem(path):
    def edit(doc):
        target = doc
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return edit


V = "value"
IMG0 = (V, "images", 0)
VER0 = (V, "images", 0, "versions", 0)

# (kind, edit, expected JSON path, expected problem fragment)
FAULTS = [
    # envelope, shared by every kind
    *[(k, lambda d: d.clear() or d.update({"value": {}}), "$.kind", "missing required field")
      for k in PARSERS],
    *[(k, setitem(("kind",), "nope-v9"), "$.kind", "unknown kind 'nope-v9'") for k in PARSERS],
    *[(k, setitem(("kind",), 7), "$.kind", "expected string, got number") for k in PARSERS],
    *[(k, delitem((V,)), "$.value", "missing required field") for k in PARSERS],
    ("config", setitem((V,), []), "$.value", "expected object, got array"),
    ("profile", setitem((V,), "x"), "$.value", "expected object, got string"),
    ("image_list", setitem((V,), {}), "$.value", "expected array, got object"),
    # torcx-config-v0
    ("config", setitem((V, "base_dir"), 1), "$.value.base_dir", "expected string, got number"),
    ("config", setitem((V, "run_dir"), True), "$.value.run_dir", "expected string, got boolean"),
    ("config", setitem((V, "conf_dir"), []), "$.value.conf_dir", "expected string, got array"),
    ("config", setitem((V, "store_paths"), "/s"), "$.value.store_paths", "expected array"),
    ("config", setitem((V, "store_paths"), ["/a", 2]), "$.value.store_paths[1]",
     "expected string"),
    # profile-manifest-v0/v1
    ("profile", delitem((V, "images")), "$.value.images", "missing required field"),
    ("profile", setitem((V, "images"), {}), "$.value.images", "expected array"),
    ("profile", setitem((V, "images", 1), "docker"), "$.value.images[1]", "expected object"),
    ("profile", delitem(IMG0 + ("name",)), "$.value.images[0].name", "missing required"),
    ("profile", setitem(IMG0 + ("name",), 5), "$.value.images[0].name", "expected string"),
    ("profile", setitem(IMG0 + ("name",), ""), "$.value.images[0].name", "must not be empty"),
    ("profile", setitem(IMG0 + ("name",), "../x"), "$.value.images[0].name",
     "invalid image name"),
    ("profile", setitem(IMG0 + ("name",), "a:b"), "$.value.images[0].name",
     "invalid image name"),
    ("profile", setitem(IMG0 + ("name",), ".."), "$.value.images[0].name",
     "invalid image name"),
    ("profile", setitem(IMG0 + ("name",), "a\nb"), "$.value.images[0].name",
     "invalid image name"),
    ("profile", setitem(IMG0 + ("name",), "\ud800"), "$.value.images[0].name",
     "not valid Unicode text"),
    ("profile", delitem(IMG0 + ("reference",)), "$.value.images[0].reference",
     "missing required"),
    ("profile", setitem(IMG0 + ("reference",), "1\n"), "$.value.images[0].reference",
     "invalid reference"),
    ("profile", setitem(IMG0 + ("reference",), "\udcff"), "$.value.images[0].reference",
     "not valid Unicode text"),
    ("profile", setitem((V, "images", 1, "reference"), None), "$.value.images[1].reference",
     "expected string, got null"),
    ("profile", setitem(IMG0 + ("reference",), "a/b"), "$.value.images[0].reference",
     "invalid reference"),
    ("profile_v1", setitem(IMG0 + ("remote",), 3), "$.value.images[0].remote",
     "expected string"),
    # image-manifest-v0
    *[("image_manifest", setitem((V, key), "/x"), f"$.value.{key}", "expected array")
      for key in schemas.ASSET_KEYS],
    *[("image_manifest", setitem((V, key), [1]), f"$.value.{key}[0]", "expected string")
      for key in schemas.ASSET_KEYS],
    ("image_manifest", setitem((V, "bin"), ["/ok", "bin/docker"]), "$.value.bin[1]",
     "expected an absolute path"),
    ("image_manifest", setitem((V, "units"), ["/lib/../../etc"]), "$.value.units[0]",
     "must not contain '..'"),
    ("image_manifest", setitem((V, "bin"), ["/bin/\ud800"]), "$.value.bin[0]",
     "not valid Unicode text"),
    # remote-manifest-v0
    ("remote_manifest", delitem((V, "base_url")), "$.value.base_url", "missing required"),
    ("remote_manifest", setitem((V, "base_url"), 1), "$.value.base_url", "expected string"),
    ("remote_manifest", setitem((V, "base_url"), "ftp://x/"), "$.value.base_url",
     "unsupported URL"),
    ("remote_manifest", delitem((V, "keys")), "$.value.keys", "missing required"),
    ("remote_manifest", setitem((V, "keys"), {}), "$.value.keys", "expected array"),
    ("remote_manifest", setitem((V, "keys", 0), "k.asc"), "$.value.keys[0]",
     "expected object"),
    ("remote_manifest", delitem((V, "keys", 0, "armored_keyring")),
     "$.value.keys[0].armored_keyring", "missing required"),
    ("remote_manifest", setitem((V, "keys", 0, "armored_keyring"), 1),
     "$.value.keys[0].armored_keyring", "expected string"),
    ("remote_manifest", setitem((V, "keys", 0, "armored_keyring"), "/etc/k.asc"),
     "$.value.keys[0].armored_keyring", "relative"),
    ("remote_manifest", setitem((V, "keys", 0, "armored_keyring"), "../k.asc"),
     "$.value.keys[0].armored_keyring", "relative"),
    # torcx-remote-contents-v1
    ("remote_contents", delitem((V, "images")), "$.value.images", "missing required"),
    ("remote_contents", setitem((V, "images"), "x"), "$.value.images", "expected array"),
    ("remote_contents", setitem((V, "images", 0), []), "$.value.images[0]", "expected object"),
    ("remote_contents", delitem(IMG0 + ("name",)), "$.value.images[0].name", "missing"),
    ("remote_contents", setitem(IMG0 + ("name",), "a/b"), "$.value.images[0].name",
     "invalid image name"),
    ("remote_contents", setitem(IMG0 + ("defaultVersion",), 1),
     "$.value.images[0].defaultVersion", "expected string"),
    ("remote_contents", delitem(IMG0 + ("versions",)), "$.value.images[0].versions",
     "missing required"),
    ("remote_contents", setitem(IMG0 + ("versions",), {}), "$.value.images[0].versions",
     "expected array"),
    ("remote_contents", setitem(VER0, "1.0"), "$.value.images[0].versions[0]",
     "expected object"),
    ("remote_contents", delitem(VER0 + ("version",)), "$.value.images[0].versions[0].version",
     "missing required"),
    ("remote_contents", setitem(VER0 + ("version",), ""),
     "$.value.images[0].versions[0].version", "must not be empty"),
    ("remote_contents", setitem(VER0 + ("version",), "../1"),
     "$.value.images[0].versions[0].version", "invalid reference"),
    ("remote_contents", delitem(VER0 + ("format",)), "$.value.images[0].versions[0].format",
     "missing required"),
    ("remote_contents", setitem(VER0 + ("format",), "zip"),
     "$.value.images[0].versions[0].format", "unknown format 'zip'"),
    ("remote_contents", delitem(VER0 + ("hash",)), "$.value.images[0].versions[0].hash",
     "missing required"),
    ("remote_contents", setitem(VER0 + ("hash",), "sha256-" + "ab" * 32),
     "$.value.images[0].versions[0].hash", "sha512-"),
    ("remote_contents", setitem(VER0 + ("hash",), "sha512-xyz"),
     "$.value.images[0].versions[0].hash", "sha512-"),
    ("remote_contents", delitem(VER0 + ("location",)),
     "$.value.images[0].versions[0].location", "missing required"),
    ("remote_contents", setitem(VER0 + ("location",), ""),
     "$.value.images[0].versions[0].location", "must not be empty"),
    ("remote_contents", setitem(VER0 + ("location",), 4),
     "$.value.images[0].versions[0].location", "expected string"),
    # torcx-profile-list-v0
    ("profile_list", delitem((V, "lower_profile_names")), "$.value.lower_profile_names",
     "missing required"),
    ("profile_list", setitem((V, "lower_profile_names"), [1]), "$.value.lower_profile_names[0]",
     "expected string"),
    *[("profile_list", delitem((V, key)), f"$.value.{key}", "missing required")
      for key in ("user_profile_name", "current_profile_path", "next_profile_name")],
    ("profile_list", setitem((V, "next_profile_name"), 1), "$.value.next_profile_name",
     "expected string"),
    ("profile_list", delitem((V, "profiles")), "$.value.profiles", "missing required"),
    # torcx-image-list-v0
    ("image_list", setitem((V, 0), "x"), "$.value[0]", "expected object"),
    *[("image_list", delitem((V, 0, key)), f"$.value[0].{key}", "missing required")
      for key in ("name", "reference", "filepath")],
    ("image_list", setitem((V, 0, "filepath"), None), "$.value[0].filepath",
     "expected string, got null"),
]


@pytest.mark.parametrize("kind", sorted(VALID))
def test_valid_documents_parse(kind):
    """Each kind's reference document parses without error."""
    PARSERS[kind](VALID[kind], "f.json")


@pytest.mark.parametrize("kind, edit, jsonpath, problem", FAULTS,
                         ids=[f"{f[0]}:{f[2]}:{f[3][:20]}" for f in FAULTS])
def test_fault_names_file_and_json_path(kind, edit, jsonpath, problem):
    """Each fault raises SchemaError with the file, the JSON path and the problem."""
    doc = mutate(kind, edit)
    with pytest.raises(SchemaError) as e:
        PARSERS[kind](doc, "/etc/torcx/x.json")
    assert e.value.filename == "/etc/torcx/x.json"
    assert e.value.jsonpath == jsonpath
    assert problem in e.value.problem
    assert str(e.value).startswith(f"/etc/torcx/x.json: {jsonpath}: ")


@pytest.mark.parametrize("kind", sorted(PARSERS))
def test_document_that_is_not_an_object(kind):
    """A top-level array is a fault at $."""
    with pytest.raises(SchemaError) as e:
        PARSERS[kind]([], "f.json")
    assert (e.value.jsonpath, e.value.problem) == ("$", "expected object, got array")


def test_example_from_the_spec():
    """The SPEC's example message: $.value.images[2].reference: expected string."""
    doc = {"kind": "profile-manifest-v0", "value": {"images": [
        {"name": "a", "reference": "1"}, {"name": "b", "reference": "2"},
        {"name": "c", "reference": 3}]}}
    with pytest.raises(SchemaError) as e:
        schemas.parse_profile(doc, "p.json")
    assert str(e.value) == "p.json: $.value.images[2].reference: expected string, got number"


@pytest.mark.parametrize("text, fragment", [
    ("", "invalid JSON: Expecting value at line 1 column 1"),
    ('{"kind": ', "invalid JSON"),
    ("{'kind': 1}", "invalid JSON"),
    ('{"a": 1} x', "Extra data"),
    (b"\xff\xfe", "not UTF-8"),
    ("[" * 100000, "invalid JSON"),
])
def test_invalid_json_is_a_fault_at_the_root(text, fragment):
    """Undecodable input is a SchemaError at $ with line and column when known."""
    with pytest.raises(SchemaError) as e:
        schemas.load_json(text, "bad.json")
    assert e.value.jsonpath == "$"
    assert fragment in e.value.problem


def test_read_profile_names_the_file(tmp_path):
    """read_profile reports faults against the path it read."""
    path = tmp_path / "p.json"
    path.write_text('{"kind": "profile-manifest-v0", "value": {"images": [{"name": 1}]}}')
    with pytest.raises(SchemaError) as e:
        schemas.read_profile(path)
    assert e.value.filename == str(path)
    assert e.value.jsonpath == "$.value.images[0].name"


def test_profile_values():
    """Parsed profiles keep order, empty references and (v1) remotes."""
    p = schemas.parse_profile(VALID["profile"], "f")
    assert p.kind == "profile-manifest-v0"
    assert [(i.name, i.reference, i.remote) for i in p.images] == [
        ("docker", "20.10", None), ("off", "", None)]
    v1 = schemas.parse_profile(VALID["profile_v1"], "f")
    assert v1.images[0].remote == "flatcar"


def test_v0_profile_ignores_a_remote_field():
    """profile-manifest-v0 has no remote; an extra field is ignored, not kept."""
    doc = mutate("profile", setitem(IMG0 + ("remote",), "r"))
    assert schemas.parse_profile(doc, "f").images[0].remote is None


def test_unknown_fields_are_ignored():
    """Forward compatibility: extra fields anywhere do not fail parsing."""
    doc = mutate("image_manifest", setitem((V, "future"), {"x": 1}))
    doc["extra"] = True
    m = schemas.parse_image_manifest(doc, "f")
    assert m.bin == ["/bin/docker"] and m.network == []


def test_image_manifest_missing_keys_are_empty():
    """Every asset list is optional and defaults to empty."""
    m = schemas.parse_image_manifest({"kind": "image-manifest-v0", "value": {}}, "f")
    assert all(paths == [] for _, paths in m.items())


def test_config_values_and_empty_strings():
    """Empty strings in the config mean 'not set', like upstream."""
    c = schemas.parse_config({"kind": "torcx-config-v0", "value": {"base_dir": ""}}, "f")
    assert c.base_dir is None and c.store_paths == []
    full = schemas.parse_config(VALID["config"], "f")
    assert (full.base_dir, full.run_dir, full.conf_dir, full.store_paths) == (
        "/b", "/r", "/c", ["/s1", "/s2"])


def test_remote_values():
    """Remote manifests and contents expose their fields, hashes lowercased."""
    m = schemas.parse_remote_manifest(VALID["remote_manifest"], "f")
    assert m.base_url.startswith("https://") and m.keyrings == ["keys/a.asc"]
    doc = mutate("remote_contents", setitem(VER0 + ("hash",), SHA.upper().replace("SHA", "sha")))
    c = schemas.parse_remote_contents(doc, "f")
    version = c.find("docker", "20.10")
    assert version.hash == SHA and version.sha512 == "ab" * 64
    assert c.images[0].default_version == "20.10"
    assert c.find("docker", "1") is None


def test_dumps_is_sorted_indented_with_trailing_newline():
    """Output is deterministic: sorted keys, two-space indent, one trailing newline."""
    text = schemas.dumps({"value": {"b": 1, "a": [1]}, "kind": "k"})
    assert text == '{\n  "kind": "k",\n  "value": {\n    "a": [\n      1\n    ],\n' \
                   '    "b": 1\n  }\n}\n'
    assert schemas.dumps(json.loads(text)) == text


def test_profile_doc_round_trip():
    """profile_doc writes v0 unless an image has a remote; both parse back."""
    images = [schemas.ImageRef("a", "1"), schemas.ImageRef("b", "")]
    doc = schemas.profile_doc(images)
    assert doc["kind"] == "profile-manifest-v0"
    assert schemas.parse_profile(doc, "f").images == images
    remote = [schemas.ImageRef("a", "1", "r")]
    doc1 = schemas.profile_doc(remote)
    assert doc1["kind"] == "profile-manifest-v1"
    assert schemas.parse_profile(doc1, "f").images == remote


def test_write_atomic_keeps_permissions(tmp_path):
    """Replacing a file keeps its mode; no temporary file is left behind."""
    path = tmp_path / "p.json"
    path.write_text("old")
    os.chmod(path, 0o600)
    schemas.write_json(path, {"kind": "k"})
    assert path.read_text() == '{\n  "kind": "k"\n}\n'
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["p.json"]


def test_write_atomic_new_file_mode(tmp_path):
    """A new file gets the requested mode (default 0644)."""
    schemas.write_atomic(tmp_path / "a", "x")
    schemas.write_atomic(tmp_path / "b", b"y", mode=0o444)
    assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "b").st_mode) == 0o444


def test_write_atomic_failure_leaves_old_file(tmp_path):
    """When the rename cannot happen the old content stays and the temp file goes."""
    target = tmp_path / "dir-in-the-way"
    target.mkdir()
    (target / "keep").write_text("x")
    with pytest.raises(OSError):
        schemas.write_atomic(target, "new")
    assert (target / "keep").read_text() == "x"
    assert sorted(os.listdir(tmp_path)) == ["dir-in-the-way"]


def test_seal_round_trip_with_shell_characters():
    """Seal values survive quoting of ", $, ` and backslashes; order is kept."""
    values = {k: f"/run/torcx/{k}" for k in schemas.SEAL_KEYS}
    values["TORCX_LOWER_PROFILES"] = "vendor:oem"
    values["TORCX_FAILED_IMAGES"] = 'a"b $c `d` \\e'
    text = schemas.format_seal(values)
    assert text.splitlines()[0] == 'TORCX_LOWER_PROFILES="vendor:oem"'
    assert schemas.parse_seal(text) == values


def test_seal_requires_the_five_keys():
    """A seal without one of the five upstream keys is refused."""
    values = {k: "x" for k in schemas.SEAL_KEYS[1:]}
    with pytest.raises(ValueError, match="TORCX_LOWER_PROFILES"):
        schemas.format_seal(values)
