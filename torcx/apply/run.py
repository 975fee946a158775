# SPDX-License-Identifier: Apache-2.0
"""The boot-time apply (SPEC.md section 6): plan, unpack, propagate, seal.

``torcx-generator`` and ``torcx apply`` both end here. The run is split in
phases, each timed: *plan* (profiles merged, archives chosen, tmpfs sized),
*unpack* (every tarball in one parallel engine batch, squashfs/erofs
loop-mounted), *propagate* (bins and unit-like files exposed) and *seal*
(run profile, seal file, read-only remount, per-image record). What it
says is formatted by torcx.apply.report; each phase has its module here.

A failing image never stops the others; it is recorded with the phase that
failed and why, and the run exits 1 at the end. An image the machine has
no memory for fails at plan; only an unpack dir that cannot be prepared
stops the run.
"""

from __future__ import annotations

import os
import time

from ..errors import MountError
from ..log import Logger
from ..paths import Paths
from . import (
    ABORTED,
    ALREADY,
    DRY_RUN,
    FAILED,
    PLANNED,
    REFUSED,
    REPORT_KIND,
    SKIPPED,
    Phase,
    Run,
    internal_error,
    seal,
    sizing,
)
from .plan import fit_memory, plan

try:  # the signal module imports enum (milliseconds at boot); its C core does the same
    import _signal
except ImportError:  # pragma: no cover - an interpreter without it
    import signal as _signal

__all__ = ["main", "report", "run"]

GENERATOR_LOG = "generator.log"


# -- the run ------------------------------------------------------------------------

def run(paths: Paths, log: Logger, *, mount: bool = True, dry_run: bool = False,
        planned: dict | None = None) -> Run:
    """Apply the merged profile once per boot; returns the Run with its report.

    ``mount=False`` does everything but mounts (image builders, tests);
    ``dry_run=True`` plans and changes nothing on the target. ``planned``: the
    images a sandboxed generator wrote units for ({name: fingerprint}, from
    ``TORCX_PLANNED``); the others' units are started here (torcx.apply.bootunits).
    """
    start = time.monotonic()
    r = Run(paths, mount=mount, dry_run=dry_run)
    run_host = paths.host(paths.run_dir)
    if os.path.lexists(run_host) and not dry_run:
        r.status = ALREADY  # the summary line says so
        return r
    with Phase(r, "plan"), _guard(r, "lookup"):
        plan(r, log)
    with Phase(r, "policy"), _guard(r, "policy"):
        from .policy import check

        check(r, log)
    if dry_run:
        r.status = DRY_RUN
        if os.path.lexists(run_host):
            r.error = f"{paths.run_dir} exists: a real apply would do nothing this boot"
        _dry_run(r, log)
        r.timings["total"] = time.monotonic() - start
        return r
    if mount:
        with _guard(r, "plan"):
            fit_memory(r)
    with _interruptible(r, log):
        unpack_host = paths.host(paths.unpack_dir)
        with Phase(r, "unpack"):
            try:
                os.makedirs(os.path.dirname(run_host), mode=0o755, exist_ok=True)
                os.mkdir(run_host, 0o755)  # the once-per-boot claim: fails if another run won
            except FileExistsError:
                r.status = ALREADY
                return r
            except OSError as e:
                return _abort(r, e, start)
            try:
                os.mkdir(paths.host(paths.bin_dir), 0o755)
                os.mkdir(unpack_host, 0o755)
                if mount:
                    from .. import engine

                    # nr_inodes from the plan (sizing.tmpfs_inodes): the engine keeps
                    # each image within its own share (sizing.max_entries).
                    engine.mount_tmpfs(unpack_host, r.tmpfs_size, 0o755, sizing.tmpfs_inodes(
                        [im.estimate for im in r.images if im.ok and im.estimate]))
                    r.tmpfs_mounted = True
            except (OSError, ImportError) as e:
                return _abort(r, e, start)
            if any(im.ok for im in r.images):
                with _guard(r, "unpack"):
                    from .unpack import unpack  # the engine with it: only when there are images

                    unpack(r, unpack_host, log)
        with Phase(r, "propagate"):
            if any(im.ok for im in r.images):
                with _guard(r, "manifest"):
                    from .propagate import plan_run  # only when there are images

                    plan_run(r, unpack_host)
                with _guard(r, "propagate"):
                    from .propagate import propagate_run

                    propagate_run(r)
                from .sysusers import mark_pending

                mark_pending(r, log)
            _remove_failed(r, unpack_host, log)
        if r.extensions:
            from .sysext import link_extensions  # only when the profile names sysext images

            with Phase(r, "sysext"):
                link_extensions(r, os.path.join(run_host, ".sysext-check"), log)
        if r.interrupted:
            note = f"interrupted by {r.interrupted}: images not yet applied were not applied"
            r.error = f"{r.error}; {note}" if r.error else note
        if r.failed_images or r.profile_errors or r.config_errors or r.error:
            r.status = FAILED
        with Phase(r, "seal"):
            seal.seal_run(r, log)
        if any(im.ok for im in r.images):
            from .bootunits import finish_units

            finish_units(r, log, planned)
        r.timings["total"] = time.monotonic() - start
        seal.record_run(r, report, log)
    return r


def _abort(r: Run, e: BaseException, start: float) -> Run:
    """The unpack dir could not be prepared: nothing is applied; say so in the record."""
    r.status = ABORTED
    r.error = (f"{e.filename}: {e.strerror}" if isinstance(e, OSError)
               and not isinstance(e, MountError) and e.filename else str(e))
    for image in r.all_images:
        if image.ok:
            image.fail("unpack", f"unpack dir not prepared: {r.error}")
    r.timings["total"] = time.monotonic() - start
    seal.record_run(r, report, None)
    return r


class _guard:
    """A phase that raises what nobody expected fails the images still in play, and the
    run goes on to seal and record (each phase already fails one image for its faults).

    (Classes, not contextlib: the boot path does not import it.)"""

    __slots__ = ("run", "stage")

    def __init__(self, r: Run, stage: str):
        self.run, self.stage = r, stage

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb) -> bool:
        if not isinstance(e, Exception):
            return False
        for image in self.run.images:
            if image.ok:
                image.fail(self.stage, internal_error(e))
        return True


class _interruptible:
    """While the apply changes the target, SIGTERM only sets ``r.interrupted``.

    The phases look at it between images: the image in progress is finished
    (or rolled back), the ones after it fail, and what is applied is sealed
    and recorded. systemd's SIGKILL after the stop timeout stays the backstop.
    """

    __slots__ = ("run", "log", "old", "installed")

    def __init__(self, r: Run, log: Logger):
        self.run, self.log, self.old, self.installed = r, log, None, False

    def _note(self, signum, _frame) -> None:
        if not self.run.interrupted:
            self.run.interrupted = "SIGTERM"
            self.log.warning(f"{self.run.interrupted} received: finishing the current "
                             "image, then sealing what is applied")

    def __enter__(self):
        try:
            self.old = _signal.signal(_signal.SIGTERM, self._note)
            self.installed = True
        except ValueError:  # not the main thread: nobody can deliver it here anyway
            pass
        return self

    def __exit__(self, kind, e, tb) -> bool:
        if self.installed:
            _signal.signal(_signal.SIGTERM, self.old)
        return False


def _remove_failed(r: Run, unpack_host: str, log: Logger) -> None:
    """Nothing of a failed image stays reachable: its tree is removed, a loop mount
    unmounted, before the seal makes the unpack dir read-only (issue: a unit's
    AssertPathExists= on its manifest must not find it)."""
    for image in r.images:
        if image.ok or image.status == SKIPPED:
            continue
        target = os.path.join(unpack_host, image.name)
        why = ""
        for _ in range(2):  # once more after a transient fault
            try:
                from ..fstree import remove_tree

                if image.mounted:
                    from .. import engine

                    engine.umount(target)
                    image.mounted = False
                remove_tree(target)
                why = ""
                break
            except Exception as e:
                why = (f"{e.strerror}" if isinstance(e, OSError) and e.strerror
                       else str(e))
        if why:
            where = f"{r.paths.unpack_dir}/{image.name}"
            image.error += f"; its tree {where} could not be removed: {why}"
            log.error(f"{where}: cannot remove the failed image: {why}")


def _dry_run(r: Run, log: Logger) -> None:
    """Unpack the tarballs into a private temporary folder to read their manifests.

    This verifies every archive and shows exactly what a real run would
    propagate, without touching the target. Mountable images are not mounted.
    """
    import shutil
    import tempfile

    from .. import engine
    from . import policy as trust

    tmp = tempfile.mkdtemp(prefix="torcx-dry-run-")
    try:
        with Phase(r, "unpack"):
            batch = [im for im in r.images if im.ok and not im.archive.mountable]
            jobs = [engine.Job(im.archive.host_path, os.path.join(tmp, im.name),
                               **trust.pins(im)) for im in batch]
            for image, result in zip(batch, engine.extract_many(jobs)):
                image.unpack = {"method": "extract", "bytes": result.bytes,
                                "files": result.files, "verified": result.verified,
                                "archive_xxh3": result.archive_xxh3}
                if result.error is not None:
                    image.fail(*trust.unpack_failure(image, result.error))
        with Phase(r, "propagate"):
            from .propagate import plan_run, resolve_run

            plan_run(r, tmp)
            resolve_run(r)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for image in r.all_images:
        if image.ok:
            image.status = PLANNED
            if image.archive.mountable:
                image.unpack = {"method": "loop-mount", "fstype": image.archive.format}
                image.error = "manifest not read: mountable images are not mounted in a dry run"


def report(r: Run) -> dict:
    """The JSON report (``torcx apply --json``, RUNDIR/apply.json)."""
    return r.to_json()


class _Recorder(Logger):
    """Passes lines on to a logger and keeps them for RUNDIR/generator.log."""

    __slots__ = ("inner", "lines")

    def __init__(self, inner: Logger):
        super().__init__(inner.level, stream=inner.stream, prefix=inner.prefix,
                         priority_prefix=inner.priority_prefix)
        self.inner = inner
        self.lines: list[str] = []

    def log(self, priority: int, message: str) -> None:
        self.inner.log(priority, message)
        if priority <= self.level:
            self.lines.append(f"<{priority}>{message}")


def _append_generator_log(paths: Paths, lines: list[str]) -> None:
    path = paths.host(f"{paths.run_dir}/{GENERATOR_LOG}")
    if not os.path.isdir(os.path.dirname(path)):
        return  # refused before RUNDIR existed: the journal has the lines
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write("".join(f"{stamp} {line}\n" for line in lines))
    except OSError:
        pass  # the log copy is a convenience; the journal has the lines


def main(ctx, args) -> int:
    """``torcx apply [--no-mount] [--dry-run] [--json]`` and ``torcx-generator``."""
    from .report import human, log_lines, summary_line

    generator = bool(getattr(ctx, "generator", False))
    mount = not getattr(args, "no_mount", False)
    dry_run = bool(getattr(args, "dry_run", False))
    as_json = bool(getattr(args, "json", False))
    from .bootunits import parse_planned

    log = _Recorder(ctx.log)
    planned = None if generator else parse_planned(ctx.environ.get("TORCX_PLANNED"))
    r = run(ctx.paths, log, mount=mount, dry_run=dry_run, planned=planned)
    if generator:
        for priority, text in log_lines(r):
            log.log(priority, text)
        if not dry_run:
            _append_generator_log(ctx.paths, log.lines)
    elif as_json:
        import json

        ctx.out(json.dumps({"kind": REPORT_KIND, "value": report(r)}, indent=2,
                           sort_keys=True))
    else:
        if r.status in (REFUSED, ABORTED):
            log.error(summary_line(r)[1])
        ctx.out(human(r))
    return r.exit_code
