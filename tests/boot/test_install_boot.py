# SPDX-License-Identifier: Apache-2.0
"""install-boot and uninstall-boot as image builders use them: re-runs, upgrades,
refusals that change nothing, and roots whose absolute symlinks point at the host."""

from __future__ import annotations

import io
import os
import zipfile

import pytest

from torcx import cli

RECORD = "usr/lib/torcx/install-boot.list"


def wheel(tmp_path, version, modules):
    path = tmp_path / f"torcx-{version}-cp39-abi3-linux_x86_64.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("torcx/__init__.py", f"__version__ = {version!r}\n")
        for name, text in modules.items():
            z.writestr(f"torcx/{name}", text)
        z.writestr(f"torcx-{version}.dist-info/METADATA", f"Name: torcx\nVersion: {version}\n")
    return str(path)


def snapshot(root, folders=True):
    """Every path under root with its content (files), target (links) or mode (folders)."""
    out = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(top, name)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = ("link", os.readlink(p))
            elif os.path.isdir(p):
                if folders:
                    out[rel] = ("dir", os.stat(p).st_mode)
            else:
                with open(p, "rb") as f:
                    out[rel] = ("file", f.read(), os.stat(p).st_mode, os.stat(p).st_ino)
    return out


def run(*args):
    out, err = io.StringIO(), io.StringIO()
    status = cli.main(list(args), environ={}, stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "img"
    (r / "usr/lib/python3/dist-packages").mkdir(parents=True)
    (r / "usr/lib/python3/dist-packages/other.py").write_text("x = 1\n")
    return r


def test_second_install_of_the_same_wheel_is_a_no_op(tmp_path, root):
    """Re-running install-boot with the same wheel changes nothing and says so (exit 0)."""
    w = wheel(tmp_path, "1.0", {"cli.py": "def main():\n    return 0\n"})
    status, out, err = run("install-boot", "--root", str(root), "--wheel", w)
    assert status == 0, err
    before = snapshot(root)
    status, out, err = run("install-boot", "--root", str(root), "--wheel", w)
    assert status == 0, err
    assert out == (f"torcx is already installed under {root} (7 file(s) unchanged), "
                   "nothing to do\n")
    assert snapshot(root) == before


def test_upgrade_replaces_changed_files_and_removes_what_the_new_wheel_lacks(tmp_path, root):
    """An install of another wheel upgrades in place; uninstall then removes everything."""
    before = snapshot(root, folders=False)
    old = wheel(tmp_path, "1.0", {"cli.py": "A = 1\n", "gone.py": "G = 1\n",
                                  "sub/old.py": "O = 1\n"})
    new = wheel(tmp_path, "2.0", {"cli.py": "A = 2\n", "added.py": "N = 1\n"})
    assert run("install-boot", "--root", str(root), "--wheel", old)[0] == 0
    pkg = root / "usr/lib/python3/dist-packages/torcx"
    (pkg / "__pycache__").mkdir(exist_ok=True)
    (pkg / "__pycache__/gone.cpython-311.pyc").write_bytes(b"stale")
    (pkg / "__pycache__/cli.cpython-311.pyc").write_bytes(b"cache")
    status, out, err = run("install-boot", "--root", str(root), "--wheel", new)
    assert status == 0, err
    assert out.startswith(f"updated torcx under {root}: ")
    assert (pkg / "cli.py").read_text() == "A = 2\n"
    assert (pkg / "added.py").exists()
    assert not (pkg / "gone.py").exists() and not (pkg / "sub").exists()
    assert not (pkg / "__pycache__/gone.cpython-311.pyc").exists()
    assert not (root / "usr/lib/python3/dist-packages/torcx-1.0.dist-info").exists()
    status, out, err = run("uninstall-boot", "--root", str(root))
    assert status == 0, err
    assert out.startswith("removed ") and out.count("\n") == 1
    assert snapshot(root, folders=False) == before
    assert not (root / "usr/lib/python3/dist-packages/torcx").exists()


def test_refused_install_leaves_the_root_exactly_as_it_was(tmp_path, root):
    """A foreign file anywhere among the targets is found before anything is written."""
    unit = root / "usr/lib/systemd/system/torcx-sysusers.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Unit]\nDescription=mine\n")
    before = snapshot(root)
    w = wheel(tmp_path, "1.0", {"cli.py": ""})
    status, out, err = run("install-boot", "--root", str(root), "--wheel", w)
    assert status == 1 and out == ""
    assert err == (f"torcx: error: {unit} exists and was not installed by torcx; nothing "
                   "written; use --force to replace it\n")
    assert snapshot(root) == before


def test_uninstall_prints_one_summary_line_and_the_list_with_verbose(tmp_path, root):
    """uninstall-boot says one line by default; --verbose debug lists each file."""
    w = wheel(tmp_path, "1.0", {"cli.py": ""})
    status, out, err = run("install-boot", "--root", str(root), "--wheel", w)
    assert status == 0 and out.count("\n") == 1 and "installed /usr/bin/torcx" not in err
    status, out, err = run("uninstall-boot", "--root", str(root))
    assert (status, err) == (0, "")
    assert out == f"removed 7 file(s) under {root}\n"
    run("install-boot", "--root", str(root), "--wheel", w)
    status, out, err = run("uninstall-boot", "--root", str(root), "--verbose", "debug")
    assert status == 0 and "torcx: removed /usr/bin/torcx\n" in err


def test_uninstall_keeps_a_file_changed_since_install(tmp_path, root):
    """A recorded file whose content changed is kept, named, and the run exits 1."""
    run("install-boot", "--root", str(root))
    unit = root / "usr/lib/systemd/system/torcx-apply.service"
    unit.write_text("[Service]\nExecStart=/bin/mine\n")
    status, out, err = run("uninstall-boot", "--root", str(root))
    assert status == 1
    assert f"{unit}: changed since install-boot wrote it, kept" in err
    assert unit.exists() and not (root / "usr/bin/torcx").exists()


def hostile_root(tmp_path):
    """A root whose systemd and package folders are absolute links to host folders."""
    host = tmp_path / "host"
    (host / "systemd/system").mkdir(parents=True)
    (host / "systemd/system/torcx-apply.service").write_text("host unit\n")
    (host / "pkgs/torcx/__pycache__").mkdir(parents=True)
    (host / "pkgs/torcx/__init__.py").write_text("host package\n")
    (host / "pkgs/torcx/__pycache__/__init__.cpython-311.pyc").write_bytes(b"host")
    root = tmp_path / "img"
    (root / "usr/lib/python3").mkdir(parents=True)
    os.symlink(str(host / "systemd"), root / "usr/lib/systemd")
    os.symlink(str(host / "pkgs"), root / "usr/lib/python3/dist-packages")
    return host, root


def test_install_boot_never_writes_through_absolute_links(tmp_path):
    """Absolute links in the root are followed inside it, as in a chroot: the host is untouched."""
    host, root = hostile_root(tmp_path)
    before = snapshot(host)
    w = wheel(tmp_path, "1.0", {"cli.py": ""})
    status, out, err = run("install-boot", "--root", str(root), "--wheel", w)
    assert status == 0, err
    assert snapshot(host) == before
    inside = root / str(host).lstrip("/")
    assert (inside / "systemd/system/torcx-apply.service").exists()
    assert (inside / "pkgs/torcx/__init__.py").exists()
    assert run("uninstall-boot", "--root", str(root))[0] == 0
    assert snapshot(host) == before
    assert not (inside / "pkgs/torcx").exists()


def test_uninstall_boot_never_removes_host_files_a_record_names(tmp_path):
    """A record naming files behind absolute links, even with their right digests, removes
    nothing outside the root; entries naming other places are ignored."""
    import xxhash

    host, root = hostile_root(tmp_path)
    before = snapshot(host)
    lines = []
    for logical, real in (("/usr/lib/systemd/system/torcx-apply.service",
                           host / "systemd/system/torcx-apply.service"),
                          ("/usr/lib/python3/dist-packages/torcx/__init__.py",
                           host / "pkgs/torcx/__init__.py"),
                          ("/etc/passwd", None), ("/usr/bin/../../" + str(host), None)):
        digest = xxhash.xxh3_128_hexdigest(real.read_bytes()) if real else "0" * 32
        lines.append(f"{digest}  {logical}\n")
    (root / RECORD).parent.mkdir(parents=True)
    (root / RECORD).write_text("".join(lines))
    status, out, err = run("uninstall-boot", "--root", str(root))
    assert status == 0, err
    assert out == f"removed 0 file(s) under {root}\n"
    assert "ignoring the entry" in err and "/etc/passwd" in err
    assert snapshot(host) == before


def _python_root(root):
    """Bind the host's Debian python3 into ``root`` (in the caller's mount namespace)."""
    import subprocess

    real = os.path.realpath("/usr/bin/python3")
    version = os.path.basename(real)  # python3.11
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    (root / "usr/bin/python3").write_bytes(b"")
    binds = [(real, root / "usr/bin/python3")]
    for folder in (f"/usr/lib/{version}", "/usr/lib/x86_64-linux-gnu", "/usr/lib64"):
        if os.path.isdir(folder):
            (root / folder.lstrip("/")).mkdir(parents=True, exist_ok=True)
            binds.append((folder, root / folder.lstrip("/")))
    os.symlink("usr/lib64", root / "lib64")
    os.symlink("usr/lib", root / "lib")
    for source, target in binds:
        subprocess.run(["mount", "--bind", "-o", "ro", source, str(target)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True)


def _upgrade_rebuilds_byte_code(tmp_path):
    import importlib.util

    root = tmp_path / "img"
    _python_root(root)
    old = wheel(tmp_path, "1.0", {"cli.py": "A = 1\n", "gone.py": "G = 1\n"})
    new = wheel(tmp_path, "2.0", {"cli.py": "A = 2\n"})
    assert run("install-boot", "--root", str(root), "--wheel", old)[0] == 0
    cache = root / "usr/lib/python3/dist-packages/torcx/__pycache__"
    names = sorted(os.listdir(cache))
    assert any(n.startswith("gone.") for n in names), names
    assert run("install-boot", "--root", str(root), "--wheel", new)[0] == 0
    (pyc,) = [n for n in os.listdir(cache) if n.startswith("cli.")]
    data = (cache / pyc).read_bytes()
    assert int.from_bytes(data[4:8], "little") == 0b11  # checked-hash
    assert data[8:16] == importlib.util.source_hash(b"A = 2\n")
    assert not any(n.startswith("gone.") for n in os.listdir(cache))
    assert run("uninstall-boot", "--root", str(root))[0] == 0
    assert not (root / "usr/lib/python3/dist-packages/torcx").exists()
    return True


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"),
                    reason="needs root (chroot, bind mounts) and /usr/bin/python3")
def test_upgrade_rebuilds_the_byte_code_with_the_roots_python(tmp_path):
    """install-boot compiles with the root's own python3 (chroot); an upgrade rebuilds the
    .pyc of changed modules and drops those of removed ones; uninstall removes them all."""
    from torcx_testing import in_mount_namespace

    assert in_mount_namespace(_upgrade_rebuilds_byte_code, tmp_path) is True


def test_uninstall_boot_removes_the_unit_plan(tmp_path, root):
    """uninstall-boot removes the unit plan that install-boot and every apply write in
    BASEDIR (a cache of torcx's, not user data); the store next to it stays."""
    w = wheel(tmp_path, "1.0", {"cli.py": "def main():\n    return 0\n"})
    assert run("install-boot", "--root", str(root), "--wheel", w)[0] == 0
    base = root / "var/lib/torcx"
    (base / "store").mkdir(parents=True)
    (base / "unit-plan.json").write_text('{"kind": "torcx-unit-plan-v0", "value": '
                                         '{"archives": {}}}\n')  # as an apply wrote it
    status, out, err = run("uninstall-boot", "--root", str(root))
    assert status == 0, err
    assert os.listdir(base) == ["store"]
