# SPDX-License-Identifier: Apache-2.0
"""Profiles (SPEC.md section 5): listing, next-profile, lower/upper selection, merging.

Profiles live in ``USR/share/torcx/profiles``, ``OEM/profiles`` and
``CONFDIR/profiles`` as ``NAME.json``; a later folder shadows an earlier one for
the same name. The lower profiles are ``vendor`` then ``oem`` (each only when
present); the upper profile is named by ``CONFDIR/next-profile``.

Merge rule, profile by profile, each over the result so far: an entry removes
every earlier entry of its name (earlier profiles and earlier in the same
profile); an entry with an empty reference removes without replacing. The
result keeps the earlier survivors in their order, then the new entries in
theirs.

As upstream, ``/etc/coreos/docker-1.12`` holding ``yes`` or ``no`` puts the
profile ``docker-1.12-yes`` or ``-no`` (when it exists) in place of ``vendor``.
"""

from __future__ import annotations

import os
import posixpath

from . import schemas
from .errors import ConfigError, NotFound, SchemaError
from .log import NULL
from .paths import read_text_file

# Checked by hand, not with re: the boot path does not import it (milliseconds a boot).
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
VENDOR_PROFILE = "vendor"
OEM_PROFILE = "oem"
LOWER_PROFILES = (VENDOR_PROFILE, OEM_PROFILE)

__all__ = [
    "CurrentState",
    "LOWER_PROFILES",
    "Selection",
    "check_name",
    "is_valid_name",
    "find_profile",
    "list_profiles",
    "merge",
    "merge_into",
    "parse_next_profile",
    "read_current",
    "read_given_or_next",
    "read_next_profile",
    "select",
    "write_next_profile",
]


def check_name(name: str, what: str = "profile") -> str:
    """Return ``name`` if it is a valid profile (or remote) name, else raise ConfigError."""
    if not is_valid_name(name):
        raise ConfigError(f"invalid {what} name {name!r} "
                          "(1 to 512 of letters, digits, '.', '_' and '-')")
    return name


def is_valid_name(name) -> bool:
    """Profile and remote names: 1 to 512 of letters, digits, '.', '_' and '-'."""
    return (isinstance(name, str) and 0 < len(name) <= 512 and name not in (".", "..")
            and all(ch in _NAME_CHARS for ch in name))


def _is_profile_file(host_path: str) -> bool:
    try:
        st = os.stat(host_path)  # follows symlinks: a link to a regular file counts
    except OSError:
        return False
    return (st.st_mode & 0o170000) == 0o100000


def list_profiles(paths, log=NULL) -> dict[str, str]:
    """``{name: logical path}`` of every profile; user shadows OEM shadows vendor."""
    found: dict[str, str] = {}
    for folder in paths.profile_dirs:
        try:
            names = sorted(os.listdir(paths.host(folder)))
        except FileNotFoundError:
            continue
        except OSError as e:
            log.warning(f"profile folder {folder} cannot be read ({e.strerror}), ignoring")
            continue
        for filename in names:
            if not filename.endswith(".json"):
                continue
            name = filename[: -len(".json")]
            if not is_valid_name(name):
                log.debug(f"{folder}/{filename}: not a valid profile name, ignoring")
                continue
            logical = f"{folder}/{filename}"
            if _is_profile_file(paths.host(logical)):
                found[name] = logical
    return found


def parse_next_profile(text: str, filename: str = "next-profile") -> str | None:
    """The profile name in a next-profile file (None when blank).

    Surrounding blanks and a ``.json`` suffix are ignored; anything else that is
    not a valid profile name is a ConfigError naming the file.
    """
    name = text.strip()
    if name.endswith(".json"):
        name = name[: -len(".json")]
    if not name:
        return None
    try:
        return check_name(name)
    except ConfigError as e:
        raise ConfigError(f"{filename}: {e}") from None


def read_next_profile(paths) -> str | None:
    """The name in ``CONFDIR/next-profile``; None when the file is missing or blank."""
    text = read_text_file(paths.host(paths.next_profile))
    if text is None:
        return None
    return parse_next_profile(text, paths.next_profile)


def write_next_profile(paths, name: str) -> None:
    """Select ``name`` for the next boot (atomically; the folder is created)."""
    check_name(name)
    os.makedirs(paths.host(paths.conf_dir), mode=0o755, exist_ok=True)
    schemas.write_atomic(paths.host(paths.next_profile), name + "\n")


def merge_into(result: list, images) -> list:
    """Merge one profile's ``images`` over ``result`` (both lists of ImageRef)."""
    last: dict[str, int] = {}
    images = list(images)
    for i, image in enumerate(images):
        last[image.name] = i
    survivors = [im for im in result if im.name not in last]
    newcomers = [im for i, im in enumerate(images)
                 if last[im.name] == i and im.reference != ""]
    return survivors + newcomers


def merge(profiles) -> list:
    """Merge an iterable of image lists, lowest first, into one list of ImageRef."""
    result: list = []
    for images in profiles:
        result = merge_into(result, images)
    return result


class Selection:
    """The profiles chosen for an apply and their merged images.

    ``lower`` and ``upper`` are the names actually applied (``upper`` None when
    not applied); ``files`` maps each applied name to its logical path;
    ``problems`` lists ``(profile name, message)`` for every profile that was
    wanted but skipped (unknown, unreadable, invalid); ``images`` is the merge.
    """

    __slots__ = ("lower", "upper", "files", "problems", "images", "wanted_upper")

    def __init__(self):
        self.lower: list[str] = []
        self.upper: str | None = None
        self.wanted_upper: str | None = None
        self.files: dict[str, str] = {}
        self.problems: list[tuple[str, str]] = []
        self.images: list = []


def select(paths, log=NULL, *, upper: str | None = None) -> Selection:
    """Choose lower and upper profiles and merge them, never failing on a bad one.

    ``upper`` overrides the next-profile file. A broken or unknown profile is
    recorded in ``problems`` and logged, and the others are still merged: a bad
    user file must never leave a machine without its vendor addons.
    """
    sel = Selection()
    available = list_profiles(paths, log)
    if upper is None:
        try:
            upper = read_next_profile(paths)
        except (ConfigError, OSError) as e:
            message = str(e)
            if isinstance(e, OSError):
                message = f"{paths.next_profile}: {e.strerror or e}"
            sel.problems.append(("next-profile", message))
            log.warning(f"{message}; applying the lower profiles only")
            upper = None
    sel.wanted_upper = upper
    loaded = []
    lowers = (_vendor_profile_name(paths, available, log), OEM_PROFILE)
    for name in lowers:
        if name not in available:
            continue
        images = _load(paths, name, available[name], sel, log)
        if images is not None:
            sel.lower.append(name)
            loaded.append(images)
    if upper is not None:
        if upper not in available:
            message = f"profile {upper!r} named in {paths.next_profile} not found"
            sel.problems.append((upper, message))
            log.warning(f"{message}; applying the lower profiles only")
        elif upper in lowers:
            # Already merged as a lower profile; applying it twice changes nothing.
            sel.upper = upper if upper in sel.lower else None
        else:
            images = _load(paths, upper, available[upper], sel, log)
            if images is not None:
                sel.upper = upper
                loaded.append(images)
    sel.images = merge(loaded)
    return sel


def _vendor_profile_name(paths, available: dict, log) -> str:
    """``vendor``, or the profile upstream's Docker 1.12 flag file selects in its place.

    Upstream reads ``/etc/coreos/docker-1.12`` (next to CONFDIR): ``yes`` or
    ``no`` applies ``docker-1.12-yes`` or ``docker-1.12-no`` as the vendor
    profile when that profile exists.
    """
    flag_path = posixpath.join(posixpath.dirname(paths.conf_dir), "coreos", "docker-1.12")
    try:
        text = read_text_file(paths.host(flag_path))
    except OSError as e:
        log.error(f"{flag_path}: {e.strerror or e}, ignoring")
        return VENDOR_PROFILE
    if text is None:
        return VENDOR_PROFILE
    flag = text.strip()
    if flag not in ("yes", "no"):
        log.warning(f"{flag_path}: unknown value {flag!r}, ignoring")
        return VENDOR_PROFILE
    name = f"docker-1.12-{flag}"
    if name not in available:
        log.error(f"vendor profile {name!r} selected by {flag_path} does not exist; "
                  f"using {VENDOR_PROFILE!r}")
        return VENDOR_PROFILE
    log.info(f"vendor profile {name!r} selected by {flag_path}")
    return name


def _load(paths, name, logical, sel, log):
    try:
        profile = schemas.read_profile(paths.host(logical))
    except SchemaError as e:
        message = str(e)
    except OSError as e:
        message = f"{logical}: {e.strerror or e}"
    else:
        sel.files[name] = logical
        return profile.images
    sel.problems.append((name, message))
    log.warning(f"profile {name} skipped: {message}")
    return None


def find_profile(paths, name: str, log=NULL) -> str:
    """The logical path of profile ``name``; NotFound lists where it was looked for."""
    check_name(name)
    available = list_profiles(paths, log)
    if name not in available:
        raise NotFound(f"profile {name!r} not found in {', '.join(paths.profile_dirs)}")
    return available[name]


def read_given_or_next(paths, *, file: str | None, name: str | None,
                       log=NULL) -> tuple[str, schemas.Profile]:
    """(source, profile) for a command's ``--file F``, ``--name P``, or else the next profile.

    ``source`` names the profile in messages: F as given, or the profile's logical path.
    """
    if file:
        return file, schemas.read_profile(file)
    if not name:
        name = read_next_profile(paths)
        if name is None:
            raise NotFound(f"no profile given and none selected in {paths.next_profile}")
        log.info(f"no profile given, using the next profile {name!r}")
    source = find_profile(paths, name, log)
    return source, schemas.read_profile(paths.host(source))


class CurrentState:
    """What the running boot applied, read from the seal file (all None if none)."""

    __slots__ = ("lower_profile_names", "upper_profile_name", "profile_path", "seal")

    def __init__(self, seal: dict | None):
        self.seal = seal
        seal = seal or {}
        lower = seal.get("TORCX_LOWER_PROFILES")
        self.lower_profile_names = [n for n in lower.split(":") if n] if lower else []
        self.upper_profile_name = seal.get("TORCX_UPPER_PROFILE") or None
        self.profile_path = seal.get("TORCX_PROFILE_PATH") or None


def read_current(paths, log=NULL) -> CurrentState:
    """Parse the seal file; a missing one means nothing was applied this boot."""
    try:
        with open(paths.host(paths.seal_file), encoding="utf-8",
                  errors="surrogateescape") as f:
            return CurrentState(schemas.parse_seal(f.read()))
    except (FileNotFoundError, NotADirectoryError):
        return CurrentState(None)
    except OSError as e:
        log.warning(f"seal file {paths.seal_file} cannot be read ({e.strerror}), ignoring")
        return CurrentState(None)

