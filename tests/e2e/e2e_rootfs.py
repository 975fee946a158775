# SPDX-License-Identifier: Apache-2.0
"""Cached Debian root folders for the boot tests, built once with debootstrap.

Each suite lives in CACHE/SUITE (CACHE = $TORCX_E2E_CACHE or /var/cache/torcx-e2e).
A stamp file written only after a complete build holds the build key (suite,
package list), so a half-built or outdated tree is rebuilt; a flock serialises
parallel builders. The cached tree is never booted directly: each boot puts a
throwaway overlay on top of it.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import time

CACHE = os.environ.get("TORCX_E2E_CACHE", "/var/cache/torcx-e2e")
STAMP = ".torcx-e2e-ready"

# What a guest needs to boot and to run torcx with the system's Python (abi3 wheel).
_COMMON = [
    "systemd", "systemd-sysv", "dbus",
    "python3", "python3-cffi-backend", "python3-libarchive-c", "python3-xxhash",
    "libxxhash0", "libisal2",
]
# libarchive was renamed by the 64-bit time_t transition in trixie.
SUITES = {
    "bookworm": _COMMON + ["libarchive13"],   # systemd 252: generators share PID 1's mounts
    "trixie": _COMMON + ["libarchive13t64"],  # systemd 257: generators run sandboxed
}
# Roots with more packages, cached beside the others (never rebuilding a root another
# test may be booting from): name -> (Debian suite, extra packages).
VARIANTS = {
    "trixie-gpgv": ("trixie", ["gpgv"]),  # signed stores: trixie's apt uses sqv instead
}
for _name, (_suite, _extra) in VARIANTS.items():
    SUITES[_name] = SUITES[_suite] + _extra


def dist(name: str) -> str:
    """The Debian suite a cached root is built from."""
    return VARIANTS[name][0] if name in VARIANTS else name


def mirror() -> str:
    """The Debian mirror apt on this machine already uses."""
    try:
        with open("/etc/apt/sources.list.d/debian.sources", encoding="utf-8") as f:
            for line in f:
                m = re.match(r"URIs:\s*(\S+/debian)/?\s*$", line)
                if m:
                    return m.group(1)
    except OSError:
        pass
    try:
        with open("/etc/apt/sources.list", encoding="utf-8") as f:
            for line in f:
                m = re.match(r"deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)/?\s", line)
                if m:
                    return m.group(1)
    except OSError:
        pass
    return "http://deb.debian.org/debian"


def build_key(suite: str) -> str:
    return f"{suite} {','.join(sorted(SUITES[suite]))}\n"


def _ready(root: str, key: str) -> bool:
    try:
        with open(os.path.join(root, STAMP), encoding="utf-8") as f:
            return f.read() == key
    except OSError:
        return False


def _build(suite: str, root: str, key: str, log) -> None:
    shutil.rmtree(root, ignore_errors=True)
    logfile = root + ".debootstrap.log"
    start = time.monotonic()
    if suite in VARIANTS:
        _derive(suite, root, logfile)
    else:
        cmd = ["debootstrap", "--variant=minbase", "--include=" + ",".join(SUITES[suite]),
               suite, root, mirror()]
        with open(logfile, "w", encoding="utf-8") as out:
            r = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
        _check(r, f"debootstrap {suite}", logfile)
    # Nothing in the tests needs apt; an empty machine-id gives each boot a
    # transient id without first-boot semantics.
    for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
        d = os.path.join(root, sub)
        for name in os.listdir(d):
            p = os.path.join(d, name)
            if os.path.isfile(p):
                os.unlink(p)
    with open(os.path.join(root, "etc/machine-id"), "w", encoding="utf-8"):
        pass
    with open(os.path.join(root, STAMP), "w", encoding="utf-8") as f:
        f.write(key)
    log(f"built {suite} rootfs in {time.monotonic() - start:.1f} s: {root}")


def _check(r, what: str, logfile: str) -> None:
    if r.returncode != 0:
        with open(logfile, encoding="utf-8", errors="replace") as f:
            tail = "".join(f.readlines()[-10:])
        raise RuntimeError(f"{what} failed (exit {r.returncode}), see {logfile}:\n{tail}")


def _derive(name: str, root: str, logfile: str) -> None:
    """A variant: a copy of its suite's cached root plus its packages, by apt in a chroot
    (seconds, where a second debootstrap takes minutes)."""
    base_suite, extra = VARIANTS[name]
    base = ensure_rootfs(base_suite, log=lambda _m: None)
    tmp = root + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["cp", "-a", "--reflink=auto", base, tmp], check=True)
    os.unlink(os.path.join(tmp, STAMP))
    shutil.copy("/etc/resolv.conf", os.path.join(tmp, "etc/resolv.conf"))
    script = ("apt-get update -q && DEBIAN_FRONTEND=noninteractive "
              f"apt-get install -y -q --no-install-recommends {' '.join(extra)}")
    with open(logfile, "w", encoding="utf-8") as out:
        r = subprocess.run(["chroot", tmp, "sh", "-c", script], stdout=out,
                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    _check(r, f"apt-get install {' '.join(extra)} in a copy of {base}", logfile)
    os.rename(tmp, root)


def is_ready(suite: str) -> bool:
    return _ready(os.path.join(CACHE, suite), build_key(suite))


def mirror_problem(suite: str) -> str | None:
    """Why the mirror cannot serve SUITE (unreachable, no such suite), or None."""
    import urllib.request

    url = f"{mirror()}/dists/{dist(suite)}/Release"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=15):
            return None
    except OSError as e:
        return f"{url}: {e}"


def ensure_rootfs(suite: str, log=print) -> str:
    """Return the path of the cached SUITE root folder, building it if needed."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; known: {', '.join(SUITES)}")
    os.makedirs(CACHE, exist_ok=True)
    root = os.path.join(CACHE, suite)
    key = build_key(suite)
    if _ready(root, key):
        return root
    with open(root + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _ready(root, key):
            _build(suite, root, key, log)
    return root


if __name__ == "__main__":  # warm the cache by hand: python3 tests/e2e/e2e_rootfs.py SUITE...
    for s in sys.argv[1:] or list(SUITES):
        print(ensure_rootfs(s))
