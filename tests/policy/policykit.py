# SPDX-License-Identifier: Apache-2.0
"""A fake root with a vendor store and a user store, vendor keys, policy files and
signed store contents made with real gpg keys (tests/torcx_testing.GpgKeys)."""

from __future__ import annotations

import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "remote"))  # remotekit, for populate tests

from apply_images import FakeRoot, image_tree, pack, write  # noqa: E402
from torcx_testing import GpgKeys  # noqa: E402

from torcx.remote.contents import contents_doc  # noqa: E402

SIGNED = "torcx_remote_contents.json.asc"

__all__ = ["GpgKeys", "PolicyRoot", "image_tree", "pack", "write"]


class PolicyRoot(FakeRoot):
    """FakeRoot plus the user store, keys and the trust files of each store."""

    def __init__(self, path, keys: GpgKeys):
        super().__init__(path)
        self.keys = keys
        self.user_store = self.host("/var/lib/torcx/store")
        os.makedirs(self.user_store, exist_ok=True)

    def user_image(self, name, fmt="tgz", reference="1", digests=False):
        """An image with a bin and a unit (or with files and a digest list), in the user
        store."""
        archive = (self.add_image(name, reference, fmt, files={"a": "alpha", "d/b": "beta"},
                                  digests=True) if digests
                   else self.add_hello(reference, fmt, name))
        moved = os.path.join(self.user_store, os.path.basename(archive))
        shutil.move(archive, moved)
        return moved

    def vendor_keys(self, who="trusted"):
        write(self.host(f"/usr/share/torcx/keys/{who}.asc"), self.keys.armored(who).decode())

    def admin_keys(self, who):
        write(self.host(f"/etc/torcx/keys/{who}.asc"), self.keys.armored(who).decode())

    def policy(self, where, stores=None, **extra):
        folder = "/usr/share/torcx" if where == "vendor" else "/etc/torcx"
        value = dict(extra)
        if stores is not None:
            value["stores"] = stores
        write(self.host(f"{folder}/policy.json"),
              json.dumps({"kind": "torcx-policy-v0", "value": value}))

    def cmdline(self, text):
        write(self.host("/proc/cmdline"), text + "\n")

    def contents(self, store=None):
        """The torcx-remote-contents-v1 document of a store folder, as bytes."""
        return json.dumps(contents_doc(store or self.user_store)).encode()

    def sign_store(self, store=None, who="trusted", doc=None):
        store = store or self.user_store
        signed = self.keys.clearsign(doc if doc is not None else self.contents(store), who)
        with open(os.path.join(store, SIGNED), "wb") as f:
            f.write(signed)
        return signed
