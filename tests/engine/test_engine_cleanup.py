# SPDX-License-Identifier: Apache-2.0
"""A failed job cleans up after itself and nothing else: no staging folder, no foreign fd."""

from __future__ import annotations

import os
import resource
import stat

import tarkit
from tarkit import directory, reg

from torcx import engine, errors


def test_job_without_archive_keeps_the_callers_stdin(sandbox):
    """A job refused before its archive is opened does not close the process's fd 0."""
    saved = os.dup(0)
    r, w = os.pipe()
    try:
        os.dup2(r, 0)
        (result,) = engine.extract_many([engine.Job(None, str(sandbox.dest))], threads=1)
        assert isinstance(result.error, errors.ExtractError)
        assert stat.S_ISFIFO(os.fstat(0).st_mode), "fd 0 was closed by the engine"
    finally:
        os.dup2(saved, 0)
        for fd in (saved, r, w):
            os.close(fd)


def test_existing_destination_spares_a_folder_named_like_the_staging_template(sandbox):
    """Refusing an existing dest never removes a folder named like its staging template."""
    sandbox.dest.mkdir()
    lookalike = sandbox.parent / ".dest.staging-XXXXXX"
    lookalike.mkdir()
    (lookalike / "mine").write_bytes(b"keep")
    before = tarkit.tree_snapshot(sandbox.root)
    archive = sandbox.archive([reg("f", b"x")])
    try:
        engine.extract(str(archive), str(sandbox.dest))
    except errors.ExtractError:
        pass
    else:
        raise AssertionError("extracting over an existing destination succeeded")
    assert tarkit.tree_snapshot(sandbox.root) == before


def test_deep_tree_is_removed_under_a_low_fd_limit(sandbox):
    """A failed job removes a staging tree deeper than the open-file limit (1024 at boot)."""
    deep = "/".join(["d"] * 300)
    members = [directory(deep), reg(deep + "/f", b"x"), reg("/abs", b"x")]
    archive = sandbox.archive(members)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))
    try:
        (result,) = engine.extract_many([engine.Job(str(archive), str(sandbox.dest))], threads=1)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert isinstance(result.error, errors.UnsafeArchive)
    sandbox.assert_clean_failure()
