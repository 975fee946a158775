# SPDX-License-Identifier: Apache-2.0
"""Shared test helpers: the root guard and running code in a private mount namespace.

Imported by name (`from torcx_testing import ...`): tests/ is on sys.path, and a
unique module name avoids the ambiguity of importing "conftest" beside benchmarks/.
"""

from __future__ import annotations

import os

import pytest

from torcx.mountns import run_private


def is_root() -> bool:
    return os.geteuid() == 0


needs_root = pytest.mark.skipif(not is_root(), reason="needs root (mounts)")


def guard_root(root) -> str:
    """Refuse to let a test operate on the real root."""
    path = os.path.realpath(os.fspath(root))
    if path == "/":
        raise RuntimeError("refusing to run a test against the real root /")
    return path


def in_mount_namespace(fn, *args):
    """Run fn(*args) in a forked child inside a new private mount namespace.

    Mounts made there vanish with the child, so nothing leaks into the host. The
    product's torcx.mountns.run_private does the work: fn's (picklable) result is
    returned; a torcx error comes back as itself, any other failure (a failed
    assert included) as RuntimeError carrying the child's traceback.
    """
    return run_private(fn, *args)
