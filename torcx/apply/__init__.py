# SPDX-License-Identifier: Apache-2.0
"""The boot-time apply (SPEC.md section 6), one module per step, and the state they share.

Steps: plan (with sizing), unpack, propagate, seal; report formats what a run
says, status reads what it recorded, run puts the steps in order. Here: one
:class:`Image` per image of the merged profile, the :class:`Run`, their
statuses, and :class:`Phase`, which times a step into the run's report.
"""

from __future__ import annotations

import time

from .. import __version__
from ..paths import Paths

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

__all__ = ["REPORT_KIND", "Image", "Phase", "Run", "internal_error"]


def internal_error(e: BaseException) -> str:
    """The failure text of an exception no step expected (a bug, or a hostile image
    that found one): it fails the image it happened to, never the whole run."""
    return f"internal error ({type(e).__name__}): {e}"


class Image:
    """One image of the merged profile and everything that happened to it."""

    def __init__(self, ref):
        self.ref = ref
        self.name: str = ref.name
        self.status = OK
        self.stage = ""   # phase that failed: lookup, plan, policy, unpack, manifest, propagate
        self.error = ""
        self.archive = None  # torcx.store.Archive
        self.trust = None  # torcx.policy.Decision: what the policy asked, why it passed
        self.estimate = None  # torcx.apply.sizing.Estimate
        self.unpack: dict = {}
        self.entries: list = []  # planned propagate.Entry
        self.created: list = []
        self.existing: list = []
        self.mounted = False  # loop-mounted at unpack/NAME

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
            "trust": None if self.trust is None else self.trust.to_json(),
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
        self.selection = None  # torcx.profiles.Selection
        self.policy = None  # torcx.policy.Policy
        self.digests = None  # image-file digests running (torcx.apply.policy)
        # Faults of the config file or os-release tolerated while loading paths.
        self.config_errors: list[str] = list(getattr(paths, "problems", ()))
        self.profile_errors: list[tuple[str, str]] = []
        self.profile_warnings: list[tuple[str, str]] = []
        self.images: list[Image] = []
        self.extensions: list[Image] = []  # systemd-sysext images (torcx.apply.sysext)
        self.conflicts: list = []  # propagate.Conflict
        self.need = 0
        self.tmpfs_size = 0
        self.mem_available: int | None = None
        self.tmpfs_mounted = False
        self.read_only = False
        self.sealed = False
        self.interrupted = ""  # the signal that asked the apply to stop, e.g. "SIGTERM"
        self.timings: dict[str, float] = {}

    @property
    def all_images(self) -> list[Image]:
        """The torcx images, then the systemd-sysext images."""
        return self.images + self.extensions

    @property
    def failed_images(self) -> list[str]:
        return [im.name for im in self.all_images if im.status == IMAGE_FAILED]

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
            "policy": None if self.policy is None else self.policy.to_json(),
            "images": [im.to_json() for im in self.all_images],
            "failed_images": self.failed_images,
            "conflicts": [c.to_json() for c in self.conflicts],
            "sealed": self.sealed,
            "interrupted": self.interrupted or None,
            "timings": {k: round(v, 6) for k, v in self.timings.items()},
        }


class Phase:
    """Times one phase into ``run.timings[name]``."""

    def __init__(self, run: Run, name: str):
        self.run, self.name = run, name

    def __enter__(self):
        self.start = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.run.timings[self.name] = time.monotonic() - self.start
        return False
