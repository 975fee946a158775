# SPDX-License-Identifier: Apache-2.0
"""`torcx image list|clear-versioned` under --root, JSON output checked field by field."""

from __future__ import annotations

import os

from clikit import OEM_STORE, USER_STORE, VENDOR_STORE, os_release, put, torcx


def entries(r):
    doc = r.json()
    assert doc["kind"] == "torcx-image-list-v0"
    for item in doc["value"]:
        assert set(item) == {"name", "reference", "filepath"}
    return [(e["name"], e["reference"], e["filepath"]) for e in doc["value"]]


def test_list_empty(tmp_path):
    """No stores at all: an empty list, exit 0."""
    r = torcx(tmp_path, "image", "list")
    assert r.status == 0, r
    assert r.json() == {"kind": "torcx-image-list-v0", "value": []}


def test_list_every_store_and_format(tmp_path):
    """Winners of every name:reference, sorted, with their target-system paths."""
    os_release(tmp_path, "3510")
    put(tmp_path, f"{VENDOR_STORE}/docker:20.torcx.tgz")
    os.symlink("docker:20.torcx.tgz", tmp_path / VENDOR_STORE.lstrip("/") /
               "docker:com.coreos.cl.torcx.tgz")
    put(tmp_path, f"{OEM_STORE}/3510/agent:1.torcx.squashfs")
    put(tmp_path, f"{USER_STORE}/3510/kubelet:1.29.torcx.tar.zst")
    put(tmp_path, f"{USER_STORE}/kubelet:1.28.torcx.tar.xz")
    put(tmp_path, f"{USER_STORE}/kubelet:1.29.torcx.tgz")  # shadowed by tar.zst
    put(tmp_path, "/srv/extra/tool.torcx.erofs")
    put(tmp_path, f"{USER_STORE}/notes.txt")
    r = torcx(tmp_path, "image", "list", env={"TORCX_STOREPATH": "/srv/extra"})
    assert r.status == 0, r
    assert entries(r) == [
        ("agent", "1", f"{OEM_STORE}/3510/agent:1.torcx.squashfs"),
        ("docker", "20", f"{VENDOR_STORE}/docker:20.torcx.tgz"),
        ("docker", "com.coreos.cl", f"{VENDOR_STORE}/docker:com.coreos.cl.torcx.tgz"),
        ("kubelet", "1.28", f"{USER_STORE}/kubelet:1.28.torcx.tar.xz"),
        ("kubelet", "1.29", f"{USER_STORE}/3510/kubelet:1.29.torcx.tar.zst"),
        ("tool", "com.coreos.cl", "/srv/extra/tool.torcx.erofs"),
    ]


def test_list_one_name(tmp_path):
    """NAME restricts the list to that image's references."""
    put(tmp_path, f"{VENDOR_STORE}/docker:20.torcx.tgz")
    put(tmp_path, f"{VENDOR_STORE}/docker:19.torcx.tgz")
    put(tmp_path, f"{VENDOR_STORE}/kubelet:1.torcx.tgz")
    r = torcx(tmp_path, "image", "list", "docker")
    assert [(n, ref) for n, ref, _ in entries(r)] == [("docker", "19"), ("docker", "20")]


def test_list_for_another_os_version(tmp_path):
    """-n OSVER lists that version's stores and leaves out the vendor store."""
    os_release(tmp_path, "1")
    put(tmp_path, f"{VENDOR_STORE}/docker:20.torcx.tgz")
    put(tmp_path, f"{USER_STORE}/1/a:1.torcx.tgz")
    put(tmp_path, f"{USER_STORE}/2/b:1.torcx.tgz")
    r = torcx(tmp_path, "image", "list", "-n", "2")
    assert entries(r) == [("b", "1", f"{USER_STORE}/2/b:1.torcx.tgz")]
    r = torcx(tmp_path, "image", "list")
    assert [n for n, _, _ in entries(r)] == ["a", "docker"]


def test_list_with_config_store_paths(tmp_path):
    """store_paths from the config file are searched."""
    put(tmp_path, "/etc/torcx/config.json",
        '{"kind": "torcx-config-v0", "value": {"store_paths": ["/opt/s"]}}')
    put(tmp_path, "/opt/s/x:1.torcx.tar")
    assert entries(torcx(tmp_path, "image", "list")) == [("x", "1", "/opt/s/x:1.torcx.tar")]


def test_list_with_broken_config_fails(tmp_path):
    """A broken config file is one error line naming the file and JSON path; exit 1."""
    put(tmp_path, "/etc/torcx/config.json", '{"kind": "torcx-config-v0", "value": []}')
    r = torcx(tmp_path, "image", "list")
    assert r.status == 1
    assert r.out == ""
    assert r.err == (f"torcx: error: {tmp_path}/etc/torcx/config.json: $.value: "
                     "expected object, got array\n")


def test_list_with_relative_storepath_fails(tmp_path):
    """A relative TORCX_STOREPATH entry is a configuration error, exit 1."""
    r = torcx(tmp_path, "image", "list", env={"TORCX_STOREPATH": "rel/store"})
    assert r.status == 1
    assert "TORCX_STOREPATH" in r.err and "absolute" in r.err


# -- clear-versioned ------------------------------------------------------------------------

def versioned_tree(root):
    put(root, f"{USER_STORE}/plain:1.torcx.tgz")
    put(root, f"{USER_STORE}/1/docker:1.torcx.tgz")
    put(root, f"{USER_STORE}/1/kubelet:1.torcx.tgz")
    put(root, f"{USER_STORE}/2/docker:2.torcx.tgz")
    put(root, f"{USER_STORE}/2/docker.torcx.squashfs")
    put(root, f"{USER_STORE}/2/docker.torcx.squashfs.sha512")
    put(root, f"{USER_STORE}/2/kubelet:2.torcx.tgz")
    put(root, f"{USER_STORE}/3/docker:3.torcx.tgz")


def listing(root):
    top = root / USER_STORE.lstrip("/")
    return sorted(str(p.relative_to(top)) for p in top.rglob("*"))


def test_clear_versioned_keeps_listed_versions(tmp_path):
    """Every versioned store except the -k ones is removed; the plain store stays."""
    versioned_tree(tmp_path)
    r = torcx(tmp_path, "image", "clear-versioned", "-k", "2", "--keep-version", "9")
    assert r.status == 0, r
    assert listing(tmp_path) == ["2", "2/docker.torcx.squashfs",
                                 "2/docker.torcx.squashfs.sha512", "2/docker:2.torcx.tgz",
                                 "2/kubelet:2.torcx.tgz", "plain:1.torcx.tgz"]


def test_clear_versioned_one_image(tmp_path):
    """With NAME only that image's archives leave the non-kept versioned stores."""
    versioned_tree(tmp_path)
    r = torcx(tmp_path, "image", "clear-versioned", "docker", "-k", "3")
    assert r.status == 0, r
    assert listing(tmp_path) == ["1", "1/kubelet:1.torcx.tgz", "2", "2/kubelet:2.torcx.tgz",
                                 "3", "3/docker:3.torcx.tgz", "plain:1.torcx.tgz"]


def test_clear_versioned_removes_the_recorded_digest(tmp_path):
    """An image's recorded .sha512 (written by pack/populate) leaves with it."""
    versioned_tree(tmp_path)
    assert torcx(tmp_path, "image", "clear-versioned", "docker", "-k", "3").status == 0
    assert "2/docker.torcx.squashfs.sha512" not in listing(tmp_path)


def test_clear_versioned_needs_a_kept_version(tmp_path):
    """Without -k the command is a usage error and removes nothing."""
    versioned_tree(tmp_path)
    before = listing(tmp_path)
    r = torcx(tmp_path, "image", "clear-versioned")
    assert r.status == 2
    assert "keep-version" in r.err
    assert listing(tmp_path) == before


def test_clear_versioned_without_user_store(tmp_path):
    """No BASEDIR/store at all: nothing to do, exit 0."""
    assert torcx(tmp_path, "image", "clear-versioned", "-k", "1").status == 0


def test_clear_versioned_does_not_follow_symlinked_stores(tmp_path):
    """A versioned store that is a symlink is left alone with what it points to."""
    put(tmp_path, "/outside/keep:1.torcx.tgz")
    (tmp_path / USER_STORE.lstrip("/")).mkdir(parents=True)
    os.symlink(tmp_path / "outside", tmp_path / USER_STORE.lstrip("/") / "5")
    assert torcx(tmp_path, "image", "clear-versioned", "-k", "1").status == 0
    assert (tmp_path / "outside/keep:1.torcx.tgz").exists()
