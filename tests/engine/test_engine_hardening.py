# SPDX-License-Identifier: Apache-2.0
"""Defects found by an outside review of the engine (issue 10), one test each.

Each test failed on the engine before its fix; each hostile archive built here
also has a reproducer in the fuzz seed corpus (csrc/fuzz/corpus).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tarkit
from tarkit import directory, hardlink, reg

from torcx import engine, errors


def _gzip_bad_trailer(sandbox, members, how: str):
    """A tgz whose tar end marker is decoded whole, then its gzip stream fails.

    Zeros after the tar (a large blocking factor) put the fault in a later block
    of decoded bytes than the end marker, after libarchive has said EOF.
    """
    plain = sandbox.archive(members, digests=True)
    plain.write_bytes(plain.read_bytes() + bytes(3 << 20))
    gz = tarkit.compress(plain, "gzip").read_bytes()
    if how == "crc":
        bad = gz[:-8] + bytes(b ^ 0xFF for b in gz[-8:-4]) + gz[-4:]
    else:  # truncated inside the gzip trailer, after the end marker was decoded
        bad = gz[:-6]
    path = sandbox.archives / f"bad-{how}.tgz"
    path.write_bytes(bad)
    return path


@pytest.mark.parametrize("how", ["crc", "truncated"])
@pytest.mark.parametrize("threads", [1, 2])
def test_failure_after_the_end_marker_names_no_freed_entry(sandbox, how, threads):
    """A gzip fault after the tar end names no entry (it used to name freed memory)."""
    members = [directory("d"), reg("d/" + "n" * 200, b"x" * 5000), reg("last", b"y")]
    archive = _gzip_bad_trailer(sandbox, members, how)
    # Two jobs with two threads: the second decodes ahead on a thread of its own.
    jobs = [engine.Job(str(archive), str(sandbox.dest))]
    if threads == 2:
        jobs.append(engine.Job(str(archive), None))
    for result in engine.extract_many(jobs, threads=threads):
        err = result.error
        assert isinstance(err, errors.CorruptArchive), err
        assert err.entry_index == -1 and err.entry == "", (err.entry_index, err.entry)
    sandbox.assert_clean_failure()


CSRC = Path(__file__).resolve().parents[2] / "csrc"


def _build_c_test(source: str, out: Path) -> Path:
    units = [str(p) for p in sorted(CSRC.glob("*.c")) if p.name != "entries.c"]
    cmd = ["gcc", "-O1", "-g", "-std=gnu11", "-D_GNU_SOURCE", '-DTORCX_VERSION="test"',
           f"-I{CSRC}", str(Path(__file__).parent / "c" / source), *units,
           "-larchive", "-lxxhash", "-lisal", "-lpthread", "-o", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_folder_fixup_sort_reads_no_path(tmp_path):
    """The deepest-first sort of folders compares depths counted once, never the paths."""
    program = _build_c_test("fixup_sort.c", tmp_path / "fixup_sort")
    r = subprocess.run([str(program)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "ok\n", (r.returncode, r.stderr[-2000:])


def _posix_acl(user: int, group: int, other: int) -> bytes:
    """system.posix_acl_access in the kernel's binary form (version 2)."""
    entries = [(0x01, user, 0xFFFFFFFF), (0x04, group, 0xFFFFFFFF), (0x20, other, 0xFFFFFFFF)]
    return (2).to_bytes(4, "little") + b"".join(
        t.to_bytes(2, "little") + p.to_bytes(2, "little") + i.to_bytes(4, "little")
        for t, p, i in entries)


FOREIGN_XATTRS = {
    "trusted.overlay.opaque": b"y",
    "trusted.overlay.redirect": b"/etc",
    "security.selinux": b"system_u:object_r:shadow_t:s0",
    "security.ima": b"\x03\x02\x04",
    "security.evil": b"x",
    "system.posix_acl_access": _posix_acl(7, 7, 7),
}


@tarkit.needs_root
@pytest.mark.parametrize("ownership", [True, False])
def test_only_user_and_capability_xattrs_land(sandbox, ownership):
    """Only user.* and (with ownership) security.capability land; trusted.*, other security.*
    names and ACLs never do, and an ACL never changes a mode."""
    cap = tarkit.CAP_NET_BIND_SERVICE_EP
    xattrs = dict(FOREIGN_XATTRS, **{"user.ok": b"1", "security.capability": cap})
    d = directory("d", mode=0o750)
    d.info.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                          for k, v in FOREIGN_XATTRS.items()}
    members = [d, reg("d/f", b"x", mode=0o640, xattrs=xattrs)]
    sandbox.extract(sandbox.archive(members), ownership=ownership)
    for path, mode in ((sandbox.dest / "d", 0o750), (sandbox.dest / "d/f", 0o640)):
        names = set(os.listxattr(path, follow_symlinks=False))
        assert not names & set(FOREIGN_XATTRS), names
        assert oct(os.lstat(path).st_mode & 0o7777) == oct(mode)
    names = set(os.listxattr(sandbox.dest / "d/f"))
    assert "user.ok" in names
    assert ("security.capability" in names) == ownership


def _late_list_bypass():
    """bin/a (bad), bin/b linked to it, bin/a (good), then a list naming only bin/a."""
    good = reg("bin/a", b"good", mode=0o755)
    return [directory("bin"), reg("bin/a", b"bad!", mode=0o755), hardlink("bin/b", "bin/a"),
            good, tarkit.digests_member(tarkit.digest_list([good]))]


def _late_list_setuid():
    """An unlisted 04755 file kept by a hard link, its name then replaced by a folder."""
    other = reg("other", b"listed")
    return [reg("x", b"#!/bin/sh\nid\n", mode=0o4755), hardlink("y", "x"), directory("x"),
            other, tarkit.digests_member(tarkit.digest_list([other]))]


@pytest.mark.parametrize("members", [_late_list_bypass, _late_list_setuid],
                         ids=["replaced-name", "setuid-unlisted"])
@pytest.mark.parametrize("mode", ["extract", "verify"])
def test_late_digest_list_checks_every_body_that_lands(sandbox, members, mode):
    """With .torcx/digests after the files, a body kept only by a hard link is still checked."""
    archive = sandbox.archive(members())
    if mode == "extract":
        sandbox.refuses(archive, errors.DigestMismatch, require_digests=True)
    else:
        with pytest.raises(errors.DigestMismatch):
            engine.verify(str(archive), require_digests=True)


def test_late_digest_list_still_accepts_a_good_archive(sandbox):
    """A list after the files and hard links verifies when every body is listed."""
    members = [reg("a", b"one"), hardlink("b", "a"), reg("c", b"three"), hardlink("d", "c")]
    archive = sandbox.archive(members + [tarkit.digests_member(tarkit.digest_list(members))])
    result = sandbox.extract(archive, require_digests=True)
    assert result.verified and engine.verify(str(archive)).verified
    assert (sandbox.dest / "b").read_bytes() == b"one"


def _deep_paths(count: int, depth: int):
    """``count`` files, each below its own chain of ``depth`` folders, none in the archive."""
    return [reg(f"c{i}/" + "a/" * depth + "f", b"") for i in range(count)]


_PEAK_VERIFY = """
import resource, sys
from torcx import engine
engine.verify(sys.argv[1])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _verify_peak_kib(archive) -> int:
    r = subprocess.run([sys.executable, "-c", _PEAK_VERIFY, str(archive)],
                       stdout=subprocess.PIPE, check=True, timeout=300)
    return int(r.stdout)


def test_verify_memory_follows_the_bytes_of_the_paths(sandbox):
    """Verifying 50 paths of 2,000 folders each costs megabytes, not gigabytes."""
    deep = sandbox.archive(_deep_paths(50, 1990), compress="gzip")
    assert deep.stat().st_size < 64 << 10
    tiny = sandbox.archive([reg("f", b"")], compress="gzip")
    growth = _verify_peak_kib(deep) - _verify_peak_kib(tiny)
    assert growth < 48 << 10, f"verify grew by {growth >> 10} MiB"


@pytest.mark.parametrize("mode", ["extract", "verify"])
def test_implicit_folders_count_against_max_entries(sandbox, mode):
    """Folders made for missing parents count as entries: a tiny archive cannot make 200k."""
    archive = sandbox.archive(_deep_paths(100, 1990), compress="gzip")
    if mode == "extract":
        err = sandbox.refuses(archive, errors.LimitExceeded, max_entries=100)
    else:
        with pytest.raises(errors.LimitExceeded) as info:
            engine.verify(str(archive), max_entries=100)
        err = info.value
    assert "more than 100 entries" in str(err)


@pytest.mark.parametrize("mode", ["extract", "verify"])
def test_max_entries_is_exact_with_implicit_folders(sandbox, mode):
    """Two files below three missing folders make five inodes: a limit of 5 passes, 4 fails."""
    archive = sandbox.archive([reg("a/b/c/f", b"1"), reg("a/g", b"2")])

    def run(limit):
        if mode == "verify":
            return engine.verify(str(archive), max_entries=limit)
        if sandbox.dest.exists():
            shutil.rmtree(sandbox.dest)
        return engine.extract(str(archive), str(sandbox.dest), max_entries=limit)

    assert run(5).entries == 2
    with pytest.raises(errors.LimitExceeded):
        run(4)


def _zstd_frame(parts) -> bytes:
    """A zstd frame from ("raw", bytes) and ("zeros", n) parts: zeros become RLE blocks,
    so gigabytes of decoded zeros cost a few bytes each 128 KiB."""
    out = bytearray(b"\x28\xb5\x2f\xfd\x00\x38")  # magic; no size, no checksum; 2**17 window
    blocks = []
    for kind, value in parts:
        if kind == "raw":
            for i in range(0, len(value), 1 << 17):
                blocks.append((0, value[i:i + (1 << 17)]))
        else:
            for i in range(0, value, 1 << 17):
                blocks.append((1, min(1 << 17, value - i)))
    for n, (btype, payload) in enumerate(blocks):
        size = len(payload) if btype == 0 else payload
        header = (n == len(blocks) - 1) | btype << 1 | size << 3
        out += header.to_bytes(3, "little") + (payload if btype == 0 else b"\0")
    return bytes(out)


def _hardlink_with_body(size: int) -> bytes:
    """The pax header of a hard link that announces a ``size``-byte body."""
    import tarfile
    info = tarfile.TarInfo("h")
    info.type, info.linkname, info.size = tarfile.LNKTYPE, "f", size
    info.mtime = tarkit.MTIME
    return info.tobuf(tarfile.PAX_FORMAT)


def _file_header(data: bytes) -> bytes:
    import tarfile
    info = tarfile.TarInfo("f")
    info.size, info.mtime = len(data), tarkit.MTIME
    return info.tobuf(tarfile.PAX_FORMAT) + data + bytes(-len(data) % 512)


@pytest.mark.parametrize("mode", ["extract", "verify"])
def test_a_skipped_hard_link_body_counts_as_decoded(sandbox, mode):
    """A hard link carrying a 16 GiB body of zeros (a 500 KB tar.zst) is refused early."""
    frame = _zstd_frame([("raw", _file_header(b"x") + _hardlink_with_body(16 << 30)),
                         ("zeros", (16 << 30) + 1024 + 8192)])
    archive = sandbox.archives / "link-body.tar.zst"
    archive.write_bytes(frame)
    assert len(frame) < 600_000
    if mode == "extract":
        err = sandbox.refuses(archive, errors.LimitExceeded, max_bytes=1 << 20)
    else:
        with pytest.raises(errors.LimitExceeded) as info:
            engine.verify(str(archive), max_bytes=1 << 20)
        err = info.value
    assert "decodes to more than" in str(err)


def test_a_gzip_hard_link_body_counts_as_decoded(sandbox):
    """The same through the ISA-L path: a tgz whose hard link skips 256 MiB of zeros."""
    import zlib
    z = zlib.compressobj(1, zlib.DEFLATED, 31)
    gz = z.compress(_file_header(b"x") + _hardlink_with_body(256 << 20))
    chunk = bytes(1 << 20)
    for _ in range(256):
        gz += z.compress(chunk)
    gz += z.compress(bytes(1024 + 8192)) + z.flush()
    archive = sandbox.archives / "link-body.tgz"
    archive.write_bytes(gz)
    sandbox.refuses(archive, errors.LimitExceeded, max_bytes=1 << 20)


@pytest.mark.parametrize("threads", [1, 2])
def test_data_after_the_tar_end_is_bounded(sandbox, threads):
    """A GiB of zeros after the tar end marker is refused, not decoded to its end."""
    frame = _zstd_frame([("raw", _file_header(b"x")), ("zeros", 1 << 30)])
    archive = sandbox.archives / "trailing.tar.zst"
    archive.write_bytes(frame)
    jobs = [engine.Job(str(archive), str(sandbox.dest))]
    if threads == 2:
        jobs.append(engine.Job(str(archive), None))
    for result in engine.extract_many(jobs, threads=threads):
        assert isinstance(result.error, errors.LimitExceeded), result.error
        assert "after the end of the tar stream" in str(result.error)
    sandbox.assert_clean_failure()


def test_decoded_bytes_are_reported(sandbox):
    """Result.decoded_bytes is the length of the decoded tar stream."""
    plain = sandbox.archive([reg("f", b"x" * 3000)])
    result = sandbox.extract(tarkit.compress(plain, "zstd"))
    assert result.decoded_bytes == plain.stat().st_size


def _inodes_of_a_small_tmpfs(target: str):
    engine.mount_tmpfs(target, 1 << 20, 0o755, nr_inodes=64)
    made = 0
    try:
        for i in range(1000):
            os.mkdir(os.path.join(target, str(i)))
            made += 1
    except OSError as e:
        return os.statvfs(target).f_files, made, e.errno
    return os.statvfs(target).f_files, made, 0


@tarkit.needs_root
def test_mount_tmpfs_limits_inodes(tmp_path):
    """mount_tmpfs(nr_inodes=N): the N+1th inode fails with ENOSPC, whatever the bytes left."""
    import errno
    target = tmp_path / "mnt"
    target.mkdir()
    files, made, err = tarkit.in_mount_namespace(_inodes_of_a_small_tmpfs, str(target))
    assert files == 64 and made == 63 and err == errno.ENOSPC
