# SPDX-License-Identifier: Apache-2.0
"""``torcx image inspect``: what an image archive holds, without unpacking it.

Tar formats are read with libarchive (libarchive-c). squashfs and erofs images
are loop-mounted read-only in a private mount namespace when running as root;
otherwise a squashfs image is listed with ``unsquashfs -lln`` and an erofs image
gets its superblock summary only, with a note saying why.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
import subprocess
from dataclasses import asdict, dataclass, field

from .. import digestlist, fstree, mountns, schemas
from ..digestlist import is_regular_file_in
from ..errors import CorruptArchive, MountError, SchemaError

MANIFEST = ".torcx/manifest.json"
DIGESTS = digestlist.DIGESTS_PATH.decode()
LARGEST = 10
MAX_SMALL_READ = 16 << 20  # the manifest and digest list are read into memory: cap them

TAR_FORMATS = ("tgz", "tar.zst", "tar.xz", "tar")
FS_FORMATS = ("squashfs", "erofs")


def detect_format(path: str) -> str:
    """The archive format from its first bytes (the file name may lie)."""
    # O_NONBLOCK: a FIFO would otherwise wait for a writer before it could be refused.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
            raise CorruptArchive("not a regular file", filename=path)
        head = f.read(1028)
    if head.startswith(b"\x1f\x8b"):
        return "tgz"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "tar.zst"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "tar.xz"
    if head.startswith(b"hsqs"):
        return "squashfs"
    if head[1024:1028] == b"\xe2\xe1\xf5\xe0":  # EROFS_SUPER_MAGIC_V1, little endian
        return "erofs"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    raise CorruptArchive("not a torcx image archive (tgz, tar.zst, tar.xz, tar, squashfs "
                         "or erofs)", filename=path)


@dataclass
class Report:
    """Everything ``inspect`` says about one archive."""

    path: str
    format: str
    packed_bytes: int
    store: str | None = None
    unpacked_bytes: int = 0
    files: int = 0
    entries: int = 0
    types: dict = field(default_factory=dict)
    manifest: dict | None = None
    manifest_error: str | None = None
    digests: dict = field(default_factory=lambda: {"present": False})
    largest: list = field(default_factory=list)
    setuid: list = field(default_factory=list)
    devices: list = field(default_factory=list)
    outside_links: list = field(default_factory=list)
    note: str | None = None

    def to_json(self) -> dict:
        return {"kind": "torcx-image-inspect-v0", "value": asdict(self)}

    def lines(self) -> list[str]:
        out = [f"archive:   {self.path}"]
        if self.store:
            out.append(f"store:     {self.store}")
        out += [f"format:    {self.format}",
                f"packed:    {self.packed_bytes} bytes",
                f"unpacked:  {self.files} files, {self.unpacked_bytes} bytes",
                f"entries:   {self.entries} ("
                + ", ".join(f"{n} {k}" for k, n in sorted(self.types.items())) + ")"]
        d = self.digests
        if d.get("present"):
            out.append(f"digests:   {DIGESTS} lists {d.get('files', 0)} files"
                       + ("" if d.get("first", True) else " (not the first member)"))
        else:
            out.append(f"digests:   none ({DIGESTS} missing: files cannot be verified)")
        if self.manifest_error:
            out.append(f"manifest:  invalid: {self.manifest_error}")
        elif self.manifest is None:
            out.append("manifest:  none (the image propagates nothing)")
        else:
            out.append("manifest:")
            for key, paths in self.manifest.items():
                if paths:
                    out.append(f"  {key}: {', '.join(paths)}")
        if self.largest:
            out.append("largest files:")
            out += [f"  {f['size']:>12}  {f['path']}" for f in self.largest]
        for title, items, fmt in (
                ("setuid/setgid files:", self.setuid, lambda i: f"{i['mode']}  {i['path']}"),
                ("device nodes:", self.devices,
                 lambda i: f"{i['type']} {i['major']},{i['minor']}  {i['path']}"),
                ("links pointing outside the image:", self.outside_links,
                 lambda i: f"{i['path']} -> {i['target']}")):
            if items:
                out.append(title)
                out += [f"  {fmt(i)}" for i in items]
        if self.note:
            out.append(f"note:      {self.note}")
        return out


def _kind(mode: int) -> str:
    return {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
            stat.S_IFCHR: "char", stat.S_IFBLK: "block", stat.S_IFIFO: "fifo",
            stat.S_IFSOCK: "socket"}.get(stat.S_IFMT(mode), "other")


def link_leaves_image(path: str, target: str) -> bool:
    """True if symlink ``path`` -> ``target`` resolves outside the image once unpacked."""
    if target.startswith("/"):
        return True  # absolute: resolves on the host
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    return resolved == ".." or resolved.startswith("../")


class Summary:
    """Accumulates the content summary entry by entry (memory: the top-N and the lists)."""

    def __init__(self, report: Report):
        self.r = report
        self.seen: set[str] = set()
        self.inodes: set = set()

    def add(self, path: str, mode: int, size: int, *, link: str = "", hardlink: str = "",
            rdev: tuple[int, int] = (0, 0), inode=None) -> None:
        """One entry; ``inode`` (a key) when a tree walk meets a file with several names."""
        r = self.r
        path = path[2:] if path.startswith("./") else path
        path = path.rstrip("/") or "."
        r.entries += 1
        kind = "hardlink" if hardlink else _kind(mode)
        if inode is not None and kind == "file":
            if inode in self.inodes:
                kind = "hardlink"
            self.inodes.add(inode)
        if kind == "file" and path == DIGESTS:
            kind = "digest list"  # added by pack: not one of the image's files
        r.types[kind] = r.types.get(kind, 0) + 1
        if kind == "file":  # the image's files and bytes: see pack.files_text
            r.files += 1
            r.unpacked_bytes += size
            r.largest.append({"path": path, "size": size})
            r.largest.sort(key=lambda f: (-f["size"], f["path"]))
            del r.largest[LARGEST:]
        if kind in ("file", "hardlink") and mode & (stat.S_ISUID | stat.S_ISGID):
            r.setuid.append({"path": path, "mode": f"{stat.S_IMODE(mode):04o}"})
        if kind in ("char", "block"):
            r.devices.append({"path": path, "type": kind, "major": rdev[0], "minor": rdev[1]})
        if kind == "symlink" and link_leaves_image(path, link):
            r.outside_links.append({"path": path, "target": link})
        if hardlink:
            target = hardlink[2:] if hardlink.startswith("./") else hardlink
            if target not in self.seen:
                r.outside_links.append({"path": path, "target": target,
                                        "problem": "hard link to an entry not before it"})
        self.seen.add(path)

    def set_manifest(self, data: bytes) -> None:
        try:
            m = schemas.parse_image_manifest(schemas.load_json(data, MANIFEST), MANIFEST)
            self.r.manifest = {k: v for k, v in m.items()}
        except SchemaError as e:
            self.r.manifest_error = f"{e.jsonpath}: {e.problem}"

    def set_digests(self, data: bytes, first: bool) -> None:
        try:
            listed = digestlist.parse(data)
            self.r.digests = {"present": True, "first": first, "files": len(listed)}
        except ValueError as e:
            self.r.digests = {"present": True, "first": first, "error": str(e)}


def _read_small(entry, path: str, what: str) -> bytes:
    chunks, total = [], 0
    for block in entry.get_blocks():
        total += len(block)
        if total > MAX_SMALL_READ:
            raise CorruptArchive(f"{what} is larger than {MAX_SMALL_READ} bytes",
                                 filename=path, entry=what)
        chunks.append(block)
    return b"".join(chunks)


def _text(value) -> str:
    """libarchive-c gives bytes for a name that is not UTF-8: the same string as os.fsdecode."""
    if value is None:
        return ""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def inspect_tar(path: str, report: Report) -> Report:
    import libarchive
    from libarchive.exception import ArchiveError

    s = Summary(report)
    try:
        with libarchive.file_reader(path) as archive:
            for index, entry in enumerate(archive):
                name = _text(entry.pathname)
                clean = name[2:] if name.startswith("./") else name
                target = _text(entry.linkpath) if entry.islnk or entry.issym else ""
                s.add(name, entry.mode, entry.size or 0, link=target if entry.issym else "",
                      hardlink=target if entry.islnk else "",
                      rdev=(entry.rdevmajor, entry.rdevminor))
                if clean == MANIFEST and entry.isreg and not entry.islnk:
                    s.set_manifest(_read_small(entry, path, MANIFEST))
                elif clean == DIGESTS and entry.isreg and not entry.islnk:
                    s.set_digests(_read_small(entry, path, DIGESTS), first=index == 0)
    except ArchiveError as e:
        raise CorruptArchive(f"cannot read: {e.msg}", filename=path) from None
    return report


def summarize_tree(root: str, report: Report) -> Report:
    """Fill ``report`` from an unpacked or mounted image at ``root`` (hard links as files).

    A damaged image reads as EIO or EUCLEAN: CorruptArchive naming the entry.
    """
    s = Summary(report)
    root_b = os.fsencode(root)
    where = root_b
    try:
        for top, dirs, files in fstree.walk(root_b):
            for name in sorted(dirs + files):
                where = os.path.join(top, name)
                st = os.lstat(where)
                link = os.fsdecode(os.readlink(where)) if stat.S_ISLNK(st.st_mode) else ""
                s.add(os.fsdecode(os.path.relpath(where, root_b)), st.st_mode,
                      st.st_size if stat.S_ISREG(st.st_mode) else 0, link=link,
                      rdev=(os.major(st.st_rdev), os.minor(st.st_rdev)),
                      inode=(st.st_dev, st.st_ino) if st.st_nlink > 1 else None)
        for rel, setter in ((MANIFEST, s.set_manifest), (DIGESTS, None)):
            where = os.path.join(root_b, os.fsencode(rel))
            if is_regular_file_in(root, rel):
                with open(where, "rb") as f:
                    data = f.read(MAX_SMALL_READ)
                if setter is None:
                    s.set_digests(data, first=True)  # file systems have no member order
                else:
                    setter(data)
    except OSError as e:
        if e.filename:  # the walk reports the folder it could not list
            where = os.fsencode(e.filename)
        raise CorruptArchive(f"cannot read: {e.strerror or e}", filename=report.path,
                             entry=os.fsdecode(os.path.relpath(where, root_b)),
                             err_no=e.errno or 0) from None
    return report


def _unsquashfs_listing(path: str, report: Report) -> Report:
    """Summary from ``unsquashfs -lln`` (no root needed)."""
    proc = subprocess.run(["unsquashfs", "-lln", "-d", "", path], stdin=subprocess.DEVNULL,
                          capture_output=True)
    if proc.returncode != 0:
        raise CorruptArchive(f"unsquashfs: {proc.stderr.decode(errors='replace').strip()}",
                             filename=path)
    s = Summary(report)
    for line in proc.stdout.decode(errors="surrogateescape").splitlines():
        entry = parse_lln_line(line)
        if entry is not None:
            s.add(**entry)
    for rel, setter in ((MANIFEST, s.set_manifest), (DIGESTS, None)):
        cat = subprocess.run(["unsquashfs", "-cat", path, rel], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        if cat.returncode == 0:
            if setter is None:
                s.set_digests(cat.stdout, first=True)
            else:
                setter(cat.stdout)
    return report


_TYPE_CHARS = {"-": stat.S_IFREG, "d": stat.S_IFDIR, "l": stat.S_IFLNK, "c": stat.S_IFCHR,
               "b": stat.S_IFBLK, "p": stat.S_IFIFO, "s": stat.S_IFSOCK}


def _perm_bits(text: str) -> int:
    bits = 0
    for i, (ch, on) in enumerate(zip(text, "rwxrwxrwx")):
        if ch in (on, "s", "t"):
            bits |= 1 << (8 - i)
    if text[2] in "sS":
        bits |= stat.S_ISUID
    if text[5] in "sS":
        bits |= stat.S_ISGID
    if text[8] in "tT":
        bits |= stat.S_ISVTX
    return bits


_LLN_LINE = re.compile(r"^([-dlcbps])([-rwxsStT]{9}) +\S+ +(?:(\d+)|(\d+), *(\d+)) "
                       r"+\d{4}-\d\d-\d\d \d\d:\d\d (.*)$")


def parse_lln_line(line: str):
    """One ``unsquashfs -lln -d ''`` line as Summary.add keywords, or None if not an entry.

    ``-rwxr-xr-x 0/0    6 2023-11-14 22:13 /bin/hello`` (devices: ``1,  3`` as size).
    A line of another shape (the rest of a name holding a newline) is None.
    """
    m = _LLN_LINE.match(line)
    if m is None:
        return None
    kind, perms, size, major, minor, name = m.groups()
    mode = _TYPE_CHARS[kind] | _perm_bits(perms)
    rdev = (int(major), int(minor)) if major is not None else (0, 0)
    link = ""
    if kind == "l":
        name, _, link = name.partition(" -> ")
    name = name.lstrip("/")
    if not name:
        return None  # the root folder
    return {"path": name, "mode": mode, "size": int(size or 0), "link": link, "rdev": rdev}


def _erofs_superblock(path: str, report: Report) -> Report:
    proc = subprocess.run(["dump.erofs", "-s", path], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise CorruptArchive(f"dump.erofs: {proc.stdout.decode(errors='replace').strip()}",
                             filename=path)
    for line in proc.stdout.decode(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Filesystem inode count" and value.strip().isdigit():
            report.entries = int(value)  # inodes: hard links count once, the root too
    return report


def inspect_archive(path: str, store: str | None = None) -> Report:
    """Inspect the archive file at ``path`` (``store``: which store it was found in)."""
    fmt = detect_format(path)
    report = Report(path=path, format=fmt, packed_bytes=os.path.getsize(path), store=store)
    if fmt in TAR_FORMATS:
        return inspect_tar(path, report)
    why = "not root"
    if mountns.can_mount():
        try:
            return mountns.with_mounted_image(path, fmt, summarize_tree, report)
        except MountError as e:  # e.g. no loop devices in a container: list it instead
            why = f"mounting failed: {e.strerror or e}"
    if fmt == "squashfs":
        report = _unsquashfs_listing(path, report)
        report.note = (f"listed with unsquashfs ({why}); a listing shows no inodes, so a "
                       "file with several hard links counts once per name")
        return report
    report = _erofs_superblock(path, report)
    report.note = (f"{why}: the content summary of an erofs image is read by mounting it "
                   "read-only in a private mount namespace, which needs root")
    return report
