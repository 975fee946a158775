# SPDX-License-Identifier: Apache-2.0
"""Mounted images fail alone and leave nothing reachable; a failing mount(2) never breaks
the promise (issue 16 item 1, issue 10 item 9), each test in its own mount namespace."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "integration"))
from apply_images import DEEP, deep_fake_root  # noqa: E402
from applykit import guard_root, in_mount_namespace, needs_root, torcx  # noqa: E402
from faultkit import _env, apply_argv, check_promise, have_strace  # noqa: E402

pytestmark = [pytest.mark.privileged, needs_root]

@pytest.fixture
def root(tmp_path):
    guard_root(tmp_path)
    yield from deep_fake_root(tmp_path)


def _apply(root_path):
    res = torcx(root_path, "apply", "--json")
    unpack = os.path.join(root_path, "run/torcx/unpack")
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            if point.startswith(unpack):
                mounts.append(point)
    return res.code, res.out, sorted(os.listdir(unpack)), mounts


@pytest.mark.parametrize("fmt", ["squashfs", "erofs"])
def test_deep_mounted_image_is_checked_without_recursion(root, fmt):
    """A mounted image 1,100 folders deep has its digests checked (was: RecursionError
    ended the whole apply: nothing sealed, the image before it not propagated)."""
    root.add_hello()
    root.add_image("deep", "1", fmt, files={"x/" + "d/" * DEEP + "f": "data\n"},
                   digests=True)
    root.profile("vendor", [("hello", "1"), ("deep", "1")])
    code, out, listed, _mounts = in_mount_namespace(_apply, root.path)
    assert code == 0, out
    import json

    images = {im["name"]: im for im in json.loads(out)["value"]["images"]}
    assert images["deep"]["unpack"]["verified"] is True
    assert listed == ["deep", "hello"]


def test_failed_mounted_image_is_unmounted_before_the_seal(root):
    """A squashfs image whose manifest is invalid is unmounted and its folder removed:
    nothing under unpack/ leads to it after the seal."""
    root.add_image("sq", "1", "squashfs", files={"bin/x": ("#!/bin/sh\n", 0o755)},
                   manifest='{"kind": "image-manifest-v0", "value": {"bin": 7}}')
    root.add_hello()
    root.profile("vendor", [("sq", "1"), ("hello", "1")])
    code, out, listed, mounts = in_mount_namespace(_apply, root.path)
    assert code == 1
    assert listed == ["hello"]
    unpack = os.path.join(root.path, "run/torcx/unpack")
    assert mounts == [unpack]  # the tmpfs only


def test_inspect_of_a_deep_mounted_image_is_clean(root):
    """`torcx image inspect` walks a 1,100-deep erofs image without recursion."""
    archive = root.add_image("deep", "1", "erofs", files={"x/" + "d/" * DEEP + "f": "data\n"})
    res = in_mount_namespace(lambda p: (lambda r: (r.code, r.out, r.err))(
        torcx("/", "image", "inspect", p)), archive)
    code, out, err = res
    assert code == 0, err
    assert "internal error" not in err


@pytest.mark.skipif(not have_strace(), reason="needs strace")
@pytest.mark.parametrize("when", [1, 2, 3])
@pytest.mark.parametrize("error", ["EIO", "ENOSPC"])
def test_one_failing_mount_call(root, when, error):
    """mount(2) failing once (the tmpfs, the loop mount, the read-only remount): status
    tells the truth and a failed image leaves nothing propagated."""
    root.add_hello(name="a")
    root.add_image("sq", "1", "squashfs", files={"bin/sq": ("#!/bin/sh\n", 0o755)},
                   manifest={"bin": ["/bin/sq"]})
    root.add_hello(name="c")
    root.profile("vendor", [("a", "1"), ("sq", "1"), ("c", "1")])
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "strace", "-f", "-qq", "-o", "/dev/null",
         "-e", "trace=mount", "-e", f"inject=mount:error={error}:when={when}",
         *apply_argv(root.path, mount=True)], env=_env(), capture_output=True, timeout=120)
    assert b"Traceback" not in proc.stderr, proc.stderr[-2000:]
    status = torcx(root.path, "status", "--json")
    check_promise(root.path, proc.returncode, ["a", "sq", "c"],
                  (status.code, status.json["value"]), single_thread_fault=True)
    assert proc.returncode == 1
