# SPDX-License-Identifier: Apache-2.0
"""libcrypto is loaded by the engine on the first SHA digest, never by importing it.

A boot under the default policy checks XXH3 only; mapping OpenSSL's libcrypto
(about 2 ms) is paid only when a signed store, a .sha512 sidecar or a SHA256SUMS
asks for SHA-256/SHA-512. Each scenario runs in a fresh ``python3 -I -S`` that
reads its own /proc/self/maps (the test's own process has hashlib loaded).
"""

from __future__ import annotations

import ast
import hashlib
import os
import subprocess
import sys

import pytest
from tarkit import reg
from torcx_testing import needs_root

import torcx


def _fresh_python(code: str, *, hide_libcrypto: str | None = None) -> dict:
    """Run ``code`` in a fresh ``python3 -I -S`` that can import torcx; returns its ``out``.

    ``hide_libcrypto``: an empty file bind-mounted over the system's libcrypto.so.3
    first, in a mount namespace of the child's own.
    """
    import _cffi_backend
    import xxhash

    path = [os.path.dirname(os.path.dirname(os.path.abspath(torcx.__file__)))] + [
        os.path.dirname(m.__file__) for m in (_cffi_backend, xxhash)]
    script = (f"import sys; sys.path += {path!r}\n"
              "def crypto_mapped():\n"
              "    with open('/proc/self/maps') as f:\n"
              "        return 'libcrypto' in f.read()\n"
              f"out = {{}}\n{code}\nprint(repr(out))")
    cmd = [sys.executable, "-I", "-S", "-c", script]
    if hide_libcrypto:
        cmd = ["unshare", "-m", "--propagation", "private", "sh", "-ec",
               'mount --bind "$1" "$2"; shift 2; exec "$@"', "sh", hide_libcrypto,
               _system_libcrypto(), *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return ast.literal_eval(r.stdout.strip().splitlines()[-1])


def _system_libcrypto() -> str:
    """The file the dynamic loader opens for libcrypto.so.3."""
    out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.strip().startswith("libcrypto.so.3 ") and "=>" in line:
            return os.path.realpath(line.split("=>")[1].strip())
    pytest.skip("no libcrypto.so.3 in the loader cache")


def _archive(sandbox):
    return sandbox.archive([reg("big", bytes(range(256)) * 9_000), reg("b", b"beta")],
                           digests=True, compress="gzip")


def test_libcrypto_mapped_only_by_the_first_sha_digest(sandbox):
    """Import and an XXH3-verified extraction leave libcrypto unmapped; SHA-256/SHA-512 of
    whole files (two threads) and of an archive then load it and match hashlib."""
    archive = _archive(sandbox)
    data = archive.read_bytes()
    sha256, sha512 = hashlib.sha256(data).hexdigest(), hashlib.sha512(data).hexdigest()
    out = _fresh_python(f"""
from torcx import engine
out["import"] = crypto_mapped()
r = engine.extract({str(archive)!r}, {str(sandbox.dest)!r})
out["xxh3"] = (r.verified, r.archive_xxh3 != "", crypto_mapped())
d = engine.digest_files([{str(archive)!r}] * 2, threads=2, algos=["sha256", "sha512"])
out["files"] = (d[0].sha256, d[1].sha512, d[0].error, d[1].error)
out["after"] = crypto_mapped()
r = engine.verify({str(archive)!r}, pin_sha512={sha512!r}, sha256=True)
out["archive"] = (r.archive_sha256, r.archive_sha512)
""")
    assert out["import"] is False
    assert out["xxh3"] == (True, True, False)
    assert out["files"] == (sha256, sha512, None, None)
    assert out["after"] is True
    assert out["archive"] == (sha256, sha512)


@needs_root
def test_without_libcrypto_only_sha_digests_fail(sandbox, tmp_path):
    """With libcrypto.so.3 unloadable, import and XXH3 work; a SHA digest fails naming it."""
    archive = _archive(sandbox)
    empty = tmp_path / "empty.so"
    empty.write_bytes(b"")
    out = _fresh_python(f"""
from torcx import engine, errors
r = engine.extract({str(archive)!r}, {str(sandbox.dest)!r})
out["xxh3"] = r.verified
d = engine.digest_files([{str(archive)!r}] * 2, threads=2, algos=["sha512", "xxh3"])
out["files"] = (str(d[0].error), d[1].xxh3 != "", d[1].error)
try:
    engine.verify({str(archive)!r}, pin_sha512="ab" * 64)
except errors.ExtractError as e:
    out["archive"] = (type(e).__name__, e.message)
""", hide_libcrypto=str(empty))
    assert out["xxh3"] is True
    error, xxh3_ok, xxh3_error = out["files"]
    assert "cannot load libcrypto" in error and str(archive) in error, error
    assert xxh3_ok and xxh3_error is None
    kind, message = out["archive"]
    assert kind == "ExtractError" and "cannot load libcrypto.so.3" in message, message
