# SPDX-License-Identifier: Apache-2.0
"""Cold start of the boot-time apply: a fresh interpreter running one whole apply.

The generator runs at boot before anything else, so what counts is the wall
time of a new process, interpreter start-up included (target: an empty
profile under 60 ms). Each timed call is one subprocess doing a complete
apply (plan, unpack, propagate, seal) on a root whose RUNDIR was removed in
the untimed setup.

Two ways in:
- ``torcx apply --no-mount`` through ``python -m torcx`` (any user);
- as root, the real ``torcx-generator`` launcher (the script install-boot
  writes, ``python3 -IS``) with its tmpfs mount and read-only remount, inside
  ``unshare -m`` so the mounts vanish with the process.

Baselines in the same run: the bare interpreter (and under unshare), and the
"already applied" second run of a boot. The reference profile is the
benchmark workload (docker, kubelet and python shapes; TORCX_BENCH_SCALE).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

ROUNDS = int(os.environ.get("TORCX_BENCH_STARTUP_ROUNDS", "20"))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
UNSHARE = ["unshare", "-m", "--propagation", "private"]

needs_root_unshare = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="the generator mounts: needs root and unshare")


def make_root(base: str, name: str, images=()) -> str:
    """A target root with a vendor profile of ``images`` [(name, reference)]."""
    root = os.path.join(base, name)
    profiles = os.path.join(root, "usr/share/torcx/profiles")
    os.makedirs(profiles, exist_ok=True)
    os.makedirs(os.path.join(root, "usr/share/torcx/store"), exist_ok=True)
    doc = {"kind": "profile-manifest-v0",
           "value": {"images": [{"name": n, "reference": r} for n, r in images]}}
    with open(os.path.join(profiles, "vendor.json"), "w") as f:
        json.dump(doc, f)
    return root


def apply_cmd(root: str) -> list:
    return [sys.executable, "-m", "torcx", "--root", root, "apply", "--no-mount"]


def run_ok(cmd) -> None:
    res = subprocess.run(cmd, env=ENV, cwd=REPO, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    if res.returncode != 0:
        raise AssertionError(f"{cmd} failed: {res.stderr.decode(errors='replace')}")


def timed_fresh(benchmark, root: str, cmd: list) -> None:
    """Time ``cmd`` on ``root``, removing its RUNDIR before every (untimed) round."""
    def setup():
        shutil.rmtree(os.path.join(root, "run"), ignore_errors=True)
        return (cmd,), {}

    setup()
    run_ok(cmd)  # untimed: warms the page cache and the bytecode caches
    benchmark.pedantic(run_ok, setup=setup, rounds=ROUNDS)


@pytest.fixture(scope="module")
def launcher(tmp_path_factory) -> str:
    """The torcx-generator launcher exactly as install-boot writes it, for this interpreter."""
    from torcx.boot.install import launcher_text

    path = str(tmp_path_factory.mktemp("launcher") / "torcx-generator")
    with open(path, "w") as f:
        f.write(launcher_text(sys.executable))
    os.chmod(path, 0o755)
    return path


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """An empty-profile root and a small one holding the two bundled example images."""
    from torcx.image.pack import pack_image

    base = str(tmp_path_factory.mktemp("startup"))
    empty = make_root(base, "empty")
    small = make_root(base, "small", [("hello", "1.0"), ("tools", "1.0")])
    store = os.path.join(small, "usr/share/torcx/store")
    pack_image(os.path.join(REPO, "examples/images/hello"), "hello", "1.0", store, fmt="tgz")
    pack_image(os.path.join(REPO, "examples/images/tools"), "tools", "1.0", store,
               fmt="tar.zst")
    return {"empty": empty, "small": small}


@pytest.fixture(scope="module")
def reference_root(bench_workload, tmp_path_factory) -> str:
    """A root whose vendor profile is the reference workload, its tgz archives in the store."""
    base = str(tmp_path_factory.mktemp("reference"))
    images = [(im.name, "bench") for im in bench_workload.images]
    root = make_root(base, "reference", images)
    store = os.path.join(root, "usr/share/torcx/store")
    bench_workload.link_tgz_into(store, "bench")
    return root


def test_interpreter_baseline(benchmark):
    """Baseline: a bare `python -I -c pass`, the floor of any Python generator."""
    benchmark.pedantic(run_ok, args=([sys.executable, "-I", "-c", "pass"],), rounds=ROUNDS)


def test_cold_apply_empty_profile(benchmark, roots):
    """`torcx apply --no-mount` of an empty profile in a new interpreter."""
    timed_fresh(benchmark, roots["empty"], apply_cmd(roots["empty"]))
    assert os.path.isfile(os.path.join(roots["empty"], "run/metadata/torcx"))


def test_cold_apply_small_profile(benchmark, roots):
    """`torcx apply --no-mount` of the two example images (tgz and tar.zst)."""
    timed_fresh(benchmark, roots["small"], apply_cmd(roots["small"]))
    assert os.path.islink(os.path.join(roots["small"], "run/torcx/bin/hello"))


def test_second_run_in_a_boot(benchmark, roots):
    """The 'already applied' path: RUNDIR exists, the apply must leave at once."""
    root = roots["empty"]
    if not os.path.isdir(os.path.join(root, "run/torcx")):
        run_ok(apply_cmd(root))
    benchmark.pedantic(run_ok, args=(apply_cmd(root),), rounds=ROUNDS)


@needs_root_unshare
def test_unshare_interpreter_baseline(benchmark):
    """Baseline of the generator runs: `unshare -m python -I -c pass`."""
    benchmark.pedantic(run_ok, args=(UNSHARE + [sys.executable, "-I", "-c", "pass"],),
                       rounds=ROUNDS)


@needs_root_unshare
def test_cold_generator_empty_profile(benchmark, roots, launcher):
    """torcx-generator on an empty profile: tmpfs, seal, read-only remount (target < 60 ms)."""
    root = roots["empty"]
    timed_fresh(benchmark, root, UNSHARE + [launcher, "--root", root])
    assert os.path.isfile(os.path.join(root, "run/metadata/torcx"))


@needs_root_unshare
def test_cold_generator_small_profile(benchmark, roots, launcher):
    """torcx-generator on the two example images, with its real mounts."""
    root = roots["small"]
    timed_fresh(benchmark, root, UNSHARE + [launcher, "--root", root])
    assert os.path.islink(os.path.join(root, "run/torcx/bin/hello"))


@needs_root_unshare
def test_cold_generator_reference_profile(benchmark, reference_root, launcher):
    """torcx-generator on the reference profile (benchmark workload, tgz), real mounts."""
    timed_fresh(benchmark, reference_root, UNSHARE + [launcher, "--root", reference_root])
    assert os.path.isfile(os.path.join(reference_root, "run/metadata/torcx"))
