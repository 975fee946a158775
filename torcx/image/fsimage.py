# SPDX-License-Identifier: Apache-2.0
"""Making squashfs and erofs images of an image root folder, reproducibly.

mksquashfs and mkfs.erofs read a staged tree: the root folder recreated with
hard links to its files where the file system allows (else copies), plus the
digest list. Every timestamp is set to the epoch; erofs gets a UUID derived
from NAME:REF.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import tempfile
import uuid
from typing import TYPE_CHECKING

from .. import digestlist
from ..errors import PackError
from .tree import TORCX_DIR_REL, Node, changed, read_xattrs, show

if TYPE_CHECKING:
    from .formats import Format

CHUNK = digestlist.CHUNK


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
                raise PackError(errno.EPERM, f"{show(src)}: device nodes are staged for "
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
    _check_unchanged(rootfs, nodes)


def _check_unchanged(rootfs: str, nodes: list[Node]) -> None:
    """PackError for a file rewritten since the scan, so after its digest was taken.

    The tool read the files themselves (hard-linked into the stage), not the
    bytes that were hashed; unlike the tar writer it cannot re-hash as it copies.
    Size and mtime catch a rewrite (ctime cannot: staging hard links changes it).
    """
    root = os.fsencode(rootfs)
    for node in nodes:
        if not stat.S_ISREG(node.st.st_mode):
            continue
        path = os.path.join(root, node.rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise changed(path) from None
        if (st.st_ino, st.st_size, st.st_mtime_ns) != (
                node.st.st_ino, node.st.st_size, node.st.st_mtime_ns):
            raise changed(path)
