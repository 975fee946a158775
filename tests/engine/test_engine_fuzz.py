# SPDX-License-Identifier: Apache-2.0
"""libFuzzer with AddressSanitizer and UndefinedBehaviorSanitizer over the seed corpus.

csrc/fuzz/fuzz_extract.c is built with clang and runs for TORCX_FUZZ_SECONDS (60 by
default) over csrc/fuzz/corpus, which holds a reproducer of each defect the engine
had. It runs chrooted into a tmpfs of its own in a private mount namespace (sandboxrun.py):
whatever an input makes (symlinks anywhere, setuid files, thousands of folders),
nothing outside that tmpfs is touched, and the tmpfs vanishes with the namespace. A
crashing input is copied out to the test's temporary folder and named in the failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import sandboxrun

CSRC = Path(__file__).resolve().parents[2] / "csrc"
CORPUS = CSRC / "fuzz" / "corpus"

pytestmark = [
    pytest.mark.fuzz,
    pytest.mark.skipif(not sandboxrun.available(), reason="needs root (a private mount namespace)"),
    pytest.mark.skipif(shutil.which("clang") is None, reason="needs clang (sh scripts/setup.sh)"),
]

def _build(out: Path) -> Path:
    sources = [str(p) for p in sorted(CSRC.glob("*.c"))]
    cmd = ["clang", "-g", "-O1", "-fsanitize=fuzzer,address,undefined",
           "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer", "-DTORCX_LIBFUZZER",
           "-D_GNU_SOURCE", '-DTORCX_VERSION="fuzz"', f"-I{CSRC}",
           str(CSRC / "fuzz" / "fuzz_extract.c"), *sources,
           "-larchive", "-lxxhash", "-lisal", "-lpthread", "-o", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-4000:]
    return out


def test_corpus_holds_a_reproducer_of_each_defect():
    """The committed corpus has the seeds fuzz_corpus.py makes, one per defect at least."""
    names = {p.name for p in CORPUS.iterdir()}
    for item in ("defect1", "defect2", "defect3", "defect45", "defect6", "defect7", "defect8",
                 "defect10"):
        assert any(n.startswith(item + "-") for n in names), item


def test_libfuzzer_finds_nothing(tmp_path):
    """TORCX_FUZZ_SECONDS of libFuzzer (ASan+UBSan) over the corpus: no crash, leak or UB."""
    fuzzer = _build(tmp_path / "fuzz_extract")
    seconds = int(os.environ.get("TORCX_FUZZ_SECONDS", "60"))
    seeds = sorted(CORPUS.iterdir())
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1",
               UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
    # /in is the working corpus (seeds copied there, new inputs added), crashes go to /out.
    r, out = sandboxrun.run(fuzzer, [f"-max_total_time={seconds}", "-timeout=60",
                                     "-rss_limit_mb=3072", "-artifact_prefix=/out/",
                                     "-print_final_stats=1", "/in"],
                            seeds, tmp_path, env=env, timeout=seconds + 600)
    crashes = sorted(p.name for p in out.iterdir())
    assert r.returncode == 0 and not crashes, (
        f"libFuzzer failed ({r.returncode}); inputs kept in {out}: {crashes}\n{r.stderr[-6000:]}")
    assert "stat::number_of_executed_units" in r.stderr, r.stderr[-2000:]
