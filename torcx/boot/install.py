# SPDX-License-Identifier: Apache-2.0
"""``torcx install-boot``: add the generator, the launcher and the boot units to a root."""

from __future__ import annotations

import os
import shutil
import sys

from .. import log as _log
from ..errors import ConfigError
from ..paths import host_path
from .unit_reader import member_path
from .unitfiles import BOOT_UNITS, unit_text, write_file

__all__ = ["install_boot", "uninstall_boot"]

GENERATOR_DIRS = ("/usr/lib/systemd/system-generators", "/etc/systemd/system-generators")
UNIT_DIRS = {"/usr/lib/systemd/system-generators": "/usr/lib/systemd/system",
             "/etc/systemd/system-generators": "/etc/systemd/system"}
LAUNCHER = "/usr/bin/torcx"
PACKAGE_DIR = "/usr/lib/python3/dist-packages"  # on sys.path of every Debian python3
RECORD = "/usr/lib/torcx/install-boot.list"
MARKER = "installed by `torcx install-boot`"


def launcher_text(interpreter: str) -> str:
    return (f"#!{interpreter} -I\n"
            f"# SPDX-License-Identifier: Apache-2.0\n"
            f"# torcx launcher, {MARKER}; multicall on the name it is called by.\n"
            "import sys\n\n"
            "from torcx.cli import main\n\n"
            "sys.exit(main())\n")


def _ours(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return MARKER in f.read(4096)
    except OSError:
        return False


def install_boot(root: str = "/", *, generator_dir: str = GENERATOR_DIRS[0],
                 wheel: str | None = None, force: bool = False, log=_log.NULL) -> list[str]:
    """Install the generator, the launcher and torcx-apply.service under ``root``.

    ``wheel``: also unpack a torcx wheel (abi3: one build serves every Python
    3.9+) into ``PACKAGE_DIR``, so the target's own python3 runs torcx.
    Returns the installed paths (logical), also recorded in RECORD for
    ``uninstall_boot``. An existing file not installed by us is never replaced
    unless ``force``.
    """
    root = os.path.abspath(root or "/")
    if generator_dir not in GENERATOR_DIRS:
        raise ConfigError(f"--generator-dir must be one of {', '.join(GENERATOR_DIRS)}")
    interpreter = "/usr/bin/python3" if root != "/" else sys.executable
    installed: list[str] = []
    if wheel:
        installed += _unpack_wheel(root, wheel)
        _precompile(root, log)
    elif root != "/" and not _has_package(root):
        log.warning(f"no torcx package for the python3 of {root} (looked in "
                    f"{PACKAGE_DIR} and /usr/local/lib/python3*/dist-packages); its boot "
                    "will fail until one is installed: pass --wheel")
    files = [
        (LAUNCHER, launcher_text(interpreter), 0o755),
        (f"{generator_dir}/torcx-generator", launcher_text(interpreter), 0o755),
    ] + [(f"{UNIT_DIRS[generator_dir]}/{unit}", unit_text(unit, LAUNCHER), 0o644)
         for unit in BOOT_UNITS]
    for logical, _text, _mode in files:
        host = host_path(root, logical)
        if os.path.lexists(host) and not force and not _ours(host):
            raise ConfigError(f"{host} exists and was not installed by torcx; "
                              "use --force to replace it")
    for logical, text, mode in files:
        write_file(host_path(root, logical), text, mode)
        installed.append(logical)
        log.info(f"installed {logical}")
    previous = _read_record(root)
    write_file(host_path(root, RECORD), "".join(
        p + "\n" for p in dict.fromkeys(previous + installed)))
    return installed


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


def _has_package(root: str) -> bool:
    import glob

    patterns = [PACKAGE_DIR, "/usr/lib/python3.*/dist-packages",
                "/usr/local/lib/python3.*/dist-packages"]
    return any(glob.glob(os.path.join(host_path(root, p), "torcx", "__init__.py"))
               for p in patterns)


def _unpack_wheel(root: str, wheel: str) -> list[str]:
    """Unpack the package and its dist-info from a wheel into PACKAGE_DIR."""
    import zipfile

    out = []
    base = host_path(root, PACKAGE_DIR)
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            name = info.filename
            top = name.split("/", 1)[0]
            if info.is_dir() or ".data/" in name or not (top == "torcx"
                                                         or top.endswith(".dist-info")):
                continue
            member = member_path(name)
            if member is None:
                raise ConfigError(f"{wheel}: unsafe member {name!r}")
            target = os.path.join(base, member)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(info) as src, open(target + ".torcx-tmp", "wb") as dst:
                shutil.copyfileobj(src, dst)
            mode = (info.external_attr >> 16) & 0o777 or 0o644
            os.chmod(target + ".torcx-tmp", mode)
            os.replace(target + ".torcx-tmp", target)
            out.append(f"{PACKAGE_DIR}/{member}")
    if not any(p.endswith("/torcx/__init__.py") for p in out):
        raise ConfigError(f"{wheel}: not a torcx wheel (no torcx/__init__.py)")
    return out


def _read_record(root: str) -> list[str]:
    try:
        with open(host_path(root, RECORD), encoding="utf-8") as f:
            return [ln.strip() for ln in f if ln.strip().startswith("/")]
    except FileNotFoundError:
        return []


def uninstall_boot(root: str = "/", log=_log.NULL) -> list[str]:
    """Remove what install_boot recorded, and the package folders it leaves empty.

    Byte-code caches Python wrote into the package since are removed with it;
    nothing else is touched. Returns the removed paths (logical).
    """
    root = os.path.abspath(root or "/")
    package_dir = host_path(root, PACKAGE_DIR)
    removed = []
    folders: set = set()
    for logical in _read_record(root):
        host = host_path(root, logical)
        try:
            os.unlink(host)
        except FileNotFoundError:
            continue
        removed.append(logical)
        log.info(f"removed {logical}")
        parent = os.path.dirname(host)
        while parent.startswith(package_dir + "/"):
            folders.add(parent)
            parent = os.path.dirname(parent)
    for folder in sorted(folders, key=len, reverse=True):  # deepest first
        shutil.rmtree(os.path.join(folder, "__pycache__"), ignore_errors=True)
        try:
            os.rmdir(folder)
        except OSError:
            pass  # holds files we did not install: keep it
    record = host_path(root, RECORD)
    for undo, path in ((os.unlink, record), (os.rmdir, os.path.dirname(record))):
        try:
            undo(path)
        except OSError:
            pass
    return removed
