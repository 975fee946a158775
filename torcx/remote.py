# SPDX-License-Identifier: Apache-2.0
"""Remotes (SPEC.md sections 3 and 7): configuration, signed contents, populate.

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
streams (torcx.fetch). The file name in the store comes from the profile's
name and reference and the contents' format, never from ``location``.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

from . import openpgp, profiles, schemas
from .errors import ConfigError, NotFound, RemoteError, SchemaError, TorcxError
from .fetch import Download, FetchOptions, Progress, download_all, fetch_document
from .log import INFO, NULL
from .paths import parse_os_release
from .store import Store, archive_filename, parse_archive_filename

CONTENTS_FILE = "torcx_remote_contents.json"
SIGNED_CONTENTS_FILE = CONTENTS_FILE + ".asc"
MANIFEST_FILE = "remote.json"
TEMPLATE_VARS = ("COREOS_BOARD", "COREOS_USR", "ID", "VERSION_ID")
REMOTE_LIST_V0 = "torcx-remote-list-v0"

_VAR_RE = re.compile(r"\$\{([^}]*)\}")
_URL_SCHEME_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")

__all__ = [
    "Remote",
    "check_remote",
    "cmd_populate",
    "cmd_remote_contents",
    "cmd_remote_list",
    "fetch_contents",
    "find_remote",
    "list_remotes",
    "location_url",
    "populate",
    "remote_problems",
    "write_contents",
]


@dataclass(frozen=True)
class Remote:
    """A configured remote; paths are logical (as the target system sees them)."""

    name: str
    folder: str
    base_url_template: str
    base_url: str  # the template expanded
    fetch_base: str  # base_url, with a file URL mapped below --root
    keyring_paths: tuple[str, ...]

    @property
    def contents_url(self) -> str:
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


def expand_base_url(template: str, values: dict, where: str, release: str) -> str:
    """Replace ``${VAR}`` in ``template``; an unknown or unset variable is a ConfigError."""
    def replace(m: re.Match) -> str:
        var = m.group(1)
        if var not in TEMPLATE_VARS:
            raise ConfigError(f"{where}: $.value.base_url: unknown variable ${{{var}}} "
                              f"(known: {', '.join(TEMPLATE_VARS)})")
        if var not in values:
            raise ConfigError(f"{where}: $.value.base_url uses ${{{var}}} but {release} "
                              "does not set it")
        return values[var]
    return _VAR_RE.sub(replace, template)


def _remote_folders(paths) -> list[str]:
    """Remote folders, highest precedence first: user, OEM, vendor."""
    return list(reversed(paths.remote_dirs))


def _load(paths, name: str, folder: str, values: dict) -> Remote:
    manifest_path = f"{folder}/{MANIFEST_FILE}"
    manifest = schemas.read_remote_manifest(paths.host(manifest_path))
    base_url = expand_base_url(manifest.base_url, values, manifest_path, paths.os_release)
    try:
        scheme = urllib.parse.urlsplit(base_url).scheme
    except ValueError as e:
        raise ConfigError(f"{manifest_path}: $.value.base_url: not a valid URL: {e}") from None
    fetch_base = base_url
    if scheme == "file":
        fetch_base = _host_file_url(paths, base_url, manifest_path)
    keyrings = tuple(f"{folder}/{ring}" for ring in manifest.keyrings)
    return Remote(name, folder, manifest.base_url, base_url, fetch_base, keyrings)


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
            problems.append(f"remote {name}: {_describe(e)}")
    return remotes, problems


def _keyrings(paths, remote: Remote) -> list[openpgp.Keyring]:
    return [openpgp.load_keyring(paths.host(p)) for p in remote.keyring_paths]


# ---------------------------------------------------------------- contents

def fetch_contents(paths, remote: Remote, opts: FetchOptions,
                   note: Callable[[str], None] = lambda _m: None) -> schemas.RemoteContents:
    """Fetch, verify (gpgv) and parse the remote's contents; RemoteError names the remote."""
    url = remote.contents_url
    try:
        rings = _keyrings(paths, remote)
        signed = fetch_document(url, opts, note)
        text = openpgp.verify_clearsigned(signed, rings, what=url)
        return schemas.parse_remote_contents(schemas.load_json(text, url), url)
    except (RemoteError, SchemaError) as e:
        raise RemoteError(f"remote {remote.name}: {e}") from None


def location_url(remote: Remote, location: str) -> str:
    """The URL of an archive: ``location`` relative to base_url, or an http(s) URL.

    Refused: ``..`` segments, backslashes and control characters (each also
    percent-encoded), absolute paths, host-relative ``//host`` forms, other schemes.
    """
    where = f"remote {remote.name}: location {location!r}"
    if any(ord(c) < 0x20 or c == "\\" for c in location + urllib.parse.unquote(location)):
        raise RemoteError(f"{where}: control character or backslash (also percent-encoded), "
                          "refusing")
    # Not urlsplit: a relative "docker:20.10.torcx.tgz" would read as scheme "docker".
    scheme = _URL_SCHEME_RE.match(location)
    rest = location[scheme.end():] if scheme else location
    path = rest.split("?", 1)[0].split("#", 1)[0]
    if ".." in urllib.parse.unquote(path).split("/"):
        raise RemoteError(f"{where}: '..' would leave the remote, refusing")
    if scheme:
        if scheme.group(1).lower() not in ("http", "https"):
            raise RemoteError(f"{where}: only http and https absolute URLs are allowed")
        try:
            urllib.parse.urlsplit(location)
        except ValueError as e:
            raise RemoteError(f"{where}: not a valid URL: {e}") from None
        return location
    if location.startswith("/"):
        raise RemoteError(f"{where}: must be relative to the remote's base_url")
    return remote.fetch_base.rstrip("/") + "/" + location


# ---------------------------------------------------------------- populate and check

def _wanted(images) -> list:
    return [im for im in images if im.reference]


def _contents_by_remote(paths, names: Sequence[str], opts: FetchOptions,
                        note: Callable[[str], None]) -> dict:
    """``{remote name: (Remote, RemoteContents) or error message}``."""
    result: dict = {}
    for name in names:
        try:
            remote = find_remote(paths, name)
            result[name] = (remote, fetch_contents(paths, remote, opts, note))
        except (TorcxError, OSError) as e:
            result[name] = _describe(e)
    return result


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and not isinstance(e, TorcxError):
        where = f"{e.filename}: " if e.filename else ""
        return f"{where}{e.strerror or e}"
    return str(e)


def _check_file_name_parts(image) -> None:
    """RemoteError unless name and reference can form the store file name NAME:REF.torcx.EXT."""
    for part in (image.name, image.reference):
        # The profile parser checks them too; this guards every other caller.
        if not part or "/" in part or "\0" in part or part in (".", ".."):
            raise RemoteError(f"{part!r} cannot be part of a store file name")


def _resolve(image, entry) -> tuple[Remote, schemas.RemoteVersion, str]:
    """(remote, version, url) of an image, or RemoteError naming what is wrong."""
    _check_file_name_parts(image)
    if isinstance(entry, str):
        raise RemoteError(entry)
    remote, contents = entry
    version = contents.find(image.name, image.reference)
    if version is None:
        raise RemoteError(f"remote {remote.name} does not offer {image.name}:"
                          f"{image.reference}")
    return remote, version, location_url(remote, version.location)


def populate(paths, images, *, log=NULL, opts: FetchOptions | None = None,
             progress: Progress | None = None) -> int:
    """Fetch every image of ``images`` that has a remote and that no store holds.

    Archives land in ``BASEDIR/store/OSVER`` (``paths.os_version``). Returns 0
    when everything wanted is present afterwards, 1 otherwise; each failure is
    logged as an error naming the image and the reason.
    """
    opts = opts or FetchOptions.from_env()
    if not paths.os_version:
        raise ConfigError(f"no OS version: {paths.os_release} has no VERSION_ID; "
                          "pass -n OSVER")
    store = Store(paths, log=log)
    dest = paths.user_store(paths.os_version)
    missing = []
    failures: list[str] = []
    for image in _wanted(images):
        try:
            _check_file_name_parts(image)
        except RemoteError as e:
            failures.append(f"{image}: {e}")
            continue
        found = store.find(image.name, image.reference)
        if found is not None:
            log.info(f"{image}: present in {found.path}")
        elif not image.remote:
            log.notice(f"{image}: in no store and has no remote, skipping")
        else:
            missing.append(image)
    if not missing and not failures:
        log.info("populate: nothing to fetch")
        return 0

    progress = progress or Progress(log.stream, quiet=not log.enabled(INFO), notes=log.warning)
    remotes = sorted({im.remote for im in missing})
    contents = _contents_by_remote(paths, remotes, opts, progress.note)
    downloads: list[Download] = []
    host_dest = paths.host(dest)
    for image in missing:
        try:
            _, version, url = _resolve(image, contents[image.remote])
            filename = archive_filename(image.name, image.reference, version.format)
        except (RemoteError, ValueError) as e:
            failures.append(f"{image}: {e}")
            continue
        downloads.append(Download(str(image), url, host_dest, filename, version.sha512))
    fetched = 0
    if downloads:
        try:
            os.makedirs(host_dest, mode=0o755, exist_ok=True)
        except OSError as e:
            raise RemoteError(f"{dest}: cannot create the store: {e.strerror}") from None
        for outcome in download_all(downloads, opts, progress):
            if outcome.error:
                failures.append(f"{outcome.download.label}: {outcome.error}")
            else:
                fetched += 1
    for line in failures:
        log.error(f"populate: {line}")
    log.info(f"populate: {fetched} fetched into {dest}, {len(failures)} failed")
    return 1 if failures else 0


def remote_problems(paths, images, *, opts: FetchOptions | None = None) -> list[str]:
    """What would stop ``populate`` for ``images`` (empty: nothing).

    For each image with a remote: the remote is configured, its contents verify
    and parse, they offer the image's version, and its location is acceptable.
    Only the contents files are downloaded.
    """
    opts = opts or FetchOptions.from_env()
    wanted = [im for im in _wanted(images) if im.remote]
    contents = _contents_by_remote(paths, sorted({im.remote for im in wanted}), opts,
                                   lambda _m: None)
    problems = []
    for image in wanted:
        try:
            _, version, _url = _resolve(image, contents[image.remote])
            archive_filename(image.name, image.reference, version.format)
        except (RemoteError, ValueError) as e:
            problems.append(f"{image}: {e}")
    return problems


# ---------------------------------------------------------------- CLI handlers

def _ctx_paths(ctx, os_version: str | None):
    return ctx.load_paths(os_version=os_version) if os_version else ctx.paths


def cmd_populate(ctx, args) -> int:
    """``torcx profile populate [--name P|--file F] [-n OSVER]``."""
    paths = _ctx_paths(ctx, args.os_version)
    _, profile = profiles.read_given_or_next(paths, file=args.file, name=args.name,
                                             log=ctx.log)
    images = profile.images
    return populate(paths, images, log=ctx.log, opts=FetchOptions.from_env(ctx.environ))


def check_remote(ctx, images, os_version: str | None) -> int:
    """``torcx profile check --remote-only``: every image's remote offers it, signed."""
    paths = _ctx_paths(ctx, os_version)
    wanted = [im for im in _wanted(images) if im.remote]
    for image in _wanted(images):
        if not image.remote:
            ctx.log.notice(f"{image}: has no remote, not checked")
    if not wanted:
        ctx.log.info("no image of the profile names a remote")
        return 0
    problems = remote_problems(paths, wanted, opts=FetchOptions.from_env(ctx.environ))
    for line in problems:
        ctx.log.error(f"check: {line}")
    if problems:
        return 1
    ctx.log.info(f"all {len(wanted)} image(s) with a remote are offered, signed and "
                 "verified")
    return 0


def cmd_remote_list(ctx, args) -> int:
    """``torcx remote list [--json]``: configured remotes, resolved URLs, key fingerprints."""
    paths = ctx.paths
    remotes, problems = list_remotes(paths)
    doc = remote_list_doc(paths, remotes)
    for line in problems:
        ctx.log.error(line)
    if args.json:
        ctx.out(schemas.dumps(doc))
    else:
        for entry in doc["value"]:
            ctx.out(f"{entry['name']}\t{entry['url']}\t{entry['path']}")
            for key in entry["keys"]:
                shown = ", ".join(key["fingerprints"]) or key.get("error", "")
                ctx.out(f"\tkey {key['path']}: {shown}")
    return 1 if problems else 0


def cmd_remote_contents(ctx, args) -> int:
    """``torcx remote contents DIR``: write DIR/torcx_remote_contents.json, unsigned."""
    path = write_contents(args.dir)
    ctx.out(path)
    ctx.log.info(f"sign it with: gpg --clearsign --output {path}.asc {path}")
    return 0


# ---------------------------------------------------------------- publishing

def contents_doc(folder: str) -> dict:
    """torcx-remote-contents-v1 for the ``NAME:VERSION.torcx.FORMAT`` archives in folder.

    A file name without ``:`` has the vendor default version (``com.coreos.cl``),
    as in a store. Locations are the file names, percent-encoded (``:`` too, so no
    client can mistake ``docker:20.10...`` for a URL scheme).
    """
    try:
        names = sorted(os.listdir(folder))
    except OSError as e:
        raise ConfigError(f"{folder}: cannot list: {e.strerror}") from None
    images: dict = {}
    for filename in names:
        parsed = parse_archive_filename(filename)
        path = os.path.join(folder, filename)
        if parsed is None or not os.path.isfile(path):
            continue
        name, version, fmt = parsed
        digest = hashlib.sha512()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        images.setdefault(name, []).append({
            "version": version,
            "format": fmt,
            "hash": "sha512-" + digest.hexdigest(),
            "location": urllib.parse.quote(filename),
        })
    if not images:
        raise NotFound(f"{folder}: no NAME:VERSION.torcx.FORMAT archives found")
    doc = {"kind": schemas.REMOTE_CONTENTS_V1,
           "value": {"images": [{"name": n, "versions": v} for n, v in images.items()]}}
    schemas.parse_remote_contents(doc, f"{folder}/{CONTENTS_FILE}")  # what we write must parse
    return doc


def write_contents(folder: str) -> str:
    """Write the unsigned contents file for ``folder``; returns its path."""
    path = os.path.join(folder, CONTENTS_FILE)
    schemas.write_json(path, contents_doc(folder))
    return path


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
        entries.append({"name": r.name, "path": r.folder, "base_url": r.base_url_template,
                        "url": r.base_url, "keys": keys})
    return {"kind": REMOTE_LIST_V0, "value": entries}
