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

from . import digestlist
from .errors import PackError
from .imagecheck import Problem

TORCX_DIR_REL = b".torcx"
MANIFEST_REL = b".torcx/manifest.json"
# xattrs an image may carry: user data and file capabilities (e.g. ping's cap_net_raw).
KEPT_XATTR_PREFIXES = (b"user.", b"security.capability")


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


def archive_order(nodes: list[Node]) -> list[Node]:
    """The manifest right after the digest list, then every other entry in tree order."""
    first = [n for n in nodes if n.rel == MANIFEST_REL]
    return first + [n for n in nodes if n.rel != MANIFEST_REL]


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
