# SPDX-License-Identifier: Apache-2.0
"""Usage errors as a new user meets them: exit 2, one line, naming what is wrong."""

from __future__ import annotations

import io
import os
import pty

import pytest
from clikit import torcx
from torcx_testing import in_mount_namespace, is_root

from torcx import cli


def _usage(r, fragment):
    assert r.status == 2, r
    assert r.out == ""
    assert r.err.count("\n") == 1, r.err
    assert r.err.startswith("torcx: error: ") and fragment in r.err, r.err


@pytest.mark.parametrize("args", [
    ["apply", "--no-mount"], ["apply", "--dry-run"], ["status"], ["profile", "list"],
    ["image", "list"], ["remote", "list"], ["install-boot"], ["uninstall-boot"],
    ["image", "pack", ".", "--name", "a", "--reference", "1"],
])
def test_missing_root_is_a_usage_error(tmp_path, args):
    """A --root that does not exist is a usage error for every command, and nothing is made."""
    missing = tmp_path / "no" / "root"
    _usage(torcx(missing, *args), f"--root {missing}: no such folder")
    assert not (tmp_path / "no").exists()


def test_root_that_is_a_file_is_a_usage_error(tmp_path):
    """A --root that is not a folder is a usage error."""
    (tmp_path / "f").write_text("")
    _usage(torcx(tmp_path / "f", "status"), f"--root {tmp_path / 'f'}: not a folder")


def _generator(root):
    err = io.StringIO()
    status = cli.main(["--root", root], prog="torcx-generator", environ={}, stderr=err)
    return status, err.getvalue()


def test_generator_refuses_a_missing_root(tmp_path):
    """torcx-generator --root MISSING: exit 2, nothing created."""
    missing = tmp_path / "absent"
    # In a mount namespace of its own: a generator that did apply would mount a tmpfs.
    run = in_mount_namespace if is_root() else (lambda fn, *a: fn(*a))
    status, err = run(_generator, str(missing))
    assert status == 2 and "no such folder" in err
    assert not missing.exists()


@pytest.mark.parametrize("args, line", [
    (["--bogus"], "unrecognized arguments: --bogus (see 'torcx --help')"),
    (["apply", "--bogus"], "unrecognized arguments: --bogus (see 'torcx apply --help')"),
    (["image", "list", "--x"], "unrecognized arguments: --x (see 'torcx image list --help')"),
    (["profile", "--x"], "unrecognized arguments: --x (see 'torcx profile --help')"),
    ([], "a command is required (one of apply, "),
    (["image"], "a command is required (one of list, "),
])
def test_unknown_option_named_by_its_command(tmp_path, args, line):
    """An unknown option is named, and the hint is the --help of the command that saw it."""
    _usage(torcx(tmp_path, *args), line)


def test_generator_help_on_a_terminal_has_no_priority_prefix():
    """torcx-generator --help prints usage, exit 0; errors on a terminal carry no <N>."""
    out = io.StringIO()
    assert cli.main(["--help"], prog="torcx-generator", environ={}, stdout=out) == 0
    assert out.getvalue().startswith("usage: torcx-generator")
    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "w") as tty:
            assert cli.main(["--bogus"], prog="torcx-generator", environ={}, stderr=tty) == 2
        text = os.read(master, 4096).decode()
    finally:
        os.close(master)
    assert text.startswith("torcx-generator: error: unknown option --bogus"), text


def test_generator_keeps_priorities_for_the_journal():
    """Not on a terminal (the journal, kmsg), the generator's lines keep their <N>."""
    err = io.StringIO()
    assert cli.main(["--bogus"], prog="torcx-generator", environ={}, stderr=err) == 2
    assert err.getvalue().startswith("<3>torcx-generator: error: unknown option --bogus")


def test_missing_named_store_is_a_notice(tmp_path):
    """A store named in TORCX_STOREPATH or config.json that does not exist is said at the
    default level (a typo there is the usual cause of "image not found"); default
    stores that are absent stay quiet."""
    from clikit import put

    put(tmp_path, "/etc/torcx/config.json",
        '{"kind": "torcx-config-v0", "value": {"store_paths": ["/srv/stroe"]}}')
    r = torcx(tmp_path, "image", "list", env={"TORCX_STOREPATH": "/opt/typo"})
    assert r.status == 0, r
    assert r.err == ("torcx: store /srv/stroe (named in /etc/torcx/config.json: store_paths) "
                     "does not exist, skipping\n"
                     "torcx: store /opt/typo (named in TORCX_STOREPATH) does not exist, "
                     "skipping\n")
    r = torcx(tmp_path, "--verbose", "warning", "image", "list",
              env={"TORCX_STOREPATH": "/opt/typo"})
    assert r.status == 0 and r.err == ""
