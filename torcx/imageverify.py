# SPDX-License-Identifier: Apache-2.0
"""``torcx image verify``: check an archive against its digest list and a pinned digest.

Tar formats go through the engine, which reads the whole archive without writing
anything and checks every file against ``.torcx/digests``. squashfs and erofs
images are loop-mounted read-only in a private mount namespace (root only) and
every file is hashed against the list here.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from dataclasses import dataclass

import xxhash

from . import digestlist, mountns
from .errors import (
    ConfigError,
    CorruptArchive,
    DigestMismatch,
    ExtractError,
    MountError,
    NoDigestList,
)
from .imageinspect import FS_FORMATS, detect_format, is_regular_file_in, walk_error

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


def _check_pin_in_python(path: str, algo: str, expected: str) -> None:
    h = {"xxh3": xxhash.xxh3_128, "sha256": hashlib.sha256, "sha512": hashlib.sha512}[algo]()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(digestlist.CHUNK), b""):
            h.update(chunk)
    actual = h.hexdigest()
    if actual != expected:
        raise DigestMismatch(f"archive {algo} digest {actual} does not match the pinned "
                             f"{expected}", filename=path)


def _check_mounted(mnt: str, archive: str) -> int:
    """Hash every regular file of the mounted image against its digest list; file count."""
    try:
        return _check_tree_at(mnt)
    except ExtractError as e:  # name the archive, not the temporary mount point
        raise type(e)(e.message, filename=archive, entry=e.entry, err_no=e.errno) from None


def check_mounted_tree(mnt: str, archive: str) -> int:
    """Hash every regular file below ``mnt`` against its digest list, naming ``archive``
    in errors; the file count. NoDigestList when there is no list."""
    return _check_mounted(mnt, archive)


def _check_tree_at(mnt: str) -> int:
    listing = os.path.join(mnt, digestlist.DIGESTS_PATH.decode())
    if not is_regular_file_in(mnt, digestlist.DIGESTS_PATH.decode()):
        raise NoDigestList("the image has no .torcx/digests; its files cannot be verified")
    root = os.fsencode(mnt)
    files = []
    try:
        with open(listing, "rb") as f:
            digests = digestlist.parse(f.read())
        for top, _dirs, names in os.walk(root, onerror=walk_error):
            for name in names:
                full = os.path.join(top, name)
                rel = os.path.relpath(full, root)
                if rel != digestlist.DIGESTS_PATH and stat.S_ISREG(os.lstat(full).st_mode):
                    files.append(rel)
    except ValueError as e:
        raise DigestMismatch(str(e)) from None
    except OSError as e:  # a damaged image reads as EIO or EUCLEAN
        where = os.fsencode(e.filename) if e.filename else os.fsencode(listing)
        raise CorruptArchive(f"cannot read: {e.strerror or e}",
                             entry=os.fsdecode(os.path.relpath(where, root)),
                             err_no=e.errno or 0) from None
    digestlist.check_tree(mnt, digests, files)
    return len(files)


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
            _check_pin_in_python(path, *pin)
        files = mountns.with_mounted_image(path, fmt, _check_mounted, path)
        return Verdict(path, fmt, files, pinned)
    from . import engine

    options = {}
    if pin and pin[0] == "xxh3":
        options["pin_xxh3"] = pin[1]
    elif pin and pin[0] == "sha256":
        options["pin_sha256"] = pin[1]
    elif pin:  # sha512: the engine does not compute it; stream it here first
        _check_pin_in_python(path, *pin)
    # Nothing is created, so device nodes are only read past (inspect lists them).
    result = engine.verify(path, require_digests=True, allow_devices=True, **options)
    return Verdict(path, fmt, result.files + result.hardlinks, pinned)
