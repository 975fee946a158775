# SPDX-License-Identifier: Apache-2.0
"""Remotes (SPEC.md sections 3 and 7): the configured remotes and their keys.

A remote is a folder ``NAME/`` holding ``remote.json`` (remote-manifest-v0) and
the armored keyrings it names. It is looked up in ``CONFDIR/remotes``, then
``OEM/remotes``, then ``USR/share/torcx/remotes``: the first folder found wins
whole (its keys come with it, never mixed with another folder's).

``base_url`` may use ``${COREOS_BOARD}``, ``${ID}``, ``${VERSION_ID}`` (from
``USR/lib/os-release``; ``-n OSVER`` replaces VERSION_ID, so a store filled ahead
of an OS update asks for that release's images) and ``${COREOS_USR}`` (the USR
mount point). ``file://``
URLs name paths on the target system, so under ``--root`` they are read below
the root like every other path.

Trust: nothing from a remote is used before ``torcx_remote_contents.json.asc``
has been verified by gpgv against the remote's own keys (torcx.openpgp); each
archive is then pinned by the sha512 in those contents and checked while it
streams (torcx.remote.fetch). The file name in the store comes from the profile's
name and reference and the contents' format, never from ``location``.
"""

from __future__ import annotations

import os
import re
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

from .. import openpgp, profiles, schemas
from ..errors import ConfigError, NotFound, RemoteError, SchemaError, TorcxError
from ..paths import parse_os_release
from ..schemas import OCI_URL_SCHEMES

CONTENTS_FILE = "torcx_remote_contents.json"
SIGNED_CONTENTS_FILE = CONTENTS_FILE + ".asc"
MANIFEST_FILE = "remote.json"
TEMPLATE_VARS = ("COREOS_BOARD", "COREOS_USR", "ID", "VERSION_ID")
REMOTE_LIST_V0 = "torcx-remote-list-v0"

_VAR_RE = re.compile(r"\$\{([^}]*)\}")
URL_SCHEME_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")

__all__ = ["Remote", "find_remote", "list_remotes", "remote_list_doc"]


@dataclass(frozen=True)
class Remote:
    """A configured remote; paths are logical (as the target system sees them)."""

    name: str
    folder: str
    base_url_template: str
    base_url: str  # the template expanded
    fetch_base: str  # base_url, with a file URL mapped below --root
    keyring_paths: tuple[str, ...]
    mirrors: tuple[str, ...] = ()  # OCI only: expanded, tried in order before base_url
    os_version: str | None = None  # OCI only: the tag of the signed contents

    @property
    def is_oci(self) -> bool:
        return self.base_url.startswith(OCI_URL_SCHEMES)

    @property
    def contents_url(self) -> str:
        if self.is_oci:
            from .ociref import contents_ref, parse_repo
            if not self.os_version:
                raise RemoteError(f"remote {self.name}: no OS version (VERSION_ID) to name "
                                  "its contents tag; pass -n OSVER")
            return contents_ref(parse_repo(self.base_url), self.os_version)
        return self.fetch_base.rstrip("/") + "/" + SIGNED_CONTENTS_FILE


# ---------------------------------------------------------------- configuration

def _template_values(paths) -> dict:
    """Values for base_url templates: os-release fields plus the USR mount point."""
    release = paths.os_release
    try:
        with open(paths.host(release), encoding="utf-8", errors="surrogateescape") as f:
            fields = parse_os_release(f.read())
    except FileNotFoundError:
        fields = {}
    except OSError as e:
        raise ConfigError(f"{release}: cannot read: {e.strerror}") from None
    values = {k: fields[k] for k in ("COREOS_BOARD", "ID", "VERSION_ID") if fields.get(k)}
    if paths.os_version:
        # -n OSVER: a store filled for another OS release asks for that release's images.
        values["VERSION_ID"] = paths.os_version
    values["COREOS_USR"] = paths.usr
    return values


def release_missing(paths) -> str | None:
    """"there is no /usr/lib/os-release (looked for HOST)" when the file is absent."""
    host = paths.host(paths.os_release)
    if os.path.lexists(host):
        return None
    return f"there is no {paths.os_release} (looked for {host})"


def expand_base_url(template: str, values: dict, where: str, release: str,
                    missing: str | None = None) -> str:
    """Replace ``${VAR}`` in ``template``; an unknown or unset variable is a ConfigError.

    ``missing``: why ``release`` cannot set anything (see :func:`release_missing`).
    """
    def replace(m: re.Match) -> str:
        var = m.group(1)
        if var not in TEMPLATE_VARS:
            raise ConfigError(f"{where}: $.value.base_url: unknown variable ${{{var}}} "
                              f"(known: {', '.join(TEMPLATE_VARS)})")
        if var not in values:
            why = missing or f"{release} does not set it"
            raise ConfigError(f"{where}: $.value.base_url uses ${{{var}}} but {why}")
        return values[var]
    return _VAR_RE.sub(replace, template)


def _remote_folders(paths) -> list[str]:
    """Remote folders, highest precedence first: user, OEM, vendor."""
    return list(reversed(paths.remote_dirs))


def _load(paths, name: str, folder: str, values: dict) -> Remote:
    manifest_path = f"{folder}/{MANIFEST_FILE}"
    manifest = schemas.read_remote_manifest(paths.host(manifest_path))
    base_url = expand_base_url(manifest.base_url, values, manifest_path, paths.os_release,
                               release_missing(paths))
    try:
        scheme = urllib.parse.urlsplit(base_url).scheme
    except ValueError as e:
        raise ConfigError(f"{manifest_path}: $.value.base_url: not a valid URL: {e}") from None
    fetch_base = base_url
    if scheme == "file":
        fetch_base = _host_file_url(paths, base_url, manifest_path)
    keyrings = tuple(f"{folder}/{ring}" for ring in manifest.keyrings)
    mirrors: tuple = ()
    if base_url.startswith(OCI_URL_SCHEMES):
        from .ociref import parse_repo
        mirrors = tuple(expand_base_url(m, values, manifest_path, paths.os_release)
                        for m in manifest.mirrors)
        for where, url in [("base_url", base_url)] + [
                (f"mirrors[{i}]", m) for i, m in enumerate(mirrors)]:
            try:
                parse_repo(url)
            except RemoteError as e:
                raise ConfigError(f"{manifest_path}: $.value.{where}: {e}") from None
    return Remote(name, folder, manifest.base_url, base_url, fetch_base, keyrings,
                  mirrors, values.get("VERSION_ID"))


def _host_file_url(paths, url: str, where: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(f"{where}: $.value.base_url: file URL must name a local path: {url}")
    path = urllib.request.url2pathname(parts.path)
    if not path.startswith("/"):
        raise ConfigError(f"{where}: $.value.base_url: file URL must be absolute: {url}")
    if ".." in path.split("/"):  # under --root it would be read outside the root
        raise ConfigError(f"{where}: $.value.base_url: file URL must not contain '..': {url}")
    return "file://" + urllib.request.pathname2url(paths.host(path))


def find_remote(paths, name: str) -> Remote:
    """The configured remote ``name``; NotFound lists the folders searched."""
    profiles.check_name(name, "remote")
    for parent in _remote_folders(paths):
        folder = f"{parent}/{name}"
        if os.path.isfile(paths.host(f"{folder}/{MANIFEST_FILE}")):
            return _load(paths, name, folder, _template_values(paths))
    raise NotFound(f"remote {name!r} not found in "
                   f"{', '.join(_remote_folders(paths))} (no {name}/{MANIFEST_FILE})")


def list_remotes(paths) -> tuple[list[Remote], list[str]]:
    """Every configured remote (first folder wins per name) and one problem per broken one."""
    found: dict[str, str] = {}
    problems: list[str] = []
    for parent in _remote_folders(paths):
        try:
            names = sorted(os.listdir(paths.host(parent)))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as e:
            problems.append(f"{parent}: cannot list remotes ({e.strerror}), ignoring")
            continue
        for name in names:
            if name in found or not profiles.is_valid_name(name):
                continue
            if os.path.isfile(paths.host(f"{parent}/{name}/{MANIFEST_FILE}")):
                found[name] = f"{parent}/{name}"
    remotes = []
    values = None
    for name in sorted(found):
        try:
            if values is None:
                values = _template_values(paths)
            remotes.append(_load(paths, name, found[name], values))
        except (ConfigError, SchemaError, OSError) as e:
            problems.append(f"remote {name}: {describe_error(e)}")
    return remotes, problems


def describe_error(e: BaseException) -> str:
    if isinstance(e, OSError) and not isinstance(e, TorcxError):
        where = f"{e.filename}: " if e.filename else ""
        return f"{where}{e.strerror or e}"
    return str(e)


def load_keyrings(paths, remote: Remote) -> list[openpgp.Keyring]:
    return [openpgp.load_keyring(paths.host(p)) for p in remote.keyring_paths]


# ---------------------------------------------------------------- listing

def remote_list_doc(paths, remotes: Sequence[Remote]) -> dict:
    entries = []
    for r in remotes:
        keys = []
        for p in r.keyring_paths:
            try:
                fprs = list(openpgp.load_keyring(paths.host(p)).fingerprints)
                keys.append({"path": p, "fingerprints": fprs})
            except RemoteError as e:
                keys.append({"path": p, "fingerprints": [], "error": str(e)})
        entry = {"name": r.name, "path": r.folder, "base_url": r.base_url_template,
                 "url": r.base_url, "keys": keys}
        if r.is_oci:
            entry["mirrors"] = list(r.mirrors)
            try:
                entry["contents"] = r.contents_url
            except RemoteError as e:
                entry["contents_error"] = str(e)
        entries.append(entry)
    return {"kind": REMOTE_LIST_V0, "value": entries}
