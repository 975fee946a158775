# SPDX-License-Identifier: Apache-2.0
"""Writing the tar formats of an image through libarchive (libarchive-c), reproducibly.

pax (restricted: plain ustar headers unless a long name, xattrs or a large size
need more), numeric ownership 0:0 unless kept, no user/group names, mtimes
clamped to the epoch, no atime/ctime, gzip without name and timestamp, path
bytes written as they are (``hdrcharset=BINARY``) so the locale cannot change
the output. The digest list is the first member; every file is hashed again
while it is copied, so a file changed since its digest was taken fails the pack.
"""

from __future__ import annotations

import ctypes
import os
import stat
from typing import TYPE_CHECKING

import libarchive.ffi as laffi
import xxhash
from libarchive.entry import ArchiveEntry
from libarchive.write import new_archive_write

from .. import digestlist
from .tree import Node, changed, read_xattrs, resolve_epoch

if TYPE_CHECKING:
    from .formats import Format

CHUNK = digestlist.CHUNK
# Data goes to libarchive in slices smaller than zstd's output buffer
# (ZSTD_CStreamOutSize(), 128 KiB): each ZSTD_compressStream() call that
# libarchive makes flushes at most that buffer, so bigger slices let finished
# jobs' output pile up in zstd's 8 MB job buffers (135 MB instead of 80 MB
# peak on two threads, for incompressible data). The bytes do not change.
WRITE_SLICE = 64 << 10


def _lib(name: str, argtypes, restype=None):
    # Own ctypes handles (indexing makes a new function object), so libarchive-c's
    # global declarations and their error checks stay untouched.
    fn = laffi.libarchive[name]
    fn.argtypes = argtypes
    fn.restype = restype
    return fn


_VP, _CP = ctypes.c_void_p, ctypes.c_char_p
_copy_pathname = _lib("archive_entry_copy_pathname", [_VP, _CP])
_copy_symlink = _lib("archive_entry_copy_symlink", [_VP, _CP])
_copy_hardlink = _lib("archive_entry_copy_hardlink", [_VP, _CP])
_xattr_add = _lib("archive_entry_xattr_add_entry", [_VP, _CP, _VP, ctypes.c_size_t])
_entry_clear = _lib("archive_entry_clear", [_VP], _VP)


def tar_options(spec: Format, level: int | None, threads: int) -> str:
    """libarchive write options for a tar format (paths as bytes, gzip without timestamp)."""
    opts = ["hdrcharset=BINARY"]
    lvl = spec.default_level if level is None else level
    if spec.filter == "gzip":
        opts += ["gzip:!timestamp", f"gzip:compression-level={lvl}"]
    elif spec.filter == "zstd":
        opts += [f"zstd:compression-level={lvl}", f"zstd:threads={threads}"]
    elif spec.filter == "xz":
        # liblzma's threaded encoder cuts the stream in blocks, its single-threaded
        # one does not: always threaded, so the bytes do not depend on --threads.
        opts += [f"xz:compression-level={lvl}", f"xz:threads={max(2, threads)}"]
    return ",".join(opts)


class _TarWriter:
    """Writes entries into an open libarchive write handle."""

    def __init__(self, archive_p, root: bytes, epoch: int | None, keep_owner: bool):
        self.a = archive_p
        self.root = root
        self.epoch = epoch
        self.keep_owner = keep_owner
        self.entry = ArchiveEntry()
        self.first_name: dict[tuple[int, int], bytes] = {}
        self.buf = bytearray(CHUNK)

    def _mtime(self, st: os.stat_result) -> int:
        mtime = int(st.st_mtime)
        return mtime if self.epoch is None else min(mtime, self.epoch)

    def _begin(self, rel: bytes, mode: int, mtime: int, uid: int, gid: int):
        e = self.entry
        _entry_clear(e._entry_p)
        _copy_pathname(e._entry_p, rel)
        e.filetype = stat.S_IFMT(mode)
        e.perm = stat.S_IMODE(mode)
        e.uid, e.gid = uid, gid
        e.mtime = mtime
        return e

    def add_bytes(self, rel: bytes, data: bytes, mtime: int) -> None:
        e = self._begin(rel, stat.S_IFREG | 0o644, mtime, 0, 0)
        e.size = len(data)
        laffi.write_header(self.a, e._entry_p)
        laffi.write_data(self.a, data, len(data))
        laffi.write_finish_entry(self.a)

    def add_node(self, node: Node, digest: str | None) -> None:
        st = node.st
        path = os.path.join(self.root, node.rel)
        uid, gid = (st.st_uid, st.st_gid) if self.keep_owner else (0, 0)
        e = self._begin(node.rel, st.st_mode, self._mtime(st), uid, gid)
        key = (st.st_dev, st.st_ino)
        if stat.S_ISREG(st.st_mode) and key in self.first_name:
            _copy_hardlink(e._entry_p, self.first_name[key])
            e.size = 0
            laffi.write_header(self.a, e._entry_p)
            laffi.write_finish_entry(self.a)
            return
        if stat.S_ISLNK(st.st_mode):
            _copy_symlink(e._entry_p, os.readlink(path))
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            e.rdevmajor, e.rdevminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        for name, value in read_xattrs(path):
            _xattr_add(e._entry_p, name, value, len(value))
        if not stat.S_ISREG(st.st_mode):
            e.size = 0
            laffi.write_header(self.a, e._entry_p)
            laffi.write_finish_entry(self.a)
            return
        self.first_name[key] = node.rel
        e.size = st.st_size
        laffi.write_header(self.a, e._entry_p)
        self._copy_data(path, st.st_size, digest)
        laffi.write_finish_entry(self.a)

    def _copy_data(self, path: bytes, size: int, digest: str | None) -> None:
        h = xxhash.xxh3_128()
        view = memoryview(self.buf)
        cbuf = (ctypes.c_char * len(self.buf)).from_buffer(self.buf)
        done = 0
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            while True:
                n = os.readv(fd, [self.buf])
                if n == 0:
                    break
                done += n
                if done > size:
                    raise changed(path)
                h.update(view[:n])
                for start in range(0, n, WRITE_SLICE):
                    laffi.write_data(self.a, ctypes.byref(cbuf, start),
                                     min(WRITE_SLICE, n - start))
        finally:
            os.close(fd)
        if done != size or h.hexdigest() != digest:
            raise changed(path)


def write_tar(fd: int, rootfs: str, order: list[Node], digests: dict[bytes, str],
              spec: Format, *, level: int | None, threads: int, epoch: int | None,
              keep_owner: bool) -> None:
    """Write the tar archive of ``order`` into ``fd``, the digest list first."""
    options = tar_options(spec, level, threads)
    with new_archive_write("pax_restricted", spec.filter, options) as archive_p:
        laffi.write_open_fd(archive_p, fd)
        w = _TarWriter(archive_p, os.fsencode(rootfs), epoch, keep_owner)
        w.add_bytes(digestlist.DIGESTS_PATH, digestlist.render(digests),
                    resolve_epoch(epoch, order))
        for node in order:
            w.add_node(node, digests.get(node.rel))
