# SPDX-License-Identifier: Apache-2.0
"""``apply --root DIR --no-mount`` never writes outside DIR: symlinks inside DIR are
resolved as a chroot would (issue 16 item 6, the apply's part)."""

from __future__ import annotations

import os

import pytest
from apply_images import FakeRoot
from applykit import apply_json, guard_root, torcx


@pytest.fixture
def root(tmp_path):
    guard_root(tmp_path)
    return FakeRoot(tmp_path / "root")


def everything(folder):
    return sorted(os.path.relpath(os.path.join(top, n), folder)
                  for top, dirs, files in os.walk(folder) for n in dirs + files)


def test_absolute_run_symlink_stays_inside_the_root(root, tmp_path):
    """DIR/run -> /elsewhere (absolute): the run dir, units and seal land in
    DIR/elsewhere, nothing in the host's /elsewhere."""
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(str(outside), root.host("/run"))
    root.add_hello()
    root.profile("vendor", [("hello", "1")])
    code, rep = apply_json(root.path)
    assert code == 0, rep
    assert everything(outside) == []
    inside = root.host(str(outside))
    assert os.path.isfile(os.path.join(inside, "metadata/torcx"))
    assert os.path.isfile(os.path.join(inside, "systemd/system/hello.service"))
    assert os.path.islink(os.path.join(inside, "torcx/bin/hello"))
    res = torcx(root.path, "status", "--json")
    assert (res.code, res.json["value"]["state"]) == (0, "applied")


def test_unit_folder_symlinks_climbing_out_stay_inside_the_root(root, tmp_path):
    """DIR/run/systemd -> ../../../../x and DIR/run/metadata -> /m: '..' stops at DIR."""
    outside = tmp_path / "x"
    outside.mkdir()
    os.makedirs(root.host("/run"))
    depth = root.path.count("/")
    os.symlink("../" * (depth + 2) + str(outside).lstrip("/"), root.host("/run/systemd"))
    os.symlink(str(outside), root.host("/run/metadata"))
    root.add_hello()
    root.profile("vendor", [("hello", "1")])
    code, rep = apply_json(root.path)
    assert code == 0, rep
    assert everything(outside) == []
    assert os.path.isfile(root.host(str(outside) + "/system/hello.service"))
    assert os.path.isfile(root.host(str(outside) + "/torcx"))


def test_in_root_resolves_as_a_chroot(tmp_path):
    """Folders are followed inside the root, the last component never."""
    from torcx.paths import in_root

    r = str(tmp_path)
    os.makedirs(f"{r}/real/sub")
    os.symlink("/real", f"{r}/abs")
    os.symlink("../../../../real/sub", f"{r}/real/up")
    os.symlink("/etc/passwd", f"{r}/real/leaf")
    assert in_root(r, "/abs/sub/f") == f"{r}/real/sub/f"
    assert in_root(r, "/real/up/f") == f"{r}/real/sub/f"
    assert in_root(r, "/real/leaf") == f"{r}/real/leaf"
    assert in_root(r, "/../../abs/../x") == f"{r}/x"
    assert in_root("/", "/abs/x") == "/abs/x"
    os.symlink("loop", f"{r}/loop")
    with pytest.raises(OSError):
        in_root(r, "/loop/x")
