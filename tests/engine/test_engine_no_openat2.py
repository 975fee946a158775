# SPDX-License-Identifier: Apache-2.0
"""The engine's fallback walk, used where openat2 does not exist (kernels before 5.6).

Each test runs the engine in a forked child whose seccomp filter makes openat2
fail with ENOSYS, then checks the result and the disk from the parent.
"""

from __future__ import annotations

import ctypes
import errno
import os

import tarkit
from tarkit import directory, hardlink, reg, symlink, without_openat2

from torcx import engine, errors


def _extract(archive: str, dest: str):
    try:
        engine.extract(archive, dest)
    except errors.ExtractError as e:
        return type(e).__name__, e.entry, e.message
    return "ok", "", ""


def _openat2_errno() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    how = (ctypes.c_uint64 * 3)(0, 0, 0)
    r = libc.syscall(437, -100, b".", ctypes.byref(how), ctypes.c_size_t(24))
    return ctypes.get_errno() if r < 0 else 0


def test_filter_hides_openat2():
    """In the child, openat2 fails with ENOSYS (so the tests below take the fallback)."""
    assert without_openat2(_openat2_errno) == errno.ENOSYS


def test_fallback_extracts_a_tree(sandbox):
    """Nested folders, a read-only folder, links and an implicit parent extract without openat2."""
    members = [directory("usr"), directory("usr/lib", mode=0o555), reg("usr/lib/a", b"a"),
               hardlink("usr/lib/b", "usr/lib/a"), symlink("usr/l", "lib/a"),
               reg("opt/deep/x/y", b"deep")]
    archive = sandbox.archive(members, digests=True)
    assert without_openat2(_extract, str(archive), str(sandbox.dest)) == ("ok", "", "")
    assert (sandbox.dest / "usr/lib/b").read_bytes() == b"a"
    assert (sandbox.dest / "opt/deep/x/y").read_bytes() == b"deep"
    assert os.stat(sandbox.dest / "usr/lib").st_mode & 0o777 == 0o555
    sandbox.assert_outside_untouched()


def test_fallback_refuses_file_through_symlink_to_dotdot(sandbox):
    """Without openat2, a file through a symlink to '..' is refused and nothing leaks."""
    archive = sandbox.archive([symlink("up", ".."), reg("up/sentinel/pwned", b"x")])
    kind, entry, _ = without_openat2(_extract, str(archive), str(sandbox.dest))
    assert (kind, entry) == ("UnsafeArchive", "up/sentinel/pwned")
    sandbox.assert_clean_failure()


def test_fallback_refuses_deep_path_through_symlink(sandbox):
    """Without openat2, a symlink in the middle of a deeper path is refused."""
    members = [directory("a"), symlink("a/b", "../../sentinel"), reg("a/b/c/pwned", b"x")]
    kind, _, _ = without_openat2(_extract, str(sandbox.archive(members)), str(sandbox.dest))
    assert kind == "UnsafeArchive"
    sandbox.assert_clean_failure()


def test_fallback_refuses_symlink_inside_dest(sandbox):
    """Without openat2, a path through a symlink to a folder inside dest is refused."""
    members = [directory("real"), symlink("alias", "real"), reg("alias/f", b"x")]
    kind, _, _ = without_openat2(_extract, str(sandbox.archive(members)), str(sandbox.dest))
    assert kind == "UnsafeArchive"
    sandbox.assert_clean_failure()


def test_fallback_refuses_hard_link_through_symlink(sandbox):
    """Without openat2, a hard link whose target goes through a symlink is refused."""
    members = [symlink("s", "../sentinel"), hardlink("h", "s/secret")]
    kind, _, _ = without_openat2(_extract, str(sandbox.archive(members)), str(sandbox.dest))
    assert kind == "UnsafeArchive"
    sandbox.assert_clean_failure()
    assert os.stat(sandbox.sentinel / "secret").st_nlink == 1


def test_fallback_symlink_replaced_by_directory(sandbox):
    """Without openat2, a directory replacing a symlink is real and the file lands inside."""
    members = [symlink("d", "../sentinel"), directory("d"), reg("d/pwned", b"inside")]
    archive = sandbox.archive(members)
    assert without_openat2(_extract, str(archive), str(sandbox.dest))[0] == "ok"
    assert not os.path.islink(sandbox.dest / "d")
    assert (sandbox.dest / "d/pwned").read_bytes() == b"inside"
    sandbox.assert_outside_untouched()


def test_fallback_directory_replaced_by_symlink(sandbox):
    """Without openat2, an empty directory replaced by a symlink extracts as the symlink."""
    members = [directory("d", mode=0o700), symlink("d", "elsewhere")]
    archive = sandbox.archive(members)
    assert without_openat2(_extract, str(archive), str(sandbox.dest))[0] == "ok"
    assert os.readlink(sandbox.dest / "d") == "elsewhere"


def test_fallback_dot_entry_mode(sandbox):
    """Without openat2, folder modes (deepest first, then dest) are still applied."""
    members = [directory("./", mode=0o750), directory("a", mode=0o700), reg("a/f", b"x")]
    archive = sandbox.archive(members)
    assert without_openat2(_extract, str(archive), str(sandbox.dest))[0] == "ok"
    assert os.stat(sandbox.dest).st_mode & 0o777 == 0o750
    assert os.stat(sandbox.dest / "a").st_mode & 0o777 == 0o700
    assert tarkit.tree_snapshot(sandbox.dest)["a/f"][0] == "file"


def test_fallback_when_seccomp_answers_eperm(sandbox):
    """Where a container's seccomp profile answers openat2 with EPERM, the fallback walk runs."""
    members = [directory("usr/lib", mode=0o555), reg("usr/lib/a", b"a"),
               hardlink("usr/lib/b", "usr/lib/a")]
    archive = sandbox.archive(members, digests=True)
    assert without_openat2(_extract, str(archive), str(sandbox.dest),
                           err=errno.EPERM) == ("ok", "", "")
    assert (sandbox.dest / "usr/lib/b").read_bytes() == b"a"
    assert os.stat(sandbox.dest / "usr/lib").st_mode & 0o777 == 0o555


def _extract_without_proc(archive: str, dest: str):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(b"/proc", 2) != 0:  # MNT_DETACH, in this child's namespace only
        raise OSError(ctypes.get_errno(), "umount /proc")
    return without_openat2(_extract, archive, dest)


@tarkit.needs_root
def test_fallback_fixups_need_no_proc(sandbox):
    """Without openat2 and without /proc (early boot, a chroot), folder modes are still applied."""
    members = [directory("usr", mode=0o751), directory("usr/lib", mode=0o555),
               reg("usr/lib/a", b"a")]
    archive = sandbox.archive(members)
    assert tarkit.in_mount_namespace(_extract_without_proc, str(archive),
                                     str(sandbox.dest)) == ("ok", "", "")
    assert os.stat(sandbox.dest / "usr").st_mode & 0o777 == 0o751
    assert os.stat(sandbox.dest / "usr/lib").st_mode & 0o777 == 0o555
