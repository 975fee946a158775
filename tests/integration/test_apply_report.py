# SPDX-License-Identifier: Apache-2.0
"""What the apply reports: the --json document field by field, and the generator's log lines."""

from __future__ import annotations

import os
import re

import pytest
import xxhash
from apply_images import FakeRoot
from applykit import apply_json, guard_root, in_mount_namespace, needs_root, torcx


@pytest.fixture
def root(tmp_path):
    guard_root(tmp_path)
    return FakeRoot(tmp_path / "root")


def test_json_report_fields(root):
    """--json gives per-image status, archive, sizes, digests, verification and phase timings."""
    archive = root.add_hello()
    root.profile("vendor", [("hello", "1"), ("ghost", "2")])
    code, rep = apply_json(root.path)
    assert code == 1
    assert rep["status"] == "failed"
    assert (rep["dry_run"], rep["mount"], rep["sealed"]) == (False, False, True)
    assert rep["profiles"]["lower"] == ["vendor"] and rep["profiles"]["upper"] is None
    assert rep["paths"] == {"run_dir": "/run/torcx", "bin_dir": "/run/torcx/bin",
                            "unpack_dir": "/run/torcx/unpack",
                            "profile_path": "/run/torcx/profile.json",
                            "seal_file": "/run/metadata/torcx"}
    assert set(rep["timings"]) == {"plan", "policy", "unpack", "propagate", "seal", "total"}
    assert all(v >= 0 for v in rep["timings"].values())
    assert rep["failed_images"] == ["ghost"]
    hello, ghost = rep["images"]
    assert hello["archive"] == {"path": "/usr/share/torcx/store/hello:1.torcx.tgz",
                                "store": "/usr/share/torcx/store", "format": "tgz",
                                "bytes": os.path.getsize(archive)}
    with open(archive, "rb") as f:
        assert hello["unpack"]["archive_xxh3"] == xxhash.xxh3_128_hexdigest(f.read())
    u = hello["unpack"]
    assert (u["method"], u["compression"], u["verified"]) == ("extract", "gzip", True)
    unpacked = root.host("/run/torcx/unpack/hello")
    assert u["bytes"] == sum(os.path.getsize(os.path.join(top, n))  # the digest list aside
                             for top, _, names in os.walk(unpacked) for n in names
                             if not os.path.islink(os.path.join(top, n))
                             and os.path.join(top, n) != f"{unpacked}/.torcx/digests")
    assert hello["estimate"]["exact"] is True
    assert rep["tmpfs"]["planned_bytes"] == hello["estimate"]["bytes"]
    assert rep["tmpfs"]["size_bytes"] > rep["tmpfs"]["planned_bytes"]
    assert [e["dest"] for e in hello["propagated"]] == [
        "/run/torcx/bin/hello", "/run/systemd/system/hello.service",
        "/run/systemd/system/multi-user.target.wants",
        "/run/systemd/system/multi-user.target.wants/hello.service"]
    assert (ghost["status"], ghost["stage"], ghost["archive"]) == ("failed", "lookup", None)


def test_json_record_is_kept_for_status(root):
    """RUNDIR/apply.json records the same per-image outcome as the --json report."""
    root.add_hello()
    root.profile("vendor", [("hello", "1")])
    _, rep = apply_json(root.path)
    import json

    with open(root.host("/run/torcx/apply.json")) as f:
        record = json.load(f)
    assert record["kind"] == "torcx-apply-record-v0"
    assert record["value"]["images"] == rep["images"]


def generator(path):
    """Run torcx-generator (it mounts: callers run it in a private mount namespace)."""
    res = torcx(path, "--verbose=info", "out1", "out2", "out3", prog="torcx-generator")
    return res.code, res.err


@needs_root
def test_generator_logs_priorities_and_keeps_a_copy(root):
    """As torcx-generator: <N>-prefixed lines per image, a timed summary, a generator.log copy."""
    root.add_hello()
    root.profile("vendor", [("hello", "1"), ("ghost", "2")])
    code, err = in_mount_namespace(generator, root.path)
    assert code == 1
    lines = err.splitlines()
    assert any(re.match(r"^<6>torcx-generator: image hello:1 unpacked tgz ", ln) for ln in lines)
    assert any(ln.startswith("<3>torcx-generator: image ghost:2 failed (lookup)")
               for ln in lines)
    assert re.match(r"^<3>torcx-generator: applied with errors, .*\(\d+\.\d ms\)$", lines[-1])
    with open(root.host("/run/torcx/generator.log")) as f:
        copy = f.read()
    assert "<6>image hello:1 unpacked" in copy and "<3>image ghost:2 failed" in copy


@needs_root
def test_generator_second_run_says_so(root):
    """The generator's second run in a boot logs 'already applied' at info level, exit 0."""
    root.profile("vendor", [])

    def twice(path):
        first = generator(path)
        return first, generator(path)

    first, (code, err) = in_mount_namespace(twice, root.path)
    assert first[0] == 0, first[1]
    assert code == 0
    assert "<6>torcx-generator: already applied this boot" in err.splitlines()[-1]


def test_dry_run_json_marks_images_planned(root):
    """--dry-run --json reports planned images and planned propagation, creating nothing."""
    root.add_hello()
    root.profile("vendor", [("hello", "1")])
    code, rep = apply_json(root.path, "--dry-run")
    assert code == 0
    assert rep["status"] == "dry-run" and rep["sealed"] is False
    assert rep["images"][0]["status"] == "planned"
    assert rep["images"][0]["propagated"][0]["dest"] == "/run/torcx/bin/hello"
    assert not os.path.exists(root.host("/run"))
