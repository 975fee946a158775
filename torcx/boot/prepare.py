# SPDX-License-Identifier: Apache-2.0
"""Preparing the unit plan ahead of the boot (torcx.apply.unitplan).

``torcx profile set-next``, ``profile populate``, ``install-boot`` and ``image
pack`` into a store call this, so that the sandboxed generator of the next boot
finds every image's units without opening an archive, and the apply each gzip
archive's size facts without scanning it (torcx.apply.sizing). Here the
archives are read (a tarball until its units have gone by, whoever packed it,
and a tgz once more for its members; a squashfs/erofs image loop-mounted for
a moment, which needs root). A failure only leaves an image out of the plan:
its units then start after the apply, its size is found by the apply.
"""

from __future__ import annotations

import os

from .. import log as _log
from ..apply import unitplan
from ..errors import TorcxError
from .unit_reader import manifest_path_in, read_manifest, read_unit_members

__all__ = ["archive_units", "prepare_plan"]

TAR_FORMATS = ("tgz", "tar.zst", "tar.xz", "tar")


def prepare_plan(paths, log=_log.NULL, *, upper: str | None = None,
                 only: str | None = None) -> int:
    """Plan the units of every image of the next boot's profile; returns how many were read.

    ``upper`` names the user profile (default: the next-profile file); ``only``
    limits the work to the archive at that host path. Never raises for an
    image: it is left out of the plan, with a warning.
    """
    from .. import profiles
    from ..store import Store

    try:
        sel = profiles.select(paths, _log.NULL, upper=upper)
        store = Store(paths)
    except (TorcxError, OSError) as e:
        log.warning(f"unit plan not prepared: {e}")
        return 0
    plan = unitplan.load(paths)
    entries = {}
    for image in sel.images:
        archive = store.find(image.name, image.reference)
        if archive is None or archive.format == "sysext":
            continue  # a sysext image's units are systemd-sysext's to load
        entry = unitplan.fresh(plan, archive)
        if entry is not None and (archive.format != "tgz" or "size" in entry):
            continue
        if only is not None and os.path.realpath(archive.host_path) != os.path.realpath(only):
            continue
        try:
            units = entry["units"] if entry is not None else archive_units(paths, archive)
        except (TorcxError, OSError, ValueError, ImportError) as e:
            log.warning(f"{archive.path}: units not planned ({e}); they start after "
                        "the apply")
            continue
        except Exception as e:  # one hostile archive never keeps the others out of the plan
            log.warning(f"{archive.path}: units not planned (internal error "
                        f"({type(e).__name__}): {e}); they start after the apply")
            continue
        if units is not None:
            entries[archive.path] = unitplan.entry(archive, units, _estimate(archive))
    try:
        unitplan.update(paths, entries)
    except OSError as e:
        log.warning(f"{unitplan.plan_path(paths)}: cannot write the unit plan: "
                    f"{e.strerror or e}")
        return 0
    return len(entries)


def _estimate(archive):
    """What the apply's sizing finds in a gzip archive (its member scan, done here once
    rather than at every boot), or None."""
    if archive.format != "tgz":
        return None
    from ..apply import sizing

    try:
        return sizing.estimate(archive.host_path)
    except Exception:  # a hostile archive never keeps the others out of the plan
        return None  # the apply sizes it, and says what is wrong


def archive_units(paths, archive) -> list | None:
    """The plan form of one archive's units (torcx.apply.unitplan), read without unpacking.

    A squashfs/erofs image is loop-mounted read-only in a private mount
    namespace for the moment of reading (root only).
    """
    if archive.format in TAR_FORMATS:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="torcx-plan.") as tmp:
            folder = os.path.join(tmp, "image")
            return _units_in(paths, archive.name, folder,
                             read_unit_members(archive.host_path, folder))
    from .. import mountns

    if not mountns.can_mount():
        return None  # mounting needs root: planned by the next apply instead
    return mountns.with_mounted_image(archive.host_path, archive.format, _mounted_units,
                                      paths, archive.name)


def _mounted_units(folder: str, paths, name: str):
    return _units_in(paths, name, folder,
                     read_manifest(folder) if manifest_path_in(folder) else None)


def _units_in(paths, name: str, image_root: str, manifest) -> list | None:
    from ..apply import propagate

    if manifest is None or not manifest.units:
        return []
    # Propagation's own rules (one level deep, links kept, confined to the image).
    entries = propagate.plan_image(name, image_root, image_root, {"units": manifest.units},
                                   paths.bin_dir)
    return unitplan.units_from_entries(lambda target: target, entries)
