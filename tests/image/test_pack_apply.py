# SPDX-License-Identifier: Apache-2.0
"""A packed image, applied by `torcx apply --root R --no-mount`, unpacks to the same tree."""

from __future__ import annotations

import io
import json
import os

import pytest
from packkit import EPOCH, TAR_FORMATS, build_rootfs, comparable, expected_after_pack, snapshot

from torcx.cli import main
from torcx.image.pack import pack_image


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory):
    root = build_rootfs(tmp_path_factory.mktemp("apply") / "rootfs", big_bytes=1 << 20,
                        small_files=40)
    os.unlink(root / "share/fifo")  # the apply refuses FIFOs and device nodes by policy
    return root, snapshot(root)


@pytest.mark.parametrize("fmt", TAR_FORMATS)
def test_apply_unpacks_and_propagates_the_packed_image(rootfs, tmp_path, fmt):
    """torcx apply of the packed image gives the same tree, its bin link and its units."""
    root, before = rootfs
    sysroot = tmp_path / "sysroot"
    pack_image(str(root), "tool", "1.0", str(sysroot / "usr/share/torcx/store"), fmt=fmt,
               epoch=EPOCH)
    profiles = sysroot / "usr/share/torcx/profiles"
    profiles.mkdir(parents=True)
    (profiles / "vendor.json").write_text(json.dumps({
        "kind": "profile-manifest-v0",
        "value": {"images": [{"name": "tool", "reference": "1.0"}]}}))
    out, err = io.StringIO(), io.StringIO()
    code = main(["--root", str(sysroot), "apply", "--no-mount"], environ={}, stdout=out,
                stderr=err)
    assert code == 0, err.getvalue()
    unpacked = sysroot / "run/torcx/unpack/tool"
    assert comparable(snapshot(unpacked)) == comparable(expected_after_pack(before, fmt, EPOCH))
    assert os.readlink(sysroot / "run/torcx/bin/tool") == "/run/torcx/unpack/tool/bin/tool"
    assert (sysroot / "run/systemd/system/tool.service").is_file()
    assert os.readlink(sysroot / "run/systemd/system/multi-user.target.wants/tool.service") \
        == "../tool.service"
    assert (sysroot / "run/tmpfiles.d/tool.conf").is_file()
