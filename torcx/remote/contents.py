# SPDX-License-Identifier: Apache-2.0
"""``torcx remote contents DIR``: the contents manifest of a folder of archives, to sign."""

from __future__ import annotations

import hashlib
import os
import urllib.parse

from .. import schemas
from ..errors import ConfigError, NotFound
from ..store import parse_archive_filename
from .config import CONTENTS_FILE

__all__ = ["archive_files", "contents_doc", "file_digests", "write_contents"]


def archive_files(folder: str, names) -> list[tuple[str, str, str, str]]:
    """``(path, name, version, format)`` of each ``NAME:VERSION.torcx.FORMAT`` regular file
    among ``names`` (sorted listing of ``folder``); other files are not archives."""
    out = []
    for filename in names:
        parsed = parse_archive_filename(filename)
        path = os.path.join(folder, filename)
        if parsed is not None and os.path.isfile(path):
            out.append((path, *parsed))
    return out


def file_digests(path: str) -> tuple[int, str, str]:
    """``(size, sha256 hex, sha512 hex)`` of a file, in one read."""
    s256, s512, size = hashlib.sha256(), hashlib.sha512(), 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            s256.update(chunk)
            s512.update(chunk)
            size += len(chunk)
    return size, s256.hexdigest(), s512.hexdigest()


# ---------------------------------------------------------------- publishing

def contents_doc(folder: str) -> dict:
    """torcx-remote-contents-v1 for the ``NAME:VERSION.torcx.FORMAT`` archives in folder.

    A file name without ``:`` has the vendor default version (``com.coreos.cl``),
    as in a store. Locations are the file names, percent-encoded (``:`` too, so no
    client can mistake ``docker:20.10...`` for a URL scheme).
    """
    try:
        names = sorted(os.listdir(folder))
    except OSError as e:
        raise ConfigError(f"{folder}: cannot list: {e.strerror}") from None
    images: dict = {}
    for path, name, version, fmt in archive_files(folder, names):
        _size, sha256, sha512 = file_digests(path)
        images.setdefault(name, []).append({
            "version": version,
            "format": fmt,
            "hash": "sha512-" + sha512,
            # Ours, beside upstream's hash (their parser ignores it): nodes check the
            # faster SHA-256 at boot.
            "sha256": sha256,
            "location": urllib.parse.quote(os.path.basename(path)),
        })
    if not images:
        raise NotFound(f"{folder}: no NAME:VERSION.torcx.FORMAT archives found")
    doc = {"kind": schemas.REMOTE_CONTENTS_V1,
           "value": {"images": [{"name": n, "versions": v} for n, v in images.items()]}}
    schemas.parse_remote_contents(doc, f"{folder}/{CONTENTS_FILE}")  # what we write must parse
    return doc


def write_contents(folder: str) -> str:
    """Write the unsigned contents file for ``folder``; returns its path."""
    path = os.path.join(folder, CONTENTS_FILE)
    schemas.write_json(path, contents_doc(folder))
    return path


