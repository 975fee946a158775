# SPDX-License-Identifier: Apache-2.0
"""A remote can hold systemd-sysext images (format "sysext", a bakery file name as location):
populate fetches one like any archive, as NAME:REF.torcx.raw, with its recorded sha512."""

from __future__ import annotations

import hashlib
import io
import os

from remotekit import contents_doc, write_contents

from torcx import paths as torcx_paths
from torcx.log import Logger
from torcx.remote import populate as remote_populate
from torcx.schemas import ImageRef
from torcx.store import Store


def test_populate_fetches_a_sysext_image(fake_root, http_server):
    """The signed contents list a bakery file; it lands as wasm:17.0.1.torcx.raw, checked."""
    data = b"hsqs" + os.urandom(4096)  # the store reads the format from the name, not bytes
    filename = "wasm-17.0.1-x86-64.raw"
    with open(os.path.join(http_server.state.root, filename), "wb") as f:
        f.write(data)
    sha512 = hashlib.sha512(data).hexdigest()
    write_contents(http_server.state.root, contents_doc([
        {"name": "wasm", "version": "17.0.1", "location": filename, "sha512": sha512,
         "format": "sysext"}]), fake_root.keys)
    fake_root.add_remote("bakery", http_server.url + "/")
    paths = torcx_paths.load(fake_root.path, environ={})
    stream = io.StringIO()
    rc = remote_populate.populate(paths, [ImageRef("wasm", "17.0.1", "bakery")],
                                  log=Logger(stream=stream))
    assert rc == 0, stream.getvalue()
    found = Store(torcx_paths.load(fake_root.path, environ={})).lookup("wasm", "17.0.1")
    assert found.format == "sysext" and found.path.endswith("/wasm:17.0.1.torcx.raw")
    with open(found.host_path, "rb") as f:
        assert f.read() == data
    with open(found.host_path + ".sha512") as f:
        assert f.read().split()[0] == sha512
