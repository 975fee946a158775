# SPDX-License-Identifier: Apache-2.0
"""The policy phase of the apply: what each image needs from its store (torcx.policy).

Between plan and unpack. Each image gets a torcx.policy.Decision, or fails
alone in phase ``policy`` (unsigned store, unknown key, not listed). Mounted
images with a signed or recorded sha512 are digested from here on, in
parallel, one sequential read each, and each is mounted only once its digest
matched (a mismatch fails it in phase ``policy`` too); a tarball's sha512 is
checked by the engine while it unpacks (:func:`pin`), and a mismatch there is
reported as this phase's (:func:`unpack_failure`).
"""

from __future__ import annotations

import os

from ..errors import PolicyError, TorcxError
from ..log import Logger
from . import Run

__all__ = ["check", "digest_passed", "file_check_needed", "mounted_passed", "pins",
           "unpack_failure", "unpacked_passed"]

PHASE = "policy"


def check(run: Run, log: Logger) -> None:
    """Decide every planned image; digest the mountable ones that have a pinned sha512.

    When the apply mounts, the digests run on threads (largest image first, the
    GIL released by the engine) while the apply goes on: each image is mounted
    as soon as its own digest matched (:func:`digest_passed`), never before.
    """
    from .. import policy as trust

    run.policy = pol = trust.load(run.paths, log)
    images = [im for im in run.images if im.ok and im.archive is not None]
    if not images:
        return
    verifier = trust.Verifier(pol, run.paths, log)
    to_digest = []
    for image in images:
        try:
            image.trust = verifier.decide_archive(image.archive)
        except PolicyError as e:
            image.fail(PHASE, str(e))
            continue
        if image.archive.mountable and image.trust.pinned:
            to_digest.append(image)
    if not to_digest:
        return
    if run.mount and not run.dry_run:
        run.digests = _Digests(to_digest)
        return
    for image in to_digest:
        _judge(image, _digest(image))


def _digest(image):
    from .. import policy as trust

    try:
        return trust.check_files([(image.archive.host_path, image.trust)])[0]
    except TorcxError as e:
        return PolicyError(str(e))


def _judge(image, result) -> bool:
    if isinstance(result, PolicyError):
        image.fail(PHASE, str(result).replace(image.archive.host_path, image.archive.path))
        return False
    return True


class _Digests:
    """Image-file digests on up to one thread per core, largest first."""

    def __init__(self, images):
        import threading

        self.pending = sorted(images, key=lambda im: -im.archive.size)
        self.done = {id(im): threading.Event() for im in images}
        self.results: dict = {}
        self.lock = threading.Lock()
        for _ in range(min(len(images), os.cpu_count() or 1)):
            threading.Thread(target=self._work, name="torcx-digest", daemon=True).start()

    def _work(self) -> None:
        while True:
            with self.lock:
                if not self.pending:
                    return
                image = self.pending.pop(0)
            try:
                self.results[id(image)] = _digest(image)
            except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
                self.results[id(image)] = PolicyError(f"digest failed: {e!r}")
            finally:
                self.done[id(image)].set()

    def wait(self, image):
        event = self.done.get(id(image))
        if event is None:
            return None
        event.wait()
        return self.results[id(image)]


def digest_passed(run: Run, image) -> bool:
    """Wait for the image's own digest (if it has one to check); False if it failed."""
    digests = getattr(run, "digests", None)
    result = digests.wait(image) if digests is not None else None
    return result is None or _judge(image, result)


def pins(image) -> dict:
    """The digest the engine must find in a tarball's bytes, as engine.Job options."""
    d = getattr(image, "trust", None)
    if d is None or image.archive.mountable or not d.pinned:
        return {}
    algo, value = d.pin
    return {f"pin_{algo}": value}


def unpack_failure(image, error) -> tuple[str, str]:
    """(phase, reason) of a failed unpack: a pinned digest that differs is a policy fault."""
    d = getattr(image, "trust", None)
    message = str(error)
    if d is not None and d.pinned and f"expected {d.pin[0]} " in message:
        actual = message.rsplit("got ", 1)[-1].strip()
        return PHASE, d.mismatch(image.archive.path, actual)
    return "unpack", message


def unpacked_passed(image, verified: bool) -> None:
    d = getattr(image, "trust", None)
    if d is None:
        return
    how = ("every file matched .torcx/digests while unpacking" if verified
           else "archive has no .torcx/digests")
    if d.pin_source == "signed":
        d.passed(f"checked while unpacking; {how}")
    else:
        d.passed(how if d.level != "none" else f"nothing required; {how}")


def file_check_needed(image) -> bool:
    """Whether a mounted image's files are all read (no image digest, or asked for)."""
    d = getattr(image, "trust", None)
    return d is None or d.check_files


def mounted_passed(image, files_checked: bool | None) -> None:
    """Record why a mounted image passed; ``files_checked`` None: no digest list inside."""
    d = getattr(image, "trust", None)
    if d is None:
        return
    if files_checked:
        extra = "every file matched .torcx/digests after mounting"
    elif files_checked is None:
        extra = "image has no .torcx/digests"
    else:
        extra = ""
    if d.pinned:
        if extra:
            d.reason = f"{d.reason}; {extra}"
    elif d.level == "none":
        d.passed("nothing required; mounted without reading its files")
    else:
        d.passed(extra or "mounted")
