# SPDX-License-Identifier: Apache-2.0
"""Runs torcx commands in-process against a fake root, capturing output."""

from __future__ import annotations

import io
import json
import os

from torcx_testing import guard_root, in_mount_namespace, needs_root  # noqa: F401

from torcx import cli


class Outcome:
    def __init__(self, code, out, err):
        self.code, self.out, self.err = code, out, err

    @property
    def json(self):
        return json.loads(self.out)


def torcx(root, *argv, prog="torcx"):
    """Run ``torcx --root ROOT ARGV...`` with a clean environment."""
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["--root", str(root), *argv], prog=prog, environ={}, stdout=out, stderr=err)
    return Outcome(code, out.getvalue(), err.getvalue())


def apply_json(root, *flags):
    """``torcx apply --no-mount --json`` plus ``flags``; returns (exit code, report value)."""
    res = torcx(root, "apply", "--no-mount", "--json", *flags)
    doc = res.json
    assert doc["kind"] == "torcx-apply-report-v0"
    return res.code, doc["value"]


def read_seal(root):
    with open(os.path.join(str(root), "run/metadata/torcx")) as f:
        return dict(line.split("=", 1) for line in f.read().splitlines())


def tree(root, sub="run"):
    """Every path under ROOT/sub (relative), for 'nothing changed' checks."""
    base = os.path.join(str(root), sub)
    found = []
    for top, dirs, files in os.walk(base):
        for name in dirs + files:
            found.append(os.path.relpath(os.path.join(top, name), str(root)))
    return sorted(found)
