# SPDX-License-Identifier: Apache-2.0
"""torcx image inspect: format, sizes, manifest, digest list and a content summary."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import tempfile

import pytest
from packkit import MANIFEST, as_nobody, build_rootfs, is_root, needs_root

from torcx.errors import CorruptArchive
from torcx.image import inspect as imageinspect
from torcx.image.inspect import Report, detect_format, inspect_archive, parse_lln_line
from torcx.image.pack import pack_image


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory):
    root = build_rootfs(tmp_path_factory.mktemp("inspect") / "rootfs", big_bytes=1 << 20,
                        small_files=20)
    os.symlink("../../etc", root / "share/escape")
    if is_root():
        os.mknod(root / "share/null", 0o20666, os.makedev(1, 3))
    return root


@pytest.fixture(scope="module")
def archives(rootfs, tmp_path_factory):
    store = tmp_path_factory.mktemp("inspect-store")
    return {fmt: pack_image(str(rootfs), "tool", "1", str(store), fmt=fmt).path
            for fmt in ("tgz", "squashfs")}


def test_tar_summary(archives):
    """A tgz report: format, manifest, digest list first, setuid files, links leaving the image."""
    r = inspect_archive(archives["tgz"])
    assert r.format == "tgz"
    assert r.packed_bytes == os.path.getsize(archives["tgz"])
    assert r.manifest == MANIFEST["value"]
    assert r.digests["present"] and r.digests["first"]
    assert r.largest[0]["path"] == "share-big.bin"
    assert {s["path"] for s in r.setuid} == {"bin/suid-tool", "bin/sgid-tool"}
    assert {(o["path"], o["target"]) for o in r.outside_links} == {
        ("share/absolute-link", "/etc/os-release"), ("share/escape", "../../etc")}
    assert r.types["hardlink"] == 1 and r.types["fifo"] == 1 and r.types["symlink"] >= 4
    if is_root():
        assert r.devices == [{"path": "share/null", "type": "char", "major": 1, "minor": 3}]
    text = "\n".join(r.lines())
    assert "digests:   .torcx/digests lists" in text
    assert "share/escape -> ../../etc" in text


@needs_root
def test_squashfs_mounted_and_listed_agree(archives):
    """As root the squashfs image is mounted; the unsquashfs listing gives the same summary."""
    mounted = inspect_archive(archives["squashfs"])
    listed = imageinspect._unsquashfs_listing(
        archives["squashfs"], Report(path=archives["squashfs"], format="squashfs",
                                     packed_bytes=mounted.packed_bytes))
    for field in ("manifest", "digests", "largest", "setuid", "devices", "outside_links",
                  "entries"):
        assert getattr(mounted, field) == getattr(listed, field), field
    # A listing shows no inodes: the mounted tree's hard link is one more file there.
    types = dict(mounted.types)
    types["file"] += types.pop("hardlink", 0)
    assert types == listed.types
    assert mounted.files == mounted.types["file"]
    assert mounted.unpacked_bytes <= listed.unpacked_bytes
    assert mounted.manifest == MANIFEST["value"]
    assert mounted.types["file"] >= 20


@pytest.mark.parametrize("line", ["dangling text", "-rw-r--r-- continued name",
                                  "crw-r--r-- 0/0 x, y 2023-11-14 22:13 /dev/odd"])
def test_lln_line_that_is_not_an_entry_is_skipped(line):
    """A line that only looks like an entry (a name holding a newline) is skipped, no crash."""
    assert parse_lln_line(line) is None


def test_lln_line_with_blanks_and_devices():
    """unsquashfs -lln lines parse, names with blanks and device numbers included."""
    assert parse_lln_line("-rwsr-xr-x 0/0     6 2023-11-14 22:13 /bin/a b") == {
        "path": "bin/a b", "mode": 0o104755, "size": 6, "link": "", "rdev": (0, 0)}
    dev = parse_lln_line("crw-rw-rw- 0/0     1,  3 2023-11-14 22:13 /dev/null")
    assert dev["rdev"] == (1, 3) and dev["mode"] == 0o20666
    link = parse_lln_line("lrwxrwxrwx 0/0     4 2023-11-14 22:13 /x -> /etc")
    assert (link["path"], link["link"]) == ("x", "/etc")


@pytest.mark.parametrize("head,fmt", [(b"\x1f\x8b\x08", "tgz"), (b"\x28\xb5\x2f\xfd", "tar.zst"),
                                      (b"\xfd7zXZ\x00", "tar.xz"), (b"hsqs", "squashfs")])
def test_format_comes_from_the_bytes(tmp_path, head, fmt):
    """The format is detected from magic bytes, whatever the file is called."""
    path = tmp_path / "image.bin"
    path.write_bytes(head + b"\0" * 2000)
    assert detect_format(str(path)) == fmt


def test_archive_without_digests_or_manifest_says_so(tmp_path):
    """A plain tarball is inspected; the report says the digest list and manifest are missing."""
    (tmp_path / "root").mkdir()
    (tmp_path / "root/file").write_bytes(b"x")
    archive = tmp_path / "plain.tgz"
    subprocess.run(["bsdtar", "-czf", str(archive), "-C", str(tmp_path / "root"), "."],
                   check=True)
    r = inspect_archive(str(archive))
    assert r.digests == {"present": False} and r.manifest is None
    text = "\n".join(r.lines())
    assert "digests:   none" in text and "manifest:  none" in text


def test_truncated_archive_is_corrupt(archives, tmp_path):
    """A truncated tgz is reported as corrupt, naming the file."""
    data = open(archives["tgz"], "rb").read()
    path = tmp_path / "cut.tgz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptArchive, match="cut.tgz"):
        inspect_archive(str(path))


def _summary(path):
    r = inspect_archive(path)
    return r.format, r.note, r.entries, r.manifest is not None, r.types


@needs_root
@pytest.mark.parametrize("fmt", ["squashfs", "erofs"])
def test_file_system_image_as_non_root(rootfs, fmt):
    """Without root: squashfs is listed with unsquashfs, erofs says why it has no summary."""
    folder = tempfile.mkdtemp(prefix="torcx-inspect-")
    try:
        os.chmod(folder, 0o755)
        archive = pack_image(str(rootfs), "tool", "1", folder, fmt=fmt).path
        text = as_nobody(_summary, archive)
        assert text.startswith("returned "), text
        got_fmt, note, entries, has_manifest, types = ast.literal_eval(text[len("returned "):])
        assert got_fmt == fmt and entries > 20
        if fmt == "squashfs":
            assert note.startswith("listed with unsquashfs (not root); ")
            assert has_manifest and types["file"] > 20
        else:
            assert "needs root" in note and not has_manifest
    finally:
        shutil.rmtree(folder)


@needs_root
@pytest.mark.parametrize("fmt", ["squashfs", "erofs"])
def test_damaged_manifest_in_a_mounted_image_is_corrupt(tmp_path, fmt):
    """A mounted image whose manifest cannot be read is CorruptArchive naming it, no crash."""
    import random

    root = tmp_path / "rootfs"
    (root / ".torcx").mkdir(parents=True)
    rng = random.Random(1)
    blanks = "".join(rng.choice(" \n\t\r") for _ in range(300000))  # barely compressible
    (root / ".torcx/manifest.json").write_text(
        '{"kind": "image-manifest-v0",' + blanks + '"value": {}}')
    path = pack_image(str(root), "tool", "1", str(tmp_path), fmt=fmt).path
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x55  # inside the manifest's compressed data
    open(path, "wb").write(bytes(data))
    with pytest.raises(CorruptArchive) as info:
        inspect_archive(path)
    assert info.value.filename == path
    assert info.value.entry == ".torcx/manifest.json"


def test_link_target_that_is_not_utf8_is_listed(tmp_path):
    """A symlink target that is not UTF-8 is summarised (as its bytes), not a crash."""
    root = tmp_path / "rootfs"
    root.mkdir()
    os.symlink(b"/host/tar\xffget", os.path.join(os.fsencode(root), b"l\xfeink"))
    r = inspect_archive(pack_image(str(root), "tool", "1", str(tmp_path), fmt="tgz").path)
    assert r.types["symlink"] == 1
    assert r.outside_links == [{"path": os.fsdecode(b"l\xfeink"),
                                "target": os.fsdecode(b"/host/tar\xffget")}]


@needs_root
def test_torcx_symlink_in_a_mounted_image_is_not_followed_to_the_host(tmp_path):
    """A crafted image whose .torcx links to a host folder: inspect never reads host files."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "manifest.json").write_text(json.dumps(
        {"kind": "image-manifest-v0", "value": {"bin": ["/host-secret"]}}))
    stage = tmp_path / "stage"
    stage.mkdir()
    os.symlink(host, stage / ".torcx")
    image = tmp_path / "crafted.torcx.squashfs"
    subprocess.run(["mksquashfs", str(stage), str(image), "-noappend", "-quiet", "-no-progress"],
                   check=True, stdout=subprocess.DEVNULL)
    report = inspect_archive(str(image))
    assert report.manifest is None
    assert report.outside_links == [{"path": ".torcx", "target": str(host)}]
