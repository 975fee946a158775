# SPDX-License-Identifier: Apache-2.0
"""Remote errors under a scratch --root say what is missing and where it was looked for."""

from __future__ import annotations

import io
import os

from torcx.cli import main


def torcx(root, *argv):
    out, err = io.StringIO(), io.StringIO()
    rc = main(["--root", root, *argv], prog="torcx", environ={}, stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


def test_populate_without_os_release_says_it_is_missing(fake_root):
    """No usr/lib/os-release at all: populate says the file is missing and where it looked."""
    os.unlink(os.path.join(fake_root.path, "usr/lib/os-release"))
    fake_root.add_remote("main", "http://127.0.0.1:1/")
    fake_root.add_profile("fleet", [("docker", "20.10", "main")])
    rc, out, err = torcx(fake_root.path, "profile", "populate", "--name", "fleet")
    assert (rc, out) == (1, "")
    host = os.path.join(fake_root.path, "usr/lib/os-release")
    assert err == (f"torcx: error: no OS version: there is no /usr/lib/os-release (looked "
                   f"for {host}); pass -n OSVER\n")


def test_populate_with_os_release_lacking_version_id(fake_root):
    """An os-release without VERSION_ID is named as such."""
    fake_root.write("usr/lib/os-release", b"ID=flatcar\n")
    fake_root.add_profile("fleet", [("docker", "20.10", "main")])
    rc, _, err = torcx(fake_root.path, "profile", "populate", "--name", "fleet")
    assert rc == 1
    assert err == ("torcx: error: no OS version: /usr/lib/os-release has no VERSION_ID; "
                   "pass -n OSVER\n")


def test_base_url_variable_without_os_release_says_it_is_missing(fake_root):
    """A base_url using ${ID} with no os-release names the missing file, not the variable."""
    os.unlink(os.path.join(fake_root.path, "usr/lib/os-release"))
    fake_root.add_remote("main", "https://mirror.example/${ID}/")
    rc, _, err = torcx(fake_root.path, "remote", "list")
    assert rc == 1
    host = os.path.join(fake_root.path, "usr/lib/os-release")
    assert err == ("torcx: error: remote main: /etc/torcx/remotes/main/remote.json: "
                   "$.value.base_url uses "
                   f"${{ID}} but there is no /usr/lib/os-release (looked for {host})\n")
