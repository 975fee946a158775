# SPDX-License-Identifier: Apache-2.0
"""Walking and removing trees an archive made, without recursion.

``os.walk`` and ``shutil.rmtree`` recurse once per folder level on Python
3.11: an image ~1,000 folders deep raises RecursionError in them. Both here
keep their own stack, never follow a symlink and never cross a mount point.
"""

from __future__ import annotations

import os
import stat

__all__ = ["remove_tree", "walk"]


def walk(top, onerror=None):
    """``os.walk(top)`` top-down, sorted, iterative: yields (folder, dirs, others).

    ``dirs`` are the real sub-folders (walked next, in order; the caller may
    prune the list); ``others`` is everything else, symlinks to folders
    included. ``onerror(OSError)`` is called for a folder that cannot be
    listed; by default such a folder is raised, never silently skipped.
    """
    stack = [top]
    while stack:
        folder = stack.pop()
        dirs, others = [], []
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    (dirs if entry.is_dir(follow_symlinks=False) else others).append(entry.name)
        except OSError as e:
            if onerror is None:
                raise
            onerror(e)
            continue
        dirs.sort()
        others.sort()
        yield folder, dirs, others
        stack.extend(os.path.join(folder, d) for d in reversed(dirs))


def remove_tree(path) -> None:
    """Remove ``path`` and everything below it; a missing ``path`` is no error.

    Works relative to one descriptor of ``path`` (paths inside may be longer
    than PATH_MAX from the outside), unlinks symlinks instead of following
    them, and refuses (EBUSY) to descend into another file system.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    top = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        folders = [b"."]
        i = 0
        while i < len(folders):  # breadth-first listing; removal deepest first
            rel = folders[i]
            i += 1
            fd = os.open(rel, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                         dir_fd=top)
            try:
                fst = os.fstat(fd)
                if fst.st_dev != st.st_dev:
                    raise OSError(16, "a file system is mounted there",  # EBUSY
                                  os.path.join(os.fsencode(path), rel))
                if os.geteuid() != 0 and fst.st_mode & 0o300 != 0o300:
                    os.fchmod(fd, stat.S_IMODE(fst.st_mode) | 0o700)  # a 0555 folder
                for entry in os.scandir(fd):
                    name = os.fsencode(entry.name)
                    sub = name if rel == b"." else rel + b"/" + name
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(sub)
                    else:
                        os.unlink(sub, dir_fd=top)
            finally:
                os.close(fd)
        for rel in reversed(folders[1:]):
            os.rmdir(rel, dir_fd=top)
    finally:
        os.close(top)
    os.rmdir(path)
