# SPDX-License-Identifier: Apache-2.0
"""A batch of jobs: results in job order, a failed job never stops or spoils the others."""

from __future__ import annotations

import errno
import os

import pytest
import tarkit
from tarkit import reg

from torcx import engine, errors


def _good(sandbox, i):
    members = [reg(f"img{i}/file{j}", f"image {i} file {j}\n".encode() * 500) for j in range(20)]
    return sandbox.archive(members, digests=True, compress=("gzip", "zstd", "xz")[i % 3]), members


@pytest.mark.parametrize("threads", [0, 1, 2, 4])
def test_one_failure_the_others_land(sandbox, threads):
    """Of four jobs the hostile one fails alone; the others land complete, in job order."""
    jobs, expected = [], []
    for i in range(4):
        dest = sandbox.parent / f"dest{i}"
        if i == 2:
            archive = sandbox.archive([reg("fine", b"x"), reg("../sentinel/pwned", b"x")])
            expected.append(None)
        else:
            archive, members = _good(sandbox, i)
            expected.append(members)
        jobs.append(engine.Job(str(archive), str(dest)))
    results = engine.extract_many(jobs, threads=threads)
    assert [r.archive for r in results] == [j.archive for j in jobs]
    assert [r.dest for r in results] == [j.dest for j in jobs]
    for job, result, members in zip(jobs, results, expected):
        if members is None:
            assert isinstance(result.error, errors.UnsafeArchive)
            assert not result.ok
            assert not os.path.lexists(job.dest)
            continue
        assert result.ok, result.error
        assert result.verified
        for m in members:
            with open(os.path.join(job.dest, m.info.name), "rb") as f:
                assert f.read() == m.data
    assert sorted(os.listdir(sandbox.parent)) == ["dest0", "dest1", "dest3", "sentinel"]
    assert os.listdir(sandbox.sentinel) == ["secret"]


def test_missing_archive_in_a_batch(sandbox):
    """A job whose archive does not exist fails with ENOENT; the next job still lands."""
    archive, _ = _good(sandbox, 0)
    jobs = [engine.Job(str(sandbox.archives / "missing.tar"), str(sandbox.parent / "d0")),
            engine.Job(str(archive), str(sandbox.parent / "d1"))]
    first, second = engine.extract_many(jobs, threads=2)
    assert isinstance(first.error, errors.ExtractError)
    assert first.error.errno == errno.ENOENT
    assert second.ok
    assert sorted(os.listdir(sandbox.parent)) == ["d1", "sentinel"]


def test_batch_mixes_verify_and_extract(sandbox):
    """A verify-only job (dest None) in a batch writes nothing while its neighbour extracts."""
    a, _ = _good(sandbox, 1)
    b, _ = _good(sandbox, 2)
    results = engine.extract_many([engine.Job(str(a), None),
                                   engine.Job(str(b), str(sandbox.parent / "d"))])
    assert all(r.ok and r.verified for r in results)
    assert sorted(os.listdir(sandbox.parent)) == ["d", "sentinel"]


def test_empty_batch():
    """An empty batch returns no results."""
    assert engine.extract_many([]) == []


def test_many_jobs_more_than_threads(sandbox):
    """Sixteen jobs on two threads all land, each with its own content."""
    archive, members = _good(sandbox, 0)
    jobs = [engine.Job(str(archive), str(sandbox.parent / f"d{i:02}")) for i in range(16)]
    results = engine.extract_many(jobs, threads=2)
    assert all(r.ok for r in results)
    for job in jobs:
        with open(os.path.join(job.dest, members[-1].info.name), "rb") as f:
            assert f.read() == members[-1].data


# One job with spare threads decodes ahead of the writer on its own thread: the
# same streams must give the same trees and errors as the single-threaded path.


def _big_members():
    """About 8 MiB of compressible, non-repeating text: several turns of the decode ring."""
    return [reg(f"big{i}", "".join(f"{i} line {n} {n * n % 99991}\n" for n in range(70_000))
                .encode()) for i in range(6)]


@pytest.mark.parametrize("compress", [None, "gzip", "zstd"])
def test_decode_ahead_extracts_the_same_tree(sandbox, compress):
    """A single job on two threads (decode-ahead ring) extracts several MiB exactly."""
    members = _big_members()
    archive = sandbox.archive(members, digests=True, compress=compress)
    (result,) = engine.extract_many([engine.Job(str(archive), str(sandbox.dest))], threads=2)
    assert result.ok, result.error
    assert result.verified
    assert result.archive_xxh3 == tarkit.xxh3(archive.read_bytes())
    for m in members:
        assert (sandbox.dest / m.info.name).read_bytes() == m.data


@pytest.mark.parametrize("damage", ["corrupt", "truncated"])
def test_decode_ahead_corrupt_gzip_fails_cleanly(sandbox, damage):
    """A damaged gzip on the decode-ahead path fails with CorruptArchive and leaves nothing."""
    archive = sandbox.archive(_big_members(), compress="gzip")
    data = archive.read_bytes()
    if damage == "corrupt":
        archive.write_bytes(tarkit.corrupt_deflate(data))
    else:
        archive.write_bytes(data[:len(data) * 2 // 3])
    (result,) = engine.extract_many([engine.Job(str(archive), str(sandbox.dest))], threads=2)
    assert isinstance(result.error, errors.CorruptArchive)
    sandbox.assert_clean_failure()


def test_decode_ahead_unsafe_entry_fails_cleanly(sandbox):
    """An unsafe entry after MiBs of data stops the decode-ahead job cleanly."""
    members = _big_members() + [reg("../sentinel/pwned", b"x")]
    archive = sandbox.archive(members, compress="gzip")
    (result,) = engine.extract_many([engine.Job(str(archive), str(sandbox.dest))], threads=2)
    assert isinstance(result.error, errors.UnsafeArchive)
    sandbox.assert_clean_failure()


def test_two_jobs_same_destination(sandbox):
    """Two jobs racing for one destination: exactly one lands, the other fails and cleans up."""
    a, members_a = _good(sandbox, 0)
    b, members_b = _good(sandbox, 1)
    results = engine.extract_many([engine.Job(str(a), str(sandbox.dest)),
                                   engine.Job(str(b), str(sandbox.dest))], threads=2)
    assert sorted(r.ok for r in results) == [False, True]
    loser = next(r for r in results if not r.ok)
    assert isinstance(loser.error, errors.ExtractError)
    assert loser.error.errno == errno.EEXIST
    assert sorted(os.listdir(sandbox.parent)) == ["dest", "sentinel"]
    winner = members_a if results[0].ok else members_b
    assert {p.name for p in sandbox.dest.iterdir()} == {".torcx", winner[0].info.name.split("/")[0]}


def test_results_follow_job_order_whatever_the_sizes(sandbox):
    """Jobs of very different sizes (scheduled largest first) report in job order."""
    sizes = [1_000, 3_000_000, 10_000, 300_000]
    jobs = []
    for i, size in enumerate(sizes):
        archive = sandbox.archive([reg("blob", bytes([i]) * size)], compress="zstd")
        jobs.append(engine.Job(str(archive), str(sandbox.parent / f"d{i}")))
    results = engine.extract_many(jobs, threads=2)
    assert [r.bytes for r in results] == sizes
    assert [r.dest for r in results] == [j.dest for j in jobs]
    for i, size in enumerate(sizes):
        assert (sandbox.parent / f"d{i}" / "blob").read_bytes() == bytes([i]) * size


def _unsafe_then_corrupt_gzip(sandbox):
    """gzip of: 3 MiB file, unsafe '../x', 4 MiB file; deflate broken 1 MiB after '../x'."""
    import zlib

    plain = sandbox.archive([reg("big", os.urandom(3 << 20)), reg("../x", b"x"),
                             reg("tail", os.urandom(4 << 20))]).read_bytes()
    cut = plain.index(b"../x") + (1 << 20)
    z = zlib.compressobj(6, zlib.DEFLATED, 31)
    head = z.compress(plain[:cut]) + z.flush(zlib.Z_FULL_FLUSH)
    tail = z.compress(plain[cut:]) + z.flush()
    broken = head + b"\xff" * 64 + tail[64:]
    out = sandbox.archives / "unsafe-then-corrupt.tgz"
    out.write_bytes(broken)
    return out


def test_decode_ahead_reports_the_entry_not_a_later_stream_fault(sandbox):
    """With decode-ahead, the unsafe entry is reported as with one thread, not the corrupt tail."""
    archive = str(_unsafe_then_corrupt_gzip(sandbox))
    kinds = set()
    for threads in (1, 2, 2, 2, 2, 2):
        (result,) = engine.extract_many([engine.Job(archive, str(sandbox.dest))], threads=threads)
        kinds.add((type(result.error).__name__, result.error.entry))
        sandbox.assert_clean_failure()
    assert kinds == {("UnsafeArchive", "../x")}


def test_two_batches_from_two_python_threads(sandbox):
    """Two batches run at once from two Python threads (GIL released) and both land intact."""
    import threading

    prepared = [_good(sandbox, i) for i in range(4)]
    outcome = {}

    def run(tag):
        jobs = [engine.Job(str(a), str(sandbox.parent / f"{tag}{i}"))
                for i, (a, _) in enumerate(prepared)]
        outcome[tag] = engine.extract_many(jobs, threads=2)

    threads = [threading.Thread(target=run, args=(tag,)) for tag in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for tag in ("x", "y"):
        assert all(r.ok and r.verified for r in outcome[tag]), outcome[tag]
        for i, (_, members) in enumerate(prepared):
            for m in members:
                assert (sandbox.parent / f"{tag}{i}" / m.info.name).read_bytes() == m.data
