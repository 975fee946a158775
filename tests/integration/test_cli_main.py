# SPDX-License-Identifier: Apache-2.0
"""The command-line front: exit codes, one-line errors, global options, multicall."""

from __future__ import annotations

import io
import signal

import pytest
from clikit import VENDOR_STORE, put, torcx, torcx_process

from torcx import __version__, cli
from torcx import log as tlog
from torcx.errors import SchemaError


@pytest.mark.parametrize("args, fragment", [
    ([], "required"),
    (["bogus"], "invalid choice: 'bogus'"),
    (["profile"], "required"),
    (["image", "list", "--nope"], "unrecognized arguments: --nope"),
    (["--verbose=loud", "profile", "list"], "unknown log level 'loud'"),
])
def test_usage_errors_exit_2_with_one_line(tmp_path, args, fragment):
    """Usage errors exit 2 and print exactly one readable line on stderr."""
    r = torcx(tmp_path, *args)
    assert r.status == 2, r
    assert r.out == ""
    assert r.err.count("\n") == 1
    assert r.err.startswith("torcx: error: ") and fragment in r.err


def test_global_options_after_the_command(tmp_path):
    """--root and --verbose also work after the command words."""
    put(tmp_path, f"{VENDOR_STORE}/docker:1.torcx.tgz")
    out, err = io.StringIO(), io.StringIO()
    status = cli.main(["image", "list", "--root", str(tmp_path), "--verbose=debug"],
                      prog="torcx", environ={}, stdout=out, stderr=err)
    assert status == 0
    assert '"docker"' in out.getvalue()
    assert "torcx: paths:" in err.getvalue()  # debug lines are shown


def test_verbose_error_hides_info_lines(tmp_path):
    """--verbose=error silences the informational lines of a command."""
    r = torcx(tmp_path, "--verbose=error", "profile", "new", "--name", "quiet")
    assert r.status == 0 and r.err == ""
    r = torcx(tmp_path, "profile", "new", "--name", "loud")
    assert r.status == 0 and "created profile" in r.err


def test_in_process_command_gives_sigterm_back(tmp_path):
    """A command run in-process hands SIGTERM back to the handler it found."""
    def mine(signum, frame):
        pass

    before = signal.signal(signal.SIGTERM, mine)
    try:
        r = torcx(tmp_path, "image", "list")
        assert r.status == 0, r
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, before)


def test_python_dash_m_runs_the_cli():
    """`python -m torcx --version` prints the version and exits 0."""
    r = torcx_process("--version")
    assert r.status == 0
    assert r.out.strip() == f"torcx {__version__}"


def test_python_dash_m_usage_error_exit_code():
    """A real process exits 2 on a usage error."""
    r = torcx_process("profile", "frobnicate")
    assert r.status == 2
    assert r.err.count("\n") == 1


def test_python_dash_m_failure_exit_code(tmp_path):
    """A real process exits 1 on a failure, with one error line."""
    r = torcx_process("--root", str(tmp_path), "profile", "set-next", "ghost")
    assert r.status == 1
    assert r.err.startswith("torcx: error: ") and r.err.count("\n") == 1


@pytest.mark.parametrize("argv0, expected", [
    ("/usr/lib/systemd/system-generators/torcx-generator", "torcx-generator"),
    ("torcx-generator", "torcx-generator"),
    ("/usr/bin/torcx", "torcx"),
    ("/usr/lib/python3/site-packages/torcx/__main__.py", "torcx"),
    ("", "torcx"),
])
def test_multicall_on_argv0(argv0, expected):
    """The program name (basename of argv[0]) chooses torcx or torcx-generator."""
    assert cli._program_name(argv0) == expected


def test_generator_ignores_systemd_output_dirs():
    """torcx-generator takes systemd's three output folders and ignores them."""
    args, root, level = cli._generator_args(["/run/systemd/generator",
                                             "/run/systemd/generator.early",
                                             "/run/systemd/generator.late"])
    assert (root, level) == ("/", None)
    assert args.generator is True and args.command == "apply"
    assert (args.no_mount, args.dry_run, args.json) == (False, False, False)
    assert args.output_dirs == ["/run/systemd/generator", "/run/systemd/generator.early",
                                "/run/systemd/generator.late"]


def test_generator_understands_root_and_verbose():
    """--root and --verbose are accepted by the generator for tests and debugging."""
    args, root, level = cli._generator_args(["--root", "/tmp/r", "--verbose=debug", "a"])
    assert (root, level, args.output_dirs) == ("/tmp/r", "debug", ["a"])


def test_generator_rejects_other_flags():
    """Any other option is a usage error, reported with a systemd priority prefix."""
    err = io.StringIO()
    status = cli.main(["--dry-run"], prog="torcx-generator", environ={}, stderr=err)
    assert status == 2
    assert err.getvalue().startswith("<3>torcx-generator: error: unknown option --dry-run")


def test_missing_command_module_is_a_clear_error():
    """Dispatch to a module that is not built fails with a message naming it."""
    with pytest.raises(cli.CommandUnavailable, match="torcx.no_such_module"):
        cli._lookup("no_such_module", "main", "torcx nothing")
    with pytest.raises(cli.CommandUnavailable, match="torcx.schemas.no_such_function"):
        cli._lookup("schemas", "no_such_function", "torcx nothing")


def test_context_paths_follow_root_and_environment(tmp_path):
    """ctx.paths is loaded lazily from --root and the given environment."""
    ctx = cli.Context(root=str(tmp_path), environ={"TORCX_RUNDIR": "/run/t"})
    assert ctx.paths.run_dir == "/run/t"
    assert ctx.paths.host(ctx.paths.bin_dir) == f"{tmp_path}/run/t/bin"
    other = ctx.load_paths(os_version="7")
    assert other.os_version == "7" and ctx.paths.os_version == ""


def test_generator_context_logs_with_priorities():
    """As torcx-generator, log lines carry <N> prefixes for the journal."""
    err = io.StringIO()
    ctx = cli.Context(prog="torcx-generator", stderr=err, verbosity=tlog.DEBUG)
    ctx.log.error("e")
    ctx.log.warning("w")
    ctx.log.info("i")
    ctx.log.debug("d")
    assert err.getvalue() == ("<3>torcx-generator: e\n<4>torcx-generator: w\n"
                              "<6>torcx-generator: i\n<7>torcx-generator: d\n")


def test_command_context_logs_plainly():
    """As torcx, warnings and errors say so; lower levels are filtered by verbosity."""
    err = io.StringIO()
    ctx = cli.Context(stderr=err, verbosity=tlog.WARNING)
    ctx.log.error("e")
    ctx.log.warning("w")
    ctx.log.info("i")
    assert err.getvalue() == "torcx: error: e\ntorcx: warning: w\n"


@pytest.mark.parametrize("text, level", [
    ("debug", 7), ("INFO", 6), ("notice", 5), ("warn", 4), ("warning", 4), ("error", 3),
    ("5", 5),
])
def test_log_levels(text, level):
    """--verbose accepts level names and syslog numbers 3 to 7."""
    assert tlog.parse_level(text) == level


def test_generator_context_tolerates_a_broken_config(tmp_path):
    """As torcx-generator, a broken config.json is a warning and the defaults apply."""
    put(tmp_path, "/etc/torcx/config.json", "{broken")
    err = io.StringIO()
    ctx = cli.Context(prog="torcx-generator", root=str(tmp_path), environ={}, stderr=err)
    assert ctx.paths.run_dir == "/run/torcx"
    assert ctx.paths.problems and "invalid JSON" in ctx.paths.problems[0]
    assert err.getvalue().startswith("<4>torcx-generator: ")
    strict = cli.Context(root=str(tmp_path), environ={}, stderr=io.StringIO())
    with pytest.raises(SchemaError):
        strict.load_paths()
