# SPDX-License-Identifier: Apache-2.0
"""populate keeps the remote's signed contents next to the archives, so a node with
no key of its own applies them under a signed policy for the user store."""

from __future__ import annotations

import os

from applykit import apply_json, torcx
from policykit import SIGNED
from remotekit import FakeRoot, publish


def test_populated_store_applies_under_a_signed_policy(tmp_path, gpg_keys):
    """Fetched through a file:// remote, then applied with the vendor's key only."""
    root = FakeRoot(str(tmp_path / "root"), gpg_keys)
    publish(os.path.join(root.path, "srv/remote"), [("docker", "20.10")], gpg_keys)
    root.add_remote("main", "file:///srv/remote/")
    root.add_profile("fleet", [("docker", "20.10", "main")])
    res = torcx(root.path, "profile", "populate", "--name", "fleet")
    assert res.code == 0, res.err
    assert sorted(os.listdir(root.store)) == ["docker:20.10.torcx.tgz", SIGNED]

    root.write("usr/share/torcx/keys/vendor.asc", gpg_keys.armored("trusted"))
    root.write("usr/share/torcx/policy.json",
               b'{"kind": "torcx-policy-v0", "value": {"stores": {"user": "signed"}}}')
    root.write("etc/torcx/next-profile", b"fleet\n")
    code, rep = apply_json(root.path)
    assert code == 0, rep
    (image,) = rep["images"]
    assert image["trust"]["pin"] == "signed"
    assert image["trust"]["store"] == "/var/lib/torcx/store/3510.2.0"
