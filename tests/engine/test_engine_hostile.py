# SPDX-License-Identifier: Apache-2.0
"""The hostile corpus: each archive is refused with the right error and leaves no trace.

``sandbox.refuses`` checks the exception class, that it carries a message, and
that the whole sandbox (the sentinel folder next to dest, the parent listing,
dest itself, any staging folder) is exactly as before the extraction.
"""

from __future__ import annotations

import errno
import os
import tarfile

import pytest
import tarkit
from tarkit import directory, hardlink, reg, symlink

from torcx import engine, errors

# --- paths that escape ---------------------------------------------------------------


def test_absolute_path(sandbox):
    """A member with an absolute name (aimed at the sentinel) is refused."""
    target = f"{sandbox.sentinel}/pwned"
    err = sandbox.refuses(sandbox.archive([reg("ok", b"1"), reg(target, b"pwned")]),
                          errors.UnsafeArchive)
    assert err.entry == target
    assert err.entry_index == 1


def test_dotdot_traversal(sandbox):
    """A '../' member name is refused."""
    err = sandbox.refuses(sandbox.archive([reg("ok", b"1"), reg("../sentinel/pwned", b"x")]),
                          errors.UnsafeArchive)
    assert err.entry == "../sentinel/pwned"
    assert err.entry_index == 1


def test_dotdot_in_the_middle(sandbox):
    """A name that climbs out halfway ('a/../../x') is refused."""
    sandbox.refuses(sandbox.archive([directory("a"), reg("a/../../sentinel/pwned", b"x")]),
                    errors.UnsafeArchive)


def test_dotdot_that_stays_inside(sandbox):
    """Any '..' component is refused, even one that would stay inside ('a/../b')."""
    sandbox.refuses(sandbox.archive([directory("a"), reg("a/../b", b"x")]), errors.UnsafeArchive)


def test_symlink_to_root_then_file_through_it(sandbox):
    """A symlink to '/' followed by a file through it (aimed at the sentinel) is refused."""
    through = f"root{sandbox.sentinel}/pwned"
    err = sandbox.refuses(sandbox.archive([symlink("root", "/"), reg(through, b"pwned")]),
                          errors.UnsafeArchive)
    assert err.entry == through


def test_symlink_to_dotdot_then_file_through_it(sandbox):
    """A symlink to '..' followed by a file through it is refused."""
    err = sandbox.refuses(sandbox.archive([symlink("up", ".."), reg("up/sentinel/pwned", b"x")]),
                          errors.UnsafeArchive)
    assert err.entry == "up/sentinel/pwned"


def test_symlink_then_file_overwriting_its_target(sandbox):
    """A symlink to an outside file followed by a file named like the link's child is refused."""
    members = [symlink("s", "../sentinel"), reg("s/secret", b"overwritten")]
    sandbox.refuses(sandbox.archive(members), errors.UnsafeArchive)


def test_symlink_to_inside_dir_then_file_through_it(sandbox):
    """A path through a symlink is refused even when the link points inside dest."""
    members = [directory("real"), symlink("alias", "real"), reg("alias/f", b"x")]
    sandbox.refuses(sandbox.archive(members), errors.UnsafeArchive)


def test_symlink_then_directory_through_it(sandbox):
    """A directory entry through a symlink to the outside is refused."""
    members = [symlink("s", "../sentinel"), directory("s/newdir")]
    sandbox.refuses(sandbox.archive(members), errors.UnsafeArchive)


def test_verify_refuses_path_through_symlink(sandbox):
    """verify() refuses a path through an earlier symlink, as extraction does."""
    archive = sandbox.archive([symlink("up", ".."), reg("up/sentinel/pwned", b"x")])
    with pytest.raises(errors.UnsafeArchive):
        engine.verify(str(archive))


def test_symlink_replaced_by_directory_then_file_inside(sandbox):
    """A directory replacing an earlier symlink is a real directory; the file lands inside dest."""
    members = [symlink("d", "../sentinel"), directory("d"), reg("d/pwned", b"inside")]
    sandbox.extract(sandbox.archive(members))
    assert not os.path.islink(sandbox.dest / "d")
    assert (sandbox.dest / "d/pwned").read_bytes() == b"inside"


def test_file_replacing_a_symlink_is_not_written_through_it(sandbox):
    """A file entry over an earlier symlink to the outside replaces the link itself."""
    members = [symlink("f", "../sentinel/secret"), reg("f", b"pwned")]
    sandbox.extract(sandbox.archive(members))
    assert not os.path.islink(sandbox.dest / "f")
    assert (sandbox.dest / "f").read_bytes() == b"pwned"


def test_directory_replaced_by_symlink(sandbox):
    """An empty directory replaced by a later symlink extracts as the symlink."""
    members = [directory("d", mode=0o700), symlink("d", "elsewhere")]
    sandbox.extract(sandbox.archive(members))
    assert os.readlink(sandbox.dest / "d") == "elsewhere"


def test_symlink_replacing_the_digest_list(sandbox):
    """A later symlink named .torcx/digests (aimed outside) is refused, not left in the image."""
    members = [reg("a", b"1"), symlink(tarkit.DIGESTS_PATH, f"{sandbox.sentinel}/secret")]
    sandbox.refuses(sandbox.archive(members, digests=True),
                    (errors.DigestMismatch, errors.UnsafeArchive))


# --- hard links ---------------------------------------------------------------------


def test_hard_link_to_a_hard_link(sandbox):
    """A hard link to an earlier hard link shares the same inode."""
    sandbox.extract(sandbox.archive([reg("a", b"1"), hardlink("b", "a"), hardlink("c", "b")]))
    assert os.stat(sandbox.dest / "c").st_ino == os.stat(sandbox.dest / "a").st_ino
    assert os.stat(sandbox.dest / "a").st_nlink == 3


def test_hard_link_to_absolute_outside_path(sandbox):
    """A hard link to an absolute path outside dest is refused."""
    target = f"{sandbox.sentinel}/secret"
    err = sandbox.refuses(sandbox.archive([hardlink("h", target)]), errors.UnsafeArchive)
    assert err.entry == "h"
    assert os.stat(sandbox.sentinel / "secret").st_nlink == 1


def test_hard_link_to_dotdot_path(sandbox):
    """A hard link to '../sentinel/secret' is refused."""
    sandbox.refuses(sandbox.archive([hardlink("h", "../sentinel/secret")]), errors.UnsafeArchive)
    assert os.stat(sandbox.sentinel / "secret").st_nlink == 1


def test_hard_link_with_body_to_outside(sandbox):
    """A hard link carrying data, aimed at an outside file, neither links nor writes it."""
    target = f"{sandbox.sentinel}/secret"
    sandbox.refuses(sandbox.archive([hardlink("h", target, body=b"pwned\n")]),
                    errors.UnsafeArchive)


def test_hard_link_to_entry_not_yet_extracted(sandbox):
    """A hard link to a member that comes later in the archive is refused."""
    err = sandbox.refuses(sandbox.archive([hardlink("early", "late"), reg("late", b"x")]),
                          errors.UnsafeArchive)
    assert err.entry == "early"


def test_hard_link_through_symlink_to_outside(sandbox):
    """A hard link whose target path goes through an earlier symlink to the outside is refused."""
    members = [symlink("s", "../sentinel"), hardlink("h", "s/secret")]
    sandbox.refuses(sandbox.archive(members), errors.UnsafeArchive)
    assert os.stat(sandbox.sentinel / "secret").st_nlink == 1


def test_hard_link_to_symlink(sandbox):
    """A hard link to a symlink (not a regular file) is refused."""
    members = [symlink("s", f"{sandbox.sentinel}/secret"), hardlink("h", "s")]
    sandbox.refuses(sandbox.archive(members), errors.UnsafeArchive)


def test_hard_link_to_directory(sandbox):
    """A hard link to a directory is refused."""
    sandbox.refuses(sandbox.archive([directory("d"), hardlink("h", "d")]), errors.UnsafeArchive)


# --- duplicates -----------------------------------------------------------------------


def test_duplicate_file_later_replaces_earlier(sandbox):
    """A second, shorter copy of a file replaces the first completely (no stale tail)."""
    members = [reg("f", b"first copy, the longer one", mode=0o600),
               reg("f", b"second", mode=0o644)]
    sandbox.extract(sandbox.archive(members))
    assert (sandbox.dest / "f").read_bytes() == b"second"
    assert os.stat(sandbox.dest / "f").st_mode & 0o777 == 0o644


def test_duplicate_does_not_write_through_an_earlier_hard_link(sandbox):
    """A file replacing a hard-linked name gets its own inode; the other name keeps its data."""
    members = [reg("a", b"original"), hardlink("b", "a"), reg("b", b"replacement")]
    sandbox.extract(sandbox.archive(members))
    assert (sandbox.dest / "a").read_bytes() == b"original"
    assert (sandbox.dest / "b").read_bytes() == b"replacement"


# --- names and limits -------------------------------------------------------------------


def test_name_beyond_max_path(sandbox):
    """A name longer than Job(max_path) is refused with LimitExceeded."""
    name = "d/" + "n" * 200
    err = sandbox.refuses(sandbox.archive([reg(name, b"x")]), errors.LimitExceeded, max_path=128)
    assert err.entry_index == 0


def test_name_exactly_max_path(sandbox):
    """A name of exactly Job(max_path) bytes is accepted (the limit is inclusive)."""
    sandbox.extract(sandbox.archive([reg("x" * 128, b"x")]), max_path=128)
    assert (sandbox.dest / ("x" * 128)).read_bytes() == b"x"


def test_component_beyond_name_max(sandbox):
    """A 300-byte path component fails cleanly with ENAMETOOLONG."""
    err = sandbox.refuses(sandbox.archive([reg("y" * 300, b"x")]), errors.ExtractError)
    assert err.errno == errno.ENAMETOOLONG


def test_name_beyond_default_max_path(sandbox):
    """A pax name of 5000 bytes is refused with LimitExceeded under the default limit."""
    name = "/".join(["c" * 99] * 50)
    sandbox.refuses(sandbox.archive([reg(name, b"x")], fmt=tarfile.PAX_FORMAT),
                    errors.LimitExceeded)


def test_gnu_long_name_beyond_max_path(sandbox):
    """A GNU long-name record over Job(max_path) is refused with LimitExceeded."""
    name = "/".join(["g" * 60] * 10)
    sandbox.refuses(sandbox.archive([reg(name, b"x")], fmt=tarfile.GNU_FORMAT),
                    errors.LimitExceeded, max_path=256)


def test_too_many_entries(sandbox):
    """More members than Job(max_entries) is refused with LimitExceeded."""
    members = [reg(f"f{i}", b"x") for i in range(20)]
    sandbox.refuses(sandbox.archive(members), errors.LimitExceeded, max_entries=10)


def test_decompression_bomb(sandbox):
    """A small gzip that inflates beyond Job(max_bytes) is refused with LimitExceeded."""
    archive = sandbox.archive([reg("zeros", bytes(8 << 20))], compress="gzip")
    assert archive.stat().st_size < 64 << 10
    sandbox.refuses(archive, errors.LimitExceeded, max_bytes=1 << 20)


def test_bytes_limit_counts_every_file(sandbox):
    """Many files each under Job(max_bytes) but together over it are refused."""
    members = [reg(f"f{i}", bytes(100 << 10)) for i in range(12)]
    sandbox.refuses(sandbox.archive(members, compress="zstd"), errors.LimitExceeded,
                    max_bytes=1 << 20)


def test_sparse_bomb(sandbox):
    """A sparse member whose logical size is beyond Job(max_bytes) is refused."""
    src = sandbox.archives / "src"
    src.mkdir()
    tarkit.make_sparse_file(src / "huge", 64 << 20, {0: b"x"})
    archive = tarkit.gnu_tar(sandbox.archives / "sparse.tar", src, ["huge"], "--sparse")
    assert archive.stat().st_size < 64 << 10
    sandbox.refuses(archive, errors.LimitExceeded, max_bytes=1 << 20)


def _pax_sparse(realsize: int, mapping: list, data: bytes) -> tarkit.Member:
    """A pax 0.1 sparse member with a hand-written (possibly lying) map."""
    member = reg("sparse", data)
    member.info.pax_headers = {"GNU.sparse.size": str(realsize),
                               "GNU.sparse.map": ",".join(map(str, mapping))}
    return member


def test_pax_sparse_map_is_honoured(sandbox):
    """A hand-written pax sparse map places its chunks at their offsets (the control case)."""
    sandbox.extract(sandbox.archive([_pax_sparse(100, [0, 5, 50, 5], b"aaaaabbbbb")]))
    assert (sandbox.dest / "sparse").read_bytes() == b"aaaaa" + bytes(45) + b"bbbbb" + bytes(45)


def test_sparse_map_beyond_real_size(sandbox):
    """A sparse chunk placed 4 GiB past the declared size is refused with CorruptArchive."""
    # Kept at 4 GiB: an engine that hashes the hole before checking the offset
    # against the size spends ~50 s of CPU on a 1 TiB offset.
    member = _pax_sparse(20, [0, 5, 1 << 32, 5], b"aaaaabbbbb")
    sandbox.refuses(sandbox.archive([member]), errors.CorruptArchive)


def test_sparse_map_going_backwards(sandbox):
    """A sparse map whose chunks go backwards is refused with CorruptArchive."""
    member = _pax_sparse(100, [50, 5, 0, 5], b"aaaaabbbbb")
    sandbox.refuses(sandbox.archive([member]), errors.CorruptArchive)


def test_sparse_map_overlapping(sandbox):
    """A sparse map whose chunks overlap is refused with CorruptArchive."""
    member = _pax_sparse(100, [0, 8, 4, 2], b"aaaaaaaabb")
    sandbox.refuses(sandbox.archive([member]), errors.CorruptArchive)


# --- broken streams ------------------------------------------------------------------------


def _payload():
    return [reg(f"dir/file{i}", os.urandom(2000) + b"compressible " * 2000) for i in range(8)]


def test_truncated_tar(sandbox):
    """A plain tar cut in the middle of a file's data is refused with CorruptArchive."""
    archive = sandbox.archive(_payload())
    data = archive.read_bytes()
    archive.write_bytes(data[:len(data) // 2])
    sandbox.refuses(archive, errors.CorruptArchive)


def test_truncated_gzip(sandbox):
    """A tar.gz cut in half is refused with CorruptArchive."""
    archive = sandbox.archive(_payload(), compress="gzip")
    data = archive.read_bytes()
    archive.write_bytes(data[:len(data) // 2])
    sandbox.refuses(archive, errors.CorruptArchive)


def test_truncated_zstd(sandbox):
    """A tar.zst cut in half is refused with CorruptArchive."""
    archive = sandbox.archive(_payload(), compress="zstd")
    data = archive.read_bytes()
    archive.write_bytes(data[:len(data) // 2])
    sandbox.refuses(archive, errors.CorruptArchive)


def test_corrupt_gzip(sandbox):
    """A tar.gz with bytes flipped in the middle of its deflate data is refused."""
    archive = sandbox.archive(_payload(), compress="gzip")
    archive.write_bytes(tarkit.corrupt_deflate(archive.read_bytes()))
    sandbox.refuses(archive, errors.CorruptArchive)


def test_gzip_with_wrong_crc(sandbox):
    """A tar.gz whose trailer CRC does not match its content is refused (gzip -t fails too)."""
    archive = sandbox.archive(_payload(), compress="gzip")
    data = bytearray(archive.read_bytes())
    data[-8] ^= 0xFF  # first byte of the CRC-32 trailer
    archive.write_bytes(bytes(data))
    sandbox.refuses(archive, errors.CorruptArchive)


def test_corrupt_zstd(sandbox):
    """A tar.zst with bytes flipped in its middle is refused with CorruptArchive."""
    archive = sandbox.archive(_payload(), compress="zstd")
    archive.write_bytes(tarkit.flip_middle(archive.read_bytes()))
    sandbox.refuses(archive, errors.CorruptArchive)


def test_not_an_archive(sandbox):
    """A file of random bytes is refused with CorruptArchive."""
    archive = sandbox.archives / "random.tar"
    archive.write_bytes(os.urandom(10_000))
    sandbox.refuses(archive, errors.CorruptArchive)


def test_zero_byte_archive(sandbox):
    """A zero-byte file (an interrupted download) is refused with CorruptArchive."""
    archive = sandbox.archives / "empty.tar.gz"
    archive.write_bytes(b"")
    sandbox.refuses(archive, errors.CorruptArchive)


def test_no_external_decoder_is_run(sandbox, tmp_path, monkeypatch):
    """An archive with lrzip magic is refused without running any 'lrzip' program."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "decoder-ran"
    fake = bin_dir / "lrzip"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\nexec cat\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    archive = sandbox.archives / "image.tar.lrz"
    archive.write_bytes(b"LRZI\x00\x06" + bytes(100))
    try:
        engine.extract(str(archive), str(sandbox.dest))
    except errors.ExtractError:
        pass
    assert not marker.exists(), "the engine ran an external decoder chosen by the archive"
    sandbox.assert_clean_failure()


def test_corrupt_tar_header_checksum(sandbox):
    """A tar header whose checksum does not match is refused with CorruptArchive."""
    archive = sandbox.archive([reg("a", b"x" * 600), reg("b", b"y")])
    data = bytearray(archive.read_bytes())
    second = 512 + 1024  # first header, 600 bytes of data padded to 1024, then the second
    data[second] ^= 0x01  # change the name: the stored checksum no longer matches
    archive.write_bytes(bytes(data))
    err = sandbox.refuses(archive, errors.CorruptArchive)
    assert err.entry in ("", "b", "c"), "the error names a stale entry"


# --- the destination and the archive file -------------------------------------------------------


def test_destination_already_exists(sandbox):
    """An existing destination is an error and is left exactly as it was."""
    sandbox.dest.mkdir()
    (sandbox.dest / "keep").write_bytes(b"mine")
    before = tarkit.tree_snapshot(sandbox.root)
    archive = sandbox.archive([reg("keep", b"theirs"), reg("new", b"x")])
    try:
        engine.extract(str(archive), str(sandbox.dest))
    except errors.ExtractError as err:
        assert err.message.strip()
    else:
        raise AssertionError("extracting over an existing destination succeeded")
    assert tarkit.tree_snapshot(sandbox.root) == before


def test_destination_is_a_dangling_symlink(sandbox):
    """A dangling symlink at dest is an existing destination: never followed, left as it was."""
    os.symlink(sandbox.sentinel / "planted", sandbox.dest)
    before = tarkit.tree_snapshot(sandbox.root)
    with pytest.raises(errors.ExtractError) as info:
        engine.extract(str(sandbox.archive([reg("f", b"x")])), str(sandbox.dest))
    assert info.value.errno == errno.EEXIST
    assert tarkit.tree_snapshot(sandbox.root) == before


def test_destination_parent_missing(sandbox):
    """A destination whose parent folder does not exist fails with ENOENT, creating nothing."""
    archive = sandbox.archive([reg("f", b"x")])
    with pytest.raises(errors.ExtractError) as info:
        engine.extract(str(archive), str(sandbox.parent / "missing" / "dest"))
    assert info.value.errno == errno.ENOENT
    sandbox.assert_clean_failure()


def test_archive_is_a_folder(sandbox):
    """An archive path that is a folder fails with ExtractError, creating nothing."""
    folder = sandbox.archives / "folder.tar"
    folder.mkdir()
    sandbox.refuses(folder, errors.ExtractError)


def test_missing_archive(sandbox):
    """A missing archive file fails with ExtractError carrying ENOENT."""
    err = sandbox.refuses(sandbox.archives / "nope.tar", errors.ExtractError)
    assert err.errno == errno.ENOENT


def test_archive_is_a_fifo(sandbox):
    """An archive path that is a FIFO with no writer fails at once instead of hanging the boot."""
    import subprocess
    import sys

    fifo_path = sandbox.archives / "fifo.tar"
    os.mkfifo(fifo_path)
    code = ("import sys; from torcx import engine\n"
            "r = engine.extract_many([engine.Job(sys.argv[1], sys.argv[2])])[0]\n"
            "print(type(r.error).__name__, r.error.errno)")
    # The timeout only guards against the hang this test is about.
    out = subprocess.run([sys.executable, "-c", code, str(fifo_path), str(sandbox.dest)],
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["ExtractError", str(errno.EINVAL)], out.stderr
    sandbox.assert_clean_failure()
