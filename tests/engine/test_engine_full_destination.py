# SPDX-License-Identifier: Apache-2.0
"""Privileged: extraction into a full or read-only tmpfs, and the mount helpers' round trip.

Each test runs in a forked child inside its own mount namespace, so the mounts
vanish with it. Results cross back as plain tuples.
"""

from __future__ import annotations

import errno
import os

import pytest
from tarkit import in_mount_namespace, needs_root, reg

from torcx import engine, errors

pytestmark = [needs_root, pytest.mark.privileged]


def _extract_into_tmpfs(mountpoint, archive, size, readonly=False):
    engine.mount_tmpfs(mountpoint, size, 0o755)
    if readonly:
        engine.remount_ro(mountpoint)
    try:
        engine.extract(archive, os.path.join(mountpoint, "dest"))
    except errors.ExtractError as e:
        return type(e).__name__, e.errno, e.message, sorted(os.listdir(mountpoint))
    return "ok", 0, "", sorted(os.listdir(mountpoint))


def test_full_tmpfs_fails_cleanly(sandbox):
    """An archive larger than a 1 MiB tmpfs fails with ENOSPC and leaves the tmpfs empty."""
    archive = sandbox.archive([reg(f"f{i}", os.urandom(256 << 10)) for i in range(8)],
                              compress="zstd")
    kind, err_no, message, left = in_mount_namespace(
        _extract_into_tmpfs, str(sandbox.parent), str(archive), 1 << 20)
    assert kind == "ExtractError", message
    assert err_no == errno.ENOSPC
    assert message.strip()
    assert left == []


def _extract_decoding_ahead(mountpoint, archive, size):
    engine.mount_tmpfs(mountpoint, size, 0o755)
    (result,) = engine.extract_many([engine.Job(archive, os.path.join(mountpoint, "dest"))],
                                    threads=2)
    err = result.error
    return type(err).__name__, err.errno if err else 0, sorted(os.listdir(mountpoint))


def test_full_tmpfs_while_decoding_ahead(sandbox):
    """A gzip job decoding ahead on its own thread also fails cleanly with ENOSPC."""
    members = [reg(f"f{i}", os.urandom(64 << 10) * 4) for i in range(8)]
    archive = sandbox.archive(members, compress="gzip")
    kind, err_no, left = in_mount_namespace(
        _extract_decoding_ahead, str(sandbox.parent), str(archive), 1 << 20)
    assert (kind, err_no, left) == ("ExtractError", errno.ENOSPC, [])


def test_read_only_tmpfs_fails_cleanly(sandbox):
    """Extracting into a read-only tmpfs fails with EROFS and creates nothing."""
    archive = sandbox.archive([reg("f", b"x")])
    kind, err_no, _, left = in_mount_namespace(
        _extract_into_tmpfs, str(sandbox.parent), str(archive), 1 << 20, True)
    assert (kind, err_no, left) == ("ExtractError", errno.EROFS, [])


def test_small_archive_fits_the_tmpfs(sandbox):
    """An archive that fits extracts into the tmpfs (the failure above is about space)."""
    archive = sandbox.archive([reg("f", os.urandom(64 << 10))], digests=True)
    kind, _, message, left = in_mount_namespace(
        _extract_into_tmpfs, str(sandbox.parent), str(archive), 1 << 20)
    assert kind == "ok", message
    assert left == ["dest"]


def _mount_round_trip(target):
    engine.mount_tmpfs(target, 1 << 20, 0o750)
    mounted = os.path.ismount(target)
    mode = os.stat(target).st_mode & 0o7777
    with open(os.path.join(target, "before"), "wb") as f:
        f.write(b"writable")
    engine.remount_ro(target)
    try:
        open(os.path.join(target, "after"), "wb").close()
        write_errno = 0
    except OSError as e:
        write_errno = e.errno
    with open(os.path.join(target, "before"), "rb") as f:
        kept = f.read()
    engine.umount(target)
    return mounted, mode, write_errno, kept, os.path.ismount(target), os.listdir(target)


def test_mount_tmpfs_remount_ro_round_trip(tmp_path):
    """mount_tmpfs gives a writable tmpfs of the asked mode; after remount_ro writes fail EROFS."""
    target = tmp_path / "mnt"
    target.mkdir()
    mounted, mode, write_errno, kept, still_mounted, listing = in_mount_namespace(
        _mount_round_trip, str(target))
    assert mounted and mode == 0o750
    assert write_errno == errno.EROFS
    assert kept == b"writable"
    assert not still_mounted and listing == []


def test_mount_error_names_the_target(tmp_path):
    """Mounting on a missing folder raises MountError naming it."""
    missing = str(tmp_path / "missing")

    def attempt():
        try:
            engine.mount_tmpfs(missing, 1 << 20)
        except errors.MountError as e:
            return e.errno, str(e)
        return 0, ""

    err_no, message = in_mount_namespace(attempt)
    assert err_no == errno.ENOENT
    assert missing in message


def _remount_keeps_flags(target):
    import subprocess

    subprocess.run(["mount", "-t", "tmpfs", "-o", "nosuid,noexec,size=1m", "tmpfs", target],
                   check=True)
    engine.remount_ro(target)
    st = os.statvfs(target)
    return bool(st.f_flag & os.ST_RDONLY), bool(st.f_flag & os.ST_NOSUID), \
        bool(st.f_flag & os.ST_NOEXEC)


def test_remount_ro_keeps_nosuid_and_noexec(tmp_path):
    """remount_ro makes a nosuid,noexec mount read-only without dropping nosuid or noexec."""
    target = tmp_path / "mnt"
    target.mkdir()
    assert in_mount_namespace(_remount_keeps_flags, str(target)) == (True, True, True)


def _loop_mount_fifo(image, target):
    try:
        engine.loop_mount(image, target, "squashfs")
    except errors.MountError as e:
        return e.errno
    return 0


def test_loop_mount_of_a_fifo_fails_at_once(tmp_path):
    """loop_mount of a FIFO (no writer) fails with EINVAL instead of hanging in open()."""
    import subprocess
    import sys

    image = tmp_path / "image.sqfs"
    os.mkfifo(image)
    target = tmp_path / "mnt"
    target.mkdir()
    code = ("import sys; sys.path[:0] = sys.argv[3:]\n"
            "import test_engine_full_destination as t, tarkit\n"
            "print(tarkit.in_mount_namespace(t._loop_mount_fifo, sys.argv[1], sys.argv[2]))")
    here = os.path.dirname(__file__)
    # The timeout only guards against the hang this test is about.
    out = subprocess.run([sys.executable, "-c", code, str(image), str(target), here,
                          os.path.dirname(here)], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == str(errno.EINVAL), out.stderr
