# SPDX-License-Identifier: Apache-2.0
"""systemd-sysext images in a profile, applied with real loop mounts (own mount namespace):
a passing image is linked into /run/extensions, a failing one fails alone and the record
(torcx status) names the rule and the values."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "integration"))
from apply_images import FakeRoot  # noqa: E402
from applykit import guard_root, in_mount_namespace, needs_root, torcx  # noqa: E402

from torcx import cli  # noqa: E402
from torcx.sysext import host_architecture  # noqa: E402

pytestmark = [pytest.mark.privileged, needs_root]


def sysext_image(work, out, name, release, fmt="squashfs", os_release=False):
    """A bakery-style sysext image: usr/bin, a unit, the release file; returns ``out``."""
    tree = os.path.join(work, f"tree-{os.path.basename(out)}")
    rel = os.path.join(tree, "usr/lib/extension-release.d")
    os.makedirs(rel)
    os.makedirs(os.path.join(tree, "usr/bin"))
    with open(os.path.join(rel, f"extension-release.{name}"), "w") as f:
        f.write(release)
    with open(os.path.join(tree, "usr/bin", name), "w") as f:
        f.write("#!/bin/sh\n")
    if os_release:
        with open(os.path.join(tree, "usr/lib/os-release"), "w") as f:
            f.write("ID=other\n")
    if fmt == "squashfs":
        cmd = ["mksquashfs", tree, out, "-quiet", "-noappend", "-all-root"]
    else:
        cmd = ["mkfs.erofs", out, tree]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


@pytest.fixture
def root(tmp_path):
    guard_root(tmp_path)
    r = FakeRoot(tmp_path / "root")
    os.makedirs(r.host("/etc"))
    with open(r.host("/etc/os-release"), "w") as f:
        f.write('ID=debian\nVERSION_ID="13"\n')
    return r


def _apply(root_path):
    res = torcx(root_path, "apply", "--json")
    assert res.out.startswith("{"), res.err
    ext = os.path.join(root_path, "run/extensions")
    links = {n: os.readlink(os.path.join(ext, n)) for n in sorted(os.listdir(ext))} \
        if os.path.isdir(ext) else {}
    status = torcx(root_path, "status", "--json")
    text = torcx(root_path, "status")
    return res.code, res.json["value"], links, status.json["value"], text.out


def test_passing_images_are_linked_a_failing_one_fails_alone(root):
    """squashfs (torcx name) and erofs (bakery name) pass and are linked; a wrong ID fails
    alone, and status names the rule and the values."""
    arch = host_architecture()
    store = root.store
    sysext_image(root.work, os.path.join(store, "sq:1.torcx.raw"), "sq", "ID=_any\n")
    er = sysext_image(root.work, os.path.join(store, f"er-2.0-{arch}.raw"), "er",
                      f"ID=debian\nVERSION_ID=13\nARCHITECTURE={arch}\n", fmt="erofs")
    sysext_image(root.work, os.path.join(store, "bad:1.torcx.raw"), "bad",
                 "ID=fedora\nVERSION_ID=40\n")
    with open(os.path.join(store, "SHA256SUMS"), "w") as f:
        f.write(f"{hashlib.sha256(open(er, 'rb').read()).hexdigest()}  {os.path.basename(er)}\n")
    root.profile("vendor", [("sq", "1"), ("er", "2.0"), ("bad", "1")])
    code, rep, links, status, text = in_mount_namespace(_apply, root.path)
    assert code == 1 and rep["failed_images"] == ["bad"]
    assert links == {"sq.raw": "/usr/share/torcx/store/sq:1.torcx.raw",
                     "er.raw": f"/usr/share/torcx/store/er-2.0-{arch}.raw"}
    images = {im["name"]: im for im in status["images"]}
    assert images["sq"]["sysext"]["fstype"] == "squashfs"
    assert images["er"]["sysext"]["fstype"] == "erofs"
    assert images["er"]["status"] == "ok" and images["er"]["verified"] is True
    bad = images["bad"]
    assert bad["status"] == "failed" and bad["stage"] == "extension-release"
    assert bad["sysext"]["refusal"] == {
        "rule": "ID", "message": "ID='fedora' but the host is 'debian'",
        "values": {"ID": "fedora", "host": "debian", "host_id_like": []}}
    assert "bad:1  extension-release: /usr/share/torcx/store/bad:1.torcx.raw: ID: " \
           "ID='fedora' but the host is 'debian'" in text
    assert "er:2.0  sysext erofs" in text


def test_digest_mismatch_and_os_release_fail(root):
    """A file SHA256SUMS disagrees with, and an image carrying usr/lib/os-release, fail."""
    store = root.store
    sysext_image(root.work, os.path.join(store, "sums:1.torcx.raw"), "sums", "ID=_any\n")
    sysext_image(root.work, os.path.join(store, "osr:1.torcx.raw"), "osr", "ID=_any\n",
                 os_release=True)
    with open(os.path.join(store, "SHA256SUMS"), "w") as f:
        f.write(f"{'0' * 64}  sums:1.torcx.raw\n")
    root.profile("vendor", [("sums", "1"), ("osr", "1")])
    code, rep, links, status, _text = in_mount_namespace(_apply, root.path)
    images = {im["name"]: im for im in status["images"]}
    assert code == 1 and links == {}
    assert images["sums"]["stage"] == "digest" and "SHA256SUMS" in images["sums"]["error"]
    assert images["osr"]["sysext"]["refusal"]["rule"] == "os-release"


def test_not_a_file_system(root):
    """A .torcx.raw that is neither squashfs nor erofs fails by its superblock."""
    with open(os.path.join(root.store, "junk:1.torcx.raw"), "wb") as f:
        f.write(bytes(8192))
    root.profile("vendor", [("junk", "1")])
    code, rep, links, status, _text = in_mount_namespace(_apply, root.path)
    assert code == 1 and links == {}
    assert "not a squashfs or erofs image" in status["images"][0]["error"]


def test_trust_policy_checks_the_recorded_digest(root):
    """The trust policy treats a sysext image as a mounted image: the sha512 recorded beside
    it (NAME:REF.torcx.raw.sha512) is checked; a different one fails the image in 'policy'."""
    store = root.store
    good = sysext_image(root.work, os.path.join(store, "rec:1.torcx.raw"), "rec", "ID=_any\n")
    sysext_image(root.work, os.path.join(store, "other:1.torcx.raw"), "other", "ID=_any\n")
    with open(good + ".sha512", "w") as f:
        f.write(f"{hashlib.sha512(open(good, 'rb').read()).hexdigest()}  rec:1.torcx.raw\n")
    with open(os.path.join(store, "other:1.torcx.raw.sha512"), "w") as f:
        f.write(f"{'ab' * 64}  other:1.torcx.raw\n")
    root.profile("vendor", [("rec", "1"), ("other", "1")])
    code, rep, links, status, text = in_mount_namespace(_apply, root.path)
    images = {im["name"]: im for im in status["images"]}
    assert code == 1 and list(links) == ["rec.raw"]
    assert "trust (vendor store, integrity): integrity: image-file sha512 matches" in text
    assert images["rec"]["verified"] is True
    assert images["rec"]["trust"]["pin"] == "recorded"
    assert images["other"]["stage"] == "policy"
    assert "differs from" in images["other"]["error"]


def test_trust_policy_checks_a_recorded_xxh128(root):
    """A digest recorded the way pack records it (NAME:REF.torcx.raw.xxh128) is checked too."""
    import xxhash

    store = root.store
    img = sysext_image(root.work, os.path.join(store, "xx:1.torcx.raw"), "xx", "ID=_any\n")
    with open(img + ".xxh128", "w") as f:
        f.write(f"{'0' * 32}  xx:1.torcx.raw\n")
    root.profile("vendor", [("xx", "1")])
    code, rep, links, status, _text = in_mount_namespace(_apply, root.path)
    assert code == 1 and links == {} and status["images"][0]["stage"] == "policy"
    with open(img + ".xxh128", "w") as f:
        f.write(f"{xxhash.xxh3_128_hexdigest(open(img, 'rb').read())}  xx:1.torcx.raw\n")
    shutil.rmtree(root.host("/run"))  # the next boot
    code, rep, links, status, _text = in_mount_namespace(_apply, root.path)
    assert code == 0 and list(links) == ["xx.raw"] and status["images"][0]["verified"] is True


def _generate(root_path, outputs):
    err = io.StringIO()
    rc = cli.main(["--root", root_path, *outputs], prog="torcx-generator", environ={},
                  stderr=err)
    wants = os.path.join(outputs[0], "sysinit.target.wants", "systemd-sysext.service")
    return rc, os.path.islink(wants), os.path.islink(os.path.join(root_path,
                                                                 "run/extensions/g.raw"))


def test_generator_applying_by_itself_pulls_in_systemd_sysext(root, tmp_path):
    """Where the generator applies (systemd <= 252), it links the image and wants
    systemd-sysext.service in its output folder."""
    sysext_image(root.work, os.path.join(root.store, "g:1.torcx.raw"), "g", "ID=_any\n")
    root.profile("vendor", [("g", "1")])
    outputs = [str(tmp_path / d) for d in ("normal", "early", "late")]
    assert in_mount_namespace(_generate, root.path, outputs) == (0, True, True)
