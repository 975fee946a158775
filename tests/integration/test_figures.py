# SPDX-License-Identifier: Apache-2.0
"""One image, one count: pack, inspect and the apply give the same files and bytes."""

from __future__ import annotations

import json
import os

from clikit import put_profile, torcx

VENDOR_PROFILES = "/usr/share/torcx/profiles"


def image(tmp_path):
    """Two regular files (one with a second hard link), a link, a manifest: 3 files."""
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / ".torcx").mkdir()
    (tree / "bin/tool").write_bytes(b"#!/bin/sh\necho tool\n")
    (tree / "bin/tool").chmod(0o755)
    os.link(tree / "bin/tool", tree / "bin/tool-again")
    (tree / "bin/data").write_bytes(b"x" * 500)  # under 1 KiB: "B" in the summary
    os.symlink("tool", tree / "bin/alias")
    (tree / ".torcx/manifest.json").write_text(
        '{"kind": "image-manifest-v0", "value": {"bin": ["/bin/tool"]}}')
    size = sum(os.path.getsize(tree / p) for p in ("bin/tool", "bin/data",
                                                    ".torcx/manifest.json"))
    return tree, 3, size


def test_pack_inspect_and_apply_count_the_same(tmp_path):
    """files = regular files, a hard-linked one once; bytes = theirs; the digest list in neither."""
    tree, files, size = image(tmp_path)
    root = tmp_path / "root"
    root.mkdir()
    r = torcx(root, "image", "pack", str(tree), "--name", "tool", "--reference", "1",
              "-o", "/usr/share/torcx/store", "--source-date-epoch", "0")
    assert r.status == 0, r
    line = f"unpacked:  {files} files, {size} bytes"
    assert line in r.out.splitlines()
    r = torcx(root, "image", "inspect", "tool:1")
    assert r.status == 0, r
    assert line in r.out.splitlines()
    assert "1 digest list" in r.out
    put_profile(root, VENDOR_PROFILES, "vendor", [("tool", "1")])
    r = torcx(root, "apply", "--no-mount", "--json")
    assert r.status == 0, r
    unpack = json.loads(r.out)["value"]["images"][0]["unpack"]
    assert (unpack["files"], unpack["bytes"]) == (files, size)


def test_apply_summary_says_the_same_and_explains_the_tmpfs_margin(tmp_path):
    """The apply's line says "N files, B B" and the tmpfs line says what its margin is."""
    tree, files, size = image(tmp_path)
    root = tmp_path / "root"
    root.mkdir()
    assert torcx(root, "image", "pack", str(tree), "--name", "tool", "--reference", "1",
                 "-o", "/usr/share/torcx/store").status == 0
    put_profile(root, VENDOR_PROFILES, "vendor", [("tool", "1")])
    r = torcx(root, "apply", "--dry-run")
    assert r.status == 0, r
    assert f": {files} files, {size} B, verified" in r.out
    tmpfs = [ln for ln in r.out.splitlines() if ln.strip().startswith("tmpfs ")]
    assert len(tmpfs) == 1
    assert "(a limit; it reserves no memory)" in tmpfs[0]
    assert "of unpacked tar streams (an upper bound), plus 50% and 16.0 MiB for page " \
        "rounding of small files and folders" in tmpfs[0]
