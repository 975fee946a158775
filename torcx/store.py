# SPDX-License-Identifier: Apache-2.0
"""Archive lookup in the stores (SPEC.md section 4).

A store is a folder of ``NAME:REFERENCE.torcx.EXT`` files; a name without ``:``
has the vendor default reference ``com.coreos.cl``. For one name:reference the
winner is chosen by format first (mountable squashfs/erofs over tarballs; among
tarballs the fastest to decode: tar, tar.zst, tgz, tar.xz), then by store search
order. Symlinks count only when they lead to a regular file; symlinks with
absolute targets are resolved inside the root. A store that cannot be read is
skipped with a log line.

systemd-sysext images (format ``sysext``, squashfs or erofs told by their
superblock) are ``NAME:REFERENCE.torcx.raw``, or carry the file name the
sysext-bakery publishes, ``NAME-VERSION-ARCH.raw``: NAME is the text before the
first ``-`` that is followed by a digit (or by ``v`` and a digit), VERSION the
rest up to ``-ARCH``, and ARCH, in systemd's names, must be this machine's
(``docker-24.0.9-x86-64.raw`` is ``docker:24.0.9`` on x86-64 and is not seen on
arm64). The ``.torcx.raw`` name wins over a bakery name for one name:reference.
"""

from __future__ import annotations

import errno
import os

from .errors import NotFound
from .log import NULL
from .paths import resolve_in_root

DEFAULT_REFERENCE = "com.coreos.cl"

# (suffix, format), longest suffixes first so ".tar.zst" is not read as ".tar".
_SUFFIXES = (
    (".torcx.squashfs", "squashfs"),
    (".torcx.tar.zst", "tar.zst"),
    (".torcx.tar.xz", "tar.xz"),
    (".torcx.erofs", "erofs"),
    (".torcx.tgz", "tgz"),
    (".torcx.tar", "tar"),
    (".torcx.raw", "sysext"),
)
FORMATS = ("squashfs", "erofs", "tar", "tar.zst", "tgz", "tar.xz", "sysext")
SYSEXT = "sysext"  # a systemd-sysext image: validated and handed to systemd-sysext
MOUNTABLE = frozenset(("squashfs", "erofs"))
# Lower ranks win. Mountable formats share a rank so store order decides
# between them; the second key orders them within one store.
_RANK = {"squashfs": (0, 0), "erofs": (0, 1), "tar": (1, 0), "tar.zst": (2, 0),
         "tgz": (3, 0), "tar.xz": (4, 0), "sysext": (5, 0)}
_EXTENSIONS = {"sysext": "raw"}  # format -> file name extension, where they differ

__all__ = [
    "Archive",
    "DEFAULT_REFERENCE",
    "FORMATS",
    "MOUNTABLE",
    "SYSEXT",
    "Store",
    "archive_filename",
    "parse_archive_filename",
]


def parse_archive_filename(filename: str, arch: str | None = None):
    """``(name, reference, format)`` for a store file name, or None if it is not one.

    ``arch`` (systemd's name; default this machine's) is the one a bakery file
    name ``NAME-VERSION-ARCH.raw`` must carry to count.
    """
    for suffix, fmt in _SUFFIXES:
        if filename.endswith(suffix):
            return _split_name(filename[: -len(suffix)], fmt)
    if filename.endswith(".raw"):
        return parse_bakery_filename(filename, arch)
    return None


def parse_bakery_filename(filename: str, arch: str | None = None):
    """``(name, version, "sysext")`` of a sysext-bakery file name for ``arch``, else None."""
    from .sysext import host_architecture

    tail = f"-{arch or host_architecture()}.raw"
    if not filename.endswith(tail):
        return None
    base = filename[: -len(tail)]
    # NAME-VERSION: the first "-" before a version ("v" or a digit first) ends the name.
    cut = base.find("-", 1)
    while cut != -1:
        name, version = base[:cut], base[cut + 1:]
        if ":" in name:
            return None
        digit = version[1:2] if version[:1] == "v" else version[:1]
        if digit and digit in "0123456789" and "\n" not in version:
            return (name, version, SYSEXT) if name not in (".", "..") else None
        cut = base.find("-", cut + 1)
    return None


def _split_name(base: str, fmt: str):
    name, colon, ref = base.partition(":")
    if not colon:
        ref = DEFAULT_REFERENCE
    if not name or not ref or name in (".", ".."):
        return None
    return name, ref, fmt


def archive_filename(name: str, reference: str, fmt: str) -> str:
    """The store file name of an image: ``NAME:REFERENCE.torcx.EXT``."""
    if fmt not in _RANK:
        raise ValueError(f"unknown archive format {fmt!r}")
    return f"{name}:{reference}.torcx.{_EXTENSIONS.get(fmt, fmt)}"


class Archive:
    """One archive found in a store.

    ``path`` is the logical (target-system) path of the store entry, as listed
    by ``torcx image list``; ``host_path`` is the regular file to open on this
    machine (symlinks resolved inside the root); ``store`` is the logical store
    folder and ``store_index`` its position in the search order.
    """

    __slots__ = ("name", "reference", "format", "path", "host_path", "store",
                 "store_index", "size")

    def __init__(self, name, reference, format, path, host_path, store, store_index, size=0):
        self.name = name
        self.reference = reference
        self.format = format
        self.path = path
        self.host_path = host_path
        self.store = store
        self.store_index = store_index
        self.size = size

    @property
    def mountable(self) -> bool:
        return self.format in MOUNTABLE

    @property
    def rank(self) -> tuple:
        """Sort key: format preference, then store search order."""
        fmt, sub = _RANK[self.format]
        return (fmt, self.store_index, sub)

    def to_json(self) -> dict:
        return {"name": self.name, "reference": self.reference, "format": self.format,
                "filepath": self.path, "store": self.store}

    def __repr__(self) -> str:
        return (f"Archive({self.name}:{self.reference} {self.format} at {self.path!r}, "
                f"store #{self.store_index})")


class Store:
    """The archives of every store in ``paths.store_paths``, scanned once.

    ``paths`` is a :class:`torcx.paths.Paths`; ``store_paths`` overrides its
    search order (logical paths). ``log`` receives skipped stores and entries.
    """

    def __init__(self, paths, store_paths=None, log=NULL):
        self.paths = paths
        self.store_paths = tuple(paths.store_paths if store_paths is None else store_paths)
        self.log = log
        self.skipped: list[tuple[str, str]] = []  # (store, reason)
        self._candidates: dict[tuple[str, str], list[Archive]] = {}
        for index, store in enumerate(self.store_paths):
            self._scan(index, store)
        for found in self._candidates.values():
            found.sort(key=lambda a: a.rank)

    def _scan(self, index: int, store: str) -> None:
        host_store = self.paths.host(store)
        try:
            entries = list(os.scandir(host_store))
        except OSError as e:
            reason = e.strerror or str(e)
            self.skipped.append((store, reason))
            named = self._named_by(store)
            if e.errno in (errno.ENOENT, errno.ENOTDIR) and named:
                # Named on purpose: a typo there is the usual cause of "image not found".
                self.log.notice(f"store {store} (named in {named}) does not exist, skipping")
            elif e.errno in (errno.ENOENT, errno.ENOTDIR):
                self.log.debug(f"store {store} not present, skipping")
            else:
                self.log.warning(f"store {store} cannot be read ({reason}), ignoring")
            return
        # torcx names first: they win over a bakery name for the same name:reference
        for entry in sorted(entries, key=lambda e: (".torcx." not in e.name, e.name)):
            parsed = parse_archive_filename(entry.name)
            if parsed is None:
                continue
            name, ref, fmt = parsed
            target = self._regular_file(entry.path)
            if target is None:
                self.log.debug(f"{store}/{entry.name} is not a regular file, ignoring")
                continue
            host_path, size = target
            archive = Archive(name, ref, fmt, f"{store}/{entry.name}", host_path, store,
                              index, size)
            self._candidates.setdefault((name, ref), []).append(archive)

    def _named_by(self, store: str) -> str | None:
        """Where a store was named explicitly (TORCX_STOREPATH, config), None for defaults."""
        if store in getattr(self.paths, "runtime_store_paths", ()):
            return "TORCX_STOREPATH"
        if store in getattr(self.paths, "config_store_paths", ()):
            return f"{self.paths.config_file or 'the config file'}: store_paths"
        return None

    def _regular_file(self, host_path: str):
        """(resolved host path, size) if ``host_path`` leads to a regular file, else None.

        Links are resolved inside the root (paths.resolve_in_root), so under --root
        neither an absolute target nor a relative one's '..' leaves the root.
        """
        try:
            logical = resolve_in_root(self.paths.root, self.paths.logical(host_path))
            path = self.paths.host(logical)
            st = os.lstat(path)
        except OSError:  # ELOOP, or gone
            return None
        if not _is_reg(st):
            return None
        return path, st.st_size

    # -- queries -------------------------------------------------------------

    def candidates(self, name: str, reference: str) -> list[Archive]:
        """Every archive for name:reference, best first (empty if none)."""
        return list(self._candidates.get((name, reference), ()))

    def find(self, name: str, reference: str) -> Archive | None:
        found = self._candidates.get((name, reference))
        return found[0] if found else None

    def lookup(self, name: str, reference: str) -> Archive:
        """The winning archive for name:reference; NotFound names the stores searched."""
        found = self.find(name, reference)
        if found is None:
            stores = ", ".join(self.store_paths) or "(no stores)"
            raise NotFound(f"image {name}:{reference} not found in any store "
                           f"(searched {stores})")
        return found

    def archives(self, name: str | None = None) -> list[Archive]:
        """The winning archive of every name:reference, sorted by name then reference."""
        keys = sorted(k for k in self._candidates if name is None or k[0] == name)
        return [self._candidates[k][0] for k in keys]

    def all_archives(self) -> list[Archive]:
        """Every archive found, winners and shadowed ones."""
        return [a for k in sorted(self._candidates) for a in self._candidates[k]]


def _is_reg(st) -> bool:
    return (st.st_mode & 0o170000) == 0o100000
