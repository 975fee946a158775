# SPDX-License-Identifier: Apache-2.0
"""Extraction of the reference images: the torcx engine against the usual tools.

One contender per test, one timed operation per test (``benchmark.pedantic``
with emptying the output folder as untimed setup). Every contender writes
into the same kind of folder (a tmpfs) from the page cache. Each test also
checks that every file and byte landed, so the suite cannot rot when it runs
untimed (``--benchmark-disable``, the default) in the normal test run.

Timed run and the issue's ratios:
    python3 -m pytest benchmarks/test_extract.py --benchmark-enable \
        --benchmark-json=bench.json
    python3 benchmarks/ratios.py bench.json
(TORCX_BENCH_FULL=1 for the full 565 MB reference size.)
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Sequence

import pytest
from contenders import Contender
from workload import MB, Image, Workload

THREE_IMAGES = [
    Contender("torcx-engine", "tgz"),
    Contender("torcx-engine-1thread", "tgz"),
    Contender("torcx-engine", "zst"),
    Contender("gnu-tar", "tgz"),
    Contender("gnu-tar-pigz", "tgz"),
    Contender("gnu-tar-zstd", "zst"),
    Contender("bsdtar", "tgz"),
    Contender("python-tarfile", "tgz"),
    Contender("libarchive-c", "tgz"),
    Contender("cp-a", "tree"),
]
SINGLE_LARGE = [Contender("torcx-engine", "tgz"), Contender("gnu-tar", "tgz")]
LARGE_IMAGE = "docker"


def _written(out: str, images: Sequence[Image]) -> tuple[int, int]:
    """(regular files, their bytes) under each image's folder, hard links counted once."""
    seen = set()
    size = 0
    for image in images:
        for dirpath, _, filenames in os.walk(os.path.join(out, image.name)):
            for name in filenames:
                st = os.lstat(os.path.join(dirpath, name))
                if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    size += st.st_size
    return len(seen), size


def _measure(benchmark, contender: Contender, images: Sequence[Image], out: str,
             group: str, rounds: int, interpreter_rss_kib: int) -> None:
    reason = contender.missing()
    if reason:
        pytest.skip(reason)
    files = sum(i.files for i in images)
    size = sum(i.bytes for i in images)
    benchmark.group = group
    benchmark.extra_info.update(
        set=group, tool=contender.tool, format=contender.fmt, images=[i.name for i in images],
        unpacked_bytes=size, files=files, entries=sum(i.entries for i in images))

    results = benchmark.pedantic(contender.run, args=(images, out), rounds=rounds,
                                 iterations=1, setup=lambda: contender.prepare(images, out))

    assert _written(out, images) == (files, size), f"{contender.label}: incomplete output"
    if contender.tool.startswith("torcx-engine"):
        # The images carry .torcx/digests: the engine must have checked every file.
        assert all(r.verified for r in results), f"{contender.label}: not verified"
    if benchmark.stats:  # None when timing is disabled
        best = benchmark.stats.stats.min
        benchmark.extra_info.update(mb_per_s=round(size / MB / best, 1),
                                    files_per_s=round(files / best))
    found = contender.probe(images, out)
    benchmark.extra_info.update(peak_rss_kib=found and found.peak_rss_kib,
                                cpu_s=found and round(found.cpu_s, 3))
    if contender.commands(images, out)[0][0] == sys.executable:
        benchmark.extra_info["interpreter_rss_kib"] = interpreter_rss_kib


@pytest.mark.parametrize("contender", THREE_IMAGES, ids=lambda c: f"{c.tool}-{c.fmt}")
def test_three_images(benchmark, contender, bench_workload: Workload, bench_out,
                      bench_rounds, interpreter_rss_kib):
    """The contender extracts the three reference images, every file and byte of them."""
    _measure(benchmark, contender, bench_workload.images, bench_out, "three-images",
             bench_rounds, interpreter_rss_kib)


@pytest.mark.parametrize("contender", SINGLE_LARGE, ids=lambda c: f"{c.tool}-{c.fmt}")
def test_single_large_tgz(benchmark, contender, bench_workload: Workload, bench_out,
                          bench_rounds, interpreter_rss_kib):
    """The contender extracts the docker-like image of large binaries completely."""
    _measure(benchmark, contender, [bench_workload.image(LARGE_IMAGE)], bench_out,
             "single-large-tgz", bench_rounds, interpreter_rss_kib)
