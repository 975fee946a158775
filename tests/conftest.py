# SPDX-License-Identifier: Apache-2.0
"""pytest hooks shared by every test folder; the helpers live in torcx_testing."""

from torcx_testing import guard_root, in_mount_namespace, is_root, needs_root  # noqa: F401
