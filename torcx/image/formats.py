# SPDX-License-Identifier: Apache-2.0
"""The archive formats ``torcx image pack`` writes, shared by the writers and pack."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_FORMAT", "FORMATS", "Format"]


@dataclass(frozen=True)
class Format:
    """How one archive format is written: libarchive filter or external tool, level range."""

    name: str
    filter: str | None  # libarchive write filter for tar formats
    tool: str | None    # mksquashfs / mkfs.erofs for file system images
    default_level: int | None
    min_level: int = 0
    max_level: int = 0


FORMATS = {
    "tgz": Format("tgz", "gzip", None, 6, 1, 9),
    "tar.zst": Format("tar.zst", "zstd", None, 3, 1, 19),
    "tar.xz": Format("tar.xz", "xz", None, 6, 0, 9),
    "tar": Format("tar", None, None, None),
    "squashfs": Format("squashfs", None, "mksquashfs", 9, 1, 9),  # gzip: every kernel reads it
    "erofs": Format("erofs", None, "mkfs.erofs", 9, 0, 12),       # lz4hc
}
DEFAULT_FORMAT = "tgz"  # the upstream format: every torcx reads it
