# SPDX-License-Identifier: Apache-2.0
"""Builders for the engine tests: tar members with raw control, digest lists, compressors.

Python's tarfile writes whatever we ask for (absolute names, '..', links anywhere,
duplicates), which is what a hostile corpus needs. Compression goes through the
real command-line tools so the engine sees the streams users actually produce.
"""

from __future__ import annotations

import ctypes
import errno
import io
import os
import pickle
import platform
import stat
import subprocess
import tarfile
import traceback
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import xxhash
from torcx_testing import in_mount_namespace, needs_root  # noqa: F401 - re-exported

from torcx.digestlist import hash_file

DIGESTS_PATH = ".torcx/digests"
MTIME = 1_600_000_000  # a fixed, recognisable mtime for every member

# vfs_cap_data revision 2 for cap_net_bind_service=ep, as setcap writes it:
# magic_etc (REVISION_2 | FLAG_EFFECTIVE), then permitted/inheritable low and high words.
CAP_NET_BIND_SERVICE_EP = (
    (0x02000001).to_bytes(4, "little")
    + (1 << 10).to_bytes(4, "little") + bytes(4)
    + bytes(4) + bytes(4)
)


@dataclass
class Member:
    """One tar member: its header and, for regular files, its data."""

    info: tarfile.TarInfo
    data: bytes = b""


def _info(name: str, kind: bytes, mode: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def reg(name: str, data: bytes = b"", mode: int = 0o644, mtime: int = MTIME,
        uid: int = 0, gid: int = 0, xattrs: dict | None = None) -> Member:
    """A regular file; ``xattrs`` maps names to bytes values (pax SCHILY.xattr.*)."""
    info = _info(name, tarfile.REGTYPE, mode, mtime)
    info.size = len(data)
    info.uid, info.gid = uid, gid
    if xattrs:
        # surrogateescape lets tarfile write arbitrary bytes (it then marks the
        # header hdrcharset=BINARY); plain ASCII values are written as they are.
        info.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                            for k, v in xattrs.items()}
    return Member(info, data)


def directory(name: str, mode: int = 0o755, mtime: int = MTIME,
              uid: int = 0, gid: int = 0) -> Member:
    info = _info(name, tarfile.DIRTYPE, mode, mtime)
    info.uid, info.gid = uid, gid
    return Member(info)


def symlink(name: str, target: str, mtime: int = MTIME, uid: int = 0, gid: int = 0) -> Member:
    info = _info(name, tarfile.SYMTYPE, 0o777, mtime)
    info.linkname = target
    info.uid, info.gid = uid, gid
    return Member(info)


def hardlink(name: str, target: str, mtime: int = MTIME, body: bytes = b"") -> Member:
    """A hard link; a non-empty ``body`` makes the hostile kind that carries data."""
    info = _info(name, tarfile.LNKTYPE, 0o644, mtime)
    info.linkname = target
    info.size = len(body)
    return Member(info, body)


def fifo(name: str, mode: int = 0o644) -> Member:
    return Member(_info(name, tarfile.FIFOTYPE, mode, MTIME))


def chardev(name: str, major: int, minor: int, mode: int = 0o666) -> Member:
    info = _info(name, tarfile.CHRTYPE, mode, MTIME)
    info.devmajor, info.devminor = major, minor
    return Member(info)


def blockdev(name: str, major: int, minor: int, mode: int = 0o660) -> Member:
    info = _info(name, tarfile.BLKTYPE, mode, MTIME)
    info.devmajor, info.devminor = major, minor
    return Member(info)


def xxh3(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def file_xxh3(path: str | Path) -> str:
    return hash_file(path)[0]


def image_path(name: str) -> str:
    """A member name as the digest list spells it: relative to the image root, no './'."""
    while name.startswith("./"):
        name = name[2:]
    return name


def digest_list(members: Iterable[Member]) -> bytes:
    """The xxh128sum lines of the regular files of ``members`` (a later duplicate wins)."""
    digests: dict = {}
    for m in members:
        if m.info.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
            digests[image_path(m.info.name)] = xxh3(m.data)
    return "".join(f"{d}  {p}\n" for p, d in digests.items()).encode("utf-8", "surrogateescape")


def digests_member(content: bytes | str) -> Member:
    if isinstance(content, str):
        content = content.encode("utf-8", "surrogateescape")
    return reg(DIGESTS_PATH, content)


def write_tar(path: str | Path, members: Sequence[Member], *,
              digests: bool | bytes | str = False,
              fmt: int = tarfile.PAX_FORMAT) -> Path:
    """Write ``members`` as an uncompressed tar at ``path``.

    ``digests=True`` puts a correct ``.torcx/digests`` first; bytes/str put that
    exact list first; False writes no list.
    """
    path = Path(path)
    members = list(members)
    if digests is True:
        members.insert(0, digests_member(digest_list(members)))
    elif digests is not False:
        members.insert(0, digests_member(digests))
    with tarfile.open(path, "w", format=fmt) as tar:
        for m in members:
            # Data goes with any member that has some: a hard link carrying a body
            # is one of the hostile cases.
            tar.addfile(m.info, io.BytesIO(m.data) if m.data or m.info.isreg() else None)
    return path


COMPRESSORS = {
    "gzip": ["gzip", "-c", "-n"],
    "pigz": ["pigz", "-c", "-n"],
    "zstd": ["zstd", "-q", "-c"],
    "xz": ["xz", "-c"],
    "lz4": ["lz4", "-q", "-c"],
    "bzip2": ["bzip2", "-c"],
}


def compress(path: str | Path, tool: str, out: str | Path | None = None) -> Path:
    """Compress ``path`` with the real ``tool`` into ``out`` (default: path + '.' + tool)."""
    path = Path(path)
    out = Path(out) if out is not None else path.with_name(path.name + "." + tool)
    with open(path, "rb") as src, open(out, "wb") as dst:
        subprocess.run(COMPRESSORS[tool], stdin=src, stdout=dst, check=True)
    return out


def gzip_multi_member(path: str | Path, out: str | Path, parts: int = 3) -> Path:
    """Compress ``path`` as ``parts`` concatenated gzip members (like `cat a.gz b.gz`)."""
    data = Path(path).read_bytes()
    step = -(-len(data) // parts)
    with open(out, "wb") as dst:
        for i in range(0, len(data), step):
            r = subprocess.run(["gzip", "-c", "-n"], input=data[i:i + step],
                               stdout=subprocess.PIPE, check=True)
            dst.write(r.stdout)
    return Path(out)


def corrupt_deflate(gz: bytes) -> bytes:
    """Flip bytes in the middle of a gzip stream so inflate itself fails (not only the CRC).

    Tries a few positions from the middle on and returns the first corruption
    zlib rejects as bad deflate data within the next 64 KiB, so the test does
    not depend on CRC checking. Stored (incompressible) blocks cannot be
    corrupted this way: give it compressible content.
    """
    # A flip inside literal data still decodes (only the trailer's CRC catches it); one in
    # a block header or a distance code does not. The 4 KiB steps alone left a small
    # archive two or three candidates, and about 1 payload in 200 none: then every 61st.
    offsets = list(range(len(gz) // 2, len(gz) - 16, 4099))[:64]
    offsets += [o for o in range(len(gz) // 2, len(gz) - 16, 61) if o not in offsets][:512]
    for offset in offsets:
        bad = bytearray(gz)
        for i in range(offset, offset + 8):
            bad[i] ^= 0xFF
        try:
            zlib.decompressobj(wbits=31).decompress(bytes(bad[:offset + (64 << 10)]))
        except zlib.error as e:
            if "check" not in str(e):  # "incorrect data/length check" is the trailer
                return bytes(bad)
    raise AssertionError("could not corrupt the deflate stream; is its content compressible?")


def flip_middle(data: bytes, count: int = 8) -> bytes:
    """``data`` with ``count`` bytes inverted in its middle."""
    bad = bytearray(data)
    mid = len(bad) // 2
    for i in range(mid, mid + count):
        bad[i] ^= 0xFF
    return bytes(bad)


def gnu_tar(out: str | Path, srcdir: str | Path, names: Sequence[str],
            *options: str) -> Path:
    """Run GNU tar to archive ``names`` (in that order) from ``srcdir`` into ``out``."""
    subprocess.run(["tar", "-cf", os.fspath(out), *options, "-C", os.fspath(srcdir),
                    "--owner=0", "--group=0", "--numeric-owner", *names], check=True)
    return Path(out)


def make_sparse_file(path: str | Path, size: int, chunks: dict) -> bytes:
    """A real sparse file of ``size`` bytes with ``chunks`` ({offset: bytes}) written.

    Returns its logical content.
    """
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in chunks.items():
            f.seek(offset)
            f.write(data)
    content = bytearray(size)
    for offset, data in chunks.items():
        content[offset:offset + len(data)] = data
    return bytes(content)


def tree_snapshot(root: str | Path) -> dict:
    """Everything under ``root`` (never following links): type, mode, size, content, target."""
    root = os.fspath(root)
    snap = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISLNK(st.st_mode):
                snap[rel] = ("link", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                snap[rel] = ("file", st.st_mode, st.st_nlink, file_xxh3(p))
            else:
                snap[rel] = (stat.S_IFMT(st.st_mode), st.st_mode)
    return snap


# --- running the engine where openat2 does not exist ---------------------------------

_NR_OPENAT2 = 437  # the same number on every Linux architecture
_AUDIT_ARCH_X86_64 = 0xC000003E
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_SECCOMP_RET_ALLOW = 0x7FFF0000
_SECCOMP_RET_ERRNO = 0x00050000


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _deny_openat2(err: int = errno.ENOSYS) -> None:
    """Install a seccomp filter making openat2 fail with ``err``: ENOSYS as on kernels
    before 5.6, EPERM as under container seccomp profiles that predate openat2."""
    ld_w_abs, jeq_k, ret_k = 0x20, 0x15, 0x06
    program = [
        (ld_w_abs, 0, 0, 4),                                  # A = arch
        (jeq_k, 1, 0, _AUDIT_ARCH_X86_64),                    # other arches: allow all
        (ret_k, 0, 0, _SECCOMP_RET_ALLOW),
        (ld_w_abs, 0, 0, 0),                                  # A = syscall number
        (jeq_k, 0, 1, _NR_OPENAT2),
        (ret_k, 0, 0, _SECCOMP_RET_ERRNO | err),
        (ret_k, 0, 0, _SECCOMP_RET_ALLOW),
    ]
    filters = (_SockFilter * len(program))(*[_SockFilter(*ins) for ins in program])
    prog = _SockFprog(len(program), filters)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or \
            libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "installing the seccomp filter")


def without_openat2(fn, *args, err: int = errno.ENOSYS):
    """Run fn(*args) in a forked child where openat2 fails with ``err``; return its result.

    This exercises the engine's component-by-component fallback walk, the path
    taken on kernels without openat2. The result must be picklable.
    """
    if platform.machine() != "x86_64":
        pytest.skip("the seccomp filter is written for x86_64")
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(rfd)
        status = 0
        try:
            _deny_openat2(err)
            payload = ("ok", fn(*args))
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            payload = ("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
            status = 1
        with os.fdopen(wfd, "wb") as w:
            w.write(pickle.dumps(payload))
        os._exit(status)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as r:
        data = r.read()
    os.waitpid(pid, 0)
    kind, value = pickle.loads(data) if data else ("error", "child died without a report")
    if kind == "error":
        raise AssertionError(f"without openat2: {value}")
    return value
