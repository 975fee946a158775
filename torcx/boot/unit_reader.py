# SPDX-License-Identifier: Apache-2.0
"""Reading an image's manifest and unit files without unpacking it (the sandboxed generator).

A tarball is streamed with libarchive and left as soon as the manifest and the
unit members have gone by; only those members are written, below a private folder.
"""

from __future__ import annotations

import os
import posixpath

from ..errors import CorruptArchive

__all__ = ["manifest_path_in", "member_path", "read_manifest", "read_unit_members"]

# The apply's manifest cap, and caps on what the generator copies out of an image
# while the boot waits for it: unit files are a few hundred bytes each.
UNIT_LIMIT = 1 << 20     # bytes of one unit member
MAX_UNIT_MEMBERS = 4096  # members written out of one image


class TooLarge(ValueError):
    """A manifest or unit member above the generator's limits: that image fails."""


def manifest_path_in(image_root: str) -> str | None:
    p = os.path.join(image_root, ".torcx", "manifest.json")
    return p if os.path.isfile(p) and not os.path.islink(p) else None


def read_manifest(image_root: str):
    """The manifest of a mounted image, read only up to the apply's 4 MiB cap."""
    from .. import schemas
    from ..apply import MANIFEST, MANIFEST_LIMIT
    from ..apply.propagate import read_image_file

    shown = os.path.join(image_root, MANIFEST)
    try:
        data = read_image_file(image_root, "/" + MANIFEST, MANIFEST_LIMIT)
    except ValueError as e:  # AssetError: too large, not a file, outside the image
        raise TooLarge(f"{shown}: {e}") from None
    if data is None:
        return None
    return schemas.parse_image_manifest(schemas.load_json(data, shown), shown)


# -- reading the unit members of a tar without decoding all of it ---------------------

def member_path(path: str) -> str | None:
    """Normalised relative member path, or None for one that could escape."""
    p = posixpath.normpath("/" + path.lstrip("/")).lstrip("/")
    if not p or p == "." or any(part == ".." for part in path.split("/")):
        return None
    return p


def read_unit_members(archive_path: str, dest: str):
    """Write an image's manifest and its ``units`` members under ``dest``; return the manifest.

    Streams the archive with libarchive and stops as soon as the manifest and
    every unit path have been read: a folder's entries must follow the folder,
    as tar and ``torcx image pack`` write them. ``torcx image pack`` puts
    ``.torcx/`` first, so its archives are read once, up to their units. When
    the manifest does not lead the archive, units may come before it, so the
    archive is read a second time with the wanted paths known. Returns None
    when the image has no manifest.
    """
    from .. import schemas

    os.makedirs(dest)
    where = archive_path + ":.torcx/manifest.json"
    text, complete = _stream_members(archive_path, dest, None)
    if text is None:
        return None
    manifest = schemas.parse_image_manifest(schemas.load_json(text, where), where)
    wanted = {m for m in (member_path(u) for u in manifest.units) if m}
    if not complete and wanted:
        _stream_members(archive_path, dest, wanted)
    # A unit may be a relative symlink to a file elsewhere in the image (an alias),
    # or sit below a folder that is one (lib -> usr/lib): fetch the targets too,
    # following chains a few links deep.
    for _ in range(8):
        targets = _unresolved_targets(dest, wanted)
        if not targets:
            break
        wanted |= targets
        _stream_members(archive_path, dest, targets)
    return manifest


def _unresolved_targets(dest: str, wanted: set) -> set:
    """Image paths that wanted paths lead to through symlinks but that were not read yet."""
    found = set()
    for path in wanted:
        host = os.path.join(dest, path)
        if os.path.exists(host):
            continue
        target = _inside(dest, path, follow_leaf=True)
        if target is None:
            continue  # resolves outside the image: propagation refuses it anyway
        rel = os.path.relpath(target, os.path.realpath(dest))
        if rel != path and rel not in wanted:
            found.add(rel)
    return found


def _inside(dest: str, path: str, follow_leaf: bool = False) -> str | None:
    """Host path of image ``path`` below ``dest``, through symlinks that stay inside it only.

    None when the path leads out of the image: nothing is ever written there.
    """
    real_dest = os.path.realpath(dest)
    if follow_leaf:
        real = os.path.realpath(os.path.join(dest, path))
    else:
        parent = os.path.realpath(os.path.join(dest, posixpath.dirname(path)))
        real = os.path.join(parent, posixpath.basename(path))
    if real != real_dest and not real.startswith(real_dest + os.sep):
        return None
    return real


def _stream_members(archive_path: str, dest: str, wanted: set | None):
    """One pass over the archive; returns (manifest text or None, units complete?).

    ``wanted=None``: find the manifest, and read the units in the same pass if
    the manifest comes before any other member. A damaged archive is a
    CorruptArchive naming it, so that only its image fails.
    """
    import libarchive

    try:
        return _stream_members_once(libarchive, archive_path, dest, wanted)
    except libarchive.ArchiveError as e:
        raise CorruptArchive(getattr(e, "msg", None) or str(e),
                             filename=archive_path) from None


def _stream_members_once(libarchive, archive_path: str, dest: str, wanted: set | None):
    from ..apply import MANIFEST_LIMIT

    manifest = None
    leading = True  # no member outside .torcx/ seen before the manifest
    seen: set = set()
    stored = 0
    with libarchive.file_reader(archive_path) as reader:
        for entry in reader:
            path = member_path(entry.pathname)
            if path is None:
                continue
            if path == ".torcx" or path.startswith(".torcx/"):
                if manifest is None and wanted is None and path == ".torcx/manifest.json" \
                        and entry.isfile:
                    manifest = _read_entry(entry, MANIFEST_LIMIT, "the manifest")
                    _store(entry, dest, path, manifest)
                    wanted = _wanted_from(manifest)
                    if wanted is None or not leading:
                        return manifest, False  # parse errors are reported by the caller
                continue
            if wanted is None:
                leading = False
                continue
            related = _related(path, wanted)
            if related:
                seen.add(related)
                stored += 1
                if stored > MAX_UNIT_MEMBERS:
                    raise TooLarge(f"{archive_path}: more than {MAX_UNIT_MEMBERS} unit members")
                _store(entry, dest, path)
            elif entry.issym and any(w.startswith(path + "/") for w in wanted):
                _store(entry, dest, path)  # a folder link on the way (lib -> usr/lib)
            elif seen >= wanted:
                break  # past the last unit member
    return manifest, True


def _wanted_from(text: bytes):
    import json

    try:
        units = json.loads(text)["value"].get("units") or []
        return {m for m in (member_path(u) for u in units if isinstance(u, str)) if m}
    except (ValueError, KeyError, AttributeError, TypeError, RecursionError):
        return None  # the caller's parse says what is wrong


def _related(path: str, wanted: set) -> str | None:
    """The wanted unit path ``path`` is, or whose folder it sits in (one level deep)."""
    if path in wanted:
        return path
    parent = posixpath.dirname(path)
    return parent if parent in wanted else None


def _read_entry(entry, limit: int = UNIT_LIMIT, what: str = "a unit member") -> bytes:
    """The member's bytes; TooLarge above ``limit`` (checked as it streams, whatever
    the header says)."""
    name = entry.pathname
    if entry.size is not None and entry.size > limit:
        raise TooLarge(f"{name}: {what} is larger than {limit} bytes")
    out, total = [], 0
    for block in entry.get_blocks():
        total += len(block)
        if total > limit:
            raise TooLarge(f"{name}: {what} is larger than {limit} bytes")
        out.append(block)
    return b"".join(out)


def _store(entry, dest: str, path: str, data: bytes | None = None) -> None:
    """Recreate one member under dest: folders, regular files and symlinks only.

    Links are created, never written through out of dest (a .wants folder that
    is a link to a host folder must not become a way to write there).
    """
    target = _inside(dest, path)
    if target is None:
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if entry.isdir:
        if not os.path.lexists(target):
            os.mkdir(target)
    elif entry.issym:
        if not os.path.lexists(target):
            os.symlink(entry.linkpath, target)
    elif entry.isfile:
        _write_new(target, _read_entry(entry) if data is None else data)
    elif entry.islnk:
        source = member_path(entry.linkpath or "")
        source_host = _inside(dest, source) if source else None
        if source_host and os.path.isfile(source_host) and not os.path.islink(source_host):
            with open(source_host, "rb") as f:
                _write_new(target, f.read(UNIT_LIMIT))


def _write_new(target: str, data: bytes) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
