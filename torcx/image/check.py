# SPDX-License-Identifier: Apache-2.0
"""Checks of an image root folder before it is packed: manifest and the files it names.

Every problem is collected (not just the first) so an image builder fixes them
all in one round; each names its path. The rules follow what the apply does
with the manifest (torcx/propagate.py): paths are absolute inside the image and
must resolve inside it, because after unpacking an absolute or climbing symlink
leads to the host.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from dataclasses import dataclass

from .. import schemas
from ..errors import SchemaError

MANIFEST_PATH = ".torcx/manifest.json"

UNIT_TYPES = ("service", "socket", "device", "mount", "automount", "swap", "target",
              "path", "timer", "slice", "scope")
# systemd's unit_name_is_valid(): prefix[@instance].type, at most 255 bytes.
_UNIT_NAME = re.compile(
    r"^[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\@-]*)?\.(" + "|".join(UNIT_TYPES) + r")$")
UNIT_NAME_MAX = 255

# Suffixes the consuming tool reads, per manifest key.
SUFFIXES = {
    "network": (".network", ".netdev", ".link"),
    "sysusers": (".conf",),
    "tmpfiles": (".conf",),
    "udev_rules": (".rules",),
}
UNIT_LINK_FOLDERS = (".wants", ".requires")
PROPAGATED = {"network": "/run/systemd/network", "sysusers": "/run/sysusers.d",
              "tmpfiles": "/run/tmpfiles.d", "udev_rules": "/run/udev/rules.d"}


@dataclass(frozen=True)
class Problem:
    """One fault of an image: the path it concerns (image path or file; "" for the
    root folder itself) and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def is_valid_unit_name(name: str) -> bool:
    """True if ``name`` is a systemd unit file name (``foo.service``, ``foo@.socket``...)."""
    return len(name.encode()) <= UNIT_NAME_MAX and _UNIT_NAME.match(name) is not None


def check_name(name: str, reference: str) -> list[Problem]:
    """The image name and reference become a file name NAME:REF.torcx.EXT and a folder.

    The rules are the profile parser's: an archive no profile can name is useless.
    """
    problems = []
    if not name or name in (".", "..") or any(c in name for c in "/:") or _has_control(name):
        problems.append(Problem("--name", f"invalid image name {name!r} "
                                          "(not empty, '.', '..'; no '/', ':' or control "
                                          "characters)"))
    if not reference or reference in (".", "..") or "/" in reference or _has_control(reference):
        problems.append(Problem("--reference", f"invalid reference {reference!r} "
                                               "(not empty, '.', '..'; no '/' or control "
                                               "characters)"))
    return problems


def _has_control(text: str) -> bool:
    return any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text)


def load_manifest(rootfs: str):
    """``(ImageManifest or None, problems)`` for ``ROOTFS/.torcx/manifest.json``."""
    path = os.path.join(rootfs, MANIFEST_PATH)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None, []  # an image without a manifest is valid and propagates nothing
    if not stat.S_ISREG(st.st_mode):
        return None, [Problem(MANIFEST_PATH, "not a regular file")]
    try:
        with open(path, "rb") as f:
            doc = schemas.load_json(f.read(), MANIFEST_PATH)
        return schemas.parse_image_manifest(doc, MANIFEST_PATH), []
    except SchemaError as e:
        return None, [Problem(MANIFEST_PATH, f"{e.jsonpath}: {e.problem}")]
    except OSError as e:
        return None, [Problem(MANIFEST_PATH, f"cannot read: {e.strerror}")]


_MAX_SYMLINKS = 40  # as the kernel's path walk (ELOOP)


class _Image:
    """The image root folder, resolving manifest paths as they resolve once unpacked.

    Symlinks are followed inside the image only: an absolute target resolves on
    the host once the image is unpacked, and a relative one climbing above the
    image root leaves ``unpack/NAME``, whatever they happen to reach on the
    machine that packs.
    """

    def __init__(self, rootfs: str):
        self.real = os.path.realpath(rootfs)

    def resolve(self, asset: str) -> tuple[str, str]:
        """``(host path, problem)``: the path with every symlink followed, or why it fails."""
        parts = [p for p in asset.split("/") if p not in ("", ".")]
        if not parts:
            return "", "is the image root"
        # (component, belongs to the final component of asset), next one last
        todo = [(p, i == len(parts) - 1) for i, p in reversed(list(enumerate(parts)))]
        done: list[str] = []  # resolved components below the root, none a symlink
        links = 0
        final_link = False  # the final component is a symlink being followed
        while todo:
            part, final = todo.pop()
            if part == "..":
                if not done:
                    return "", _escape_problem(final_link)
                done.pop()
                continue
            host = os.path.join(self.real, *done, part)
            try:
                st = os.lstat(host)
            except (FileNotFoundError, NotADirectoryError):
                return "", "is a dangling symlink" if final_link else "no such file in the image"
            except OSError as e:
                return "", f"cannot stat {os.path.join('/', *done, part)}: {e.strerror}"
            if stat.S_ISLNK(st.st_mode):
                links += 1
                final_link = final_link or final
                if links > _MAX_SYMLINKS:
                    return "", "too many levels of symlinks"
                target = os.readlink(host)
                if target.startswith("/"):
                    return "", _escape_problem(final)
                todo.extend((p, final) for p in reversed(target.split("/"))
                            if p not in ("", "."))
                continue
            if todo and not stat.S_ISDIR(st.st_mode):
                return "", "no such file in the image (a parent is not a folder)"
            done.append(part)
        if not done:
            return "", "is the image root"
        return os.path.join(self.real, *done), ""


def _escape_problem(final_link: bool) -> str:
    if final_link:
        return ("is a symlink leading outside the image (once unpacked, an absolute target "
                "resolves on the host and '..' above the image root leaves it)")
    return "leads outside the image (a parent folder is a symlink out of it)"


def check_manifest_paths(rootfs: str, manifest) -> list[Problem]:
    """Check every path listed in ``manifest`` against the files of ``rootfs``."""
    image = _Image(rootfs)
    problems: list[Problem] = []
    for key, assets in manifest.items():
        for i, asset in enumerate(assets):
            where = f"$.value.{key}[{i}] {asset}"
            host, why = image.resolve(asset)
            if why:
                problems.append(Problem(where, why))
                continue
            if key == "bin":
                problems.extend(_check_bin(where, host))
            elif key == "units":
                problems.extend(_check_units(where, asset, host, image))
            else:
                problems.extend(_check_suffixed(where, key, asset, host))
    return problems


def _check_bin(where: str, host: str) -> list[Problem]:
    st = os.stat(host)
    if stat.S_ISDIR(st.st_mode):
        return []
    if not stat.S_ISREG(st.st_mode):
        return [Problem(where, "not a regular file or a folder")]
    if not st.st_mode & 0o111:
        return [Problem(where, f"not executable (mode {stat.S_IMODE(st.st_mode):04o})")]
    return []


def _check_units(where: str, asset: str, host: str, image: _Image) -> list[Problem]:
    base = posixpath.basename(posixpath.normpath(asset))
    if not os.path.isdir(host):
        if not os.path.isfile(host):
            return [Problem(where, "not a regular file or a folder")]
        if not is_valid_unit_name(base):
            return [Problem(where, f"{base!r} is not a valid systemd unit file name "
                                   f"(NAME[@INSTANCE].TYPE, TYPE one of {', '.join(UNIT_TYPES)})")]
        return []
    stem, dot, kind = base.rpartition(".")
    if dot and f".{kind}" in UNIT_LINK_FOLDERS and is_valid_unit_name(stem):
        return _check_link_folder(where, host)
    if dot and kind == "d" and is_valid_unit_name(stem):
        return [Problem(f"{where}/{name}", "drop-in folders hold only .conf files")
                for name in sorted(os.listdir(host)) if not name.endswith(".conf")]
    return [Problem(where, f"folder {base!r} is not UNIT.wants, UNIT.requires or UNIT.d")]


def _check_link_folder(where: str, host: str) -> list[Problem]:
    problems = []
    for name in sorted(os.listdir(host)):
        path = os.path.join(host, name)
        entry = f"{where}/{name}"
        if not os.path.islink(path):
            problems.append(Problem(entry, "must be a symlink to a unit (as systemctl enable "
                                           "makes them)"))
            continue
        target = os.readlink(path)
        if target.startswith("/"):
            problems.append(Problem(entry, f"symlink target {target!r} must be relative "
                                           "(it is copied as written into /run/systemd/system)"))
        elif not is_valid_unit_name(posixpath.basename(target)):
            problems.append(Problem(entry, f"symlink target {target!r} is not a unit file"))
        if not is_valid_unit_name(name):
            problems.append(Problem(entry, f"{name!r} is not a valid systemd unit file name"))
    return problems


def _check_suffixed(where: str, key: str, asset: str, host: str) -> list[Problem]:
    suffixes = SUFFIXES[key]
    if os.path.isdir(host):
        # Propagation recreates a folder one level down (/run/tmpfiles.d/NAME/), where
        # the consuming tool does not look: only unit link folders make sense there.
        return [Problem(where, f"is a folder; it would land in {PROPAGATED[key]}/"
                               f"{posixpath.basename(posixpath.normpath(asset))}/, which is "
                               "not read: list its files instead")]
    if not os.path.isfile(host):
        return [Problem(where, "not a regular file")]
    if not asset.endswith(suffixes):
        return [Problem(where, f"{key} files must end in {' or '.join(suffixes)}")]
    return []


def check_image(rootfs: str):
    """``(ImageManifest or None, problems)`` for the image root folder ``rootfs``."""
    manifest, problems = load_manifest(rootfs)
    if manifest is not None:
        problems.extend(check_manifest_paths(rootfs, manifest))
    return manifest, problems
