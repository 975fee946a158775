# SPDX-License-Identifier: Apache-2.0
"""The torcx image pack|inspect|verify command lines, through torcx.cli."""

from __future__ import annotations

import io
import json
import os

import libarchive
import pytest
from packkit import EPOCH, NEW, write

from torcx.cli import main


def run(*argv, environ=None):
    out, err = io.StringIO(), io.StringIO()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    env.update(environ or {})
    code = main(list(argv), environ=env, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def rootfs(tmp_path):
    root = tmp_path / "rootfs"
    write(root / "bin/tool", b"#!/bin/sh\necho tool\n", 0o755, mtime=NEW)
    write(root / ".torcx/manifest.json",
          b'{"kind": "image-manifest-v0", "value": {"bin": ["/bin/tool"]}}')
    return root


def test_pack_prints_path_format_sizes_and_digests(rootfs, tmp_path):
    """pack prints the archive path, format, entries, sizes, XXH3-128 and sha512."""
    store = tmp_path / "store"
    code, out, err = run("image", "pack", str(rootfs), "--name", "tool", "--reference", "1",
                         "-o", str(store), "--format", "tar.zst", "--level", "5",
                         "--threads", "2")
    assert code == 0, err
    path = store / "tool:1.torcx.tar.zst"
    assert f"archive:   {path}" in out
    assert "format:    tar.zst" in out
    for key in ("entries:", "unpacked:", "packed:", "xxh3-128:", "sha512:    sha512-"):
        assert key in out
    assert sorted(os.listdir(store)) == ["tool:1.torcx.tar.zst"]  # no temporary left


def test_pack_json_has_the_same_fields(rootfs, tmp_path):
    """pack --json prints one torcx-image-pack-v0 document."""
    code, out, err = run("image", "pack", str(rootfs), "--name", "tool", "--reference", "1",
                         "-o", str(tmp_path / "s"), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["kind"] == "torcx-image-pack-v0"
    value = doc["value"]
    assert value["format"] == "tgz" and value["path"].endswith("tool:1.torcx.tgz")
    assert value["packed_bytes"] == os.path.getsize(value["path"])
    assert value["sha512"].startswith("sha512-") and len(value["xxh3"]) == 32


def test_existing_archive_is_kept_without_overwrite(rootfs, tmp_path):
    """A second pack to the same NAME:REF fails and leaves the first archive untouched."""
    store = tmp_path / "store"
    args = ["image", "pack", str(rootfs), "--name", "tool", "--reference", "1", "-o", str(store)]
    assert run(*args)[0] == 0
    before = (store / "tool:1.torcx.tgz").read_bytes()
    write(rootfs / "bin/extra", b"new\n")
    code, _, err = run(*args)
    assert code == 1
    assert "exists; pass --overwrite" in err
    assert (store / "tool:1.torcx.tgz").read_bytes() == before
    code, _, err = run(*args, "--overwrite")
    assert code == 0, err
    assert (store / "tool:1.torcx.tgz").read_bytes() != before
    assert sorted(os.listdir(store)) == ["tool:1.torcx.tgz"]


def test_problems_are_listed_one_per_line(rootfs, tmp_path):
    """An invalid image gives one stderr line per problem, exit 1, and no store."""
    write(rootfs / ".torcx/manifest.json",
          b'{"kind": "image-manifest-v0", "value": {"bin": ["/bin/nope", "/bin/gone"]}}')
    code, out, err = run("image", "pack", str(rootfs), "--name", "tool", "--reference", "1",
                         "-o", str(tmp_path / "store"))
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert any("/bin/nope: no such file" in line for line in lines)
    assert any("/bin/gone: no such file" in line for line in lines)
    assert "2 problem(s); nothing written" in lines[-1]
    assert not (tmp_path / "store").exists()


def test_source_date_epoch_from_the_environment_clamps_mtimes(rootfs, tmp_path):
    """SOURCE_DATE_EPOCH applies when --source-date-epoch is not given."""
    code, _, err = run("image", "pack", str(rootfs), "--name", "tool", "--reference", "1",
                       "-o", str(tmp_path), "--format", "tar",
                       environ={"SOURCE_DATE_EPOCH": str(EPOCH)})
    assert code == 0, err
    with libarchive.file_reader(str(tmp_path / "tool:1.torcx.tar")) as archive:
        mtimes = {e.pathname: e.mtime for e in archive}
    assert mtimes["bin/tool"] == EPOCH


def test_bad_level_is_refused(rootfs, tmp_path):
    """A compression level outside the format's range is an error naming the range."""
    code, _, err = run("image", "pack", str(rootfs), "--name", "tool", "--reference", "1",
                       "-o", str(tmp_path), "--level", "42")
    assert code == 2 and "tgz takes 1 to 9" in err


def test_inspect_and_verify_by_name_from_a_store(rootfs, tmp_path):
    """NAME:REF is looked up in the stores under --root; inspect says which store answered."""
    sysroot = tmp_path / "sysroot"
    store = sysroot / "var/lib/torcx/store"
    assert run("image", "pack", str(rootfs), "--name", "tool", "--reference", "1",
               "-o", str(store))[0] == 0
    code, out, err = run("--root", str(sysroot), "image", "inspect", "tool:1")
    assert code == 0, err
    assert "store:     /var/lib/torcx/store" in out and "bin: /bin/tool" in out
    code, out, err = run("image", "inspect", str(store / "tool:1.torcx.tgz"), "--json")
    assert code == 0, err
    assert json.loads(out)["value"]["manifest"]["bin"] == ["/bin/tool"]
    code, out, err = run("--root", str(sysroot), "image", "verify", "tool:1")
    assert code == 0, err
    assert out.startswith("OK ") and "2 files match" in out


def test_verify_failure_exits_1_naming_the_file(rootfs, tmp_path):
    """verify of a tampered archive prints FAILED with the file and exits 1."""
    write(rootfs / "share/data.txt", b"DATA" * 1000)
    assert run("image", "pack", str(rootfs), "--name", "tool", "--reference", "1",
               "-o", str(tmp_path), "--format", "tar")[0] == 0
    path = tmp_path / "tool:1.torcx.tar"
    data = bytearray(path.read_bytes())
    data[data.find(b"DATA" * 1000) + 2001] ^= 0xFF
    path.write_bytes(bytes(data))
    code, out, err = run("image", "verify", str(path))
    assert code == 1
    assert out.startswith("FAILED ") and "share/data.txt" in out


def test_unknown_archive_is_not_found(tmp_path):
    """An argument that is neither a file nor NAME:REF in a store is an error."""
    code, _, err = run("image", "verify", str(tmp_path / "missing.tgz"))
    assert code == 1 and "missing.tgz" in err


def test_missing_rootfs_is_named_once(tmp_path):
    """pack of a ROOTFS that does not exist says so in a line naming it once."""
    missing = str(tmp_path / "nope")
    code, out, err = run("image", "pack", missing, "--name", "tool", "--reference", "1",
                         "-o", str(tmp_path / "store"))
    assert code == 1 and out == ""
    assert f"{missing}: no such folder\n" in err
    assert err.count(missing) == 2  # the problem line and the summary line
