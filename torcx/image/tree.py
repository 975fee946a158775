# SPDX-License-Identifier: Apache-2.0
"""Reading an image root folder for the pack: its entries in order, digests, xattrs.

Entries are listed depth first with names sorted by bytes, never following a
symlink; regular files are hashed (XXH3-128) in fixed-size chunks, each inode
once, so memory depends on the number of entries, never on their size.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from .. import digestlist
from ..errors import PackError
from .check import Problem

TORCX_DIR_REL = b".torcx"
MANIFEST_REL = b".torcx/manifest.json"
# xattrs an image may carry: user data and file capabilities (e.g. ping's cap_net_raw).
KEPT_XATTR_PREFIXES = (b"user.", b"security.capability")
# Manifest lists whose files propagation reads out of the image (``bin`` only links to it).
PROPAGATED_KEYS = ("units", "network", "sysusers", "tmpfiles", "udev_rules")


@dataclass(frozen=True)
class Node:
    """One entry of the root folder: path relative to the root (bytes, no './') and lstat."""

    rel: bytes
    st: os.stat_result


def scan_tree(rootfs: str) -> tuple[list[Node], list[Problem]]:
    """Every entry below ``rootfs`` depth first, names sorted by bytes, never following links.

    ``.torcx/digests`` is left out (the pack writes its own). Sockets, names
    holding a newline (which the digest list cannot name) and a ``.torcx`` that
    is not a folder are problems.
    """
    root = os.fsencode(rootfs)
    nodes: list[Node] = []
    problems: list[Problem] = []
    folders = [b""]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(os.path.join(root, folder) if folder else root) as it:
                names = [e.name for e in it]
        except OSError as e:
            problems.append(Problem(show(folder) or ".", f"cannot list: {e.strerror}"))
            continue
        for name in names:
            rel = folder + b"/" + name if folder else name
            try:
                st = os.lstat(os.path.join(root, rel))
            except OSError as e:
                problems.append(Problem(show(rel), f"cannot stat: {e.strerror}"))
                continue
            if b"\n" in name:
                problems.append(Problem(show(rel), "name holds a newline; the digest list "
                                                    "cannot name it"))
                continue
            if rel == TORCX_DIR_REL and not stat.S_ISDIR(st.st_mode):
                # The pack writes .torcx/digests: through a symlink it would land on the host.
                problems.append(Problem(show(rel), "must be a folder (the pack writes "
                                                    ".torcx/digests into it)"))
                continue
            if rel == digestlist.DIGESTS_PATH:
                if stat.S_ISDIR(st.st_mode):
                    problems.append(Problem(show(rel), "is a folder; the pack writes this file"))
                continue  # replaced by the digest list this pack computes
            if stat.S_ISSOCK(st.st_mode):
                problems.append(Problem(show(rel), "is a socket; archives cannot hold one"))
                continue
            nodes.append(Node(rel, st))
            if stat.S_ISDIR(st.st_mode):
                folders.append(rel)
    # Depth first, names sorted by bytes: each folder is followed by its whole subtree.
    nodes.sort(key=lambda n: n.rel.split(b"/"))
    problems.sort(key=lambda p: p.path)
    return nodes, problems


def archive_order(nodes: list[Node], early: set[bytes] = frozenset()) -> list[Node]:
    """The archive's members after the digest list, each once, every folder before its entries.

    ``.torcx`` and its manifest first, then the rest of ``.torcx/``, then the
    ``early`` paths (what propagation reads, see propagated_paths) with their
    parent folders, then everything else: within each part in tree order. A
    reader after the manifest and the propagated files (the sandboxed
    generator) stops before the bulk of the image.
    """
    inside = [n for n in nodes if n.rel.startswith(TORCX_DIR_REL + b"/")]
    torcx = [n for n in nodes if n.rel == TORCX_DIR_REL]
    torcx += [n for n in inside if n.rel == MANIFEST_REL]
    torcx += [n for n in inside if n.rel != MANIFEST_REL]
    placed = {n.rel for n in torcx}
    wanted = set()
    for rel in early:
        while rel and rel not in wanted:
            wanted.add(rel)
            rel = rel.rpartition(b"/")[0]
    front = [n for n in nodes if n.rel in wanted and n.rel not in placed]
    placed.update(n.rel for n in front)
    return torcx + front + [n for n in nodes if n.rel not in placed]


def propagated_paths(rootfs: str, manifest, nodes: list[Node]) -> set[bytes]:
    """The entries propagating ``manifest`` reads (the PROPAGATED_KEYS lists).

    For each listed path: every entry its resolution inside the image passes
    (parent folders, symlinks and their targets, as the generator follows a
    unit that is an alias link) and, for a folder, its direct entries
    (propagation goes one level deep).
    """
    if manifest is None:
        return set()
    root = os.fsencode(rootfs)
    entries: dict[bytes, list[bytes]] = {}
    for node in nodes:
        entries.setdefault(node.rel.rpartition(b"/")[0], []).append(node.rel)
    out: set[bytes] = set()
    for key in PROPAGATED_KEYS:
        for asset in getattr(manifest, key):
            trail, resolved = _resolution_trail(root, os.fsencode(asset))
            out.update(trail)
            if resolved and stat.S_ISDIR(_lstat_mode(root, resolved)):
                out.update(entries.get(resolved, ()))
    return out


_MAX_SYMLINKS = 40  # as the kernel's path walk (ELOOP)


def _resolution_trail(root: bytes, asset: bytes) -> tuple[list[bytes], bytes | None]:
    """``(entries met resolving asset, resolved path or None)`` inside the image.

    Symlinks are followed while they stay inside the image, as the apply does.
    """
    todo = [p for p in reversed(asset.split(b"/")) if p not in (b"", b".")]
    done: list[bytes] = []
    trail: list[bytes] = []
    links = 0
    while todo:
        part = todo.pop()
        if part == b"..":
            if not done:
                return trail, None  # climbs out: the pack's checks refuse it
            done.pop()
            continue
        rel = b"/".join(done + [part])
        mode = _lstat_mode(root, rel)
        if not mode:
            return trail, None
        trail.append(rel)
        if stat.S_ISLNK(mode):
            links += 1
            try:
                target = os.readlink(os.path.join(root, rel))
            except OSError:
                return trail, None
            if links > _MAX_SYMLINKS or target.startswith(b"/"):
                return trail, None
            todo.extend(p for p in reversed(target.split(b"/")) if p not in (b"", b"."))
            continue
        done.append(part)
    return trail, b"/".join(done) or None


def _lstat_mode(root: bytes, rel: bytes) -> int:
    try:
        return os.lstat(os.path.join(root, rel)).st_mode
    except OSError:
        return 0


def show(rel: bytes) -> str:
    return os.fsdecode(rel)


def compute_digests(rootfs: str, nodes: list[Node]) -> tuple[dict[bytes, str], int]:
    """``({path: xxh3-128 hex}, unpacked bytes)``: every regular file, hard links once read."""
    root = os.fsencode(rootfs)
    by_inode: dict[tuple[int, int], str] = {}
    digests: dict[bytes, str] = {}
    total = 0
    for node in nodes:
        if not stat.S_ISREG(node.st.st_mode):
            continue
        key = (node.st.st_dev, node.st.st_ino)
        digest = by_inode.get(key)
        if digest is None:
            path = os.path.join(root, node.rel)
            try:
                digest, size = digestlist.hash_file(path)
            except OSError as e:
                raise PackError(e.errno, f"{show(path)}: cannot read: {e.strerror}") from None
            if size != node.st.st_size:
                raise changed(path)
            by_inode[key] = digest
            total += size
        digests[node.rel] = digest
    return digests, total


def changed(path: bytes) -> PackError:
    return PackError(errno.EAGAIN, f"{show(path)}: changed while packing; pack a quiet tree")


def resolve_epoch(epoch: int | None, nodes: list[Node]) -> int:
    """A fixed timestamp for what has none of its own: the epoch, else the newest mtime."""
    if epoch is not None:
        return epoch
    return max((int(n.st.st_mtime) for n in nodes), default=0)


def read_xattrs(path: bytes) -> list[tuple[bytes, bytes]]:
    """The kept xattrs of ``path`` (not following a symlink), sorted by name."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return []
        raise
    out = []
    for name in sorted(os.fsencode(n) for n in names):
        if name.startswith(KEPT_XATTR_PREFIXES):
            out.append((name, os.getxattr(path, name, follow_symlinks=False)))
    return out
