# SPDX-License-Identifier: Apache-2.0
"""The trust policy at apply for systemd-sysext images (real gpg keys, real loop mounts, own
mount namespace): a signed store's contents list them like any archive (a bakery file name
as location included); a changed or unlisted image fails alone in 'policy', unlinked."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess

import pytest
from torcx_testing import in_mount_namespace, needs_root

from torcx import cli
from torcx.sysext import host_architecture

pytestmark = [pytest.mark.privileged, needs_root]


def sysext_image(out, name):
    tree = out + ".tree"
    os.makedirs(os.path.join(tree, "usr/lib/extension-release.d"))
    with open(os.path.join(tree, "usr/lib/extension-release.d", f"extension-release.{name}"),
              "w") as f:
        f.write("ID=_any\n")
    subprocess.run(["mksquashfs", tree, out, "-quiet", "-noappend", "-all-root"], check=True,
                   capture_output=True)
    return out


def _apply(root_path):
    out = io.StringIO()
    rc = cli.main(["--root", root_path, "apply", "--json"], environ={}, stdout=out,
                  stderr=io.StringIO())
    ext = os.path.join(root_path, "run/extensions")
    links = sorted(os.listdir(ext)) if os.path.isdir(ext) else []
    images = {im["name"]: im for im in json.loads(out.getvalue())["value"]["images"]}
    return rc, links, images


def test_signed_store_vouches_for_sysext_images(root):
    """Listed and unchanged: linked, pinned by the signature; changed after signing: refused
    in 'policy', naming the signed digest; the other image still linked."""
    arch = host_architecture()
    store = root.user_store
    bakery = sysext_image(os.path.join(store, f"tools-2.0-{arch}.raw"), "tools")
    sysext_image(os.path.join(store, "extra:1.torcx.raw"), "extra")
    root.vendor_keys("trusted")
    root.policy("vendor", {"user": "signed"})
    root.sign_store()
    root.profile("vendor", [("tools", "2.0"), ("extra", "1")])
    rc, links, images = in_mount_namespace(_apply, root.path)
    assert rc == 0 and links == ["extra.raw", "tools.raw"], images
    assert images["tools"]["trust"]["pin"] == "signed"
    with open(bakery, "r+b") as f:  # a byte changed after signing
        f.seek(100)
        f.write(b"\xff")
    shutil.rmtree(os.path.join(root.path, "run"))  # the next boot
    rc, links, images = in_mount_namespace(_apply, root.path)
    assert rc == 1 and links == ["extra.raw"]
    assert images["tools"]["stage"] == "policy"
    assert "differs from the signed" in images["tools"]["error"]


def test_unsigned_store_refuses_sysext_images(root):
    """A store the policy wants signed but that has no signed contents: refused, unlinked."""
    sysext_image(os.path.join(root.user_store, "extra:1.torcx.raw"), "extra")
    root.vendor_keys("trusted")
    root.policy("vendor", {"user": "signed"})
    root.profile("vendor", [("extra", "1")])
    rc, links, images = in_mount_namespace(_apply, root.path)
    assert rc == 1 and links == []
    assert images["extra"]["stage"] == "policy" and "is missing" in images["extra"]["error"]
