# SPDX-License-Identifier: Apache-2.0
"""A full ``torcx apply`` of the reference tgz profile against the original's way of unpacking.

Issue 12 item 4: the whole apply (a new interpreter: plan, tmpfs, engine
batch, propagate, seal, read-only remount) at least 5x faster than the
original torcx (Go) on the same profile. The original is not packaged and
cannot be fetched here; its apply (``pkg/torcx/perform.go``) unpacks each
image with Go's ``compress/gzip`` and ``archive/tar`` in one goroutine, one
image after the other. The stand-in measured in the same run is GNU tar
``-xzf`` on the three archives one after the other into a fresh tmpfs, as
the issue itself measured it. It flatters the original: gzip inflates in
its own process while tar writes. Where a Go toolchain is installed, a
second stand-in runs too: ``gountar/main.go``, Go's ``compress/gzip`` and
``archive/tar`` one archive after the other, each entry made and its
metadata set by path, as the original did.

The root is set up as a user's machine has it: the vendor profile, the
archives in the vendor store, and the unit plan that ``install-boot`` (the
image builder), ``set-next``, ``populate`` and every apply write
(torcx.boot.prepare): units and each gzip archive's size facts, so the apply
neither scans the archives to size them nor has to plan their units. The
per-phase timings of every timed round (``RUNDIR/apply.json``) go into the
benchmark's extra info (``plan_ms`` and so on) and ``ratios.py`` prints them.
``TORCX_BENCH_BASELINE=SRC`` (a torcx source tree, e.g. ``git archive`` of an
earlier commit) adds the same apply by that code, built in a copy, to the run.

As root both run in a private mount namespace (``unshare -m``) with a real
tmpfs on the unpack folder; otherwise ``--no-mount`` and plain folders.
On a machine busy with other work, ``TORCX_BENCH_RT=1`` (root) runs both
under the real-time FIFO policy (``chrt --fifo 1``), so that each gets the
two cores as it would at boot rather than a share of them.
The untimed normal run (``--benchmark-disable``) checks that both complete.
Timed: ``python3 -m pytest benchmarks/test_apply.py --benchmark-enable
--benchmark-json=apply.json && python3 benchmarks/ratios.py apply.json``
(TORCX_BENCH_FULL=1 for the full 565 MB profile).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time

import contenders
import pytest
from workload import Workload

GROUP = "full-apply"
REFERENCE = "bench"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
PRIVILEGED = os.geteuid() == 0 and shutil.which("unshare") is not None
UNSHARE = ["unshare", "-m", "--propagation", "private"]
if PRIVILEGED and os.environ.get("TORCX_BENCH_RT") == "1":
    UNSHARE = ["chrt", "--fifo", "1", *UNSHARE]


def _make_root(workload: Workload, root: str, source: str) -> str:
    """A root whose vendor profile is the reference workload, its tgz archives in the store,
    and the unit plan prepared by the torcx in ``source`` as install-boot prepares it."""
    profiles = os.path.join(root, "usr/share/torcx/profiles")
    store = os.path.join(root, "usr/share/torcx/store")
    os.makedirs(profiles)
    os.makedirs(store)
    images = [{"name": im.name, "reference": REFERENCE} for im in workload.images]
    with open(os.path.join(profiles, "vendor.json"), "w") as f:
        json.dump({"kind": "profile-manifest-v0", "value": {"images": images}}, f)
    workload.link_tgz_into(store, REFERENCE)
    prepare = ("import sys; from torcx import paths; from torcx.boot.prepare import "
               "prepare_plan; sys.exit(prepare_plan(paths.load(sys.argv[1], environ={})) "
               f"!= {len(images)})")
    run_ok([sys.executable, "-c", prepare, root], cwd=source)
    return root


@pytest.fixture(scope="module")
def reference_root(bench_workload: Workload, tmp_path_factory) -> str:
    """The reference root, prepared by this torcx."""
    return _make_root(bench_workload, str(tmp_path_factory.mktemp("apply-reference")), REPO)


@pytest.fixture(scope="module")
def baseline(bench_workload: Workload, tmp_path_factory) -> tuple[str, str]:
    """(source, root): TORCX_BENCH_BASELINE's torcx built in a copy, and its own root."""
    src = os.environ.get("TORCX_BENCH_BASELINE")
    if not src:
        pytest.skip("TORCX_BENCH_BASELINE=SRC (a torcx source tree) adds that code's apply")
    work = tmp_path_factory.mktemp("apply-baseline")
    source = str(work / "src")
    shutil.copytree(src, source, ignore=shutil.ignore_patterns("build", "*.so", ".git"))
    run_ok([sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=source)
    return source, _make_root(bench_workload, str(work / "root"), source)


def launcher(source: str, folder: str) -> str:
    """The ``torcx`` that install-boot installs (``python3 -IS``, an explicit path), with
    torcx from ``source``: a machine never pays for site's start-up and .pth scan, which
    ``python3 -m torcx`` here would add (about 45 ms on this machine)."""
    import _cffi_backend
    import xxhash

    from torcx.boot.install import launcher_text

    path = [source] + [os.path.dirname(m.__file__) for m in (_cffi_backend, xxhash)]
    out = os.path.join(folder, "torcx")
    with open(out, "w") as f:
        f.write(launcher_text(sys.executable, path))
    os.chmod(out, 0o755)
    return out


def torcx_apply(root: str, source: str = REPO) -> list[str]:
    cmd = [launcher(source, os.path.dirname(root)), "--root", root, "apply"]
    return [*UNSHARE, *cmd] if PRIVILEGED else [*cmd, "--no-mount"]


def original_standin(root: str, workload: Workload) -> list[str]:
    """What the original's apply does: a tmpfs, then each image unpacked in turn."""
    unpack = os.path.join(root, "run/torcx/unpack")
    steps = [f"mkdir -p {shlex.quote(unpack)}"]
    if PRIVILEGED:
        steps.append(f"mount -t tmpfs -o mode=0755 tmpfs {shlex.quote(unpack)}")
    for im in workload.images:
        dest = shlex.quote(os.path.join(unpack, im.name))
        steps.append(f"mkdir {dest} && tar -xzf {shlex.quote(im.tgz)} -C {dest}")
    script = " && ".join(steps)
    return [*UNSHARE, "sh", "-c", script] if PRIVILEGED else ["sh", "-c", script]


@pytest.fixture(scope="module")
def gountar(tmp_path_factory) -> str:
    """gountar/main.go built with the installed Go toolchain (the test skips without one)."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("the Go stand-in needs a Go toolchain (Debian golang-go)")
    out = tmp_path_factory.mktemp("gountar")
    binary = str(out / "gountar")
    env = {**ENV, "GOCACHE": str(out / "cache"), "GO111MODULE": "off", "HOME": str(out)}
    subprocess.run([go, "build", "-o", binary, os.path.join(REPO, "benchmarks/gountar/main.go")],
                   env=env, cwd=str(out), check=True)
    return binary


def go_standin(binary: str, root: str, workload: Workload) -> list[str]:
    """The original's unpack rebuilt on Go's standard library, into a fresh tmpfs."""
    unpack = os.path.join(root, "run/torcx/unpack")
    pairs = " ".join(shlex.quote(f"{im.name}={im.tgz}") for im in workload.images)
    steps = [f"mkdir -p {shlex.quote(unpack)}"]
    if PRIVILEGED:
        steps.append(f"mount -t tmpfs -o mode=0755 tmpfs {shlex.quote(unpack)}")
    steps.append(f"{shlex.quote(binary)} {shlex.quote(unpack)} {pairs}")
    script = " && ".join(steps)
    return [*UNSHARE, "sh", "-c", script] if PRIVILEGED else ["sh", "-c", script]


def run_ok(argv: list[str], cwd: str = REPO) -> None:
    """Run ``argv`` in ``cwd`` (``python3 -m torcx`` imports the torcx found there)."""
    done = subprocess.run(argv, env=ENV, cwd=cwd, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    if done.returncode != 0:
        raise AssertionError(f"{argv}: exit {done.returncode}: "
                             f"{done.stderr.decode(errors='replace').strip()}")


def _record(root: str) -> dict | None:
    """The apply's record (RUNDIR/apply.json) of the last run in ``root``, if any."""
    try:
        with open(os.path.join(root, "run/torcx/apply.json")) as f:
            return json.load(f)["value"]
    except (OSError, ValueError, KeyError):
        return None


def _phase_info(records: list[dict]) -> dict:
    """Median and best milliseconds of each phase over the timed rounds, and how the last
    round sized its images (to show whether the unit plan spared the scan)."""
    import statistics

    out = {}
    for phase in sorted({p for r in records for p in r.get("timings", {})}):
        ms = [r["timings"][phase] * 1000 for r in records if phase in r.get("timings", {})]
        out[f"{phase}_ms"] = {"median": round(statistics.median(ms), 2),
                              "min": round(min(ms), 2)}
    if records:
        out["sizing"] = sorted({(im.get("estimate") or {}).get("method", "")
                                for im in records[-1].get("images", [])})
    return out


def _measure(benchmark, tool: str, argv: list[str], root: str, workload: Workload,
             rounds: int, cwd: str = REPO, between: tuple | None = None) -> None:
    """Time ``argv``; ``between`` (tool, argv, root): before each timed round, one round
    of that contender runs, timed too (extra info ``interleaved``)."""
    records = []
    interleaved = []

    def fresh():
        record = _record(root)
        if record is not None:
            records.append(record)
        shutil.rmtree(os.path.join(root, "run"), ignore_errors=True)

    def other_round(timed=True):
        _, other_argv, other_root = between
        shutil.rmtree(os.path.join(other_root, "run"), ignore_errors=True)
        start = time.monotonic()
        run_ok(other_argv)
        if timed:
            interleaved.append(time.monotonic() - start)

    def setup():
        if between is not None:
            other_round()
        fresh()

    benchmark.group = GROUP
    benchmark.extra_info.update(
        set=GROUP, tool=tool, format="tgz", images=[i.name for i in workload.images],
        unpacked_bytes=sum(i.bytes for i in workload.images),
        files=sum(i.files for i in workload.images),
        entries=sum(i.entries for i in workload.images), tmpfs=PRIVILEGED)
    fresh()
    run_ok(argv, cwd)  # untimed: page cache and bytecode caches warm
    if between is not None:
        other_round(timed=False)  # its warm-up too (and a refresh of its unit plan)
    benchmark.pedantic(run_ok, args=(argv, cwd), setup=setup, rounds=rounds, iterations=1)
    # CPU seconds of one more run (GNU time): what it costs whatever else the machine did.
    fresh()
    benchmark.extra_info.update(_phase_info(records[1:]))  # the warm-up's left out
    if interleaved:
        import statistics

        benchmark.extra_info["interleaved"] = {
            "tool": between[0], "min": round(min(interleaved), 4),
            "median": round(statistics.median(interleaved), 4), "rounds": len(interleaved)}
    found = contenders.probe(argv, cwd=cwd)
    benchmark.extra_info.update(peak_rss_kib=found and found.peak_rss_kib,
                                cpu_s=found and round(found.cpu_s, 3))


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar")
def test_original_standin_apply(benchmark, reference_root, bench_workload, bench_rounds):
    """Baseline: a tmpfs, then GNU tar -xzf of the three archives one after the other."""
    _measure(benchmark, "original-standin", original_standin(reference_root, bench_workload),
             reference_root, bench_workload, bench_rounds)
    if not PRIVILEGED:  # with a tmpfs, the output went with the namespace
        for im in bench_workload.images:
            assert os.path.isfile(os.path.join(reference_root, "run/torcx/unpack", im.name,
                                               ".torcx/manifest.json"))


def test_original_go_standin_apply(benchmark, reference_root, bench_workload, bench_rounds,
                                   gountar):
    """Baseline: a tmpfs, then Go's compress/gzip and archive/tar on each archive in turn."""
    _measure(benchmark, "original-go-standin", go_standin(gountar, reference_root,
                                                          bench_workload),
             reference_root, bench_workload, bench_rounds)
    if not PRIVILEGED:
        for im in bench_workload.images:
            assert os.path.isfile(os.path.join(reference_root, "run/torcx/unpack", im.name,
                                               ".torcx/manifest.json"))


def test_torcx_apply(benchmark, reference_root, bench_workload, bench_rounds):
    """`torcx apply` of the reference profile, in a new interpreter, every image applied."""
    _measure(benchmark, "torcx-apply", torcx_apply(reference_root), reference_root,
             bench_workload, bench_rounds)
    # The seal is written after every image applied (a failed one fails the command).
    assert os.path.isfile(os.path.join(reference_root, "run/metadata/torcx"))
    assert os.path.islink(os.path.join(reference_root, "run/torcx/bin/dockerd"))


def test_torcx_apply_baseline(benchmark, reference_root, baseline, bench_workload,
                              bench_rounds):
    """`torcx apply` by the code in TORCX_BENCH_BASELINE, its root prepared by that code,
    each round after one of this torcx's (timed too): interleaved, both meet the same
    moments of a shared machine, which two blocks of rounds one after the other do not."""
    source, root = baseline
    _measure(benchmark, "torcx-apply-baseline", torcx_apply(root, source), root, bench_workload,
             bench_rounds, cwd=source,
             between=("torcx-apply", torcx_apply(reference_root), reference_root))
    assert os.path.isfile(os.path.join(root, "run/metadata/torcx"))
