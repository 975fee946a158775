# SPDX-License-Identifier: Apache-2.0
"""The README's examples run as written: every shell block marked for this test, in an
empty folder, with the real `torcx` command (this checkout) on PATH."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
from torcx_testing import needs_root

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MARKER = "<!-- tests/integration/test_readme.py runs this block as written -->"


def marked_blocks() -> list[str]:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    return re.findall(re.escape(MARKER) + r"\n```sh\n(.*?)\n```\n", text, re.S)


def test_readme_marks_its_runnable_examples():
    """The Building images example is marked (so the test below cannot silently run nothing)."""
    blocks = marked_blocks()
    assert blocks and "torcx image pack rootfs" in blocks[0]


@needs_root
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
@pytest.mark.parametrize("index", range(len(marked_blocks())))
def test_readme_block_runs_as_written(tmp_path, index):
    """The block exits 0 in an empty folder; /var/lib is a private tmpfs for it, so the
    store it writes to (/var/lib/torcx/store) is the example's own."""
    block = marked_blocks()[index]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "torcx").write_text(f'#!/bin/sh\nexec {sys.executable} -m torcx "$@"\n')
    (bindir / "torcx").chmod(0o755)
    script = tmp_path / "example.sh"
    script.write_text(block + "\n")
    work = tmp_path / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCX_")
           and k != "SOURCE_DATE_EPOCH"}
    env.update(PATH=f"{bindir}:{env.get('PATH', '/usr/bin:/bin')}", PYTHONPATH=ROOT)
    r = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         'mount -t tmpfs tmpfs /var/lib && cd "$1" && exec sh -eu "$2"', "sh",
         str(work), str(script)],
        env=env, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    if "torcx image verify" in block:
        assert r.stdout.splitlines()[-1].startswith("OK "), r.stdout
        assert "and its sha512 digest" in r.stdout
