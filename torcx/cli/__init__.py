# SPDX-License-Identifier: Apache-2.0
"""The command line: ``torcx`` and ``torcx-generator`` (multicall on argv[0]).

The parser, :class:`Context` and dispatch are here; the handlers are in one module
per command group (profile, image, remote, status, boot).

``torcx-generator`` is what systemd runs at boot: it takes no flags, ignores the
three output folders systemd passes, and applies (through ``torcx.boot``). Every
other name is ``torcx COMMAND``; global options ``--root DIR`` and
``--verbose=LEVEL`` may appear before or after the command words.

Exit status: 0 success, 1 failure, 2 usage error, 130 Ctrl-C, 143 SIGTERM (the
boot-time apply leaves SIGTERM alone); one readable line on stderr.

Handler contract (for the modules this file dispatches to)
-----------------------------------------------------------
Every handler is ``fn(ctx, args) -> int | None`` (None means 0; return 2 for a
usage error found late, or raise :class:`UsageError`). ``args`` is the argparse
namespace of the command. Any :class:`torcx.errors.TorcxError` escaping a handler
becomes one ``torcx: error: ...`` line and exit 1. ``ctx`` is a :class:`Context`:

- ``ctx.prog``: "torcx" or "torcx-generator"; ``ctx.generator``: True for the latter.
- ``ctx.root``: the host folder given by ``--root`` ("/" by default).
- ``ctx.paths``: the :class:`torcx.paths.Paths` (config, env, --root), loaded on
  first access. ``ctx.load_paths(os_version=...)`` reloads with ``-n``. For the
  generator and ``apply`` (``ctx.strict_paths`` False) a broken config file or
  VERSION_ID is a warning listed in ``ctx.paths.problems`` and the defaults are
  used; for every other command it is an error (exit 1).
- ``ctx.log``: a :class:`torcx.log.Logger` (stderr; ``<N>`` systemd priority
  prefixes when ``ctx.generator``); ``ctx.verbosity``: its syslog level (3-7).
- ``ctx.stdout``: where command output (JSON, summaries) goes.
- ``ctx.environ``: the environment used to resolve paths.

Hooks: the generator calls ``torcx.boot.generator_main(ctx, args)``,
which applies through ``torcx.apply.run.main`` unless it runs sandboxed (then it
only plans the units; see torcx/boot/__init__.py). ``torcx apply`` calls
``torcx.apply.run.main(ctx, args)``. Both pass ``args.no_mount``,
``args.dry_run``, ``args.json``, ``args.generator`` and ``args.output_dirs``
(systemd's folders; empty for ``torcx apply``). Every other command's handler
is in this package, one module per command group (profile, image, remote,
status, boot), and calls the stage that does the work. Handler modules are
imported only when their command runs: the generator's start-up time counts
at boot.
"""

from __future__ import annotations

import os
import sys

from .. import log as _log
from ..errors import TorcxError, UsageError

__all__ = ["Context", "Terminated", "UsageError", "build_parser", "main"]

GENERATOR_NAME = "torcx-generator"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt: the same clean-up runs."""


class CommandUnavailable(TorcxError):
    """The module implementing a command is not part of this build."""


class Context:
    """What every handler gets; see the module docstring."""

    def __init__(self, *, prog: str = "torcx", root: str = "/", verbosity: int = _log.INFO,
                 environ=None, stdout=None, stderr=None):
        self.prog = prog
        self.generator = prog == GENERATOR_NAME
        self.root = os.path.abspath(root or "/")
        self.verbosity = verbosity
        self.environ = os.environ if environ is None else environ
        self.stdout = stdout if stdout is not None else sys.stdout
        self.log = _log.Logger(verbosity, stream=stderr, prefix=prog,
                               priority_prefix=self.generator and not _on_terminal(stderr))
        # Boot-time applies tolerate a broken config file (warned, defaults used).
        self.strict_paths = not self.generator
        self._paths = None

    @property
    def paths(self):
        if self._paths is None:
            self._paths = self.load_paths()
        return self._paths

    def load_paths(self, os_version: str | None = None):
        """Resolve paths for this root; ``os_version`` overrides VERSION_ID."""
        from .. import paths

        loaded = paths.load(self.root, environ=self.environ, os_version=os_version,
                            log=self.log, strict=self.strict_paths)
        if os_version is None:
            self._paths = loaded
        return loaded

    def out(self, text: str) -> None:
        """Write command output (a trailing newline is added when missing)."""
        self.stdout.write(text if text.endswith("\n") else text + "\n")
        self.stdout.flush()


# -- dispatch to modules owned elsewhere -------------------------------------------

def _delegate(module: str, function: str, command: str):
    def handler(ctx, args):
        fn = _lookup(module, function, command)
        return fn(ctx, args)

    handler.__name__ = f"{module}.{function}"
    return handler


def _lookup(module: str, function: str, command: str):
    qualified = f"torcx.{module}"
    try:  # __import__ returns the leaf module given a fromlist; importlib costs ms at boot
        mod = __import__(qualified, fromlist=["__name__"])
    except ModuleNotFoundError as e:
        if e.name != qualified:
            raise
        raise CommandUnavailable(
            f"'{command}' is not available: module {qualified} is not part of this build"
        ) from None
    fn = getattr(mod, function, None)
    if fn is None:
        raise CommandUnavailable(
            f"'{command}' is not available: {qualified}.{function} is missing")
    return fn


# -- argument parsing -------------------------------------------------------------

def _parser_class():
    import argparse

    class Parser(argparse.ArgumentParser):
        """One-line usage errors that name the command whose --help explains them.

        Unknown options are reported by the deepest command that saw them (so
        ``torcx apply --bogus`` points to ``torcx apply --help``), and before a
        missing subcommand is (so ``torcx --bogus`` names ``--bogus``).
        """

        _command_dest = None

        def add_subparsers(self, **kw):
            self._command_dest = kw.get("dest")
            return super().add_subparsers(**kw)

        def parse_known_args(self, args=None, namespace=None):
            namespace, extras = super().parse_known_args(args, namespace)
            if extras:
                self.error(f"unrecognized arguments: {' '.join(extras)}")
            dest = self._command_dest
            if dest and getattr(namespace, dest, None) is None:
                choices = ", ".join(self._subparsers._group_actions[0].choices)
                self.error(f"a command is required (one of {choices})")
            return namespace, extras

        def error(self, message):  # one line, exit 2 (raised, handled in main)
            raise UsageError(f"{message} (see '{self.prog} --help')")

    return argparse, Parser


def _count(low: int):
    """An argparse type: an integer of at least ``low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError from None
        if value < low:
            import argparse

            raise argparse.ArgumentTypeError(f"{value}: must be at least {low}")
        return value

    parse.__name__ = "integer"  # argparse's message: "invalid integer value: 'x'"
    return parse


def build_parser(prog: str = "torcx"):
    argparse, Parser = _parser_class()
    from .. import __version__

    common = Parser(add_help=False)
    common.add_argument("--root", metavar="DIR", default=argparse.SUPPRESS,
                        help="operate on the system below DIR (like systemctl --root)")
    common.add_argument("--verbose", metavar="LEVEL", default=argparse.SUPPRESS,
                        help="log level: debug, info, notice, warning or error")

    top = Parser(prog=prog, parents=[common],
                 description="Boot-time addon manager for immutable Linux systems.")
    top.add_argument("--version", action="version", version=f"torcx {__version__}")
    cmds = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    def sub(group, name, handler, help_text, **kw):
        p = group.add_parser(name, parents=[common], help=help_text, description=help_text,
                             **kw)
        p.set_defaults(handler=handler)
        return p

    def json_flag(p):
        p.add_argument("--json", action="store_true", help="machine-readable JSON output")

    def osver(p):
        p.add_argument("-n", "--os-release", dest="os_version", metavar="OSVER",
                       help="OS version to use instead of VERSION_ID (versioned stores)")

    def name_or_file(p, what):
        g = p.add_mutually_exclusive_group()
        g.add_argument("--name", metavar="P", help=f"{what} profile P")
        g.add_argument("--file", metavar="F", help=f"{what} the profile file F")

    # apply / status
    p = sub(cmds, "apply", _delegate("apply.run", "main", "torcx apply"),
            "apply the profiles now (what torcx-generator does at boot)")
    p.add_argument("--no-mount", action="store_true",
                   help="do everything except mounts (image builders, unprivileged tests)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    json_flag(p)
    p.set_defaults(generator=False, output_dirs=[], strict_paths=False)

    p = sub(cmds, "status", _delegate("cli.status", "main", "torcx status"),
            "what this boot applied, from which archives, and what failed")
    json_flag(p)

    # boot integration (torcx.boot, handlers in torcx.cli.boot)
    p = sub(cmds, "install-boot", _delegate("cli.boot", "install_boot", "torcx install-boot"),
            "install torcx-generator, the torcx launcher and torcx-apply.service")
    p.add_argument("--generator-dir", default="/usr/lib/systemd/system-generators",
                   choices=["/usr/lib/systemd/system-generators",
                            "/etc/systemd/system-generators"],
                   help="where the generator goes (units go to the matching unit folder)")
    p.add_argument("--wheel", metavar="WHEEL",
                   help="also unpack this torcx wheel (abi3) for the target's python3")
    p.add_argument("--force", action="store_true", help="replace files torcx did not install")
    sub(cmds, "uninstall-boot", _delegate("cli.boot", "uninstall_boot",
                                          "torcx uninstall-boot"),
        "remove what install-boot installed")

    # profile ...
    prof = cmds.add_parser("profile", parents=[common], help="operate on profiles",
                           description="Operate on profiles.")
    pcmds = prof.add_subparsers(dest="profile_command", metavar="COMMAND",
                                parser_class=Parser)
    sub(pcmds, "list", _delegate("cli.profile", "profile_list", "torcx profile list"),
        "list profiles (torcx-profile-list-v0 JSON)")

    p = sub(pcmds, "new", _delegate("cli.profile", "profile_new", "torcx profile new"),
            "create a user profile")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--from", dest="from_name", metavar="P", help="copy profile P")
    g.add_argument("--from-next", action="store_true", help="copy the next-boot profile")
    name_or_file(p, "create")

    p = sub(pcmds, "set-next",
            _delegate("cli.profile", "profile_set_next", "torcx profile set-next"),
            "select the profile for next boot")
    p.add_argument("profile", metavar="NAME")

    p = sub(pcmds, "use-image", _delegate("cli.profile", "profile_use_image",
                                  "torcx profile use-image"),
            "add or replace an image in a user profile")
    p.add_argument("--allow", metavar="missing", choices=["missing"],
                   help="--allow=missing: add an image no store holds")
    name_or_file(p, "edit")
    p.add_argument("image", metavar="NAME:REF")

    p = sub(pcmds, "check", _delegate("cli.profile", "profile_check", "torcx profile check"),
            "check that every image of a profile is available")
    name_or_file(p, "check")
    p.add_argument("--remote-only", action="store_true",
                   help="check only the images' remotes (not the local stores)")
    osver(p)

    p = sub(pcmds, "populate", _delegate("cli.remote", "populate", "torcx profile populate"),
            "fetch the profile's missing images from their remotes")
    name_or_file(p, "populate")
    osver(p)

    # image ...
    img = cmds.add_parser("image", parents=[common], help="operate on images",
                          description="Operate on images.")
    icmds = img.add_subparsers(dest="image_command", metavar="COMMAND", parser_class=Parser)

    p = sub(icmds, "list", _delegate("cli.image", "image_list", "torcx image list"),
            "list images in the stores (torcx-image-list-v0)")
    p.add_argument("name", nargs="?", metavar="NAME")
    osver(p)

    p = sub(icmds, "clear-versioned", _delegate("cli.image", "clear_versioned",
                                             "torcx image clear-versioned"),
            "remove versioned user stores except the kept versions")
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("-k", "--keep-version", dest="keep", action="append", required=True,
                   metavar="VERSION", help="store version to keep (repeatable)")

    p = sub(icmds, "pack", _delegate("cli.image", "pack", "torcx image pack"),
            "build an image archive from a folder")
    p.add_argument("rootfs", metavar="ROOTFS")
    p.add_argument("--name", required=True, metavar="NAME")
    p.add_argument("--reference", required=True, metavar="REF")
    p.add_argument("-o", "--output", dest="output", metavar="STORE_DIR",
                   help="store folder to write into (default: the current folder); with "
                        "--root an absolute path of the target system, under DIR like "
                        "every other path (ROOTFS stays a path of this machine)")
    p.add_argument("--format", choices=["tgz", "tar.zst", "tar.xz", "tar", "squashfs",
                                        "erofs"], default="tgz")
    p.add_argument("--level", type=int, metavar="N", help="compression level")
    p.add_argument("--threads", type=_count(1), metavar="N", help="compression threads")
    p.add_argument("--source-date-epoch", type=_count(0), metavar="N",
                   help="clamp mtimes to N (reproducible builds)")
    p.add_argument("--keep-owner", action="store_true", help="keep file owners and groups")
    p.add_argument("--overwrite", action="store_true", help="replace an existing archive")
    json_flag(p)

    p = sub(icmds, "export", _delegate("cli.image", "export", "torcx image export"),
            "turn an image into a systemd-sysext image (NAME.raw)")
    p.add_argument("archive", metavar="ARCHIVE|NAME:REF")
    p.add_argument("--sysext", action="store_true", required=True,
                   help="export as a systemd-sysext image (the one export format)")
    p.add_argument("-o", "--output", dest="output", metavar="DIR",
                   help="folder to write NAME.raw into (default: the current folder)")
    p.add_argument("--format", choices=["squashfs", "erofs"], default="squashfs")
    p.add_argument("--id", dest="ext_id", metavar="ID",
                   help="extension-release ID (default: the host's; _any for any OS)")
    p.add_argument("--version-id", metavar="V", help="VERSION_ID (default: the host's)")
    p.add_argument("--sysext-level", metavar="L", help="SYSEXT_LEVEL (instead of VERSION_ID)")
    p.add_argument("--arch", metavar="ARCH",
                   help="ARCHITECTURE in systemd's names (default: the host's; _any)")
    p.add_argument("--source-date-epoch", type=int, metavar="N",
                   help="every timestamp (reproducible builds)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing NAME.raw")
    json_flag(p)

    p = sub(icmds, "inspect", _delegate("cli.image", "inspect", "torcx image inspect"),
            "show an archive's manifest, digests and contents")
    p.add_argument("archive", metavar="ARCHIVE|NAME:REF")
    json_flag(p)

    p = sub(icmds, "verify", _delegate("cli.image", "verify", "torcx image verify"),
            "check an archive against its digest list (writes nothing)")
    p.add_argument("archive", metavar="ARCHIVE|NAME:REF")
    p.add_argument("--digest", metavar="D", help="expected digest of the archive bytes")

    # remote ...
    rem = cmds.add_parser("remote", parents=[common], help="operate on remotes",
                          description="Operate on remotes.")
    rcmds = rem.add_subparsers(dest="remote_command", metavar="COMMAND", parser_class=Parser)
    p = sub(rcmds, "list", _delegate("cli.remote", "remote_list", "torcx remote list"),
            "list configured remotes")
    json_flag(p)
    p = sub(rcmds, "contents", _delegate("cli.remote", "remote_contents",
                                         "torcx remote contents"),
            "write a signed-contents manifest for a folder of archives")
    p.add_argument("dir", metavar="DIR")
    p = sub(rcmds, "publish", _delegate("cli.remote", "remote_publish", "torcx remote publish"),
            "push a folder's archives and signed contents to an OCI registry")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("url", metavar="oci://HOST/REPOSITORY")
    p.add_argument("-n", "--os-version", dest="os_version", required=True, metavar="OSVER",
                   help="the OS version the signed contents are for (their tag)")
    json_flag(p)
    return top


# -- generator front (no argparse: boot-time start-up cost) --------------------------

GENERATOR_HELP = f"""usage: {GENERATOR_NAME} [NORMAL_DIR EARLY_DIR LATE_DIR]

The systemd generator of torcx: systemd runs it at boot with three output
folders. It applies the profiles (or, sandboxed on systemd 253+, plans the
addon units and pulls in torcx-apply.service). It takes no flags but
--root DIR and --verbose LEVEL (tests, debugging); see 'torcx --help'.
"""


class _GeneratorHelp(Exception):
    """``torcx-generator --help``: print GENERATOR_HELP, exit 0."""


class _Args:
    """A minimal argparse.Namespace stand-in for the generator."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def __repr__(self):
        return f"Args({self.__dict__!r})"


def _generator_args(argv):
    """Positional arguments (systemd's output folders) are accepted and ignored.

    ``--root DIR`` and ``--verbose=LEVEL`` are also understood (tests, debugging).
    """
    root = "/"
    level = None
    outputs = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--root", "--verbose"):
            if i + 1 >= len(argv):
                raise UsageError(f"{arg} needs a value")
            value = argv[i + 1]
            i += 2
        elif arg.startswith(("--root=", "--verbose=")):
            arg, _, value = arg.partition("=")
            i += 1
        elif arg in ("-h", "--help"):
            raise _GeneratorHelp
        elif arg.startswith("-") and arg != "-":
            raise UsageError(f"unknown option {arg} (torcx-generator takes no flags)")
        else:
            outputs.append(arg)
            i += 1
            continue
        if arg == "--root":
            root = value
        else:
            level = value
    args = _Args(command="apply", generator=True, no_mount=False, dry_run=False,
                 json=False, output_dirs=outputs,
                 handler=_delegate("boot", "generator_main", GENERATOR_NAME))
    return args, root, level


_APPLY_FLAGS = {"--no-mount": "no_mount", "--dry-run": "dry_run", "--json": "json"}


def _plain_apply(argv) -> bool:
    """``torcx [--root R] apply`` with nothing but its own flags (what torcx-apply.service
    and image builders run)."""
    if argv[:1] == ["--root"] and len(argv) > 2 and argv[1] and not argv[1].startswith("-"):
        argv = argv[2:]
    return bool(argv) and argv[0] == "apply" and all(a in _APPLY_FLAGS for a in argv[1:])


def _apply_args(argv):
    root = "/"
    if argv[0] == "--root":
        root, argv = argv[1], argv[2:]
    args = _Args(command="apply", generator=False, no_mount=False, dry_run=False, json=False,
                 output_dirs=[], strict_paths=False, root=root,
                 handler=_delegate("apply.run", "main", "torcx apply"))
    for a in argv[1:]:
        setattr(args, _APPLY_FLAGS[a], True)
    return args, root, None


# -- main ----------------------------------------------------------------------------

def _program_name(prog: str | None) -> str:
    name = os.path.basename(prog if prog is not None else (sys.argv[0] if sys.argv else ""))
    return GENERATOR_NAME if name == GENERATOR_NAME else "torcx"


def main(argv=None, prog: str | None = None, *, environ=None, stdout=None,
         stderr=None) -> int:
    """Run one command; returns the exit status (console scripts exit with it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    name = _program_name(prog)
    err = stderr if stderr is not None else sys.stderr
    ctx = None
    try:
        if name == GENERATOR_NAME:
            args, root, level = _generator_args(argv)
        elif _plain_apply(argv):  # torcx-apply.service: argparse alone costs ms at boot
            args, root, level = _apply_args(argv)
        else:
            args = build_parser(name).parse_args(argv)
            root = getattr(args, "root", "/")
            level = getattr(args, "verbose", None)
        verbosity = _log.INFO
        if level is not None:
            try:
                verbosity = _log.parse_level(level)
            except ValueError as e:
                raise UsageError(f"--verbose: {e}") from None
        _check_root(root)
        ctx = Context(prog=name, root=root, verbosity=verbosity, environ=environ,
                      stdout=stdout, stderr=stderr)
        ctx.strict_paths = getattr(args, "strict_paths", ctx.strict_paths)
        status = _run_handler(name, args, ctx)
        return 0 if status is None else int(status)
    except _GeneratorHelp:
        (stdout if stdout is not None else sys.stdout).write(GENERATOR_HELP)
        return 0
    except UsageError as e:
        _say(err, name, ctx, f"error: {e}", priority=_log.ERROR)
        return 2
    except TorcxError as e:
        _say(err, name, ctx, f"error: {e}", priority=_log.ERROR)
        return 1
    except Terminated:
        _say(err, name, ctx, "terminated", priority=_log.ERROR)
        return 128 + 15  # as a shell reports a process ended by SIGTERM
    except KeyboardInterrupt:
        _say(err, name, ctx, "interrupted", priority=_log.ERROR)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `torcx image list | head`): not our failure.
        # Point stdout at /dev/null so the interpreter's final flush stays quiet.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
    except OSError as e:
        # Reading or writing a file failed: name it, no traceback.
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        _say(err, name, ctx, f"error: {where}{e.strerror or e}", priority=_log.ERROR)
        return 1
    except Exception as e:  # noqa: BLE001 - a bug: say so in one line, details on demand
        if ctx is not None and ctx.verbosity >= _log.DEBUG:
            import traceback

            traceback.print_exc(file=err)
        _say(err, name, ctx, f"internal error: {type(e).__name__}: {e} "
             "(this is a bug; --verbose=debug shows the traceback)", priority=_log.ERROR)
        return 1


def _check_root(root: str) -> None:
    """A missing or non-folder --root is a usage error: no command may create it."""
    import stat

    if not root:
        raise UsageError("--root needs a folder")
    try:
        st = os.stat(root)
    except FileNotFoundError:
        raise UsageError(f"--root {root}: no such folder") from None
    except OSError as e:
        raise UsageError(f"--root {root}: {e.strerror or e}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"--root {root}: not a folder")


def _raise_terminated(signum, frame):
    raise Terminated


def _run_handler(name: str, args, ctx):
    """Run the command; a SIGTERM (kill, a stopped service) unwinds it like Ctrl-C.

    Commands that write into a store (populate, pack) remove their .part, .tmp and
    staging files when KeyboardInterrupt passes through them; Terminated is one.
    The boot-time apply (``torcx apply``, torcx-generator) is left out: an
    exception injected between its phases would unwind it half-done.
    The previous handler comes back afterwards (main() also runs in-process).
    """
    if name == GENERATOR_NAME or getattr(args, "command", None) == "apply":
        return args.handler(ctx, args)
    import signal

    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: signals cannot be handled here
        return args.handler(ctx, args)
    try:
        return args.handler(ctx, args)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _on_terminal(stream) -> bool:
    """True when ``stream`` (None: stderr) is a terminal: no ``<N>`` priorities there."""
    try:
        return (stream if stream is not None else sys.stderr).isatty()
    except (AttributeError, ValueError):
        return False


def _say(stream, name, ctx, message, priority):
    generator = name == GENERATOR_NAME and not _on_terminal(stream)
    prefix = f"<{priority}>" if generator else ""
    try:
        stream.write(f"{prefix}{name}: {message}\n")
        stream.flush()
    except (OSError, ValueError):
        pass

