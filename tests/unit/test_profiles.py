# SPDX-License-Identifier: Apache-2.0
"""Profiles: merge rules (examples and properties), next-profile, listing, selection."""

from __future__ import annotations

import io
import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torcx import log as tlog
from torcx import paths as tpaths
from torcx import profiles
from torcx.errors import ConfigError, NotFound
from torcx.schemas import ImageRef


def refs(*pairs):
    return [ImageRef(n, r) for n, r in pairs]


def pairs(images):
    return [(i.name, i.reference) for i in images]


# -- merge: examples ----------------------------------------------------------------

def test_upper_entry_replaces_lower_and_moves_after_survivors():
    """An entry for a name removes the earlier one; survivors keep their order first."""
    vendor = refs(("docker", "19"), ("rkt", "1"), ("kubelet", "1.9"))
    user = refs(("docker", "20"), ("extra", "1"))
    assert pairs(profiles.merge([vendor, user])) == [
        ("rkt", "1"), ("kubelet", "1.9"), ("docker", "20"), ("extra", "1")]


def test_empty_reference_switches_an_image_off():
    """An entry with an empty reference removes without replacing."""
    vendor = refs(("docker", "19"), ("rkt", "1"))
    user = refs(("docker", ""))
    assert pairs(profiles.merge([vendor, user])) == [("rkt", "1")]


def test_three_levels_vendor_oem_user():
    """Each profile merges over the result so far, vendor then oem then user."""
    vendor = refs(("a", "1"), ("b", "1"), ("c", "1"))
    oem = refs(("b", "2"), ("c", ""))
    user = refs(("a", "3"), ("c", "3"))
    assert pairs(profiles.merge([vendor, oem, user])) == [
        ("b", "2"), ("a", "3"), ("c", "3")]


def test_duplicate_inside_one_profile_last_wins():
    """Within one profile a later entry of the same name removes the earlier one."""
    assert pairs(profiles.merge([refs(("a", "1"), ("b", "1"), ("a", "2"))])) == [
        ("b", "1"), ("a", "2")]
    assert pairs(profiles.merge([refs(("a", "1"), ("a", ""))])) == []


def test_remote_is_carried_through_the_merge():
    """The winning entry keeps its remote."""
    merged = profiles.merge([[ImageRef("a", "1")], [ImageRef("a", "2", "r")]])
    assert merged == [ImageRef("a", "2", "r")]


# -- merge: properties ----------------------------------------------------------------

names = st.sampled_from(["a", "b", "c", "d", "e"])
entries = st.builds(ImageRef, names, st.sampled_from(["", "1", "2", "3"]))
profile_lists = st.lists(st.lists(entries, max_size=6), max_size=4)


def spec_merge(profile_list):
    """Declarative form of SPEC section 5: the last entry of each name, if not empty,
    in the order those last entries appear in the concatenated profiles."""
    flat = [im for images in profile_list for im in images]
    last = {im.name: i for i, im in enumerate(flat)}
    return [im for i, im in enumerate(flat) if last[im.name] == i and im.reference]


@given(profile_lists)
def test_merge_matches_the_declarative_rule(profile_list):
    """merge() equals 'last entry per name, non-empty, in concatenation order'."""
    assert profiles.merge(profile_list) == spec_merge(profile_list)


@given(profile_lists)
def test_merge_result_has_unique_names_and_no_empty_references(profile_list):
    """A merged profile never lists a name twice nor an empty reference."""
    merged = profiles.merge(profile_list)
    assert len({im.name for im in merged}) == len(merged)
    assert all(im.reference for im in merged)


@given(st.lists(entries, max_size=6), st.lists(entries, max_size=6),
       st.lists(entries, max_size=6))
def test_merge_is_associative(a, b, c):
    """Merging a, b then c equals merging (a merged with b) then c."""
    assert profiles.merge([a, b, c]) == profiles.merge([profiles.merge([a, b]), c])


@given(st.lists(entries, max_size=6))
def test_merging_a_profile_twice_changes_nothing(a):
    """Merging a profile over itself is the same as merging it once."""
    assert profiles.merge([a, a]) == profiles.merge([a])


@given(st.lists(entries, max_size=6), st.lists(entries, max_size=6))
def test_names_absent_from_the_upper_survive_in_order(lower, upper):
    """Lower entries the upper profile does not mention keep their relative order."""
    merged = profiles.merge([lower, upper])
    upper_names = {im.name for im in upper}
    kept = [im for im in profiles.merge([lower]) if im.name not in upper_names]
    assert merged[:len(kept)] == kept


# -- next-profile ------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("user\n", "user"),
    ("  user.json \n\n", "user"),
    ("\tmy-prof_1.2\r\n", "my-prof_1.2"),
    ("", None),
    ("   \n", None),
    (".json", None),
    ("a" * 512, "a" * 512),
])
def test_next_profile_parsing(text, expected):
    """Blanks and a .json suffix are ignored; blank means no upper profile."""
    assert profiles.parse_next_profile(text) == expected


@pytest.mark.parametrize("text", ["a b", "../etc", "a/b", "a" * 513, "caf\u00e9", "x\ny"])
def test_next_profile_invalid_name(text):
    """A name outside ^[a-zA-Z0-9._-]{1,512}$ is a ConfigError naming the file."""
    with pytest.raises(ConfigError, match="^/etc/torcx/next-profile: invalid profile name"):
        profiles.parse_next_profile(text, "/etc/torcx/next-profile")


@pytest.mark.parametrize("name", [".", "..", "user\n"])
def test_dot_names_are_not_profile_names(name):
    """'.', '..' and a trailing newline slip past a naive regex but are refused."""
    with pytest.raises(ConfigError):
        profiles.check_name(name)


# -- listing and selection (on a real folder tree) -----------------------------------

def write_profile(root, folder, name, images, raw=None):
    path = root / folder.lstrip("/") / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if raw is None:
        raw = json.dumps({"kind": "profile-manifest-v0", "value": {"images": [
            {"name": n, "reference": r} for n, r in images]}})
    path.write_text(raw)
    return path


VENDOR = "/usr/share/torcx/profiles"
OEM = "/usr/share/oem/torcx/profiles"
USER = "/etc/torcx/profiles"


@pytest.fixture
def root(tmp_path):
    return tmp_path


def load(root):
    return tpaths.load(str(root), environ={})


def test_list_profiles_user_shadows_oem_shadows_vendor(root):
    """A later profile folder wins for the same name; other files are ignored."""
    write_profile(root, VENDOR, "vendor", [])
    write_profile(root, VENDOR, "same", [])
    write_profile(root, OEM, "oem", [])
    write_profile(root, OEM, "same", [])
    write_profile(root, USER, "same", [])
    (root / USER.lstrip("/") / "notes.txt").write_text("x")
    (root / USER.lstrip("/") / "bad name.json").write_text("{}")
    (root / USER.lstrip("/") / "adir.json").mkdir()
    os.symlink("same.json", root / USER.lstrip("/") / "link.json")
    os.symlink("missing.json", root / USER.lstrip("/") / "dangling.json")
    found = profiles.list_profiles(load(root))
    assert found == {
        "vendor": f"{VENDOR}/vendor.json",
        "oem": f"{OEM}/oem.json",
        "same": f"{USER}/same.json",
        "link": f"{USER}/link.json",
    }


def test_select_lowers_then_upper(root):
    """vendor, then oem, then the next-profile are merged in that order."""
    write_profile(root, VENDOR, "vendor", [("docker", "19"), ("rkt", "1")])
    write_profile(root, OEM, "oem", [("agent", "2")])
    write_profile(root, USER, "user", [("docker", "20")])
    (root / "etc/torcx/next-profile").write_text("user\n")
    sel = profiles.select(load(root))
    assert sel.lower == ["vendor", "oem"] and sel.upper == "user"
    assert pairs(sel.images) == [("rkt", "1"), ("agent", "2"), ("docker", "20")]
    assert sel.problems == []
    assert sel.files == {"vendor": f"{VENDOR}/vendor.json", "oem": f"{OEM}/oem.json",
                         "user": f"{USER}/user.json"}


def test_select_broken_upper_still_applies_lowers(root):
    """An invalid upper profile is reported and the vendor images are still selected."""
    write_profile(root, VENDOR, "vendor", [("docker", "19")])
    write_profile(root, USER, "user", [], raw='{"kind": "profile-manifest-v0", "value": ')
    (root / "etc/torcx/next-profile").write_text("user")
    stream = io.StringIO()
    sel = profiles.select(load(root), tlog.Logger(tlog.DEBUG, stream=stream))
    assert pairs(sel.images) == [("docker", "19")]
    assert sel.upper is None and sel.wanted_upper == "user"
    assert len(sel.problems) == 1 and sel.problems[0][0] == "user"
    assert "invalid JSON" in sel.problems[0][1] and "user.json" in sel.problems[0][1]
    assert "profile user skipped" in stream.getvalue()


def test_select_unknown_upper_is_reported(root):
    """A next-profile naming no profile is a problem, not a failure."""
    write_profile(root, VENDOR, "vendor", [("docker", "19")])
    (root / "etc/torcx").mkdir(parents=True)
    (root / "etc/torcx/next-profile").write_text("ghost")
    sel = profiles.select(load(root))
    assert pairs(sel.images) == [("docker", "19")]
    assert sel.problems == [("ghost", "profile 'ghost' named in /etc/torcx/next-profile "
                                      "not found")]


def test_select_invalid_next_profile_name_is_reported(root):
    """A garbage next-profile file is reported; lower profiles still apply."""
    write_profile(root, VENDOR, "vendor", [("docker", "19")])
    (root / "etc/torcx").mkdir(parents=True)
    (root / "etc/torcx/next-profile").write_text("../../etc/shadow")
    sel = profiles.select(load(root))
    assert pairs(sel.images) == [("docker", "19")]
    assert sel.problems[0][0] == "next-profile"


def test_select_broken_vendor_keeps_the_others(root):
    """A broken lower profile is skipped and reported; oem and user still merge."""
    write_profile(root, VENDOR, "vendor", [], raw='{"kind": "nope", "value": {}}')
    write_profile(root, OEM, "oem", [("agent", "1")])
    sel = profiles.select(load(root))
    assert sel.lower == ["oem"]
    assert pairs(sel.images) == [("agent", "1")]
    assert sel.problems[0][0] == "vendor" and "$.kind" in sel.problems[0][1]


def test_select_without_any_profile_is_empty(root):
    """No profiles at all gives an empty selection without problems."""
    sel = profiles.select(load(root))
    assert (sel.lower, sel.upper, sel.images, sel.problems) == ([], None, [], [])


def test_select_upper_named_vendor_is_not_applied_twice(root):
    """next-profile = vendor merges vendor once, as a lower profile."""
    write_profile(root, VENDOR, "vendor", [("docker", "19")])
    (root / "etc/torcx").mkdir(parents=True)
    (root / "etc/torcx/next-profile").write_text("vendor")
    sel = profiles.select(load(root))
    assert sel.lower == ["vendor"] and sel.upper == "vendor"
    assert pairs(sel.images) == [("docker", "19")]


def test_write_next_profile_creates_folder_and_file(root):
    """set-next writes 'NAME\\n' atomically, creating CONFDIR."""
    p = load(root)
    profiles.write_next_profile(p, "user")
    assert (root / "etc/torcx/next-profile").read_text() == "user\n"
    assert profiles.read_next_profile(p) == "user"


def test_find_profile_unknown(root):
    """find_profile names the folders searched."""
    with pytest.raises(NotFound, match="/etc/torcx/profiles"):
        profiles.find_profile(load(root), "ghost")


def test_read_given_or_next_prefers_file_then_name_then_next_profile(root):
    """--file wins over --name, which wins over the next-profile; source names the one read."""
    write_profile(root, USER, "named", [("a", "1")])
    write_profile(root, USER, "next", [("b", "2")])
    loose = write_profile(root, "/elsewhere", "loose", [("c", "3")])
    p = load(root)
    profiles.write_next_profile(p, "next")
    source, prof = profiles.read_given_or_next(p, file=str(loose), name="named")
    assert (source, pairs(prof.images)) == (str(loose), [("c", "3")])
    source, prof = profiles.read_given_or_next(p, file=None, name="named")
    assert (source, pairs(prof.images)) == (f"{USER}/named.json", [("a", "1")])
    source, prof = profiles.read_given_or_next(p, file=None, name=None)
    assert (source, pairs(prof.images)) == (f"{USER}/next.json", [("b", "2")])


def test_read_given_or_next_without_a_next_profile(root):
    """With no --file, no --name and no next-profile, NotFound names the next-profile file."""
    with pytest.raises(NotFound, match="none selected in /etc/torcx/next-profile"):
        profiles.read_given_or_next(load(root), file=None, name=None)


def test_read_current_from_the_seal(root):
    """The seal file gives the lower/upper names and run profile path."""
    seal = root / "run/metadata/torcx"
    seal.parent.mkdir(parents=True)
    seal.write_text('TORCX_LOWER_PROFILES="vendor:oem"\nTORCX_UPPER_PROFILE="user"\n'
                    'TORCX_PROFILE_PATH="/run/torcx/profile.json"\n'
                    'TORCX_BINDIR="/run/torcx/bin"\nTORCX_UNPACKDIR="/run/torcx/unpack"\n')
    cur = profiles.read_current(load(root))
    assert cur.lower_profile_names == ["vendor", "oem"]
    assert cur.upper_profile_name == "user"
    assert cur.profile_path == "/run/torcx/profile.json"
    empty = profiles.read_current(load(root / "elsewhere"))
    assert (empty.lower_profile_names, empty.upper_profile_name, empty.profile_path) == (
        [], None, None)


def test_select_next_profile_that_is_a_folder(root):
    """A next-profile that cannot be read (here a folder) is reported, lowers still apply."""
    write_profile(root, VENDOR, "vendor", [("docker", "19")])
    (root / "etc/torcx/next-profile").mkdir(parents=True)
    sel = profiles.select(load(root))
    assert pairs(sel.images) == [("docker", "19")]
    assert sel.problems == [("next-profile", "/etc/torcx/next-profile: Is a directory")]


def test_docker_flag_file_selects_the_alternate_vendor_profile(root):
    """/etc/coreos/docker-1.12 holding yes applies docker-1.12-yes in place of vendor."""
    write_profile(root, VENDOR, "vendor", [("docker", "20")])
    write_profile(root, VENDOR, "docker-1.12-yes", [("docker", "1.12")])
    write_profile(root, OEM, "oem", [("agent", "2")])
    (root / "etc/coreos").mkdir(parents=True)
    (root / "etc/coreos/docker-1.12").write_text("yes\n")
    sel = profiles.select(load(root))
    assert sel.lower == ["docker-1.12-yes", "oem"]
    assert pairs(sel.images) == [("docker", "1.12"), ("agent", "2")]


def test_name_with_a_trailing_newline_is_invalid():
    """A profile or remote name never ends in a newline ('$' alone would allow one)."""
    assert not profiles.is_valid_name("fleet\n")
    with pytest.raises(ConfigError, match="invalid remote name"):
        profiles.check_name("fleet\n", "remote")
