# SPDX-License-Identifier: Apache-2.0
"""The status (``torcx status``): what this boot applied, from which archives, what failed.

Read-only. Sources, in order of trust: the seal file (/run/metadata/torcx,
written last by a completed apply), the run profile (RUNDIR/profile.json) and
the per-image record (RUNDIR/apply.json). Each one may be missing (no apply
this boot, or an apply that stopped early); the status says which.
"""

from __future__ import annotations

import os

from .. import schemas
from . import seal

STATUS_KIND = "torcx-status-v0"

__all__ = ["STATUS_KIND", "collect", "human"]


def _run_profile(paths) -> tuple[list, str]:
    """(images as JSON, problem) of RUNDIR/profile.json."""
    try:
        profile = schemas.read_profile(paths.host(paths.run_profile))
    except FileNotFoundError:
        return [], ""
    except schemas.SchemaError as e:
        return [], str(e)
    except OSError as e:
        return [], f"{paths.run_profile}: {e.strerror or e}"
    return [im.to_json() for im in profile.images], ""


def collect(paths) -> dict:
    """The status document's value."""
    images, profile_problem = _run_profile(paths)
    problems = [profile_problem] if profile_problem else []
    try:
        sealed = seal.read_seal(paths)
    except OSError as e:  # e.g. a folder where the seal file should be
        sealed = None
        problems.append(f"{paths.seal_file}: {e.strerror or e}")
    record = None
    try:
        record = seal.read_record(paths)
    except ValueError as e:
        problems.append(f"{seal.record_path(paths)}: {e}")
    except OSError as e:
        problems.append(f"{seal.record_path(paths)}: {e.strerror or e}")
    applied = os.path.lexists(paths.host(paths.run_dir))
    if record is None and (problems or (sealed is not None and seal.FAILED_IMAGES in sealed)):
        # Our apply writes its record after the seal: a seal of ours without a
        # readable record means the outcome is not known (the run exited 1).
        # Only an upstream seal (no TORCX_FAILED_IMAGES) stands on its own.
        state = "unknown"
    elif sealed is not None:
        state = "failed" if sealed.get(seal.FAILED_IMAGES) or (
            record and record.get("status") != "applied") else "applied"
    elif record is not None:
        state = record.get("status", "unknown")  # stopped before the seal
    else:
        state = "incomplete" if applied else "not-applied"
    by_name = {im.get("name"): im for im in (record or {}).get("images", [])}
    out_images = []
    for entry in images or [{"name": n, "reference": im.get("reference")}
                            for n, im in by_name.items()]:
        rec = by_name.get(entry["name"], {})
        archive = rec.get("archive") or {}
        unpack = rec.get("unpack") or {}
        out_images.append({
            "name": entry["name"],
            "reference": entry.get("reference"),
            "remote": entry.get("remote"),
            "status": rec.get("status", "unknown"),
            "stage": rec.get("stage", ""),
            "error": rec.get("error", ""),
            "archive": archive.get("path"),
            "store": archive.get("store"),
            "format": archive.get("format"),
            "method": unpack.get("method"),
            "verified": unpack.get("verified"),
            "archive_xxh3": unpack.get("archive_xxh3"),
            "bytes": unpack.get("bytes"),
            "files": unpack.get("files"),
            "propagated": [e["dest"] for e in rec.get("propagated", [])],
            "trust": rec.get("trust"),
        })
        if archive.get("format") == "sysext":  # what torcx.apply.sysext found
            out_images[-1]["sysext"] = {k: unpack.get(k) for k in (
                "fstype", "sha256", "link", "release", "refusal", "note")}
    seal_keys = sealed or {}
    failed = [n for n in seal_keys.get(seal.FAILED_IMAGES, "").split(":") if n]
    if not sealed and record:
        failed = list(record.get("failed_images", []))
    return {
        "state": state,
        "sealed": sealed is not None,
        "seal_file": paths.seal_file,
        "seal": seal_keys,
        "lower_profiles": [n for n in seal_keys.get(seal.LOWER_PROFILES, "").split(":") if n],
        "upper_profile": seal_keys.get(seal.UPPER_PROFILE) or None,
        "profile_path": seal_keys.get(seal.PROFILE_PATH, paths.run_profile),
        "images": out_images,
        "failed_images": failed,
        "config_problems": (record or {}).get("config_problems", []),
        "profile_problems": (record or {}).get("profiles", {}).get("problems", []),
        "conflicts": (record or {}).get("conflicts", []),
        "policy": (record or {}).get("policy"),
        "error": (record or {}).get("error", ""),
        "read_only": ((record or {}).get("tmpfs") or {}).get("read_only"),
        "timings": (record or {}).get("timings", {}),
        "problems": problems,
    }


_STATE_TEXT = {
    "applied": "applied",
    "failed": "applied with errors",
    "not-applied": "nothing applied this boot (no seal, no run folder)",
    "incomplete": "an apply started but did not finish (run folder without seal or record)",
    "refused": "apply refused",
    "aborted": "apply aborted before unpacking",
    "unknown": "unknown: this boot's record of the apply is missing or unreadable",
}


def human(s: dict) -> str:
    out = [f"state: {_STATE_TEXT.get(s['state'], s['state'])}"]
    if s["sealed"]:
        upper = s["upper_profile"] or "(none)"
        out.append(f"profiles: lower [{', '.join(s['lower_profiles'])}], upper {upper}")
        out.append(f"run profile: {s['profile_path']}")
    if s["error"]:
        out.append(f"error: {s['error']}")
    for message in s["config_problems"]:
        out.append(f"configuration: {message}")
    for p in s["profile_problems"]:
        out.append(f"profile {p['profile']} ({p['severity']}): {p['message']}")
    policy = s.get("policy")
    if policy:
        origin = " + ".join(policy["sources"]) or "default (no policy file)"
        from ..policy import CLASSES

        levels = ", ".join(f"{c} {policy['levels'][c]}" for c in CLASSES
                           if c in policy["levels"])
        out.append(f"policy: {levels} (from {origin})"
                   + ("; every file of mounted images checked" if policy["check_files"]
                      else ""))
        for problem in policy.get("problems", []):
            out.append(f"policy problem: {problem}")
    for im in s["images"]:
        ref = f"{im['name']}:{im['reference']}"
        if im["status"] == "ok" and "sysext" in im:
            sx = im["sysext"]
            out.append(f"  ok      {ref}  sysext {sx['fstype']} {im['archive']} linked as "
                       f"{sx['link']}" + (f"; note: {sx['note']}" if sx["note"] else ""))
        elif im["status"] == "ok":
            check = "verified" if im["verified"] else "not verified"
            how = "mounted" if im["method"] == "loop-mount" else "unpacked"
            out.append(f"  ok      {ref}  {how} {im['format']} {im['archive']} ({check}); "
                       f"{len(im['propagated'])} propagated")
        if im["status"] == "ok":
            trust = im.get("trust")
            if trust and trust.get("reason"):
                out.append(f"          trust ({trust['class']} store, {trust['level']}): "
                           f"{trust['reason']}")
        else:
            out.append(f"  {im['status']:7} {ref}  {im['stage']}: {im['error']}")
    for c in s["conflicts"]:
        out.append(f"  conflict: {c['kind']} {c['dest']}: kept {c['kept']}, "
                   f"dropped {c['dropped']}")
    if s["failed_images"]:
        out.append(f"failed images: {', '.join(s['failed_images'])}")
    for p in s["problems"]:
        out.append(f"warning: {p}")
    return "\n".join(out) + "\n"
