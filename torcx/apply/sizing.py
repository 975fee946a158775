# SPDX-License-Identifier: Apache-2.0
"""How much tmpfs an image needs, read cheaply from its archive's compression framing.

The unpack tmpfs is sized from the plan instead of a fixed size. Reading the
tar stream to add up file sizes would cost a second full decompression at
boot, so we read only what the compression format already records, in a few
small reads at known offsets:

- tar (uncompressed): the file size.
- gzip: ISIZE (uncompressed length mod 2**32) of every member, lifted by
  multiples of 2**32 until it is at least half the member's compressed size. A
  file of several concatenated members (``cat a.gz b.gz``) is sized from all
  of them: the engine finds the members (torcx.engine.gzip_size: a memchr
  scan for the magic, each candidate confirmed by inflating 64 KiB from it),
  about the cost of one read of the file (20-60 ms for the reference
  profile's archives, on the boot's critical path); past 4096 lookalikes or
  1032x the file inflated, the last ISIZE is used. The scan is done once per
  archive: the unit plan (torcx.apply.unitplan) records what it found, and
  while the archive keeps its identity an archive of one member is sized from
  its last ISIZE alone (``_recorded_one_member``, two small reads).
- xz: the stream index at the end lists every block's uncompressed size.
- zstd: each frame's Frame_Content_Size when recorded; when a frame lacks it
  (``tar --zstd`` streams through a pipe), walking its block headers gives an
  upper bound (a compressed block never decodes to more than 128 KiB).

The result is the size of the tar *stream* (``need``); the files it holds
take no more than that plus page rounding (a 100-byte file takes 1 KiB of tar
but 4 KiB of tmpfs), which ``tmpfs_size`` covers with a margin. A tmpfs limit
reserves no memory, so a generous limit is free; ``need`` is what the machine
must certainly be able to hold, and is what the apply compares with
MemAvailable. An archive whose framing cannot be read (unknown compression)
falls back to a ratio guess, flagged ``exact=False``.
"""

from __future__ import annotations

import os
import struct

from .unitplan import stat_identity

GZIP_MAGIC = b"\x1f\x8b"
XZ_MAGIC = b"\xfd7zXZ\x00"
ZSTD_MAGIC = 0xFD2FB528
ZSTD_BLOCK_MAX = 128 * 1024
FALLBACK_RATIO = 10  # unknown framing: assume it may expand tenfold

# tmpfs size = need * MARGIN_NUM / MARGIN_DEN + MARGIN_BYTES: page rounding of
# small files (up to 4x for 1-byte files, ~1.3x for a tree of 8 KiB sources)
# and folders/symlinks, which tar stores in a header but tmpfs in a page.
MARGIN_NUM, MARGIN_DEN = 3, 2
MARGIN_BYTES = 16 << 20
PAGE = 4096

# Inodes and decoded bytes, per tarball image, passed to the engine as the
# job's max_entries and max_decoded. Every tar entry takes at least one
# 512-byte header of the decoded stream, so an image holds at most need/512
# entries; INODE_MARGIN covers folders made for missing parents, which the
# engine counts against the same limit. ENGINE_MAX_ENTRIES is the engine's
# own default (torcx.engine.DEFAULT_MAX_ENTRIES), never exceeded.
INODE_HEADER = 512
INODE_MARGIN = 4096
ENGINE_MAX_ENTRIES = 1_000_000
TMPFS_INODE_MARGIN = 1024  # the images' own folders, staging folders, mount points
DECODED_MARGIN = 16 << 20


class Estimate:
    """Bytes a tarball expands to (``need``), whether the archive recorded it, and how.

    ``members``: for gzip, the members it was sized from (1 when only the last
    ISIZE was used), recorded in the unit plan; None for other formats.
    A plain class: dataclasses (~4 ms) and namedtuple (~1 ms) cost start-up time.
    """

    __slots__ = ("need", "exact", "method", "members")

    def __init__(self, need: int, exact: bool, method: str, members: int | None = None):
        self.need, self.exact, self.method, self.members = need, exact, method, members

    def __eq__(self, other) -> bool:
        return isinstance(other, Estimate) and (
            (self.need, self.exact, self.method) == (other.need, other.exact, other.method))

    def __repr__(self) -> str:
        return f"Estimate(need={self.need}, exact={self.exact}, method={self.method!r})"


def _gzip(f, size: int) -> Estimate:
    try:
        from .. import engine  # loaded for the unpack that follows anyway
    except ImportError:
        engine = None
    if engine is not None:
        try:
            total, members = engine.gzip_size(f.name)
        except OSError:
            pass
        else:
            method = "gzip ISIZE" if members == 1 else f"gzip ISIZE of {members} members"
            return Estimate(total, True, method, members)
    f.seek(size - 4)
    isize = struct.unpack("<I", f.read(4))[0]
    # ISIZE wraps at 4 GiB. Deflate stores incompressible data in blocks with
    # 5 bytes of overhead (zlib's are 16 KiB): no sane stream decodes to less
    # than half its deflate bytes, so only an ISIZE below that has wrapped.
    floor = (size - _gzip_header_length(f) - 8) // 2
    while isize < floor:
        isize += 1 << 32
    return Estimate(isize, True, "gzip ISIZE", 1)


def _recorded_one_member(f, st, entry: dict) -> Estimate | None:
    """A gzip file's size without the member scan, when the unit plan allows it.

    ``entry`` is the plan's entry for this archive; it is used only while
    ``st`` (the open file's fstat) has its identity and it says that the scan
    found one member. The size is then the file's last ISIZE, read here; the
    plan's number must merely agree with it. None: scan as without a plan.

    Why a forged entry (the plan file is writable by whoever owns BASEDIR, the
    archive perhaps not) can never loosen the sizing: the only thing it can
    lie about is the member count, and the size used is the archive's own
    last ISIZE, taken only when it needs no lifting. The scan never sizes a
    file below that: with one member it gives that ISIZE; with more, the last
    member was inflated whole with its ISIZE checked, so it alone decodes to
    at least that; when it gives up, it uses that ISIZE (lifted, if ever, only
    upwards). So the need, and with
    it the image's decode bound, inode bound and tmpfs share (max_decoded,
    max_entries, tmpfs_size, tmpfs_inodes), and what fit_memory counts against
    MemAvailable, are at most what the scan would give. An archive undersold
    so stops at its own decode or inode bound and fails its unpack, as any
    archive whose framing undersells it does (its staging folder removed);
    the other images keep their own bounds, and the tmpfs was sized with
    theirs in full.
    """
    facts = entry.get("size")
    if (not isinstance(facts, dict) or facts.get("members") != 1
            or entry.get("identity") != stat_identity(st)):
        return None
    size = st.st_size
    f.seek(size - 4)
    isize = struct.unpack("<I", f.read(4))[0]
    # Lifting would need the header's length and could exceed what a scan finds
    # in a file of several members: those few (4 GiB or more) are scanned. 18:
    # the shortest header and the trailer, so no header's floor is above this.
    if isize < (size - 18) // 2 or facts.get("need") != isize:
        return None
    return Estimate(isize, True, "gzip ISIZE (one member, by the unit plan)", 1)


def _gzip_header_length(f) -> int:
    """Length of the first member's header (name, comment and extra fields vary)."""
    f.seek(0)
    head = f.read(1 << 16)
    flags, pos = head[3], 10
    if flags & 4:  # FEXTRA
        pos += 2 + int.from_bytes(head[pos:pos + 2], "little")
    for bit in (8, 16):  # FNAME, FCOMMENT: zero-terminated
        if flags & bit:
            end = head.find(b"\0", pos)
            if end < 0:
                return len(head)
            pos = end + 1
    return pos + (2 if flags & 2 else 0)  # FHCRC


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("bad xz index varint")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7


def _xz(f, size: int) -> Estimate:
    f.seek(size - 12)
    footer = f.read(12)
    if footer[10:12] != b"YZ":
        raise ValueError("no xz stream footer (stream padding or concatenation)")
    index_size = (struct.unpack("<I", footer[4:8])[0] + 1) * 4
    if index_size > size - 12:
        raise ValueError("xz index larger than the file")
    f.seek(size - 12 - index_size)
    index = f.read(index_size)
    if index[:1] != b"\x00":
        raise ValueError("bad xz index indicator")
    count, pos = _varint(index, 1)
    total = 0
    for _ in range(count):
        _, pos = _varint(index, pos)  # unpadded (compressed) size
        uncompressed, pos = _varint(index, pos)
        total += uncompressed
    return Estimate(total, True, "xz index")


def _zstd(f, size: int) -> Estimate:
    total, pos, exact = 0, 0, True
    while pos < size:
        f.seek(pos)
        head = f.read(18)
        if len(head) < 8:
            raise ValueError("truncated zstd frame header")
        magic = struct.unpack("<I", head[:4])[0]
        if magic & 0xFFFFFFF0 == 0x184D2A50:  # skippable frame
            pos += 8 + struct.unpack("<I", head[4:8])[0]
            continue
        if magic != ZSTD_MAGIC:
            raise ValueError("bad zstd frame magic")
        fhd = head[4]
        single = bool(fhd & 0x20)
        checksum = bool(fhd & 0x04)
        dict_len = (0, 1, 2, 4)[fhd & 0x03]
        fcs_len = (1 if single else 0, 2, 4, 8)[fhd >> 6]
        at = 5 + (0 if single else 1) + dict_len
        fcs = None
        if fcs_len:
            fcs = int.from_bytes(head[at:at + fcs_len], "little")
            if fcs_len == 2:
                fcs += 256
        pos += at + fcs_len
        # Walk the blocks to find the frame's end (and bound it when FCS is absent).
        bound = 0
        while True:
            f.seek(pos)
            bh = f.read(3)
            if len(bh) < 3:
                raise ValueError("truncated zstd block header")
            header = int.from_bytes(bh, "little")
            last, btype, bsize = header & 1, (header >> 1) & 3, header >> 3
            if btype == 1:  # RLE: one byte repeated bsize times
                bound += bsize
                pos += 3 + 1
            elif btype == 0:  # raw
                bound += bsize
                pos += 3 + bsize
            elif btype == 2:  # compressed
                bound += ZSTD_BLOCK_MAX
                pos += 3 + bsize
            else:
                raise ValueError("reserved zstd block type")
            if last:
                break
        pos += 4 if checksum else 0
        if fcs is None:
            exact = False
            total += bound
        else:
            total += fcs
    return Estimate(total, exact, "zstd frame sizes" if exact else "zstd block bound")


def estimate(path: str, planned: dict | None = None) -> Estimate:
    """Estimate the unpacked size of tarball ``path`` from its compression framing.

    ``planned``: the unit plan's entry for this archive (torcx.apply.unitplan),
    whose size facts spare a gzip file the member scan while it is fresh.
    Raises OSError if the file cannot be read; an unreadable framing falls back
    to a ratio guess rather than failing (the extraction will say what is wrong).
    """
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        size = st.st_size
        magic = f.read(6)
        try:
            if magic[:2] == GZIP_MAGIC and size >= 18:
                if planned is not None:
                    est = _recorded_one_member(f, st, planned)
                    if est is not None:
                        return est
                return _gzip(f, size)
            if magic == XZ_MAGIC and size >= 24:
                return _xz(f, size)
            if len(magic) >= 4 and struct.unpack("<I", magic[:4])[0] == ZSTD_MAGIC:
                return _zstd(f, size)
        except (ValueError, struct.error):
            return Estimate(size * FALLBACK_RATIO, False,
                            "compressed size x10 (unreadable framing)")
        f.seek(257)
        if f.read(5) == b"ustar":  # uncompressed tar (ustar, pax or GNU header)
            return Estimate(size, True, "tar size")
        return Estimate(size * FALLBACK_RATIO, False, "compressed size x10")


def tmpfs_size(need: int) -> int:
    """tmpfs limit for ``need`` bytes of tar streams: margin added, page aligned."""
    size = need * MARGIN_NUM // MARGIN_DEN + MARGIN_BYTES
    return (size + PAGE - 1) // PAGE * PAGE


def is_bound(est: Estimate) -> bool:
    """Whether ``est.need`` is a true upper bound of the decoded tar stream, not a guess."""
    return est.exact or est.method == "zstd block bound"


def max_entries(est: Estimate) -> int:
    """Inodes (entries and folders made for missing parents) one image may make."""
    return min(ENGINE_MAX_ENTRIES, est.need // INODE_HEADER + INODE_MARGIN)


def max_decoded(est: Estimate) -> int:
    """Bytes of decoded tar stream one image may produce, skipped data included.

    A bound plus an eighth and 16 MiB; a guess (no size in the framing) gets
    twice its tmpfs, so an image outgrowing its guess still meets ENOSPC first.
    """
    if is_bound(est):
        return est.need + est.need // 8 + DECODED_MARGIN
    return 2 * tmpfs_size(est.need) + DECODED_MARGIN


def tmpfs_inodes(estimates) -> int:
    """nr_inodes of the unpack tmpfs: every tarball image's max_entries plus a margin."""
    return sum(max_entries(e) for e in estimates) + TMPFS_INODE_MARGIN


def mem_available(meminfo: str = "/proc/meminfo") -> int | None:
    """MemAvailable in bytes, or None when the kernel does not say."""
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
