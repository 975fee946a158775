# SPDX-License-Identifier: Apache-2.0
"""Plan: merge the profiles, choose each image's archive, size the tmpfs to memory."""

from __future__ import annotations

from .. import profiles
from ..errors import NotFound
from ..log import Logger
from ..store import SYSEXT, Store
from . import Image, Run, internal_error, sizing, unitplan
from .report import size_text

__all__ = ["fit_memory", "plan"]


def _classify_problems(run: Run, available: dict) -> None:
    """An unknown upper profile is a warning (upstream); a broken file is an error."""
    for name, message in run.selection.problems:
        if name != "next-profile" and name not in available:
            run.profile_warnings.append((name, message))
        else:
            run.profile_errors.append((name, message))


def plan(run: Run, log: Logger) -> None:
    """Merge the profiles, choose each image's archive and size the tmpfs."""
    paths = run.paths
    run.selection = profiles.select(paths, log)
    _classify_problems(run, profiles.list_profiles(paths))
    store = Store(paths, log=log)
    recorded = None  # the unit plan, read at the first tarball: its size facts
    for ref in run.selection.images:
        image = Image(ref)
        try:
            image.archive = store.lookup(ref.name, ref.reference)
        except NotFound as e:
            run.images.append(image)
            image.fail("lookup", str(e))
            continue
        if image.archive.format == SYSEXT:  # handed to systemd-sysext: torcx.apply.sysext
            run.extensions.append(image)
            continue
        run.images.append(image)
        if image.archive.mountable:
            continue  # loop-mounted: takes no room in the tmpfs
        try:
            # Read from the compression framing in a few small reads, not by a
            # decoding pass that would double the boot's unpack cost; a gzip
            # file's member scan only when the unit plan has not recorded it:
            # see torcx.apply.sizing for the formats and the margin.
            if recorded is None:
                recorded = unitplan.load(paths)
            image.estimate = sizing.estimate(image.archive.host_path,
                                             unitplan.sized(recorded, image.archive))
        except OSError as e:
            image.fail("lookup", f"{image.archive.path}: {e.strerror or e}")
            continue
        except Exception as e:  # one archive never stops the plan of the others
            image.fail("lookup", f"{image.archive.path}: {internal_error(e)}")
            continue
        run.need += image.estimate.need
    run.tmpfs_size = sizing.tmpfs_size(run.need)


def fit_memory(run: Run) -> None:
    """Fail the images the machine cannot hold, in profile order, and resize the tmpfs.

    An image that alone or with the images before it would need more than
    MemAvailable fails at 'plan'; the others still apply (one image too big
    for this machine must not keep the vendor addons from it).
    """
    run.mem_available = avail = sizing.mem_available()
    if avail is None or run.need <= avail:
        return
    kept = 0
    for image in run.images:
        if not image.ok or image.estimate is None:
            continue
        need = image.estimate.need
        if kept + need > avail:
            image.fail("plan", f"needs {size_text(need)} of tmpfs but only "
                               f"{size_text(avail - kept)} of memory is left "
                               f"(MemAvailable {size_text(avail)})")
        else:
            kept += need
    run.need = kept
    run.tmpfs_size = sizing.tmpfs_size(kept)


