# SPDX-License-Identifier: Apache-2.0
"""What the apply says: the generator's log lines and the command's human summary.

Pure formatting of a :class:`torcx.apply.Run`; the JSON report is
``Run.to_json``.
"""

from __future__ import annotations

from ..log import ERROR, INFO, WARNING
from . import (
    ABORTED,
    ALREADY,
    DRY_RUN,
    FAILED,
    IMAGE_FAILED,
    OK,
    PLANNED,
    REFUSED,
    SKIPPED,
    Image,
    Run,
)

__all__ = ["human", "image_line", "log_lines", "size_text", "summary_line"]


def size_text(n: int) -> str:
    """Bytes for people: 512 B, 3.4 MiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def tmpfs_text(size: int, need: int) -> str:
    """The tmpfs line: its size and where the margin over the images comes from."""
    from .sizing import MARGIN_BYTES, MARGIN_DEN, MARGIN_NUM

    percent = (MARGIN_NUM - MARGIN_DEN) * 100 // MARGIN_DEN
    return (f"tmpfs {size_text(size)} (a limit; it reserves no memory): "
            f"{size_text(need)} of unpacked tar streams (an upper bound), plus {percent}% "
            f"and {size_text(MARGIN_BYTES)} for page rounding of small files and folders")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def image_line(image: Image) -> tuple[int, str]:
    """(priority, text) for one image, as the generator logs it."""
    ref = f"{image.name}:{image.ref.reference}"
    if image.status == IMAGE_FAILED:
        return ERROR, f"image {ref} failed ({image.stage}): {image.error}"
    if image.status == SKIPPED:
        return WARNING, f"image {ref} skipped: {image.error}"
    a, u = image.archive, image.unpack
    if u.get("method") == "loop-mount":
        how = f"loop-mounted {a.format} {a.path}"
    elif a.format == "sysext":
        how = (f"sysext ({u.get('fstype') or 'not checked'}) {a.path}"
               + (f" linked as {u['link']}" if u.get("link") else "")
               + ("; sha256 verified" if u.get("verified") else ""))
        if u.get("note"):
            how += f"; note: {u['note']}"
    else:
        how = (f"unpacked {a.format} {a.path}: {u.get('files', 0)} files, "
               f"{size_text(u.get('bytes', 0))}"
               + (", verified" if u.get("verified") else ", no digest list"))
        if "seconds" in u:
            how += f" in {_ms(u['seconds'])}"
    verb = "would be" if image.status == PLANNED else ""
    links = len(image.created)
    tail = f"; {links} propagated" if links else ""
    if image.existing:
        tail += f", {len(image.existing)} left alone (already present)"
    return INFO, f"image {ref} {verb + ' ' if verb else ''}{how}{tail}"


def summary_line(r: Run) -> tuple[int, str]:
    """(priority, text) of the run's one-line summary, with the total time."""
    total = _ms(r.timings.get("total", 0.0))
    n, failed = len(r.all_images), r.failed_images
    profiles_text = ", ".join(r.selection.lower + ([r.selection.upper] if r.selection.upper
                                                   else [])) if r.selection else ""
    if r.status == ALREADY:
        return INFO, f"already applied this boot ({r.paths.run_dir} exists), nothing to do"
    if r.status == REFUSED:
        return ERROR, f"apply refused before any work: {r.error}"
    if r.status == ABORTED:
        return ERROR, f"apply aborted, nothing applied: {r.error} ({total})"
    what = f"profiles [{profiles_text}]: {n - len(failed)}/{n} images"
    if r.status == DRY_RUN:
        note = f"; note: {r.error}" if r.error else ""
        return INFO, f"dry run, nothing changed; {what} would apply{note} ({total})"
    if r.status == FAILED:
        why = []
        if failed:
            why.append(f"failed images: {', '.join(failed)}")
        if r.profile_errors:
            why.append(f"broken profiles: {', '.join(n for n, _ in r.profile_errors)}")
        if r.config_errors:
            why.append("broken configuration (defaults used)")
        if r.error:
            why.append(r.error)
        return ERROR, f"applied with errors, {what}; {'; '.join(why)} ({total})"
    return INFO, f"applied {what} ({total})"


def log_lines(r: Run) -> list[tuple[int, str]]:
    """Every generator line: profile problems, one per image, conflicts, summary."""
    lines: list[tuple[int, str]] = []
    if r.status in (ALREADY, REFUSED):
        return [summary_line(r)]  # nothing was attempted: no per-image lines
    for message in r.config_errors:
        lines.append((ERROR, f"configuration: {message}"))
    for name, message in r.profile_errors:
        lines.append((ERROR, f"profile {name} not applied: {message}"))
    lines.extend(image_line(im) for im in r.all_images)
    lines.extend((WARNING, f"conflict: {c}") for c in r.conflicts)
    lines.append(summary_line(r))
    return lines


def human(r: Run) -> str:
    """The command's human summary."""
    out = []
    if r.selection is not None and r.status not in (ALREADY, REFUSED):
        sel = r.selection
        out.append(f"profiles: lower [{', '.join(sel.lower)}], upper "
                   f"{sel.upper or '(none)'}")
        for message in r.config_errors:
            out.append(f"  error: configuration: {message}")
        for name, message in r.profile_errors:
            out.append(f"  error: profile {name}: {message}")
        for _name, message in r.profile_warnings:
            out.append(f"  warning: {message}")
        for image in r.all_images:
            status = {OK: "ok", PLANNED: "plan", SKIPPED: "skip",
                      IMAGE_FAILED: "FAIL"}[image.status]
            out.append(f"  {status:5} {image_line(image)[1][len('image '):]}")
            if r.dry_run:
                for e in image.created:
                    arrow = f"-> {e.link}" if e.link else f"<- {e.source}"
                    out.append(f"          {e.kind:10} {e.action:7} {e.dest} {arrow}")
        for c in r.conflicts:
            out.append(f"  conflict: {c}")
        tmpfs = (tmpfs_text(r.tmpfs_size, r.need) if r.need or r.tmpfs_mounted else "")
        if tmpfs:
            out.append(f"  {tmpfs}{'' if r.mount else ' (not mounted: --no-mount)'}")
        if r.sealed:
            ro = "unpack dir read-only" if r.read_only else "unpack dir left writable"
            out.append(f"  sealed {r.paths.seal_file} and {r.paths.run_profile}; {ro}")
        t = r.timings
        phases = ", ".join(f"{k} {_ms(t[k])}" for k in ("plan", "unpack", "propagate", "sysext",
                                                         "seal")
                           if k in t)
        if phases:
            out.append(f"  time: {phases}")
    out.append(summary_line(r)[1])
    return "\n".join(out) + "\n"
