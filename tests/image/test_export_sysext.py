# SPDX-License-Identifier: Apache-2.0
"""`torcx image export --sysext`: a packed torcx image as a systemd-sysext image (read back
with unsquashfs, no privilege): layout, unit rewriting, Upholds= drop-ins, extension-release,
reproducibility, and refusals that name the path."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess

import pytest

from torcx import cli
from torcx.image.pack import pack_image

pytestmark = pytest.mark.skipif(not (shutil.which("mksquashfs") and shutil.which("unsquashfs")),
                                reason="needs squashfs-tools")

UNIT = """[Unit]
Description=tool
After=torcx.target network.target
Requires=torcx.target

[Service]
EnvironmentFile=/run/metadata/torcx
Environment=PATH=/run/torcx/bin:/usr/bin
ExecStart=/run/torcx/bin/tool --data ${TORCX_UNPACKDIR}/tool/share/tool
ExecStartPost=/run/torcx/unpack/tool/usr/libexec/tool-helper

[Install]
WantedBy=multi-user.target
"""


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def image_tree(top, extra=None, unit=UNIT):
    """A torcx image: bin, a unit with torcx lines, a .wants link, sysusers, a /usr part."""
    root = os.path.join(top, "tool-root")
    write(f"{root}/bin/tool", "#!/bin/sh\n", 0o755)
    write(f"{root}/share/tool/data", "x\n")
    write(f"{root}/usr/libexec/tool-helper", "#!/bin/sh\n", 0o755)
    write(f"{root}/lib/systemd/system/tool.service", unit)
    os.makedirs(f"{root}/lib/systemd/system/multi-user.target.wants")
    os.symlink("../tool.service", f"{root}/lib/systemd/system/multi-user.target.wants/tool.service")
    write(f"{root}/etc-ish/tool.conf", "g tool -\n")
    write(f"{root}/share/tool/units/tool.service.d/10-limits.conf",
          "[Service]\nExecStartPre=/run/torcx/bin/tool --check\n")
    for path, text in (extra or {}).items():
        write(f"{root}/{path}", text)
    write(f"{root}/.torcx/manifest.json", json.dumps({"kind": "image-manifest-v0", "value": {
        "bin": ["/bin/tool"],
        "units": ["/lib/systemd/system/tool.service",
                  "/lib/systemd/system/multi-user.target.wants",
                  "/share/tool/units/tool.service.d"],
        "sysusers": ["/etc-ish/tool.conf"]}}))
    return root


def export(archive, out, *extra):
    err = io.StringIO()
    rc = cli.main(["image", "export", archive, "--sysext", "-o", out, "--id", "debian",
                   "--version-id", "13", "--arch", "x86-64", "--source-date-epoch", "1000",
                   *extra], stdout=io.StringIO(), stderr=err, environ={})
    return rc, err.getvalue()


def cat(image, path):
    return subprocess.run(["unsquashfs", "-cat", image, path], capture_output=True,
                          text=True, check=True).stdout


def listing(image):
    out = subprocess.run(["unsquashfs", "-lln", image], capture_output=True, text=True,
                         check=True).stdout
    return {line.split()[-1].replace("squashfs-root/", "", 1) if "->" not in line
            else line.split()[-3].replace("squashfs-root/", "", 1): line
            for line in out.splitlines() if "squashfs-root/" in line}


def test_export_layout_units_and_release(tmp_path):
    """Files under usr/, torcx lines gone from the unit, .wants -> Upholds=, release written."""
    archive = pack_image(image_tree(str(tmp_path)), "tool", "1", str(tmp_path / "store"),
                         fmt="tgz").path
    rc, err = export(archive, str(tmp_path / "out"))
    assert rc == 0, err
    raw = str(tmp_path / "out/tool.raw")
    files = listing(raw)
    for path in ("usr/bin/tool", "usr/share/tool/data", "usr/libexec/tool-helper",
                 "usr/lib/sysusers.d/tool.conf", "usr/lib/systemd/system/tool.service"):
        assert path in files, sorted(files)
    assert not [p for p in files if p.startswith(("usr/.torcx", "usr/usr/"))]
    assert "usr/lib/systemd/system/multi-user.target.wants" not in files
    assert cat(raw, "usr/lib/systemd/system/tool.service") == (
        "[Unit]\nDescription=tool\nAfter=network.target\n\n[Service]\n"
        "Environment=PATH=/usr/bin:/usr/bin\nExecStart=/usr/bin/tool --data /usr/share/tool\n"
        "ExecStartPost=/usr/libexec/tool-helper\n\n[Install]\nWantedBy=multi-user.target\n")
    assert cat(raw, "usr/lib/systemd/system/tool.service.d/10-limits.conf") == (
        "[Service]\nExecStartPre=/usr/bin/tool --check\n")
    assert cat(raw, "usr/lib/systemd/system/multi-user.target.d/10-torcx-tool.service.conf"
               ).endswith("[Unit]\nUpholds=tool.service\n")
    assert cat(raw, "usr/lib/extension-release.d/extension-release.tool") == (
        "ID=debian\nVERSION_ID=13\nARCHITECTURE=x86-64\nEXTENSION_RELOAD_MANAGER=1\n")


def test_export_is_reproducible_whatever_the_source_format(tmp_path):
    """The same image packed as tgz and squashfs exports to the same bytes, twice."""
    tree = image_tree(str(tmp_path))
    digests = set()
    for fmt in ("tgz", "squashfs", "tgz"):
        archive = pack_image(tree, "tool", "1", str(tmp_path / f"store-{fmt}"), fmt=fmt,
                             overwrite=True).path
        rc, err = export(archive, str(tmp_path / "out"), "--overwrite")
        assert rc == 0, err
        with open(tmp_path / "out/tool.raw", "rb") as f:
            import hashlib

            digests.add(hashlib.sha256(f.read()).hexdigest())
    assert len(digests) == 1


def test_what_a_sysext_cannot_express_is_refused_with_the_path(tmp_path):
    """Files under /etc and outside the standard folders, and other TORCX_ values, are listed;
    nothing is written."""
    unit = UNIT.replace("ExecStart=", "ExecStartPre=/bin/cat ${TORCX_PROFILE_PATH}\nExecStart=")
    tree = image_tree(str(tmp_path), {"etc/tool.conf": "x\n", "stray/file": "y\n"}, unit=unit)
    archive = pack_image(tree, "tool", "1", str(tmp_path / "store"), fmt="tgz").path
    rc, err = export(archive, str(tmp_path / "out"))
    assert rc == 1
    assert "/etc/tool.conf: under /etc: only /usr content is merged" in err
    assert "/stray/file: outside the standard folders" in err
    assert not os.path.exists(tmp_path / "out/tool.raw")
    tree2 = image_tree(str(tmp_path / "b"), unit=unit)
    archive = pack_image(tree2, "tool", "1", str(tmp_path / "store2"), fmt="tgz").path
    rc, err = export(archive, str(tmp_path / "out"))
    assert rc == 1 and "/usr/lib/systemd/system/tool.service:9: uses TORCX_PROFILE_PATH" in err
