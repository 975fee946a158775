# SPDX-License-Identifier: Apache-2.0
"""The C engine under AddressSanitizer and UndefinedBehaviorSanitizer, without Python.

csrc/fuzz/fuzz_extract.c is built with gcc's sanitizers and run over a corpus:
good archives in every compression, the hostile corpus, and seeded random
damage to them. Any memory error, leak or undefined behaviour fails the test.
The same file is the libFuzzer target (see its header) for longer runs.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
import tarkit
from tarkit import directory, hardlink, reg, symlink
from test_engine_verify_agrees import CORPUS

CSRC = Path(__file__).resolve().parents[2] / "csrc"
SOURCES = ["fuzz/fuzz_extract.c", "engine.c", "source.c", "sha256.c"]

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


@pytest.fixture(scope="module")
def driver(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fuzz") / "fuzz_extract"
    cmd = ["gcc", "-g", "-O1", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
           "-std=gnu11", "-D_GNU_SOURCE", '-DTORCX_VERSION="sanitizers"', f"-I{CSRC}",
           *[str(CSRC / s) for s in SOURCES], "-larchive", "-lxxhash", "-lisal", "-lpthread",
           "-o", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


def _corpus(folder: Path) -> list[Path]:
    good = [directory("d"), reg("d/a", b"alpha" * 3000), symlink("d/l", "a"),
            hardlink("d/h", "d/a"), reg("d/e", b""), reg("big", os.urandom(300_000))]
    files = []
    base = tarkit.write_tar(folder / "good.tar", good, digests=True)
    files.append(base)
    for tool in ("gzip", "zstd", "xz", "bzip2", "lz4"):
        files.append(tarkit.compress(base, tool))
    for name, members in CORPUS.items():
        files.append(tarkit.write_tar(folder / f"hostile-{name}.tar",
                                      members("/nonexistent-sentinel")))
    rng = random.Random(7)
    for i in range(120):
        data = bytearray(rng.choice(files[:6]).read_bytes())
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        damaged = folder / f"damaged-{i}"
        damaged.write_bytes(bytes(data))
        files.append(damaged)
    return files


def test_engine_is_clean_under_sanitizers(driver, tmp_path):
    """No memory error, leak or undefined behaviour on good, hostile and damaged archives."""
    corpus = _corpus(tmp_path)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0",
               UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1", TMPDIR=str(tmp_path))
    r = subprocess.run([str(driver), *map(str, corpus)], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0 and "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, (
        r.stderr[-4000:])
