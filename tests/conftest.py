# SPDX-License-Identifier: Apache-2.0
"""pytest hooks shared by every test folder; the helpers live in torcx_testing."""

import pytest
from torcx_testing import guard_root, in_mount_namespace, is_root, make_gpg_keys, needs_root  # noqa: F401


@pytest.fixture(scope="session")
def gpg_keys(tmp_path_factory):
    """Real OpenPGP keys ('trusted', 'stranger') made once per session."""
    yield from make_gpg_keys(tmp_path_factory)
