# SPDX-License-Identifier: Apache-2.0
"""Sealing: record what this boot applied, then freeze it (SPEC.md section 6, step 6).

Order matters and follows upstream: the run profile (``RUNDIR/profile.json``,
mode 0444), then the seal file ``/run/metadata/torcx`` that other programs
source, then the read-only remount of the unpack dir. On top of upstream we
keep ``RUNDIR/apply.json``: the outcome of every image, which `torcx status`
reads to say what failed and why.
"""

from __future__ import annotations

import os

from .. import jsontext, schemas
from ..log import Logger
from ..paths import Paths
from . import FAILED, Run

TYPE_CHECKING = False  # for annotations only: collections.abc is not imported at boot
if TYPE_CHECKING:
    from collections.abc import Sequence

# The five upstream keys, in upstream order; programs source the file.
LOWER_PROFILES = "TORCX_LOWER_PROFILES"
UPPER_PROFILE = "TORCX_UPPER_PROFILE"
PROFILE_PATH = "TORCX_PROFILE_PATH"
BINDIR = "TORCX_BINDIR"
UNPACKDIR = "TORCX_UNPACKDIR"
# Ours: the images of the merged profile that were not applied (colon-joined names).
FAILED_IMAGES = "TORCX_FAILED_IMAGES"

RECORD_KIND = "torcx-apply-record-v0"
RUN_PROFILE_MODE = 0o444

__all__ = [
    "FAILED_IMAGES",
    "RECORD_KIND",
    "read_record",
    "read_seal",
    "record_path",
    "record_run",
    "remount_read_only",
    "seal_values",
    "write_record",
    "write_run_profile",
    "write_seal",
]


def _write(paths: Paths, target: str, data: str, mode: int) -> str:
    """Write a run-state file atomically (temporary file in the same folder, then rename).

    Without fsync, unlike the files under /etc and /var: these live in /run, a
    tmpfs that does not outlive the boot, and eight fsyncs cost tens of
    milliseconds on an image builder's disk.
    """
    host = paths.host(target)
    os.makedirs(os.path.dirname(host), mode=0o755, exist_ok=True)
    schemas.write_atomic(host, data, mode, durable=False)
    return target


def write_run_profile(paths: Paths, images: Sequence) -> str:
    """Write the merged profile (ImageRefs) to RUNDIR/profile.json, mode 0444.

    The kind is profile-manifest-v0 as upstream writes it, v1 when an image
    names a remote (v0 cannot carry it).
    """
    return _write(paths, paths.run_profile, schemas.dumps(schemas.profile_doc(images)),
                  RUN_PROFILE_MODE)


def seal_values(paths: Paths, lower: Sequence[str], upper: str,
                failed: Sequence[str]) -> dict[str, str]:
    """The seal file's keys: the five upstream keys in upstream order, then ours."""
    return {
        LOWER_PROFILES: ":".join(lower),
        UPPER_PROFILE: upper,
        PROFILE_PATH: paths.run_profile,
        BINDIR: paths.bin_dir,
        UNPACKDIR: paths.unpack_dir,
        FAILED_IMAGES: ":".join(failed),
    }


def write_seal(paths: Paths, lower: Sequence[str], upper: str,
               failed: Sequence[str]) -> str:
    """Write the seal file (/run/metadata/torcx); returns its target path."""
    text = schemas.format_seal(seal_values(paths, lower, upper, failed))
    return _write(paths, paths.seal_file, text, 0o644)


def read_seal(paths: Paths) -> dict[str, str] | None:
    """The seal file's keys and values, or None when this boot has no seal."""
    try:
        with open(paths.host(paths.seal_file), encoding="utf-8",
                  errors="surrogateescape") as f:
            return schemas.parse_seal(f.read())
    except (FileNotFoundError, NotADirectoryError):  # no seal this boot
        return None


def record_path(paths: Paths) -> str:
    """Target path of the per-image outcome record, RUNDIR/apply.json."""
    return paths.run_dir + "/apply.json"


def write_record(paths: Paths, report: dict) -> str:
    """Write the apply report (per-image outcome) that `torcx status` reads."""
    return _write(paths, record_path(paths),
                  schemas.dumps({"kind": RECORD_KIND, "value": report}), 0o644)


def record_run(run: Run, report, log: Logger | None) -> None:
    """Write ``report(run)`` as the record; if that fails, a minimal one, and the run fails.

    Without a record `torcx status` cannot know the outcome and says so; a run
    that could not write its full record never exits 0.
    """
    try:
        write_record(run.paths, report(run))
        return
    except Exception as e:
        why = (e.strerror if isinstance(e, OSError) else "") or str(e)
        error = f"cannot write {record_path(run.paths)}: {why}"
    run.status = FAILED
    run.error = f"{run.error}; {error}" if run.error else error
    if log is not None:
        log.error(error)
    minimal = {
        "status": run.status, "error": run.error, "minimal": True, "sealed": run.sealed,
        "failed_images": run.failed_images, "interrupted": run.interrupted or None,
        "images": [{"name": im.name, "reference": im.ref.reference, "status": im.status,
                    "stage": im.stage, "error": im.error} for im in run.images],
    }
    try:
        write_record(run.paths, minimal)
    except Exception as e:
        if log is not None:
            log.error(f"cannot write even a minimal {record_path(run.paths)}: "
                      f"{(e.strerror if isinstance(e, OSError) else '') or e}")


def read_record(paths: Paths) -> dict | None:
    """The apply report written by this boot's apply, None if absent.

    Raises ValueError (json.JSONDecodeError) for a damaged record, which the
    caller reports with the file name.
    """
    try:
        with open(paths.host(record_path(paths)), encoding="utf-8") as f:
            document = jsontext.loads(f.read())
    except FileNotFoundError:
        return None
    if not isinstance(document, dict) or document.get("kind") != RECORD_KIND:
        raise ValueError(f"not a {RECORD_KIND} document")
    value = document.get("value")
    if not isinstance(value, dict):
        raise ValueError("$.value: expected object")
    return value


def remount_read_only(paths: Paths) -> None:
    """Remount the unpack dir's tmpfs read-only (raises MountError)."""
    from .. import engine  # loaded only when mounting: keeps --no-mount cheap

    engine.remount_ro(paths.host(paths.unpack_dir))


def seal_run(run: Run, log: Logger) -> None:
    """Run profile, seal file, read-only remount (upstream's order), then our record.

    The record (RUNDIR/apply.json) comes last so that it carries the remount's
    outcome; RUNDIR itself is not on the sealed tmpfs.
    """
    paths, sel = run.paths, run.selection
    try:
        write_run_profile(paths, sel.images if sel else [])
        write_seal(paths, sel.lower if sel else [], (sel.upper if sel else "") or "",
                   run.failed_images)
        run.sealed = True
    except Exception as e:
        # Still freeze what was unpacked and record why the seal is missing.
        where = f"{e.filename}: " if isinstance(e, OSError) and e.filename else ""
        why = (e.strerror if isinstance(e, OSError) else "") or str(e)
        error = f"cannot seal: {where}{why}"
        run.status, run.error = FAILED, f"{run.error}; {error}" if run.error else error
        log.error(error)
    if run.mount:
        try:
            remount_read_only(paths)
            run.read_only = True
        except Exception as e:
            run.status = FAILED
            run.error = f"{run.error}; {e}" if run.error else str(e)
            log.error(str(e))
