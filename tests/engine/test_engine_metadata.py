# SPDX-License-Identifier: Apache-2.0
"""Metadata the engine restores: modes, special bits, ownership, mtimes, xattrs."""

from __future__ import annotations

import errno
import os
import stat

import pytest
import tarkit
from tarkit import directory, hardlink, reg, symlink


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _user_xattrs_supported(path) -> bool:
    probe = os.path.join(path, ".xattr-probe")
    open(probe, "w").close()
    try:
        os.setxattr(probe, "user.probe", b"1")
        return True
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise
    finally:
        os.unlink(probe)


def test_permission_bits(sandbox):
    """Files and directories get their exact permission bits."""
    members = [directory("private", mode=0o700), reg("private/key", b"k", mode=0o600),
               reg("script", b"#!", mode=0o751), reg("shared", b"s", mode=0o640)]
    sandbox.extract(sandbox.archive(members))
    assert _mode(sandbox.dest / "private") == 0o700
    assert _mode(sandbox.dest / "private/key") == 0o600
    assert _mode(sandbox.dest / "script") == 0o751
    assert _mode(sandbox.dest / "shared") == 0o640


@tarkit.needs_root
def test_special_bits_kept_with_ownership(sandbox):
    """As root (ownership auto), setuid, setgid and sticky bits are kept."""
    members = [reg("suid", b"x", mode=0o4755), reg("sgid", b"x", mode=0o2755),
               directory("tmp", mode=0o1777)]
    sandbox.extract(sandbox.archive(members))
    assert _mode(sandbox.dest / "suid") == 0o4755
    assert _mode(sandbox.dest / "sgid") == 0o2755
    assert _mode(sandbox.dest / "tmp") == 0o1777


def test_special_bits_dropped_without_ownership(sandbox):
    """With ownership=False, setuid/setgid/sticky are dropped and the rest kept."""
    members = [reg("suid", b"x", mode=0o4755), reg("sgid", b"x", mode=0o2750),
               directory("tmp", mode=0o1777)]
    sandbox.extract(sandbox.archive(members), ownership=False)
    assert _mode(sandbox.dest / "suid") == 0o755
    assert _mode(sandbox.dest / "sgid") == 0o750
    assert _mode(sandbox.dest / "tmp") & 0o7000 == 0


@tarkit.needs_root
def test_numeric_ownership_as_root(sandbox):
    """As root, numeric uid/gid of files, directories and symlinks are applied."""
    members = [directory("d", uid=2001, gid=2002), reg("d/f", b"x", uid=1234, gid=5678),
               symlink("d/l", "f", uid=3001, gid=3002),
               reg("d/big", b"x", uid=3_000_000, gid=4_000_000)]  # beyond octal: pax records
    sandbox.extract(sandbox.archive(members))
    for name, ids in (("d", (2001, 2002)), ("d/f", (1234, 5678)), ("d/l", (3001, 3002)),
                      ("d/big", (3_000_000, 4_000_000))):
        st = os.lstat(sandbox.dest / name)
        assert (st.st_uid, st.st_gid) == ids, name


def test_ownership_false_keeps_the_caller_as_owner(sandbox):
    """With ownership=False the files belong to the extracting user."""
    sandbox.extract(sandbox.archive([reg("f", b"x", uid=1234, gid=5678)]), ownership=False)
    st = os.lstat(sandbox.dest / "f")
    assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())


def test_mtimes_of_files_dirs_and_symlinks(sandbox):
    """mtimes of files, directories (after their contents) and symlinks (lstat) are restored."""
    members = [directory("d", mtime=1_000_000_000), reg("d/f", b"x", mtime=1_100_000_000),
               symlink("d/l", "f", mtime=1_200_000_000), directory("d/sub", mtime=1_300_000_000),
               reg("d/sub/g", b"y", mtime=1_400_000_000)]
    sandbox.extract(sandbox.archive(members))
    got = {name: os.lstat(sandbox.dest / name).st_mtime
           for name in ("d", "d/f", "d/l", "d/sub", "d/sub/g")}
    assert got == {"d": 1_000_000_000, "d/f": 1_100_000_000, "d/l": 1_200_000_000,
                   "d/sub": 1_300_000_000, "d/sub/g": 1_400_000_000}


def test_sub_second_mtime(sandbox):
    """A pax mtime with a fraction of a second is kept to the nanosecond."""
    member = reg("f", b"x")
    member.info.mtime = 1_600_000_000.25
    sandbox.extract(sandbox.archive([member]))
    assert os.lstat(sandbox.dest / "f").st_mtime_ns == 1_600_000_000_250_000_000


def test_user_xattrs(sandbox):
    """user.* extended attributes from pax SCHILY.xattr records are set."""
    if not _user_xattrs_supported(sandbox.archives):
        pytest.skip("the test filesystem has no user xattrs")
    value = b"\x00binary\xffvalue"
    sandbox.extract(sandbox.archive([reg("f", b"x", xattrs={"user.torcx.test": value,
                                                           "user.plain": b"text"})]))
    assert os.getxattr(sandbox.dest / "f", "user.torcx.test") == value
    assert os.getxattr(sandbox.dest / "f", "user.plain") == b"text"


@tarkit.needs_root
def test_file_capability_as_root(sandbox):
    """As root, security.capability (setcap cap_net_bind_service=ep) survives extraction."""
    cap = tarkit.CAP_NET_BIND_SERVICE_EP
    sandbox.extract(sandbox.archive([reg("bin/server", b"\x7fELF", mode=0o755,
                                         xattrs={"security.capability": cap})]))
    assert os.getxattr(sandbox.dest / "bin/server", "security.capability") == cap


@tarkit.needs_root
def test_owner_setuid_and_capability_together(sandbox):
    """As root, a file's owner, setuid bit and capability all survive (chown clears neither)."""
    cap = tarkit.CAP_NET_BIND_SERVICE_EP
    sandbox.extract(sandbox.archive([reg("bin/ping", b"\x7fELF", mode=0o4750, uid=0, gid=1234,
                                         xattrs={"security.capability": cap})]))
    st = os.lstat(sandbox.dest / "bin/ping")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 1234, 0o4750)
    assert os.getxattr(sandbox.dest / "bin/ping", "security.capability") == cap


@pytest.mark.skipif(os.geteuid() == 0, reason="checks the unprivileged behaviour")
def test_file_capability_skipped_without_root(sandbox):
    """Without root, security.capability is skipped silently and the file still lands."""
    sandbox.extract(sandbox.archive([reg("bin/server", b"\x7fELF", mode=0o755,
                                         xattrs={"security.capability":
                                                 tarkit.CAP_NET_BIND_SERVICE_EP})]))
    assert (sandbox.dest / "bin/server").read_bytes() == b"\x7fELF"


def test_read_only_directory_with_contents(sandbox):
    """A 0555 directory, nested in another, still receives its files (modes applied last)."""
    members = [directory("ro", mode=0o555), directory("ro/inner", mode=0o555),
               reg("ro/inner/f", b"inside", mode=0o444), reg("ro/g", b"also")]
    sandbox.extract(sandbox.archive(members))
    assert (sandbox.dest / "ro/inner/f").read_bytes() == b"inside"
    assert (sandbox.dest / "ro/g").read_bytes() == b"also"
    assert _mode(sandbox.dest / "ro") == 0o555
    assert _mode(sandbox.dest / "ro/inner") == 0o555


def test_dot_entry_mode_applies_to_dest(sandbox):
    """The './' entry's mode and mtime apply to the destination itself."""
    members = [directory("./", mode=0o750, mtime=1_234_567_890), reg("./f", b"x")]
    sandbox.extract(sandbox.archive(members))
    st = os.stat(sandbox.dest)
    assert stat.S_IMODE(st.st_mode) == 0o750
    assert st.st_mtime == 1_234_567_890


def test_hard_link_keeps_the_file_mode(sandbox):
    """A hard link shows the mode of the file it points to."""
    sandbox.extract(sandbox.archive([reg("f", b"x", mode=0o700), hardlink("h", "f")]))
    assert _mode(sandbox.dest / "h") == 0o700


@pytest.mark.parametrize("uid", [(1 << 32) + 1234, -1])
def test_uid_beyond_32_bits_is_refused(sandbox, uid):
    """A uid that does not fit a Linux uid_t is refused, never truncated (2**32+1234 to 1234)."""
    from torcx import errors

    member = reg("f", b"x")
    member.info.pax_headers = {"uid": str(uid)}
    sandbox.refuses(sandbox.archive([member]), errors.CorruptArchive)
