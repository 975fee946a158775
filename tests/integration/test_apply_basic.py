# SPDX-License-Identifier: Apache-2.0
"""Full applies under --root with --no-mount: formats, propagation, seal, run profile."""

from __future__ import annotations

import json
import os
import stat

import pytest
from apply_images import FakeRoot
from applykit import apply_json, guard_root, read_seal, torcx, tree


@pytest.fixture
def root(tmp_path):
    guard_root(tmp_path)
    return FakeRoot(tmp_path / "root")


@pytest.mark.parametrize("fmt", ["tgz", "tar.zst", "tar.xz", "tar"])
def test_image_applied_from_each_tarball_format(root, fmt):
    """An image in each tarball format is unpacked, verified, and its assets propagated."""
    root.add_hello(fmt=fmt)
    root.profile("vendor", [("hello", "1")])
    code, rep = apply_json(root.path)
    assert code == 0, rep
    (img,) = rep["images"]
    assert (img["status"], img["archive"]["format"], img["unpack"]["verified"]) == (
        "ok", fmt, True)
    assert os.readlink(root.host("/run/torcx/bin/hello")) == \
        "/run/torcx/unpack/hello/bin/hello"
    assert os.path.isfile(root.host("/run/torcx/unpack/hello/bin/hello"))
    assert os.readlink(root.host(
        "/run/systemd/system/multi-user.target.wants/hello.service")) == "../hello.service"
    assert os.path.isfile(root.host("/run/systemd/system/hello.service"))


def test_seal_file_has_upstream_keys_and_failed_images(root):
    """The seal file holds the five upstream keys (target paths) and TORCX_FAILED_IMAGES."""
    root.add_hello()
    root.profile("vendor", [("hello", "1")])
    root.profile("user", [("hello", "1")])
    root.next_profile("user")
    assert apply_json(root.path)[0] == 0
    assert read_seal(root.path) == {
        "TORCX_LOWER_PROFILES": '"vendor"',
        "TORCX_UPPER_PROFILE": '"user"',
        "TORCX_PROFILE_PATH": '"/run/torcx/profile.json"',
        "TORCX_BINDIR": '"/run/torcx/bin"',
        "TORCX_UNPACKDIR": '"/run/torcx/unpack"',
        "TORCX_FAILED_IMAGES": '""',
    }


def test_run_profile_is_merged_and_read_only(root):
    """RUNDIR/profile.json holds the merged profile (upper over lower) with mode 0444."""
    root.add_hello()
    root.add_hello(reference="2")
    root.add_image("extra", "1")
    root.profile("vendor", [("hello", "1"), ("extra", "1")])
    root.profile("user", [("hello", "2")])
    root.next_profile("user")
    assert apply_json(root.path)[0] == 0
    path = root.host("/run/torcx/profile.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o444
    with open(path) as f:
        doc = json.load(f)
    assert doc == {"kind": "profile-manifest-v0", "value": {"images": [
        {"name": "extra", "reference": "1"}, {"name": "hello", "reference": "2"}]}}


def test_image_without_manifest_is_applied_and_propagates_nothing(root):
    """An image with no .torcx/manifest.json is unpacked, ok, and propagates nothing."""
    root.add_image("plain", "1", files={"data/file": "x"})
    root.profile("vendor", [("plain", "1")])
    code, rep = apply_json(root.path)
    assert code == 0
    assert rep["images"][0]["status"] == "ok"
    assert rep["images"][0]["propagated"] == []
    assert os.path.isfile(root.host("/run/torcx/unpack/plain/data/file"))
    assert os.listdir(root.host("/run/torcx/bin")) == []


def test_empty_profile_still_seals(root):
    """An empty merged profile applies nothing but writes the run profile and the seal."""
    root.profile("vendor", [])
    code, rep = apply_json(root.path)
    assert (code, rep["status"], rep["images"]) == (0, "applied", [])
    assert read_seal(root.path)["TORCX_LOWER_PROFILES"] == '"vendor"'
    assert os.path.isfile(root.host("/run/torcx/profile.json"))


def test_second_run_in_same_boot_does_nothing(root):
    """With RUNDIR present the apply says 'already applied', exits 0 and changes nothing."""
    root.add_hello()
    root.profile("vendor", [("hello", "1")])
    assert apply_json(root.path)[0] == 0
    before = tree(root.path)
    root.add_image("late", "1")
    root.profile("vendor", [("hello", "1"), ("late", "1")])
    res = torcx(root.path, "apply", "--no-mount")
    assert res.code == 0
    assert "already applied" in res.out
    assert tree(root.path) == before


def test_dry_run_changes_nothing_and_prints_the_plan(root):
    """--dry-run names the archive, store, format and every propagation, creating nothing."""
    root.add_hello(fmt="tar.zst")
    root.profile("vendor", [("hello", "1")])
    res = torcx(root.path, "apply", "--dry-run")
    assert res.code == 0, res.err
    assert not os.path.exists(root.host("/run"))
    assert "/usr/share/torcx/store/hello:1.torcx.tar.zst" in res.out
    assert "tar.zst" in res.out
    assert "/run/torcx/bin/hello -> /run/torcx/unpack/hello/bin/hello" in res.out
    assert "/run/systemd/system/multi-user.target.wants/hello.service -> ../hello.service" \
        in res.out


def test_conflicting_bins_keep_the_first_image(root):
    """Two images providing the same bin: the first in profile order wins, the clash is reported."""
    root.add_hello(name="hello")
    root.add_image("other", "1", files={"bin/hello": ("#!/bin/sh\n", 0o755)},
                   manifest={"bin": ["/bin/hello"]})
    root.profile("vendor", [("hello", "1"), ("other", "1")])
    code, rep = apply_json(root.path)
    assert code == 0
    assert rep["conflicts"] == [{"kind": "bin", "dest": "/run/torcx/bin/hello",
                                 "kept": "hello", "dropped": "other"}]
    assert os.readlink(root.host("/run/torcx/bin/hello")).startswith(
        "/run/torcx/unpack/hello/")


def test_status_after_apply_names_archives(root):
    """torcx status after an apply reports each image's archive and exits 0."""
    root.add_hello()
    root.profile("vendor", [("hello", "1")])
    assert apply_json(root.path)[0] == 0
    res = torcx(root.path, "status", "--json")
    assert res.code == 0
    value = res.json["value"]
    assert value["state"] == "applied"
    assert [(i["name"], i["archive"], i["status"]) for i in value["images"]] == [
        ("hello", "/usr/share/torcx/store/hello:1.torcx.tgz", "ok")]


def test_dry_run_after_apply_says_a_real_run_would_do_nothing(root):
    """--dry-run in a boot that already applied still plans, and notes RUNDIR exists."""
    root.add_hello()
    root.profile("vendor", [("hello", "1")])
    assert apply_json(root.path)[0] == 0
    before = tree(root.path)
    res = torcx(root.path, "apply", "--dry-run")
    assert res.code == 0
    assert "/run/torcx exists: a real apply would do nothing" in res.out
    assert tree(root.path) == before


def test_run_profile_keeps_remotes_as_v1(root):
    """An upper profile naming a remote gives a profile-manifest-v1 run profile with it."""
    root.add_hello()
    root.raw_profile("user", json.dumps({"kind": "profile-manifest-v1", "value": {"images": [
        {"name": "hello", "reference": "1", "remote": "com.example"}]}}))
    root.next_profile("user")
    assert apply_json(root.path)[0] == 0
    with open(root.host("/run/torcx/profile.json")) as f:
        doc = json.load(f)
    assert doc == {"kind": "profile-manifest-v1", "value": {"images": [
        {"name": "hello", "reference": "1", "remote": "com.example"}]}}


def test_mountable_image_is_skipped_without_mounts(root):
    """Under --no-mount a squashfs image is reported as skipped (not failed); tarballs apply."""
    import shutil

    if shutil.which("mksquashfs") is None:
        pytest.skip("mksquashfs not installed")
    root.add_image("sq", "1", "squashfs", files={"f": "x"})
    root.add_hello()
    root.profile("vendor", [("sq", "1"), ("hello", "1")])
    code, rep = apply_json(root.path)
    assert code == 0
    sq, hello = rep["images"]
    assert (sq["status"], sq["error"]) == ("skipped", "squashfs image not mounted (--no-mount)")
    assert hello["status"] == "ok"
    assert rep["failed_images"] == []
