# SPDX-License-Identifier: Apache-2.0
"""Builds torcx images and a fake root for apply tests, with the real tools.

Archives are made by GNU tar (compressed by gzip, zstd or xz) with
``.torcx/digests`` as the first member in xxh128sum format, exactly what
``torcx image pack`` produces; squashfs and erofs by mksquashfs and mkfs.erofs.
"""

from __future__ import annotations

import json
import os
import subprocess

import xxhash

TAR_FLAGS = {"tgz": ["-z"], "tar.zst": ["--zstd"], "tar.xz": ["-J"], "tar": []}


DEEP = 1100  # folder levels: beyond Python's default recursion limit of 1000


def deep_fake_root(tmp_path):
    """A FakeRoot whose deep trees are removed here: pytest's own clean-up recurses per
    folder level. Yield from it in a fixture."""
    yield FakeRoot(tmp_path / "root")
    subprocess.run(["rm", "-rf", "--one-file-system", str(tmp_path)], check=False)


def makedirs(path):
    """os.makedirs without recursion (it recurses per level: images may be 1,000 deep)."""
    missing = []
    while path and not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for folder in reversed(missing):
        os.mkdir(folder)


def walk(top):
    """Sorted os.walk without recursion: (folder, dirs, files), links to folders in files."""
    stack = [top] if os.path.isdir(top) else []  # as os.walk: a missing top is empty
    while stack:
        folder = stack.pop()
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
        dirs = [e.name for e in entries if e.is_dir(follow_symlinks=False)]
        yield folder, dirs, [e.name for e in entries if e.name not in dirs]
        stack.extend(os.path.join(folder, d) for d in reversed(dirs))


def write(path, text, mode=0o644):
    makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def image_tree(src, files, manifest=None, links=None):
    """Lay out an image folder: ``files`` {path: text or (text, mode)}, ``links`` {path: target}."""
    for path, content in files.items():
        text, mode = content if isinstance(content, tuple) else (content, 0o644)
        write(os.path.join(src, path), text, mode)
    for path, target in (links or {}).items():
        full = os.path.join(src, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        os.symlink(target, full)
    if manifest is not None:
        doc = manifest if isinstance(manifest, str) else json.dumps(
            {"kind": "image-manifest-v0", "value": manifest})
        write(os.path.join(src, ".torcx/manifest.json"), doc)


def digest_list(src):
    """xxh128sum lines for every regular file under ``src`` but the list itself."""
    lines = []
    for top, _dirs, names in walk(src):
        for name in names:
            full = os.path.join(top, name)
            rel = os.path.relpath(full, src)
            if rel == ".torcx/digests" or os.path.islink(full) or not os.path.isfile(full):
                continue
            with open(full, "rb") as f:
                lines.append((rel, xxhash.xxh3_128_hexdigest(f.read())))
    return "".join(f"{d}  {p}\n" for p, d in sorted(lines))


def pack(src, archive, fmt):
    """Archive the image folder ``src`` as ``fmt`` at ``archive`` (a tarball always gets a
    fresh digest list; squashfs/erofs carry one only if ``src`` has it)."""
    if fmt in TAR_FLAGS:
        write(os.path.join(src, ".torcx/digests"), digest_list(src))
        members = [".torcx/digests"] + sorted(
            m for m in os.listdir(src) if m != ".torcx")
        if os.path.exists(os.path.join(src, ".torcx/manifest.json")):
            members.append(".torcx/manifest.json")
        subprocess.run(["tar", "-C", src, *TAR_FLAGS[fmt], "-cf", archive, *members],
                       check=True)
    elif fmt == "squashfs":
        subprocess.run(["mksquashfs", src, archive, "-quiet", "-noappend", "-all-root"],
                       check=True, stdout=subprocess.DEVNULL)
    elif fmt == "erofs":
        subprocess.run(["mkfs.erofs", "--all-root", "--quiet", archive, src], check=True,
                       stdout=subprocess.DEVNULL)
    else:
        raise ValueError(fmt)
    return archive


class FakeRoot:
    """A target system under ``path``: vendor store and profiles, next-profile."""

    def __init__(self, path):
        self.path = str(path)
        self.store = os.path.join(self.path, "usr/share/torcx/store")
        self.vendor_profiles = os.path.join(self.path, "usr/share/torcx/profiles")
        self.user_profiles = os.path.join(self.path, "etc/torcx/profiles")
        self.work = os.path.join(self.path, "..", "work-" + os.path.basename(self.path))
        os.makedirs(self.store, exist_ok=True)
        os.makedirs(self.work, exist_ok=True)

    def host(self, target):
        return os.path.join(self.path, target.lstrip("/"))

    def add_image(self, name, reference, fmt="tgz", files=None, manifest=None, links=None,
                  digests=False, tamper=None):
        """Build image name:reference into the vendor store; returns the archive path.

        ``digests`` gives a squashfs/erofs image a digest list; ``tamper`` {path: text}
        rewrites files after it was made."""
        src = os.path.join(self.work, f"{name}-{reference}-{fmt}")
        image_tree(src, files or {}, manifest, links)
        if digests or tamper:
            write(os.path.join(src, ".torcx/digests"), digest_list(src))
        for path, text in (tamper or {}).items():
            write(os.path.join(src, path), text)
        archive = os.path.join(self.store, f"{name}:{reference}.torcx.{fmt}")
        return pack(src, archive, fmt)

    def profile(self, name, images, folder=None, kind="profile-manifest-v0"):
        """Write profile ``name`` with ``images`` [(name, reference)] (vendor folder by default)."""
        folder = folder or (self.vendor_profiles if name in ("vendor", "oem")
                            else self.user_profiles)
        doc = {"kind": kind, "value": {"images": [
            {"name": n, "reference": r} for n, r in images]}}
        write(os.path.join(folder, f"{name}.json"), json.dumps(doc))

    def raw_profile(self, name, text):
        write(os.path.join(self.user_profiles, f"{name}.json"), text)

    def next_profile(self, name):
        write(self.host("/etc/torcx/next-profile"), name + "\n")

    def add_hello(self, reference="1", fmt="tgz", name="hello"):
        """An image with a bin, a unit and its multi-user.target.wants link."""
        return self.add_image(name, reference, fmt, files={
            f"bin/{name}": (f"#!/bin/sh\necho {name}\n", 0o755),
            f"lib/systemd/system/{name}.service": "[Service]\nExecStart=/run/torcx/bin/x\n",
        }, links={
            f"lib/systemd/system/multi-user.target.wants/{name}.service":
                f"../{name}.service",
        }, manifest={
            "bin": [f"/bin/{name}"],
            "units": [f"/lib/systemd/system/{name}.service",
                      "/lib/systemd/system/multi-user.target.wants"],
        })
