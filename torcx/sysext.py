# SPDX-License-Identifier: Apache-2.0
"""systemd-sysext images: format detection, host facts and systemd's extension-release rules.

A sysext image is a squashfs or erofs file system with ``usr/`` (and maybe
``opt/``) and ``usr/lib/extension-release.d/extension-release.NAME``. Before
systemd-sysext merges it, torcx checks it with the rules of systemd 257's
``extension_release_validate()`` (src/shared/extension-util.c) and
``extension_has_forbidden_content()``, in the same order, so that an image torcx
passes is one systemd accepts, and a refusal names the rule and the values that
systemd would only print at debug level:

1. SYSEXT_SCOPE (whitespace list, default "system portable") contains "system";
2. ARCHITECTURE, when set and not ``_any``, is the host's, in systemd's names;
3. ID is set; ``_any`` accepts every host (no version check);
4. ID equals the host's ID or one of its ID_LIKE words;
5. a host without VERSION_ID and SYSEXT_LEVEL accepts it (rolling release);
6. when both host and image set SYSEXT_LEVEL they must be equal; otherwise,
   when the host sets VERSION_ID, the image's VERSION_ID must equal it.

Plus the checks around them: the release file is named after the image
(``extension-release.NAME``; systemd's relaxed match through the
``user.extension-release.strict`` xattr is not used), and the image carries no
``usr/lib/os-release``. The host's os-release is ``/etc/os-release``, else
``/usr/lib/os-release``, under the root (systemd's order).
"""

from __future__ import annotations

import os

from .paths import parse_os_release

__all__ = [
    "Host",
    "Refusal",
    "check_tree",
    "detect_format",
    "host_architecture",
    "read_host",
    "release_path",
    "validate",
]

SCOPE = "system"  # what systemd-sysext merge asks for (portable services ask "portable")
RELEASE_DIR = "usr/lib/extension-release.d"
_RELEASE_LIMIT = 64 << 10  # bytes; a release file is a few lines

# uname -m -> systemd's architecture names (src/basic/architecture.c).
_ARCHITECTURES = {
    "x86_64": "x86-64", "amd64": "x86-64", "i386": "x86", "i486": "x86", "i586": "x86",
    "i686": "x86", "aarch64": "arm64", "arm64": "arm64", "aarch64_be": "arm64-be",
    "ppc64le": "ppc64-le", "ppc64": "ppc64", "ppc": "ppc", "ppcle": "ppc-le",
    "s390x": "s390x", "s390": "s390", "riscv64": "riscv64", "riscv32": "riscv32",
    "loongarch64": "loongarch64", "mips64": "mips64", "mips": "mips", "sparc64": "sparc64",
    "sparc": "sparc", "parisc64": "parisc64", "parisc": "parisc", "alpha": "alpha",
    "ia64": "ia64", "m68k": "m68k", "sh": "sh", "arc": "arc", "tilegx": "tilegx",
}
# Every name systemd knows, for checking --arch values.
ARCHITECTURES = frozenset(_ARCHITECTURES.values()) | {
    "arm", "arm-be", "mips-le", "mips64-le", "sh64", "arc-be", "cris"}


def host_architecture(machine: str | None = None) -> str:
    """systemd's name of this machine's architecture (``uname -m`` translated)."""
    m = machine or os.uname().machine
    if m.startswith("armv") or m in ("arm", "armel", "armhf"):
        return "arm-be" if m.endswith("b") else "arm"
    return _ARCHITECTURES.get(m, m)


def detect_format(path: str) -> str | None:
    """"squashfs" or "erofs" from the superblock's magic, else None (not a sysext file system)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1028)
    except OSError:
        return None
    if head[:4] == b"hsqs":
        return "squashfs"
    if head[1024:1028] == b"\xe2\xe1\xf5\xe0":  # EROFS_SUPER_MAGIC_V1, little endian
        return "erofs"
    return None


class Host:
    """What an extension is matched against: the host's os-release and architecture.

    (A plain class: dataclasses import inspect, too slow for the boot path.)
    """

    __slots__ = ("id", "version_id", "sysext_level", "id_like", "architecture", "source")

    def __init__(self, id: str, version_id: str = "", sysext_level: str = "",
                 id_like: tuple = (), architecture: str | None = None, source: str = ""):
        self.id, self.version_id, self.sysext_level = id, version_id, sysext_level
        self.id_like = tuple(id_like)
        self.architecture = architecture or host_architecture()
        self.source = source  # the os-release file read


def read_host(paths) -> Host:
    """The host of ``paths.root``: /etc/os-release, else /usr/lib/os-release (as systemd)."""
    for logical in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            with open(paths.host(logical), encoding="utf-8", errors="replace") as f:
                fields = parse_os_release(f.read(_RELEASE_LIMIT))
        except OSError:
            continue
        return Host(id=fields.get("ID", "") or "linux",  # os-release(5): ID defaults to linux
                    version_id=fields.get("VERSION_ID", ""),
                    sysext_level=fields.get("SYSEXT_LEVEL", ""),
                    id_like=tuple(fields.get("ID_LIKE", "").split()),
                    source=logical)
    return Host(id="linux", source="(no os-release: ID=linux)")


class Refusal:
    """Why systemd-sysext would not merge an image: the rule and the values compared."""

    __slots__ = ("rule", "message", "values")

    def __init__(self, rule: str, message: str, values: dict):
        self.rule, self.message, self.values = rule, message, values

    def __str__(self) -> str:
        return f"{self.rule}: {self.message}"

    def to_json(self) -> dict:
        return {"rule": self.rule, "message": self.message, "values": dict(self.values)}


def release_path(name: str) -> str:
    """The release file of image ``name``, relative to the image root."""
    return f"{RELEASE_DIR}/extension-release.{name}"


def validate(name: str, release: dict, host: Host, scope: str = SCOPE) -> Refusal | None:
    """None if systemd would merge extension ``name`` with this release data on ``host``."""
    if not release:
        return Refusal("release", f"{release_path(name)} carries no release data", {})
    scopes = release.get("SYSEXT_SCOPE")
    allowed = scopes.split() if scopes is not None else ["system", "portable"]
    if scope not in allowed:
        return Refusal("SYSEXT_SCOPE", f"SYSEXT_SCOPE={scopes!r} does not include {scope!r}",
                       {"SYSEXT_SCOPE": scopes, "scope": scope})
    arch = release.get("ARCHITECTURE", "")
    if arch and arch != "_any" and arch != host.architecture:
        return Refusal("ARCHITECTURE", f"ARCHITECTURE={arch!r} but the host is "
                       f"{host.architecture!r}",
                       {"ARCHITECTURE": arch, "host": host.architecture})
    ext_id = release.get("ID", "")
    if not ext_id:
        return Refusal("ID", f"no ID (must be the host's {host.id!r} or '_any')",
                       {"ID": "", "host": host.id})
    if ext_id == "_any":
        return None
    if ext_id != host.id and ext_id not in host.id_like:
        like = f" (ID_LIKE {' '.join(host.id_like)!r})" if host.id_like else ""
        return Refusal("ID", f"ID={ext_id!r} but the host is {host.id!r}{like}",
                       {"ID": ext_id, "host": host.id, "host_id_like": list(host.id_like)})
    if not host.version_id and not host.sysext_level:
        return None  # a rolling release: the ID match is enough
    level = release.get("SYSEXT_LEVEL", "")
    if host.sysext_level and level:
        if level != host.sysext_level:
            return Refusal("SYSEXT_LEVEL", f"SYSEXT_LEVEL={level!r} but the host's is "
                           f"{host.sysext_level!r}",
                           {"SYSEXT_LEVEL": level, "host": host.sysext_level})
    elif host.version_id:
        version = release.get("VERSION_ID", "")
        if not version:
            why = ("no SYSEXT_LEVEL or VERSION_ID" if not host.sysext_level
                   else f"no SYSEXT_LEVEL (the host's is {host.sysext_level!r}) or VERSION_ID")
            return Refusal("VERSION_ID", f"{why}; the host's VERSION_ID is "
                           f"{host.version_id!r}",
                           {"VERSION_ID": "", "host": host.version_id})
        if version != host.version_id:
            return Refusal("VERSION_ID", f"VERSION_ID={version!r} but the host's is "
                           f"{host.version_id!r}",
                           {"VERSION_ID": version, "host": host.version_id})
    return None


def check_tree(root: str, name: str, host: Host) -> tuple[dict, Refusal | None]:
    """(release data, refusal or None) of the image tree mounted or unpacked at ``root``."""
    if os.path.lexists(os.path.join(root, "usr/lib/os-release")):
        return {}, Refusal("os-release", "the image carries usr/lib/os-release, which "
                           "systemd-sysext refuses", {"path": "usr/lib/os-release"})
    if not os.path.isdir(os.path.join(root, "usr")) and not os.path.isdir(
            os.path.join(root, "opt")):
        return {}, Refusal("hierarchy", "the image has no usr/ or opt/ to merge", {})
    path = os.path.join(root, release_path(name))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        found = _release_names(root)
        seen = f"; found {', '.join(found)}" if found else ""
        return {}, Refusal("name", f"{release_path(name)}: {e.strerror} (the release file "
                           f"must be named after the image {name!r}{seen})",
                           {"expected": release_path(name), "found": found})
    with os.fdopen(fd, encoding="utf-8", errors="replace") as f:
        release = parse_os_release(f.read(_RELEASE_LIMIT))
    return release, validate(name, release, host)


def _release_names(root: str) -> list[str]:
    try:
        return sorted(f"{RELEASE_DIR}/{n}" for n in os.listdir(os.path.join(root, RELEASE_DIR))
                      if n.startswith("extension-release."))
    except OSError:
        return []
