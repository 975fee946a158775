# SPDX-License-Identifier: Apache-2.0
"""Mounted images under the policy, with real loop mounts in a private mount namespace:
checked by the SHA-512 of the image file before mounting, not file by file."""

from __future__ import annotations

import hashlib
import os
import shutil

import pytest
import xxhash
from applykit import in_mount_namespace, needs_root, torcx
from policykit import image_tree, pack

from torcx.policy import write_recorded_digest

pytestmark = [pytest.mark.privileged, needs_root,
              pytest.mark.skipif(shutil.which("mksquashfs") is None, reason="needs mksquashfs")]


def _apply(root_path):
    res = torcx(root_path, "apply", "--json")
    return res.code, res.json["value"]


def _by_name(rep):
    return {im["name"]: im for im in rep["images"]}


def _signed_squashfs_root(root, digests=False):
    root.add_hello(name="vendorapp")
    root.user_image("sq", fmt="squashfs", digests=digests)
    root.profile("vendor", [("vendorapp", "1"), ("sq", "1")])
    root.vendor_keys("trusted")
    root.policy("vendor", {"user": "signed"})
    return root


def test_signed_squashfs_is_checked_by_its_image_digest(root):
    """A signed squashfs in the user store is digested whole and mounted; no file is read."""
    _signed_squashfs_root(root).sign_store()
    code, rep = in_mount_namespace(_apply, root.path)
    assert code == 0, rep
    sq = _by_name(rep)["sq"]
    assert sq["unpack"]["method"] == "loop-mount" and sq["unpack"]["verified"] is True
    assert "files" not in sq["unpack"]  # per-file check left out of the boot path
    assert sq["trust"]["pin"] == "signed"
    assert "image file read once" in sq["trust"]["reason"]


def test_rebuilt_squashfs_is_refused_before_mounting(root):
    """A squashfs rebuilt after signing (with its own digest list) fails in phase policy."""
    _signed_squashfs_root(root).sign_store()
    src = os.path.join(root.work, "evil-sq")
    image_tree(src, {"bin/sq": ("#!/bin/sh\necho owned\n", 0o755)}, manifest={"bin": ["/bin/sq"]})
    pack(src, os.path.join(root.user_store, "sq:1.torcx.squashfs"), "squashfs")
    code, rep = in_mount_namespace(_apply, root.path)
    assert code == 1
    sq = _by_name(rep)["sq"]
    assert (sq["status"], sq["stage"]) == ("failed", "policy")
    assert "differs from the signed" in sq["error"] and sq["unpack"] == {}
    assert _by_name(rep)["vendorapp"]["status"] == "ok"


@pytest.mark.parametrize("algo", ["xxh3", "sha512"])
def test_recorded_digest_checks_integrity_without_a_policy(root, algo):
    """No policy file: a squashfs with a recorded digest (.xxh128 from pack, .sha512 from
    populate) is checked by it, files unread; a wrong one fails before mounting."""
    archive = root.add_image("sq", "1", "squashfs", files={"a": "alpha"}, digests=True)
    with open(archive, "rb") as f:
        data = f.read()
    good = xxhash.xxh3_128_hexdigest(data) if algo == "xxh3" else hashlib.sha512(data).hexdigest()
    path = write_recorded_digest(archive, good, algo)
    root.profile("vendor", [("sq", "1")])
    code, rep = in_mount_namespace(_apply, root.path)
    assert code == 0, rep
    sq = _by_name(rep)["sq"]
    assert sq["trust"]["pin"] == "recorded" and "files" not in sq["unpack"]
    assert sq["unpack"]["verified"] is True
    shutil.rmtree(root.host("/run"))
    write_recorded_digest(archive, "0" * len(good), algo)
    code, rep = in_mount_namespace(_apply, root.path)
    assert code == 1
    sq = _by_name(rep)["sq"]
    assert (sq["stage"], sq["unpack"]) == ("policy", {})
    assert f"recorded in /usr/share/torcx/store/{os.path.basename(path)}" in sq["error"]


def test_policy_that_reads_everything_checks_every_file(root):
    """check_files: the signed squashfs is also checked file by file once mounted."""
    _signed_squashfs_root(root, digests=True)
    root.policy("vendor", {"user": "signed"}, check_files=True)
    root.sign_store()
    code, rep = in_mount_namespace(_apply, root.path)
    assert code == 0, rep
    sq = _by_name(rep)["sq"]
    assert sq["unpack"]["files"] == 2
    assert "every file matched .torcx/digests after mounting" in sq["trust"]["reason"]
