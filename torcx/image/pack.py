# SPDX-License-Identifier: Apache-2.0
"""``torcx image pack``: turn an image root folder into a verified, reproducible archive.

Two passes over the root folder: the first hashes every regular file into the
digest list ``.torcx/digests``, the second writes the archive (the digest list
first, then ``.torcx/``, then the files the manifest propagates, then every
other entry in sorted order: see torcx.image.tree.archive_order) and hashes each
file again to prove it did not change in between. Both passes
stream in fixed-size chunks, so memory does not grow with the image.

Modules of torcx.image: check (manifest and paths), tree (entries, digests,
xattrs), formats, tarwriter (tar formats through libarchive), fsimage (squashfs
and erofs through mksquashfs and mkfs.erofs); this one checks options, runs the
passes and publishes the result.

The archive is written to a temporary file in the store and renamed into place;
an existing archive is replaced only when asked to.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tempfile
from dataclasses import asdict, dataclass

import xxhash
from libarchive.exception import ArchiveError

from .. import digestlist
from ..errors import ConfigError, InvalidImage, PackError, UsageError
from ..policy import write_recorded_digest
from ..schemas import fsync_dir
from . import check as imagecheck
from .check import Problem
from .formats import DEFAULT_FORMAT, FORMATS, Format
from .fsimage import write_fs_image
from .tarwriter import write_tar
from .tree import (
    TORCX_DIR_REL,
    archive_order,
    compute_digests,
    propagated_paths,
    resolve_epoch,
    scan_tree,
)

CHUNK = digestlist.CHUNK




def files_text(files: int, size: int) -> str:
    """How pack and inspect say an image's size.

    One definition everywhere (pack, inspect, the apply's summary and report): the
    image's regular files, a file with several hard links once, and their bytes;
    the digest list ``.torcx/digests`` that pack adds is counted in neither.
    """
    return f"{files} files, {size} bytes"


@dataclass
class PackResult:
    """What was written: the archive and its digests (``sha512`` as ``sha512-<hex>``).

    ``files`` and ``unpacked_bytes`` count as :func:`files_text` says.
    """

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
            f"entries:   {self.entries}",
            f"unpacked:  {files_text(self.files, self.unpacked_bytes)}",
            f"packed:    {self.packed_bytes} bytes",
            f"xxh3-128:  {self.xxh3}",
            f"sha512:    {self.sha512}",
        ]


# -- options -------------------------------------------------------------------

def source_date_epoch(value: int | None = None, environ=os.environ) -> int | None:
    """The epoch to clamp mtimes to: ``value``, else SOURCE_DATE_EPOCH, else None.

    A negative ``value`` is a UsageError; a bad SOURCE_DATE_EPOCH a ConfigError.
    """
    if value is not None:
        if value < 0:
            raise UsageError(f"--source-date-epoch {value}: must not be negative")
        return value
    text = environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(f"SOURCE_DATE_EPOCH={text!r}: not a number of seconds since 1970")
    return value


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_options(fmt: str, level: int | None, threads: int | None) -> Format:
    """The format's spec; UsageError for an unknown format, level or thread count."""
    spec = FORMATS.get(fmt)
    if spec is None:
        raise UsageError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    if level is not None:
        if spec.default_level is None:
            raise UsageError(f"--level: format {fmt} is not compressed")
        if not spec.min_level <= level <= spec.max_level:
            raise UsageError(f"--level {level}: {fmt} takes {spec.min_level} to {spec.max_level}")
    if threads is not None and threads < 1:
        raise UsageError(f"--threads {threads}: must be at least 1")
    return spec


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
    spec = check_options(fmt, level, threads)
    threads = threads or default_threads()
    try:
        if not stat.S_ISDIR(os.stat(rootfs).st_mode):
            raise InvalidImage(rootfs, [Problem("", "not a folder")])
    except FileNotFoundError:
        raise InvalidImage(rootfs, [Problem("", "no such folder")]) from None
    problems = imagecheck.check_name(name, reference)
    real_root, real_out = os.path.realpath(rootfs), os.path.realpath(out_dir)
    if os.path.commonpath([real_root, real_out]) == real_root:
        # The archive would pack itself: say so before walking the tree (it may be /).
        problems.append(Problem(out_dir, "the output folder is inside the image root folder"))
        raise InvalidImage(rootfs, problems)
    manifest, manifest_problems = imagecheck.check_image(rootfs)
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
                order = archive_order(nodes, propagated_paths(rootfs, manifest, nodes))
                write_tar(fd, rootfs, order, digests, spec, level=level,
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
        if spec.tool is not None:
            # A mounted image is checked at boot by its file's digest, not file by
            # file: record it next to it (integrity; a signature needs the store's
            # signed contents).
            write_recorded_digest(final, xxh3)
        fsync_dir(out_dir)
    finally:
        if fd >= 0:
            os.close(fd)
        if os.path.lexists(tmp):
            os.unlink(tmp)
    entries = len(nodes) + 1  # the digest list
    if spec.tool is not None and not any(n.rel == TORCX_DIR_REL for n in nodes):
        entries += 1  # the staged .torcx folder
    files = len({(n.st.st_dev, n.st.st_ino) for n in nodes if stat.S_ISREG(n.st.st_mode)})
    return PackResult(path=final, name=name, reference=reference, format=fmt,
                      entries=entries, files=files, unpacked_bytes=unpacked,
                      packed_bytes=size, xxh3=xxh3, sha512=sha512)
