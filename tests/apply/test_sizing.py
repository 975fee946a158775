# SPDX-License-Identifier: Apache-2.0
"""Unpacked-size estimates read from compression framing, on archives made by real tools."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess

import pytest

from torcx.apply import sizing


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    """A 1.5 MB tar of random and repetitive data; returns (folder, tar path)."""
    d = tmp_path_factory.mktemp("sizing")
    (d / "random").write_bytes(os.urandom(500_000))
    (d / "text").write_text("".join(f"line {i}\n" for i in range(100_000)))
    subprocess.run(["tar", "-C", str(d), "-cf", str(d / "a.tar"), "random", "text"], check=True)
    return d, d / "a.tar"


def tar_size(tar):
    return os.path.getsize(tar)


def compress(d, tar, cmd, name):
    out = d / name
    with open(tar, "rb") as inp, open(out, "wb") as f:
        subprocess.run(cmd, stdin=inp, stdout=f, check=True)  # through a pipe, as tar -I does
    return out


def test_plain_tar_is_its_size(tarball):
    """An uncompressed tar needs exactly its own size."""
    _, tar = tarball
    assert sizing.estimate(str(tar)) == sizing.Estimate(tar_size(tar), True, "tar size")


def test_gzip_isize(tarball):
    """A gzip stream's ISIZE trailer gives the exact tar size."""
    d, tar = tarball
    est = sizing.estimate(str(compress(d, tar, ["gzip", "-c"], "a.tgz")))
    assert (est.need, est.exact) == (tar_size(tar), True)


def test_gzip_larger_than_its_tar_is_not_taken_for_a_wrap(tmp_path):
    """A tgz larger than its tar (random content, a long name in the header) needs the
    tar's size, not 4 GiB more."""
    (tmp_path / "random").write_bytes(os.urandom(2_000_000))
    tar = tmp_path / "r.tar"
    subprocess.run(["tar", "-b1", "-C", str(tmp_path), "-cf", str(tar), "random"], check=True)
    tgz = tmp_path / "r.tgz"
    with open(tgz, "wb") as raw, gzip.GzipFile("n" * 4000, "wb", 6, raw, mtime=0) as out:
        out.write(tar.read_bytes())
    assert os.path.getsize(tgz) > tar_size(tar)
    assert sizing.estimate(str(tgz)).need == tar_size(tar)


def test_xz_index(tarball):
    """An xz stream's index gives the exact tar size."""
    d, tar = tarball
    est = sizing.estimate(str(compress(d, tar, ["xz", "-c", "-T2"], "a.tar.xz")))
    assert (est.need, est.exact) == (tar_size(tar), True)


@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd not installed")
def test_zstd_streamed_gives_upper_bound(tarball):
    """A zstd frame without content size (piped) gives a bound at or above the tar size."""
    d, tar = tarball
    est = sizing.estimate(str(compress(d, tar, ["zstd", "-q", "-c"], "a.tar.zst")))
    assert not est.exact
    assert tar_size(tar) <= est.need <= tar_size(tar) + 12 * sizing.ZSTD_BLOCK_MAX


@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd not installed")
def test_zstd_with_content_size_is_exact(tarball):
    """A zstd file compressed from a file records its content size, which is used."""
    d, tar = tarball
    out = d / "b.tar.zst"
    subprocess.run(["zstd", "-q", str(tar), "-o", str(out)], check=True)
    est = sizing.estimate(str(out))
    assert (est.need, est.exact) == (tar_size(tar), True)


def test_unknown_framing_falls_back_to_ratio(tmp_path):
    """Bytes that are neither tar nor a known compression get the tenfold guess."""
    p = tmp_path / "junk"
    p.write_bytes(b"\x00junk" * 100)
    assert sizing.estimate(str(p)) == sizing.Estimate(5000, False, "compressed size x10")


def test_tmpfs_size_has_margin_and_is_page_aligned():
    """The tmpfs limit covers page rounding: 1.5x the need plus 16 MiB, page aligned."""
    size = sizing.tmpfs_size(1_000_001)
    assert size % 4096 == 0
    assert size >= 1_500_001 + (16 << 20)


def test_engine_limits_follow_the_estimate():
    """An image may make need/512 + 4096 inodes and decode its bound plus an eighth and 16 MiB;
    the tmpfs gets the images' inodes plus a margin."""
    exact = sizing.Estimate(10 << 20, True, "gzip ISIZE")
    guess = sizing.Estimate(1 << 20, False, "compressed size x10")
    huge = sizing.Estimate(1 << 40, True, "xz index")
    assert sizing.max_entries(exact) == (10 << 20) // 512 + 4096
    assert sizing.max_entries(huge) == 1_000_000  # never above the engine's own default
    assert sizing.max_decoded(exact) == (10 << 20) + (10 << 20) // 8 + (16 << 20)
    assert sizing.max_decoded(sizing.Estimate(1 << 20, False, "zstd block bound")) == \
        (1 << 20) + (1 << 17) + (16 << 20)
    assert sizing.max_decoded(guess) == 2 * sizing.tmpfs_size(1 << 20) + (16 << 20)
    assert sizing.tmpfs_inodes([exact, guess]) == \
        sizing.max_entries(exact) + sizing.max_entries(guess) + 1024


def _members(parts) -> bytes:
    return b"".join(gzip.compress(p, mtime=0) for p in parts)


def test_multi_member_gzip_is_sized_from_every_member(tmp_path):
    """`cat a.gz b.gz c.gz`: the sum of all members, not the last one's ISIZE."""
    random_part = os.urandom(300_000)
    text = b"".join(b"line %d\n" % i for i in range(200_000))
    parts = [random_part, text, bytes(2 << 20)]  # the last compresses 1000x: ISIZE alone fails
    path = tmp_path / "multi.tgz"
    path.write_bytes(_members(parts))
    est = sizing.estimate(str(path))
    assert est.need == sum(map(len, parts)), est
    assert est.exact and "3 members" in est.method
    assert len(gzip.decompress(path.read_bytes())) == est.need  # what a reader decodes


def test_a_gzip_stored_inside_is_not_a_member(tmp_path):
    """A .gz stored verbatim in a stored deflate block (level 0) is not counted as a member."""
    import zlib
    inner = gzip.compress(os.urandom(200_000), mtime=0)
    payload = b"tar header" + bytes(502) + inner + bytes(4096)
    z = zlib.compressobj(0, zlib.DEFLATED, 31)  # level 0: stored blocks only
    path = tmp_path / "stored.tgz"
    path.write_bytes(z.compress(payload) + z.flush())
    assert b"\x1f\x8b\x08" in path.read_bytes()[20:]
    est = sizing.estimate(str(path))
    assert est.need == len(payload) and est.method == "gzip ISIZE", est


def test_many_member_lookalikes_fall_back_quickly(tmp_path):
    """Thousands of .gz files stored verbatim cap the member search: the last ISIZE is used."""
    import zlib
    tiny = gzip.compress(b"x", mtime=0)
    payload = b"".join(b"pad" + tiny for _ in range(5000))
    z = zlib.compressobj(0, zlib.DEFLATED, 31)
    path = tmp_path / "lookalikes.tgz"
    path.write_bytes(z.compress(payload) + z.flush())
    est = sizing.estimate(str(path))
    assert est.need == len(payload) and est.method == "gzip ISIZE", est


# -- size facts from the unit plan (torcx.apply.unitplan) ---------------------------


def recorded(path, members, need, identity=None):
    """A unit plan entry for ``path`` as an apply records it (or as someone forges it)."""
    from torcx.apply import unitplan

    return {"name": "x", "units": [], "size": {"members": members, "need": need},
            "identity": identity or unitplan.identity(str(path))}


def two_members(tmp_path):
    """A gzip file of two members whose last ISIZE (its second part) undersells it."""
    parts = [bytes(4 << 20), b"tail" * 1000]
    path = tmp_path / "two.tgz"
    path.write_bytes(_members(parts))
    return path, parts


def test_a_fresh_entry_of_one_member_spares_the_scan(tmp_path):
    """An entry recording one member, fresh, sizes the file from its last ISIZE alone: a
    two-member file is then sized as the plan says, not as the scan finds it."""
    path, parts = two_members(tmp_path)
    est = sizing.estimate(str(path), recorded(path, 1, len(parts[1])))
    assert est == sizing.Estimate(len(parts[1]), True,
                                  "gzip ISIZE (one member, by the unit plan)")
    assert est.members == 1
    assert sizing.estimate(str(path)).need == sum(map(len, parts))  # what a scan finds


def test_a_stale_entry_falls_back_to_the_scan(tmp_path):
    """After the archive changed (touched), its entry is stale: the scan sizes it."""
    path, parts = two_members(tmp_path)
    entry = recorded(path, 1, len(parts[1]))
    os.utime(path, ns=(1, 1))
    est = sizing.estimate(str(path), entry)
    assert (est.need, est.method, est.members) == (sum(map(len, parts)),
                                                   "gzip ISIZE of 2 members", 2)


def test_an_honest_entry_gives_what_the_scan_gives(tmp_path):
    """An apply records what its scan found; the next apply's size from it is the same."""
    from torcx.apply import unitplan

    path = tmp_path / "one.tgz"
    path.write_bytes(gzip.compress(os.urandom(100_000) + bytes(1 << 20), mtime=0))
    scanned = sizing.estimate(str(path))
    entry = unitplan.entry(type("A", (), {"name": "x", "host_path": str(path)})(), [],
                           scanned)
    assert entry["size"] == {"members": 1, "need": scanned.need}
    planned = sizing.estimate(str(path), entry)
    assert (planned.need, planned.members) == (scanned.need, 1)
    assert planned.method == "gzip ISIZE (one member, by the unit plan)"


def _forgeries(path, true_need):
    """Entries whoever can write unit-plan.json could make for ``path``."""
    with open(path, "rb") as f:
        f.seek(-4, 2)
        isize = int.from_bytes(f.read(4), "little")
    for members in (1, 2, 3, 0, "1", None):
        for need in (0, 1, isize, isize + 1, true_need, true_need + (1 << 32), 1 << 60,
                     -1, "big", None):
            yield recorded(path, members, need)
    yield {"name": "x", "identity": recorded(path, 1, 0)["identity"], "size": "one"}
    yield {"name": "x", "identity": [0, 0, 0, 0, 0], "size": {"members": 1, "need": 1 << 40}}


def test_no_plan_entry_can_loosen_the_sizing(tmp_path):
    """Whatever an entry says (forged by whoever can write the plan, the archive untouched),
    the need, and with it the decode bound, inode bound, tmpfs size and inodes, is never
    above what the scan gives, on one- and many-member files, a gzip whose last member is
    tiny next to the first (its ISIZE would need lifting), and a stored .gz inside one."""
    import zlib

    files = {}
    files["one"] = gzip.compress(os.urandom(200_000), mtime=0)
    files["two"] = _members([bytes(4 << 20), b"tail" * 1000])
    files["tiny-last"] = _members([os.urandom(300_000), b"x"])  # its last ISIZE: 1
    files["random-first"] = _members([os.urandom(300_000), bytes(100_000)])
    inner = gzip.compress(os.urandom(100_000), mtime=0)
    z = zlib.compressobj(0, zlib.DEFLATED, 31)
    files["stored"] = z.compress(b"hdr" + inner + bytes(1000)) + z.flush()
    for name, data in files.items():
        path = tmp_path / f"{name}.tgz"
        path.write_bytes(data)
        honest = sizing.estimate(str(path))
        for entry in _forgeries(path, honest.need):
            est = sizing.estimate(str(path), entry)
            assert est.need <= honest.need, (name, entry, est, honest)
            assert sizing.max_decoded(est) <= sizing.max_decoded(honest)
            assert sizing.max_entries(est) <= sizing.max_entries(honest)
            assert sizing.tmpfs_size(est.need) <= sizing.tmpfs_size(honest.need)
            assert sizing.tmpfs_inodes([est]) <= sizing.tmpfs_inodes([honest])
