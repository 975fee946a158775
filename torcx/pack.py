# SPDX-License-Identifier: Apache-2.0
"""``torcx image pack``: turn an image root folder into a verified, reproducible archive.

Two passes over the root folder: the first hashes every regular file into the
digest list ``.torcx/digests``, the second writes the archive (the digest list
first, then ``.torcx/``, then the files the manifest propagates, then every
other entry in sorted order: see imagetree.archive_order) and hashes each
file again to prove it did not change in between. Both passes
stream in fixed-size chunks, so memory does not grow with the image.

Modules: imagecheck (manifest and paths), imagetree (entries, digests,
xattrs), tarwriter (tar formats through libarchive), fsimage (squashfs and
erofs through mksquashfs and mkfs.erofs); this one checks options, runs the
passes and publishes the result.

The archive is written to a temporary file in the store and renamed into place;
an existing archive is replaced only when asked to.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import tempfile
from dataclasses import asdict, dataclass

import xxhash
from libarchive.exception import ArchiveError

from . import digestlist, imagecheck
from .durable import fsync_dir
from .errors import ConfigError, InvalidImage, NotFound, PackError
from .fsimage import write_fs_image
from .imagecheck import Problem
from .imagetree import (
    TORCX_DIR_REL,
    archive_order,
    compute_digests,
    propagated_paths,
    resolve_epoch,
    scan_tree,
)
from .tarwriter import write_tar

CHUNK = digestlist.CHUNK


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
    spec = _check_options(fmt, level, threads)
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
        fsync_dir(out_dir)
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
