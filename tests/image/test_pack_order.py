# SPDX-License-Identifier: Apache-2.0
"""Member order of the tar formats: .torcx/, then what the manifest propagates, then the rest."""

from __future__ import annotations

import json
import os

import libarchive
import pytest
from packkit import EPOCH, TAR_FORMATS, write

from torcx.image.pack import pack_image

UNITS_MANIFEST = {
    "kind": "image-manifest-v0",
    "value": {"bin": ["/bin"],
              "units": ["/lib/systemd/system/big.service",
                        "/lib/systemd/system/multi-user.target.wants"]},
}


def member_names(archive: str) -> list[str]:
    with libarchive.file_reader(archive) as reader:
        return [e.pathname for e in reader]


def units_and_big_binaries(root):
    """An addon whose units sort after 2 MiB of binaries in bin/."""
    write(root / ".torcx/manifest.json", json.dumps(UNITS_MANIFEST).encode())
    for name in ("a-big", "b-big"):
        write(root / "bin" / name, os.urandom(1 << 20), 0o755)
    units = root / "lib/systemd/system"
    write(units / "big.service", b"[Service]\nExecStart=/run/torcx/bin/a-big\n")
    write(units / "other.service", b"[Service]\n")  # not listed: stays in the tail
    (units / "multi-user.target.wants").mkdir()
    os.symlink("../big.service", units / "multi-user.target.wants/big.service")
    write(root / "lib/other/readme", b"not propagated\n")
    return root


@pytest.mark.parametrize("fmt", TAR_FORMATS)
def test_units_come_before_the_binaries_in_bin(tmp_path, fmt):
    """The listed units and their folders follow .torcx/ directly; bin/ comes after them."""
    root = units_and_big_binaries(tmp_path / "rootfs")
    result = pack_image(str(root), "big", "1", str(tmp_path / "out"), fmt=fmt, epoch=EPOCH)
    assert member_names(result.path) == [
        ".torcx/digests", ".torcx/", ".torcx/manifest.json",
        "lib/", "lib/systemd/", "lib/systemd/system/",
        "lib/systemd/system/big.service",
        "lib/systemd/system/multi-user.target.wants/",
        "lib/systemd/system/multi-user.target.wants/big.service",
        "bin/", "bin/a-big", "bin/b-big",
        "lib/other/", "lib/other/readme",
        "lib/systemd/system/other.service",
    ]


def test_a_unit_alias_link_brings_its_target_forward(tmp_path):
    """A unit listed as a symlink has the link's target (and its folders) in the front part."""
    root = units_and_big_binaries(tmp_path / "rootfs")
    write(root / "usr/lib/systemd/system/real.service", b"[Service]\n")
    os.symlink("../../../usr/lib/systemd/system/real.service",
               root / "lib/systemd/system/alias.service")
    manifest = dict(UNITS_MANIFEST, value={"units": ["/lib/systemd/system/alias.service"]})
    write(root / ".torcx/manifest.json", json.dumps(manifest).encode())
    result = pack_image(str(root), "big", "1", str(tmp_path / "out"), fmt="tar", epoch=EPOCH)
    names = member_names(result.path)
    front = names[:names.index("bin/")]
    assert front == [
        ".torcx/digests", ".torcx/", ".torcx/manifest.json",
        "lib/", "lib/systemd/", "lib/systemd/system/", "lib/systemd/system/alias.service",
        "usr/", "usr/lib/", "usr/lib/systemd/", "usr/lib/systemd/system/",
        "usr/lib/systemd/system/real.service",
    ]
