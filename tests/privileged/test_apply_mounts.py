# SPDX-License-Identifier: Apache-2.0
"""The apply with real mounts, each test in its own mount namespace: tmpfs, seal, loop images."""

from __future__ import annotations

import errno
import glob
import os
import stat
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "integration"))
from apply_images import FakeRoot  # noqa: E402
from applykit import guard_root, in_mount_namespace, needs_root, torcx  # noqa: E402

pytestmark = [pytest.mark.privileged, needs_root]


@pytest.fixture
def root(tmp_path):
    guard_root(tmp_path)
    return FakeRoot(tmp_path / "root")


def mounts_under(path):
    """(mount point, fs type, options) of every mount at or below ``path``."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4]
            sep = fields.index("-")
            if point == path or point.startswith(path + "/"):
                found.append((point, fields[sep + 1], fields[5]))
    return found


def loops_backed_by(prefix):
    """Loop devices whose backing file lies under ``prefix``."""
    found = []
    for backing in glob.glob("/sys/block/loop*/loop/backing_file"):
        with open(backing) as f:
            if f.read().strip().startswith(prefix):
                found.append(backing)
    return found


def _apply_and_probe(root_path):
    """In the namespace: apply with mounts, then look at what the host would see."""
    res = torcx(root_path, "apply", "--json")
    rep = res.json["value"]
    unpack = os.path.join(root_path, "run/torcx/unpack")
    try:
        with open(os.path.join(unpack, "new-file"), "w") as f:
            f.write("x")
        write_errno = 0
    except OSError as e:
        write_errno = e.errno
    probe = {
        "code": res.code,
        "report": rep,
        "mounts": mounts_under(unpack),
        "unpack_mode": stat.S_IMODE(os.stat(unpack).st_mode),
        "write_errno": write_errno,
        "seal": os.path.isfile(os.path.join(root_path, "run/metadata/torcx")),
    }
    bin_link = os.path.join(root_path, "run/torcx/bin/hello")
    if os.path.islink(bin_link):
        target = os.readlink(bin_link)
        with open(os.path.join(root_path, target.lstrip("/"))) as f:
            probe["bin_text"] = f.read()
    return probe


def test_tmpfs_is_sealed_read_only(root):
    """The unpack dir is a 0755 tmpfs sized from the plan, read-only after the seal (EROFS)."""
    root.add_hello()
    root.profile("vendor", [("hello", "1")])
    probe = in_mount_namespace(_apply_and_probe, root.path)
    assert probe["code"] == 0, probe["report"]
    ((point, fstype, options),) = probe["mounts"]
    assert fstype == "tmpfs" and options.split(",")[0] == "ro"
    assert probe["unpack_mode"] == 0o755
    assert probe["write_errno"] == errno.EROFS
    assert probe["seal"] and probe["report"]["tmpfs"]["read_only"] is True
    assert probe["report"]["tmpfs"]["mounted"] is True
    assert probe["bin_text"] == "#!/bin/sh\necho hello\n"


@pytest.mark.parametrize("fmt", ["squashfs", "erofs"])
def test_mountable_image_is_loop_mounted(root, fmt):
    """A squashfs or erofs image is loop-mounted read-only at unpack/NAME and propagated."""
    tool = {"squashfs": "mksquashfs", "erofs": "mkfs.erofs"}[fmt]
    if subprocess.run(["which", tool], capture_output=True).returncode != 0:
        pytest.skip(f"{tool} not installed")
    root.add_hello(fmt=fmt)
    root.profile("vendor", [("hello", "1")])
    probe = in_mount_namespace(_apply_and_probe, root.path)
    assert probe["code"] == 0, probe["report"]
    (img,) = probe["report"]["images"]
    assert (img["status"], img["unpack"]["method"], img["unpack"]["fstype"]) == (
        "ok", "loop-mount", fmt)
    kinds = {point.rsplit("/", 1)[-1]: fstype for point, fstype, _ in probe["mounts"]}
    assert kinds == {"unpack": "tmpfs", "hello": fmt}
    assert probe["bin_text"] == "#!/bin/sh\necho hello\n"
    assert not loops_backed_by(root.path)  # autoclear: gone with the namespace


@pytest.mark.parametrize("fmt", ["squashfs", "erofs"])
def test_mounted_image_is_verified_against_its_digests(root, fmt):
    """A squashfs or erofs image with a digest list has every file checked once mounted."""
    root.add_image("sq", "1", fmt, files={"a": "alpha", "d/b": "beta"}, digests=True)
    root.profile("vendor", [("sq", "1")])
    probe = in_mount_namespace(_apply_and_probe, root.path)
    assert probe["code"] == 0, probe["report"]
    (img,) = probe["report"]["images"]
    assert (img["unpack"]["verified"], img["unpack"]["files"]) == (True, 2)


def test_tampered_mounted_image_fails_alone(root):
    """A squashfs whose file no longer matches its digest list is unmounted and fails
    alone, naming the file; the other image applies."""
    root.add_hello()
    root.add_image("sq", "1", "squashfs", files={"a": "alpha"}, tamper={"a": "ALPHA"})
    root.profile("vendor", [("hello", "1"), ("sq", "1")])
    probe = in_mount_namespace(_apply_and_probe, root.path)
    assert probe["code"] == 1
    by_name = {i["name"]: i for i in probe["report"]["images"]}
    assert by_name["hello"]["status"] == "ok"
    assert by_name["sq"]["status"] == "failed" and "a" in by_name["sq"]["error"]
    assert [p.rsplit("/", 1)[-1] for p, _, _ in probe["mounts"]] == ["unpack"]


def test_nothing_left_behind_after_namespace(root):
    """After an apply with a tmpfs and a loop mount, the host has no mount or loop device left."""
    root.add_hello()
    root.add_image("sq", "1", "squashfs", files={"f": "x"})
    root.profile("vendor", [("hello", "1"), ("sq", "1")])
    probe = in_mount_namespace(_apply_and_probe, root.path)
    assert len(probe["mounts"]) == 2
    assert mounts_under(root.path) == []
    assert loops_backed_by(root.path) == []


def test_image_larger_than_memory_fails_alone(root):
    """An image needing more than MemAvailable fails at plan, naming why; the others apply."""
    with open("/proc/meminfo") as f:
        avail = next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("MemAvailable:"))
    huge = os.path.join(root.store, "huge:1.torcx.tar")
    with open(huge, "wb") as f:  # a sparse "tar" as large as twice the free memory
        f.write(b"\0" * 257 + b"ustar\x0000")
        f.truncate(avail * 2)
    root.add_hello()
    root.profile("vendor", [("huge", "1"), ("hello", "1")])
    probe = in_mount_namespace(_apply_and_probe, root.path)
    assert probe["code"] == 1
    huge_report, hello_report = probe["report"]["images"]
    assert (huge_report["status"], huge_report["stage"]) == ("failed", "plan")
    assert "MemAvailable" in huge_report["error"]
    assert hello_report["status"] == "ok"
    assert probe["bin_text"] == "#!/bin/sh\necho hello\n"
    assert probe["seal"] and probe["report"]["tmpfs"]["size_bytes"] < avail


def test_image_outgrowing_its_estimate_fails_cleanly(root):
    """An image outgrowing the tmpfs (lz4 records no size) fails alone with ENOSPC, no debris."""
    if subprocess.run(["which", "lz4"], capture_output=True).returncode != 0:
        pytest.skip("lz4 not installed")
    src = os.path.join(root.work, "bomb")
    os.makedirs(src)
    with open(os.path.join(src, "big"), "wb") as f:
        f.write(b"torcx-fill " * ((64 << 20) // 11))  # 64 MiB; lz4 shrinks it ~250x
    tar = os.path.join(root.work, "bomb.tar")
    subprocess.run(["tar", "-C", src, "-cf", tar, "big"], check=True)
    subprocess.run(["lz4", "-q", "-f", tar, os.path.join(root.store, "bomb:1.torcx.tar")],
                   check=True)
    root.add_hello()
    root.profile("vendor", [("bomb", "1"), ("hello", "1")])

    def attempt(path):
        res = torcx(path, "apply", "--json")
        unpack = os.path.join(path, "run/torcx/unpack")
        return res.code, res.json["value"], sorted(os.listdir(unpack))

    code, rep, left = in_mount_namespace(attempt, root.path)
    assert code == 1
    bomb, hello = rep["images"]
    assert (bomb["status"], bomb["stage"]) == ("failed", "unpack")
    assert "space" in bomb["error"].lower()
    assert hello["status"] == "ok"
    assert left == ["hello"]


def test_corrupt_squashfs_fails_alone(root):
    """A squashfs that cannot be mounted fails alone; no mount or loop device is left."""
    archive = root.add_image("sq", "1", "squashfs", files={"f": "x"})
    with open(archive, "r+b") as f:
        f.write(b"\0" * 4096)  # wipe the superblock
    root.add_hello()
    root.profile("vendor", [("sq", "1"), ("hello", "1")])
    probe = in_mount_namespace(_apply_and_probe, root.path)
    assert probe["code"] == 1
    sq, hello = probe["report"]["images"]
    assert (sq["status"], sq["stage"]) == ("failed", "unpack")
    assert "sq:1.torcx.squashfs" in sq["error"]
    assert hello["status"] == "ok"
    assert [p.rsplit("/", 1)[-1] for p, _, _ in probe["mounts"]] == ["unpack"]
    assert loops_backed_by(root.path) == []


def _unpack_inodes(root_path):
    res = torcx(root_path, "apply", "--json")
    return res.code, os.statvfs(os.path.join(root_path, "run/torcx/unpack")).f_files


def test_tmpfs_inodes_are_sized_from_the_plan(root):
    """The unpack tmpfs has nr_inodes from the plan: each tarball's max_entries plus a margin."""
    from torcx.apply import sizing

    archive = root.add_hello()
    root.profile("vendor", [("hello", "1")])
    code, inodes = in_mount_namespace(_unpack_inodes, root.path)
    assert code == 0
    assert inodes == sizing.tmpfs_inodes([sizing.estimate(archive)])
    assert inodes < 100_000  # not the kernel's default of half of RAM's pages


def _unpack_super_options(root_path):
    res = torcx(root_path, "apply", "--json")
    unpack = os.path.join(root_path, "run/torcx/unpack")
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == unpack:
                return res.code, fields[fields.index("-") + 3].split(",")
    return res.code, None


def _kernel_has_shmem_huge_pages() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/shmem_enabled") as f:
            return "[deny]" not in f.read()
    except OSError:
        return False


def test_tmpfs_gives_huge_pages_within_file_sizes(root):
    """The unpack tmpfs is huge=within_size where the kernel has huge pages (large binaries
    cost less to write); without them it mounts as before."""
    root.add_hello()
    root.profile("vendor", [("hello", "1")])
    code, options = in_mount_namespace(_unpack_super_options, root.path)
    assert code == 0 and options is not None
    assert ("huge=within_size" in options) == _kernel_has_shmem_huge_pages(), options
