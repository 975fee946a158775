# SPDX-License-Identifier: Apache-2.0
"""``torcx profile populate`` and ``check --remote-only``: signed contents, then archives.

Nothing from a remote is used before its ``torcx_remote_contents.json.asc`` has
been verified by gpgv against the remote's own keys (torcx.openpgp);
each archive is then pinned by the sha512 in those contents and checked while
it streams (torcx.remote.fetch). The file name in the store comes from the
profile's name and reference and the contents' format, never from ``location``.
"""

from __future__ import annotations

import functools
import os
import urllib.parse
from collections.abc import Sequence
from typing import Callable

from .. import openpgp, schemas
from ..errors import ConfigError, RemoteError, SchemaError, TorcxError
from ..log import INFO, NULL
from ..store import Store, archive_filename
from .config import (
    URL_SCHEME_RE,
    Remote,
    describe_error,
    find_remote,
    load_keyrings,
    release_missing,
)
from .fetch import Download, FetchOptions, Progress, download_all, fetch_document

__all__ = ["fetch_contents", "location_url", "populate", "remote_problems"]


# ---------------------------------------------------------------- contents

def fetch_contents(paths, remote: Remote, opts: FetchOptions,
                   note: Callable[[str], None] = lambda _m: None) -> schemas.RemoteContents:
    """Fetch, verify (gpgv) and parse the remote's contents; RemoteError names the remote."""
    return fetch_signed_contents(paths, remote, opts, note)[0]


def fetch_signed_contents(paths, remote: Remote, opts: FetchOptions,
                          note: Callable[[str], None] = lambda _m: None
                          ) -> tuple[schemas.RemoteContents, bytes]:
    """:func:`fetch_contents` and the signed document as fetched (kept in the store)."""
    try:
        url = remote.contents_url
        rings = load_keyrings(paths, remote)
        if remote.is_oci:
            from . import oci  # the registry client: only when a registry is used

            def verify(signed: bytes, ref: str) -> bytes:
                text = openpgp.verify_clearsigned(signed, rings, what=ref)
                schemas.parse_remote_contents(schemas.load_json(text, ref), ref)
                return text

            text, signed = oci.fetch_contents(remote, opts, note, verify)
        else:
            signed = fetch_document(url, opts, note)
            text = openpgp.verify_clearsigned(signed, rings, what=url)
        return schemas.parse_remote_contents(schemas.load_json(text, url), url), signed
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
    scheme = URL_SCHEME_RE.match(location)
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

def wanted_images(images) -> list:
    return [im for im in images if im.reference]


def _contents_by_remote(paths, names: Sequence[str], opts: FetchOptions,
                        note: Callable[[str], None]) -> dict:
    """``{remote name: (Remote, RemoteContents) or error message}``."""
    result: dict = {}
    for name in names:
        try:
            remote = find_remote(paths, name)
            result[name] = (remote, *fetch_signed_contents(paths, remote, opts, note))
        except (TorcxError, OSError) as e:
            result[name] = describe_error(e)
    return result


def _check_file_name_parts(image) -> None:
    """RemoteError unless name and reference can form the store file name NAME:REF.torcx.EXT."""
    for part in (image.name, image.reference):
        # The profile parser checks them too; this guards every other caller.
        if not part or "/" in part or "\0" in part or part in (".", ".."):
            raise RemoteError(f"{part!r} cannot be part of a store file name")


def _resolve(image, entry) -> tuple[Remote, schemas.RemoteVersion, tuple[str, ...]]:
    """(remote, version, sources) of an image, or RemoteError naming what is wrong.

    sources: the archive's URL; for an OCI remote, its artifact on each mirror and
    then on the origin (the registry layout is fixed, ``location`` is not used).
    """
    _check_file_name_parts(image)
    if isinstance(entry, str):
        raise RemoteError(entry)
    remote, contents, _signed = entry
    version = contents.find(image.name, image.reference)
    if version is None:
        raise RemoteError(f"remote {remote.name} does not offer {image.name}:"
                          f"{image.reference}")
    if remote.is_oci:
        from .ociref import image_ref, parse_repo
        return remote, version, tuple(image_ref(parse_repo(base), image.name, image.reference)
                                      for base in (*remote.mirrors, remote.base_url))
    return remote, version, (location_url(remote, version.location),)


def populate(paths, images, *, log=NULL, opts: FetchOptions | None = None,
             progress: Progress | None = None) -> int:
    """Fetch every image of ``images`` that has a remote and that no store holds.

    Archives land in ``BASEDIR/store/OSVER`` (``paths.os_version``). Returns 0
    when everything wanted is present afterwards, 1 otherwise; each failure is
    logged as an error naming the image and the reason.
    """
    opts = opts or FetchOptions.from_env()
    if not paths.os_version:
        why = release_missing(paths) or f"{paths.os_release} has no VERSION_ID"
        raise ConfigError(f"no OS version: {why}; pass -n OSVER")
    store = Store(paths, log=log)
    dest = paths.user_store(paths.os_version)
    missing = []
    failures: list[str] = []
    for image in wanted_images(images):
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
    by_download: dict[str, str] = {}  # file name -> remote
    host_dest = paths.host(dest)
    for image in missing:
        try:
            remote, version, sources = _resolve(image, contents[image.remote])
            filename = archive_filename(image.name, image.reference, version.format)
        except (RemoteError, ValueError) as e:
            failures.append(f"{image}: {e}")
            continue
        opener = None
        if remote.is_oci:
            from . import oci
            opener = functools.partial(oci.open_archive, fmt=version.format)
        downloads.append(Download(str(image), sources[0], host_dest, filename, version.sha512,
                                  sources[1:], opener))
        by_download[filename] = image.remote
    fetched = 0
    if downloads:
        try:
            os.makedirs(host_dest, mode=0o755, exist_ok=True)
        except OSError as e:
            raise RemoteError(f"{dest}: cannot create the store: {e.strerror}") from None
        done = []
        for outcome in download_all(downloads, opts, progress):
            if outcome.error:
                failures.append(f"{outcome.download.label}: {outcome.error}")
            else:
                fetched += 1
                done.append(outcome.download)
        _keep_trust(dest, done, {by_download[d.filename] for d in done}, contents, log)
    for line in failures:
        log.error(f"populate: {line}")
    log.info(f"populate: {fetched} fetched into {dest}, {len(failures)} failed")
    return 1 if failures else 0


def _keep_trust(dest: str, done: list, remotes: set, contents: dict, log) -> None:
    """Keep what vouches for the fetched archives next to them: the remote's signed
    contents (so a node needs no key of its own to re-sign for a ``signed`` policy)
    and, for mountable images, the recorded sha512 the boot checks them against."""
    from ..policy import SIGNED_FILE, write_recorded_digest
    from ..store import MOUNTABLE, parse_archive_filename

    for d in done:
        parsed = parse_archive_filename(d.filename)
        if parsed and (parsed[2] in MOUNTABLE or parsed[2] == "sysext"):  # mounted images
            write_recorded_digest(d.path, d.sha512, "sha512")
    if not done:
        return
    if len(remotes) > 1:
        log.warning(f"populate: {dest} got archives from remotes {', '.join(sorted(remotes))}; "
                    f"a store folder holds one {SIGNED_FILE}, none kept")
        return
    (name,) = remotes
    signed = contents[name][2]
    schemas.write_atomic(os.path.join(done[0].dest_dir, SIGNED_FILE), signed, 0o644)
    log.info(f"populate: kept the signed contents of remote {name} in {dest}/{SIGNED_FILE}")


def remote_problems(paths, images, *, opts: FetchOptions | None = None) -> list[str]:
    """What would stop ``populate`` for ``images`` (empty: nothing).

    For each image with a remote: the remote is configured, its contents verify
    and parse, they offer the image's version, and its location is acceptable.
    Only the contents files are downloaded.
    """
    opts = opts or FetchOptions.from_env()
    wanted = [im for im in wanted_images(images) if im.remote]
    contents = _contents_by_remote(paths, sorted({im.remote for im in wanted}), opts,
                                   lambda _m: None)
    problems = []
    for image in wanted:
        try:
            _, version, _sources = _resolve(image, contents[image.remote])
            archive_filename(image.name, image.reference, version.format)
        except (RemoteError, ValueError) as e:
            problems.append(f"{image}: {e}")
    return problems


