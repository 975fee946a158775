# SPDX-License-Identifier: Apache-2.0
"""Every JSON kind of SPEC.md section 3: parse, validate, dump, write atomically.

Each ``parse_*`` takes a decoded document and the file name to blame; each
``read_*`` reads and decodes a file first. Faults raise
``SchemaError(filename, jsonpath, problem)``, e.g.
``profile.json: $.value.images[2].reference: expected string``.
Unknown fields are ignored (forward compatibility); unknown kinds, wrong types,
missing required fields and invalid JSON are errors.

Written documents are deterministic (sorted keys, two-space indent, trailing
newline) and atomic (temporary file in the same folder, then rename; an existing
file's permissions are kept).
"""

from __future__ import annotations

import os

from . import jsontext
from .errors import SchemaError

CONFIG_V0 = "torcx-config-v0"
PROFILE_V0 = "profile-manifest-v0"
PROFILE_V1 = "profile-manifest-v1"
IMAGE_MANIFEST_V0 = "image-manifest-v0"
REMOTE_MANIFEST_V0 = "remote-manifest-v0"
REMOTE_CONTENTS_V1 = "torcx-remote-contents-v1"
PROFILE_LIST_V0 = "torcx-profile-list-v0"
IMAGE_LIST_V0 = "torcx-image-list-v0"

PROFILE_KINDS = (PROFILE_V0, PROFILE_V1)
ASSET_KEYS = ("bin", "network", "sysusers", "tmpfiles", "udev_rules", "units")
# Archive formats a remote may serve: upstream's two plus the ones this project reads.
REMOTE_FORMATS = ("tgz", "squashfs", "tar.zst", "tar.xz", "tar", "erofs", "sysext")
# oci:// names a registry repository (https); oci+http:// the same over plain http.
REMOTE_URL_SCHEMES = ("http://", "https://", "file://", "oci://", "oci+http://")
OCI_URL_SCHEMES = ("oci://", "oci+http://")
SEAL_KEYS = ("TORCX_LOWER_PROFILES", "TORCX_UPPER_PROFILE", "TORCX_PROFILE_PATH",
             "TORCX_BINDIR", "TORCX_UNPACKDIR")

__all__ = [
    "ASSET_KEYS",
    "Config",
    "ImageManifest",
    "ImageRef",
    "Profile",
    "RemoteContents",
    "RemoteImage",
    "RemoteManifest",
    "RemoteVersion",
    "dump",
    "dumps",
    "format_seal",
    "image_list_doc",
    "load_json",
    "parse_config",
    "parse_config_text",
    "parse_image_list",
    "parse_image_manifest",
    "parse_profile",
    "parse_profile_list",
    "parse_remote_contents",
    "parse_remote_manifest",
    "parse_seal",
    "profile_doc",
    "profile_list_doc",
    "read_config",
    "read_image_manifest",
    "read_profile",
    "read_remote_manifest",
    "write_atomic",
    "write_json",
]

# Character classes checked by hand: the boot path does not import re (its import and
# pattern compiles cost milliseconds of every boot).
HEX_LOWER = frozenset("0123456789abcdef")
_HEX = HEX_LOWER | frozenset("ABCDEF")
_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_NAME_CHARS = _NAME_START | frozenset("0123456789")


def is_hex(text: str, length: int, digits: frozenset = _HEX) -> bool:
    """``text`` is exactly ``length`` hex digits (of ``digits``: HEX_LOWER for lower case)."""
    return len(text) == length and all(ch in digits for ch in text)


def _is_shell_name(key: str) -> bool:
    return bool(key) and key[0] in _NAME_START and all(ch in _NAME_CHARS for ch in key)


# -- typed values ------------------------------------------------------------

class _Value:
    __slots__ = ()

    def __eq__(self, other):
        return type(self) is type(other) and all(
            getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __hash__(self):
        return hash(tuple(_hashable(getattr(self, k)) for k in self.__slots__))

    def __repr__(self):
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__)
        return f"{type(self).__name__}({fields})"


def _hashable(v):
    return tuple(v) if isinstance(v, list) else v


class ImageRef(_Value):
    """One profile entry: image ``name``, ``reference`` ("" = switch off), ``remote``."""

    __slots__ = ("name", "reference", "remote")

    def __init__(self, name: str, reference: str, remote: str | None = None):
        self.name = name
        self.reference = reference
        self.remote = remote

    def to_json(self) -> dict:
        d = {"name": self.name, "reference": self.reference}
        if self.remote is not None:
            d["remote"] = self.remote
        return d

    def __str__(self) -> str:
        return f"{self.name}:{self.reference}"


class Profile(_Value):
    """A profile manifest: its ``kind`` and its ``images`` (list of ImageRef)."""

    __slots__ = ("kind", "images")

    def __init__(self, images: list, kind: str = PROFILE_V0):
        self.kind = kind
        self.images = list(images)


class Config(_Value):
    """``torcx-config-v0``: optional folders (None when absent) and extra stores."""

    __slots__ = ("base_dir", "run_dir", "conf_dir", "store_paths")

    def __init__(self, base_dir=None, run_dir=None, conf_dir=None, store_paths=()):
        self.base_dir = base_dir
        self.run_dir = run_dir
        self.conf_dir = conf_dir
        self.store_paths = list(store_paths)


class ImageManifest(_Value):
    """``image-manifest-v0``: absolute paths inside the image, per asset kind."""

    __slots__ = ASSET_KEYS

    def __init__(self, **assets):
        for key in ASSET_KEYS:
            setattr(self, key, list(assets.pop(key, ())))
        if assets:
            raise TypeError(f"unknown asset kinds: {sorted(assets)}")

    def items(self):
        """(asset kind, paths) pairs in a fixed order."""
        return [(k, getattr(self, k)) for k in ASSET_KEYS]


class RemoteManifest(_Value):
    """``remote-manifest-v0``: URL template, keyring paths (relative to its folder) and,
    for an OCI registry, mirrors tried before it."""

    __slots__ = ("base_url", "keyrings", "mirrors")

    def __init__(self, base_url: str, keyrings: list, mirrors: list = ()):
        self.base_url = base_url
        self.keyrings = list(keyrings)
        self.mirrors = list(mirrors)


class RemoteVersion(_Value):
    """One version of a remote image; ``sha256`` (optional, ours) is signed beside the
    upstream ``hash`` so a node may check the faster digest (SHA-NI)."""

    __slots__ = ("version", "format", "hash", "location", "sha256")

    def __init__(self, version: str, format: str, hash: str, location: str,
                 sha256: str | None = None):
        self.version = version
        self.format = format
        self.hash = hash
        self.location = location
        self.sha256 = sha256

    @property
    def sha512(self) -> str:
        """The lowercase hex digest without the ``sha512-`` prefix."""
        return self.hash[len("sha512-"):]


class RemoteImage(_Value):
    __slots__ = ("name", "default_version", "versions")

    def __init__(self, name: str, default_version: str | None, versions: list):
        self.name = name
        self.default_version = default_version
        self.versions = list(versions)


class RemoteContents(_Value):
    """``torcx-remote-contents-v1``: images and their downloadable versions."""

    __slots__ = ("images",)

    def __init__(self, images: list):
        self.images = list(images)

    def find(self, name: str, version: str) -> RemoteVersion | None:
        for image in self.images:
            if image.name == name:
                for v in image.versions:
                    if v.version == version:
                        return v
        return None


# -- validation helpers --------------------------------------------------------

_TYPES = {
    "string": str,
    "array": list,
    "object": dict,
    "boolean": bool,
}


class _Checker:
    """Type checks that raise SchemaError naming the file and the JSON path."""

    __slots__ = ("filename",)

    def __init__(self, filename: str):
        self.filename = str(filename)

    def fail(self, path: str, problem: str):
        raise SchemaError(self.filename, path, problem)

    def typed(self, value, path: str, typename: str):
        if not isinstance(value, _TYPES[typename]):
            self.fail(path, f"expected {typename}, got {_json_type(value)}")
        if typename == "string":
            # JSON lets "\ud800" through; such a string cannot name a file or be
            # written back, and would fail far from here (at unpack, at seal).
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                self.fail(path, f"not valid Unicode text (lone surrogate "
                                f"U+{ord(value[e.start]):04X})")
        return value

    def field(self, obj: dict, key: str, path: str, typename: str, required: bool = True):
        sub = f"{path}.{key}"
        if key not in obj:
            if required:
                self.fail(sub, "missing required field")
            return None
        value = obj[key]
        if value is None and not required:
            return None
        return self.typed(value, sub, typename)

    def strings(self, obj: dict, key: str, path: str, required: bool = False) -> list:
        arr = self.field(obj, key, path, "array", required)
        if arr is None:
            return []
        for i, item in enumerate(arr):
            self.typed(item, f"{path}.{key}[{i}]", "string")
        return arr

    def envelope(self, doc, kinds: tuple) -> tuple[str, dict]:
        self.typed(doc, "$", "object")
        kind = self.field(doc, "kind", "$", "string")
        if kind not in kinds:
            want = " or ".join(kinds)
            self.fail("$.kind", f"unknown kind {kind!r}, expected {want}")
        value = self.field(doc, "value", "$", "object")
        return kind, value


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _has_control(text: str) -> bool:
    return any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text)


def _check_image_name(c: _Checker, name: str, path: str) -> None:
    # The name becomes a folder (unpack/NAME), part of a file name (NAME:REF)
    # and of the seal file's one-line values: no control characters.
    if not name:
        c.fail(path, "must not be empty")
    if name in (".", "..") or "/" in name or ":" in name or _has_control(name):
        c.fail(path, f"invalid image name {name!r} "
                     "(no '/', ':', control characters, '.' or '..')")


def _check_reference(c: _Checker, ref: str, path: str) -> None:
    if ref in (".", "..") or "/" in ref or _has_control(ref):
        c.fail(path, f"invalid reference {ref!r} (no '/', control characters, '.' or '..')")


def _check_image_path(c: _Checker, value: str, path: str) -> None:
    if not value.startswith("/"):
        c.fail(path, f"expected an absolute path inside the image, got {value!r}")
    if ".." in value.split("/") or "\0" in value:
        c.fail(path, f"path must not contain '..': {value!r}")


# -- JSON input ----------------------------------------------------------------

def load_json(text, filename: str):
    """Decode JSON text or bytes; invalid JSON is a SchemaError at ``$``."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return jsontext.loads(text)
    except UnicodeDecodeError as e:
        raise SchemaError(str(filename), "$",
                          f"not UTF-8 text: {e.reason} at byte {e.start}") from None
    except ValueError as e:  # json.JSONDecodeError
        raise SchemaError(str(filename), "$",
                          f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise SchemaError(str(filename), "$", "invalid JSON: nested too deeply") from None


def _read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


# -- kinds -----------------------------------------------------------------------

def parse_config(doc, filename: str) -> Config:
    """``torcx-config-v0``. Whether paths are absolute is checked by torcx.paths."""
    c = _Checker(filename)
    _, value = c.envelope(doc, (CONFIG_V0,))
    dirs = {k: c.field(value, k, "$.value", "string", required=False)
            for k in ("base_dir", "run_dir", "conf_dir")}
    # Upstream treats an empty string as "not set".
    dirs = {k: (v or None) for k, v in dirs.items()}
    stores = c.strings(value, "store_paths", "$.value")
    return Config(store_paths=stores, **dirs)


def parse_config_text(text, filename: str) -> Config:
    return parse_config(load_json(text, filename), filename)


def read_config(path) -> Config:
    return parse_config_text(_read(path), str(path))


def parse_profile(doc, filename: str) -> Profile:
    """``profile-manifest-v0`` or ``-v1`` (v1 adds an optional ``remote`` per image)."""
    c = _Checker(filename)
    kind, value = c.envelope(doc, PROFILE_KINDS)
    images = c.field(value, "images", "$.value", "array")
    out = []
    for i, item in enumerate(images):
        path = f"$.value.images[{i}]"
        c.typed(item, path, "object")
        name = c.field(item, "name", path, "string")
        _check_image_name(c, name, path + ".name")
        ref = c.field(item, "reference", path, "string")
        _check_reference(c, ref, path + ".reference")
        remote = None
        if kind == PROFILE_V1:
            remote = c.field(item, "remote", path, "string", required=False) or None
        out.append(ImageRef(name, ref, remote))
    return Profile(out, kind)


def read_profile(path) -> Profile:
    return parse_profile(load_json(_read(path), str(path)), str(path))


def parse_image_manifest(doc, filename: str) -> ImageManifest:
    """``image-manifest-v0`` (``.torcx/manifest.json`` inside an image)."""
    c = _Checker(filename)
    _, value = c.envelope(doc, (IMAGE_MANIFEST_V0,))
    assets = {}
    for key in ASSET_KEYS:
        paths = c.strings(value, key, "$.value")
        for i, p in enumerate(paths):
            _check_image_path(c, p, f"$.value.{key}[{i}]")
        assets[key] = paths
    return ImageManifest(**assets)


def read_image_manifest(path) -> ImageManifest:
    return parse_image_manifest(load_json(_read(path), str(path)), str(path))


def parse_remote_manifest(doc, filename: str) -> RemoteManifest:
    """``remote-manifest-v0``: ``value.base_url`` and ``value.keys[].armored_keyring``."""
    c = _Checker(filename)
    _, value = c.envelope(doc, (REMOTE_MANIFEST_V0,))
    base_url = c.field(value, "base_url", "$.value", "string")
    if not base_url.startswith(REMOTE_URL_SCHEMES):
        c.fail("$.value.base_url",
               f"unsupported URL {base_url!r} (expected http://, https://, file://, "
               "oci:// or oci+http://)")
    keys = c.field(value, "keys", "$.value", "array")
    keyrings = []
    for i, key in enumerate(keys):
        path = f"$.value.keys[{i}]"
        c.typed(key, path, "object")
        ring = c.field(key, "armored_keyring", path, "string")
        if not ring or ring.startswith("/") or ".." in ring.split("/"):
            c.fail(path + ".armored_keyring",
                   f"expected a path relative to the remote's folder, got {ring!r}")
        keyrings.append(ring)
    mirrors = c.strings(value, "mirrors", "$.value")
    for i, mirror in enumerate(mirrors):
        if not base_url.startswith(OCI_URL_SCHEMES):
            c.fail("$.value.mirrors", "mirrors are only for oci:// remotes")
        if not mirror.startswith(OCI_URL_SCHEMES):
            c.fail(f"$.value.mirrors[{i}]",
                   f"unsupported URL {mirror!r} (expected oci:// or oci+http://)")
    return RemoteManifest(base_url, keyrings, mirrors)


def read_remote_manifest(path) -> RemoteManifest:
    return parse_remote_manifest(load_json(_read(path), str(path)), str(path))


def parse_remote_contents(doc, filename: str) -> RemoteContents:
    """``torcx-remote-contents-v1`` (the JSON inside the clear-signed message)."""
    c = _Checker(filename)
    _, value = c.envelope(doc, (REMOTE_CONTENTS_V1,))
    images = c.field(value, "images", "$.value", "array")
    out = []
    for i, item in enumerate(images):
        path = f"$.value.images[{i}]"
        c.typed(item, path, "object")
        name = c.field(item, "name", path, "string")
        _check_image_name(c, name, path + ".name")
        default = c.field(item, "defaultVersion", path, "string", required=False)
        versions = c.field(item, "versions", path, "array")
        vs = []
        for j, v in enumerate(versions):
            vpath = f"{path}.versions[{j}]"
            c.typed(v, vpath, "object")
            version = c.field(v, "version", vpath, "string")
            _check_reference(c, version, vpath + ".version")
            if not version:
                c.fail(vpath + ".version", "must not be empty")
            fmt = c.field(v, "format", vpath, "string")
            if fmt not in REMOTE_FORMATS:
                c.fail(vpath + ".format",
                       f"unknown format {fmt!r}, expected one of {', '.join(REMOTE_FORMATS)}")
            digest = c.field(v, "hash", vpath, "string")
            if not (digest.startswith("sha512-") and is_hex(digest[7:], 128)):
                c.fail(vpath + ".hash", "expected 'sha512-' and 128 hex digits")
            location = c.field(v, "location", vpath, "string")
            if not location:
                c.fail(vpath + ".location", "must not be empty")
            sha256 = c.field(v, "sha256", vpath, "string", required=False)
            if sha256 is not None and not is_hex(sha256, 64):
                c.fail(vpath + ".sha256", "expected 64 hex digits")
            vs.append(RemoteVersion(version, fmt, digest.lower(), location,
                                    sha256.lower() if sha256 else None))
        out.append(RemoteImage(name, default, vs))
    return RemoteContents(out)


def parse_profile_list(doc, filename: str) -> dict:
    """``torcx-profile-list-v0`` (our own output; parsed back by tests and tools)."""
    c = _Checker(filename)
    _, value = c.envelope(doc, (PROFILE_LIST_V0,))
    lower = c.strings(value, "lower_profile_names", "$.value", required=True)
    out = {"lower_profile_names": lower}
    for key in ("user_profile_name", "current_profile_path", "next_profile_name"):
        if key not in value:
            c.fail(f"$.value.{key}", "missing required field")
        out[key] = c.field(value, key, "$.value", "string", required=False)
    out["profiles"] = c.strings(value, "profiles", "$.value", required=True)
    return out


def parse_image_list(doc, filename: str) -> list:
    """``torcx-image-list-v0``: a list of ``{name, reference, filepath}``."""
    c = _Checker(filename)
    c.typed(doc, "$", "object")
    kind = c.field(doc, "kind", "$", "string")
    if kind != IMAGE_LIST_V0:
        c.fail("$.kind", f"unknown kind {kind!r}, expected {IMAGE_LIST_V0}")
    items = c.field(doc, "value", "$", "array")
    out = []
    for i, item in enumerate(items):
        path = f"$.value[{i}]"
        c.typed(item, path, "object")
        out.append({k: c.field(item, k, path, "string")
                    for k in ("name", "reference", "filepath")})
    return out


# -- documents out ---------------------------------------------------------------

def profile_doc(images, kind: str | None = None) -> dict:
    """The JSON document of a profile; v1 when any image names a remote."""
    images = list(images)
    if kind is None:
        kind = PROFILE_V1 if any(im.remote for im in images) else PROFILE_V0
    if kind == PROFILE_V0:
        entries = [{"name": im.name, "reference": im.reference} for im in images]
    else:
        entries = [im.to_json() for im in images]
    return {"kind": kind, "value": {"images": entries}}


def profile_list_doc(*, lower_profile_names, user_profile_name, current_profile_path,
                     next_profile_name, profiles) -> dict:
    return {
        "kind": PROFILE_LIST_V0,
        "value": {
            "lower_profile_names": list(lower_profile_names),
            "user_profile_name": user_profile_name,
            "current_profile_path": current_profile_path,
            "next_profile_name": next_profile_name,
            "profiles": list(profiles),
        },
    }


def image_list_doc(entries) -> dict:
    """``entries``: iterable of objects with ``name``, ``reference``, ``path``."""
    return {
        "kind": IMAGE_LIST_V0,
        "value": [{"name": e.name, "reference": e.reference, "filepath": e.path}
                  for e in entries],
    }


def dumps(doc) -> str:
    """Deterministic JSON text: sorted keys, two-space indent, trailing newline."""
    return jsontext.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def fsync_dir(folder: str) -> None:
    """fsync ``folder`` so that a rename into it survives a crash.

    Called after the rename has succeeded: a file system that refuses fsync on
    folders must not turn a completed, verified write into a reported failure,
    so such refusals are ignored (the file's own data was synced before).
    """
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path, data, mode: int | None = None, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` (str or bytes) atomically.

    The temporary file lives in the same folder so the rename cannot cross a
    file system. An existing file's permission bits are kept; a new file gets
    ``mode`` (default 0644). ``durable=False`` skips the fsyncs, for files on a
    tmpfs that does not outlive the boot.
    """
    path = os.fspath(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    if mode is None:
        try:
            mode = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o644
    folder = os.path.dirname(path) or "."
    base = os.path.basename(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
    for _ in range(16):
        # A random part so a stale temporary file from a crashed run is never in the way.
        tmp = os.path.join(folder, f".{base}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        try:
            fd = os.open(tmp, flags, 0o600)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"{folder}: cannot create a temporary file for {base}")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)  # exact mode, whatever the umask
            if durable:
                os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if durable:
        fsync_dir(folder)  # a set-next right before a reboot must survive it


def write_json(path, doc, mode: int | None = None) -> None:
    """Write ``doc`` with :func:`dumps` through :func:`write_atomic`."""
    write_atomic(path, dumps(doc), mode)


def dump(doc, path, mode: int | None = None) -> None:
    """Alias of :func:`write_json` (doc first, like json.dump)."""
    write_json(path, doc, mode)


# -- seal file (KEY="value" lines, sourced by shells) ------------------------------

def parse_seal(text: str) -> dict:
    """Read a seal file's ``KEY="value"`` lines; other lines are ignored."""
    out = {}
    for line in text.splitlines():
        key, sep, rest = line.strip().partition('="')
        if sep and rest.endswith('"') and _is_shell_name(key):
            out[key] = _unescape(rest[:-1])
    return out


def _unescape(text: str) -> str:
    """Undo format_seal's escapes: a backslash keeps the character after it."""
    if "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            i += 1
        out.append(text[i])
        i += 1
    return "".join(out)


def format_seal(values: dict) -> str:
    """``KEY="value"`` lines in the given order; the five SEAL_KEYS must be present."""
    missing = [k for k in SEAL_KEYS if k not in values]
    if missing:
        raise ValueError(f"seal values lack {', '.join(missing)}")
    lines = []
    for key, value in values.items():
        if not _is_shell_name(key):
            raise ValueError(f"invalid seal key {key!r}")
        text = str(value)
        if "\n" in text:
            raise ValueError(f"seal value for {key} contains a newline")
        # Inside double quotes a shell still expands $, ` and \: escape them.
        for ch in ("\\", '"', "$", "`"):
            text = text.replace(ch, "\\" + ch)
        lines.append(f'{key}="{text}"\n')
    return "".join(lines)
