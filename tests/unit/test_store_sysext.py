# SPDX-License-Identifier: Apache-2.0
"""systemd-sysext images in a store: ``NAME:REF.torcx.raw`` and the bakery's
``NAME-VERSION-ARCH.raw`` for this machine's architecture."""

from __future__ import annotations

import pytest

from torcx import log as tlog
from torcx import paths as tpaths
from torcx.store import Store, archive_filename, parse_archive_filename

VENDOR = "/usr/share/torcx/store"


@pytest.mark.parametrize("filename, expected", [
    ("docker:24.0.9.torcx.raw", ("docker", "24.0.9", "sysext")),
    ("docker-24.0.9-x86-64.raw", ("docker", "24.0.9", "sysext")),
    ("docker-compose-2.24.0-x86-64.raw", ("docker-compose", "2.24.0", "sysext")),
    ("kubernetes-v1.29.2-x86-64.raw", ("kubernetes", "v1.29.2", "sysext")),
    ("k3s-v1.29.0+k3s1-x86-64.raw", ("k3s", "v1.29.0+k3s1", "sysext")),
    ("cilium-0.15.0-1-x86-64.raw", ("cilium", "0.15.0-1", "sysext")),
    ("docker-24.0.9-arm64.raw", None),  # another architecture: not this machine's image
    ("docker.raw", None),               # no version: not a bakery release name
    ("docker-x86-64.raw", None),
    ("a:b-1-x86-64.raw", None),
])
def test_sysext_file_names(filename, expected):
    """The two documented names of a sysext image, on an x86-64 machine."""
    assert parse_archive_filename(filename, "x86-64") == expected


def test_bakery_name_for_another_architecture():
    """A bakery name counts on the machine its ARCH names."""
    assert parse_archive_filename("docker-24.0.9-arm64.raw", "arm64") == (
        "docker", "24.0.9", "sysext")


def test_archive_filename_of_a_sysext_image():
    """populate stores a fetched sysext image as NAME:REF.torcx.raw."""
    assert archive_filename("docker", "24.0.9", "sysext") == "docker:24.0.9.torcx.raw"


def test_torcx_name_wins_over_bakery_name(tmp_path):
    """For one name:reference in one store, NAME:REF.torcx.raw wins over the bakery name."""
    from torcx import sysext

    store_dir = tmp_path / VENDOR.lstrip("/")
    store_dir.mkdir(parents=True)
    arch = sysext.host_architecture()
    for name in (f"docker-1-{arch}.raw", "docker:1.torcx.raw"):
        (store_dir / name).write_bytes(b"hsqs")
    store = Store(tpaths.load(str(tmp_path), environ={}), log=tlog.NULL)
    found = store.candidates("docker", "1")
    assert [a.path.rsplit("/", 1)[1] for a in found] == ["docker:1.torcx.raw",
                                                        f"docker-1-{arch}.raw"]
