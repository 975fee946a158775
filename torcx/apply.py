# SPDX-License-Identifier: Apache-2.0
"""The boot-time apply (SPEC.md section 6): plan, unpack, propagate, seal.

``torcx-generator`` and ``torcx apply`` both end here. The run is split in
phases, each timed: *plan* (profiles merged, archives chosen, tmpfs sized),
*unpack* (every tarball in one parallel engine batch, squashfs/erofs
loop-mounted), *propagate* (bins and unit-like files exposed) and *seal*
(run profile, seal file, read-only remount, per-image record). What it
says is formatted by torcx.summary.

A failing image never stops the others; it is recorded with the phase that
failed and why, and the run exits 1 at the end. An image the machine has
no memory for fails at plan; only an unpack dir that cannot be prepared
stops the run.
"""

from __future__ import annotations

import os
import time

from . import profiles, schemas, seal, sizing
from ._version import __version__
from .errors import MountError, NoDigestList, NotFound, SchemaError, TorcxError
from .log import Logger
from .paths import Paths
from .store import Store

REPORT_KIND = "torcx-apply-report-v0"
MANIFEST = ".torcx/manifest.json"
MANIFEST_LIMIT = 4 << 20  # bytes; a manifest lists paths, it is never this big
GENERATOR_LOG = "generator.log"

# Statuses of a whole run.
APPLIED = "applied"           # every image applied
FAILED = "failed"             # sealed, but some image or profile failed
ALREADY = "already-applied"   # RUNDIR existed: nothing done (at most once per boot)
REFUSED = "refused"           # stopped before any work (no longer produced; kept for reports)
ABORTED = "aborted"           # the unpack dir could not be prepared: nothing applied
DRY_RUN = "dry-run"

# Statuses of one image.
OK = "ok"
IMAGE_FAILED = "failed"
SKIPPED = "skipped"  # a mountable image under --no-mount
PLANNED = "planned"  # dry run

__all__ = ["REPORT_KIND", "Image", "Run", "main", "run"]


class Image:
    """One image of the merged profile and everything that happened to it."""

    def __init__(self, ref):
        self.ref = ref
        self.name: str = ref.name
        self.status = OK
        self.stage = ""   # phase that failed: lookup, unpack, manifest, propagate
        self.error = ""
        self.archive = None  # torcx.store.Archive
        self.estimate: sizing.Estimate | None = None
        self.unpack: dict = {}
        self.entries: list = []  # planned propagate.Entry
        self.created: list = []
        self.existing: list = []

    @property
    def ok(self) -> bool:
        return self.status in (OK, PLANNED)

    def fail(self, stage: str, error: str) -> None:
        self.status, self.stage, self.error = IMAGE_FAILED, stage, error

    def to_json(self) -> dict:
        a = self.archive
        d = {
            "name": self.name,
            "reference": self.ref.reference,
            "remote": self.ref.remote,
            "status": self.status,
            "stage": self.stage,
            "error": self.error,
            "archive": None if a is None else {
                "path": a.path, "store": a.store, "format": a.format, "bytes": a.size},
            "estimate": None if self.estimate is None else {
                "bytes": self.estimate.need, "exact": self.estimate.exact,
                "method": self.estimate.method},
            "unpack": self.unpack,
            "propagated": [e.to_json() for e in self.created],
            "not_overwritten": [e.to_json() for e in self.existing],
        }
        return d


class Run:
    """The state and report of one apply."""

    def __init__(self, paths: Paths, *, mount: bool, dry_run: bool):
        # propagate and engine are imported only when there are images: an
        # empty profile is the boot-time common case and start-up time counts.
        self.paths = paths
        self.mount = mount
        self.dry_run = dry_run
        self.status = APPLIED
        self.error = ""
        self.selection: profiles.Selection | None = None
        # Faults of the config file or os-release tolerated while loading paths.
        self.config_errors: list[str] = list(getattr(paths, "problems", ()))
        self.profile_errors: list[tuple[str, str]] = []
        self.profile_warnings: list[tuple[str, str]] = []
        self.images: list[Image] = []
        self.conflicts: list = []  # propagate.Conflict
        self.need = 0
        self.tmpfs_size = 0
        self.mem_available: int | None = None
        self.tmpfs_mounted = False
        self.read_only = False
        self.sealed = False
        self.timings: dict[str, float] = {}

    @property
    def failed_images(self) -> list[str]:
        return [im.name for im in self.images if im.status == IMAGE_FAILED]

    @property
    def exit_code(self) -> int:
        if self.status in (APPLIED, ALREADY):
            return 0
        if self.status == DRY_RUN:
            return 1 if (self.failed_images or self.profile_errors or self.config_errors) else 0
        return 1

    def to_json(self) -> dict:
        sel = self.selection
        p = self.paths
        problems = ([{"profile": n, "message": m, "severity": "error"}
                     for n, m in self.profile_errors]
                    + [{"profile": n, "message": m, "severity": "warning"}
                       for n, m in self.profile_warnings])
        return {
            "version": __version__,
            "status": self.status,
            "error": self.error,
            "dry_run": self.dry_run,
            "mount": self.mount,
            "root": p.root,
            "config_problems": list(self.config_errors),
            "profiles": {
                "lower": list(sel.lower) if sel else [],
                "upper": sel.upper if sel else None,
                "wanted_upper": sel.wanted_upper if sel else None,
                "files": dict(sel.files) if sel else {},
                "problems": problems,
            },
            "paths": {"run_dir": p.run_dir, "bin_dir": p.bin_dir,
                      "unpack_dir": p.unpack_dir, "profile_path": p.run_profile,
                      "seal_file": p.seal_file},
            "tmpfs": {"planned_bytes": self.need, "size_bytes": self.tmpfs_size,
                      "mem_available_bytes": self.mem_available,
                      "mounted": self.tmpfs_mounted, "read_only": self.read_only},
            "images": [im.to_json() for im in self.images],
            "failed_images": self.failed_images,
            "conflicts": [c.to_json() for c in self.conflicts],
            "sealed": self.sealed,
            "timings": {k: round(v, 6) for k, v in self.timings.items()},
        }


class _Phase:
    """Times one phase into ``run.timings[name]``."""

    def __init__(self, run: Run, name: str):
        self.run, self.name = run, name

    def __enter__(self):
        self.start = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.run.timings[self.name] = time.monotonic() - self.start
        return False


# -- plan ---------------------------------------------------------------------

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
    for ref in run.selection.images:
        image = Image(ref)
        run.images.append(image)
        try:
            image.archive = store.lookup(ref.name, ref.reference)
        except NotFound as e:
            image.fail("lookup", str(e))
            continue
        if image.archive.mountable:
            continue  # loop-mounted: takes no room in the tmpfs
        try:
            # Read from the compression framing in a few small reads, not by a
            # decoding pass that would double the boot's unpack cost: see
            # torcx.sizing for the formats and the margin.
            image.estimate = sizing.estimate(image.archive.host_path)
        except OSError as e:
            image.fail("lookup", f"{image.archive.path}: {e.strerror or e}")
            continue
        run.need += image.estimate.need
    run.tmpfs_size = sizing.tmpfs_size(run.need)


def _fit_memory(run: Run) -> None:
    """Fail the images the machine cannot hold, in profile order, and resize the tmpfs.

    An image that alone or with the images before it would need more than
    MemAvailable fails at 'plan'; the others still apply (one image too big
    for this machine must not keep the vendor addons from it).
    """
    run.mem_available = avail = sizing.mem_available()
    if avail is None or run.need <= avail:
        return
    from .summary import size_text

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


# -- unpack ---------------------------------------------------------------------

def _unpack(run: Run, unpack_host: str, log: Logger) -> None:
    """Extract every tarball in one parallel batch; loop-mount the mountable images."""
    batch = [im for im in run.images if im.ok and not im.archive.mountable]
    mountable = [im for im in run.images if im.ok and im.archive.mountable]
    if not (batch or mountable):
        return
    try:
        from . import engine  # the native engine loads only when there is work
    except ImportError as e:
        for image in batch + mountable:
            image.fail("unpack", str(e))
        return
    jobs = [engine.Job(im.archive.host_path, os.path.join(unpack_host, im.name))
            for im in batch]
    try:
        results = engine.extract_many(jobs)
    except TorcxError as e:  # the batch could not run at all (ENOMEM)
        results = []
        for image in batch:
            image.fail("unpack", str(e))
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
            image.fail("unpack", str(result.error))
    for image in run.images:
        if not (image.ok and image.archive.mountable):
            continue
        image.unpack = {"method": "loop-mount", "fstype": image.archive.format,
                        "archive_bytes": image.archive.size, "verified": False}
        if not run.mount:
            image.status, image.stage = SKIPPED, "unpack"
            image.error = f"{image.archive.format} image not mounted (--no-mount)"
            continue
        target = os.path.join(unpack_host, image.name)
        start = time.monotonic()
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
            _verify_mounted(image, target, engine)
        image.unpack["seconds"] = round(time.monotonic() - start, 6)


def _verify_mounted(image, target: str, engine) -> None:
    """Check every file of a mounted image against its .torcx/digests, as the engine
    does for tarballs; a mismatch unmounts it and fails the image alone. An image
    without a digest list stays mounted and is reported unverified."""
    from .imageverify import check_mounted_tree

    try:
        files = check_mounted_tree(target, image.archive.path)
    except NoDigestList:
        return
    except TorcxError as e:
        image.fail("unpack", str(e))
        try:
            engine.umount(target)
            os.rmdir(target)
        except OSError:
            pass
        return
    image.unpack.update(verified=True, files=files)


# -- propagate --------------------------------------------------------------------

def _read_assets(image_host: str, image_target: str) -> dict:
    """The image manifest's assets; an image without a manifest propagates nothing.

    Read without leaving the image (raises propagate.AssetError otherwise).
    """
    from . import propagate

    data = propagate.read_image_file(image_host, "/" + MANIFEST, MANIFEST_LIMIT)
    if data is None:
        return {}
    shown = f"{image_target}/{MANIFEST}"
    manifest = schemas.parse_image_manifest(schemas.load_json(data, shown), shown)
    return dict(manifest.items())


def _plan_propagation(run: Run, unpack_host: str) -> None:
    """Read each unpacked image's manifest and list what it propagates."""
    from . import propagate

    paths = run.paths
    for image in run.images:
        if not image.ok:
            continue
        host = os.path.join(unpack_host, image.name)
        target = f"{paths.unpack_dir}/{image.name}"
        try:
            assets = _read_assets(host, target)
        except SchemaError as e:
            image.fail("manifest", str(e))
            continue
        except propagate.AssetError as e:
            image.fail("manifest", f"{target}/{MANIFEST}: {e}")
            continue
        except OSError as e:
            image.fail("manifest", f"{target}/{MANIFEST}: {e.strerror or e}")
            continue
        try:
            image.entries = propagate.plan_image(image.name, host, target, assets,
                                                 paths.bin_dir)
        except propagate.AssetError as e:
            image.fail("manifest", f"{target}/{MANIFEST}: {e}")


def _resolve(run: Run):
    """Order all images' entries; in a dry run what would be created counts as created."""
    from . import propagate

    by_image = {im.name: im for im in run.images}
    res = propagate.resolve(run.paths.host, [im.entries for im in run.images if im.ok])
    run.conflicts = res.conflicts
    for entry in res.existing:
        by_image[entry.image].existing.append(entry)
    if run.dry_run:
        for entry in res.entries:
            by_image[entry.image].created.append(entry)
    return res


def _propagate(run: Run) -> None:
    from . import propagate

    res = _resolve(run)
    by_image = {im.name: im for im in run.images}
    outcome = propagate.execute(run.paths.host, res.entries)
    for entry in outcome.created:
        by_image[entry.image].created.append(entry)
    for entry in outcome.existing:
        by_image[entry.image].existing.append(entry)
    for entry, message in outcome.failed:
        image = by_image[entry.image]
        if image.status != IMAGE_FAILED:
            image.fail("propagate", message)


# -- seal -------------------------------------------------------------------------

def _seal(run: Run, log: Logger) -> None:
    """Run profile, seal file, read-only remount (upstream's order), then our record.

    The record (RUNDIR/apply.json) comes last so that it carries the remount's
    outcome; RUNDIR itself is not on the sealed tmpfs.
    """
    paths, sel = run.paths, run.selection
    try:
        seal.write_run_profile(paths, sel.images)
        seal.write_seal(paths, sel.lower, sel.upper or "", run.failed_images)
        run.sealed = True
    except OSError as e:
        # Still freeze what was unpacked and record why the seal is missing.
        where = f"{e.filename}: " if e.filename else ""
        run.status, run.error = FAILED, f"cannot seal: {where}{e.strerror or e}"
        log.error(run.error)
    if run.mount:
        try:
            seal.remount_read_only(paths)
            run.read_only = True
        except MountError as e:
            run.status = FAILED
            run.error = f"{run.error}; {e}" if run.error else str(e)
            log.error(str(e))


# -- the run ------------------------------------------------------------------------

def run(paths: Paths, log: Logger, *, mount: bool = True, dry_run: bool = False) -> Run:
    """Apply the merged profile once per boot; returns the Run with its report.

    ``mount=False`` does everything but mounts (image builders, tests);
    ``dry_run=True`` plans and changes nothing on the target.
    """
    start = time.monotonic()
    r = Run(paths, mount=mount, dry_run=dry_run)
    run_host = paths.host(paths.run_dir)
    if os.path.lexists(run_host) and not dry_run:
        r.status = ALREADY  # the summary line says so
        return r
    with _Phase(r, "plan"):
        plan(r, log)
    if dry_run:
        r.status = DRY_RUN
        if os.path.lexists(run_host):
            r.error = f"{paths.run_dir} exists: a real apply would do nothing this boot"
        _dry_run(r, log)
        r.timings["total"] = time.monotonic() - start
        return r
    if mount:
        _fit_memory(r)
    unpack_host = paths.host(paths.unpack_dir)
    with _Phase(r, "unpack"):
        try:
            os.makedirs(os.path.dirname(run_host), mode=0o755, exist_ok=True)
            os.mkdir(run_host, 0o755)  # the once-per-boot claim: fails if another run won
        except FileExistsError:
            r.status = ALREADY
            return r
        try:
            os.mkdir(paths.host(paths.bin_dir), 0o755)
            os.mkdir(unpack_host, 0o755)
            if mount:
                from . import engine

                engine.mount_tmpfs(unpack_host, r.tmpfs_size, 0o755)
                r.tmpfs_mounted = True
        except (OSError, ImportError) as e:
            r.status = ABORTED
            r.error = (f"{e.filename}: {e.strerror}" if isinstance(e, OSError)
                       and not isinstance(e, MountError) else str(e))
            for image in r.images:
                if image.ok:
                    image.fail("unpack", f"unpack dir not prepared: {r.error}")
            seal.write_record(paths, report(r))
            r.timings["total"] = time.monotonic() - start
            return r
        _unpack(r, unpack_host, log)
    with _Phase(r, "propagate"):
        if any(im.ok for im in r.images):
            _plan_propagation(r, unpack_host)
            _propagate(r)
    if r.failed_images or r.profile_errors or r.config_errors:
        r.status = FAILED
    with _Phase(r, "seal"):
        _seal(r, log)
    r.timings["total"] = time.monotonic() - start
    seal.write_record(paths, report(r))
    return r


def _dry_run(r: Run, log: Logger) -> None:
    """Unpack the tarballs into a private temporary folder to read their manifests.

    This verifies every archive and shows exactly what a real run would
    propagate, without touching the target. Mountable images are not mounted.
    """
    import shutil
    import tempfile

    from . import engine

    tmp = tempfile.mkdtemp(prefix="torcx-dry-run-")
    try:
        with _Phase(r, "unpack"):
            batch = [im for im in r.images if im.ok and not im.archive.mountable]
            jobs = [engine.Job(im.archive.host_path, os.path.join(tmp, im.name))
                    for im in batch]
            for image, result in zip(batch, engine.extract_many(jobs)):
                image.unpack = {"method": "extract", "bytes": result.bytes,
                                "files": result.files, "verified": result.verified,
                                "archive_xxh3": result.archive_xxh3}
                if result.error is not None:
                    image.fail("unpack", str(result.error))
        with _Phase(r, "propagate"):
            _plan_propagation(r, tmp)
            _resolve(r)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for image in r.images:
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
    import json

    from .summary import human, log_lines, summary_line

    generator = bool(getattr(ctx, "generator", False))
    mount = not getattr(args, "no_mount", False)
    dry_run = bool(getattr(args, "dry_run", False))
    as_json = bool(getattr(args, "json", False))
    log = _Recorder(ctx.log)
    r = run(ctx.paths, log, mount=mount, dry_run=dry_run)
    if generator:
        for priority, text in log_lines(r):
            log.log(priority, text)
        if not dry_run:
            _append_generator_log(ctx.paths, log.lines)
    elif as_json:
        ctx.out(json.dumps({"kind": REPORT_KIND, "value": report(r)}, indent=2,
                           sort_keys=True))
    else:
        if r.status in (REFUSED, ABORTED):
            log.error(summary_line(r)[1])
        ctx.out(human(r))
    return r.exit_code
