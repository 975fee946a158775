# SPDX-License-Identifier: Apache-2.0
"""Files under a root folder, reached as a chroot would reach them.

An image's root may hold absolute symlinks (``usr/lib/systemd -> /somewhere``): inside
the image they mean ``ROOT/somewhere``, never the host's ``/somewhere``.
:func:`torcx.paths.resolve_in_root` follows links component by component with '..'
stopping at the root (the path-level equivalent of openat2's RESOLVE_IN_ROOT, and the
rule torcx.store applies); the writing
and removing helpers then open every folder on the resolved path relative to the root
with ``O_NOFOLLOW`` (a link swapped in meanwhile fails instead of being followed), so
nothing is ever created, replaced or removed outside the root.
"""

from __future__ import annotations

import errno
import os
import stat

from .paths import resolve_in_root

__all__ = ["InRoot"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _parts(path: str) -> list[str]:
    return [c for c in path.split("/") if c not in ("", ".")]


class InRoot:
    """Create, replace, read and remove files of ``root`` by logical path.

    Every folder is opened relative to the root's descriptor with ``O_NOFOLLOW``
    along the resolved path; use as a context manager (it holds that descriptor).
    """

    def __init__(self, root: str):
        self.root = os.path.abspath(root or "/")
        self.fd = os.open(self.root, _DIR_FLAGS)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def host(self, logical: str) -> str:
        """Where ``logical`` lives on this machine (its folders resolved in the root)."""
        return os.path.join(self.root, *_parts(self.locate(logical)))

    def locate(self, logical: str) -> str:
        """``logical`` with its folders resolved in the root; the last name is kept."""
        parent, name = os.path.split(os.path.normpath("/" + logical))
        folder = resolve_in_root(self.root, parent)
        return folder.rstrip("/") + "/" + name if name else folder

    def open_dir(self, logical: str, *, create: bool = False) -> int:
        """A descriptor of folder ``logical`` (already resolved), made when ``create``."""
        fd = os.dup(self.fd)
        try:
            for name in _parts(logical):
                try:
                    nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    try:
                        os.mkdir(name, 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass
                    nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _parent(self, logical: str, create: bool = False) -> tuple[int, str]:
        where = self.locate(logical)
        parent, name = os.path.split(where)
        if not name:
            raise IsADirectoryError(errno.EISDIR, "is the root folder", self.root)
        return self.open_dir(parent, create=create), name

    def lstat(self, logical: str):
        """lstat of ``logical`` (its last name not followed); None when it does not exist."""
        try:
            dfd, name = self._parent(logical)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            return os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        finally:
            os.close(dfd)

    def read(self, logical: str) -> bytes | None:
        """The bytes of regular file ``logical`` (not through a final link), None if absent."""
        try:
            dfd, name = self._parent(logical)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                         dir_fd=dfd)
        except FileNotFoundError:
            return None
        finally:
            os.close(dfd)
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "not a regular file", self.host(logical))
            return f.read()

    def write(self, logical: str, data: bytes, mode: int = 0o644) -> None:
        """Atomically create or replace ``logical`` (a final link is replaced, not followed)."""
        dfd, name = self._parent(logical, create=True)
        tmp = f".{name}.torcx-tmp"
        try:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except FileNotFoundError:
                pass
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=dfd)
            try:
                with open(fd, "wb", closefd=False) as f:
                    f.write(data)
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except OSError:
                pass
            raise
        finally:
            os.close(dfd)

    def unlink(self, logical: str) -> None:
        """Remove file or link ``logical`` (never what a final link points to)."""
        dfd, name = self._parent(logical)
        try:
            os.unlink(name, dir_fd=dfd)
        finally:
            os.close(dfd)

    def rmdir(self, logical: str) -> None:
        """Remove folder ``logical`` if empty (OSError otherwise)."""
        dfd, name = self._parent(logical)
        try:
            os.rmdir(name, dir_fd=dfd)
        finally:
            os.close(dfd)

    def rmtree(self, logical: str) -> None:
        """Remove folder ``logical`` and what it holds, never through a link; quiet if absent."""
        import shutil

        try:
            dfd, name = self._parent(logical)
        except (FileNotFoundError, NotADirectoryError):
            return
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(name, dir_fd=dfd)  # fd-based: links inside are unlinked only
        except FileNotFoundError:
            pass
        finally:
            os.close(dfd)
