# SPDX-License-Identifier: Apache-2.0
"""Every image problem is reported with its path before anything is written."""

from __future__ import annotations

import json
import os
import socket

import pytest
from packkit import MANIFEST, write

from torcx.errors import InvalidImage
from torcx.image.check import is_valid_unit_name
from torcx.image.pack import pack_image


def minimal_image(root):
    """A small valid image: one binary, one unit enabled in multi-user.target."""
    write(root / "bin/tool", b"#!/bin/sh\n", 0o755)
    write(root / "lib/tool.service", b"[Service]\n")
    (root / "lib/multi-user.target.wants").mkdir(parents=True)
    os.symlink("../tool.service", root / "lib/multi-user.target.wants/tool.service")
    write(root / "lib/50-tool.network", b"")
    write(root / "lib/tool.conf", b"")
    write(root / "lib/50-tool.rules", b"")
    set_manifest(root, {"bin": ["/bin/tool"],
                        "units": ["/lib/tool.service", "/lib/multi-user.target.wants"],
                        "network": ["/lib/50-tool.network"], "sysusers": ["/lib/tool.conf"],
                        "tmpfiles": ["/lib/tool.conf"], "udev_rules": ["/lib/50-tool.rules"]})
    return root


def set_manifest(root, value, kind="image-manifest-v0"):
    write(root / ".torcx/manifest.json", json.dumps({"kind": kind, "value": value}).encode())


def add_to_manifest(root, key, path):
    doc = json.loads((root / ".torcx/manifest.json").read_text())
    doc["value"].setdefault(key, []).append(path)
    (root / ".torcx/manifest.json").write_text(json.dumps(doc))


def bad_json(root):
    (root / ".torcx/manifest.json").write_text('{"kind": "image-manifest-v0", "value": {')


def wrong_kind(root):
    set_manifest(root, {}, kind="profile-manifest-v0")


def relative_path(root):
    set_manifest(root, {"bin": ["bin/tool"]})


def not_a_string(root):
    set_manifest(root, {"units": [42]})


def missing_file(root):
    add_to_manifest(root, "bin", "/bin/missing")


def parent_symlink_out(root):
    os.symlink("/usr", root / "hostusr")
    add_to_manifest(root, "bin", "/hostusr/bin/env")


def bin_absolute_symlink(root):
    os.symlink("/bin/sh", root / "bin/sh-link")
    add_to_manifest(root, "bin", "/bin/sh-link")


def bin_absolute_symlink_back_into_rootfs(root):
    os.symlink(root / "bin/tool", root / "bin/abs-link")  # inside ROOTFS only on this host
    add_to_manifest(root, "bin", "/bin/abs-link")


def bin_symlink_climbing_out_and_back(root):
    os.symlink("../../rootfs/bin/tool", root / "bin/climb-link")  # leaves unpack/NAME
    add_to_manifest(root, "bin", "/bin/climb-link")


def parent_symlink_back_into_rootfs(root):
    os.symlink(root / "bin", root / "hostbin")
    add_to_manifest(root, "bin", "/hostbin/tool")


def bin_not_executable(root):
    write(root / "bin/data", b"", 0o644)
    add_to_manifest(root, "bin", "/bin/data")


def bin_fifo(root):
    os.mkfifo(root / "bin/pipe")
    add_to_manifest(root, "bin", "/bin/pipe")


def unit_bad_name(root):
    write(root / "lib/tool.txt", b"")
    add_to_manifest(root, "units", "/lib/tool.txt")


def wants_regular_file(root):
    write(root / "lib/multi-user.target.wants/copy.service", b"")


def wants_absolute_link(root):
    os.symlink("/lib/tool.service", root / "lib/multi-user.target.wants/abs.service")


def wants_link_to_non_unit(root):
    os.symlink("../tool.conf", root / "lib/multi-user.target.wants/other.service")


def unit_plain_folder(root):
    (root / "lib/stuff").mkdir()
    add_to_manifest(root, "units", "/lib/stuff")


def network_suffix(root):
    write(root / "lib/tool.net", b"")
    add_to_manifest(root, "network", "/lib/tool.net")


def sysusers_suffix(root):
    write(root / "lib/tool.users", b"")
    add_to_manifest(root, "sysusers", "/lib/tool.users")


def tmpfiles_suffix(root):
    write(root / "lib/tool.tmp", b"")
    add_to_manifest(root, "tmpfiles", "/lib/tool.tmp")


def tmpfiles_folder(root):
    write(root / "lib/tmpfiles.d/tool.conf", b"")
    add_to_manifest(root, "tmpfiles", "/lib/tmpfiles.d")


def udev_suffix(root):
    write(root / "lib/tool.udev", b"")
    add_to_manifest(root, "udev_rules", "/lib/tool.udev")


def socket_in_tree(root):
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(root / "lib/control.sock"))
    s.close()


def digests_folder(root):
    (root / ".torcx/digests").mkdir()


CASES = [
    # (mutation, text in the problem's path, text in its message)
    (bad_json, ".torcx/manifest.json", "$: invalid JSON"),
    (wrong_kind, ".torcx/manifest.json", "$.kind: unknown kind"),
    (relative_path, ".torcx/manifest.json", "$.value.bin[0]"),
    (not_a_string, ".torcx/manifest.json", "$.value.units[0]"),
    (missing_file, "$.value.bin[1] /bin/missing", "no such file in the image"),
    (parent_symlink_out, "/hostusr/bin/env", "leads outside the image"),
    (bin_absolute_symlink, "/bin/sh-link", "symlink leading outside the image"),
    (bin_absolute_symlink_back_into_rootfs, "/bin/abs-link", "symlink leading outside"),
    (bin_symlink_climbing_out_and_back, "/bin/climb-link", "symlink leading outside"),
    (parent_symlink_back_into_rootfs, "/hostbin/tool", "leads outside the image"),
    (bin_not_executable, "/bin/data", "not executable"),
    (bin_fifo, "/bin/pipe", "not a regular file or a folder"),
    (unit_bad_name, "/lib/tool.txt", "not a valid systemd unit file name"),
    (wants_regular_file, "multi-user.target.wants/copy.service", "must be a symlink"),
    (wants_absolute_link, "multi-user.target.wants/abs.service", "must be relative"),
    (wants_link_to_non_unit, "multi-user.target.wants/other.service", "is not a unit file"),
    (unit_plain_folder, "/lib/stuff", "not UNIT.wants, UNIT.requires or UNIT.d"),
    (network_suffix, "/lib/tool.net", ".network or .netdev or .link"),
    (sysusers_suffix, "/lib/tool.users", "must end in .conf"),
    (tmpfiles_suffix, "/lib/tool.tmp", "must end in .conf"),
    (tmpfiles_folder, "/lib/tmpfiles.d", "is a folder; it would land in /run/tmpfiles.d/"),
    (udev_suffix, "/lib/tool.udev", "must end in .rules"),
    (socket_in_tree, "lib/control.sock", "is a socket"),
    (digests_folder, ".torcx/digests", "is a folder"),
]


@pytest.mark.parametrize("mutate,where,what", CASES, ids=[c[0].__name__ for c in CASES])
def test_problem_is_reported_with_its_path_and_nothing_written(tmp_path, mutate, where, what):
    """Each manifest or tree fault gives one problem naming its path; the store stays empty."""
    root = minimal_image(tmp_path / "rootfs")
    mutate(root)
    store = tmp_path / "store"
    with pytest.raises(InvalidImage) as info:
        pack_image(str(root), "tool", "1", str(store), fmt="tgz")
    problems = [str(p) for p in info.value.problems]
    assert len(problems) == 1, problems
    assert where in info.value.problems[0].path, problems
    assert what in info.value.problems[0].message, problems
    assert not store.exists()


def test_valid_minimal_image_packs(tmp_path):
    """The base image of the problem cases is itself valid (so each case tests one fault)."""
    root = minimal_image(tmp_path / "rootfs")
    result = pack_image(str(root), "tool", "1", str(tmp_path / "store"), fmt="tgz")
    assert os.path.isfile(result.path)


def test_every_problem_is_listed_at_once(tmp_path):
    """Several faults give several problems in one run, not just the first."""
    root = minimal_image(tmp_path / "rootfs")
    for mutate in (missing_file, bin_not_executable, udev_suffix, socket_in_tree):
        mutate(root)
    with pytest.raises(InvalidImage) as info:
        pack_image(str(root), "tool", "1", str(tmp_path / "store"))
    assert len(info.value.problems) == 4
    text = str(info.value)
    for part in ("/bin/missing", "/bin/data", "/lib/tool.udev", "lib/control.sock"):
        assert part in text


def test_image_without_manifest_is_valid(tmp_path):
    """No .torcx/manifest.json: the image packs (it propagates nothing)."""
    root = tmp_path / "rootfs"
    write(root / "data.txt", b"x")
    result = pack_image(str(root), "data", "1", str(tmp_path / "store"), fmt="tar")
    assert result.files == 1


@pytest.mark.parametrize("name,reference", [("a/b", "1"), ("a:b", "1"), ("", "1"),
                                            ("ok", "x/y"), ("ok", ""), ("..", "1"),
                                            ("a\tb", "1"), ("ok", "1\x1b[0m")])
def test_bad_name_or_reference_is_refused(tmp_path, name, reference):
    """Names and references that cannot form NAME:REF.torcx.EXT are refused, nothing written."""
    root = minimal_image(tmp_path / "rootfs")
    with pytest.raises(InvalidImage):
        pack_image(str(root), name, reference, str(tmp_path / "store"))
    assert not (tmp_path / "store").exists()


def test_the_full_example_manifest_is_valid(tmp_path):
    """The manifest of the round-trip image (every asset kind, folders too) passes."""
    from packkit import build_rootfs

    root = build_rootfs(tmp_path / "rootfs", big_bytes=1024, small_files=1)
    assert json.loads((root / ".torcx/manifest.json").read_text()) == MANIFEST
    pack_image(str(root), "tool", "1", str(tmp_path / "store"), fmt="tar")


@pytest.mark.parametrize("name,valid", [
    ("foo.service", True), ("foo@.service", True), ("foo@bar.socket", True),
    ("multi-user.target", True), ("a:b_c\\x2d.mount", True), ("foo", False),
    ("foo.conf", False), (".service", False), ("foo bar.service", False),
    ("x" * 248 + ".service", False)])
def test_unit_names_follow_systemd(name, valid):
    """Unit file names are checked like systemd's unit_name_is_valid."""
    assert is_valid_unit_name(name) is valid


def test_output_folder_inside_the_image_is_refused(tmp_path):
    """A store inside ROOTFS would be packed into itself: refused, nothing written."""
    root = minimal_image(tmp_path / "rootfs")
    with pytest.raises(InvalidImage, match="output folder is inside"):
        pack_image(str(root), "tool", "1", str(root / "store"))
    assert not (root / "store").exists()


def test_file_changed_between_the_passes_fails(tmp_path):
    """A file that changes after its digest was taken fails the pack, naming the file."""
    from torcx.errors import PackError
    from torcx.image.formats import FORMATS
    from torcx.image.tarwriter import write_tar
    from torcx.image.tree import archive_order, compute_digests, scan_tree

    root = minimal_image(tmp_path / "rootfs")
    nodes, problems = scan_tree(str(root))
    assert problems == []
    digests, _ = compute_digests(str(root), nodes)
    (root / "lib/tool.service").write_bytes(b"[Service]\n")  # same size...
    (root / "lib/tool.service").write_bytes(b"[Sorvice]\n")  # ...other content
    with open(tmp_path / "out.tar", "wb") as out, pytest.raises(PackError) as info:
        write_tar(out.fileno(), str(root), archive_order(nodes), digests, FORMATS["tar"],
                  level=None, threads=1, epoch=None, keep_owner=False)
    assert "lib/tool.service: changed while packing" in str(info.value)


def test_file_changed_before_the_file_system_image_fails(tmp_path):
    """squashfs: a file rewritten after its digest was taken fails the pack, naming the file."""
    from torcx.errors import PackError
    from torcx.image.formats import FORMATS
    from torcx.image.fsimage import write_fs_image
    from torcx.image.tree import compute_digests, scan_tree

    root = minimal_image(tmp_path / "rootfs")
    nodes, _ = scan_tree(str(root))
    digests, _ = compute_digests(str(root), nodes)
    (root / "lib/tool.service").write_bytes(b"[Sorvice]\n")  # same size, other content
    with pytest.raises(PackError) as info:
        write_fs_image(str(tmp_path / "out.squashfs"), str(root), nodes, digests,
                       FORMATS["squashfs"], name="tool", reference="1", level=None, threads=1,
                       epoch=0, keep_owner=False)
    assert "lib/tool.service: changed while packing" in str(info.value)


def test_torcx_folder_as_symlink_is_refused_and_nothing_lands_where_it_points(tmp_path):
    """A .torcx symlink (the pack writes .torcx/digests) is refused; its target stays empty."""
    root = tmp_path / "rootfs"
    write(root / "data.txt", b"x")
    victim = tmp_path / "victim"
    victim.mkdir()
    os.symlink(victim, root / ".torcx")
    with pytest.raises(InvalidImage) as info:
        pack_image(str(root), "data", "1", str(tmp_path / "store"), fmt="squashfs")
    assert [p.path for p in info.value.problems] == [".torcx"], info.value.problems
    assert "must be a folder" in info.value.problems[0].message
    assert os.listdir(victim) == []
    assert not (tmp_path / "store").exists()


def test_output_folder_anywhere_is_inside_a_root_of_slash(tmp_path):
    """Packing '/' refuses any output folder (all are inside it) before scanning anything."""
    with pytest.raises(InvalidImage, match="output folder is inside"):
        pack_image("/", "tool", "1", str(tmp_path / "store"))
    assert not (tmp_path / "store").exists()
