# SPDX-License-Identifier: Apache-2.0
"""The digest of the compressed archive bytes: always XXH3-128, SHA-256 on demand, pinnable."""

from __future__ import annotations

import hashlib

import pytest
import tarkit
from tarkit import reg

from torcx import engine, errors


def _archive(sandbox):
    return sandbox.archive([reg("a", b"alpha" * 1000), reg("b", b"beta")], digests=True,
                           compress="gzip")


def test_archive_xxh3_reported(sandbox):
    """Result.archive_xxh3 is the XXH3-128 of the archive file's bytes."""
    archive = _archive(sandbox)
    result = sandbox.extract(archive)
    assert result.archive_xxh3 == tarkit.xxh3(archive.read_bytes())
    assert result.archive_bytes == archive.stat().st_size
    assert result.archive_sha256 == ""


def test_matching_xxh3_pin(sandbox):
    """A job pinned to the archive's XXH3-128 extracts."""
    archive = _archive(sandbox)
    sandbox.extract(archive, pin_xxh3=tarkit.xxh3(archive.read_bytes()))
    assert (sandbox.dest / "b").read_bytes() == b"beta"


def test_uppercase_xxh3_pin(sandbox):
    """A pin written in uppercase hex is accepted."""
    archive = _archive(sandbox)
    assert sandbox.extract(archive, pin_xxh3=tarkit.xxh3(archive.read_bytes()).upper()).ok


def test_mismatching_xxh3_pin(sandbox):
    """A job pinned to another XXH3-128 fails with DigestMismatch and leaves nothing."""
    archive = _archive(sandbox)
    wrong = "0" * 32
    err = sandbox.refuses(archive, errors.DigestMismatch, pin_xxh3=wrong)
    assert wrong in err.message


def test_pin_catches_appended_bytes(sandbox):
    """Bytes appended after the end of the stream change the pinned digest and fail the job."""
    archive = _archive(sandbox)
    pin = tarkit.xxh3(archive.read_bytes())
    with open(archive, "ab") as f:
        f.write(b"\0" * 4096)
    sandbox.refuses(archive, errors.DigestMismatch, pin_xxh3=pin)


def test_sha256_on_request(sandbox):
    """Job(sha256=True) reports the SHA-256 of the archive bytes."""
    archive = _archive(sandbox)
    result = sandbox.extract(archive, sha256=True)
    assert result.archive_sha256 == hashlib.sha256(archive.read_bytes()).hexdigest()


def test_matching_sha256_pin(sandbox):
    """A job pinned to the archive's SHA-256 extracts."""
    archive = _archive(sandbox)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert sandbox.extract(archive, pin_sha256=digest).archive_sha256 == digest


def test_mismatching_sha256_pin(sandbox):
    """A job pinned to another SHA-256 fails with DigestMismatch."""
    sandbox.refuses(_archive(sandbox), errors.DigestMismatch, pin_sha256="ab" * 32)


def test_pin_checked_by_verify(sandbox):
    """verify() also checks the pin."""
    archive = _archive(sandbox)
    with pytest.raises(errors.DigestMismatch):
        engine.verify(str(archive), pin_xxh3="1" * 32)
    assert engine.verify(str(archive), pin_xxh3=tarkit.xxh3(archive.read_bytes())).verified


def test_sha512_pin_of_a_multi_block_archive(sandbox):
    """SHA-512 (libcrypto) of an archive larger than the read block is reported and pinnable."""
    archive = sandbox.archive([reg("big", bytes(range(256)) * 12_000), reg("b", b"beta")],
                              digests=True, compress="gzip")
    digest = hashlib.sha512(archive.read_bytes()).hexdigest()
    result = sandbox.extract(archive, pin_sha512=digest, sha256=True)
    assert result.archive_sha512 == digest
    assert result.archive_sha256 == hashlib.sha256(archive.read_bytes()).hexdigest()


def test_mismatching_sha512_pin(sandbox):
    """A job pinned to another SHA-512 fails with DigestMismatch naming both digests."""
    err = sandbox.refuses(_archive(sandbox), errors.DigestMismatch, pin_sha512="cd" * 64)
    assert "expected sha512 " + "cd" * 64 in err.message


def test_digest_files_in_parallel(tmp_path):
    """digest_files gives each whole file's SHA-512, and an error for what cannot be read."""
    files = []
    for i, size in enumerate((0, 1, (3 << 20) + 17)):
        f = tmp_path / f"f{i}"
        f.write_bytes(bytes([i]) * size)
        files.append(f)
    results = engine.digest_files([str(f) for f in files] + [str(tmp_path / "no"),
                                                             str(tmp_path)])
    for f, r in zip(files, results):
        assert r.error is None and r.bytes == f.stat().st_size
        assert r.sha512 == hashlib.sha512(f.read_bytes()).hexdigest()
    assert results[3].error.errno == 2 and results[4].error.errno == 22
    (both,) = engine.digest_files([str(files[2])], algos=["both"])
    assert both.xxh3 == tarkit.xxh3(files[2].read_bytes()) and both.sha512 == results[2].sha512
    (fast,) = engine.digest_files([str(files[2])], algos=["xxh3"])
    assert (fast.xxh3, fast.sha512) == (both.xxh3, "")
    (s256,) = engine.digest_files([str(files[2])], algos=["sha256"])
    assert s256.sha256 == hashlib.sha256(files[2].read_bytes()).hexdigest()
