# SPDX-License-Identifier: Apache-2.0
"""Memory stays bounded whatever the image size: peak RSS does not follow the content size.

Each run happens in a fresh interpreter so its peak RSS (ru_maxrss) is its own;
a tiny archive in the same mode gives the baseline.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

_PEAK_RSS = """
import resource, sys
from torcx import engine
archive, dest, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
(result,) = engine.extract_many([engine.Job(archive, None if dest == "-" else dest)], threads)
assert result.ok, result.error
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

_GROWTH_LIMIT_KIB = 32 << 10


def _zeros_archive(sandbox, size: int, tool: str):
    """A compressed tar of one ``size``-byte file of zeros, streamed (never held in memory)."""
    src = sandbox.archives / f"src-{size}"
    src.mkdir(exist_ok=True)
    with open(src / "zeros", "wb") as f:
        f.truncate(size)  # a hole on disk; tar stores it as plain zeros without --sparse
    out = sandbox.archives / f"{size}.tar.{tool}"
    with open(out, "wb") as dst:
        tar = subprocess.Popen(["tar", "-cf", "-", "-C", str(src), "zeros"],
                               stdout=subprocess.PIPE)
        subprocess.run([tool, "-1", "-q", "-c"], stdin=tar.stdout, stdout=dst, check=True)
        assert tar.wait() == 0
    return out


def _peak_rss_kib(archive, dest, threads: int) -> int:
    r = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(archive), str(dest), str(threads)],
                       stdout=subprocess.PIPE, check=True)
    return int(r.stdout)


@pytest.mark.parametrize("mode,tool,threads,size", [
    ("verify", "zstd", 1, 256 << 20),
    ("verify", "gzip", 2, 256 << 20),
    ("extract", "zstd", 1, 64 << 20),
], ids=["verify-zstd", "verify-gzip-decode-ahead", "extract-zstd"])
def test_peak_rss_does_not_grow_with_content(sandbox, mode, tool, threads, size):
    """Reading a file of hundreds of MiB costs no more memory than a tiny one."""
    small = _zeros_archive(sandbox, 4096, tool)
    big = _zeros_archive(sandbox, size, tool)
    writing = mode == "extract"
    baseline = _peak_rss_kib(small, sandbox.parent / "small" if writing else "-", threads)
    peak = _peak_rss_kib(big, sandbox.dest if writing else "-", threads)
    assert peak - baseline < _GROWTH_LIMIT_KIB, f"peak RSS grew by {peak - baseline} KiB"
    if writing:
        assert (sandbox.dest / "zeros").stat().st_size == size
