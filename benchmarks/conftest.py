# SPDX-License-Identifier: Apache-2.0
"""Fixtures of the extraction benchmarks: the cached workload and a tmpfs output folder.

Environment:
  TORCX_BENCH_FULL=1     full reference size (565 MB unpacked) instead of 1/20th
  TORCX_BENCH_SCALE=F    any other scale (default 0.05)
  TORCX_BENCH_CACHE=DIR  where generated workloads are kept (default /var/tmp)
  TORCX_BENCH_OUT=DIR    where extractions land (default /dev/shm, a tmpfs)
  TORCX_BENCH_ROUNDS=N   timed rounds per contender (default 3)
  TORCX_BENCH_RT=1       as root, test_apply.py runs both contenders under chrt --fifo 1
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import pytest

# The helper modules sit next to this file (needed under --import-mode=importlib too).
sys.path.insert(0, os.path.dirname(__file__))

import contenders  # noqa: E402
import workload  # noqa: E402


def _fstype(path: str) -> str:
    """Filesystem type of the mount holding ``path`` (from /proc/self/mounts)."""
    path = os.path.realpath(path)
    best, kind = "", ""
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            mount = fields[1].replace("\\040", " ")
            if (path == mount or path.startswith(mount.rstrip("/") + "/")) \
                    and len(mount) > len(best):
                best, kind = mount, fields[2]
    return kind


@pytest.fixture(scope="session")
def bench_workload() -> workload.Workload:
    missing = [p for p in ("tar", "pigz", "zstd") if shutil.which(p) is None]
    if missing:
        pytest.skip(f"generating the workload needs {', '.join(missing)} (sh scripts/setup.sh)")
    work = workload.ensure()
    # Read everything once so every contender starts from the page cache.
    for image in work.images:
        for path in (image.tgz, image.zst):
            with open(path, "rb") as f:
                while f.read(1 << 20):
                    pass
        for dirpath, _, filenames in os.walk(image.tree):
            for name in filenames:
                with open(os.path.join(dirpath, name), "rb") as f:
                    while f.read(1 << 20):
                        pass
    return work


@pytest.fixture(scope="session")
def bench_out(bench_workload: workload.Workload, tmp_path_factory):
    """A fresh output path on a tmpfs (the same kind of folder for every contender)."""
    base = os.environ.get("TORCX_BENCH_OUT") or "/dev/shm"
    if not os.path.isdir(base) or _fstype(base) != "tmpfs":
        base = str(tmp_path_factory.mktemp("bench-out"))
    need = 2 * sum(i.bytes for i in bench_workload.images)
    if shutil.disk_usage(base).free < need:
        pytest.skip(f"{base}: less than {need >> 20} MiB free for the extractions")
    folder = tempfile.mkdtemp(prefix="torcx-bench-", dir=base)
    try:
        yield os.path.join(folder, "out")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def bench_rounds() -> int:
    return int(os.environ.get("TORCX_BENCH_ROUNDS", "3"))


@pytest.fixture(scope="session")
def interpreter_rss_kib() -> int | None:
    """Max RSS of a Python child that only imports the in-process contenders' modules."""
    modules = ["tarfile"]
    for name in ("libarchive", "torcx.engine"):
        try:
            __import__(name)
            modules.append(name)
        except ImportError:
            pass
    found = contenders.probe([sys.executable, "-c", f"import {', '.join(modules)}"])
    return found.peak_rss_kib if found else None
