# SPDX-License-Identifier: Apache-2.0
"""Shared test helpers: the root guard and running code in a private mount namespace.

Imported by name (`from torcx_testing import ...`): tests/ is on sys.path, and a
unique module name avoids the ambiguity of importing "conftest" beside benchmarks/.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import traceback

import pytest

CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

_libc = ctypes.CDLL(None, use_errno=True)


def is_root() -> bool:
    return os.geteuid() == 0


needs_root = pytest.mark.skipif(not is_root(), reason="needs root (mounts)")


def guard_root(root) -> str:
    """Refuse to let a test operate on the real root."""
    path = os.path.realpath(os.fspath(root))
    if path == "/":
        raise RuntimeError("refusing to run a test against the real root /")
    return path


def in_mount_namespace(fn, *args, **kwargs):
    """Run fn(*args, **kwargs) in a forked child inside a new private mount namespace.

    Mounts made there vanish with the child, so nothing leaks into the host.
    Returns fn's (picklable) result; re-raises its failure as AssertionError
    carrying the child's traceback.
    """
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(rfd)
        status = 0
        try:
            if _libc.unshare(CLONE_NEWNS) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
            if _libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
                raise OSError(ctypes.get_errno(), "make / private")
            payload = ("ok", fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            payload = ("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
            status = 1
        try:
            data = pickle.dumps(payload)
        except Exception as e:  # noqa: BLE001
            data = pickle.dumps(("error", f"unpicklable result: {e}"))
        with os.fdopen(wfd, "wb") as w:
            w.write(data)
        os._exit(status)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as r:
        data = r.read()
    os.waitpid(pid, 0)
    kind, value = pickle.loads(data) if data else ("error", "child died without a report")
    if kind == "error":
        raise AssertionError(f"in mount namespace: {value}")
    return value
