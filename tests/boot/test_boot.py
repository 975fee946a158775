# SPDX-License-Identifier: Apache-2.0
"""torcx.boot without booting: the generator's plan mode, the unit reader, install-boot."""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import tarfile
import zipfile

import pytest
from torcx_testing import in_mount_namespace, modules_loaded, needs_root

from torcx import boot, cli
from torcx import paths as torcx_paths
from torcx.apply import unitplan
from torcx.boot import install, plan_units, prepare, unit_reader, unitfiles
from torcx.errors import ConfigError
from torcx.log import INFO, Logger

UNIT = "[Unit]\nDescription=demo\n\n[Service]\nExecStart=/run/torcx/bin/demo\n"
MANIFEST = ('{"kind": "image-manifest-v0", "value": {"bin": ["/bin/demo"], "units": '
            '["/lib/systemd/system/demo.service", '
            '"/lib/systemd/system/multi-user.target.wants"]}}')


def image_tree(parent, name="demo", payload=b"", payload_dir="zzz"):
    root = parent / name
    (root / ".torcx").mkdir(parents=True)
    (root / ".torcx" / "manifest.json").write_text(MANIFEST)
    (root / "bin").mkdir()
    (root / "bin" / "demo").write_text("#!/bin/sh\ntrue\n")
    (root / "bin" / "demo").chmod(0o755)
    units = root / "lib" / "systemd" / "system"
    (units / "multi-user.target.wants").mkdir(parents=True)
    (units / "demo.service").write_text(UNIT)
    os.symlink("../demo.service", units / "multi-user.target.wants" / "demo.service")
    if payload:
        (root / payload_dir).mkdir(exist_ok=True)
        (root / payload_dir / "payload").write_bytes(payload)
    return root


def pack(tree, name, store):
    rc = cli.main(["image", "pack", str(tree), "--name", name, "--reference", "1",
                   "-o", str(store), "--format", "tgz"], stdout=io.StringIO())
    assert rc == 0
    return store / f"{name}:1.torcx.tgz"


def test_unit_reader_stops_after_the_units(tmp_path):
    """The reader leaves a packed tarball once its units have gone by: a truncated tail is
    never reached."""
    archive = pack(image_tree(tmp_path, payload=os.urandom(1 << 20)), "demo", tmp_path / "s")
    size = archive.stat().st_size
    with open(archive, "r+b") as f:
        f.truncate(size // 2)
    dest = tmp_path / "out"
    manifest = unit_reader.read_unit_members(str(archive), str(dest))
    assert manifest.units == ["/lib/systemd/system/demo.service",
                              "/lib/systemd/system/multi-user.target.wants"]
    assert (dest / "lib/systemd/system/demo.service").read_text() == UNIT
    link = dest / "lib/systemd/system/multi-user.target.wants/demo.service"
    assert os.readlink(link) == "../demo.service"
    assert not (dest / "bin").exists() and not (dest / "zzz").exists()


def test_unit_reader_finds_units_placed_before_the_manifest(tmp_path):
    """A tarball not made by torcx image pack (units first, manifest last) still yields its
    units, through a second pass."""
    archive = tmp_path / "other.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in (("lib/systemd/system/demo.service", UNIT.encode()),
                           ("bin/demo", b"#!/bin/sh\n"),
                           (".torcx/manifest.json", MANIFEST.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    dest = tmp_path / "out"
    manifest = unit_reader.read_unit_members(str(archive), str(dest))
    assert manifest is not None
    assert (dest / "lib/systemd/system/demo.service").read_text() == UNIT


def test_unit_reader_follows_a_unit_that_is_a_symlink(tmp_path):
    """A unit listed as a relative symlink to a file later in the archive is read through
    the link, so the generated unit has the real content."""
    tree = image_tree(tmp_path)
    real = tree / "usr/lib/systemd/system"
    real.mkdir(parents=True)
    (real / "real.service").write_text(UNIT)
    os.symlink("../../../usr/lib/systemd/system/real.service",
               tree / "lib/systemd/system/alias.service")
    (tree / ".torcx/manifest.json").write_text(
        '{"kind": "image-manifest-v0", "value": {"bin": ["/bin/demo"], "units": '
        '["/lib/systemd/system/alias.service"]}}')
    archive = pack(tree, "demo", tmp_path / "s")
    dest = tmp_path / "out"
    unit_reader.read_unit_members(str(archive), str(dest))
    assert (dest / "lib/systemd/system/alias.service").read_text() == UNIT


def test_unit_reader_ignores_members_that_climb_out(tmp_path):
    """A unit path written as ../ in the archive is never created outside the destination."""
    archive = tmp_path / "evil.tgz"
    manifest = (b'{"kind": "image-manifest-v0", "value": {"units": '
                b'["/lib/systemd/system/demo.service"]}}')
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in ((".torcx/manifest.json", manifest),
                           ("../lib/systemd/system/demo.service", UNIT.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    dest = tmp_path / "sub" / "out"
    unit_reader.read_unit_members(str(archive), str(dest))
    assert not (tmp_path / "sub" / "lib").exists()
    assert not (dest / "lib").exists()


def _tar(path, members):
    """A tgz of (name, data or symlink target, kind) members, written as given."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "link":
                info.type, info.linkname = tarfile.SYMTYPE, data
                tar.addfile(info)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def test_unit_reader_never_writes_through_a_symlink_out_of_the_image(tmp_path):
    """A .wants folder that is a symlink to a host folder is not written through."""
    outside = tmp_path / "outside"
    outside.mkdir()
    manifest = (b'{"kind": "image-manifest-v0", "value": {"units": '
                b'["/lib/systemd/system/multi-user.target.wants"]}}')
    archive = _tar(tmp_path / "evil.tgz", [
        (".torcx/manifest.json", manifest, "file"),
        ("lib/systemd/system/multi-user.target.wants", str(outside), "link"),
        ("lib/systemd/system/multi-user.target.wants/evil", b"pwned", "file")])
    unit_reader.read_unit_members(str(archive), str(tmp_path / "out"))
    assert os.listdir(outside) == []


def test_unit_reader_follows_a_folder_symlink_inside_the_image(tmp_path):
    """Units listed under /lib are found when lib is a symlink to usr/lib in the image."""
    manifest = (b'{"kind": "image-manifest-v0", "value": {"units": '
                b'["/lib/systemd/system/demo.service"]}}')
    archive = _tar(tmp_path / "merged.tgz", [
        (".torcx/manifest.json", manifest, "file"),
        ("lib", "usr/lib", "link"),
        ("usr/lib/systemd/system", "", "dir"),
        ("usr/lib/systemd/system/demo.service", UNIT.encode(), "file"),
        ("usr/bin/big", os.urandom(4096), "file")])
    dest = tmp_path / "out"
    unit_reader.read_unit_members(str(archive), str(dest))
    assert (dest / "lib/systemd/system/demo.service").read_text() == UNIT


def fake_root(tmp_path, names=("demo",)):
    """A --root with the images packed into the vendor store and a profile selecting them."""
    root = tmp_path / "root"
    store = root / "usr/share/torcx/store"
    for name in names:
        pack(image_tree(tmp_path / "trees", name), name, store)
    profiles = root / "etc/torcx/profiles"
    profiles.mkdir(parents=True)
    images = ", ".join(f'{{"name": "{n}", "reference": "1"}}' for n in names)
    (profiles / "p.json").write_text(
        f'{{"kind": "profile-manifest-v0", "value": {{"images": [{images}]}}}}')
    (root / "etc/torcx/next-profile").write_text("p\n")
    return root


def generate(tmp_path, root):
    normal, late = tmp_path / "gen", tmp_path / "late"
    paths = torcx_paths.load(str(root), environ={})
    status = plan_units.plan_generator_units(paths, str(normal), str(late))
    return status, normal, late


def planned_env(normal) -> str:
    text = (normal / "torcx-apply.service.d" / plan_units.PLANNED_DROPIN).read_text()
    return text.split("TORCX_PLANNED=", 1)[1].split('"', 1)[0]


def test_plan_writes_units_links_dropins_and_the_apply_unit(tmp_path):
    """With a prepared plan (set-next), plan mode writes the image's units and .wants links
    into the generator folder, a drop-in gating each unit on the apply's gate for exactly
    these units, tells the apply which images it planned, and pulls in torcx-apply.service."""
    root = fake_root(tmp_path)
    paths = torcx_paths.load(str(root), environ={})
    assert prepare.prepare_plan(paths) == 1
    status, normal, late = generate(tmp_path, root)
    assert status == 0
    assert (normal / "demo.service").read_text() == UNIT
    assert os.readlink(normal / "multi-user.target.wants/demo.service") == "../demo.service"
    fp = unitplan.fingerprint([["file", "demo.service", UNIT], ["dir", "multi-user.target.wants"],
                               ["link", "multi-user.target.wants/demo.service",
                                "../demo.service"]])
    dropin = (normal / "demo.service.d" / unitfiles.DROPIN_NAME).read_text()
    assert "After=torcx-apply.service" in dropin and "Wants=torcx-apply.service" in dropin
    assert f"AssertPathExists=/run/torcx/units/demo.{fp}" in dropin
    assert planned_env(normal) == f"demo.{fp}"
    assert f"ExecStart={sys.executable} -I -m torcx apply" in \
        (late / unitfiles.APPLY_UNIT).read_text()
    for unit in unitfiles.BOOT_UNITS:
        assert os.readlink(late / "sysinit.target.wants" / unit) == "../" + unit
    assert "ExecStart=systemd-sysusers" in (late / "torcx-sysusers.service").read_text()
    assert not (root / "run/torcx").exists()  # planning claims nothing: the apply does


def test_generator_never_opens_an_archive(tmp_path):
    """The generator works from the plan alone: an archive it could not even decode (its
    plan entry made for exactly that file) still gets its units generated."""
    root = fake_root(tmp_path)
    paths = torcx_paths.load(str(root), environ={})
    prepare.prepare_plan(paths)
    archive = root / "usr/share/torcx/store/demo:1.torcx.tgz"
    with open(archive, "r+b") as f:
        f.truncate(40)  # nothing readable is left
    plan = json.loads((root / "var/lib/torcx/unit-plan.json").read_text())
    entry = plan["value"]["archives"]["/usr/share/torcx/store/demo:1.torcx.tgz"]
    entry["identity"] = unitplan.identity(str(archive))
    (root / "var/lib/torcx/unit-plan.json").write_text(json.dumps(plan))
    status, normal, _ = generate(tmp_path, root)
    assert status == 0 and (normal / "demo.service").read_text() == UNIT


def test_generator_without_a_plan_leaves_the_units_to_the_apply(tmp_path):
    """No prepared plan: the generator writes no unit of the image and tells the apply it
    planned none (the apply starts them once applied)."""
    root = fake_root(tmp_path)
    status, normal, late = generate(tmp_path, root)
    assert status == 0
    assert not (normal / "demo.service").exists()
    assert planned_env(normal) == ""
    assert os.readlink(late / "sysinit.target.wants" / unitfiles.APPLY_UNIT)


def test_generator_ignores_a_stale_plan(tmp_path):
    """An archive replaced after the plan was prepared (other units, same name) gets no
    generated units: a stale plan never starts the wrong units."""
    root = fake_root(tmp_path)
    paths = torcx_paths.load(str(root), environ={})
    prepare.prepare_plan(paths)
    store = root / "usr/share/torcx/store"
    other = tmp_path / "other"
    tree = image_tree(other)
    (tree / "lib/systemd/system/demo.service").write_text(UNIT + "# changed\n")
    (store / "demo:1.torcx.tgz").unlink()
    pack(tree, "demo", store)
    status, normal, _ = generate(tmp_path, root)
    assert status == 0 and not (normal / "demo.service").exists()
    assert planned_env(normal) == ""


def test_prepare_reads_a_packed_archive_only_up_to_its_units(tmp_path):
    """Preparing stops before a payload in bin/: a packed archive cut in half still works."""
    root = fake_root(tmp_path, names=())
    archive = pack(image_tree(tmp_path / "trees", payload=os.urandom(2 << 20),
                              payload_dir="bin"), "demo", root / "usr/share/torcx/store")
    (root / "etc/torcx/profiles/p.json").write_text(
        '{"kind": "profile-manifest-v0", "value": {"images": [{"name": "demo", '
        '"reference": "1"}]}}')
    with open(archive, "r+b") as f:
        f.truncate(archive.stat().st_size // 2)
    paths = torcx_paths.load(str(root), environ={})
    assert prepare.prepare_plan(paths) == 1
    status, normal, _ = generate(tmp_path, root)
    assert (normal / "demo.service").read_text() == UNIT
    assert os.readlink(normal / "multi-user.target.wants/demo.service") == "../demo.service"


def test_plan_after_the_apply_writes_nothing(tmp_path):
    """Once RUNDIR exists (a daemon-reload later in the boot) the plan leaves the output
    empty: the applied units live in /run/systemd/system."""
    root = fake_root(tmp_path)
    (root / "run/torcx").mkdir(parents=True)
    normal, late = tmp_path / "gen", tmp_path / "late"
    normal.mkdir()
    late.mkdir()
    paths = torcx_paths.load(str(root), environ={})
    assert plan_units.plan_generator_units(paths, str(normal), str(late)) == 0
    assert os.listdir(normal) == [] and os.listdir(late) == []


def test_plan_reports_a_missing_image_and_keeps_the_others(tmp_path):
    """An image no store holds is reported (status 1); the other image's units are written."""
    root = fake_root(tmp_path)
    prepare.prepare_plan(torcx_paths.load(str(root), environ={}))
    (root / "etc/torcx/profiles/p.json").write_text(
        '{"kind": "profile-manifest-v0", "value": {"images": ['
        '{"name": "gone", "reference": "1"}, {"name": "demo", "reference": "1"}]}}')
    status, normal, _ = generate(tmp_path, root)
    assert status == 1
    assert (normal / "demo.service").exists()


def test_prepare_leaves_out_a_corrupt_image_and_keeps_the_others(tmp_path):
    """A tarball that is not an archive is left out of the plan with a warning; the good
    image is planned."""
    root = fake_root(tmp_path)
    (root / "usr/share/torcx/store/bad:1.torcx.tgz").write_bytes(b"\x1f\x8b\x08" + bytes(64))
    (root / "etc/torcx/profiles/p.json").write_text(
        '{"kind": "profile-manifest-v0", "value": {"images": ['
        '{"name": "bad", "reference": "1"}, {"name": "demo", "reference": "1"}]}}')
    paths = torcx_paths.load(str(root), environ={})
    log = io.StringIO()
    assert prepare.prepare_plan(paths, Logger(INFO, stream=log)) == 1
    assert "bad:1.torcx.tgz: units not planned" in log.getvalue()
    status, normal, _ = generate(tmp_path, root)
    assert status == 0 and (normal / "demo.service").exists()


def gnu_tar_image(tmp_path, store):
    """demo as GNU tar packs it: the manifest last, after a payload."""
    tree = image_tree(tmp_path / "gnu", payload=os.urandom(1 << 20), payload_dir="aaa")
    os.makedirs(store, exist_ok=True)
    archive = store / "demo:1.torcx.tgz"
    with tarfile.open(archive, "w:gz") as t:
        for name in ("aaa", "bin", "lib", ".torcx"):
            t.add(tree / name, arcname=name)
    return archive


def test_apply_gates_and_refreshes_the_plan_for_any_packer(tmp_path):
    """An apply creates the gate of each image's units and records the archive in the plan,
    so the next boot's generator writes its units, however the archive was packed."""
    root = fake_root(tmp_path, names=())
    gnu_tar_image(tmp_path, root / "usr/share/torcx/store")
    (root / "etc/torcx/profiles/p.json").write_text(
        '{"kind": "profile-manifest-v0", "value": {"images": [{"name": "demo", '
        '"reference": "1"}]}}')
    assert cli.main(["--root", str(root), "apply", "--no-mount"], stdout=io.StringIO()) == 0
    gates = os.listdir(root / "run/torcx/units")
    assert len(gates) == 1 and gates[0].startswith("demo.")
    shutil.rmtree(root / "run")  # the next boot
    status, normal, _ = generate(tmp_path, root)
    assert (normal / "demo.service").read_text() == UNIT
    assert planned_env(normal) == gates[0]
    assert f"AssertPathExists=/run/torcx/units/{gates[0]}" in \
        (normal / "demo.service.d" / unitfiles.DROPIN_NAME).read_text()


def test_set_next_prepares_the_plan(tmp_path):
    """`torcx profile set-next` plans the units of the profile it selects."""
    root = fake_root(tmp_path)
    assert not (root / "var/lib/torcx/unit-plan.json").exists()
    assert cli.main(["--root", str(root), "profile", "set-next", "p"]) == 0
    status, normal, _ = generate(tmp_path, root)
    assert (normal / "demo.service").read_text() == UNIT


def test_late_start_finds_the_wanted_units():
    """The units the apply may start late are those linked into a target's .wants or
    .requires folder by the image."""
    from torcx.apply import Image, bootunits, propagate

    image = Image(type("Ref", (), {"name": "demo", "reference": "1", "remote": None})())
    unit_dir = "/run/systemd/system"
    image.created = [
        propagate.Entry("demo", "units", propagate.COPY, "/y", f"{unit_dir}/demo.service"),
        propagate.Entry("demo", "units", propagate.LINK, "/x",
                        f"{unit_dir}/multi-user.target.wants/demo.service", "../demo.service"),
        propagate.Entry("demo", "units", propagate.LINK, "/z",
                        f"{unit_dir}/sockets.target.requires/demo.socket", "../demo.socket")]
    assert bootunits._targets_wanting([image]) == {"demo.service": {"multi-user.target"},
                                                   "demo.socket": {"sockets.target"}}



def test_late_start_pulls_in_only_what_the_boot_has_not_started():
    """The late start names its units and what they require that is inactive without a
    job; it does not walk through units that are active or queued (their dependencies,
    such as sysinit.target's condition-skipped mounts, are the boot's), nor name a unit
    PID 1 could not load."""
    from torcx.apply import bootunits

    def unit(state, load="loaded", **deps):
        return {"LoadState": load, "ActiveState": state, **deps}

    props = {
        "app.service": unit("inactive", Requires="sysinit.target system.slice helper.service",
                            Wants="network-online.target gone.service"),
        "sysinit.target": unit("inactive", Job="4", Wants="sys-kernel-config.mount"),
        "system.slice": unit("active", Wants="other.service"),
        "helper.service": unit("failed", BindsTo="helper.socket"),
        "helper.socket": unit("inactive"),
        "network-online.target": unit("inactive", Wants="wait-online.service"),
        "wait-online.service": unit("active", Requires="sysinit.target"),
        "gone.service": unit("inactive", load="not-found"),
        "broken.service": unit("inactive", load="bad-setting"),
    }

    def systemctl(*args):
        raise AssertionError(f"every unit is known already: systemctl {args}")

    assert bootunits._pull_in(systemctl, ["app.service", "broken.service"], props) == [
        "app.service", "helper.service", "network-online.target", "helper.socket"]


def test_late_start_runs_systemctl_without_the_subprocess_module():
    """The late start's command runner (os.posix_spawnp) gives the exit status, stdout and
    stderr apart, reads stdin from /dev/null, and a missing command is an OSError."""
    from torcx.apply import bootunits

    assert bootunits._run(["sh", "-c", "echo out; echo err >&2; exit 3"]) == (3, "out\n",
                                                                            "err\n")
    assert bootunits._run(["cat"]) == (0, "", "")
    with pytest.raises(OSError):
        bootunits._run(["torcx-no-such-command"])

@needs_root
def test_mount_namespace_detection():
    """A process shares its own mount namespace; a child in a new one (as a sandboxed
    generator) does not share its parent's."""
    parent = os.getpid()
    assert boot.in_pid1_mount_namespace(parent) is True
    assert in_mount_namespace(boot.in_pid1_mount_namespace, parent) is False


def fake_wheel(tmp_path):
    wheel = tmp_path / "torcx-0.1.0-cp39-abi3-linux_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("torcx/__init__.py", "")
        z.writestr("torcx/cli.py", "def main():\n    return 0\n")
        z.writestr("torcx/units/torcx-apply.service", "[Unit]\n")
        z.writestr("torcx-0.1.0.dist-info/METADATA", "Name: torcx\n")
        z.writestr("torcx-0.1.0.data/scripts/torcx", "#!python\n")
    return wheel


def test_install_boot_then_uninstall_leaves_the_root_as_it_was(tmp_path):
    """install-boot writes the package, launcher, generator and unit; uninstall-boot removes
    exactly those and leaves other files alone."""
    root = tmp_path / "img"
    (root / "usr/lib/python3/dist-packages").mkdir(parents=True)
    (root / "usr/lib/python3/dist-packages/other.py").write_text("")
    before = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    installed = install.install_boot(str(root), wheel=str(fake_wheel(tmp_path)))
    launcher = (root / "usr/bin/torcx").read_text()
    assert launcher.startswith("#!/usr/bin/python3 -IS\n")  # no site: explicit path
    assert "sys.path += ['/usr/lib/python3/dist-packages']" in launcher
    assert (root / "usr/lib/systemd/system-generators/torcx-generator").read_text() == launcher
    assert os.access(root / "usr/lib/systemd/system-generators/torcx-generator", os.X_OK)
    assert "ExecStart=/usr/bin/torcx apply" in \
        (root / "usr/lib/systemd/system/torcx-apply.service").read_text()
    assert (root / "usr/lib/systemd/system/torcx-sysusers.service").exists()
    assert (root / "usr/lib/python3/dist-packages/torcx/cli.py").exists()
    assert not any(".data/" in p for p in installed.written)
    cache = root / "usr/lib/python3/dist-packages/torcx/__pycache__"
    cache.mkdir()
    (cache / "cli.cpython-313.pyc").write_bytes(b"")  # the image's python3 ran torcx
    install.uninstall_boot(str(root))
    after = sorted(str(p.relative_to(root)) for p in root.rglob("*")
                   if not p.is_dir() or any(p.iterdir()))
    assert [p for p in after if not (root / p).is_dir()] == \
        [p for p in before if not (root / p).is_dir()]
    assert not (root / "usr/lib/python3/dist-packages/torcx").exists()


def test_install_boot_never_replaces_a_foreign_file(tmp_path):
    """An existing /usr/bin/torcx that install-boot did not write is refused, named."""
    root = tmp_path / "img"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/torcx").write_text("#!/bin/sh\necho mine\n")
    with pytest.raises(ConfigError, match="usr/bin/torcx exists"):
        install.install_boot(str(root))
    assert (root / "usr/bin/torcx").read_text() == "#!/bin/sh\necho mine\n"


def test_install_boot_command_line(tmp_path):
    """`torcx install-boot --root` and `torcx uninstall-boot --root` go through the CLI."""
    root = tmp_path / "img"
    root.mkdir()
    out = io.StringIO()
    assert cli.main(["install-boot", "--root", str(root), "--generator-dir",
                     "/etc/systemd/system-generators"], stdout=out) == 0
    assert (root / "etc/systemd/system-generators/torcx-generator").exists()
    assert (root / "etc/systemd/system/torcx-apply.service").exists()
    assert cli.main(["uninstall-boot", "--root", str(root)], stdout=out) == 0
    assert not (root / "etc/systemd/system-generators/torcx-generator").exists()
    assert not (root / "usr/bin/torcx").exists()


def test_install_boot_warns_when_the_image_has_no_torcx_package(tmp_path):
    """install-boot into a root without the torcx package (and no --wheel) says so."""
    root = tmp_path / "img"
    root.mkdir()
    err = io.StringIO()
    assert cli.main(["install-boot", "--root", str(root)], stdout=io.StringIO(),
                    stderr=err) == 0
    assert "no torcx package for the python3 of" in err.getvalue()


def test_torcx_apply_starts_without_argparse(tmp_path):
    """`torcx apply` (torcx-apply.service, on the critical path of every boot) is parsed
    without argparse, which alone costs milliseconds of imports; other flags still go
    through the full parser."""
    import subprocess

    code = ("import sys; from torcx.cli import main; rc = main(['apply', '--dry-run', "
            "'--json']); print('argparse' in sys.modules, rc)")
    env = dict(os.environ, TORCX_BASEDIR=str(tmp_path / "base"),
               TORCX_RUNDIR=str(tmp_path / "run"), TORCX_CONFDIR=str(tmp_path / "conf"),
               TORCX_USR_MOUNTPOINT=str(tmp_path / "usr"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out.rstrip().endswith("False 0") and '"kind": "torcx-apply-report-v0"' in out
    err = io.StringIO()
    assert cli.main(["apply", "--bogus"], stderr=err) == 2 and "--bogus" in err.getvalue()


def test_pack_into_a_store_prepares_the_plan(tmp_path):
    """`torcx image pack` into a store of the root's next profile plans the archive's units;
    packed anywhere else it touches no plan."""
    root = fake_root(tmp_path, names=())
    (root / "etc/torcx/profiles/p.json").write_text(
        '{"kind": "profile-manifest-v0", "value": {"images": [{"name": "demo", '
        '"reference": "1"}]}}')
    tree = image_tree(tmp_path / "trees")
    assert cli.main(["image", "pack", str(tree), "--name", "demo", "--reference", "1",
                     "-o", str(tmp_path / "elsewhere")], stdout=io.StringIO()) == 0
    assert not (root / "var/lib/torcx/unit-plan.json").exists()
    assert cli.main(["--root", str(root), "image", "pack", str(tree), "--name", "demo",
                     "--reference", "1", "-o", "/var/lib/torcx/store"],
                    stdout=io.StringIO()) == 0
    status, normal, _ = generate(tmp_path, root)
    assert (normal / "demo.service").read_text() == UNIT


# What the boot's two Python starts may load beyond the interpreter's own start-up set:
# os and what it needs, json's and signal's C cores, struct, and cffi and xxhash. Each
# of json, re, enum, contextlib, collections, signal, argparse, dataclasses costs
# milliseconds of every boot (torcx.jsontext says why).
BOOT_MODULES = {"os", "os.path", "posixpath", "genericpath", "stat", "_stat",
                "_collections_abc", "errno", "posix", "time", "__future__",
                "_json", "_signal", "struct", "_struct", "_cffi_backend",
                "xxhash", "xxhash._xxhash", "xxhash.version"}


@needs_root
def test_boot_runs_load_only_what_they_need(tmp_path):
    """Both boot runs, to the end: the sandboxed generator writing units from the prepared
    plan, and `torcx apply` unpacking a tgz and loop-mounting a squashfs whose files it
    checks. Neither loads a stdlib module beyond BOOT_MODULES."""
    if shutil.which("mksquashfs") is None:
        pytest.skip("needs mksquashfs")
    root = fake_root(tmp_path, names=("demo", "sq"))
    store = root / "usr/share/torcx/store"
    (store / "sq:1.torcx.tgz").unlink()
    assert cli.main(["image", "pack", str(image_tree(tmp_path / "sqtree", "sq")), "--name", "sq",
                     "--reference", "1", "-o", str(store), "--format", "squashfs"],
                    stdout=io.StringIO()) == 0
    for sidecar in store.glob("sq:1.torcx.squashfs.*"):
        sidecar.unlink()  # no recorded image digest: every file is checked once mounted
    assert cli.main(["--root", str(root), "profile", "set-next", "p"],
                    stderr=io.StringIO()) == 0
    bare = modules_loaded("")
    generator = modules_loaded(
        "import torcx.cli, torcx.boot\n"
        "from torcx import paths\nfrom torcx.boot.plan_units import plan_generator_units\n"
        f"assert plan_generator_units(paths.load({str(root)!r}, environ={{}}), "
        f"{str(tmp_path / 'gen')!r}, {str(tmp_path / 'late')!r}) == 0")
    assert (tmp_path / "gen" / "demo.service").is_file()
    apply = modules_loaded(
        f"from torcx.cli import main\nassert main(['--root', {str(root)!r}, 'apply']) == 0",
        "unshare", "-m", "--propagation", "private")
    record = json.loads((root / "run/torcx/apply.json").read_text())["value"]
    images = {i["name"]: i for i in record["images"]}
    assert [images[n]["status"] for n in ("demo", "sq")] == ["ok", "ok"]
    assert images["sq"]["unpack"]["method"] == "loop-mount"
    assert images["sq"]["unpack"]["verified"] is True and images["sq"]["unpack"]["files"] > 0
    for run, loaded in (("generator", generator), ("apply", apply)):
        extra = sorted(m for m in loaded - bare - BOOT_MODULES if not m.startswith("torcx"))
        assert extra == [], f"{run} loaded {extra}"


@needs_root
def test_launcher_as_generator_skips_cleanup_but_loses_nothing(tmp_path):
    """The launcher (python3 -IS, explicit path) run as torcx-generator ends with os._exit:
    its status, its log lines and the files of the apply are all there."""
    import shutil
    import subprocess

    if shutil.which("unshare") is None:
        pytest.skip("needs unshare")
    gen = tmp_path / "bin" / "torcx-generator"
    gen.parent.mkdir()
    gen.write_text(install.launcher_text(sys.executable))
    gen.chmod(0o755)
    root = fake_root(tmp_path)
    r = subprocess.run(["unshare", "-m", "--propagation", "private", str(gen), "--root",
                        str(root)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "torcx-generator: applied profiles" in r.stderr
    assert (root / "run/metadata/torcx").is_file() and (root / "run/torcx/apply.json").is_file()
