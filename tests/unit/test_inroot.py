# SPDX-License-Identifier: Apache-2.0
"""Paths under a root resolved as a chroot would: links and '..' never leave the root."""

from __future__ import annotations

import errno
import os

import pytest

from torcx.inroot import InRoot
from torcx.paths import resolve_in_root as resolve


def test_absolute_link_restarts_at_the_root(tmp_path):
    """/a -> /b/c inside the root means ROOT/b/c, never the host's /b/c."""
    os.symlink("/b/c", tmp_path / "a")
    assert resolve(str(tmp_path), "/a/x") == "/b/c/x"


def test_dotdot_stops_at_the_root(tmp_path):
    """'..' past the root stays at the root, in paths and in link targets."""
    (tmp_path / "d").mkdir()
    os.symlink("../../../../etc", tmp_path / "d/up")
    assert resolve(str(tmp_path), "/../../x") == "/x"
    assert resolve(str(tmp_path), "/d/up/passwd") == "/etc/passwd"


def test_link_loop_is_eloop(tmp_path):
    """A link loop fails with ELOOP instead of spinning."""
    os.symlink("/l2", tmp_path / "l1")
    os.symlink("/l1", tmp_path / "l2")
    with pytest.raises(OSError) as e:
        resolve(str(tmp_path), "/l1/x")
    assert e.value.errno == errno.ELOOP


def test_write_replaces_a_final_link_instead_of_following_it(tmp_path):
    """Writing over a link replaces the link; its target outside the root is untouched."""
    outside = tmp_path / "outside"
    outside.write_text("host\n")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(str(outside), root / "f")
    with InRoot(str(root)) as fs:
        fs.write("/f", b"mine\n")
        assert fs.read("/f") == b"mine\n"
    assert outside.read_text() == "host\n" and not (root / "f").is_symlink()
