# SPDX-License-Identifier: Apache-2.0
"""Unpack: every tarball in one parallel engine batch, squashfs/erofs loop-mounted."""

from __future__ import annotations

import os
import time

from ..errors import MountError, NoDigestList, TorcxError
from ..log import Logger
from . import SKIPPED, Run, internal_error, sizing
from . import policy as trust

__all__ = ["unpack"]


def unpack(run: Run, unpack_host: str, log: Logger) -> None:
    """Extract every tarball in one parallel batch; loop-mount the mountable images."""
    batch = [im for im in run.images if im.ok and not im.archive.mountable]
    mountable = [im for im in run.images if im.ok and im.archive.mountable]
    if not (batch or mountable):
        return
    try:
        from .. import engine  # the native engine loads only when there is work
    except ImportError as e:
        for image in batch + mountable:
            image.fail("unpack", str(e))
        return
    jobs = [engine.Job(im.archive.host_path, os.path.join(unpack_host, im.name),
                       **trust.pins(im), **_limits(im))
            for im in batch]
    try:
        results = engine.extract_many(jobs)
    except Exception as e:  # the batch could not run at all (ENOMEM)
        results = []
        for image in batch:
            image.fail("unpack", str(e) if isinstance(e, TorcxError) else internal_error(e))
    for image, result in zip(batch, results):
        image.unpack = {
            "method": "extract", "compression": result.compression,
            "entries": result.entries, "files": result.files, "dirs": result.dirs,
            "symlinks": result.symlinks, "hardlinks": result.hardlinks,
            "bytes": result.bytes, "archive_bytes": result.archive_bytes,
            "archive_xxh3": result.archive_xxh3, "verified": result.verified,
            "seconds": round(result.seconds, 6),
        }
        if result.error is not None:
            image.fail(*trust.unpack_failure(image, result.error))
        else:
            trust.unpacked_passed(image, result.verified)
    for image in run.images:
        if not (image.ok and image.archive.mountable):
            continue
        if run.interrupted:
            image.fail("unpack", f"not mounted: the apply was interrupted ({run.interrupted})")
            continue
        try:
            _mount_one(run, image, unpack_host, engine)
        except Exception as e:  # a bug met by one image fails that image only
            image.fail("unpack", internal_error(e))


def _mount_one(run: Run, image, unpack_host: str, engine) -> None:
    """Loop-mount one squashfs/erofs image read-only and check it against its digests."""
    image.unpack = {"method": "loop-mount", "fstype": image.archive.format,
                    "archive_bytes": image.archive.size, "verified": False}
    if not run.mount:
        image.status, image.stage = SKIPPED, "unpack"
        image.error = f"{image.archive.format} image not mounted (--no-mount)"
        return
    start = time.monotonic()
    if not trust.digest_passed(run, image):  # never mount before the image file matched
        image.unpack = {}
        return
    target = os.path.join(unpack_host, image.name)
    try:
        os.mkdir(target, 0o755)
        engine.loop_mount(image.archive.host_path, target, image.archive.format)
    except OSError as e:  # MountError is an OSError
        image.fail("unpack", str(e) if isinstance(e, MountError)
                   else f"{target}: {e.strerror or e}")
        try:
            os.rmdir(target)
        except OSError:
            pass
    else:
        image.mounted = True
        if trust.file_check_needed(image):
            _verify_mounted(image, target)
        else:  # its image file's sha512 was checked before it was mounted
            image.unpack["verified"] = image.trust.pinned
            trust.mounted_passed(image, False)
    image.unpack["seconds"] = round(time.monotonic() - start, 6)


def _limits(image) -> dict:
    """The engine's bounds for an image, from its plan (sizing.max_entries, max_decoded)."""
    if image.estimate is None:
        return {}
    return {"max_entries": sizing.max_entries(image.estimate),
            "max_decoded": sizing.max_decoded(image.estimate)}


def _verify_mounted(image, target: str) -> None:
    """Check every file of a mounted image against its .torcx/digests, as the engine
    does for tarballs; a mismatch fails the image alone (it is unmounted with every
    failed image before the seal). An image without a digest list stays mounted
    and is reported unverified."""
    from ..digestlist import check_mounted_tree

    try:
        files = check_mounted_tree(target, image.archive.path)
    except NoDigestList:
        trust.mounted_passed(image, None)
        return
    except Exception as e:
        image.fail("unpack", str(e) if isinstance(e, TorcxError) else internal_error(e))
        return
    image.unpack.update(verified=True, files=files)
    trust.mounted_passed(image, True)
