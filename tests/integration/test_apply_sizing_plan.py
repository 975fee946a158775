# SPDX-License-Identifier: Apache-2.0
"""Sizing from the unit plan: the scan's findings recorded, used while fresh, never loosened.

A gzip archive is sized by a scan of all its members (torcx.apply.sizing), on
the boot's critical path; the unit plan records what the scan found, and the
next apply sizes the archive from it. The forged entries below are what
whoever can write BASEDIR/unit-plan.json (but not the archive) could make.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil

import pytest
from apply_images import FakeRoot
from applykit import apply_json, guard_root, in_mount_namespace, needs_root, torcx

from torcx.apply import sizing, unitplan

PLANNED = "gzip ISIZE (one member, by the unit plan)"
PLAN = "var/lib/torcx/unit-plan.json"


@pytest.fixture
def root(tmp_path):
    guard_root(tmp_path)
    return FakeRoot(tmp_path / "root")


def plan_entries(root):
    with open(root.host(PLAN)) as f:
        return json.load(f)["value"]["archives"]


def forge(root, name, archive, size):
    """Write a unit plan entry for ``archive`` with these size facts, identity and all."""
    entries = plan_entries(root) if os.path.exists(root.host(PLAN)) else {}
    entries[f"/usr/share/torcx/store/{os.path.basename(archive)}"] = {
        "name": name, "identity": unitplan.identity(archive), "units": [], "size": size}
    os.makedirs(os.path.dirname(root.host(PLAN)), exist_ok=True)
    with open(root.host(PLAN), "w") as f:
        json.dump({"kind": "torcx-unit-plan-v0", "value": {"archives": entries}}, f)


def two_member_image(root, name="liar"):
    """A real image (a 20 MiB file) whose tgz is two gzip members, the second only the
    tar's last 64 KiB: its last ISIZE says 64 KiB. Returns (archive, that ISIZE)."""
    tar = root.add_image(name, "1", "tar", files={"big": "0" * (20 << 20)})
    with open(tar, "rb") as f:
        data = f.read()
    os.unlink(tar)
    archive = os.path.join(root.store, f"{name}:1.torcx.tgz")
    tail = data[-65536:]
    with open(archive, "wb") as f:
        f.write(gzip.compress(data[:-65536], mtime=0) + gzip.compress(tail, mtime=0))
    return archive, len(tail)


def test_apply_records_the_scan_and_the_next_apply_sizes_from_it(root):
    """An apply without a plan scans the tgz and records what it found; the next boot's
    apply takes the size from the plan, the same size."""
    root.add_hello()
    root.profile("vendor", [("hello", "1")])
    code, rep = apply_json(root.path)
    assert code == 0, rep
    first = rep["images"][0]["estimate"]
    assert first["method"] == "gzip ISIZE"
    assert plan_entries(root)["/usr/share/torcx/store/hello:1.torcx.tgz"]["size"] == {
        "members": 1, "need": first["bytes"]}
    shutil.rmtree(root.host("/run"))  # the next boot
    code, rep = apply_json(root.path)
    assert code == 0, rep
    assert rep["images"][0]["estimate"] == {"bytes": first["bytes"], "exact": True,
                                            "method": PLANNED}


def test_set_next_records_the_size(root):
    """`torcx profile set-next` records each tgz's size facts with its units, so even the
    first boot after it does not scan."""
    archive = root.add_hello()
    root.profile("p", [("hello", "1")])
    assert torcx(root.path, "profile", "set-next", "p").code == 0
    entry = plan_entries(root)["/usr/share/torcx/store/hello:1.torcx.tgz"]
    assert entry["size"] == {"members": 1, "need": sizing.estimate(archive).need}


def test_a_forged_entry_fails_its_own_image_cleanly(root):
    """An entry saying one member for a two-member tgz sizes it from its last ISIZE: the
    image stops at its own decode bound and fails its unpack, leaving nothing; the other
    image applies."""
    archive, tail = two_member_image(root)
    root.add_hello()
    root.profile("vendor", [("liar", "1"), ("hello", "1")])
    forge(root, "liar", archive, {"members": 1, "need": tail})
    code, rep = apply_json(root.path)
    assert code == 1
    liar, hello = rep["images"]
    assert liar["estimate"] == {"bytes": tail, "exact": True, "method": PLANNED}
    assert (liar["status"], liar["stage"]) == ("failed", "unpack")
    assert "decodes to more than" in liar["error"], liar["error"]
    assert hello["status"] == "ok"
    assert os.listdir(root.host("/run/torcx/unpack")) == ["hello"]


def test_a_forged_entry_cannot_raise_the_size(root):
    """An entry claiming more than the archive's last ISIZE is not used: the scan sizes it."""
    archive, _ = two_member_image(root)
    root.profile("vendor", [("liar", "1")])
    forge(root, "liar", archive, {"members": 1, "need": 1 << 40})
    code, rep = apply_json(root.path)
    assert code == 0, rep
    est = rep["images"][0]["estimate"]
    assert est["method"] == "gzip ISIZE of 2 members"
    with open(archive, "rb") as f:
        assert est["bytes"] == len(gzip.decompress(f.read()))


def _apply_with_tmpfs(root_path):
    res = torcx(root_path, "apply", "--json")
    unpack = os.path.join(root_path, "run/torcx/unpack")
    return res.code, res.json["value"], sorted(os.listdir(unpack)), os.statvfs(unpack)


@pytest.mark.privileged
@needs_root
def test_a_forged_entry_shrinks_the_tmpfs_and_hurts_no_other_image(root):
    """With a real tmpfs: a forged entry sizes the tmpfs (bytes and inodes) below what the
    scan gives, its image fails its unpack cleanly and the other image applies in full."""
    archive, tail = two_member_image(root)
    hello = root.add_hello()
    root.profile("vendor", [("liar", "1"), ("hello", "1")])
    honest = [sizing.estimate(archive), sizing.estimate(hello)]
    forge(root, "liar", archive, {"members": 1, "need": tail})
    code, rep, left, vfs = in_mount_namespace(_apply_with_tmpfs, root.path)
    assert code == 1
    liar, ok = rep["images"]
    assert (liar["status"], liar["stage"]) == ("failed", "unpack")
    assert ok["status"] == "ok" and left == ["hello"]
    assert rep["tmpfs"]["size_bytes"] < sizing.tmpfs_size(sum(e.need for e in honest))
    assert vfs.f_files < sizing.tmpfs_inodes(honest)


def test_set_next_adds_the_size_to_an_older_entry(root):
    """A plan written before entries had size facts (units only, still fresh) gets them at
    the next set-next, its units kept."""
    archive = root.add_hello()
    root.profile("p", [("hello", "1")])
    assert torcx(root.path, "profile", "set-next", "p").code == 0
    entries = plan_entries(root)
    entry = entries["/usr/share/torcx/store/hello:1.torcx.tgz"]
    del entry["size"]
    with open(root.host(PLAN), "w") as f:
        json.dump({"kind": "torcx-unit-plan-v0", "value": {"archives": entries}}, f)
    assert torcx(root.path, "profile", "set-next", "p").code == 0
    again = plan_entries(root)["/usr/share/torcx/store/hello:1.torcx.tgz"]
    assert again == {**entry, "size": {"members": 1, "need": sizing.estimate(archive).need}}
