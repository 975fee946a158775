# SPDX-License-Identifier: Apache-2.0
"""The C engine under AddressSanitizer and UndefinedBehaviorSanitizer, without Python.

csrc/fuzz/fuzz_extract.c is built with gcc's sanitizers and run over a corpus:
good archives in every compression, the hostile corpus, and seeded random
damage to them. Any memory error, leak or undefined behaviour fails the test.
The committed fuzz seeds (csrc/fuzz/corpus) run too. As root each run is chrooted
into a tmpfs of its own in a private mount namespace (sandboxrun.py). The same file
is the libFuzzer target (test_engine_fuzz.py; see its header for longer runs).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
import sandboxrun
import tarkit
from tarkit import directory, hardlink, reg, symlink
from test_engine_verify_agrees import CORPUS

CSRC = Path(__file__).resolve().parents[2] / "csrc"
# The fuzz driver and every translation unit of the engine, as _ffi_build.py compiles them.
SOURCES = ["fuzz/fuzz_extract.c", *sorted(p.name for p in CSRC.glob("*.c"))]

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


def _build(folder: Path, sanitize: str) -> Path:
    out = folder / "fuzz_extract"
    cmd = ["gcc", "-g", "-O1", f"-fsanitize={sanitize}", "-fno-omit-frame-pointer",
           "-std=gnu11", "-D_GNU_SOURCE", '-DTORCX_VERSION="sanitizers"', f"-I{CSRC}",
           *[str(CSRC / s) for s in SOURCES], "-larchive", "-lxxhash", "-lisal",
           "-lpthread",
           "-o", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def driver(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("fuzz"), "address,undefined")


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
    deep = "/".join(["d"] * 400)  # cleanup of a deep staging tree after a refusal
    files.append(tarkit.write_tar(folder / "deep-then-unsafe.tar",
                                  [directory(deep), reg(deep + "/f", b"x"), reg("/abs", b"x")]))
    late = [reg("f", b"shared"), hardlink("h", "f")]  # the list after the files
    files.append(tarkit.write_tar(folder / "late-list.tar",
                                  late + [tarkit.digests_member(tarkit.digest_list(late))]))
    rng = random.Random(7)
    for i in range(120):
        data = bytearray(rng.choice(files[:6]).read_bytes())
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        damaged = folder / f"damaged-{i}"
        damaged.write_bytes(bytes(data))
        files.append(damaged)
    return files


def _seeds(folder: Path) -> list[Path]:
    """The committed fuzz seeds (a reproducer of each past defect), under unique names."""
    folder.mkdir()
    out = []
    for seed in sorted((CSRC / "fuzz" / "corpus").iterdir()):
        out.append(folder / f"seed-{seed.name}")
        shutil.copy(seed, out[-1])
    return out


def _run_sandboxed(program: Path, files: list[Path], work: Path, env: dict, repeat: int = 1):
    """The driver over ``files``, in a chrooted tmpfs of its own (sandboxrun.py) as root."""
    return sandboxrun.run(program, [f"/in/{f.name}" for f in files] * repeat, files, work,
                          env=env, timeout=900)[0]


def test_engine_is_clean_under_sanitizers(driver, tmp_path):
    """No memory error, leak or undefined behaviour on good, hostile and damaged archives."""
    corpus = _corpus(tmp_path) + _seeds(tmp_path / "seeds")
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0",
               UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
    r = _run_sandboxed(driver, corpus, tmp_path / "run", env)
    assert r.returncode == 0 and "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, (
        r.stderr[-4000:])


def _ring_corpus(folder: Path) -> list[Path]:
    """Archives that keep the decode-ahead ring busy, then fail at each place it can."""
    import zlib

    big = [reg(f"f{i}", os.urandom(1 << 20)) for i in range(5)]
    plain = tarkit.write_tar(folder / "big.tar", big + [reg("../x", b"x"),
                                                      reg("tail", os.urandom(3 << 20))])
    data = plain.read_bytes()
    cut = data.index(b"../x") + (1 << 20)
    z = zlib.compressobj(6, zlib.DEFLATED, 31)
    head = z.compress(data[:cut]) + z.flush(zlib.Z_FULL_FLUSH)
    tail = z.compress(data[cut:]) + z.flush()
    broken = folder / "unsafe-then-corrupt.tgz"
    broken.write_bytes(head + b"\xff" * 64 + tail[64:])
    good = tarkit.write_tar(folder / "good.tar", big, digests=True)
    gz = tarkit.compress(good, "gzip")
    truncated = folder / "truncated.tgz"
    truncated.write_bytes(gz.read_bytes()[:gz.stat().st_size // 2])
    return [good, gz, tarkit.compress(good, "zstd"), broken, truncated]


@pytest.mark.skipif(subprocess.run(["gcc", "-fsanitize=thread", "-x", "c", "-", "-o", os.devnull],
                                   input=b"int main(void){return 0;}", capture_output=True
                                   ).returncode != 0 if shutil.which("gcc") else True,
                    reason="needs gcc with ThreadSanitizer")
def test_decode_ahead_ring_is_clean_under_tsan(tmp_path):
    """No data race between the decode-ahead producer and its job thread, on success or failure."""
    tsan = _build(tmp_path, "thread")
    corpus = _ring_corpus(tmp_path)
    env = dict(os.environ, TSAN_OPTIONS="halt_on_error=1:report_signal_unsafe=0")
    r = _run_sandboxed(tsan, corpus, tmp_path / "run", env, repeat=3)
    assert r.returncode == 0 and "ThreadSanitizer" not in r.stderr, r.stderr[-4000:]


def test_harness_cleanup_never_follows_archive_symlinks(driver, tmp_path):
    """The harness removes what it extracted without following an archive's symlinks."""
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o755)
    (outside / "file").write_bytes(b"keep")
    os.chmod(outside, 0o755)
    os.chmod(outside / "file", 0o644)
    archive = tarkit.write_tar(tmp_path / "links.tar", [
        symlink("to-dir", str(outside)), symlink("to-file", str(outside / "file")),
        directory("d"), symlink("d/up", str(outside))])
    work = tmp_path / "work"
    work.mkdir()
    # Outside the sandbox on purpose: the links point at a folder of this test.
    r = subprocess.run([str(driver), str(archive)], env=dict(os.environ, TMPDIR=str(work)),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert oct(outside.stat().st_mode & 0o7777) == oct(0o755)
    assert oct((outside / "file").stat().st_mode & 0o7777) == oct(0o644)
    assert (outside / "file").read_bytes() == b"keep"
    assert list(work.iterdir()) == [], "the harness left its folder behind"
