# SPDX-License-Identifier: Apache-2.0
"""The same input gives byte-identical archives, run after run, in every format."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys

import libarchive
import pytest
from packkit import ALL_FORMATS, EPOCH, build_rootfs, is_root

from torcx.image.pack import pack_image


@pytest.fixture(scope="module")
def two_copies(tmp_path_factory):
    """The image root and a `cp -a` copy of it (other inodes, other directory order)."""
    base = tmp_path_factory.mktemp("repro")
    first = build_rootfs(base / "first", big_bytes=1 << 20, small_files=60)
    second = base / "second"
    subprocess.run(["cp", "-a", str(first), str(second)], check=True)
    return first, second


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_packing_twice_gives_identical_bytes(two_copies, tmp_path, fmt):
    """Two packs (copy of the tree, other thread count, other store) are byte-identical."""
    first, second = two_copies
    a = pack_image(str(first), "tool", "1", str(tmp_path / "a"), fmt=fmt, epoch=EPOCH,
                   threads=1)
    b = pack_image(str(second), "tool", "1", str(tmp_path / "b"), fmt=fmt, epoch=EPOCH,
                   threads=3)
    assert open(a.path, "rb").read() == open(b.path, "rb").read()
    assert (a.xxh3, a.sha512) == (b.xxh3, b.sha512)


def test_locale_does_not_change_the_bytes(two_copies, tmp_path):
    """Non-ASCII names are written as bytes: LC_ALL=C and C.UTF-8 give the same archive."""
    first, _ = two_copies
    outputs = []
    for locale in ("C", "C.UTF-8"):
        out = tmp_path / locale
        env = dict(os.environ, LC_ALL=locale, SOURCE_DATE_EPOCH=str(EPOCH))
        code = ("import sys; from torcx.image.pack import pack_image; "
                "pack_image(sys.argv[1], 'tool', '1', sys.argv[2], fmt='tar')")
        subprocess.run([sys.executable, "-c", code, str(first), str(out)], env=env,
                       check=True)
        outputs.append((out / "tool:1.torcx.tar").read_bytes())
    assert outputs[0] == outputs[1]


def test_gzip_header_has_no_name_and_no_timestamp(two_copies, tmp_path):
    """The gzip member header carries neither a file name nor a modification time."""
    first, _ = two_copies
    result = pack_image(str(first), "tool", "1", str(tmp_path), fmt="tgz", epoch=EPOCH)
    header = open(result.path, "rb").read(10)
    assert header[:3] == b"\x1f\x8b\x08"
    assert header[3] & 0x08 == 0  # FNAME flag
    assert header[4:8] == b"\0\0\0\0"  # MTIME
    with gzip.open(result.path) as g:
        assert g.read(512)  # a valid stream


def test_members_follow_torcx_then_propagated_files_then_sorted_order(two_copies, tmp_path):
    """Order: digests, .torcx/, propagated files, the rest sorted; each once, parents first."""
    first, _ = two_copies
    result = pack_image(str(first), "tool", "1", str(tmp_path), fmt="tar", epoch=EPOCH)
    with libarchive.file_reader(result.path) as archive:
        # libarchive-c gives bytes for a name that is not UTF-8 (one is in the tree)
        names = [e.pathname if isinstance(e.pathname, bytes) else e.pathname.encode()
                 for e in archive]
    assert names[:3] == [b".torcx/digests", b".torcx/", b".torcx/manifest.json"]
    propagated = [
        b"usr/", b"usr/lib/", b"usr/lib/systemd/",
        b"usr/lib/systemd/network/", b"usr/lib/systemd/network/50-tool.network",
        b"usr/lib/systemd/system/", b"usr/lib/systemd/system/multi-user.target.wants/",
        b"usr/lib/systemd/system/multi-user.target.wants/tool.service",
        b"usr/lib/systemd/system/tool.service",
        b"usr/lib/sysusers.d/", b"usr/lib/sysusers.d/tool.conf",
        b"usr/lib/tmpfiles.d/", b"usr/lib/tmpfiles.d/tool.conf",
        b"usr/lib/udev/", b"usr/lib/udev/rules.d/", b"usr/lib/udev/rules.d/50-tool.rules",
    ]
    assert names[3:3 + len(propagated)] == propagated
    rest = names[3 + len(propagated):]
    assert rest == sorted(rest, key=lambda p: p.split(b"/"))
    assert len(set(names)) == len(names)
    for i, name in enumerate(names[1:], 1):  # the digest list alone precedes .torcx/
        parent = name.rstrip(b"/").rpartition(b"/")[0]
        assert not parent or parent + b"/" in names[:i], name
    assert b"share/latin1-\xe9t\xe9.txt" in rest
    assert not any(n.startswith((b"./", b"/")) for n in names)


@pytest.fixture
def foreign_owner(two_copies):
    """bin/tool owned by 1234:5678 while the test runs (as non-root, files are the user's)."""
    path = two_copies[0] / "bin/tool"
    if is_root():
        os.chown(path, 1234, 5678)
    yield two_copies[0]
    if is_root():
        os.chown(path, 0, 0)


def test_ownership_is_zero_and_mtimes_are_clamped(foreign_owner, tmp_path):
    """Without --keep-owner every entry is 0:0 with no names; no mtime is after the epoch."""
    result = pack_image(str(foreign_owner), "tool", "1", str(tmp_path), fmt="tar", epoch=EPOCH)
    with libarchive.file_reader(result.path) as archive:
        entries = [(e.pathname, e.uid, e.gid, e.uname, e.gname, e.mtime, e.atime, e.ctime)
                   for e in archive]
    for name, uid, gid, uname, gname, mtime, atime, ctime in entries:
        assert (uid, gid) == (0, 0), name
        assert not uname and not gname, name
        assert mtime <= EPOCH, name
        assert atime is None and ctime is None, name
    assert dict((e[0], e[5]) for e in entries)["share/many/file-0001.txt"] < EPOCH


@pytest.mark.skipif(not is_root(), reason="chown needs root")
def test_keep_owner_keeps_numeric_ids_only(foreign_owner, tmp_path):
    """--keep-owner writes the numeric uid/gid and still no user or group names."""
    result = pack_image(str(foreign_owner), "tool", "1", str(tmp_path), fmt="tar", epoch=EPOCH,
                        keep_owner=True)
    with libarchive.file_reader(result.path) as archive:
        owners = {e.pathname: (e.uid, e.gid, e.uname, e.gname) for e in archive}
    assert owners["bin/tool"][:2] == (1234, 5678)
    assert not owners["bin/tool"][2] and not owners["bin/tool"][3]
