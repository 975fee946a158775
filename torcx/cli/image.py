# SPDX-License-Identifier: Apache-2.0
"""The ``torcx image list|clear-versioned|pack|inspect|verify`` commands.

The stores answer list and clear-versioned; torcx.image does pack, inspect and verify.
"""

from __future__ import annotations

import errno
import json
import os
import shutil

from .. import schemas
from ..errors import (
    ConfigError,
    ExtractError,
    InvalidImage,
    MountError,
    NotFound,
    TorcxError,
    UsageError,
)
from ..store import Store, parse_archive_filename
from .profile import print_json

__all__ = ["clear_versioned", "export", "image_list", "inspect", "pack", "verify"]


def image_list(ctx, args):
    paths = ctx.load_paths(os_version=args.os_version) if args.os_version else ctx.paths
    store = Store(paths, log=ctx.log)
    print_json(ctx, schemas.image_list_doc(store.archives(args.name)))


def clear_versioned(ctx, args):
    paths = ctx.paths
    keep = set()
    for version in args.keep:
        if not version or "/" in version or version in (".", ".."):
            raise UsageError(f"--keep-version {version!r} is not a store version")
        keep.add(version)
    from ..policy import RECORDED_SUFFIXES

    top = paths.host(paths.user_store())
    try:
        versions = sorted(os.listdir(top))
    except FileNotFoundError:
        ctx.log.info(f"{paths.user_store()} does not exist, nothing to clear")
        return 0
    removed = 0
    for version in versions:
        folder = os.path.join(top, version)
        logical = paths.user_store(version)
        if version in keep or os.path.islink(folder) or not os.path.isdir(folder):
            continue
        if args.name is None:
            ctx.log.info(f"removing versioned store {logical}")
            shutil.rmtree(folder)
            removed += 1
            continue
        for entry in sorted(os.listdir(folder)):
            parsed = parse_archive_filename(entry)
            path = os.path.join(folder, entry)
            if parsed is None or parsed[0] != args.name:
                continue
            if os.path.islink(path) or os.path.isfile(path):
                ctx.log.info(f"removing {logical}/{entry}")
                os.unlink(path)
                removed += 1
                for suffix in RECORDED_SUFFIXES:  # what pack/populate recorded beside it
                    try:
                        os.unlink(path + suffix)
                    except FileNotFoundError:
                        pass
    if removed == 0:
        ctx.log.info("nothing to clear")
    return 0


def pack(ctx, args) -> int:
    """``torcx image pack ROOTFS --name NAME --reference REF [...]``."""
    from ..image.pack import (  # libarchive: only when packing
        check_options,
        pack_image,
        source_date_epoch,
    )

    check_options(args.format, args.level, args.threads)  # usage errors before any work
    epoch = source_date_epoch(args.source_date_epoch, ctx.environ)
    out_dir = output_folder(ctx, args.output)
    try:
        result = pack_image(
            args.rootfs, args.name, args.reference, out_dir,
            fmt=args.format, level=args.level, threads=args.threads, epoch=epoch,
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
    _prepare_boot(ctx, out_dir, result)
    return 0


def output_folder(ctx, output: str | None) -> str:
    """Where ``pack -o`` writes on this machine: under --root like every target path.

    With --root, -o names a folder of the target system (absolute), resolved inside
    the root as a chroot would, so ``image inspect NAME:REF`` with the same --root
    finds what was packed. Without -o: the current folder.
    """
    if output is None:
        return os.getcwd()
    if ctx.root == "/":
        return output
    if not output.startswith("/"):
        raise UsageError(f"-o {output}: with --root, -o names a folder of the target "
                         "system: give an absolute path such as /var/lib/torcx/store")
    from ..paths import resolve_in_root

    return ctx.paths.host(resolve_in_root(ctx.root, output))


def _prepare_boot(ctx, output: str, result) -> None:
    """Packed into a store of this system: plan its units for the next boot, if it is in it."""
    try:
        paths = ctx.paths
    except TorcxError:
        return  # a broken configuration is not pack's business
    out = os.path.realpath(output)
    if not any(os.path.realpath(paths.host(s)) == out for s in paths.store_paths):
        return
    from ..boot.prepare import prepare_plan

    prepare_plan(paths, ctx.log, only=result.path)


def export(ctx, args) -> int:
    """``torcx image export ARCHIVE|NAME:REF --sysext -o DIR``: NAME.raw for systemd-sysext."""
    from ..image.export import export_sysext
    from ..image.pack import source_date_epoch
    from ..store import Archive
    from ..sysext import read_host

    if os.path.exists(args.archive):
        parsed = parse_archive_filename(os.path.basename(args.archive))
        if parsed is None or parsed[2] == "sysext":
            raise UsageError(f"{args.archive}: not a torcx image file name "
                             "(NAME:REF.torcx.EXT)")
        path = os.path.abspath(args.archive)
        archive = Archive(parsed[0], parsed[1], parsed[2], path, path, os.path.dirname(path), 0)
    else:
        name, colon, reference = args.archive.partition(":")
        if not (colon and name and reference and "/" not in args.archive):
            raise NotFound(f"{args.archive}: no such archive file (and not NAME:REF)")
        archive = Store(ctx.paths, log=ctx.log).lookup(name, reference)
        if archive.format == "sysext":
            raise UsageError(f"{archive.path}: already a systemd-sysext image")
    try:
        result = export_sysext(
            archive, output_folder(ctx, args.output), read_host(ctx.paths), fmt=args.format,
            ext_id=args.ext_id, version_id=args.version_id, level=args.sysext_level,
            arch=args.arch, epoch=source_date_epoch(args.source_date_epoch, ctx.environ),
            overwrite=args.overwrite)
    except InvalidImage as e:
        for problem in e.problems:
            ctx.log.error(f"{e.rootfs}: {problem}")
        ctx.log.error(f"{e.rootfs}: {len(e.problems)} problem(s) cannot be expressed as a "
                      "sysext; nothing written")
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
        found = Store(ctx.paths, log=ctx.log).lookup(name, reference)
        return found.host_path, found.store
    raise NotFound(f"{text}: no such archive file (and not NAME:REF)")


def inspect(ctx, args) -> int:
    """``torcx image inspect ARCHIVE|NAME:REF [--json]``."""
    from ..image.inspect import inspect_archive

    path, store = resolve_archive(ctx, args.archive)
    report = inspect_archive(path, store=store)
    if args.json:
        ctx.out(json.dumps(report.to_json(), sort_keys=True, indent=2))
    else:
        ctx.out("\n".join(report.lines()))
    return 0


def verify(ctx, args) -> int:
    """``torcx image verify ARCHIVE|NAME:REF [--digest D]``: one-line verdict."""
    from ..image.verify import parse_pin, verify_archive

    if args.digest:
        try:
            parse_pin(args.digest)
        except ConfigError as e:
            raise UsageError(str(e)) from None
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
