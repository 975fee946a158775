# SPDX-License-Identifier: Apache-2.0
"""Every compression the engine reads, detected from the content, never from the name."""

from __future__ import annotations

import io
import os
import struct
import tarfile
import zlib

import pytest
import tarkit
from tarkit import directory, reg, symlink


def _members():
    return [directory("usr"), directory("usr/bin"),
            reg("usr/bin/tool", os.urandom(4096) + b"\0" * 200_000, mode=0o755),
            reg("usr/share/doc", b"documentation\n" * 1000), symlink("tool", "usr/bin/tool")]


def _check_tree(dest, members):
    for m in members:
        if m.info.isreg():
            assert (dest / m.info.name).read_bytes() == m.data, m.info.name


# The misleading name is the one of another format, so a name-based guess fails.
@pytest.mark.parametrize("tool,expected,misleading_name", [
    ("gzip", "gzip", "image.tar.zst"),
    ("pigz", "gzip", "image.tar.xz"),
    ("zstd", "zstd", "image.tgz"),
    ("xz", "xz", "image.tar.lz4"),
    ("lz4", "lz4", "image.tar.bz2"),
    ("bzip2", "bzip2", "image.tar"),
])
def test_compression_detected_from_content(sandbox, tool, expected, misleading_name):
    """Each compressor's stream extracts and Result.compression names it, whatever the file name."""
    members = _members()
    archive = sandbox.archive(members, digests=True, compress=tool, name=misleading_name)
    result = sandbox.extract(archive)
    _check_tree(sandbox.dest, members)
    assert result.compression == expected
    assert result.verified


def test_uncompressed_tar_named_tgz(sandbox):
    """A plain tar named .tgz extracts and reports compression 'none'."""
    members = _members()
    result = sandbox.extract(sandbox.archive(members, digests=True, name="image.tgz"))
    _check_tree(sandbox.dest, members)
    assert result.compression == "none"


def test_gzip_multi_member(sandbox):
    """A gzip file of several concatenated members is read to the last member."""
    members = _members() + [reg("last", b"in the last member" * 3000)]
    plain = tarkit.write_tar(sandbox.archives / "plain.tar", members, digests=True)
    archive = tarkit.gzip_multi_member(plain, sandbox.archives / "multi.tar.gz", parts=4)
    result = sandbox.extract(archive)
    _check_tree(sandbox.dest, members)
    assert result.compression == "gzip"
    assert result.verified


def test_python_tarfile_gzip(sandbox):
    """A .tar.gz written by Python's tarfile (file name in its gzip header) extracts."""
    members = _members()
    archive = sandbox.archives / "py.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for m in members:
            tar.addfile(m.info, io.BytesIO(m.data) if m.info.isreg() else None)
    result = sandbox.extract(archive)
    _check_tree(sandbox.dest, members)
    assert result.compression == "gzip"


def test_zstd_multi_frame(sandbox):
    """A zstd file of two concatenated frames is read to the end."""
    members = _members() + [reg("last", b"second frame" * 3000)]
    plain = tarkit.write_tar(sandbox.archives / "plain.tar", members, digests=True)
    data = plain.read_bytes()
    half = len(data) // 2
    (sandbox.archives / "p1").write_bytes(data[:half])
    (sandbox.archives / "p2").write_bytes(data[half:])
    z1 = tarkit.compress(sandbox.archives / "p1", "zstd")
    z2 = tarkit.compress(sandbox.archives / "p2", "zstd")
    archive = sandbox.archives / "multi.tar.zst"
    archive.write_bytes(z1.read_bytes() + z2.read_bytes())
    result = sandbox.extract(archive)
    _check_tree(sandbox.dest, members)
    assert result.compression == "zstd"


@pytest.mark.parametrize("tool,expected", [(None, "none"), ("zstd", "zstd")])
def test_compression_named_for_an_archive_without_members(sandbox, tool, expected):
    """An archive with no members still reports its compression."""
    result = sandbox.extract(sandbox.archive([], compress=tool))
    assert result.compression == expected


def _gzip_with_header(raw: bytes, flags: int, fields: bytes) -> bytes:
    """A one-member gzip of ``raw`` with the optional header ``fields`` its ``flags`` announce."""
    head = b"\x1f\x8b\x08" + bytes([flags]) + bytes(4) + b"\x00\x03" + fields
    if flags & 0x02:  # FHCRC: low 16 bits of the CRC-32 of the header so far
        head += struct.pack("<H", zlib.crc32(head) & 0xFFFF)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = deflate.compress(raw) + deflate.flush()
    return head + body + struct.pack("<II", zlib.crc32(raw), len(raw) & 0xFFFFFFFF)


_EXTRA = b"AB\x04\x00data"


@pytest.mark.parametrize("flags,fields", [
    (0x04, struct.pack("<H", len(_EXTRA)) + _EXTRA),
    (0x08 | 0x10, b"image.tar\x00made by hand\x00"),
    (0x02, b""),
    (0x02 | 0x04 | 0x08 | 0x10, struct.pack("<H", len(_EXTRA)) + _EXTRA + b"n\x00c\x00"),
], ids=["fextra", "fname-fcomment", "fhcrc", "all"])
def test_gzip_optional_header_fields(sandbox, flags, fields):
    """gzip members with FEXTRA, FNAME, FCOMMENT or FHCRC header fields are read."""
    members = _members()
    plain = tarkit.write_tar(sandbox.archives / "plain.tar", members, digests=True)
    archive = sandbox.archives / "hand.tar.gz"
    archive.write_bytes(_gzip_with_header(plain.read_bytes(), flags, fields))
    result = sandbox.extract(archive)
    _check_tree(sandbox.dest, members)
    assert result.compression == "gzip"
    assert result.verified
