# SPDX-License-Identifier: Apache-2.0
"""pack and verify options as a new user gets them wrong: exit 2 before any work, and
``-o`` under ``--root`` like every other path."""

from __future__ import annotations

import io
import os

import pytest
from packkit import write

from torcx.cli import main


def run(*argv, environ=None):
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), environ=dict(environ or {}), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def rootfs(tmp_path):
    root = tmp_path / "rootfs"
    write(root / "bin/tool", b"#!/bin/sh\necho tool\n", 0o755)
    write(root / ".torcx/manifest.json",
          b'{"kind": "image-manifest-v0", "value": {"bin": ["/bin/tool"]}}')
    return root


@pytest.mark.parametrize("option, line", [
    (["--threads", "0"], "argument --threads: 0: must be at least 1 "
                         "(see 'torcx image pack --help')"),
    (["--level", "42"], "--level 42: tgz takes 1 to 9"),
    (["--format", "tar", "--level", "3"], "--level: format tar is not compressed"),
    (["--source-date-epoch", "-5"], "argument --source-date-epoch: -5: must be at least 0 "
                                    "(see 'torcx image pack --help')"),
    (["--source-date-epoch", ""], "argument --source-date-epoch: invalid integer value: '' "
                                  "(see 'torcx image pack --help')"),
])
def test_pack_usage_errors_exit_2_before_any_work(rootfs, tmp_path, option, line):
    """Bad pack options exit 2 with one line, and nothing is written (not even the folder)."""
    out_dir = tmp_path / "store"
    code, out, err = run("image", "pack", str(rootfs), "--name", "tool", "--reference", "1",
                         "-o", str(out_dir), *option)
    assert (code, out) == (2, "")
    assert err == f"torcx: error: {line}\n"
    assert not out_dir.exists()


def test_verify_bad_digest_is_a_usage_error_before_the_lookup(tmp_path):
    """verify --digest with a malformed value exits 2 before looking in any store."""
    code, out, err = run("--root", str(tmp_path), "image", "verify", "tool:1",
                         "--digest", "sha512-abc")
    assert (code, out) == (2, "")
    assert err == ("torcx: error: --digest 'sha512-abc': expected xxh3-<32 hex>, <32 hex>, "
                   "sha256-<64 hex> or sha512-<128 hex>\n")


def test_pack_output_is_under_the_root(rootfs, tmp_path):
    """With --root, -o /var/lib/torcx/store writes under the root, where inspect finds it."""
    sysroot = tmp_path / "sysroot"
    sysroot.mkdir()
    code, out, err = run("--root", str(sysroot), "image", "pack", str(rootfs), "--name",
                         "tool", "--reference", "1", "-o", "/var/lib/torcx/store")
    assert code == 0, err
    packed = sysroot / "var/lib/torcx/store/tool:1.torcx.tgz"
    assert out.startswith(f"archive:   {packed}\n")
    code, out, err = run("--root", str(sysroot), "image", "inspect", "tool:1")
    assert code == 0, err
    assert "store:     /var/lib/torcx/store" in out


def test_pack_output_follows_links_inside_the_root(rootfs, tmp_path):
    """An absolute link on the -o path is followed inside the root, as in a chroot."""
    sysroot = tmp_path / "sysroot"
    host = tmp_path / "host"
    host.mkdir()
    (sysroot / "var/lib").mkdir(parents=True)
    os.symlink(str(host), sysroot / "var/lib/torcx")
    code, _, err = run("--root", str(sysroot), "image", "pack", str(rootfs), "--name",
                       "tool", "--reference", "1", "-o", "/var/lib/torcx/store")
    assert code == 0, err
    assert os.listdir(host) == []
    assert (sysroot / str(host).lstrip("/") / "store/tool:1.torcx.tgz").exists()


def test_relative_output_with_root_is_a_usage_error(rootfs, tmp_path):
    """With --root, a relative -o is ambiguous: exit 2, saying what to give instead."""
    code, out, err = run("--root", str(tmp_path), "image", "pack", str(rootfs), "--name",
                         "tool", "--reference", "1", "-o", "store")
    assert (code, out) == (2, "")
    assert err == ("torcx: error: -o store: with --root, -o names a folder of the target "
                   "system: give an absolute path such as /var/lib/torcx/store\n")
