# SPDX-License-Identifier: Apache-2.0
"""Verifier.verify_file: the policy for any file of a store folder (a sysext image,
say), listed in the store's signed contents by its file name as location."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from torcx import paths as torcx_paths
from torcx import policy
from torcx.errors import PolicyError

RAW = "tools.raw"


def _contents(data: bytes) -> bytes:
    return json.dumps({"kind": "torcx-remote-contents-v1", "value": {"images": [
        {"name": "tools", "versions": [{"version": "1", "format": "erofs",
                                        "hash": "sha512-" + hashlib.sha512(data).hexdigest(),
                                        "location": RAW}]}]}}).encode()


@pytest.fixture
def verifier(root):
    root.vendor_keys("trusted")
    root.policy("vendor", {"user": "signed"})
    with open(os.path.join(root.user_store, RAW), "wb") as f:
        f.write(b"\0sysext image\0" * 1000)
    paths = torcx_paths.load(root.path, environ={})
    return policy.Verifier(policy.load(paths, cmdline=""), paths)


def test_signed_file_passes(root, verifier, gpg_keys):
    """A file the store's signed contents list by location passes, read once."""
    with open(os.path.join(root.user_store, RAW), "rb") as f:
        root.sign_store(doc=_contents(f.read()))
    d = verifier.verify_file(f"/var/lib/torcx/store/{RAW}", "/var/lib/torcx/store")
    assert d.pin_source == "signed" and d.signers == (gpg_keys.fingerprints["trusted"],)
    assert "image file read once" in d.reason


def test_changed_file_is_refused(root, verifier):
    """The same file changed after signing is refused, naming the signed digest."""
    root.sign_store(doc=_contents(b"what was signed"))
    with pytest.raises(PolicyError, match="differs from the signed"):
        verifier.verify_file(f"/var/lib/torcx/store/{RAW}", "/var/lib/torcx/store")


def test_unsigned_store_is_refused(verifier):
    """No signed contents in its store: refused."""
    with pytest.raises(PolicyError, match="is missing"):
        verifier.verify_file(f"/var/lib/torcx/store/{RAW}", "/var/lib/torcx/store")
