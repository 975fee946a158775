# SPDX-License-Identifier: Apache-2.0
"""Randomly damaged archives: every one either extracts or fails with an ExtractError, cleanly.

A seeded, repeatable run; set TORCX_MUTATIONS=N for a longer one on demand
(e.g. TORCX_MUTATIONS=20000 python3 -m pytest tests/engine/test_engine_mutations.py).
"""

from __future__ import annotations

import os
import random
import shutil

import pytest
import tarkit
from tarkit import directory, hardlink, reg, symlink

from torcx import engine, errors

ITERATIONS = int(os.environ.get("TORCX_MUTATIONS", "300"))
TOOLS = [None, "gzip", "zstd", "xz", "bzip2", "lz4"]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        pos = rng.randrange(len(out))
        op = rng.random()
        if op < 0.6:
            out[pos] = rng.randrange(256)
        elif op < 0.8:
            del out[pos:pos + rng.randint(1, 64)]
        else:
            out[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return bytes(out)


def _run(rng: random.Random, archive: str, dest: str) -> str:
    """Verify, extract, or extract decoding ahead; return 'ok' or the exception class name."""
    mode = rng.choice(["verify", "extract", "decode-ahead"])
    try:
        if mode == "verify":
            engine.verify(archive)
        elif mode == "extract":
            engine.extract(archive, dest)
        else:
            (result,) = engine.extract_many([engine.Job(archive, dest)], threads=2)
            if result.error is not None:
                raise result.error
    except errors.ExtractError as e:
        assert e.message.strip()
        return type(e).__name__
    return "ok" if mode != "verify" else "verified"


@pytest.mark.parametrize("seed", [1, 2])
def test_damaged_archives_fail_cleanly(sandbox, seed):
    """Seeded random damage to archives in every compression never crashes or leaks."""
    rng = random.Random(seed)
    members = [directory("d"), reg("d/a", b"alpha" * 300), symlink("d/l", "a"),
               hardlink("d/h", "d/a"), reg("d/e/f", bytes(range(256)) * 3),
               directory("ro", mode=0o555), reg("ro/x", b"x" * 2000)]
    originals = [sandbox.archive(members, digests=True, compress=tool).read_bytes()
                 for tool in TOOLS]
    damaged = sandbox.archives / "damaged"
    outcomes: dict = {}
    for _ in range(ITERATIONS):
        damaged.write_bytes(_mutate(rng, rng.choice(originals)))
        outcome = _run(rng, str(damaged), str(sandbox.dest))
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if outcome == "ok":
            sandbox.assert_outside_untouched()
            for dirpath, _, _ in os.walk(sandbox.dest):
                os.chmod(dirpath, 0o755)  # read-only folders of the image, for the cleanup
            shutil.rmtree(sandbox.dest)
        assert tarkit.tree_snapshot(sandbox.root) == sandbox.before, outcome
    assert outcomes.get("CorruptArchive", 0) > 0, outcomes
