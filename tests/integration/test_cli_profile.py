# SPDX-License-Identifier: Apache-2.0
"""`torcx profile list|new|set-next|use-image|check` under --root, output checked field by field."""

from __future__ import annotations

import json
import os
import stat

import pytest
from clikit import (
    OEM_PROFILES,
    USER_PROFILES,
    USER_STORE,
    VENDOR_PROFILES,
    VENDOR_STORE,
    os_release,
    put,
    put_profile,
    read_json,
    torcx,
)

SEAL = ('TORCX_LOWER_PROFILES="vendor:oem"\nTORCX_UPPER_PROFILE="user"\n'
        'TORCX_PROFILE_PATH="/run/torcx/profile.json"\nTORCX_BINDIR="/run/torcx/bin"\n'
        'TORCX_UNPACKDIR="/run/torcx/unpack"\n')


# -- profile list ---------------------------------------------------------------------

def test_list_on_an_empty_system(tmp_path):
    """With nothing installed every field is empty or null."""
    r = torcx(tmp_path, "profile", "list")
    assert r.status == 0, r
    doc = r.json()
    assert doc["kind"] == "torcx-profile-list-v0"
    v = doc["value"]
    assert v["lower_profile_names"] == []
    assert v["user_profile_name"] is None
    assert v["current_profile_path"] is None
    assert v["next_profile_name"] is None
    assert v["profiles"] == []
    assert set(v) == {"lower_profile_names", "user_profile_name", "current_profile_path",
                      "next_profile_name", "profiles"}


def test_list_after_a_boot(tmp_path):
    """Seal, next-profile and the three profile folders fill every field."""
    put_profile(tmp_path, VENDOR_PROFILES, "vendor", [])
    put_profile(tmp_path, OEM_PROFILES, "oem", [])
    put_profile(tmp_path, USER_PROFILES, "user", [])
    put_profile(tmp_path, USER_PROFILES, "other", [])
    put(tmp_path, "/etc/torcx/next-profile", "other.json\n")
    put(tmp_path, "/run/metadata/torcx", SEAL)
    r = torcx(tmp_path, "profile", "list")
    assert r.status == 0, r
    v = r.json()["value"]
    assert v["lower_profile_names"] == ["vendor", "oem"]
    assert v["user_profile_name"] == "user"
    assert v["current_profile_path"] == "/run/torcx/profile.json"
    assert v["next_profile_name"] == "other"
    assert v["profiles"] == ["oem", "other", "user", "vendor"]


def test_list_output_is_deterministic_json(tmp_path):
    """The output is indented, key-sorted JSON ending in one newline."""
    put_profile(tmp_path, VENDOR_PROFILES, "vendor", [])
    r = torcx(tmp_path, "profile", "list")
    assert r.out == json.dumps(r.json(), indent=2, sort_keys=True) + "\n"


def test_list_next_profile_naming_nothing_is_null(tmp_path):
    """A next-profile naming a profile that does not exist is reported as null."""
    put(tmp_path, "/etc/torcx/next-profile", "ghost\n")
    r = torcx(tmp_path, "profile", "list")
    assert r.status == 0
    assert r.json()["value"]["next_profile_name"] is None
    assert "ghost" in r.err


# -- profile new ----------------------------------------------------------------------

def test_new_blank_profile(tmp_path):
    """--name creates CONFDIR/profiles/NAME.json with no images, mode 0644."""
    r = torcx(tmp_path, "profile", "new", "--name", "mine")
    assert r.status == 0, r
    path = tmp_path / "etc/torcx/profiles/mine.json"
    assert json.loads(path.read_text()) == {"kind": "profile-manifest-v0",
                                            "value": {"images": []}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert r.out == ""


def test_new_from_an_existing_profile(tmp_path):
    """--from P copies P's images (and kind) into the new profile."""
    put_profile(tmp_path, VENDOR_PROFILES, "vendor", [("docker", "20", "flatcar")],
                kind="profile-manifest-v1")
    r = torcx(tmp_path, "profile", "new", "--from", "vendor", "--name", "mine")
    assert r.status == 0, r
    assert read_json(tmp_path, f"{USER_PROFILES}/mine.json") == {
        "kind": "profile-manifest-v1",
        "value": {"images": [{"name": "docker", "reference": "20", "remote": "flatcar"}]}}


def test_new_from_next(tmp_path):
    """--from-next copies the profile named in next-profile."""
    put_profile(tmp_path, USER_PROFILES, "cur", [("kubelet", "1.29")])
    put(tmp_path, "/etc/torcx/next-profile", "cur")
    r = torcx(tmp_path, "profile", "new", "--from-next", "--name", "copy")
    assert r.status == 0, r
    assert read_json(tmp_path, f"{USER_PROFILES}/copy.json")["value"]["images"] == [
        {"name": "kubelet", "reference": "1.29"}]


def test_new_from_next_without_next_profile_fails(tmp_path):
    """--from-next with no next-profile fails and creates nothing."""
    r = torcx(tmp_path, "profile", "new", "--from-next", "--name", "copy")
    assert r.status == 1
    assert "next profile" in r.err
    assert not (tmp_path / "etc/torcx/profiles/copy.json").exists()


def test_new_from_unknown_profile_fails(tmp_path):
    """--from a missing profile exits 1 without creating a file."""
    r = torcx(tmp_path, "profile", "new", "--from", "ghost", "--name", "mine")
    assert r.status == 1
    assert r.err.count("\n") == 1 and "ghost" in r.err
    assert not (tmp_path / "etc/torcx/profiles/mine.json").exists()


def test_new_existing_name_fails(tmp_path):
    """A name that exists in any profile folder is refused."""
    put_profile(tmp_path, VENDOR_PROFILES, "vendor", [])
    r = torcx(tmp_path, "profile", "new", "--name", "vendor")
    assert r.status == 1
    assert "already exists" in r.err


def test_new_with_file(tmp_path):
    """--file F writes a profile at F (a host path, not under --root)."""
    target = tmp_path / "elsewhere" / "p.json"
    target.parent.mkdir()
    (tmp_path / "root").mkdir()
    r = torcx(tmp_path / "root", "profile", "new", "--file", str(target))
    assert r.status == 0, r
    assert json.loads(target.read_text())["kind"] == "profile-manifest-v0"


def test_new_file_refuses_to_overwrite(tmp_path):
    """An existing --file is left untouched and the command fails."""
    target = tmp_path / "p.json"
    target.write_text("keep")
    (tmp_path / "root").mkdir()
    r = torcx(tmp_path / "root", "profile", "new", "--file", str(target))
    assert r.status == 1
    assert target.read_text() == "keep"


def test_new_file_in_a_missing_folder_names_the_file(tmp_path):
    """--file in a folder that does not exist fails naming that file, not a temporary one."""
    target = tmp_path / "missing" / "p.json"
    (tmp_path / "root").mkdir()
    r = torcx(tmp_path / "root", "profile", "new", "--file", str(target))
    assert r.status == 1
    assert f"error: {target}: No such file or directory" in r.err


@pytest.mark.parametrize("args", [
    ["profile", "new"],
    ["profile", "new", "--name", "a", "--file", "/tmp/a.json"],
    ["profile", "new", "--file", "noext"],
    ["profile", "new", "--from", "a", "--from-next", "--name", "b"],
])
def test_new_usage_errors(tmp_path, args):
    """Missing or conflicting options exit 2 with one line on stderr."""
    r = torcx(tmp_path, *args)
    assert r.status == 2, r
    assert r.err.count("\n") == 1 and r.err.startswith("torcx: error: ")


def test_new_invalid_name_fails(tmp_path):
    """A profile name outside the allowed characters is refused."""
    r = torcx(tmp_path, "profile", "new", "--name", "a b")
    assert r.status == 1
    assert "invalid profile name" in r.err


# -- profile set-next ---------------------------------------------------------------------

def test_set_next_writes_the_selector(tmp_path):
    """set-next NAME writes 'NAME\\n' to CONFDIR/next-profile."""
    put_profile(tmp_path, USER_PROFILES, "mine", [])
    r = torcx(tmp_path, "profile", "set-next", "mine.json")
    assert r.status == 0, r
    assert (tmp_path / "etc/torcx/next-profile").read_text() == "mine\n"
    assert torcx(tmp_path, "profile", "list").json()["value"]["next_profile_name"] == "mine"


def test_set_next_unknown_profile_fails(tmp_path):
    """set-next of a missing profile exits 1 and leaves next-profile alone."""
    put(tmp_path, "/etc/torcx/next-profile", "old\n")
    r = torcx(tmp_path, "profile", "set-next", "ghost")
    assert r.status == 1
    assert "ghost" in r.err
    assert (tmp_path / "etc/torcx/next-profile").read_text() == "old\n"


def test_set_next_refuses_a_broken_profile(tmp_path):
    """set-next of a profile that does not parse fails and keeps the old selection."""
    put(tmp_path, f"{USER_PROFILES}/broken.json", '{"kind": "profile-manifest-v0"}')
    put(tmp_path, "/etc/torcx/next-profile", "old\n")
    r = torcx(tmp_path, "profile", "set-next", "broken")
    assert r.status == 1
    assert "broken.json: $.value: missing required field" in r.err
    assert (tmp_path / "etc/torcx/next-profile").read_text() == "old\n"


def test_set_next_needs_a_name(tmp_path):
    """set-next without NAME is a usage error."""
    assert torcx(tmp_path, "profile", "set-next").status == 2


# -- profile use-image ----------------------------------------------------------------

@pytest.fixture
def user_profile(tmp_path):
    put(tmp_path, f"{VENDOR_STORE}/docker:20.torcx.tgz")
    put(tmp_path, f"{VENDOR_STORE}/kubelet:1.torcx.tgz")
    return put_profile(tmp_path, USER_PROFILES, "mine", [("docker", "19"), ("rkt", "1")])


def test_use_image_adds_an_image(tmp_path, user_profile):
    """A new name is appended to the profile."""
    r = torcx(tmp_path, "profile", "use-image", "--name", "mine", "kubelet:1")
    assert r.status == 0, r
    assert json.loads(user_profile.read_text())["value"]["images"] == [
        {"name": "docker", "reference": "19"}, {"name": "rkt", "reference": "1"},
        {"name": "kubelet", "reference": "1"}]


def test_use_image_replaces_in_place(tmp_path, user_profile):
    """An existing name gets the new reference at its position; the mode is kept."""
    os.chmod(user_profile, 0o600)
    r = torcx(tmp_path, "profile", "use-image", "--name", "mine", "docker:20")
    assert r.status == 0, r
    assert json.loads(user_profile.read_text())["value"]["images"] == [
        {"name": "docker", "reference": "20"}, {"name": "rkt", "reference": "1"}]
    assert stat.S_IMODE(user_profile.stat().st_mode) == 0o600


def test_use_image_missing_archive_fails(tmp_path, user_profile):
    """An image no store holds is refused unless --allow=missing."""
    before = user_profile.read_text()
    r = torcx(tmp_path, "profile", "use-image", "--name", "mine", "ghost:1")
    assert r.status == 1
    assert "--allow=missing" in r.err
    assert user_profile.read_text() == before


def test_use_image_allow_missing(tmp_path, user_profile):
    """--allow=missing adds the image with a warning."""
    r = torcx(tmp_path, "profile", "use-image", "--allow=missing", "--name", "mine", "ghost:1")
    assert r.status == 0, r
    assert "warning" in r.err
    assert json.loads(user_profile.read_text())["value"]["images"][-1] == {
        "name": "ghost", "reference": "1"}


def test_use_image_empty_reference_switches_off(tmp_path, user_profile):
    """NAME: (empty reference) records a switch-off without a store lookup."""
    r = torcx(tmp_path, "profile", "use-image", "--name", "mine", "vendoraddon:")
    assert r.status == 0, r
    assert json.loads(user_profile.read_text())["value"]["images"][-1] == {
        "name": "vendoraddon", "reference": ""}


def test_use_image_keeps_remote_of_v1_profile(tmp_path):
    """Replacing an entry in a v1 profile keeps its remote."""
    put(tmp_path, f"{USER_STORE}/docker:21.torcx.tgz")
    path = put_profile(tmp_path, USER_PROFILES, "mine", [("docker", "20", "flatcar")],
                       kind="profile-manifest-v1")
    r = torcx(tmp_path, "profile", "use-image", "--name", "mine", "docker:21")
    assert r.status == 0, r
    assert json.loads(path.read_text()) == {"kind": "profile-manifest-v1", "value": {
        "images": [{"name": "docker", "reference": "21", "remote": "flatcar"}]}}


def test_use_image_only_edits_user_profiles(tmp_path):
    """--name of a vendor profile is refused: only CONFDIR/profiles is editable."""
    put(tmp_path, f"{VENDOR_STORE}/docker:20.torcx.tgz")
    put_profile(tmp_path, VENDOR_PROFILES, "vendor", [])
    r = torcx(tmp_path, "profile", "use-image", "--name", "vendor", "docker:20")
    assert r.status == 1
    assert "not a user profile" in r.err


def test_use_image_with_file(tmp_path):
    """--file edits a profile at a host path."""
    put(tmp_path, f"{VENDOR_STORE}/docker:20.torcx.tgz")
    path = put_profile(tmp_path, "/work", "p", [])
    r = torcx(tmp_path, "profile", "use-image", "--file", str(path), "docker:20")
    assert r.status == 0, r
    assert json.loads(path.read_text())["value"]["images"] == [
        {"name": "docker", "reference": "20"}]


@pytest.mark.parametrize("args", [
    ["profile", "use-image", "--name", "mine", "docker"],
    ["profile", "use-image", "--name", "mine", ":1"],
    ["profile", "use-image", "docker:1"],
    ["profile", "use-image", "--allow=everything", "--name", "mine", "docker:1"],
])
def test_use_image_usage_errors(tmp_path, user_profile, args):
    """A malformed NAME:REF, no target, or a bad --allow value exit 2."""
    r = torcx(tmp_path, *args)
    assert r.status == 2, r
    assert r.err.count("\n") == 1


def test_use_image_invalid_image_name_fails(tmp_path, user_profile):
    """An image name that could not name a folder is refused before writing."""
    before = user_profile.read_text()
    r = torcx(tmp_path, "profile", "use-image", "--allow=missing", "--name", "mine", "..:1")
    assert r.status == 1
    assert "invalid image name" in r.err
    assert user_profile.read_text() == before


# -- profile check -------------------------------------------------------------------------

def test_check_next_profile_all_present(tmp_path):
    """Without --name/--file the next profile is checked; all present exits 0."""
    put(tmp_path, f"{VENDOR_STORE}/docker:20.torcx.tgz")
    put_profile(tmp_path, USER_PROFILES, "mine", [("docker", "20"), ("off", "")])
    put(tmp_path, "/etc/torcx/next-profile", "mine")
    r = torcx(tmp_path, "profile", "check")
    assert r.status == 0, r


def test_check_lists_missing_images(tmp_path):
    """Missing images make check exit 1, naming each of them."""
    put(tmp_path, f"{VENDOR_STORE}/docker:20.torcx.tgz")
    put_profile(tmp_path, USER_PROFILES, "mine",
                [("docker", "20"), ("kubelet", "1"), ("rkt", "2")])
    r = torcx(tmp_path, "profile", "check", "--name", "mine")
    assert r.status == 1
    last = r.err.strip().splitlines()[-1]
    assert "2 of 3 image(s) missing: kubelet:1, rkt:2" in last


def test_check_empty_profile_passes_with_warning(tmp_path):
    """A profile without images is valid; a warning says so."""
    put_profile(tmp_path, USER_PROFILES, "mine", [])
    r = torcx(tmp_path, "profile", "check", "--name", "mine")
    assert r.status == 0
    assert "no images" in r.err


def test_check_file_with_schema_error(tmp_path):
    """An invalid profile file fails with its path and JSON path."""
    path = put(tmp_path, "/work/p.json", '{"kind": "profile-manifest-v0", "value": {}}')
    r = torcx(tmp_path, "profile", "check", "--file", str(path))
    assert r.status == 1
    assert f"{path}: $.value.images: missing required field" in r.err


def test_check_without_any_profile_fails(tmp_path):
    """No --name, no --file and no next-profile is a failure with a reason."""
    r = torcx(tmp_path, "profile", "check")
    assert r.status == 1
    assert "next-profile" in r.err


def test_check_with_os_version_uses_versioned_store(tmp_path):
    """-n OSVER looks in BASEDIR/store/OSVER and not in the running OS's vendor store."""
    os_release(tmp_path, "1")
    put(tmp_path, f"{VENDOR_STORE}/docker:20.torcx.tgz")
    put(tmp_path, f"{USER_STORE}/2/kubelet:1.torcx.tgz")
    put_profile(tmp_path, USER_PROFILES, "k", [("kubelet", "1")])
    put_profile(tmp_path, USER_PROFILES, "d", [("docker", "20")])
    assert torcx(tmp_path, "profile", "check", "--name", "k", "-n", "2").status == 0
    assert torcx(tmp_path, "profile", "check", "--name", "k").status == 1
    assert torcx(tmp_path, "profile", "check", "--name", "d", "-n", "2").status == 1
    assert torcx(tmp_path, "profile", "check", "--name", "d").status == 0


def test_check_remote_only_skips_the_local_stores(tmp_path):
    """--remote-only hands the images to torcx.remote: a missing local archive is fine."""
    put_profile(tmp_path, USER_PROFILES, "mine", [("docker", "20")])
    r = torcx(tmp_path, "--verbose=notice", "profile", "check", "--name", "mine",
              "--remote-only")
    assert r.status == 0, r
    assert "docker:20: has no remote, not checked" in r.err


def test_check_remote_only_fails_for_an_unknown_remote(tmp_path):
    """--remote-only fails when an image's remote is not configured, even if stored."""
    put(tmp_path, f"{VENDOR_STORE}/docker:20.torcx.tgz")
    put_profile(tmp_path, USER_PROFILES, "mine", [("docker", "20", "nowhere")],
                kind="profile-manifest-v1")
    r = torcx(tmp_path, "profile", "check", "--name", "mine", "--remote-only")
    assert r.status == 1, r
    assert "nowhere" in r.err
