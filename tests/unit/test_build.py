# SPDX-License-Identifier: Apache-2.0
"""The build and the checkout: a stripped engine in release builds, symbols under --debug;
what the benchmarks write is ignored by git."""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build(tmp_path, *flags):
    out = tmp_path / ("debug" if flags else "release")
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", *flags,
                    "--build-lib", str(out / "lib"), "--build-temp", str(tmp_path / "tmp")],
                   cwd=ROOT, check=True, capture_output=True)
    (so,) = glob.glob(str(out / "lib/torcx/_native*.so"))
    sections = subprocess.run(["readelf", "-S", so], capture_output=True, text=True,
                              check=True).stdout
    return so, sections


@pytest.mark.skipif(shutil.which("readelf") is None, reason="needs readelf (binutils)")
def test_release_build_is_stripped_and_debug_build_keeps_symbols(tmp_path):
    """build_ext links with -s (no .symtab, still loadable); build_ext --debug keeps
    .symtab and the debug information."""
    so, sections = build(tmp_path)
    assert ".symtab" not in sections and ".debug_info" not in sections
    spec = importlib.util.spec_from_file_location("torcx._native", so)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the dynamic symbols Python needs are kept
    assert module.lib.torcx_version()
    debug_so, debug_sections = build(tmp_path, "--debug")
    assert ".symtab" in debug_sections and ".debug_info" in debug_sections
    assert os.path.getsize(so) < os.path.getsize(debug_so) * 0.6


@pytest.mark.skipif(not os.path.isdir(os.path.join(ROOT, ".git"))
                    and not os.path.isfile(os.path.join(ROOT, ".git")),
                    reason="not a git checkout")
def test_benchmark_output_is_ignored_by_git():
    """The README's benchmark command writes bench.json into the checkout: git ignores it."""
    r = subprocess.run(["git", "check-ignore", "-q", "bench.json"], cwd=ROOT)
    assert r.returncode == 0
