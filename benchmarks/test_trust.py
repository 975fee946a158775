# SPDX-License-Identifier: Apache-2.0
"""What trust costs at boot (issue 11), each set in one run:

- ``trust-squashfs``: the reference profile packed by ``torcx image pack`` as
  squashfs, in a user store. Baselines: loop-mounting the three images
  (what the original torcx does), and that plus one sequential read of the
  three image files (the target's floor). Contenders: the old check (mount,
  then every file against ``.torcx/digests``), and the whole ``torcx apply``
  (tmpfs, policy, mounts, propagation, seal) with a ``signed`` policy for the
  user store (one gpgv, the image files digested in parallel) and with no
  policy (the XXH3-128 digests ``pack`` recorded). Target: signed apply within 1.5x of
  mount + read.
- ``trust-tgz``: ``torcx apply --no-mount`` of the reference profile as tgz,
  unsigned (no policy) against signed. Target: at most 10% more.

The ``cold`` contenders first drop the image files' pages from the page cache
(posix_fadvise, those files only), as a boot finds them.
Every timed call runs in a forked child with its own mount namespace (the
same cost for every contender), so mounts vanish with it. Times: the best
round; ``python3 benchmarks/test_trust.py bench.json`` prints the ratios.

    python3 -m pytest benchmarks/test_trust.py --benchmark-enable --benchmark-json=bench.json
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

REF = "bench"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="loop mounts need root")


def _gpg_keys(home: str):
    from torcx_testing import GpgKeys

    os.chmod(home, 0o700)
    return GpgKeys(home)


def _root(base: str, name: str, images, store_files: dict, keys=None) -> str:
    """A target root: ``store_files`` {file name: source} in the user store, a vendor
    profile naming ``images``, and with ``keys`` a signed store, the vendor's key and a
    policy wanting signatures."""
    from torcx.remote.contents import contents_doc

    root = os.path.join(base, name)
    store = os.path.join(root, "var/lib/torcx/store")
    os.makedirs(store)
    os.makedirs(os.path.join(root, "usr/share/torcx/profiles"))
    with open(os.path.join(root, "usr/share/torcx/profiles/vendor.json"), "w") as f:
        json.dump({"kind": "profile-manifest-v0", "value": {"images": [
            {"name": n, "reference": REF} for n in images]}}, f)
    for filename, path in store_files.items():
        dest = os.path.join(store, filename)
        try:
            os.link(path, dest)
        except OSError:
            shutil.copyfile(path, dest)
    if keys is not None:
        signed = keys.clearsign(json.dumps(contents_doc(store)).encode())
        with open(os.path.join(store, "torcx_remote_contents.json.asc"), "wb") as f:
            f.write(signed)
        os.makedirs(os.path.join(root, "usr/share/torcx/keys"))
        with open(os.path.join(root, "usr/share/torcx/keys/vendor.asc"), "wb") as f:
            f.write(keys.armored("trusted"))
        with open(os.path.join(root, "usr/share/torcx/policy.json"), "w") as f:
            json.dump({"kind": "torcx-policy-v0", "value": {"stores": {"user": "signed"}}}, f)
    return root


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    if shutil.which("gpg") is None or shutil.which("gpgv") is None:
        pytest.skip("needs gpg and gpgv")
    home = str(tmp_path_factory.mktemp("gnupg-bench"))
    k = _gpg_keys(home)
    yield k
    subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], check=False)


@pytest.fixture(scope="module")
def squashfs_images(bench_workload):
    """The reference trees packed by torcx as squashfs, kept beside the workload."""
    if shutil.which("mksquashfs") is None:
        pytest.skip("needs mksquashfs")
    from torcx.image.pack import pack_image

    out = os.path.join(bench_workload.folder, "squashfs")
    files = []
    for im in bench_workload.images:
        path = os.path.join(out, f"{im.name}:{REF}.torcx.squashfs")
        if not (os.path.exists(path) and os.path.exists(path + ".xxh128")):
            pack_image(im.tree, im.name, REF, out, fmt="squashfs", epoch=1_700_000_000,
                       overwrite=True)
        files.append(path)
    for path in files:  # every contender starts from the page cache
        with open(path, "rb") as f:
            while f.read(1 << 20):
                pass
    return files


@pytest.fixture(scope="module")
def bench_base():
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    folder = tempfile.mkdtemp(prefix="torcx-bench-trust-", dir=base)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


# -- what runs in the child ------------------------------------------------------------

def _mount_all(files, target_base, read):
    from torcx import engine

    for path in files:
        target = os.path.join(target_base, os.path.basename(path).split(":")[0])
        os.makedirs(target, exist_ok=True)
        engine.loop_mount(path, target, "squashfs")
    if read:
        buf = bytearray(1 << 20)
        for path in files:
            with open(path, "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass
    return 0


def _mount_and_check_files(files, target_base):
    from torcx.digestlist import check_mounted_tree

    _mount_all(files, target_base, read=False)
    return sum(check_mounted_tree(os.path.join(target_base, os.path.basename(p).split(":")[0]),
                                  p) for p in files)


def _apply(root, mount):
    from torcx import paths as torcx_paths
    from torcx.apply.run import run
    from torcx.log import NULL

    r = run(torcx_paths.load(root, environ={}), NULL, mount=mount)
    assert r.exit_code == 0, r.to_json()
    return [im.trust.reason for im in r.images]


def _with_cpu(fn, *args):
    """fn's result and the CPU seconds (user + system, every thread) the child spent."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF)
    result = fn(*args)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return result, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _timed(benchmark, group, tool, fn, *args, setup=None, rounds):
    from torcx.mountns import run_private

    benchmark.group = group
    benchmark.extra_info.update({"set": group, "tool": tool})
    cpu = []

    def call(*a):
        result, seconds = run_private(_with_cpu, *a)
        cpu.append(seconds)
        return result

    def fresh():
        if setup:
            setup()
        return (fn, *args), {}

    result = benchmark.pedantic(call, setup=fresh, rounds=rounds, iterations=1)
    benchmark.extra_info["cpu_s"] = min(cpu)
    return result


def _clean_run(root, cold=()):
    def setup():
        shutil.rmtree(os.path.join(root, "run"), ignore_errors=True)
        _evict(cold)
    return setup


def _evict(files) -> None:
    """Drop these files' pages from the page cache (only theirs): a boot reads them cold."""
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


# -- squashfs -------------------------------------------------------------------------

SQ = "trust-squashfs"


@needs_root
def test_squashfs_mount_only(benchmark, squashfs_images, bench_base, bench_rounds):
    """Baseline: loop-mount the three images, nothing checked (the original torcx)."""
    target = os.path.join(bench_base, "m0")
    _timed(benchmark, SQ, "mount", _mount_all, squashfs_images, target, False,
           rounds=bench_rounds)


@needs_root
def test_squashfs_mount_and_read(benchmark, squashfs_images, bench_base, bench_rounds):
    """Floor of the target: mount + one sequential read of the three image files."""
    target = os.path.join(bench_base, "m1")
    _timed(benchmark, SQ, "mount+read", _mount_all, squashfs_images, target, True,
           rounds=bench_rounds)


@needs_root
def test_squashfs_mount_and_check_every_file(benchmark, squashfs_images, bench_base,
                                            bench_rounds):
    """Before: mount, then every file against .torcx/digests (the old boot path)."""
    target = os.path.join(bench_base, "m2")
    files = _timed(benchmark, SQ, "mount+files", _mount_and_check_files, squashfs_images,
                   target, rounds=bench_rounds)
    assert files > 0


@needs_root
def test_squashfs_apply_signed(benchmark, squashfs_images, bench_workload, bench_base, keys,
                               bench_rounds):
    """torcx apply, user store signed: one gpgv, image files digested, mounted."""
    root = _root(bench_base, "sq-signed", [im.name for im in bench_workload.images],
                 {os.path.basename(p): p for p in squashfs_images}, keys)
    reasons = _timed(benchmark, SQ, "apply signed", _apply, root, True,
                     setup=_clean_run(root), rounds=bench_rounds)
    assert all(r.startswith("signed: ") and "image file read once" in r for r in reasons)


@needs_root
def test_squashfs_apply_recorded(benchmark, squashfs_images, bench_workload, bench_base,
                                 bench_rounds):
    """torcx apply without a policy: image files checked against pack's recorded digests."""
    files = {os.path.basename(p): p for p in squashfs_images}
    files.update({os.path.basename(p) + ".xxh128": p + ".xxh128" for p in squashfs_images})
    root = _root(bench_base, "sq-recorded", [im.name for im in bench_workload.images], files)
    reasons = _timed(benchmark, SQ, "apply integrity", _apply, root, True,
                     setup=_clean_run(root), rounds=bench_rounds)
    assert all("image-file xxh3-128 matches" in r for r in reasons)


@needs_root
def test_squashfs_cold_mount_and_read(benchmark, squashfs_images, bench_base, bench_rounds):
    """As at boot, image files not in the page cache: mount + one sequential read."""
    target = os.path.join(bench_base, "m3")
    _timed(benchmark, SQ, "cold mount+read", _mount_all, squashfs_images, target, True,
           setup=lambda: _evict(squashfs_images), rounds=bench_rounds)


@needs_root
def test_squashfs_cold_apply_signed(benchmark, squashfs_images, bench_workload, bench_base,
                                    keys, bench_rounds):
    """As at boot, image files not in the page cache: torcx apply, user store signed."""
    root = _root(bench_base, "sq-signed-cold", [im.name for im in bench_workload.images],
                 {os.path.basename(p): p for p in squashfs_images}, keys)
    _timed(benchmark, SQ, "cold apply signed", _apply, root, True,
           setup=_clean_run(root, squashfs_images), rounds=bench_rounds)


@needs_root
def test_squashfs_cold_apply_recorded(benchmark, squashfs_images, bench_workload, bench_base,
                                      bench_rounds):
    """As at boot, image files not in the page cache: torcx apply, no policy."""
    files = {os.path.basename(p): p for p in squashfs_images}
    files.update({os.path.basename(p) + ".xxh128": p + ".xxh128" for p in squashfs_images})
    root = _root(bench_base, "sq-recorded-cold", [im.name for im in bench_workload.images],
                 files)
    _timed(benchmark, SQ, "cold apply integrity", _apply, root, True,
           setup=_clean_run(root, squashfs_images), rounds=bench_rounds)


# -- tgz --------------------------------------------------------------------------------

TGZ = "trust-tgz"


def _tgz_root(bench_workload, bench_base, name, keys=None):
    return _root(bench_base, name, [im.name for im in bench_workload.images],
                 {f"{im.name}:{REF}.torcx.tgz": im.tgz for im in bench_workload.images}, keys)


def test_tgz_apply_unsigned(benchmark, bench_workload, bench_base, bench_rounds):
    """torcx apply --no-mount of the reference tgz profile, no policy."""
    root = _tgz_root(bench_workload, bench_base, "tgz-unsigned")
    reasons = _timed(benchmark, TGZ, "apply unsigned", _apply, root, False,
                     setup=_clean_run(root), rounds=bench_rounds)
    assert all(r.startswith("integrity: ") for r in reasons)


def test_tgz_apply_signed(benchmark, bench_workload, bench_base, keys, bench_rounds):
    """torcx apply --no-mount of the same profile, the user store signed (sha512 pinned)."""
    root = _tgz_root(bench_workload, bench_base, "tgz-signed", keys)
    reasons = _timed(benchmark, TGZ, "apply signed", _apply, root, False,
                     setup=_clean_run(root), rounds=bench_rounds)
    assert all(r.startswith("signed: ") for r in reasons)


# -- ratios -----------------------------------------------------------------------------

def ratios(path: str) -> int:
    with open(path) as f:
        data = json.load(f)
    best = {(b["extra_info"].get("set"), b["extra_info"].get("tool")): b["stats"]["min"]
            for b in data["benchmarks"] if "set" in b.get("extra_info", {})}
    cpu = {(b["extra_info"].get("set"), b["extra_info"].get("tool")): b["extra_info"]["cpu_s"]
           for b in data["benchmarks"] if "cpu_s" in b.get("extra_info", {})}
    for (group, tool), t in sorted(best.items()):
        print(f"{group:15} {tool:16} {t:8.3f} s  (CPU {cpu.get((group, tool), 0):.3f} s)")
    ok = True
    for prefix in ("", "cold "):
        floor = best.get((SQ, prefix + "mount+read"))
        if not floor:
            continue
        for tool in ("apply signed", "apply integrity", "mount+files", "mount"):
            if (SQ, prefix + tool) in best:
                print(f"squashfs {prefix}{tool} / ({prefix}mount + read): "
                      f"{best[(SQ, prefix + tool)] / floor:.2f}x")
        ok &= best.get((SQ, prefix + "apply signed"), 0) <= 1.5 * floor
    unsigned = best.get((TGZ, "apply unsigned"))
    if unsigned and (TGZ, "apply signed") in best:
        print(f"tgz signed / unsigned: {best[(TGZ, 'apply signed')] / unsigned:.3f}x")
        ok &= best[(TGZ, "apply signed")] <= 1.10 * unsigned
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(ratios(sys.argv[1]))
