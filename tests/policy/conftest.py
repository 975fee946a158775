# SPDX-License-Identifier: Apache-2.0
"""gpg keys made once per session, and a fake root for policy tests."""

from __future__ import annotations

import pytest
from policykit import PolicyRoot
from torcx_testing import guard_root


@pytest.fixture
def root(tmp_path, gpg_keys) -> PolicyRoot:
    guard_root(tmp_path)
    return PolicyRoot(tmp_path / "root", gpg_keys)
