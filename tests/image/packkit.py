# SPDX-License-Identifier: Apache-2.0
"""Helpers of the pack tests: a realistic image root folder and tree snapshots to compare."""

from __future__ import annotations

import json
import os
import stat
import struct
import tempfile
from pathlib import Path

from torcx_testing import in_mount_namespace, is_root, needs_root  # noqa: F401 - re-exported

from torcx.digestlist import hash_file

EPOCH = 1_700_000_000
OLD = 1_000_000_000      # older than EPOCH: kept as is
NEW = 2_000_000_000      # newer than EPOCH: clamped
TAR_FORMATS = ("tgz", "tar.zst", "tar.xz", "tar")
FS_FORMATS = ("squashfs", "erofs")
ALL_FORMATS = TAR_FORMATS + FS_FORMATS
KEPT_XATTRS = ("user.", "security.capability")


MANIFEST = {
    "kind": "image-manifest-v0",
    "value": {
        "bin": ["/bin/tool", "/bin/tool-link", "/libexec"],
        "units": ["/usr/lib/systemd/system/tool.service",
                  "/usr/lib/systemd/system/multi-user.target.wants"],
        "network": ["/usr/lib/systemd/network/50-tool.network"],
        "sysusers": ["/usr/lib/sysusers.d/tool.conf"],
        "tmpfiles": ["/usr/lib/tmpfiles.d/tool.conf"],
        "udev_rules": ["/usr/lib/udev/rules.d/50-tool.rules"],
    },
}

# VFS_CAP_REVISION_2 with cap_net_raw (13) permitted and effective.
CAP_NET_RAW = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)


def write(path: Path, data: bytes, mode: int = 0o644, mtime: int = OLD) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    os.utime(path, (mtime, mtime))
    return path


def build_rootfs(root: Path, *, big_bytes: int = 3 << 20, small_files: int = 150) -> Path:
    """An image root with every entry type an addon carries and a valid manifest."""
    write(root / ".torcx/manifest.json", json.dumps(MANIFEST).encode())
    write(root / "bin/tool", b"#!/bin/sh\necho tool\n", 0o755)
    write(root / "bin/suid-tool", b"\x7fELF pretend setuid\n", 0o4755)
    write(root / "bin/sgid-tool", b"\x7fELF pretend setgid\n", 0o2711, mtime=NEW)
    os.symlink("tool", root / "bin/tool-link")
    os.link(root / "bin/tool", root / "bin/tool-hardlink")
    write(root / "libexec/helper", b"helper\n", 0o755)
    sysd = root / "usr/lib/systemd/system"
    write(sysd / "tool.service", b"[Service]\nExecStart=/run/torcx/bin/tool\n")
    (sysd / "multi-user.target.wants").mkdir()
    os.symlink("../tool.service", sysd / "multi-user.target.wants/tool.service")
    write(root / "usr/lib/systemd/network/50-tool.network", b"[Match]\nName=tool0\n")
    write(root / "usr/lib/sysusers.d/tool.conf", b"u tool - -\n")
    write(root / "usr/lib/tmpfiles.d/tool.conf", b"d /run/tool 0755 - - -\n")
    write(root / "usr/lib/udev/rules.d/50-tool.rules", b"# nothing\n")
    # A large file of incompressible data and many small files.
    with open(root / "share-big.bin", "wb") as f:
        for left in range(big_bytes, 0, -(1 << 20)):
            f.write(os.urandom(min(left, 1 << 20)))
    os.utime(root / "share-big.bin", (NEW, NEW))
    for i in range(small_files):
        write(root / f"share/many/file-{i:04d}.txt", (b"line %d\n" % i) * (i % 17), 0o644,
              mtime=OLD + i)
    write(root / "share/ro.txt", b"read only\n", 0o444)
    write(root / "share/\u00e9t\u00e9 \u2603.txt", b"non-ASCII name\n")
    latin1 = os.path.join(os.fsencode(root), b"share/latin1-\xe9t\xe9.txt")
    with open(latin1, "wb") as f:
        f.write(b"a name that is not UTF-8: packed as the bytes it is\n")
    os.utime(latin1, (OLD, OLD))
    deep = "share/" + "/".join(["d" * 40] * 4) + "/" + "long-name-" * 12
    write(root / deep, b"a path longer than 100 bytes (ustar prefix and pax)\n")
    x = write(root / "share/xattr.txt", b"has xattrs\n")
    os.setxattr(x, "user.torcx.note", b"kept")
    os.setxattr(x, "user.torcx.empty", b"")
    if is_root():
        ping = write(root / "bin/ping", b"pretend ping\n", 0o755)
        os.setxattr(ping, "security.capability", CAP_NET_RAW)
    os.symlink("/etc/os-release", root / "share/absolute-link")
    os.symlink("../missing", root / "share/dangling-link")
    (root / "share/empty").mkdir(mode=0o700)
    (root / "share/tmp").mkdir()
    (root / "share/tmp").chmod(0o1777)
    os.mkfifo(root / "share/fifo")
    for d, _, _ in os.walk(root):
        os.utime(d, (OLD, OLD))
    os.utime(root / "share", (NEW, NEW))
    return root


def _xattrs(path: str) -> tuple:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    return tuple(sorted((n, os.getxattr(path, n, follow_symlinks=False)) for n in names
                        if n.startswith(KEPT_XATTRS)))


def snapshot(root, *, skip=(".torcx/digests",)) -> dict:
    """``{relative path: (type, mode bits, size, link, digest, xattrs, mtime)}`` plus links.

    The key ``"<hardlinks>"`` holds the set of groups of paths sharing an inode.
    """
    root = str(root)
    out = {}
    inodes: dict = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            full = os.path.join(top, name)
            rel = os.path.relpath(full, root)
            if rel in skip:
                continue
            st = os.lstat(full)
            kind = stat.S_IFMT(st.st_mode)
            link = os.readlink(full) if stat.S_ISLNK(st.st_mode) else ""
            digest = hash_file(full)[0] if stat.S_ISREG(st.st_mode) else ""
            size = st.st_size if stat.S_ISREG(st.st_mode) else 0
            out[rel] = (kind, stat.S_IMODE(st.st_mode), size, link, digest, _xattrs(full),
                        int(st.st_mtime), st.st_uid, st.st_gid)
            if stat.S_ISREG(st.st_mode):
                inodes.setdefault(st.st_ino, set()).add(rel)
    out["<hardlinks>"] = sorted(sorted(g) for g in inodes.values() if len(g) > 1)
    return out


def expected_after_pack(source: dict, fmt: str, epoch: int) -> dict:
    """What ``source`` (a snapshot) looks like unpacked from a ``fmt`` archive."""
    out = {}
    for rel, value in source.items():
        if rel == "<hardlinks>":
            out[rel] = value
            continue
        kind, mode, size, link, digest, xattrs, mtime, _uid, _gid = value
        mtime = epoch if fmt in FS_FORMATS else min(mtime, epoch)
        out[rel] = (kind, mode, size, link, digest, xattrs, mtime, 0, 0)
    return out


def comparable(snap: dict) -> dict:
    """``snap`` as far as an unprivileged extraction can reproduce it.

    Without root nothing is chowned and, as with tar, setuid/setgid bits are not
    applied: compare owners and those bits only when running as root.
    """
    if is_root():
        return snap
    out = {}
    for rel, value in snap.items():
        if rel.startswith("<"):
            out[rel] = value
            continue
        kind, mode, size, link, digest, xattrs, mtime, _uid, _gid = value
        out[rel] = (kind, mode & 0o1777, size, link, digest, xattrs, mtime)
    return out


def mounted_snapshot(image: str, fstype: str) -> dict:
    """Snapshot of a squashfs/erofs image, loop-mounted read-only in a private namespace."""
    def inner():
        from torcx import engine

        mnt = tempfile.mkdtemp(prefix="torcx-pack-test-")
        engine.loop_mount(image, mnt, fstype)
        try:
            snap = snapshot(mnt)
            snap["<root>"] = os.path.isfile(os.path.join(mnt, ".torcx/digests"))
            return snap
        finally:
            engine.umount(mnt)
            os.rmdir(mnt)

    return in_mount_namespace(inner)


def as_nobody(fn, *args) -> str:
    """Run ``fn(*args)`` in a forked child with uid/gid 65534; its text result or error."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(rfd)
        try:
            os.setgid(65534)
            os.setuid(65534)
            text = f"returned {fn(*args)!r}"
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            text = f"{type(e).__name__}: {e}"
        os.write(wfd, text.encode())
        os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as r:
        text = r.read().decode()
    os.waitpid(pid, 0)
    return text
