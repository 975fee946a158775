# SPDX-License-Identifier: Apache-2.0
"""Fixtures of the engine tests: a sandbox around each destination and archive factories.

Every test extracts into ``sandbox.dest`` whose parent also holds a sentinel
folder; a snapshot of the whole sandbox taken before the extraction proves that
a refused archive wrote nothing outside dest and left no staging folder behind.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest
import tarkit


class Sandbox:
    """``root/parent/{dest,sentinel/secret}``; archives are built outside ``root``."""

    SECRET = b"untouched\n"

    def __init__(self, tmp_path: Path):
        self.archives = tmp_path / "archives"
        self.root = tmp_path / "sandbox"
        self.parent = self.root / "parent"
        self.dest = self.parent / "dest"
        self.sentinel = self.parent / "sentinel"
        self.archives.mkdir()
        self.sentinel.mkdir(parents=True)
        (self.sentinel / "secret").write_bytes(self.SECRET)
        self.before = tarkit.tree_snapshot(self.root)
        self._count = 0

    def archive(self, members: Sequence[tarkit.Member], *, digests=False,
                fmt: int | None = None, compress: str | None = None,
                name: str | None = None) -> Path:
        """Write ``members`` to a fresh tar (optionally compressed with a real tool)."""
        self._count += 1
        path = self.archives / (name or f"a{self._count}.tar")
        kwargs = {"digests": digests}
        if fmt is not None:
            kwargs["fmt"] = fmt
        if compress is None:
            return tarkit.write_tar(path, members, **kwargs)
        plain = tarkit.write_tar(path.with_name(path.name + ".plain"), members, **kwargs)
        return tarkit.compress(plain, compress, out=path)

    def outside(self) -> dict:
        """The sandbox snapshot without the destination subtree."""
        prefix = os.path.relpath(self.dest, self.root)
        return {k: v for k, v in tarkit.tree_snapshot(self.root).items()
                if k != prefix and not k.startswith(prefix + os.sep)}

    def assert_outside_untouched(self) -> None:
        assert self.outside() == self.before, "something was written outside dest"

    def assert_clean_failure(self) -> None:
        assert not os.path.lexists(self.dest), "a failed job left its destination"
        assert tarkit.tree_snapshot(self.root) == self.before, \
            "a failed job wrote outside dest or left its staging folder"

    def refuses(self, archive, exc_class, **options):
        """Extract ``archive``, expect ``exc_class`` with a message and no trace on disk."""
        from torcx import engine

        with pytest.raises(exc_class) as info:
            engine.extract(os.fspath(archive), os.fspath(self.dest), **options)
        err = info.value
        assert err.message.strip(), "the error carries no message"
        assert err.filename == os.fspath(archive)
        self.assert_clean_failure()
        return err

    def extract(self, archive, **options):
        """Extract ``archive`` into dest, check nothing leaked around it, return the Result."""
        from torcx import engine

        result = engine.extract(os.fspath(archive), os.fspath(self.dest), **options)
        assert result.ok
        self.assert_outside_untouched()
        return result


@pytest.fixture
def sandbox(tmp_path) -> Sandbox:
    return Sandbox(tmp_path)
