# SPDX-License-Identifier: Apache-2.0
"""Packing streams: peak RSS stays far below the image size (~250 MB image, 2 threads).

tar, tgz and tar.zst stay under 100 MB. tar.xz cannot: at its default level 6
liblzma's threaded encoder alone needs 331 MiB on two threads (``xz -vv -T2 -6``
says so), a fixed amount whatever the input, so its bound is that plus the
tar writer's own memory.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

IMAGE_MB = 250
RSS_LIMIT_KB = 100 * 1024
XZ_RSS_LIMIT_KB = (331 + 50) * 1024  # liblzma's stated need at level 6 on 2 threads + 50 MB
THREADS = 2  # zstd and xz memory grows with the thread count: measure what the issue states
SLOW = os.environ.get("TORCX_SLOW") == "1"

# A fresh interpreter starts the packer as its only child, so RUSAGE_CHILDREN is the packer's.
_MEASURE = """
import resource, subprocess, sys
subprocess.run([sys.executable, "-c", sys.argv[1]] + sys.argv[2:], check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""
_PACK = """
import sys
from torcx.image.pack import pack_image
pack_image(sys.argv[1], "big", "1", sys.argv[2], fmt=sys.argv[3], level=int(sys.argv[4]) or None,
           threads=int(sys.argv[5]))
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


def peak_rss_kb(rootfs, out_dir, fmt: str, level: int) -> int:
    """Pack ``rootfs`` in a fresh interpreter on THREADS threads; its peak RSS in KB."""
    proc = subprocess.run([sys.executable, "-c", _MEASURE, _PACK, str(rootfs), str(out_dir),
                           fmt, str(level), str(THREADS)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    archive = out_dir / f"big:1.torcx.{fmt}"
    assert archive.stat().st_size > IMAGE_MB * 1000 * 1000  # it really packed it all
    return int(proc.stdout.strip().splitlines()[-1])


# level 0: the format's default (zstd 3, xz 6); tgz at level 1 only to keep it quick.
@pytest.mark.parametrize("fmt,level", [
    ("tar", 0),
    ("tar.zst", 0),
    pytest.param("tgz", 1, marks=pytest.mark.skipif(not SLOW, reason="~10 s: TORCX_SLOW=1")),
])
def test_peak_rss_stays_under_100_mb(big_rootfs, tmp_path, fmt, level):
    """Packing a ~250 MB image on two threads keeps the packer's peak RSS under 100 MB."""
    peak_kb = peak_rss_kb(big_rootfs, tmp_path, fmt, level)
    assert peak_kb < RSS_LIMIT_KB, f"peak RSS {peak_kb} KB"


@pytest.mark.skipif(not SLOW, reason="~80 s: TORCX_SLOW=1")
def test_xz_peak_rss_is_liblzma_fixed_need(big_rootfs, tmp_path):
    """tar.xz at level 6 on two threads stays within liblzma's own fixed need plus 50 MB."""
    peak_kb = peak_rss_kb(big_rootfs, tmp_path, "tar.xz", 0)
    assert peak_kb < XZ_RSS_LIMIT_KB, f"peak RSS {peak_kb} KB"
