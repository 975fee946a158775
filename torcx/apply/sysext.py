# SPDX-License-Identifier: Apache-2.0
"""The apply's sysext step: check each systemd-sysext image of the profile, hand it to systemd.

For each image whose store file is a sysext image (torcx.store, format
``sysext``): the format is read from the superblock (squashfs or erofs); the
trust policy (torcx.policy) decides what the image file needs, as for a
mounted torcx image (a signed store's sha512, or the ``.sha512``/``.xxh128``
recorded beside it), checked by reading the file once; a ``SHA256SUMS`` in
the store folder (the bakery publishes one) that lists the file must match
too; the image is loop-mounted read-only for the moment of reading its
extension-release, which is checked with systemd's rules (torcx.sysext); an
image that passes is linked as ``/run/extensions/NAME.raw``, where
``systemd-sysext.service`` (ordered after ``torcx-apply.service``) merges it.
An image that fails is not linked and fails alone, with the rule and the
values in the run's record (``torcx status``).
"""

from __future__ import annotations

import os

from ..sysext import check_tree, detect_format, read_host
from . import IMAGE_FAILED, SKIPPED, Run, internal_error

__all__ = ["EXTENSIONS_DIR", "link_extensions"]

EXTENSIONS_DIR = "/run/extensions"
SUMS = "SHA256SUMS"
_RELOAD_YES = ("1", "yes", "true", "on")


def _sha256(path: str) -> str:
    """SHA-256 of a whole image file, by the engine (OpenSSL, GIL released), as the policy."""
    from .. import engine

    result = engine.digest_files([path], algos=["sha256"])[0]
    if result.error is not None:
        raise result.error
    return result.sha256


def _listed_sum(paths, archive) -> str | None:
    """The digest SHA256SUMS in the store folder gives for this file (entry or target name)."""
    names = {os.path.basename(archive.path), os.path.basename(archive.host_path)}
    try:
        with open(paths.host(f"{archive.store}/{SUMS}"), encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[1].lstrip("*") in names:
                    return parts[0].lower()
    except OSError:
        return None
    return None


def _trust(verifier, image) -> bool:
    """The policy's decision for one sysext image file; fails the image when it says no."""
    from .. import policy as trust
    from ..errors import PolicyError

    a = image.archive
    try:
        image.trust = d = verifier.decide(a.name, a.reference, a.format, a.path, a.store, True)
        if d.pinned:
            result = trust.check_files([(a.host_path, d)])[0]
            if isinstance(result, PolicyError):  # returned, not raised (torcx.policy)
                raise result
            image.unpack["verified"] = True
    except PolicyError as e:
        image.fail("policy", str(e).replace(a.host_path, a.path))
        return False
    if not d.pinned:
        d.check_files = False  # a sysext image has no .torcx/digests to read
        d.passed("no image digest pinned or recorded" if d.level != "none"
                 else "nothing required")
    return True


def _check(run: Run, image, host, scratch: str, verifier) -> None:
    """Format, trust, digest and extension-release of one image; fails it with the reason."""
    from .. import engine

    a = image.archive
    fstype = detect_format(a.host_path)
    image.unpack = {"method": "sysext", "fstype": fstype, "archive_bytes": a.size,
                    "verified": False}
    if fstype is None:
        image.fail("sysext", f"{a.path}: not a squashfs or erofs image (no superblock magic)")
        return
    if verifier is not None and not _trust(verifier, image):
        return
    listed = _listed_sum(run.paths, a)
    if listed is not None:  # read the file for it only when a SHA256SUMS names it
        try:
            digest = _sha256(a.host_path)
        except OSError as e:
            image.fail("sysext", f"{a.path}: {e.strerror or e}")
            return
        image.unpack["sha256"] = digest
        if listed != digest:
            image.fail("digest", f"{a.path}: sha256 {digest} but {a.store}/{SUMS} says {listed}")
            return
        image.unpack["verified"] = True
    if not run.mount:
        image.status, image.stage = SKIPPED, "sysext"
        image.error = "sysext image not checked or linked (--no-mount)"
        return
    target = os.path.join(scratch, image.name)
    try:
        os.makedirs(target, 0o700)
        engine.loop_mount(a.host_path, target, fstype)
    except OSError as e:  # MountError is an OSError
        image.fail("sysext", str(e))
        return
    try:
        release, refusal = check_tree(target, image.name, host)
        units = os.path.isdir(os.path.join(target, "usr/lib/systemd/system"))
    finally:
        engine.umount(target)
        os.rmdir(target)
    image.unpack["release"] = release
    if refusal is not None:
        image.unpack["refusal"] = refusal.to_json()
        image.fail("extension-release", f"{a.path}: {refusal}")
        return
    if units and release.get("EXTENSION_RELOAD_MANAGER", "").lower() not in _RELOAD_YES:
        image.unpack["note"] = ("units in usr/lib/systemd/system but no "
                                "EXTENSION_RELOAD_MANAGER=1: systemd loads them only at the "
                                "next daemon-reload")


def _link(run: Run, image) -> None:
    link = f"{EXTENSIONS_DIR}/{image.name}.raw"
    target = run.paths.logical(image.archive.host_path)
    host = run.paths.host(link)
    try:
        os.makedirs(os.path.dirname(host), 0o755, exist_ok=True)
        os.symlink(target, host)
    except FileExistsError:
        image.fail("sysext", f"{link} exists already (not put there by torcx), not replaced")
        return
    except OSError as e:
        image.fail("sysext", f"{link}: {e.strerror or e}")
        return
    image.unpack["link"] = link


def link_extensions(run: Run, scratch: str, log) -> None:
    """Check every sysext image of ``run.extensions``; link the ones that pass.

    ``scratch`` is a folder (in the unpack tmpfs) for the short-lived mounts.
    """
    host = read_host(run.paths)
    verifier = None
    if getattr(run, "policy", None) is not None:  # the policy phase ran (torcx.apply.policy)
        from .. import policy as trust

        verifier = trust.Verifier(run.policy, run.paths, log)
    for image in run.extensions:
        if image.status == IMAGE_FAILED:
            continue
        if getattr(run, "interrupted", None):
            image.fail("sysext", f"interrupted by {run.interrupted}: not linked")
            continue
        try:
            _check(run, image, host, scratch, verifier)
            if image.ok:
                _link(run, image)
        except Exception as e:  # one image never stops the others
            image.fail("sysext", internal_error(e))
    try:
        os.rmdir(scratch)
    except OSError:
        pass
