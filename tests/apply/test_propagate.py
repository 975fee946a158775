# SPDX-License-Identifier: Apache-2.0
"""Propagation rules: bins, unit files, .wants folders, conflicts, never-overwrite."""

from __future__ import annotations

import os

import pytest

from torcx.apply import propagate
from torcx.apply.propagate import COPY, LINK, MKDIR, SYMLINK, AssetError
from torcx.paths import Paths

UNPACK = "/run/torcx/unpack"
BINDIR = "/run/torcx/bin"


def write(path, text="", mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


@pytest.fixture
def root(tmp_path):
    return str(tmp_path / "root")


def make_image(root, name):
    """An unpacked image folder under root, returned as (host dir, target dir)."""
    target = f"{UNPACK}/{name}"
    host = Paths(root=root).host(target)
    os.makedirs(host)
    return host, target


def plan(root, name, assets):
    host, target = f"{root}{UNPACK}/{name}", f"{UNPACK}/{name}"
    return propagate.plan_image(name, host, target, assets, BINDIR)


def apply_all(root, *plans):
    host = Paths(root=root).host
    res = propagate.resolve(host, plans)
    return res, propagate.execute(host, res.entries)


def test_bin_symlink_points_to_target_path(root):
    """A bin becomes RUNDIR/bin/<name> linking to the target path, without the root prefix."""
    host, _ = make_image(root, "docker")
    write(f"{host}/bin/docker", "#!/bin/sh\n", 0o755)
    _, out = apply_all(root, plan(root, "docker", {"bin": ["/bin/docker"]}))
    link = f"{root}{BINDIR}/docker"
    assert os.readlink(link) == f"{UNPACK}/docker/bin/docker"
    assert [e.action for e in out.created] == [SYMLINK]


def test_bin_directory_is_walked_and_flattened(root):
    """A bin folder is walked recursively and every file linked by its base name."""
    host, _ = make_image(root, "tools")
    write(f"{host}/opt/bin/a", mode=0o755)
    write(f"{host}/opt/bin/sub/b", mode=0o755)
    os.symlink("a", f"{host}/opt/bin/c")
    entries = plan(root, "tools", {"bin": ["/opt/bin"]})
    assert sorted(e.dest for e in entries) == [f"{BINDIR}/a", f"{BINDIR}/b", f"{BINDIR}/c"]
    assert {e.link for e in entries} == {f"{UNPACK}/tools/opt/bin/a",
                                         f"{UNPACK}/tools/opt/bin/sub/b",
                                         f"{UNPACK}/tools/opt/bin/c"}


def test_unit_file_is_copied(root):
    """A unit file is copied (not linked) into /run/systemd/system with mode 0644."""
    host, _ = make_image(root, "docker")
    write(f"{host}/lib/systemd/system/docker.service", "[Service]\n", 0o600)
    apply_all(root, plan(root, "docker", {"units": ["/lib/systemd/system/docker.service"]}))
    dest = f"{root}/run/systemd/system/docker.service"
    assert not os.path.islink(dest)
    assert open(dest).read() == "[Service]\n"
    assert os.stat(dest).st_mode & 0o777 == 0o644


def test_wants_folder_recreated_with_relative_links(root):
    """A .wants folder is recreated one level deep, its symlinks copied as they are."""
    host, _ = make_image(root, "docker")
    wants = f"{host}/lib/systemd/system/multi-user.target.wants"
    os.makedirs(f"{wants}/deeper")
    write(f"{wants}/deeper/ignored.service")
    os.symlink("../docker.service", f"{wants}/docker.service")
    write(f"{wants}/plain.conf", "x")
    entries = plan(root, "docker", {"units": ["/lib/systemd/system/multi-user.target.wants/"]})
    assert [e.action for e in entries] == [MKDIR, LINK, COPY]
    apply_all(root, entries)
    dest = f"{root}/run/systemd/system/multi-user.target.wants"
    assert os.readlink(f"{dest}/docker.service") == "../docker.service"
    assert open(f"{dest}/plain.conf").read() == "x"
    assert not os.path.exists(f"{dest}/deeper")


def test_each_kind_lands_in_its_folder(root):
    """network, sysusers, tmpfiles and udev_rules go to their /run folders."""
    host, _ = make_image(root, "misc")
    for name in ("a.network", "a.conf", "b.conf", "99-a.rules"):
        write(f"{host}/etc/{name}", name)
    apply_all(root, plan(root, "misc", {
        "network": ["/etc/a.network"], "sysusers": ["/etc/a.conf"],
        "tmpfiles": ["/etc/b.conf"], "udev_rules": ["/etc/99-a.rules"]}))
    for dest in ("run/systemd/network/a.network", "run/sysusers.d/a.conf",
                 "run/tmpfiles.d/b.conf", "run/udev/rules.d/99-a.rules"):
        assert os.path.isfile(f"{root}/{dest}"), dest


def test_conflict_keeps_first_image(root):
    """Two images providing the same bin and unit: the first wins, both conflicts reported."""
    for name in ("one", "two"):
        host, _ = make_image(root, name)
        write(f"{host}/bin/tool", name, 0o755)
        write(f"{host}/units/tool.service", name)
    assets = {"bin": ["/bin/tool"], "units": ["/units/tool.service"]}
    res, _ = apply_all(root, plan(root, "one", assets), plan(root, "two", assets))
    assert [(c.kind, c.kept, c.dropped) for c in res.conflicts] == [
        ("bin", "one", "two"), ("units", "one", "two")]
    assert os.readlink(f"{root}{BINDIR}/tool") == f"{UNPACK}/one/bin/tool"
    assert open(f"{root}/run/systemd/system/tool.service").read() == "one"


def test_shared_wants_folder_is_no_conflict(root):
    """Two images adding links to the same .wants folder both get them, without conflict."""
    plans = []
    for name in ("one", "two"):
        host, _ = make_image(root, name)
        os.makedirs(f"{host}/u/multi-user.target.wants")
        os.symlink(f"../{name}.service", f"{host}/u/multi-user.target.wants/{name}.service")
        plans.append(plan(root, name, {"units": ["/u/multi-user.target.wants"]}))
    res, _ = apply_all(root, *plans)
    assert res.conflicts == []
    assert sorted(os.listdir(f"{root}/run/systemd/system/multi-user.target.wants")) == [
        "one.service", "two.service"]


def test_existing_file_is_never_overwritten(root):
    """A file already at the destination is kept untouched and reported."""
    host, _ = make_image(root, "docker")
    write(f"{host}/u/docker.service", "new")
    write(f"{root}/run/systemd/system/docker.service", "admin's")
    os.makedirs(f"{root}{BINDIR}")
    os.symlink("/usr/bin/docker", f"{root}{BINDIR}/docker")
    write(f"{host}/bin/docker", mode=0o755)
    res, out = apply_all(root, plan(root, "docker", {
        "bin": ["/bin/docker"], "units": ["/u/docker.service"]}))
    assert {e.dest for e in res.existing} == {f"{BINDIR}/docker",
                                              "/run/systemd/system/docker.service"}
    assert out.created == []
    assert open(f"{root}/run/systemd/system/docker.service").read() == "admin's"
    assert os.readlink(f"{root}{BINDIR}/docker") == "/usr/bin/docker"


def test_missing_asset_fails_the_image(root):
    """A manifest entry naming a file the image lacks is an AssetError naming it."""
    make_image(root, "docker")
    with pytest.raises(AssetError, match="units: /u/none.service: no such file"):
        plan(root, "docker", {"units": ["/u/none.service"]})


def test_asset_through_symlink_outside_image_is_refused(root):
    """A manifest path reaching outside the image through a symlinked folder is refused."""
    host, _ = make_image(root, "evil")
    os.makedirs(f"{root}/etc")
    write(f"{root}/etc/shadow", "secret")
    os.symlink(f"{root}/etc", f"{host}/etc")
    with pytest.raises(AssetError, match="outside the image"):
        plan(root, "evil", {"units": ["/etc/shadow"]})


def test_dotdot_cannot_climb_out(root):
    """'..' in a manifest path stays inside the image: /../../x means /x of the image."""
    host, _ = make_image(root, "img")
    write(f"{root}/x", "outside")
    with pytest.raises(AssetError, match="no such file in the image"):
        plan(root, "img", {"tmpfiles": ["/../../x"]})


def test_bin_absolute_symlink_is_linked_not_followed(root):
    """A bin that is a symlink to a system path is linked as it is, never resolved on the host."""
    host, _ = make_image(root, "alias")
    os.makedirs(f"{host}/bin")
    os.symlink("/usr/bin", f"{host}/bin/tool")  # a folder on the host: must not be walked
    entries = plan(root, "alias", {"bin": ["/bin/tool"]})
    assert [(e.dest, e.link) for e in entries] == [
        (f"{BINDIR}/tool", f"{UNPACK}/alias/bin/tool")]


def test_bin_symlinked_folder_inside_image_is_walked(root):
    """A bin entry that is a relative symlink to a folder of the image is walked."""
    host, _ = make_image(root, "lay")
    write(f"{host}/usr/bin/x", mode=0o755)
    os.symlink("usr/bin", f"{host}/bin")
    entries = plan(root, "lay", {"bin": ["/bin"]})
    assert [(e.dest, e.link) for e in entries] == [(f"{BINDIR}/x", f"{UNPACK}/lay/usr/bin/x")]


def test_unit_path_with_trailing_slash_is_copied_under_its_name(root):
    """A unit file listed as '/u/a.service/' lands as a.service, as upstream's Clean does."""
    host, _ = make_image(root, "slash")
    write(f"{host}/u/a.service", "[Unit]\n")
    entries = plan(root, "slash", {"units": ["/u/a.service/"]})
    assert [(e.action, e.dest) for e in entries] == [(COPY, "/run/systemd/system/a.service")]


def test_wants_folder_blocked_by_a_file_is_left_alone(root):
    """A file where a .wants folder should go is kept; its links are reported, nothing raises."""
    host, _ = make_image(root, "docker")
    os.makedirs(f"{host}/u/multi-user.target.wants")
    os.symlink("../docker.service", f"{host}/u/multi-user.target.wants/docker.service")
    write(f"{root}/run/systemd/system/multi-user.target.wants", "admin's file")
    res, out = apply_all(root, plan(root, "docker", {"units": ["/u/multi-user.target.wants"]}))
    assert out.created == []
    assert open(f"{root}/run/systemd/system/multi-user.target.wants").read() == "admin's file"
    assert "/run/systemd/system/multi-user.target.wants/docker.service" in {
        e.dest for e in res.existing + out.existing + [f[0] for f in out.failed]}


def test_read_image_file_refuses_a_fifo_without_blocking(root):
    """A FIFO where a manifest should be is refused at once (a squashfs image may hold one)."""
    host, _ = make_image(root, "pipe")
    os.makedirs(f"{host}/.torcx")
    os.mkfifo(f"{host}/.torcx/manifest.json")
    with pytest.raises(AssetError, match="not a regular file"):
        propagate.read_image_file(host, "/.torcx/manifest.json", 1 << 20)


def test_unit_that_is_an_absolute_symlink_out_of_the_image_is_refused(root):
    """A units entry linking to a host file (/etc/shadow) is refused: nothing is copied."""
    host, _ = make_image(root, "evil")
    write(f"{root}/etc/shadow", "secret", 0o600)
    os.makedirs(f"{host}/u")
    os.symlink(f"{root}/etc/shadow", f"{host}/u/x.service")
    with pytest.raises(AssetError, match="units: /u/x.service: resolves outside the image"):
        plan(root, "evil", {"units": ["/u/x.service"]})
    assert not os.path.exists(f"{root}/run/systemd/system/x.service")


def test_unit_folder_that_is_a_relative_symlink_climbing_out_is_refused(root):
    """A units entry linking to ../../.. (a folder above the image) is refused, not listed."""
    host, _ = make_image(root, "evil")
    os.symlink("../../..", f"{host}/wants")
    with pytest.raises(AssetError, match="units: /wants: resolves outside the image"):
        plan(root, "evil", {"units": ["/wants"]})
