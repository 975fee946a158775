# SPDX-License-Identifier: Apache-2.0
"""Every entry type an image holds: files, sparse files, dirs, links, FIFOs, devices."""

from __future__ import annotations

import os
import stat
import tarfile

import pytest
import tarkit
from tarkit import blockdev, chardev, directory, fifo, hardlink, reg, symlink

from torcx import errors


def test_regular_file_content(sandbox):
    """A regular file lands with its exact content."""
    data = os.urandom(100_000)
    sandbox.extract(sandbox.archive([reg("blob", data)]))
    assert (sandbox.dest / "blob").read_bytes() == data


def test_empty_file(sandbox):
    """A zero-length regular file is created empty."""
    sandbox.extract(sandbox.archive([reg("empty")]))
    assert (sandbox.dest / "empty").stat().st_size == 0


def test_result_counts(sandbox):
    """Result counts entries, files, dirs, symlinks, hard links and file bytes."""
    members = [directory("d"), reg("d/a", b"x" * 10), reg("d/b", b"y" * 5),
               symlink("d/l", "a"), hardlink("d/h", "d/a")]
    result = sandbox.extract(sandbox.archive(members))
    assert (result.entries, result.files, result.dirs, result.symlinks, result.hardlinks) == \
        (5, 2, 1, 1, 1)
    assert result.bytes == 15
    assert result.others == 0
    assert result.archive_bytes == os.path.getsize(sandbox.archives / "a1.tar")


def _sparse_archive(sandbox, *tar_options):
    src = sandbox.archives / "src"
    src.mkdir()
    chunks = {0: b"head" * 1024, 8 << 20: b"middle", (16 << 20) - 4: b"tail"}
    content = tarkit.make_sparse_file(src / "disk.img", 16 << 20, chunks)
    (src / ".torcx").mkdir()
    (src / ".torcx" / "digests").write_text(f"{tarkit.xxh3(content)}  disk.img\n")
    out = tarkit.gnu_tar(sandbox.archives / "sparse.tar", src, [".torcx/digests", "disk.img"],
                         "--sparse", *tar_options)
    return out, content


@pytest.mark.parametrize("tar_options", [
    ("--format=gnu",),
    ("--format=posix", "--sparse-version=1.0"),
    ("--format=posix", "--sparse-version=0.1"),
], ids=["gnu", "pax-1.0", "pax-0.1"])
def test_sparse_file_stays_sparse(sandbox, tar_options):
    """A GNU/pax sparse member extracts with the right content and its holes kept."""
    archive, content = _sparse_archive(sandbox, *tar_options)
    result = sandbox.extract(archive)
    out = sandbox.dest / "disk.img"
    assert out.read_bytes() == content
    assert out.stat().st_blocks * 512 < 1 << 20, "the holes were written out as zeros"
    assert result.verified


def test_directory(sandbox):
    """A directory entry creates a directory."""
    sandbox.extract(sandbox.archive([directory("etc"), directory("etc/empty")]))
    assert (sandbox.dest / "etc" / "empty").is_dir()


def test_missing_parents_are_created(sandbox):
    """A file whose parent directories are not in the archive gets them created."""
    sandbox.extract(sandbox.archive([reg("usr/lib/deep/file", b"deep")]))
    assert (sandbox.dest / "usr" / "lib" / "deep" / "file").read_bytes() == b"deep"


def test_symlink_is_created_not_followed(sandbox):
    """Symlinks, even absolute or dangling ones, are created as links with their target."""
    members = [symlink("abs", "/etc/passwd"), symlink("rel", "sub/missing"),
               symlink("up", "../sentinel/secret")]
    sandbox.extract(sandbox.archive(members))
    assert os.readlink(sandbox.dest / "abs") == "/etc/passwd"
    assert os.readlink(sandbox.dest / "rel") == "sub/missing"
    assert os.readlink(sandbox.dest / "up") == "../sentinel/secret"


def test_hard_link_shares_the_inode(sandbox):
    """A hard link to an earlier file is the same inode, not a copy."""
    sandbox.extract(sandbox.archive([reg("bin/tool", b"#!/bin/sh\n", mode=0o755),
                                     hardlink("bin/alias", "bin/tool")]))
    a, b = os.lstat(sandbox.dest / "bin/tool"), os.lstat(sandbox.dest / "bin/alias")
    assert (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
    assert a.st_nlink == 2


def test_hard_link_with_dot_slash_names(sandbox):
    """A hard link written as './x' to './y' (GNU tar's spelling) resolves inside dest."""
    sandbox.extract(sandbox.archive([directory("./"), reg("./y", b"data"),
                                     hardlink("./x", "./y")]))
    assert os.lstat(sandbox.dest / "x").st_ino == os.lstat(sandbox.dest / "y").st_ino


def test_gnu_long_names(sandbox):
    """GNU long name and long link records restore paths and targets over 100 bytes."""
    long_dir = "/".join(["component-of-a-long-path"] * 6)
    members = [reg(f"{long_dir}/file", b"long"), symlink(f"{long_dir}/link", "x" * 150),
               hardlink("short", f"{long_dir}/file")]
    sandbox.extract(sandbox.archive(members, fmt=tarfile.GNU_FORMAT))
    assert (sandbox.dest / long_dir / "file").read_bytes() == b"long"
    assert os.readlink(sandbox.dest / long_dir / "link") == "x" * 150
    assert (sandbox.dest / "short").read_bytes() == b"long"


def test_pax_long_names(sandbox):
    """pax path and linkpath records restore paths and targets over 100 bytes."""
    long_dir = "/".join(["pax-component"] * 20)
    members = [reg(f"{long_dir}/file", b"pax"), symlink("link", long_dir + "/file")]
    sandbox.extract(sandbox.archive(members, fmt=tarfile.PAX_FORMAT))
    assert (sandbox.dest / long_dir / "file").read_bytes() == b"pax"
    assert (sandbox.dest / "link").read_bytes() == b"pax"


def test_ustar_prefix_names(sandbox):
    """ustar's prefix field joins a path longer than 100 bytes."""
    long_dir = "/".join(["ustar"] * 25)
    sandbox.extract(sandbox.archive([reg(f"{long_dir}/file", b"ustar")],
                                    fmt=tarfile.USTAR_FORMAT))
    assert (sandbox.dest / long_dir / "file").read_bytes() == b"ustar"


def test_fifo_refused_by_default(sandbox):
    """A FIFO is refused with UnsafeArchive unless the job allows devices."""
    err = sandbox.refuses(sandbox.archive([reg("ok", b"1"), fifo("pipe")]), errors.UnsafeArchive)
    assert err.entry == "pipe"


def test_fifo_created_when_allowed(sandbox):
    """With allow_devices a FIFO is created as a FIFO."""
    result = sandbox.extract(sandbox.archive([fifo("pipe", mode=0o640)]), allow_devices=True)
    st = os.lstat(sandbox.dest / "pipe")
    assert stat.S_ISFIFO(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert result.others == 1


def test_char_device_refused_by_default(sandbox):
    """A character device node is refused with UnsafeArchive by default."""
    err = sandbox.refuses(sandbox.archive([chardev("dev/null", 1, 3)]), errors.UnsafeArchive)
    assert err.entry == "dev/null"


def test_block_device_refused_by_default(sandbox):
    """A block device node is refused with UnsafeArchive by default."""
    sandbox.refuses(sandbox.archive([blockdev("dev/sda", 8, 0)]), errors.UnsafeArchive)


@tarkit.needs_root
def test_device_nodes_created_when_allowed(sandbox):
    """With allow_devices, as root, character and block nodes get their numbers."""
    sandbox.extract(sandbox.archive([chardev("dev/null", 1, 3), blockdev("dev/loop7", 7, 7)]),
                    allow_devices=True)
    c, b = os.lstat(sandbox.dest / "dev/null"), os.lstat(sandbox.dest / "dev/loop7")
    assert stat.S_ISCHR(c.st_mode) and (os.major(c.st_rdev), os.minor(c.st_rdev)) == (1, 3)
    assert stat.S_ISBLK(b.st_mode) and (os.major(b.st_rdev), os.minor(b.st_rdev)) == (7, 7)


def test_empty_archive(sandbox):
    """An archive without members extracts to an empty destination."""
    result = sandbox.extract(sandbox.archive([]))
    assert list(sandbox.dest.iterdir()) == []
    assert result.entries == 0


def test_destination_mode_without_dot_entry(sandbox):
    """Without a './' entry the destination is 0755 (not the staging folder's 0700)."""
    sandbox.extract(sandbox.archive([reg("f", b"x")]))
    assert stat.S_IMODE(os.stat(sandbox.dest).st_mode) == 0o755


def test_relative_destination(sandbox, monkeypatch):
    """A destination given relative to the current folder lands there."""
    archive = sandbox.archive([reg("f", b"relative")])
    monkeypatch.chdir(sandbox.parent)
    from torcx import engine

    engine.extract(str(archive), "dest")
    assert (sandbox.dest / "f").read_bytes() == b"relative"
    sandbox.assert_outside_untouched()


def test_destination_with_trailing_slash(sandbox):
    """A destination spelled with a trailing slash lands at the same folder."""
    from torcx import engine

    engine.extract(str(sandbox.archive([reg("f", b"slash")])), f"{sandbox.dest}/")
    assert (sandbox.dest / "f").read_bytes() == b"slash"
    sandbox.assert_outside_untouched()


def test_non_utf8_name(sandbox):
    """A file name that is not UTF-8 keeps its exact bytes and verifies against the list."""
    result = sandbox.extract(sandbox.archive([reg("caf\udce9", b"latin-1")], digests=True))
    assert b"caf\xe9" in os.listdir(os.fsencode(sandbox.dest))
    assert result.verified
