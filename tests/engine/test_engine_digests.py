# SPDX-License-Identifier: Apache-2.0
"""Per-file verification against the archive's `.torcx/digests` (xxh128sum format)."""

from __future__ import annotations

import os
import subprocess

import pytest
import tarkit
from tarkit import directory, hardlink, reg, symlink, xxh3

from torcx import engine, errors


def _image():
    return [directory("usr"), directory("usr/bin"), reg("usr/bin/tool", b"\x7fELF" * 1000),
            reg("etc/conf", b"key=value\n"), reg("empty"), symlink("tool", "usr/bin/tool")]


def test_matching_digests_verify(sandbox):
    """An archive whose files all match its digest list extracts with verified=True."""
    result = sandbox.extract(sandbox.archive(_image(), digests=True, compress="gzip"))
    assert result.verified
    assert (sandbox.dest / "usr/bin/tool").read_bytes() == b"\x7fELF" * 1000


def test_digest_list_is_kept_for_xxh128sum(sandbox):
    """The unpacked image keeps .torcx/digests, and `xxh128sum -c` accepts it."""
    sandbox.extract(sandbox.archive(_image(), digests=True))
    listed = (sandbox.dest / tarkit.DIGESTS_PATH).read_bytes()
    assert listed == tarkit.digest_list(_image())
    subprocess.run(["xxh128sum", "--quiet", "-c", tarkit.DIGESTS_PATH], cwd=sandbox.dest,
                   check=True)


def test_dot_slash_member_names_match_plain_list_paths(sandbox):
    """Members named './usr/...' (as GNU tar writes them) match list paths without './'."""
    members = [directory("./"), directory("./usr"), reg("./usr/f", b"data")]
    listing = f"{xxh3(b'data')}  usr/f\n"
    members.insert(0, tarkit.digests_member(listing))
    members[0].info.name = "./" + tarkit.DIGESTS_PATH
    result = sandbox.extract(sandbox.archive(members))
    assert result.verified


def test_mismatch_names_file_and_both_digests(sandbox):
    """A file whose content differs from its listed digest fails with DigestMismatch."""
    members = _image()
    listing = tarkit.digest_list(members).decode()
    actual = xxh3(b"key=value\n")
    expected = "0123456789abcdef0123456789abcdef"
    archive = sandbox.archive(members, digests=listing.replace(actual, expected))
    err = sandbox.refuses(archive, errors.DigestMismatch)
    assert err.entry == "etc/conf"
    assert expected in err.message and actual in err.message


def test_mismatch_of_one_byte(sandbox):
    """A single changed byte in a large file is caught."""
    data = bytearray(os.urandom(300_000))
    listing = f"{xxh3(bytes(data))}  big\n"
    data[150_000] ^= 1
    err = sandbox.refuses(sandbox.archive([reg("big", bytes(data))], digests=listing),
                          errors.DigestMismatch)
    assert err.entry == "big"


def test_listed_file_missing_from_archive(sandbox):
    """A file listed in the digest list but absent from the archive fails, naming it."""
    members = _image()
    listing = tarkit.digest_list(members) + f"{xxh3(b'ghost')}  usr/bin/ghost\n".encode()
    err = sandbox.refuses(sandbox.archive(members, digests=listing), errors.DigestMismatch)
    assert "usr/bin/ghost" in err.message or err.entry == "usr/bin/ghost"


def test_unlisted_file(sandbox):
    """A regular file the digest list does not name fails with DigestMismatch, naming it."""
    members = _image()
    listing = tarkit.digest_list(members)
    members.append(reg("usr/bin/smuggled", b"payload"))
    err = sandbox.refuses(sandbox.archive(members, digests=listing), errors.DigestMismatch)
    assert err.entry == "usr/bin/smuggled"


def test_without_digest_list_extracts_unverified(sandbox):
    """An archive without .torcx/digests extracts and reports verified=False."""
    result = sandbox.extract(sandbox.archive(_image()))
    assert not result.verified
    assert (sandbox.dest / "etc/conf").read_bytes() == b"key=value\n"


def test_require_digests_without_list(sandbox):
    """Job(require_digests=True) refuses an archive without a digest list."""
    sandbox.refuses(sandbox.archive(_image()), errors.DigestMismatch, require_digests=True)


def test_require_digests_with_list(sandbox):
    """Job(require_digests=True) accepts an archive whose list matches."""
    assert sandbox.extract(sandbox.archive(_image(), digests=True), require_digests=True).verified


def test_malformed_digest_list(sandbox):
    """A digest list line that is not '<32 hex>  <path>' fails with DigestMismatch."""
    members = _image()
    listing = tarkit.digest_list(members) + b"not-a-digest  etc/other\n"
    sandbox.refuses(sandbox.archive(members, digests=listing), errors.DigestMismatch)


def test_hard_link_does_not_need_its_own_line(sandbox):
    """A hard link to a listed file verifies with only the file listed."""
    members = [reg("f", b"shared"), hardlink("h", "f")]
    assert sandbox.extract(sandbox.archive(members, digests=True)).verified


def test_verify_matching_writes_nothing(sandbox, tmp_path):
    """verify() reads and checks an archive without creating anything."""
    archive = sandbox.archive(_image(), digests=True, compress="zstd")
    before = tarkit.tree_snapshot(tmp_path)
    result = engine.verify(str(archive))
    assert result.verified
    assert result.entries == len(_image()) + 1  # the list is an entry too
    assert tarkit.tree_snapshot(tmp_path) == before


def test_verify_mismatch_raises(sandbox, tmp_path):
    """verify() of an archive with a bad digest raises DigestMismatch and writes nothing."""
    members = _image()
    listing = tarkit.digest_list(members).decode().replace(
        xxh3(b"key=value\n"), "f" * 32)
    archive = sandbox.archive(members, digests=listing)
    before = tarkit.tree_snapshot(tmp_path)
    with pytest.raises(errors.DigestMismatch):
        engine.verify(str(archive))
    assert tarkit.tree_snapshot(tmp_path) == before


def test_verify_checks_the_stream_too(sandbox):
    """verify() of a corrupt zstd stream raises CorruptArchive."""
    archive = sandbox.archive(_image(), digests=True, compress="zstd")
    archive.write_bytes(tarkit.flip_middle(archive.read_bytes()))
    with pytest.raises(errors.CorruptArchive):
        engine.verify(str(archive))


def test_hard_link_listed_too(sandbox):
    """A list that also names a hard link's path (as a tree walk would) verifies."""
    members = [reg("f", b"shared"), hardlink("h", "f")]
    listing = f"{xxh3(b'shared')}  f\n{xxh3(b'shared')}  h\n"
    assert sandbox.extract(sandbox.archive(members, digests=listing)).verified


def test_oversized_digest_list(sandbox):
    """A .torcx/digests declaring 100 MiB (a sparse member, tiny on disk) is refused."""
    member = tarkit.digests_member(f"{xxh3(b'x')}  f\n")
    member.info.pax_headers = {"GNU.sparse.size": str(100 << 20),
                               "GNU.sparse.map": f"0,{len(member.data)}"}
    archive = sandbox.archive([member, reg("f", b"x")])
    err = sandbox.refuses(archive, errors.LimitExceeded)
    assert err.entry == tarkit.DIGESTS_PATH


def test_hard_link_before_a_late_list_does_not_need_its_own_line(sandbox):
    """A hard link extracted before .torcx/digests needs no line, as when the list comes first."""
    members = [reg("f", b"shared"), hardlink("h", "f")]
    members.append(tarkit.digests_member(tarkit.digest_list(members)))
    assert sandbox.extract(sandbox.archive(members)).verified


def test_listed_file_replaced_by_a_symlink(sandbox):
    """A listed file later replaced by a symlink is missing from the image, not verified."""
    members = [reg("a", b"content"), symlink("a", "elsewhere")]
    listing = f"{xxh3(b'content')}  a\n"
    sandbox.refuses(sandbox.archive(members, digests=listing), errors.DigestMismatch)
