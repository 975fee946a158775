# SPDX-License-Identifier: Apache-2.0
"""torcx image verify: good archives pass, a flipped byte or a wrong pin names the fault."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile

import pytest
import xxhash
from packkit import ALL_FORMATS, FS_FORMATS, as_nobody, is_root, needs_root, write

from torcx.errors import ConfigError, CorruptArchive, DigestMismatch, ExtractError
from torcx.image.pack import pack_image
from torcx.image.verify import parse_pin, verify_archive

VICTIM = b"".join(b"victim line %05d\n" % i for i in range(400))


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify") / "rootfs"
    write(root / "bin/tool", b"#!/bin/sh\n", 0o755)
    write(root / "share/victim.txt", VICTIM)
    os.link(root / "share/victim.txt", root / "share/z-victim-link.txt")
    write(root / "share/other.txt", b"other\n")
    return root


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_good_archive_passes(image, tmp_path, fmt):
    """A freshly packed archive verifies in every format (file systems: root, mounted)."""
    if fmt in FS_FORMATS and not is_root():
        pytest.skip("squashfs/erofs are verified by mounting them: needs root")
    result = pack_image(str(image), "tool", "1", str(tmp_path), fmt=fmt)
    verdict = verify_archive(result.path)
    assert verdict.files == 4  # tool, victim, victim-link, other
    assert verdict.format == fmt
    assert "4 files match .torcx/digests" in verdict.line()


def _flip_byte_in(path, needle: bytes) -> None:
    data = bytearray(open(path, "rb").read())
    at = data.find(needle)
    assert at > 0 and data.find(needle, at + 1) < 0
    data[at + len(needle) // 2] ^= 0x01
    open(path, "wb").write(bytes(data))


def test_flipped_byte_in_file_data_names_the_file(image, tmp_path):
    """One flipped bit inside a file's data in a tar archive fails naming that file."""
    result = pack_image(str(image), "tool", "1", str(tmp_path), fmt="tar")
    _flip_byte_in(result.path, VICTIM)
    with pytest.raises(DigestMismatch) as info:
        verify_archive(result.path)
    assert info.value.entry == "share/victim.txt"
    assert "share/victim.txt" in str(info.value)


@needs_root
def test_squashfs_with_a_wrong_digest_list_names_the_file(image, tmp_path):
    """A squashfs image whose file differs from its digest list fails naming that file."""
    stage = tmp_path / "stage"
    subprocess.run(["cp", "-a", str(image), str(stage)], check=True)
    write(stage / ".torcx/digests",
          b"%s  bin/tool\n%s  share/other.txt\n%s  share/z-victim-link.txt\n%s  share/victim.txt\n"
          % (xxhash.xxh3_128_hexdigest(b"#!/bin/sh\n").encode(),
             xxhash.xxh3_128_hexdigest(b"other\n").encode(),
             xxhash.xxh3_128_hexdigest(VICTIM).encode(),
             xxhash.xxh3_128_hexdigest(b"not the victim").encode()))
    archive = tmp_path / "bad.torcx.squashfs"
    subprocess.run(["mksquashfs", str(stage), str(archive), "-noappend", "-quiet",
                    "-no-progress"], check=True, stdout=subprocess.DEVNULL)
    with pytest.raises(DigestMismatch) as info:
        verify_archive(str(archive))
    assert info.value.entry == "share/victim.txt"
    assert info.value.filename == str(archive)


def test_archive_without_digest_list_fails(image, tmp_path):
    """A plain tarball (no .torcx/digests) cannot be verified and says so."""
    archive = tmp_path / "plain.tgz"
    subprocess.run(["bsdtar", "-czf", str(archive), "-C", str(image), "."], check=True)
    with pytest.raises(DigestMismatch, match="digests"):
        verify_archive(str(archive))


@pytest.mark.parametrize("form", ["bare", "xxh3", "sha256", "sha512"])
def test_matching_pinned_digest_passes(image, tmp_path, form):
    """--digest in every accepted form passes when it matches the archive bytes."""
    result = pack_image(str(image), "tool", "1", str(tmp_path), fmt="tgz")
    data = open(result.path, "rb").read()
    pin = {"bare": xxhash.xxh3_128_hexdigest(data),
           "xxh3": "xxh3-" + xxhash.xxh3_128_hexdigest(data),
           "sha256": "sha256-" + hashlib.sha256(data).hexdigest(),
           "sha512": result.sha512}[form]
    assert verify_archive(result.path, pin).pinned


@pytest.mark.parametrize("form", ["xxh3", "sha256", "sha512"])
def test_wrong_pinned_digest_fails(image, tmp_path, form):
    """A pinned digest that does not match the archive bytes fails."""
    result = pack_image(str(image), "tool", "1", str(tmp_path), fmt="tgz")
    pin = {"xxh3": "0" * 32, "sha256": "sha256-" + "0" * 64, "sha512": "sha512-" + "0" * 128}
    with pytest.raises(DigestMismatch):
        verify_archive(result.path, pin[form])


@pytest.mark.parametrize("text", ["md5-" + "0" * 32, "sha512-00", "xxh3-" + "g" * 32, ""])
def test_malformed_pin_is_a_usage_error(text):
    """A --digest that is no known digest form is refused before reading anything."""
    with pytest.raises(ConfigError):
        parse_pin(text or " ")


def test_not_an_archive_is_corrupt(tmp_path):
    """A file that is no image format is reported as such, naming it."""
    path = tmp_path / "junk.torcx.tgz"
    path.write_bytes(b"junk" * 300)
    with pytest.raises(CorruptArchive, match="junk.torcx.tgz"):
        verify_archive(str(path))


@needs_root
def test_file_system_image_as_non_root_says_why_it_cannot(image):
    """Without root a squashfs image is not verified, and the message says it needs root."""
    folder = tempfile.mkdtemp(prefix="torcx-verify-")
    try:
        os.chmod(folder, 0o755)
        result = pack_image(str(image), "tool", "1", folder, fmt="squashfs")
        text = as_nobody(verify_archive, result.path)
        assert text.startswith("MountError:"), text
        assert "needs root" in text
    finally:
        shutil.rmtree(folder)


@needs_root
@pytest.mark.parametrize("fmt", FS_FORMATS)
def test_pinned_digest_of_a_file_system_image(image, tmp_path, fmt):
    """squashfs/erofs: the pack's sha512 pins the image; another digest fails it."""
    result = pack_image(str(image), "tool", "1", str(tmp_path), fmt=fmt)
    assert verify_archive(result.path, result.sha512).pinned == result.sha512
    assert verify_archive(result.path, "xxh3-" + result.xxh3).files == 4
    with pytest.raises(DigestMismatch, match="sha512"):
        verify_archive(result.path, "sha512-" + "f" * 128)


@needs_root
@pytest.mark.parametrize("fmt", FS_FORMATS)
def test_damaged_file_system_image_names_the_unreadable_file(tmp_path, fmt):
    """squashfs/erofs: a flipped byte in compressed file data fails naming the file, no crash."""
    root = tmp_path / "rootfs"
    write(root / "data", b"".join(b"line %06d of the data\n" % i for i in range(40000)))
    result = pack_image(str(root), "data", "1", str(tmp_path), fmt=fmt)
    data = bytearray(open(result.path, "rb").read())
    data[len(data) // 2] ^= 0x55  # the middle of the image: compressed data of 'data'
    open(result.path, "wb").write(bytes(data))
    with pytest.raises(ExtractError) as info:
        verify_archive(result.path)
    assert info.value.filename == result.path
    assert info.value.entry == "data"


@needs_root
def test_digest_list_behind_a_torcx_symlink_is_not_read(image, tmp_path):
    """A crafted squashfs whose .torcx links to a host folder holding a matching list fails."""
    stage = tmp_path / "stage"
    subprocess.run(["cp", "-a", str(image), str(stage)], check=True)
    pack_image(str(image), "tool", "1", str(tmp_path), fmt="tar")
    host = tmp_path / "host"
    host.mkdir()
    subprocess.run(["bsdtar", "-xf", str(tmp_path / "tool:1.torcx.tar"), "-C", str(host),
                    "--strip-components", "1", ".torcx/digests"], check=True)
    os.symlink(host, stage / ".torcx")
    archive = tmp_path / "crafted.torcx.squashfs"
    subprocess.run(["mksquashfs", str(stage), str(archive), "-noappend", "-quiet",
                    "-no-progress"], check=True, stdout=subprocess.DEVNULL)
    with pytest.raises(DigestMismatch, match="has no .torcx/digests"):
        verify_archive(str(archive))


def test_fifo_is_refused_without_blocking(tmp_path):
    """A FIFO given as the archive is refused at once (opening it must not wait for a writer)."""
    fifo = tmp_path / "pipe.torcx.tgz"
    os.mkfifo(fifo)
    with pytest.raises(CorruptArchive, match="pipe.torcx.tgz: not a regular file"):
        verify_archive(str(fifo))
