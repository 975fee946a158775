# SPDX-License-Identifier: Apache-2.0
"""The digest list ``.torcx/digests``: XXH3-128 of every regular file, xxh128sum format.

One line per regular file, ``<32 lowercase hex>  <path>``, the path relative to
the image root without a leading ``./``, sorted by path bytes, so that
``xxh128sum -c .torcx/digests`` works in an unpacked image. Hard links are
listed under every name with the same digest.
"""

from __future__ import annotations

import os
import stat

import xxhash

from . import fstree
from .errors import CorruptArchive, DigestMismatch, ExtractError, NoDigestList

TYPE_CHECKING = False  # for annotations only: collections.abc is not imported at boot
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

DIGESTS_PATH = b".torcx/digests"
CHUNK = 1 << 20  # bytes read at a time: memory stays bounded whatever the file size

_HEX = frozenset(b"0123456789abcdef")


def hash_fd(fd: int) -> tuple[str, int]:
    """XXH3-128 hex digest and byte count of everything readable from ``fd``."""
    h = xxhash.xxh3_128()
    total = 0
    while True:
        chunk = os.read(fd, CHUNK)
        if not chunk:
            return h.hexdigest(), total
        h.update(chunk)
        total += len(chunk)


def hash_file(path) -> tuple[str, int]:
    """XXH3-128 hex digest and size of the regular file at ``path`` (never follows a symlink)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return hash_fd(fd)
    finally:
        os.close(fd)


def render(digests: Mapping[bytes, str]) -> bytes:
    """The digest list text for ``{relative path: hex digest}``, sorted by path."""
    return b"".join(b"%s  %s\n" % (digests[p].encode(), p) for p in sorted(digests))


def parse(data: bytes, source: str = DIGESTS_PATH.decode()) -> dict[bytes, str]:
    """``{relative path: hex digest}`` from digest list text; ValueError names the bad line."""
    out: dict[bytes, str] = {}
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line:
            continue
        digest, path = line[:32], line[34:]
        if not (line[32:34] == b"  " and path and all(b in _HEX for b in digest)
                and len(digest) == 32):
            raise ValueError(f"{source}: line {number}: not '<32 hex>  <path>'")
        if path.startswith((b"/", b"./")) or b"/../" in b"/" + path + b"/":
            raise ValueError(f"{source}: line {number}: path must be relative to the image root")
        if path in out:
            raise ValueError(f"{source}: line {number}: {os.fsdecode(path)} listed twice")
        out[path] = digest.decode()
    return out


def check_tree(root: str, digests: Mapping[bytes, str], regular_files: Iterable[bytes]) -> None:
    """Raise DigestMismatch for the first file of ``root`` that is unlisted, missing or differs.

    ``regular_files`` are the relative paths of every regular file found in the
    tree (the digest list itself excluded). A file that cannot be read (a damaged
    squashfs/erofs image reads as EIO) is a CorruptArchive naming it.
    """
    root_b = os.fsencode(root)
    found = set()
    for rel in sorted(regular_files):
        found.add(rel)
        name = os.fsdecode(rel)
        expected = digests.get(rel)
        if expected is None:
            raise DigestMismatch("regular file not listed in .torcx/digests",
                                 filename=root, entry=name)
        try:
            actual, _ = hash_file(os.path.join(root_b, rel))
        except OSError as e:
            raise CorruptArchive(f"cannot read: {e.strerror or e}", filename=root, entry=name,
                                 err_no=e.errno or 0) from None
        if actual != expected:
            raise DigestMismatch(f"content digest {actual} does not match {expected} "
                                 "listed in .torcx/digests", filename=root, entry=name)
    missing = sorted(set(digests) - found)
    if missing:
        raise DigestMismatch("listed in .torcx/digests but not a regular file in the image",
                             filename=root, entry=os.fsdecode(missing[0]))


def is_regular_file_in(root: str, rel: str) -> bool:
    """True if ``root/rel`` is a regular file reached through no symlink at all.

    A mounted image's ``.torcx`` may be a symlink: followed, it would read a
    file of the host instead of the image's own.
    """
    path = root
    parts = rel.split("/")
    for i, part in enumerate(parts):
        path = os.path.join(path, part)
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return False
        if not (stat.S_ISREG(mode) if i == len(parts) - 1 else stat.S_ISDIR(mode)):
            return False
    return True


def check_mounted_tree(mnt: str, archive: str) -> int:
    """Hash every regular file below ``mnt`` against its digest list, naming ``archive``
    in errors; the file count. NoDigestList when there is no list."""
    try:
        return _check_tree_at(mnt)
    except ExtractError as e:  # name the archive, not the temporary mount point
        raise type(e)(e.message, filename=archive, entry=e.entry, err_no=e.errno) from None


def _check_tree_at(mnt: str) -> int:

    listing = os.path.join(mnt, DIGESTS_PATH.decode())
    if not is_regular_file_in(mnt, DIGESTS_PATH.decode()):
        raise NoDigestList("the image has no .torcx/digests; its files cannot be verified")
    root = os.fsencode(mnt)
    files = []
    try:
        with open(listing, "rb") as f:
            digests = parse(f.read())
        for top, _dirs, names in fstree.walk(root):
            for name in names:
                full = os.path.join(top, name)
                rel = os.path.relpath(full, root)
                if rel != DIGESTS_PATH and stat.S_ISREG(os.lstat(full).st_mode):
                    files.append(rel)
    except ValueError as e:
        raise DigestMismatch(str(e)) from None
    except OSError as e:  # a damaged image reads as EIO or EUCLEAN
        where = os.fsencode(e.filename) if e.filename else os.fsencode(listing)
        raise CorruptArchive(f"cannot read: {e.strerror or e}",
                             entry=os.fsdecode(os.path.relpath(where, root)),
                             err_no=e.errno or 0) from None
    check_tree(mnt, digests, files)
    return len(files)
