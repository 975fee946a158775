# SPDX-License-Identifier: Apache-2.0
"""Helpers for CLI tests: a fake system under a root folder and an in-process runner."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

from torcx_testing import guard_root

from torcx import cli

VENDOR_STORE = "/usr/share/torcx/store"
OEM_STORE = "/usr/share/oem/torcx/store"
USER_STORE = "/var/lib/torcx/store"
VENDOR_PROFILES = "/usr/share/torcx/profiles"
OEM_PROFILES = "/usr/share/oem/torcx/profiles"
USER_PROFILES = "/etc/torcx/profiles"


class Run:
    """Outcome of one command: exit ``status``, ``out`` and ``err`` text."""

    def __init__(self, status, out, err):
        self.status = status
        self.out = out
        self.err = err

    def json(self):
        return json.loads(self.out)

    def __repr__(self):
        return f"Run(status={self.status}, out={self.out!r}, err={self.err!r})"


def torcx(root, *args, env=None, prog="torcx"):
    """Run ``torcx --root ROOT ARGS`` in this process with a clean environment."""
    guard_root(root)
    out, err = io.StringIO(), io.StringIO()
    status = cli.main(["--root", str(root), *args], prog=prog, environ=dict(env or {}),
                      stdout=out, stderr=err)
    return Run(status, out.getvalue(), err.getvalue())


def torcx_process(*args, env=None):
    """Run ``python -m torcx ARGS`` as a real process (exit codes, __main__)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TORCX_")}
    environ.update(env or {})
    p = subprocess.run([sys.executable, "-m", "torcx", *args], capture_output=True,
                       text=True, env=environ, check=False)
    return Run(p.returncode, p.stdout, p.stderr)


def put(root, logical, data=b"x"):
    """Create a file at the logical path under root; returns its host path."""
    path = root / logical.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def put_profile(root, folder, name, images, kind="profile-manifest-v0"):
    entries = [dict(zip(("name", "reference", "remote"), im)) for im in images]
    doc = {"kind": kind, "value": {"images": entries}}
    return put(root, f"{folder}/{name}.json", json.dumps(doc))


def read_json(root, logical):
    return json.loads((root / logical.lstrip("/")).read_text())


def os_release(root, version):
    put(root, "/usr/lib/os-release", f'NAME="Flatcar"\nVERSION_ID="{version}"\n')
