# SPDX-License-Identifier: Apache-2.0
"""Archive lookup: file names, format precedence, store order, symlinks, bad stores."""

from __future__ import annotations

import io
import os
import pathlib
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torcx import log as tlog
from torcx import paths as tpaths
from torcx.errors import NotFound
from torcx.store import FORMATS, Store, archive_filename, parse_archive_filename

VENDOR = "/usr/share/torcx/store"
USER = "/var/lib/torcx/store"


def put(root, store, filename, data=b"x"):
    path = root / store.lstrip("/") / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def make_store(root, env=None, log=tlog.NULL):
    return Store(tpaths.load(str(root), environ=env or {}), log=log)


@pytest.mark.parametrize("filename, expected", [
    ("docker:20.10.torcx.tgz", ("docker", "20.10", "tgz")),
    ("docker:20.10.torcx.tar.zst", ("docker", "20.10", "tar.zst")),
    ("docker:20.10.torcx.tar.xz", ("docker", "20.10", "tar.xz")),
    ("docker:20.10.torcx.tar", ("docker", "20.10", "tar")),
    ("docker:20.10.torcx.squashfs", ("docker", "20.10", "squashfs")),
    ("docker:20.10.torcx.erofs", ("docker", "20.10", "erofs")),
    ("docker.torcx.tgz", ("docker", "com.coreos.cl", "tgz")),
    ("a:b:c.torcx.tgz", ("a", "b:c", "tgz")),
    ("docker:20.10.tgz", None),
    ("docker:20.10.torcx.zip", None),
    (":1.torcx.tgz", None),
    ("docker:.torcx.tgz", None),
    ("README", None),
])
def test_parse_archive_filename(filename, expected):
    """NAME:REF.torcx.EXT with six formats; no ':' means reference com.coreos.cl."""
    assert parse_archive_filename(filename) == expected


def test_archive_filename_round_trip():
    """archive_filename builds what parse_archive_filename reads."""
    assert archive_filename("docker", "1", "tar.zst") == "docker:1.torcx.tar.zst"
    assert parse_archive_filename(archive_filename("a", "b", "erofs")) == ("a", "b", "erofs")
    with pytest.raises(ValueError):
        archive_filename("a", "b", "zip")


@pytest.mark.parametrize("present, winner", [
    (["tgz", "squashfs"], "squashfs"),
    (["tar.xz", "erofs"], "erofs"),
    (["tgz", "tar.xz", "tar.zst"], "tar.zst"),
    (["tgz", "tar.xz", "tar.zst", "tar"], "tar"),
    (["tgz", "tar.xz"], "tgz"),
    (["squashfs", "erofs"], "squashfs"),
])
def test_format_precedence_in_one_store(tmp_path, present, winner):
    """Mountable beats tarball; among tarballs tar > tar.zst > tgz > tar.xz."""
    for fmt in present:
        put(tmp_path, VENDOR, f"docker:1.torcx.{fmt}")
    found = make_store(tmp_path).lookup("docker", "1")
    assert found.format == winner
    assert found.path == f"{VENDOR}/docker:1.torcx.{winner}"


def test_format_beats_store_order(tmp_path):
    """A better format in a later store wins over a worse one in an earlier store."""
    put(tmp_path, VENDOR, "docker:1.torcx.tgz")
    put(tmp_path, USER, "docker:1.torcx.tar.zst")
    found = make_store(tmp_path).lookup("docker", "1")
    assert (found.format, found.store) == ("tar.zst", USER)
    assert [a.format for a in make_store(tmp_path).candidates("docker", "1")] == [
        "tar.zst", "tgz"]


def test_same_format_first_store_wins(tmp_path):
    """For the same format the earlier store in search order wins."""
    put(tmp_path, USER, "docker:1.torcx.tgz")
    put(tmp_path, VENDOR, "docker:1.torcx.tgz")
    put(tmp_path, "/srv/rt", "docker:1.torcx.tgz")
    store = make_store(tmp_path, {"TORCX_STOREPATH": "/srv/rt"})
    assert store.lookup("docker", "1").store == VENDOR
    assert [a.store for a in store.candidates("docker", "1")] == [VENDOR, USER, "/srv/rt"]


def test_mountables_across_stores_follow_store_order(tmp_path):
    """erofs in an earlier store beats squashfs in a later one (both mountable)."""
    put(tmp_path, VENDOR, "docker:1.torcx.erofs")
    put(tmp_path, USER, "docker:1.torcx.squashfs")
    found = make_store(tmp_path).lookup("docker", "1")
    assert (found.format, found.store, found.mountable) == ("erofs", VENDOR, True)


def test_versioned_store_before_plain(tmp_path):
    """BASEDIR/store/VERSION_ID is searched before BASEDIR/store."""
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "usr/lib/os-release").write_text('VERSION_ID="7"\n')
    put(tmp_path, USER, "docker:1.torcx.tgz")
    put(tmp_path, USER + "/7", "docker:1.torcx.tgz")
    assert make_store(tmp_path).lookup("docker", "1").store == USER + "/7"


def test_vendor_symlink_to_default_reference(tmp_path):
    """A vendor symlink docker:com.coreos.cl -> docker:20.10 serves both references."""
    target = put(tmp_path, VENDOR, "docker:20.10.torcx.tgz", b"12345")
    os.symlink("docker:20.10.torcx.tgz", target.parent / "docker:com.coreos.cl.torcx.tgz")
    store = make_store(tmp_path)
    found = store.lookup("docker", "com.coreos.cl")
    assert found.path == f"{VENDOR}/docker:com.coreos.cl.torcx.tgz"
    assert found.host_path == str(target)
    assert found.size == 5
    assert [(a.name, a.reference) for a in store.archives()] == [
        ("docker", "20.10"), ("docker", "com.coreos.cl")]


def test_absolute_symlink_resolves_inside_the_root(tmp_path):
    """An absolute link target is looked up under --root, not on the host."""
    real = put(tmp_path, "/opt/images", "real.bin")
    store_dir = tmp_path / VENDOR.lstrip("/")
    store_dir.mkdir(parents=True)
    os.symlink("/opt/images/real.bin", store_dir / "docker:1.torcx.tgz")
    assert make_store(tmp_path).lookup("docker", "1").host_path == str(real)


def test_relative_symlink_cannot_climb_above_the_root(tmp_path):
    """A relative link's '..' stops at --root, as in a chroot: a host file is never used."""
    root = tmp_path / "root"
    put(tmp_path, "/", "outside.bin")  # next to the root, reachable by one '..' too many
    real = put(root, "/", "outside.bin", b"inside")
    store_dir = root / VENDOR.lstrip("/")
    store_dir.mkdir(parents=True)
    os.symlink("../../../../../outside.bin", store_dir / "docker:1.torcx.tgz")
    assert make_store(root).lookup("docker", "1").host_path == str(real)


def test_symlinks_only_to_regular_files(tmp_path):
    """Links to folders, dangling links and link loops are ignored; folders too."""
    store_dir = tmp_path / VENDOR.lstrip("/")
    (store_dir / "adir").mkdir(parents=True)
    os.symlink("adir", store_dir / "a:1.torcx.tgz")
    os.symlink("nowhere", store_dir / "b:1.torcx.tgz")
    os.symlink("c:1.torcx.tgz", store_dir / "c:1.torcx.tgz")
    (store_dir / "d:1.torcx.tgz").mkdir()
    os.mkfifo(store_dir / "e:1.torcx.tar")
    store = make_store(tmp_path)
    assert store.archives() == []


def test_missing_image_names_the_stores(tmp_path):
    """NotFound lists the stores that were searched."""
    with pytest.raises(NotFound) as e:
        make_store(tmp_path).lookup("docker", "1")
    assert "docker:1" in str(e.value) and VENDOR in str(e.value) and USER in str(e.value)


def test_store_that_is_a_file_is_skipped_with_a_log_line(tmp_path):
    """A store path that is not a folder is skipped and logged, not an error."""
    put(tmp_path, "/srv", "notadir")
    put(tmp_path, USER, "docker:1.torcx.tgz")
    stream = io.StringIO()
    store = make_store(tmp_path, {"TORCX_STOREPATH": "/srv/notadir"},
                       tlog.Logger(tlog.DEBUG, stream=stream))
    assert store.lookup("docker", "1").store == USER
    assert "/srv/notadir" in stream.getvalue()
    assert ("/srv/notadir", "Not a directory") in store.skipped


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders whatever their mode")
def test_unreadable_store_is_skipped_with_a_warning(tmp_path):
    """A store without read permission is skipped with a warning line."""
    locked = tmp_path / VENDOR.lstrip("/")
    put(tmp_path, VENDOR, "docker:1.torcx.tgz")
    put(tmp_path, USER, "docker:1.torcx.tgz")
    os.chmod(locked, 0)
    try:
        stream = io.StringIO()
        store = make_store(tmp_path, log=tlog.Logger(tlog.INFO, stream=stream))
        assert store.lookup("docker", "1").store == USER
        assert f"store {VENDOR} cannot be read" in stream.getvalue()
    finally:
        os.chmod(locked, 0o755)


def test_archives_filter_by_name_and_sorted(tmp_path):
    """archives(NAME) lists the winners of that name only, sorted by reference."""
    for f in ("b:2.torcx.tgz", "a:2.torcx.tgz", "a:1.torcx.tgz", "a:1.torcx.squashfs"):
        put(tmp_path, VENDOR, f)
    store = make_store(tmp_path)
    assert [(a.name, a.reference, a.format) for a in store.archives("a")] == [
        ("a", "1", "squashfs"), ("a", "2", "tgz")]
    assert len(store.all_archives()) == 4


STORES = [VENDOR, "/usr/share/oem/torcx/store", USER, "/srv/runtime"]
TORCX_FORMATS = [f for f in FORMATS if f != "sysext"]  # sysext images: test_store_sysext.py
placements = st.sets(st.tuples(st.integers(0, len(STORES) - 1), st.sampled_from(TORCX_FORMATS)),
                     min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(placements)
def test_winner_follows_the_precedence_rules(placed):
    """Mountable if any; else the fastest tarball; then the earliest store with that format."""
    with tempfile.TemporaryDirectory() as d:
        root = pathlib.Path(d)
        for index, fmt in placed:
            put(root, STORES[index], f"docker:1.torcx.{fmt}")
        found = make_store(root, {"TORCX_STOREPATH": STORES[3]}).lookup("docker", "1")
    formats = {fmt for _, fmt in placed}
    mountable = formats & {"squashfs", "erofs"}
    if mountable:
        assert found.mountable
        first = min(i for i, fmt in placed if fmt in mountable)
        assert found.store == STORES[first]
    else:
        fastest = next(f for f in ("tar", "tar.zst", "tgz", "tar.xz") if f in formats)
        assert found.format == fastest
        assert found.store == STORES[min(i for i, fmt in placed if fmt == fastest)]
