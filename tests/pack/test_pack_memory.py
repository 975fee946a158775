# SPDX-License-Identifier: Apache-2.0
"""Packing streams: peak RSS stays far below the image size (~250 MB image, < 100 MB RSS)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

IMAGE_MB = 250
RSS_LIMIT_KB = 100 * 1024
SLOW = os.environ.get("TORCX_SLOW") == "1"

# A fresh interpreter starts the packer as its only child, so RUSAGE_CHILDREN is the packer's.
_MEASURE = """
import resource, subprocess, sys
subprocess.run([sys.executable, "-c", sys.argv[1]] + sys.argv[2:], check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""
_PACK = """
import sys
from torcx.pack import pack_image
pack_image(sys.argv[1], "big", "1", sys.argv[2], fmt=sys.argv[3], level=int(sys.argv[4]) or None)
"""


@pytest.fixture(scope="module")
def big_rootfs(tmp_path_factory):
    """~250 MB of incompressible data: one 150 MB file and a hundred 1 MB files."""
    root = tmp_path_factory.mktemp("big") / "rootfs"
    (root / "many").mkdir(parents=True)
    with open(root / "large.bin", "wb") as f:
        for _ in range(IMAGE_MB - 100):
            f.write(os.urandom(1 << 20))
    for i in range(100):
        (root / "many" / f"part-{i:03d}.bin").write_bytes(os.urandom(1 << 20))
    return root


@pytest.mark.parametrize("fmt,level", [
    ("tar", 0),
    pytest.param("tgz", 1, marks=pytest.mark.skipif(not SLOW, reason="~10 s: TORCX_SLOW=1")),
])
def test_peak_rss_stays_under_100_mb(big_rootfs, tmp_path, fmt, level):
    """Packing a ~250 MB image keeps the packer's peak RSS under 100 MB."""
    proc = subprocess.run([sys.executable, "-c", _MEASURE, _PACK, str(big_rootfs),
                           str(tmp_path), fmt, str(level)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    peak_kb = int(proc.stdout.strip().splitlines()[-1])
    archive = tmp_path / f"big:1.torcx.{fmt}"
    assert archive.stat().st_size > IMAGE_MB * 1000 * 1000  # it really packed it all
    assert peak_kb < RSS_LIMIT_KB, f"peak RSS {peak_kb} KB"
