# SPDX-License-Identifier: Apache-2.0
"""``torcx install-boot``: add the generator, the launcher and the boot units to a root."""

from __future__ import annotations

import os
import stat
import sys

from .. import log as _log
from ..errors import ConfigError
from ..inroot import InRoot
from ..paths import resolve_in_root
from .unit_reader import member_path
from .unitfiles import BOOT_UNITS, unit_text

__all__ = ["Outcome", "install_boot", "uninstall_boot"]

GENERATOR_DIRS = ("/usr/lib/systemd/system-generators", "/etc/systemd/system-generators")
UNIT_DIRS = {"/usr/lib/systemd/system-generators": "/usr/lib/systemd/system",
             "/etc/systemd/system-generators": "/etc/systemd/system"}
LAUNCHER = "/usr/bin/torcx"
PACKAGE_DIR = "/usr/lib/python3/dist-packages"  # on sys.path of every Debian python3
RECORD = "/usr/lib/torcx/install-boot.list"
MARKER = "installed by `torcx install-boot`"


def launcher_text(interpreter: str, path: list | None = None) -> str:
    """The launcher: ``python3 -IS`` with an explicit path (``path``, default: where this
    interpreter finds torcx and the modules it imports). Skipping site saves its start-up
    and .pth scan at every boot; if torcx moved, the usual path is tried."""
    if path is None:
        path = _import_path()
    return (f"#!{interpreter} -IS\n"
            f"# SPDX-License-Identifier: Apache-2.0\n"
            f"# torcx launcher, {MARKER}; multicall on the name it is called by.\n"
            "import sys\n\n"
            f"sys.path += {path!r}\n"
            "try:\n"
            "    from torcx.cli import main\n"
            "except ImportError:  # moved since: the interpreter's usual path\n"
            "    import site\n\n"
            "    site.main()\n"
            "    from torcx.cli import main\n"
            "status = main()\n"
            "if sys.argv[1:2] == ['apply'] or sys.argv[0].endswith('torcx-generator'):\n"
            "    # At boot: skip the interpreter's clean-up (ms); every file is closed.\n"
            "    sys.stdout.flush()\n"
            "    sys.stderr.flush()\n"
            "    import os\n\n"
            "    os._exit(status)\n"
            "sys.exit(status)\n")


def _import_path() -> list:
    """Folders this interpreter loads torcx and its runtime dependencies from."""
    import importlib.util

    out = []
    for name in ("torcx", "_cffi_backend", "libarchive", "xxhash"):
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
            continue
        where = os.path.dirname(spec.origin)
        if spec.submodule_search_locations:  # a package: its parent folder
            where = os.path.dirname(where)
        if where not in out:
            out.append(where)
    return out


class Outcome:
    """What install_boot or uninstall_boot did, as logical paths."""

    def __init__(self):
        self.written: list[str] = []    # created or replaced
        self.unchanged: list[str] = []  # already installed with this content
        self.removed: list[str] = []    # removed (install: files the new wheel lacks)
        self.kept: list[str] = []       # recorded but left alone (changed since, or no digest)

    @property
    def changed(self) -> bool:
        return bool(self.written or self.removed)


def _digest(data: bytes) -> str:
    import xxhash

    return xxhash.xxh3_128_hexdigest(data)


def _installable(logical: str) -> bool:
    """Only the places install_boot writes to: a record naming others is not obeyed."""
    if logical != os.path.normpath(logical) or not logical.startswith("/"):
        return False
    if logical == LAUNCHER or logical.startswith(PACKAGE_DIR + "/"):
        return True
    folder = os.path.dirname(logical)
    return folder in GENERATOR_DIRS or folder in UNIT_DIRS.values()


def install_boot(root: str = "/", *, generator_dir: str = GENERATOR_DIRS[0],
                 wheel: str | None = None, force: bool = False, log=_log.NULL) -> Outcome:
    """Install the generator, the launcher and the boot units under ``root``.

    ``wheel``: also unpack a torcx wheel (abi3: one build serves every Python
    3.9+) into ``PACKAGE_DIR``, so the target's own python3 runs torcx. Each file
    is recorded in RECORD with the digest of what was written: a second install
    of the same files changes nothing, an install of another wheel replaces what
    changed and removes what the new one lacks. Every target is checked before
    anything is written: an existing file that torcx did not write (or that was
    changed since) is never replaced unless ``force``. Paths are resolved inside
    ``root`` as a chroot would: absolute links in the root never lead out of it.
    """
    root = os.path.abspath(root or "/")
    if generator_dir not in GENERATOR_DIRS:
        raise ConfigError(f"--generator-dir must be one of {', '.join(GENERATOR_DIRS)}")
    interpreter = "/usr/bin/python3" if root != "/" else sys.executable
    outcome = Outcome()
    with InRoot(root) as fs:
        record = _read_record(fs, log)
        wanted: dict[str, tuple[bytes, int]] = {}
        if wheel:
            wanted.update(_wheel_files(wheel))
        elif root != "/" and not _has_package(fs):
            log.warning(f"no torcx package for the python3 of {root} (looked in "
                        f"{PACKAGE_DIR} and /usr/local/lib/python3*/dist-packages); its boot "
                        "will fail until one is installed: pass --wheel")
        launcher = launcher_text(interpreter, [PACKAGE_DIR] if root != "/" else None).encode()
        wanted[LAUNCHER] = (launcher, 0o755)
        wanted[f"{generator_dir}/torcx-generator"] = (launcher, 0o755)
        for unit in BOOT_UNITS:
            wanted[f"{UNIT_DIRS[generator_dir]}/{unit}"] = (
                unit_text(unit, LAUNCHER).encode(), 0o644)
        # Package files of an earlier --wheel stay recorded when no wheel is given.
        keep = {p: d for p, d in record.items()
                if not wheel and p.startswith(PACKAGE_DIR + "/") and p not in wanted}

        foreign = []
        for logical, (data, mode) in wanted.items():
            st = fs.lstat(logical)
            if st is None:
                outcome.written.append(logical)
                continue
            current = fs.read(logical) if stat.S_ISREG(st.st_mode) else None
            if current == data and stat.S_IMODE(st.st_mode) == mode:
                outcome.unchanged.append(logical)
            elif force or (current is not None and record.get(logical) == _digest(current)):
                outcome.written.append(logical)
            else:
                foreign.append(logical)
        if foreign:
            more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
            changed = " or was changed since" if foreign[0] in record else ""
            raise ConfigError(f"{fs.host(foreign[0])} exists and was not installed by "
                              f"torcx{changed}{more}; nothing written; use --force to "
                              "replace it")

        for logical in outcome.written:
            data, mode = wanted[logical]
            fs.write(logical, data, mode)
            log.debug(f"installed {logical}")
        stale = {p: d for p, d in record.items() if p not in wanted and p not in keep}
        _remove_recorded(fs, stale, outcome, log)
        new_record = {p: _digest(data) for p, (data, _mode) in wanted.items()}
        new_record.update(keep)
        if new_record != record:
            fs.write(RECORD, "".join(f"{d}  {p}\n" for p, d in sorted(new_record.items()))
                     .encode())
    if wheel and any(p.startswith(PACKAGE_DIR + "/") for p in outcome.written + outcome.removed):
        _precompile(root, log)
    return outcome


def _precompile(root: str, log) -> None:
    """Byte-compile the unpacked package with the target's own python3.

    On an immutable /usr nothing can write __pycache__ at boot, and compiling
    torcx's modules costs each of the two boot-time processes about 30 ms.
    Hash-checked .pyc files stay valid when an image builder resets mtimes.
    """
    import subprocess

    args = ["-I", "-m", "compileall", "-q", "--invalidation-mode", "checked-hash",
            f"{PACKAGE_DIR}/torcx"]
    if root == "/":
        cmd = [sys.executable] + args
    elif os.geteuid() == 0:
        cmd = ["chroot", root, "/usr/bin/python3"] + args
    else:
        log.warning(f"not root: torcx is not byte-compiled for the python3 of {root}")
        return
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        problem = (r.stderr or r.stdout).strip().splitlines()[-1:] if r.returncode else None
    except OSError as e:
        problem = [str(e)]
    if problem:
        log.warning(f"torcx not byte-compiled for the python3 of {root} ({problem[0]}); "
                    "with a read-only /usr it compiles at every boot")


def _has_package(fs: InRoot) -> bool:
    import glob

    patterns = [(PACKAGE_DIR, ""), ("/usr/lib", "python3.*/dist-packages"),
                ("/usr/local/lib", "python3.*/dist-packages")]
    return any(glob.glob(os.path.join(glob.escape(fs.host(base)), rest, "torcx", "__init__.py"))
               for base, rest in patterns)


def _wheel_files(wheel: str) -> dict[str, tuple[bytes, int]]:
    """``{logical path: (bytes, mode)}`` of the package and its dist-info in a wheel."""
    import zipfile

    out = {}
    try:
        z = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as e:
        raise ConfigError(f"{wheel}: not a wheel ({getattr(e, 'strerror', None) or e})") \
            from None
    with z:
        for info in z.infolist():
            name = info.filename
            top = name.split("/", 1)[0]
            if info.is_dir() or ".data/" in name or not (top == "torcx"
                                                         or top.endswith(".dist-info")):
                continue
            member = member_path(name)
            if member is None:
                raise ConfigError(f"{wheel}: unsafe member {name!r}")
            mode = (info.external_attr >> 16) & 0o777 or 0o644
            out[f"{PACKAGE_DIR}/{member}"] = (z.read(info), mode)
    if f"{PACKAGE_DIR}/torcx/__init__.py" not in out:
        raise ConfigError(f"{wheel}: not a torcx wheel (no torcx/__init__.py)")
    return out


def _read_record(fs: InRoot, log) -> dict[str, str | None]:
    """``{logical path: xxh3-128 hex}`` of RECORD (None: a line without a digest).

    Lines naming a place install_boot never writes to are ignored, said once each.
    """
    data = fs.read(RECORD)
    out: dict[str, str | None] = {}
    for line in (data or b"").decode("utf-8", "surrogateescape").splitlines():
        text = line.strip()
        if not text:
            continue
        digest, sep, logical = text.partition("  ")
        if not sep:
            digest, logical = None, text
        if not _installable(logical) or (digest is not None and len(digest) != 32):
            log.warning(f"{RECORD}: ignoring the entry {text!r} (not a file install-boot "
                        "writes)")
            continue
        out[logical] = digest
    return out


def _remove_recorded(fs: InRoot, entries: dict, outcome: Outcome, log) -> None:
    """Remove each recorded file whose content is still what install_boot wrote."""
    package_dir = resolve_in_root(fs.root, PACKAGE_DIR)
    folders: set = set()
    for logical, digest in entries.items():
        try:
            current = fs.read(logical)
        except OSError as e:
            current, why = b"", e.strerror or str(e)
        else:
            why = "changed since install-boot wrote it"
        if current is None:
            continue  # already gone
        if digest is None or _digest(current) != digest:
            if digest is None:
                why = "no digest recorded"
            outcome.kept.append(logical)
            log.warning(f"{fs.host(logical)}: {why}, kept")
            continue
        fs.unlink(logical)
        outcome.removed.append(logical)
        log.debug(f"removed {logical}")
        where = fs.locate(logical)
        if where.endswith(".py"):  # its byte code, by the python3 of any version
            stem = os.path.basename(where)[:-3]
            cache = os.path.join(os.path.dirname(where), "__pycache__")
            try:
                with os.scandir(fs.host(cache)) as it:
                    names = [e.name for e in it]
            except OSError:
                names = []
            for name in names:
                if name.startswith(stem + ".") and name.endswith(".pyc"):
                    fs.unlink(f"{cache}/{name}")
        parent = os.path.dirname(where)
        while parent.startswith(package_dir + "/"):
            folders.add(parent)
            parent = os.path.dirname(parent)
    for folder in sorted(folders, key=len, reverse=True):  # deepest first
        try:
            with os.scandir(fs.host(folder)) as it:
                if {e.name for e in it} - {"__pycache__"}:
                    continue  # holds files we did not install: keep it
            fs.rmtree(f"{folder}/__pycache__")
        except OSError:
            pass
        try:
            fs.rmdir(folder)
        except OSError:
            pass


def uninstall_boot(root: str = "/", log=_log.NULL, *,
                   base_dir: str = "/var/lib/torcx") -> Outcome:
    """Remove what install_boot recorded, and the package folders it leaves empty.

    Only files whose content is still what install_boot wrote are removed (the
    record holds a digest per file); byte-code caches Python wrote into the
    package since go with it. The unit plan in ``base_dir`` (BASEDIR, a logical
    path) goes too: a cache torcx wrote (install-boot, set-next, every apply),
    no user data. Nothing else is touched, and paths are resolved in ``root`` as
    a chroot would, so nothing outside it is ever removed.
    """
    from ..apply.unitplan import PLAN_FILE

    root = os.path.abspath(root or "/")
    outcome = Outcome()
    with InRoot(root) as fs:
        _remove_recorded(fs, _read_record(fs, log), outcome, log)
        if not outcome.kept:
            for undo, path in ((fs.unlink, RECORD), (fs.rmdir, os.path.dirname(RECORD))):
                try:
                    undo(path)
                except OSError:
                    pass
        plan = base_dir.rstrip("/") + "/" + PLAN_FILE
        try:
            fs.unlink(plan)
        except OSError:
            pass  # none (or not reachable in root): nothing of ours to remove
        else:
            outcome.removed.append(plan)
            log.debug(f"removed {plan}")
            try:
                fs.rmdir(base_dir)  # only when the plan was all it held
            except OSError:
                pass
    return outcome
