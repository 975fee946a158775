# SPDX-License-Identifier: Apache-2.0
"""torcx status: read what this boot applied from the seal, run profile and record."""

from __future__ import annotations

import os

import pytest
from apply_images import FakeRoot, write
from applykit import guard_root, torcx


@pytest.fixture
def root(tmp_path):
    guard_root(tmp_path)
    return FakeRoot(tmp_path / "root")


def test_status_without_any_apply(root):
    """With no seal and no RUNDIR, status says nothing was applied and exits 1."""
    res = torcx(root.path, "status", "--json")
    assert res.code == 1
    value = res.json["value"]
    assert (value["state"], value["sealed"], value["images"]) == ("not-applied", False, [])


def test_status_reads_an_upstream_seal(root):
    """A seal and run profile written by upstream torcx (no record) read as applied."""
    write(root.host("/run/metadata/torcx"),
          'TORCX_LOWER_PROFILES="vendor"\nTORCX_UPPER_PROFILE="user"\n'
          'TORCX_PROFILE_PATH="/run/torcx/profile.json"\nTORCX_BINDIR="/run/torcx/bin"\n'
          'TORCX_UNPACKDIR="/run/torcx/unpack"\n')
    write(root.host("/run/torcx/profile.json"),
          '{"kind": "profile-manifest-v0", "value": {"images": '
          '[{"name": "docker", "reference": "com.coreos.cl"}]}}')
    res = torcx(root.path, "status", "--json")
    assert res.code == 0
    value = res.json["value"]
    assert (value["state"], value["lower_profiles"], value["upper_profile"]) == (
        "applied", ["vendor"], "user")
    assert [(i["name"], i["reference"], i["status"]) for i in value["images"]] == [
        ("docker", "com.coreos.cl", "unknown")]


def test_status_names_a_damaged_record(root):
    """A damaged RUNDIR/apply.json is reported with its file name, not a traceback."""
    root.profile("vendor", [])
    assert torcx(root.path, "apply", "--no-mount").code == 0
    record = root.host("/run/torcx/apply.json")
    os.chmod(record, 0o644)
    write(record, "{broken")
    res = torcx(root.path, "status")
    assert "warning: /run/torcx/apply.json:" in res.out
