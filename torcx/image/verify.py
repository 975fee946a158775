# SPDX-License-Identifier: Apache-2.0
"""``torcx image verify``: check an archive against its digest list and a pinned digest.

Tar formats go through the engine, which reads the whole archive without writing
anything and checks every file against ``.torcx/digests``. squashfs and erofs
images are loop-mounted read-only in a private mount namespace (root only) and
every file is hashed against the list here.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass

from .. import digestlist, mountns
from ..errors import (
    ConfigError,
    DigestMismatch,
    MountError,
)
from .inspect import FS_FORMATS, detect_format

_HEX = re.compile(r"^[0-9a-f]+$")
_PIN_LENGTHS = {"xxh3": 32, "sha256": 64, "sha512": 128}


@dataclass
class Verdict:
    """A passed verification: what was checked."""

    path: str
    format: str
    files: int
    pinned: str = ""

    def line(self) -> str:
        pin = f" and its {self.pinned.split('-')[0]} digest" if self.pinned else ""
        return (f"OK {self.path}: {self.files} files match .torcx/digests{pin} "
                f"({self.format})")


def parse_pin(text: str) -> tuple[str, str]:
    """``(algorithm, hex)`` of a ``--digest`` value.

    ``xxh3-<32 hex>`` or bare ``<32 hex>`` (XXH3-128), ``sha256-<64 hex>``,
    ``sha512-<128 hex>`` (the form of a remote's contents manifest).
    """
    value = text.strip().lower()
    algo, dash, hexpart = value.partition("-")
    if not dash:
        algo, hexpart = "xxh3", value
    want = _PIN_LENGTHS.get(algo)
    if want is None or len(hexpart) != want or not _HEX.match(hexpart):
        raise ConfigError(f"--digest {text!r}: expected xxh3-<32 hex>, <32 hex>, "
                          "sha256-<64 hex> or sha512-<128 hex>")
    return algo, hexpart


def _check_image_pin(path: str, algo: str, expected: str) -> None:
    """The whole image file's digest, by the engine (one read, GIL released)."""
    from .. import engine

    (r,) = engine.digest_files([path], algos=[algo])
    if r.error is not None:
        raise r.error
    actual = getattr(r, algo)
    if actual != expected:
        raise DigestMismatch(f"archive {algo} digest {actual} does not match the pinned "
                             f"{expected}", filename=path)


def verify_archive(path: str, digest: str | None = None) -> Verdict:
    """Verify the archive at ``path``; raise DigestMismatch/CorruptArchive/... naming the fault."""
    pin = parse_pin(digest) if digest else None
    fmt = detect_format(path)
    pinned = f"{pin[0]}-{pin[1]}" if pin else ""
    if fmt in FS_FORMATS:
        if not mountns.can_mount():
            raise MountError(errno.EPERM, f"{path}: verifying a {fmt} image needs root: its "
                                          "files are read by loop-mounting it read-only in a "
                                          "private mount namespace")
        if pin:
            _check_image_pin(path, *pin)
        files = mountns.with_mounted_image(path, fmt, digestlist.check_mounted_tree, path)
        return Verdict(path, fmt, files, pinned)
    from .. import engine

    options = {}
    if pin and pin[0] == "xxh3":
        options["pin_xxh3"] = pin[1]
    elif pin:  # sha256 or sha512: computed by the engine while it streams
        options[f"pin_{pin[0]}"] = pin[1]
    # Nothing is created, so device nodes are only read past (inspect lists them).
    result = engine.verify(path, require_digests=True, allow_devices=True, **options)
    return Verdict(path, fmt, result.files + result.hardlinks, pinned)
