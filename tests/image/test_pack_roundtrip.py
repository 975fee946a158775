# SPDX-License-Identifier: Apache-2.0
"""Pack a realistic root folder in every format, unpack it, compare entry by entry."""

from __future__ import annotations

import os
import subprocess

import pytest
from packkit import (
    EPOCH,
    FS_FORMATS,
    TAR_FORMATS,
    build_rootfs,
    comparable,
    expected_after_pack,
    mounted_snapshot,
    needs_root,
    snapshot,
)

from torcx import engine
from torcx.image.pack import pack_image


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory):
    root = build_rootfs(tmp_path_factory.mktemp("image") / "rootfs")
    return root, snapshot(root)


@pytest.mark.parametrize("fmt", TAR_FORMATS)
def test_tar_formats_unpack_to_the_same_tree(rootfs, tmp_path, fmt):
    """Every tar format, extracted by the engine, gives back every entry as it was packed."""
    root, before = rootfs
    result = pack_image(str(root), "tool", "1.0", str(tmp_path / "store"), fmt=fmt,
                        epoch=EPOCH)
    dest = tmp_path / "unpacked"
    extracted = engine.extract(result.path, str(dest), require_digests=True,
                               allow_devices=True)
    assert extracted.verified
    assert comparable(snapshot(dest)) == comparable(expected_after_pack(before, fmt, EPOCH))


@pytest.mark.parametrize("fmt", TAR_FORMATS)
def test_digest_list_checks_out_with_xxh128sum(rootfs, tmp_path, fmt):
    """The unpacked .torcx/digests passes `xxh128sum -c` and lists every regular file."""
    root, before = rootfs
    result = pack_image(str(root), "tool", "1.0", str(tmp_path / "store"), fmt=fmt)
    dest = tmp_path / "unpacked"
    engine.extract(result.path, str(dest), allow_devices=True)
    proc = subprocess.run(["xxh128sum", "--strict", "-c", ".torcx/digests"], cwd=dest,
                          capture_output=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    listed = sorted(line.split(b"  ", 1)[1] for line in
                    (dest / ".torcx/digests").read_bytes().splitlines())
    regular = sorted(os.fsencode(rel) for rel, v in before.items()
                     if rel != "<hardlinks>" and v[0] == 0o100000)
    assert listed == regular
    extra_names = sum(len(group) - 1 for group in before["<hardlinks>"])
    assert result.files == len(regular) - extra_names  # a file with hard links counts once


@needs_root
@pytest.mark.parametrize("fmt", FS_FORMATS)
def test_file_system_images_mount_as_the_same_tree(rootfs, tmp_path, fmt):
    """squashfs and erofs images, loop-mounted, hold every entry with timestamps at the epoch."""
    root, before = rootfs
    result = pack_image(str(root), "tool", "1.0", str(tmp_path / "store"), fmt=fmt,
                        epoch=EPOCH)
    mounted = mounted_snapshot(result.path, fmt)
    assert mounted.pop("<root>") is True  # the digest list is in the image
    expected = expected_after_pack(before, fmt, EPOCH)
    # The staged .torcx folder and the image root carry the epoch too; compare the rest.
    assert mounted == expected


def test_pack_reports_sizes_and_digests_of_the_written_file(rootfs, tmp_path):
    """The result names the archive in the store and its real size, XXH3-128 and sha512."""
    import hashlib

    import xxhash

    root, before = rootfs
    result = pack_image(str(root), "tool", "1.0", str(tmp_path / "store"), fmt="tar.zst")
    assert result.path == str(tmp_path / "store" / "tool:1.0.torcx.tar.zst")
    data = open(result.path, "rb").read()
    assert result.packed_bytes == len(data) == os.path.getsize(result.path)
    assert result.xxh3 == xxhash.xxh3_128_hexdigest(data)
    assert result.sha512 == "sha512-" + hashlib.sha512(data).hexdigest()
    inodes = {}
    for top, _, names in os.walk(root):
        for name in names:
            st = os.lstat(os.path.join(top, name))
            if os.path.isfile(os.path.join(top, name)) and not os.path.islink(
                    os.path.join(top, name)):
                inodes[st.st_ino] = st.st_size
    assert result.unpacked_bytes == sum(inodes.values())


@needs_root
def test_staging_across_file_systems_copies_with_metadata(rootfs, tmp_path):
    """With the store on another file system (no hard links) the staged copies keep
    modes, setuid bits, hard links and xattrs (file capabilities too)."""
    import shutil
    import tempfile

    root, before = rootfs
    if os.stat("/dev/shm").st_dev == os.stat(root).st_dev:
        pytest.skip("/dev/shm is on the same file system as the test folder")
    store = tempfile.mkdtemp(prefix="torcx-pack-xdev-", dir="/dev/shm")
    try:
        result = pack_image(str(root), "tool", "1.0", store, fmt="squashfs", epoch=EPOCH)
        mounted = mounted_snapshot(result.path, "squashfs")
    finally:
        shutil.rmtree(store)
    mounted.pop("<root>")
    assert mounted == expected_after_pack(before, "squashfs", EPOCH)


@needs_root
@pytest.mark.parametrize("fmt", FS_FORMATS)
def test_keep_owner_in_file_system_images(tmp_path, fmt):
    """--keep-owner keeps numeric owners of files, folders and symlinks in squashfs/erofs."""
    root = tmp_path / "rootfs"
    (root / "data").mkdir(parents=True)
    (root / "data/file").write_bytes(b"owned\n")
    os.symlink("file", root / "data/link")
    for path, ids in (("data", (2000, 2001)), ("data/file", (1234, 5678)),
                      ("data/link", (3000, 3001))):
        os.lchown(root / path, *ids)
    result = pack_image(str(root), "own", "1", str(tmp_path / "store"), fmt=fmt,
                        epoch=EPOCH, keep_owner=True)
    owners = {rel: v[7:9] for rel, v in mounted_snapshot(result.path, fmt).items()
              if not rel.startswith("<")}
    assert owners["data"] == (2000, 2001)
    assert owners["data/file"] == (1234, 5678)
    assert owners["data/link"] == (3000, 3001)
    assert owners[".torcx"] == (0, 0)
