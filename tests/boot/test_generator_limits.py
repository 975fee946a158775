# SPDX-License-Identifier: Apache-2.0
"""The units of the sandboxed generator (systemd 253+) are read out of the archives ahead
of the boot (torcx.boot.prepare) under the apply's limits: a hostile manifest or unit
member leaves its image out of the plan, the later images are still planned (issue 16
item 2)."""

from __future__ import annotations

import gzip
import io
import json
import tarfile

from torcx import paths as torcx_paths
from torcx.apply import unitplan
from torcx.boot import prepare

UNIT = b"[Service]\nExecStart=/bin/true\n"


def manifest(units):
    return json.dumps({"kind": "image-manifest-v0", "value": {"units": units}}).encode()


def tgz(path, members):
    """A tgz of (name, bytes) members, written in the order given (compresses blanks well)."""
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def plan(tmp_path, bad_members):
    """Image 'bad' (``bad_members``) then image 'good'; returns the names planned."""
    root = tmp_path / "root"
    store = root / "usr/share/torcx/store"
    store.mkdir(parents=True)
    tgz(store / "bad:1.torcx.tgz", bad_members)
    tgz(store / "good:1.torcx.tgz", [
        (".torcx/manifest.json", manifest(["/lib/systemd/system/good.service"])),
        ("lib/systemd/system/good.service", UNIT)])
    profiles = root / "usr/share/torcx/profiles"
    profiles.mkdir(parents=True)
    (profiles / "vendor.json").write_text(json.dumps({"kind": "profile-manifest-v0", "value": {
        "images": [{"name": "bad", "reference": "1"}, {"name": "good", "reference": "1"}]}}))
    paths = torcx_paths.load(str(root), environ={})
    prepare.prepare_plan(paths)
    return sorted(e["name"] for e in unitplan.load(paths).values())


def test_deeply_nested_manifest_fails_its_image_only(tmp_path):
    """A manifest nested 100,000 levels deep (RecursionError) leaves its image out; the
    next image is planned (was: the error ended the whole preparation)."""
    assert plan(tmp_path, [(".torcx/manifest.json", b"[" * 100_000)]) == ["good"]


def test_manifest_above_the_apply_cap_is_refused(tmp_path):
    """A manifest of 5 MiB (blanks before valid JSON) is over the apply's 4 MiB cap."""
    assert plan(tmp_path, [
        (".torcx/manifest.json", b" " * (5 << 20) + manifest(["/u/bad.service"])),
        ("u/bad.service", UNIT)]) == ["good"]


def test_unit_member_above_the_cap_is_refused(tmp_path):
    """A 'unit' of 2 MiB is not planned."""
    assert plan(tmp_path, [
        (".torcx/manifest.json", manifest(["/u/bad.service"])),
        ("u/bad.service", b"#" * (2 << 20))]) == ["good"]


def test_too_many_unit_members_are_refused(tmp_path):
    """A units folder of 4,100 members is more than any image ships."""
    assert plan(tmp_path, [
        (".torcx/manifest.json", manifest(["/u/wants"]))]
        + [(f"u/wants/x{i}.service", UNIT) for i in range(4100)]) == ["good"]
