# SPDX-License-Identifier: Apache-2.0
"""gpg keys made once per session, and a fake root for policy tests."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from policykit import GpgKeys, PolicyRoot
from torcx_testing import guard_root


@pytest.fixture(scope="session")
def gpg_keys(tmp_path_factory) -> GpgKeys:
    if shutil.which("gpg") is None or shutil.which("gpgv") is None:
        pytest.skip("needs gpg and gpgv (Debian gnupg, gpgv)")
    home = tmp_path_factory.mktemp("gnupg-policy")
    os.chmod(home, 0o700)
    keys = GpgKeys(str(home))
    yield keys
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)


@pytest.fixture
def root(tmp_path, gpg_keys) -> PolicyRoot:
    guard_root(tmp_path)
    return PolicyRoot(tmp_path / "root", gpg_keys)
