# SPDX-License-Identifier: Apache-2.0
"""One hostile image fails alone: the others apply, the seal and the record are written,
and nothing of the failed image stays reachable (issue 16 items 1, 3, 4; issue 10 item 9)."""

from __future__ import annotations

import os

import pytest
from apply_images import DEEP, deep_fake_root, write
from applykit import apply_json, guard_root, read_seal, torcx


@pytest.fixture
def root(tmp_path):
    guard_root(tmp_path)
    yield from deep_fake_root(tmp_path)


def by_name(report):
    return {im["name"]: im for im in report["images"]}


def deep_bin_image(root, name="deep"):
    """An image whose bin folder holds one program ~1,100 folders down."""
    return root.add_image(name, "1", files={
        "bin/" + "d/" * DEEP + "deeptool": ("#!/bin/sh\n", 0o755),
        "bin/top": ("#!/bin/sh\n", 0o755),
    }, manifest={"bin": ["/bin"]})


def test_deep_bin_folder_does_not_stop_the_apply(root):
    """A bin folder 1,100 levels deep is walked without recursion; the image before it
    is propagated, everything is sealed and recorded (was: RecursionError, nothing sealed)."""
    root.add_hello()
    deep_bin_image(root)
    root.profile("vendor", [("hello", "1"), ("deep", "1")])
    code, rep = apply_json(root.path)
    assert code == 0, rep
    assert (rep["status"], rep["sealed"]) == ("applied", True)
    assert sorted(os.listdir(root.host("/run/torcx/bin"))) == ["deeptool", "hello", "top"]
    assert read_seal(root.path)["TORCX_FAILED_IMAGES"] == '""'
    assert torcx(root.path, "status").code == 0


def test_too_many_distinct_manifest_paths_fail_that_image_only(root):
    """A manifest listing more distinct paths than any real image fails alone, before
    anything is walked; repeats of one folder count once."""
    root.add_image("many", "1", files={"bin/x": ("#!/bin/sh\n", 0o755)},
                   manifest={"bin": [f"/bin/x{i}" for i in range(5000)]})
    root.add_image("repeats", "1", files={f"bin/t{i}": ("#!/bin/sh\n", 0o755)
                                          for i in range(8)},
                   manifest={"bin": ["/bin", "/bin/", "/./bin"] * 30000})
    root.add_hello()
    root.profile("vendor", [("many", "1"), ("repeats", "1"), ("hello", "1")])
    code, rep = apply_json(root.path)
    assert code == 1
    images = by_name(rep)
    assert (images["many"]["status"], images["many"]["stage"]) == ("failed", "manifest")
    assert "5000 distinct paths; at most 4096" in images["many"]["error"]
    assert images["repeats"]["status"] == "ok"
    assert len(images["repeats"]["propagated"]) == 8
    assert images["hello"]["status"] == "ok"


def test_image_failing_part_way_through_propagation_leaves_nothing(root):
    """An image whose last entry cannot be made has its bin link removed again and fails
    alone; the destination it had claimed goes to the next image that provides it."""
    root.add_image("half", "1", files={
        "bin/tool": ("#!/bin/sh\necho half\n", 0o755),
        "lib/udev/rules.d/99-half.rules": "# rule\n",
    }, manifest={"bin": ["/bin/tool"], "udev_rules": ["/lib/udev/rules.d/99-half.rules"]})
    root.add_image("other", "1", files={"bin/tool": ("#!/bin/sh\necho other\n", 0o755)},
                   manifest={"bin": ["/bin/tool"]})
    write(root.host("/run/udev"), "a file where /run/udev/rules.d should go\n")
    root.profile("vendor", [("half", "1"), ("other", "1")])
    code, rep = apply_json(root.path)
    assert code == 1
    images = by_name(rep)
    assert (images["half"]["status"], images["half"]["stage"]) == ("failed", "propagate")
    assert images["half"]["propagated"] == []
    assert images["other"]["status"] == "ok"
    assert os.readlink(root.host("/run/torcx/bin/tool")) == "/run/torcx/unpack/other/bin/tool"
    assert rep["conflicts"] == []
    assert sorted(os.listdir(root.host("/run/torcx/unpack"))) == ["other"]


def test_failed_image_tree_is_removed_before_the_seal(root):
    """An image that unpacked but whose manifest is invalid leaves no tree under the
    unpack dir: a unit asserting its manifest's path cannot find it."""
    root.add_image("bad", "1", files={"bin/bad": ("#!/bin/sh\n", 0o755)},
                   manifest='{"kind": "image-manifest-v0", "value": {"bin": 7}}')
    root.add_image("escapes", "1", files={"bin/e": ("#!/bin/sh\n", 0o755)},
                   manifest={"bin": ["/../../etc/passwd"]})
    root.add_hello()
    root.profile("vendor", [("bad", "1"), ("escapes", "1"), ("hello", "1")])
    code, rep = apply_json(root.path)
    assert code == 1
    assert sorted(rep["failed_images"]) == ["bad", "escapes"]
    assert sorted(os.listdir(root.host("/run/torcx/unpack"))) == ["hello"]
    assert rep["sealed"] is True


def test_deep_failed_image_tree_is_removed(root):
    """A failed image's tree is removed without recursion, however deep."""
    root.add_image("deepbad", "1", files={
        "x/" + "d/" * DEEP + "f": "data\n",
    }, manifest={"bin": ["/missing"]})
    root.profile("vendor", [("deepbad", "1")])
    code, rep = apply_json(root.path)
    assert code == 1
    assert by_name(rep)["deepbad"]["stage"] == "manifest"
    assert os.listdir(root.host("/run/torcx/unpack")) == []


def test_status_with_our_seal_but_no_record_is_unknown(root):
    """A seal written by this torcx without the record that follows it: the outcome is
    unknown and status exits non-zero (was: 'applied', exit 0)."""
    root.add_hello()
    root.profile("vendor", [("hello", "1")])
    assert apply_json(root.path)[0] == 0
    record = root.host("/run/torcx/apply.json")
    os.unlink(record)
    res = torcx(root.path, "status", "--json")
    assert res.code != 0
    assert res.json["value"]["state"] == "unknown"
    os.mkdir(record)  # unreadable: a folder in its place
    res = torcx(root.path, "status")
    assert res.code != 0
    assert res.out.startswith("state: unknown")
