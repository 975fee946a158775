# SPDX-License-Identifier: Apache-2.0
"""Make a rename into a folder durable: fsync the folder after the file itself."""

from __future__ import annotations

import os

__all__ = ["fsync_dir"]


def fsync_dir(folder: str) -> None:
    """fsync ``folder`` so that a rename into it survives a crash.

    Called after the rename has succeeded: a file system that refuses fsync on
    folders must not turn a completed, verified write into a reported failure,
    so such refusals are ignored (the file's own data was synced before).
    """
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
