# SPDX-License-Identifier: Apache-2.0
"""Where things live (SPEC.md section 2): defaults, config file, env overrides, --root.

Every path held by a :class:`Paths` is a *logical* path: the path as the target
system sees it (``/run/torcx/bin``). That is what gets written into files and
symlinks. :meth:`Paths.host` maps a logical path to where it lives on the machine
running torcx, i.e. under ``--root`` (identity when the root is ``/``).

Precedence, lowest first: built-in defaults, the config file, the environment.
The config file is ``torcx_config=PATH`` from the kernel command line (read from
``ROOT/proc/cmdline``) when present, else ``CONFDIR/config.json`` where CONFDIR
is ``TORCX_CONFDIR`` or the default (the file cannot move its own folder).

Imports are kept to the standard library's cheapest modules: the generator runs
at boot and its start-up time counts.
"""

from __future__ import annotations

import errno
import os
import stat

from .errors import ConfigError

DEFAULT_BASE_DIR = "/var/lib/torcx"
DEFAULT_RUN_DIR = "/run/torcx"
DEFAULT_CONF_DIR = "/etc/torcx"
DEFAULT_USR = "/usr"
OEM_DIR = "/usr/share/oem/torcx"
SEAL_FILE = "/run/metadata/torcx"
PROC_CMDLINE = "/proc/cmdline"
CMDLINE_KEY = "torcx_config="

ENV_BASE_DIR = "TORCX_BASEDIR"
ENV_RUN_DIR = "TORCX_RUNDIR"
ENV_CONF_DIR = "TORCX_CONFDIR"
ENV_STOREPATH = "TORCX_STOREPATH"
ENV_USR = "TORCX_USR_MOUNTPOINT"

__all__ = [
    "Paths",
    "cmdline_config_path",
    "host_path",
    "in_root",
    "resolve_in_root",
    "load",
    "parse_os_release",
    "read_text_file",
    "split_storepath",
]


def _absolute(value: str, what: str) -> str:
    """Normalise an absolute path; a relative or empty one is a ConfigError."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigError(f"{what}: path must be absolute, got {value!r}")
    if "\0" in value:
        raise ConfigError(f"{what}: path contains a NUL byte")
    path = os.path.normpath(value)
    # normpath keeps a leading "//" (POSIX allows it a meaning); we do not.
    return "/" + path.lstrip("/")


def split_storepath(value: str) -> list[str]:
    """Split TORCX_STOREPATH on colons and blanks (upstream split on blanks only)."""
    return value.replace(":", " ").split()


def parse_os_release(text: str) -> dict[str, str]:
    """Parse os-release(5) text: KEY=value lines, values unquoted shell-style."""
    result: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        if not key:
            continue
        result[key] = _unquote(value.strip())
    return result


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        inner = value[1:-1]
        if value[0] == "'":
            return inner
        out = []
        i = 0
        while i < len(inner):
            c = inner[i]
            if c == "\\" and i + 1 < len(inner) and inner[i + 1] in "\"\\$`":
                out.append(inner[i + 1])
                i += 2
                continue
            out.append(c)
            i += 1
        return "".join(out)
    return value


def cmdline_config_path(cmdline: str) -> str | None:
    """The value of the last ``torcx_config=`` word of a kernel command line, if any."""
    found = None
    for word in cmdline.split():
        if word.startswith(CMDLINE_KEY):
            found = word[len(CMDLINE_KEY):]
    return found or None


def read_text_file(path: str) -> str | None:
    """The text of regular file ``path``, None when it does not exist.

    A FIFO or device (an admin's mistake in /etc) raises OSError at once
    instead of blocking the boot on open() or read().
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    with open(fd, encoding="utf-8", errors="surrogateescape") as f:
        if (os.fstat(fd).st_mode & 0o170000) != 0o100000:
            raise OSError(errno.EINVAL, "not a regular file", path)
        return f.read()


def host_path(root: str, path: str) -> str:
    """Target-system ``path`` placed under ``root``; '..' stops at the root, as in a chroot."""
    if root == "/":
        return path
    return os.path.join(root, os.path.normpath("/" + path).lstrip("/"))


MAX_SYMLINKS = 40  # as the kernel's path walk


def _parts(path: str) -> list[str]:
    return [c for c in path.split("/") if c not in ("", ".")]


def resolve_in_root(root: str, path: str, *, follow_last: bool = True) -> str:
    """The logical path that ``path`` reaches under ``root``, with no symlink left in it.

    Absolute link targets start again at ``root``; '..' never climbs above it. A
    missing component ends the resolution: the rest is appended as written (with
    '..' applied lexically). ``follow_last=False`` leaves a final symlink as is.
    """
    todo = _parts(path)
    done: list[str] = []
    links = 0
    while todo:
        name = todo.pop(0)
        if name == "..":
            if done:
                done.pop()
            continue
        if not todo and not follow_last:
            done.append(name)
            break
        host = os.path.join(root, *done, name)
        try:
            st = os.lstat(host)
        except (FileNotFoundError, NotADirectoryError):
            done.append(name)
            for rest in todo:
                if rest == "..":
                    if done:
                        done.pop()
                else:
                    done.append(rest)
            break
        if not stat.S_ISLNK(st.st_mode):
            done.append(name)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise OSError(errno.ELOOP, "too many levels of symbolic links", host)
        target = os.readlink(host)
        if target.startswith("/"):
            done = []
        todo = _parts(target) + todo
    return "/" + "/".join(done)


def in_root(root: str, path: str) -> str:
    """Target-system ``path`` under ``root`` with its folders resolved as in a chroot.

    The last component is not followed (callers create it, or lstat it). So
    ``ROOT/run -> /elsewhere`` leads to ``ROOT/elsewhere``, never out of ``ROOT``.
    """
    if root == "/":
        return path
    return os.path.join(root, resolve_in_root(root, path, follow_last=False).lstrip("/"))


class Paths:
    """The resolved locations of one torcx installation, root-aware.

    Attributes (logical paths, no trailing slash): ``base_dir``, ``run_dir``,
    ``conf_dir``, ``usr``, ``oem``, ``seal_file``; ``store_paths`` (tuple, search
    order); ``os_version`` ("" when unknown); ``config_file`` (logical path of the
    config file that was read, or None); ``root`` (host directory, "/" by default).
    """

    __slots__ = (
        "root", "base_dir", "run_dir", "conf_dir", "usr", "oem", "seal_file",
        "os_version", "detected_os_version", "config_file", "config_store_paths",
        "runtime_store_paths", "store_paths", "problems",
    )

    def __init__(self, *, root: str = "/", base_dir: str = DEFAULT_BASE_DIR,
                 run_dir: str = DEFAULT_RUN_DIR, conf_dir: str = DEFAULT_CONF_DIR,
                 usr: str = DEFAULT_USR, os_version: str = "",
                 detected_os_version: str | None = None,
                 config_file: str | None = None,
                 config_store_paths: tuple[str, ...] = (),
                 runtime_store_paths: tuple[str, ...] = ()):
        self.root = os.path.abspath(root) if root else "/"
        self.base_dir = _absolute(base_dir, "base_dir")
        self.run_dir = _absolute(run_dir, "run_dir")
        self.conf_dir = _absolute(conf_dir, "conf_dir")
        self.usr = _absolute(usr, ENV_USR)
        self.oem = OEM_DIR
        self.seal_file = SEAL_FILE
        self.os_version = os_version
        self.detected_os_version = (
            os_version if detected_os_version is None else detected_os_version)
        self.config_file = config_file
        self.config_store_paths = tuple(
            _absolute(p, "store_paths") for p in config_store_paths)
        self.runtime_store_paths = tuple(
            _absolute(p, ENV_STOREPATH) for p in runtime_store_paths)
        self.store_paths = self._store_order()
        # Faults tolerated while loading (see load(strict=False)), one line each.
        self.problems: list[str] = []

    # -- root mapping ---------------------------------------------------------

    def host(self, path: str) -> str:
        """Where the logical (target-system) ``path`` lives on this machine (see in_root)."""
        return in_root(self.root, path)

    def logical(self, host_path: str) -> str:
        """Inverse of :meth:`host` for a path under the root."""
        if self.root == "/":
            return host_path
        rel = os.path.relpath(host_path, self.root)
        if rel == "." :
            return "/"
        if rel.startswith(".."):
            raise ValueError(f"{host_path} is not under the root {self.root}")
        return "/" + rel

    # -- derived paths (SPEC.md section 2) ---------------------------------

    @property
    def bin_dir(self) -> str:
        return self.run_dir + "/bin"

    @property
    def unpack_dir(self) -> str:
        return self.run_dir + "/unpack"

    @property
    def run_profile(self) -> str:
        return self.run_dir + "/profile.json"

    @property
    def next_profile(self) -> str:
        return self.conf_dir + "/next-profile"

    @property
    def user_profile_dir(self) -> str:
        return self.conf_dir + "/profiles"

    @property
    def vendor_dir(self) -> str:
        return self.usr + "/share/torcx"

    @property
    def vendor_store(self) -> str:
        return self.vendor_dir + "/store"

    @property
    def oem_store(self) -> str:
        return self.oem + "/store"

    @property
    def os_release(self) -> str:
        return self.usr + "/lib/os-release"

    @property
    def profile_dirs(self) -> tuple[str, str, str]:
        """Profile folders, lowest precedence first: vendor, OEM, user."""
        return (self.vendor_dir + "/profiles", self.oem + "/profiles", self.user_profile_dir)

    @property
    def remote_dirs(self) -> tuple[str, str, str]:
        """Remote folders, lowest precedence first: vendor, OEM, user."""
        return (self.vendor_dir + "/remotes", self.oem + "/remotes", self.conf_dir + "/remotes")

    def user_store(self, version: str = "") -> str:
        """``BASEDIR/store``, or the versioned ``BASEDIR/store/VERSION``."""
        store = self.base_dir + "/store"
        return f"{store}/{version}" if version else store

    def _store_order(self) -> tuple[str, ...]:
        order: list[str] = []
        ver = self.os_version
        # The vendor store ships the running OS's images: leave it out when
        # asked about another OS version (upstream FilterStoreVersions).
        if not ver or not self.detected_os_version or ver == self.detected_os_version:
            order.append(self.vendor_store)
        if ver:
            order.append(f"{self.oem_store}/{ver}")
        order.append(self.oem_store)
        order.extend(self.config_store_paths)
        if ver:
            order.append(self.user_store(ver))
        order.append(self.user_store())
        order.extend(self.runtime_store_paths)
        # A store listed twice is searched once, at its first position.
        seen: set[str] = set()
        return tuple(p for p in order if not (p in seen or seen.add(p)))

    def as_dict(self) -> dict:
        """A JSON-friendly summary (for --verbose=debug and status reports)."""
        return {
            "root": self.root,
            "base_dir": self.base_dir,
            "run_dir": self.run_dir,
            "conf_dir": self.conf_dir,
            "usr": self.usr,
            "oem": self.oem,
            "os_version": self.os_version,
            "config_file": self.config_file,
            "store_paths": list(self.store_paths),
        }

    def __repr__(self) -> str:
        return f"Paths({self.as_dict()!r})"


def load(root: str = "/", *, environ: dict | None = None,
         os_version: str | None = None, log=None, strict: bool = True) -> Paths:
    """Resolve every location for ``root`` from defaults, config file and environment.

    ``os_version`` overrides VERSION_ID from os-release (``-n OSVER``).
    ``log`` (optional, a :class:`torcx.log.Logger`) receives debug/warning lines.
    Raises ConfigError for relative paths, SchemaError for a bad config file.

    ``strict=False`` is for boot: a config file that cannot be read or is invalid,
    and an unusable VERSION_ID, are logged as warnings, recorded in
    ``Paths.problems`` and ignored, so a bad file in /etc cannot keep the vendor
    addons from being applied. Environment values stay strict.
    """
    env = os.environ if environ is None else environ
    root = os.path.abspath(root or "/")
    problems: list[str] = []

    def host(path: str) -> str:
        return host_path(root, path)

    def tolerate(error: Exception, consequence: str) -> None:
        if strict:
            raise error
        message = f"{_describe(error)}; {consequence}"
        problems.append(message)
        if log is not None:
            log.warning(message)

    conf_dir = _absolute(env.get(ENV_CONF_DIR) or DEFAULT_CONF_DIR, ENV_CONF_DIR)
    config_file = conf_dir + "/config.json"
    explicit = False
    try:
        cmdline = read_text_file(host(PROC_CMDLINE))
        from_cmdline = cmdline_config_path(cmdline) if cmdline else None
        if from_cmdline:
            config_file = _absolute(from_cmdline, "torcx_config= on the kernel command line")
            explicit = True
    except (OSError, ConfigError) as e:
        tolerate(e, f"using {config_file}")

    values: dict = {}
    store_extra: tuple[str, ...] = ()
    used_config = None
    try:
        text = read_text_file(host(config_file))
        if text is None:
            if explicit and log is not None:
                log.warning(f"config file {config_file} from the kernel command line "
                            "does not exist, ignoring")
        else:
            from .schemas import parse_config_text

            cfg = parse_config_text(text, host(config_file))
            for key in ("base_dir", "run_dir", "conf_dir"):
                value = getattr(cfg, key)
                if value is not None:
                    values[key] = _absolute(value, f"{config_file}: {key}")
            store_extra = tuple(
                _absolute(p, f"{config_file}: store_paths") for p in cfg.store_paths)
            used_config = config_file
    except (OSError, ValueError) as e:  # SchemaError and ConfigError are ValueErrors
        values, store_extra = {}, ()
        tolerate(e, f"ignoring the config file {config_file}, using the defaults")

    for key, var in (("base_dir", ENV_BASE_DIR), ("run_dir", ENV_RUN_DIR),
                     ("conf_dir", ENV_CONF_DIR)):
        value = env.get(var)
        if value:
            values[key] = _absolute(value, var)
    usr = _absolute(env.get(ENV_USR) or DEFAULT_USR, ENV_USR)
    runtime = tuple(_absolute(p, ENV_STOREPATH)
                    for p in split_storepath(env.get(ENV_STOREPATH, "")))

    detected = ""
    try:
        release = read_text_file(host(usr + "/lib/os-release"))
    except OSError as e:
        release = None
        tolerate(e, "no versioned stores")
    if release is not None:
        detected = parse_os_release(release).get("VERSION_ID", "")
        if not _usable_version(detected):
            bad, detected = detected, ""
            tolerate(ConfigError(f"{usr}/lib/os-release: VERSION_ID {bad!r} cannot name "
                                 "a store folder"), "no versioned stores")
    elif log is not None:
        log.debug(f"{usr}/lib/os-release not found, no versioned stores")
    version = detected if os_version is None else os_version
    if not _usable_version(version):
        raise ConfigError(f"OS version {version!r} cannot name a store folder")

    paths = Paths(root=root, usr=usr, os_version=version, detected_os_version=detected,
                  config_file=used_config, config_store_paths=store_extra,
                  runtime_store_paths=runtime, **values)
    paths.problems = problems
    if log is not None:
        log.debug(f"paths: {paths.as_dict()}")
    return paths


def _usable_version(version: str) -> bool:
    return "/" not in version and "\0" not in version and version not in (".", "..")


def _describe(error: Exception) -> str:
    if isinstance(error, OSError) and error.filename:
        return f"{error.filename}: {error.strerror or error}"
    return str(error)
