# SPDX-License-Identifier: Apache-2.0
"""``torcx image pack``: turn an image root folder into a verified, reproducible archive.

Two passes over the root folder: the first hashes every regular file into the
digest list ``.torcx/digests``, the second writes the archive (the digest list
first, then ``.torcx/manifest.json``, then every entry in sorted order) and
hashes each file again to prove it did not change in between. Both passes
stream in fixed-size chunks, so memory does not grow with the image.

Tar formats are written through libarchive (libarchive-c): pax (restricted, so
plain ustar headers unless a long name, xattrs or a large size need more),
numeric ownership 0:0 unless kept, no user/group names, mtimes clamped to the
source date epoch, no atime/ctime, gzip without name and timestamp, path bytes
written as they are (``hdrcharset=BINARY``) so the locale cannot change the
output. squashfs and erofs images are made by mksquashfs and mkfs.erofs from a
staged tree (hard links to the root folder's files where possible) that adds the
digest list, with every timestamp set to the epoch.

The archive is written to a temporary file in the store and renamed into place;
an existing archive is replaced only when asked to.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
import uuid
from dataclasses import asdict, dataclass

import libarchive.ffi as laffi
import xxhash
from libarchive.entry import ArchiveEntry
from libarchive.exception import ArchiveError
from libarchive.write import new_archive_write

from . import digestlist, imagecheck
from .errors import ConfigError, InvalidImage, NotFound, PackError
from .imagecheck import Problem

MANIFEST_REL = b".torcx/manifest.json"
TORCX_DIR_REL = b".torcx"
CHUNK = digestlist.CHUNK
# xattrs an image may carry: user data and file capabilities (e.g. ping's cap_net_raw).
KEPT_XATTR_PREFIXES = (b"user.", b"security.capability")


@dataclass(frozen=True)
class Format:
    """How one archive format is written: libarchive filter or external tool, level range."""

    name: str
    filter: str | None  # libarchive write filter for tar formats
    tool: str | None    # mksquashfs / mkfs.erofs for file system images
    default_level: int | None
    min_level: int = 0
    max_level: int = 0


FORMATS = {
    "tgz": Format("tgz", "gzip", None, 6, 1, 9),
    "tar.zst": Format("tar.zst", "zstd", None, 3, 1, 19),
    "tar.xz": Format("tar.xz", "xz", None, 6, 0, 9),
    "tar": Format("tar", None, None, None),
    "squashfs": Format("squashfs", None, "mksquashfs", 9, 1, 9),  # gzip: every kernel reads it
    "erofs": Format("erofs", None, "mkfs.erofs", 9, 0, 12),       # lz4hc
}
DEFAULT_FORMAT = "tgz"  # the upstream format: every torcx reads it


@dataclass(frozen=True)
class Node:
    """One entry of the root folder: path relative to the root (bytes, no './') and lstat."""

    rel: bytes
    st: os.stat_result


@dataclass
class PackResult:
    """What was written: the archive and its digests (``sha512`` as ``sha512-<hex>``)."""

    path: str
    name: str
    reference: str
    format: str
    entries: int
    files: int
    unpacked_bytes: int
    packed_bytes: int
    xxh3: str
    sha512: str

    def to_json(self) -> dict:
        return {"kind": "torcx-image-pack-v0", "value": asdict(self)}

    def lines(self) -> list[str]:
        return [
            f"archive:   {self.path}",
            f"format:    {self.format}",
            f"entries:   {self.entries} ({self.files} regular files)",
            f"unpacked:  {self.unpacked_bytes} bytes",
            f"packed:    {self.packed_bytes} bytes",
            f"xxh3-128:  {self.xxh3}",
            f"sha512:    {self.sha512}",
        ]


# -- options -------------------------------------------------------------------

def source_date_epoch(value: int | None = None, environ=os.environ) -> int | None:
    """The epoch to clamp mtimes to: ``value``, else SOURCE_DATE_EPOCH, else None."""
    if value is None:
        text = environ.get("SOURCE_DATE_EPOCH", "").strip()
        if not text:
            return None
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"SOURCE_DATE_EPOCH={text!r}: not an integer") from None
    if value < 0:
        raise ConfigError(f"source date epoch {value}: must not be negative")
    return value


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _check_options(fmt: str, level: int | None, threads: int | None) -> Format:
    spec = FORMATS.get(fmt)
    if spec is None:
        raise ConfigError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    if level is not None:
        if spec.default_level is None:
            raise ConfigError(f"--level: format {fmt} is not compressed")
        if not spec.min_level <= level <= spec.max_level:
            raise ConfigError(f"--level {level}: {fmt} takes {spec.min_level} to {spec.max_level}")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads {threads}: must be at least 1")
    return spec


# -- pass 0: the tree ----------------------------------------------------------

def scan_tree(rootfs: str) -> tuple[list[Node], list[Problem]]:
    """Every entry below ``rootfs`` depth first, names sorted by bytes, never following links.

    ``.torcx/digests`` is left out (the pack writes its own). Sockets and names
    holding a newline (which the digest list cannot name) are problems.
    """
    root = os.fsencode(rootfs)
    nodes: list[Node] = []
    problems: list[Problem] = []
    folders = [b""]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(os.path.join(root, folder) if folder else root) as it:
                names = [e.name for e in it]
        except OSError as e:
            problems.append(Problem(_show(folder) or ".", f"cannot list: {e.strerror}"))
            continue
        for name in names:
            rel = folder + b"/" + name if folder else name
            try:
                st = os.lstat(os.path.join(root, rel))
            except OSError as e:
                problems.append(Problem(_show(rel), f"cannot stat: {e.strerror}"))
                continue
            if b"\n" in name:
                problems.append(Problem(_show(rel), "name holds a newline; the digest list "
                                                    "cannot name it"))
                continue
            if rel == digestlist.DIGESTS_PATH:
                if stat.S_ISDIR(st.st_mode):
                    problems.append(Problem(_show(rel), "is a folder; the pack writes this file"))
                continue  # replaced by the digest list this pack computes
            if stat.S_ISSOCK(st.st_mode):
                problems.append(Problem(_show(rel), "is a socket; archives cannot hold one"))
                continue
            nodes.append(Node(rel, st))
            if stat.S_ISDIR(st.st_mode):
                folders.append(rel)
    # Depth first, names sorted by bytes: each folder is followed by its whole subtree.
    nodes.sort(key=lambda n: n.rel.split(b"/"))
    problems.sort(key=lambda p: p.path)
    return nodes, problems


def archive_order(nodes: list[Node]) -> list[Node]:
    """The manifest right after the digest list, then every other entry in tree order."""
    first = [n for n in nodes if n.rel == MANIFEST_REL]
    return first + [n for n in nodes if n.rel != MANIFEST_REL]


def _show(rel: bytes) -> str:
    return os.fsdecode(rel)


# -- pass 1: digests -----------------------------------------------------------

def compute_digests(rootfs: str, nodes: list[Node]) -> tuple[dict[bytes, str], int]:
    """``({path: xxh3-128 hex}, unpacked bytes)``: every regular file, hard links once read."""
    root = os.fsencode(rootfs)
    by_inode: dict[tuple[int, int], str] = {}
    digests: dict[bytes, str] = {}
    total = 0
    for node in nodes:
        if not stat.S_ISREG(node.st.st_mode):
            continue
        key = (node.st.st_dev, node.st.st_ino)
        digest = by_inode.get(key)
        if digest is None:
            path = os.path.join(root, node.rel)
            try:
                digest, size = digestlist.hash_file(path)
            except OSError as e:
                raise PackError(e.errno, f"{_show(path)}: cannot read: {e.strerror}") from None
            if size != node.st.st_size:
                raise _changed(path)
            by_inode[key] = digest
            total += size
        digests[node.rel] = digest
    return digests, total


def _changed(path: bytes) -> PackError:
    return PackError(errno.EAGAIN, f"{_show(path)}: changed while packing; pack a quiet tree")


def resolve_epoch(epoch: int | None, nodes: list[Node]) -> int:
    """A fixed timestamp for what has none of its own: the epoch, else the newest mtime."""
    if epoch is not None:
        return epoch
    return max((int(n.st.st_mtime) for n in nodes), default=0)


# -- pass 2a: tar formats through libarchive -----------------------------------

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


def read_xattrs(path: bytes) -> list[tuple[bytes, bytes]]:
    """The kept xattrs of ``path`` (not following a symlink), sorted by name."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return []
        raise
    out = []
    for name in sorted(os.fsencode(n) for n in names):
        if name.startswith(KEPT_XATTR_PREFIXES):
            out.append((name, os.getxattr(path, name, follow_symlinks=False)))
    return out


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
                    raise _changed(path)
                h.update(view[:n])
                laffi.write_data(self.a, cbuf, n)
        finally:
            os.close(fd)
        if done != size or h.hexdigest() != digest:
            raise _changed(path)


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


# -- pass 2b: file system images through their tools ---------------------------

def stage_tree(rootfs: str, nodes: list[Node], stage: str, digests_blob: bytes,
               keep_owner: bool) -> None:
    """Recreate ``rootfs`` in the empty folder ``stage`` plus the digest list.

    Regular files are hard-linked when the file system allows it (no copy, and
    the originals are never modified), else copied. Folder modes, owners and
    xattrs are applied last, so read-only folders can still be filled.
    """
    root, top = os.fsencode(rootfs), os.fsencode(stage)
    staged_inode: dict[tuple[int, int], bytes] = {}
    folders = [(top, os.lstat(root))]
    for node in nodes:
        src, dst = os.path.join(root, node.rel), os.path.join(top, node.rel)
        st = node.st
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            os.mkdir(dst, 0o700)
            folders.append((dst, st))
        elif stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if key in staged_inode:
                os.link(staged_inode[key], dst)
            else:
                _link_or_copy(src, dst, st, keep_owner)
                staged_inode[key] = dst
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(src), dst)
            if keep_owner:
                os.lchown(dst, st.st_uid, st.st_gid)
        else:  # FIFOs and device nodes
            try:
                os.mknod(dst, mode, st.st_rdev)
            except PermissionError:
                raise PackError(errno.EPERM, f"{_show(src)}: device nodes are staged for "
                                             "squashfs/erofs only as root") from None
            _apply_meta(dst, st, keep_owner, src)
    torcx_dir = os.path.join(top, TORCX_DIR_REL)
    if not os.path.isdir(torcx_dir):
        os.mkdir(torcx_dir, 0o755)
    with open(os.path.join(top, digestlist.DIGESTS_PATH), "wb") as f:
        f.write(digests_blob)
    os.chmod(os.path.join(top, digestlist.DIGESTS_PATH), 0o644)
    for dst, st in reversed(folders):
        _apply_meta(dst, st, keep_owner, os.path.join(root, os.path.relpath(dst, top)))


def _link_or_copy(src: bytes, dst: bytes, st: os.stat_result, keep_owner: bool) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
        return
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK, errno.ENOTSUP):
            raise
    fd_in = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fd_out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            while os.sendfile(fd_out, fd_in, None, CHUNK * 8):
                pass
        finally:
            os.close(fd_out)
    finally:
        os.close(fd_in)
    _apply_meta(dst, st, keep_owner, src)


def _apply_meta(dst: bytes, st: os.stat_result, keep_owner: bool, src: bytes) -> None:
    # chown first: it clears setuid bits and file capabilities set before it.
    if keep_owner:
        os.lchown(dst, st.st_uid, st.st_gid)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    for name, value in read_xattrs(src):
        os.setxattr(dst, name, value, follow_symlinks=False)


def _remove_tree(path: str) -> None:
    # Staged folders may be read-only; make them writable before removing (never the originals:
    # only folders, which are always our own copies, are touched).
    for top, dirs, _ in os.walk(path):
        for d in dirs:
            p = os.path.join(top, d)
            if not os.path.islink(p):
                os.chmod(p, 0o700)
    shutil.rmtree(path, ignore_errors=True)


def fs_image_command(spec: Format, stage: str, out: str, *, name: str, reference: str,
                     level: int | None, threads: int, epoch: int,
                     keep_owner: bool) -> list[str]:
    """The mksquashfs / mkfs.erofs command line that makes a reproducible image."""
    lvl = spec.default_level if level is None else level
    if spec.name == "squashfs":
        cmd = ["mksquashfs", stage, out, "-noappend", "-no-progress", "-quiet",
               "-reproducible", "-mkfs-time", str(epoch), "-all-time", str(epoch),
               "-processors", str(threads), "-comp", "gzip", "-Xcompression-level", str(lvl)]
        if not keep_owner:
            cmd.append("-all-root")
        return cmd
    # erofs: a fixed UUID derived from name:reference, every timestamp the epoch.
    fs_uuid = uuid.uuid5(uuid.NAMESPACE_URL, f"torcx-image:{name}:{reference}")
    cmd = ["mkfs.erofs", "--quiet", f"-T{epoch}", f"-U{fs_uuid}", f"-zlz4hc,{lvl}"]
    if not keep_owner:
        cmd.append("--all-root")
    return cmd + [out, stage]


def write_fs_image(out: str, rootfs: str, nodes: list[Node], digests: dict[bytes, str],
                   spec: Format, *, name: str, reference: str, level: int | None,
                   threads: int, epoch: int, keep_owner: bool) -> None:
    """Make a squashfs or erofs image of ``rootfs`` plus its digest list at ``out``."""
    if shutil.which(spec.tool) is None:
        raise PackError(errno.ENOENT, f"{spec.tool} not found; install "
                        f"{'squashfs-tools' if spec.name == 'squashfs' else 'erofs-utils'}")
    stage = tempfile.mkdtemp(prefix=".torcx-stage-", dir=os.path.dirname(out))
    try:
        stage_tree(rootfs, nodes, stage, digestlist.render(digests), keep_owner)
        cmd = fs_image_command(spec, stage, out, name=name, reference=reference, level=level,
                               threads=threads, epoch=epoch, keep_owner=keep_owner)
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            tail = proc.stdout.decode(errors="replace").strip().splitlines()[-3:]
            raise PackError(errno.EIO, f"{spec.tool} failed (exit {proc.returncode}): "
                                       + " / ".join(tail))
    finally:
        _remove_tree(stage)


# -- publishing ----------------------------------------------------------------

def archive_digests(path: str) -> tuple[str, str, int]:
    """``(xxh3-128 hex, 'sha512-<hex>', size)`` of a file, streamed."""
    x, s = xxhash.xxh3_128(), hashlib.sha512()
    size = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            x.update(chunk)
            s.update(chunk)
            size += len(chunk)
    return x.hexdigest(), "sha512-" + s.hexdigest(), size


def _publish(tmp: str, final: str, overwrite: bool) -> None:
    os.chmod(tmp, 0o644)
    if overwrite:
        os.replace(tmp, final)
        return
    try:
        os.link(tmp, final)  # atomic and never replaces: EEXIST if someone was faster
    except FileExistsError:
        raise PackError(errno.EEXIST, f"{final}: exists; pass --overwrite to replace it") from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        if os.path.lexists(final):  # no hard links here (e.g. vfat): check, then rename
            raise PackError(errno.EEXIST,
                            f"{final}: exists; pass --overwrite to replace it") from None
        os.rename(tmp, final)
        return
    os.unlink(tmp)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def output_path(out_dir: str, name: str, reference: str, fmt: str) -> str:
    return os.path.join(out_dir, f"{name}:{reference}.torcx.{fmt}")


def pack_image(rootfs: str, name: str, reference: str, out_dir: str, *,
               fmt: str = DEFAULT_FORMAT, level: int | None = None,
               threads: int | None = None, epoch: int | None = None,
               keep_owner: bool = False, overwrite: bool = False) -> PackResult:
    """Check ``rootfs``, then write ``out_dir/NAME:REF.torcx.FMT`` atomically.

    ``epoch`` clamps mtimes (tar) or sets every timestamp (squashfs, erofs);
    None means no clamping for tar and the newest mtime for the others.
    Raises InvalidImage listing every problem (nothing written), ConfigError
    for bad options, PackError when the output exists or cannot be made.
    """
    spec = _check_options(fmt, level, threads)
    threads = threads or default_threads()
    try:
        if not stat.S_ISDIR(os.stat(rootfs).st_mode):
            raise InvalidImage(rootfs, [Problem(rootfs, "not a folder")])
    except FileNotFoundError:
        raise InvalidImage(rootfs, [Problem(rootfs, "no such folder")]) from None
    problems = imagecheck.check_name(name, reference)
    real_root, real_out = os.path.realpath(rootfs), os.path.realpath(out_dir)
    if real_out == real_root or real_out.startswith(real_root + "/"):
        problems.append(Problem(out_dir, "the output folder is inside the image root folder"))
    _, manifest_problems = imagecheck.check_image(rootfs)
    nodes, tree_problems = scan_tree(rootfs)
    problems += manifest_problems + tree_problems
    if problems:
        raise InvalidImage(rootfs, problems)

    final = output_path(out_dir, name, reference, fmt)
    if os.path.lexists(final) and not overwrite:
        raise PackError(errno.EEXIST, f"{final}: exists; pass --overwrite to replace it")
    digests, unpacked = compute_digests(rootfs, nodes)
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}:{reference}.", suffix=".tmp", dir=out_dir)
    try:
        if spec.tool is None:
            try:
                write_tar(fd, rootfs, archive_order(nodes), digests, spec, level=level,
                          threads=threads, epoch=epoch, keep_owner=keep_owner)
            except ArchiveError as e:
                raise PackError(errno.EIO, f"{tmp}: libarchive: {e.msg}") from e
            os.fsync(fd)
        else:
            os.close(fd)
            fd = -1
            write_fs_image(tmp, rootfs, nodes, digests, spec, name=name, reference=reference,
                           level=level, threads=threads, epoch=resolve_epoch(epoch, nodes),
                           keep_owner=keep_owner)
        xxh3, sha512, size = archive_digests(tmp)
        _publish(tmp, final, overwrite)
        _fsync_dir(out_dir)
    finally:
        if fd >= 0:
            os.close(fd)
        if os.path.lexists(tmp):
            os.unlink(tmp)
    entries = len(nodes) + 1  # the digest list
    if spec.tool is not None and not any(n.rel == TORCX_DIR_REL for n in nodes):
        entries += 1  # the staged .torcx folder
    return PackResult(path=final, name=name, reference=reference, format=fmt,
                      entries=entries, files=len(digests), unpacked_bytes=unpacked,
                      packed_bytes=size, xxh3=xxh3, sha512=sha512)


# -- command handlers (torcx/cli.py dispatches here) ------------------------------

def cmd_pack(ctx, args) -> int:
    """``torcx image pack ROOTFS --name NAME --reference REF [...]``."""
    try:
        result = pack_image(
            args.rootfs, args.name, args.reference, args.output or os.getcwd(),
            fmt=args.format, level=args.level, threads=args.threads,
            epoch=source_date_epoch(args.source_date_epoch, ctx.environ),
            keep_owner=args.keep_owner, overwrite=args.overwrite)
    except InvalidImage as e:
        for problem in e.problems:
            ctx.log.error(f"{e.rootfs}: {problem}")
        ctx.log.error(f"{e.rootfs}: {len(e.problems)} problem(s); nothing written")
        return 1
    if args.json:
        ctx.out(json.dumps(result.to_json(), sort_keys=True, indent=2))
    else:
        ctx.out("\n".join(result.lines()))
    return 0


def resolve_archive(ctx, text: str) -> tuple[str, str | None]:
    """``(file to open, store that answered or None)`` for ``ARCHIVE`` or ``NAME:REF``."""
    if os.path.exists(text):
        return text, None
    name, colon, reference = text.partition(":")
    if colon and "/" not in text and name and reference:
        from .store import Store

        found = Store(ctx.paths, log=ctx.log).lookup(name, reference)
        return found.host_path, found.store
    raise NotFound(f"{text}: no such archive file (and not NAME:REF)")


def cmd_inspect(ctx, args) -> int:
    """``torcx image inspect ARCHIVE|NAME:REF [--json]``."""
    from .imageinspect import inspect_archive

    path, store = resolve_archive(ctx, args.archive)
    report = inspect_archive(path, store=store)
    if args.json:
        ctx.out(json.dumps(report.to_json(), sort_keys=True, indent=2))
    else:
        ctx.out("\n".join(report.lines()))
    return 0


def cmd_verify(ctx, args) -> int:
    """``torcx image verify ARCHIVE|NAME:REF [--digest D]``: one-line verdict."""
    from .errors import ExtractError, MountError
    from .imageverify import verify_archive

    path, store = resolve_archive(ctx, args.archive)
    if store:
        ctx.log.info(f"{args.archive}: {path} (store {store})")
    try:
        verdict = verify_archive(path, args.digest)
    except MountError as e:
        ctx.log.error(f"cannot verify: {e.strerror or e}")
        return 2 if e.errno == errno.EPERM else 1
    except ExtractError as e:
        ctx.out(f"FAILED {e}")
        return 1
    ctx.out(verdict.line())
    return 0
