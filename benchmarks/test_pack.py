# SPDX-License-Identifier: Apache-2.0
"""Pack throughput per format: ``torcx image pack`` of the reference image trees.

One pack per timed call (``benchmark.pedantic``; removing the previous archive
is the untimed setup). The sources are the workload generator's trees (see
workload.py): the docker-like image of a few large binaries and the
python-like one of many small files, ~22 MB together at the default scale
(TORCX_BENCH_SCALE=F or TORCX_BENCH_FULL=1 for more). Archives land on a tmpfs
when /dev/shm is one. Every call is checked (entries, digest list), so the
suite cannot rot when it runs untimed in the normal test run.

    python3 -m pytest benchmarks/test_pack.py --benchmark-enable
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
from workload import MB, Workload

from torcx.image.formats import FORMATS
from torcx.image.pack import pack_image

IMAGES = ("docker", "python")


@pytest.fixture(scope="module")
def pack_out(tmp_path_factory):
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    folder = tempfile.mkdtemp(prefix="torcx-bench-pack-", dir=base or str(
        tmp_path_factory.mktemp("pack")))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("image_name", IMAGES)
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_pack(benchmark, bench_workload: Workload, pack_out, bench_rounds, fmt, image_name):
    """torcx packs one reference image tree in one format, every file listed in its digests."""
    if fmt in ("squashfs", "erofs"):
        tool = FORMATS[fmt].tool
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (sh scripts/setup.sh)")
    image = bench_workload.image(image_name)
    out = os.path.join(pack_out, f"{image_name}-{fmt}")
    target = os.path.join(out, f"{image_name}:bench.torcx.{fmt}")

    def remove_previous():
        if os.path.exists(target):
            os.unlink(target)

    benchmark.group = f"pack-{image_name}"
    result = benchmark.pedantic(
        pack_image, args=(image.tree, image_name, "bench", out),
        kwargs={"fmt": fmt, "epoch": 1_700_000_000}, rounds=bench_rounds, iterations=1,
        setup=remove_previous)

    assert result.files == _regular_names(image.tree)
    assert os.path.getsize(target) == result.packed_bytes
    benchmark.extra_info.update(format=fmt, image=image_name, unpacked_bytes=result.unpacked_bytes,
                                packed_bytes=result.packed_bytes, files=result.files)
    if benchmark.stats:  # None when timing is disabled
        best = benchmark.stats.stats.min
        benchmark.extra_info.update(mb_per_s=round(result.unpacked_bytes / MB / best, 1),
                                    ratio=round(result.unpacked_bytes / result.packed_bytes, 2))


def _regular_names(tree: str) -> int:
    """Regular files, a file with several hard links once (as pack counts them since
    the figures were unified), the digest list left out."""
    inodes = set()
    for top, _, names in os.walk(tree):
        for name in names:
            path = os.path.join(top, name)
            if os.path.isfile(path) and not os.path.islink(path) \
                    and os.path.relpath(path, tree) != ".torcx/digests":
                st = os.lstat(path)
                inodes.add((st.st_dev, st.st_ino))
    return len(inodes)
