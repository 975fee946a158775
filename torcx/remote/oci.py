# SPDX-License-Identifier: Apache-2.0
"""OCI registries as remotes: pull (populate, check) and publish, through the ORAS SDK.

The registry protocol comes from the ORAS Python SDK (PyPI ``oras``): repository
and endpoint naming (``oras.container``), the blob, upload and manifest calls of
``oras.provider.Registry`` and the bearer-token exchange of
``oras.auth.token.TokenAuth``. Three things are replaced here because a node
needs them and the SDK does not do them: its request loop (it retries
everything five times with pauses of 3 s to 83 s and has no timeouts; here the
retries, timeouts and size caps of torcx.remote.fetch apply), credentials (torcx
reads them itself, see :func:`credentials`, and the SDK's own discovery is off),
and challenges (one backend answers both ``Basic`` and ``Bearer``, and asks for a
new token when a request needs a wider scope, as a push after a pull does).

Trust is the http remotes': nothing the registry says is trusted. The signed
contents travel as an artifact and are verified by gpgv; each archive's
manifest is read by tag, its one layer is pulled by the digest the manifest
names and checked against the signed sha512 while it streams
(torcx.remote.fetch). Never imported at boot: it pulls in requests and jsonschema.

Artifacts (an OCI image manifest with one layer; config ``{}`` typed with the
artifact type, as OCI 1.0 registries need, and ``artifactType`` for 1.1 ones):

- an image archive: artifact type ``application/vnd.torcx.image.v1``, layer
  ``application/vnd.torcx.image.layer.v1.FORMAT`` (tgz, squashfs, tar.zst,
  tar.xz, tar, erofs), title annotation the store file name;
- the signed contents: artifact type ``application/vnd.torcx.remote-contents.v1``,
  layer ``application/vnd.torcx.remote-contents.v1.json.asc`` (the clear-signed
  ``torcx_remote_contents.json.asc``, unchanged).
"""

from __future__ import annotations

import base64
import hashlib
import http.cookiejar
import json
import os
import re
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

from .. import __version__, schemas
from ..errors import ConfigError, NotFound, RemoteError
from .config import SIGNED_CONTENTS_FILE, Remote
from .contents import archive_files, file_digests
from .fetch import Body, FetchOptions, Transient, retrying
from .ociref import Repo, contents_ref, image_ref, parse_ref, parse_repo

try:
    import oras.auth.token
    import oras.auth.utils
    import oras.container
    import oras.provider
    import oras.utils
    import requests
    import urllib3.exceptions
except ImportError:  # pragma: no cover - the message below says what to install
    oras = None

__all__ = ["CONTENTS_ARTIFACT_TYPE", "CONTENTS_MEDIA_TYPE", "IMAGE_ARTIFACT_TYPE",
           "credentials", "fetch_contents", "layer_media_type", "open_archive", "publish"]

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
IMAGE_ARTIFACT_TYPE = "application/vnd.torcx.image.v1"
CONTENTS_ARTIFACT_TYPE = "application/vnd.torcx.remote-contents.v1"
CONTENTS_MEDIA_TYPE = "application/vnd.torcx.remote-contents.v1.json.asc"
TITLE_ANNOTATION = "org.opencontainers.image.title"
EMPTY_CONFIG = b"{}"
MAX_MANIFEST = 4 << 20
_CHUNK = 256 * 1024
_USER_AGENT = f"torcx/{__version__}"


def layer_media_type(fmt: str) -> str:
    return f"application/vnd.torcx.image.layer.v1.{fmt}"


def _require_oras() -> None:
    if oras is None:
        raise RemoteError("OCI registry remotes need the Python package 'oras' "
                          "(pip install 'torcx[oci]')")


# ---------------------------------------------------------------- credentials

_creds_lock = threading.Lock()
_creds_cache: dict = {}


def _host_key(key: str) -> str:
    """An ``auths`` key as docker and podman write it -> host[:port]."""
    for prefix in ("https://", "http://"):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key.split("/", 1)[0]


def _read_auth_file(path: str) -> dict | None:
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except FileNotFoundError:
        return None
    except OSError as e:
        raise RemoteError(f"{path}: cannot read registry credentials: {e.strerror}") from None
    except ValueError:
        raise RemoteError(f"{path}: registry credentials are not valid JSON") from None
    if not isinstance(doc, dict):
        raise RemoteError(f"{path}: registry credentials: expected a JSON object")
    return doc


def _from_auth_file(doc: dict, host: str, path: str) -> str | None:
    """base64 ``user:password`` for host from one docker-style file, or None."""
    for key, entry in (doc.get("auths") or {}).items():
        if _host_key(key) != host or not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            try:
                sep = b":" in base64.b64decode(entry["auth"], validate=True)
            except ValueError:
                sep = False
            if not sep:  # the value is not shown: it is a secret
                raise RemoteError(f"{path}: auths[{key!r}].auth is not base64 'user:password'")
            return entry["auth"]
        if entry.get("username") and entry.get("password"):
            return oras.auth.utils.get_basic_auth(entry["username"], entry["password"])
    helper = (doc.get("credHelpers") or {}).get(host) or doc.get("credsStore")
    if helper:  # docker-credential-HELPER, run by the SDK
        return oras.auth.token.TokenAuth()._get_auth_from_creds_store(helper, host)
    return None


def credentials(host: str, opts: FetchOptions) -> str | None:
    """Basic credentials (base64 ``user:password``) for ``host``, from the first of
    opts.registry_auth_files that names it; None for anonymous access."""
    key = (host, opts.registry_auth_files)
    with _creds_lock:
        if key not in _creds_cache:
            found = None
            for path in opts.registry_auth_files:
                doc = _read_auth_file(path)
                if doc is not None:
                    found = _from_auth_file(doc, host, path)
                    if found:
                        break
            _creds_cache[key] = found
        return _creds_cache[key]


# ---------------------------------------------------------------- the client

class _Auth(oras.auth.token.TokenAuth if oras else object):
    """Answers ``Basic`` and ``Bearer`` challenges; credentials are given, never looked up."""

    def __init__(self, basic: str | None):
        super().__init__()
        if basic:
            self._basic_auth = basic
        self._use_basic = False

    def load_configs(self, container, configs=None) -> None:
        pass  # torcx chose the credentials (credentials()); no other file is read

    def get_auth_header(self) -> dict:
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        if self._use_basic:
            return {"Authorization": f"Basic {self._basic_auth}"}
        return {}

    def authenticate_request(self, original, headers, refresh=False):
        raw = original.headers.get("Www-Authenticate", "")
        scheme = raw.split(" ", 1)[0].lower()
        headers = dict(headers or {})
        if scheme == "basic":
            if not getattr(self, "_basic_auth", None):
                return headers, False
            self._use_basic = True
        elif scheme == "bearer":
            challenge = oras.auth.utils.parse_auth_header(raw)
            if not challenge.realm:
                return headers, False
            # Anonymous without credentials; a new token also when the scope widens.
            token = self.request_token(challenge)
            if not token:
                return headers, False
            self.token = token
        else:
            return headers, False
        headers.update(self.get_auth_header())
        return headers, True


def _transport_error(e: BaseException) -> Exception:
    """A requests/urllib3 fault -> Transient (worth another attempt) or RemoteError."""
    if isinstance(e, requests.exceptions.SSLError):  # final: another try meets the same
        reason = re.search(r"\[SSL: [^\]]+\][^'\"]*", str(e))
        return RemoteError(f"TLS: {reason.group(0).strip() if reason else e}")
    if isinstance(e, (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError)):
        return Transient("timed out")
    if isinstance(e, (requests.exceptions.ConnectionError,
                      requests.exceptions.ChunkedEncodingError,
                      urllib3.exceptions.ProtocolError)):
        return Transient(f"connection failed: {type(e).__name__}")
    return RemoteError(f"{type(e).__name__}: {e}")


def _trusted_cas(opts: FetchOptions):
    """What https trusts, as for http remotes: TORCX_CA_FILE only, or the system's CAs
    (OpenSSL's defaults, SSL_CERT_FILE included), not the bundle requests ships."""
    if opts.ca_file:
        return opts.ca_file
    paths = ssl.get_default_verify_paths()
    return paths.cafile or paths.capath or True


class _Session(requests.Session if oras else object):
    """Every request, the SDK's token requests included, under the connect and read
    timeouts; counted."""

    def __init__(self, opts: FetchOptions):
        super().__init__()
        self.timeout = (opts.connect_timeout, opts.read_timeout)
        self.count = 0
        self.headers.update({"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"})
        # As the SDK's own session: registries such as Harbor treat cookies as a browser.
        self.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))

    def request(self, method, url, **kwargs):
        kwargs.setdefault("timeout", self.timeout)
        self.count += 1
        return super().request(method, url, **kwargs)


class _Client(oras.provider.Registry if oras else object):
    """One repository of one registry; the ORAS SDK's calls over torcx's request loop."""

    def __init__(self, repo: Repo, opts: FetchOptions):
        _require_oras()
        tls = _trusted_cas(opts)
        super().__init__(hostname=repo.host, insecure=repo.scheme == "http", tls_verify=tls)
        self.repo = repo
        self.session.close()
        self.session = _Session(opts)
        self.auth = _Auth(credentials(repo.host, opts))
        self.auth.session, self.auth.prefix, self.auth._tls_verify = (
            self.session, self.prefix, tls)
        # Not parsed from a string: the SDK's parser takes a first path component
        # with a '.' for a registry host.
        container = oras.container.Container("x", registry=repo.host)
        container.namespace, _, container.repository = repo.path.rpartition("/")
        container.namespace = container.namespace or None
        self.container = container

    @property
    def requests(self) -> int:
        return self.session.count

    def close(self) -> None:
        self.session.close()

    def do_request(self, url, method="GET", data=None, headers=None, json=None,
                   stream=False):
        """One request, answering one auth challenge; raises Transient or RemoteError."""
        headers = dict(headers or {})
        headers.update(self.auth.get_auth_header())
        try:
            resp = self._send(method, url, data, json, headers, stream)
            if resp.status_code == 401:
                resp.close()
                headers, changed = self.auth.authenticate_request(resp, headers)
                if changed:
                    if hasattr(data, "seek"):
                        data.seek(0)
                    resp = self._send(method, url, data, json, headers, stream)
        except requests.exceptions.RequestException as e:
            raise _transport_error(e) from None
        return resp

    def _send(self, method, url, data, json, headers, stream):
        return self.session.request(method, url, data=data, json=json, headers=headers,
                                    stream=stream, verify=self._tls_verify)

    def url(self, kind: str, ref: str) -> str:
        where = (self.container.manifest_url(ref) if kind == "manifest"
                 else self.container.get_blob_url(ref))
        return f"{self.prefix}://{where}"


def _status_error(resp, what: str) -> Exception:
    """A non-success answer -> Transient (5xx, 408, 429) or RemoteError naming it."""
    code = resp.status_code
    detail = ""
    try:
        errors = resp.json().get("errors") or []
        detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors[:3]
                           if isinstance(e, dict))
    except (ValueError, AttributeError):
        pass
    finally:
        resp.close()
    message = f"{what}: HTTP {code} {resp.reason}" + (f" ({detail})" if detail else "")
    if code >= 500 or code in (408, 429):
        return Transient(message)
    if code in (401, 403):
        return RemoteError(message + ": credentials missing or rejected")
    return RemoteError(message)


# ---------------------------------------------------------------- reading artifacts

@dataclass(frozen=True)
class _Layer:
    digest: str
    size: int


def _read_small(resp, limit: int, what: str) -> bytes:
    length = resp.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > limit:
        resp.close()
        raise RemoteError(f"{what}: larger than {limit} bytes, refusing")
    chunks, total = [], 0
    try:
        for chunk in resp.iter_content(_CHUNK):
            total += len(chunk)
            if total > limit:
                raise RemoteError(f"{what}: larger than {limit} bytes, refusing")
            chunks.append(chunk)
    except requests.exceptions.RequestException as e:
        raise _transport_error(e) from None
    finally:
        resp.close()
    return b"".join(chunks)


def _manifest_layer(client: _Client, tag: str, artifact_type: str, layer_type: str) -> _Layer:
    """Read the manifest of ``tag``; its one layer, checked to be what we expect."""
    what = client.repo.ref(tag)
    resp = client.do_request(client.url("manifest", tag), "GET",
                             headers={"Accept": MANIFEST_MEDIA_TYPE})
    if resp.status_code != 200:
        raise _status_error(resp, what)
    body = _read_small(resp, MAX_MANIFEST, what)
    try:
        manifest = json.loads(body)
    except ValueError:
        raise RemoteError(f"{what}: the manifest is not valid JSON") from None
    if not isinstance(manifest, dict):
        raise RemoteError(f"{what}: the manifest is not a JSON object")
    media = manifest.get("mediaType") or resp.headers.get("Content-Type", "")
    if media != MANIFEST_MEDIA_TYPE:
        raise RemoteError(f"{what}: foreign manifest media type {media!r} "
                          f"(expected {MANIFEST_MEDIA_TYPE})")
    config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    kind = manifest.get("artifactType") or config.get("mediaType")
    if kind != artifact_type:
        raise RemoteError(f"{what}: foreign artifact type {kind!r} (expected {artifact_type})")
    layers = manifest.get("layers")
    if not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], dict):
        raise RemoteError(f"{what}: expected exactly one layer")
    layer = layers[0]
    if layer.get("mediaType") != layer_type:
        raise RemoteError(f"{what}: foreign layer media type {layer.get('mediaType')!r} "
                          f"(expected {layer_type})")
    digest, size = layer.get("digest"), layer.get("size")
    if (not isinstance(digest, str) or not digest.startswith("sha256:")
            or len(digest) != 71 or not isinstance(size, int) or size < 0):
        raise RemoteError(f"{what}: the layer's digest or size is malformed")
    return _Layer(digest, size)


def _get_blob(client: _Client, layer: _Layer, what: str):
    resp = client.do_request(client.url("blob", layer.digest), "GET", stream=True)
    if resp.status_code != 200:
        raise _status_error(resp, f"{what}: blob {layer.digest}")
    return resp


class _BlobStream:
    """A blob's body for torcx.remote.fetch: urllib3 faults as the OSErrors it retries."""

    def __init__(self, client: _Client, resp):
        self._client = client
        self._resp = resp

    def read(self, n: int) -> bytes:
        try:
            return self._resp.raw.read(n, decode_content=False)
        except urllib3.exceptions.TimeoutError:
            raise TimeoutError("timed out") from None
        except (urllib3.exceptions.ProtocolError, urllib3.exceptions.HTTPError) as e:
            raise ConnectionResetError(f"connection failed: {type(e).__name__}") from None

    def close(self) -> None:
        self._resp.close()
        self._client.close()


def open_archive(url: str, opts: FetchOptions, *, fmt: str) -> Body:
    """Open the archive artifact ``oci://HOST/REPO/NAME:REF`` for streaming (fetch.Download's
    opener): its manifest must be a torcx image of format ``fmt``; the layer is pulled
    by digest. The size the manifest announces is checked against the cap first."""
    repo, tag = parse_ref(url)
    client = _Client(repo, opts)
    try:
        layer = _manifest_layer(client, tag, IMAGE_ARTIFACT_TYPE, layer_media_type(fmt))
        if layer.size > opts.max_archive:
            raise RemoteError(f"larger than TORCX_FETCH_MAX_BYTES ({opts.max_archive} bytes): "
                              f"{layer.size} bytes announced by the manifest, nothing read")
        resp = _get_blob(client, layer, url)
    except BaseException:
        client.close()
        raise
    return Body(_BlobStream(client, resp), layer.size)


def _fetch_contents_once(ref: str, opts: FetchOptions) -> bytes:
    repo, tag = parse_ref(ref)
    client = _Client(repo, opts)
    try:
        layer = _manifest_layer(client, tag, CONTENTS_ARTIFACT_TYPE, CONTENTS_MEDIA_TYPE)
        if layer.size > opts.max_document:
            raise RemoteError(f"larger than {opts.max_document} bytes, refusing")
        data = _read_small(_get_blob(client, layer, ref), opts.max_document, ref)
    finally:
        client.close()
    if len(data) != layer.size:
        raise Transient(f"truncated: got {len(data)} of {layer.size} bytes")
    if "sha256:" + hashlib.sha256(data).hexdigest() != layer.digest:
        raise RemoteError(f"blob {layer.digest}: content does not match its digest")
    return data


def fetch_contents(remote: Remote, opts: FetchOptions, note: Callable[[str], None],
                   verify: Callable[[bytes, str], bytes]) -> tuple[bytes, bytes]:
    """(verified text, signed document) of the remote's contents: each mirror in order,
    then the origin, until one serves contents that ``verify(signed, ref)`` accepts."""
    sources = [*remote.mirrors, remote.base_url]
    errors = []
    for n, base in enumerate(sources):
        try:
            ref = contents_ref(parse_repo(base), remote.os_version or "")
            signed = retrying(ref, opts, lambda ref=ref: _fetch_contents_once(ref, opts), note)
            return verify(signed, ref), signed
        except RemoteError as e:
            errors.append(str(e))
            if n + 1 < len(sources):
                note(f"{e}; trying {sources[n + 1]}")
    raise RemoteError("; ".join(errors))


def archive_sources(remote: Remote, name: str, reference: str) -> tuple[str, ...]:
    """Where image name:reference is pulled from, in order: the mirrors, then the origin."""
    return tuple(image_ref(parse_repo(base), name, reference)
                 for base in (*remote.mirrors, remote.base_url))


# ---------------------------------------------------------------- publishing

def _cleartext(signed: bytes, path: str) -> bytes:
    """The text of a clear-signed message (RFC 4880 7.1), unverified: for cross-checks."""
    lines = signed.replace(b"\r\n", b"\n").split(b"\n")
    try:
        start = lines.index(b"-----BEGIN PGP SIGNED MESSAGE-----")
        blank = lines.index(b"", start)
        end = lines.index(b"-----BEGIN PGP SIGNATURE-----", blank)
    except ValueError:
        raise ConfigError(f"{path}: not an OpenPGP clear-signed message") from None
    text = [line[2:] if line.startswith(b"- ") else line for line in lines[blank + 1:end]]
    return b"\n".join(text)


@dataclass
class _Archive:
    path: str
    name: str
    version: str
    fmt: str
    size: int
    sha256: str
    sha512: str


def _scan(folder: str) -> tuple[bytes, list[_Archive], list[str]]:
    """The signed contents and the archives of ``folder``, cross-checked; nothing pushed.

    Every archive must be offered by the signed contents with the same format and
    sha512 (or nodes would refuse it); entries without an archive here are noted.
    """
    asc = os.path.join(folder, SIGNED_CONTENTS_FILE)
    try:
        with open(asc, "rb") as f:
            signed = f.read()
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        raise NotFound(f"{asc}: missing; write it with 'torcx remote contents {folder}' "
                       "and gpg --clearsign") from None
    except OSError as e:
        raise ConfigError(f"{e.filename or folder}: cannot read: {e.strerror}") from None
    contents = schemas.parse_remote_contents(
        schemas.load_json(_cleartext(signed, asc), asc), asc)
    archives, notes = [], []
    for path, name, version, fmt in archive_files(folder, names):
        offered = contents.find(name, version)
        if offered is None:
            raise ConfigError(f"{path}: not offered by the signed contents {asc}")
        if offered.format != fmt:
            raise ConfigError(f"{path}: the signed contents say format {offered.format}")
        size, s256, s512 = file_digests(path)
        if offered.sha512 != s512:
            raise ConfigError(f"{path}: sha512 differs from the signed contents {asc} "
                              f"({offered.sha512[:16]}... signed, {s512[:16]}... here)")
        archives.append(_Archive(path, name, version, fmt, size, s256, s512))
    have = {(a.name, a.version) for a in archives}
    for image in contents.images:
        for v in image.versions:
            if (image.name, v.version) not in have:
                notes.append(f"{image.name}:{v.version}: offered by the contents but not "
                             f"in {folder}, not pushed")
    return signed, archives, notes


def _manifest(artifact_type: str, layer_type: str, digest: str, size: int,
              title: str) -> bytes:
    config = {"mediaType": artifact_type,
              "digest": "sha256:" + hashlib.sha256(EMPTY_CONFIG).hexdigest(),
              "size": len(EMPTY_CONFIG)}
    doc = {"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE,
           "artifactType": artifact_type, "config": config,
           "layers": [{"mediaType": layer_type, "digest": digest, "size": size,
                       "annotations": {TITLE_ANNOTATION: title}}]}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


@dataclass
class PublishReport:
    pushed: list
    unchanged: list
    blobs_uploaded: int = 0
    bytes_uploaded: int = 0
    blobs_present: int = 0
    requests: int = 0


def _push_blob(client: _Client, digest: str, size: int, source, report: PublishReport) -> None:
    """Upload a blob unless the registry has it (HEAD first); source: bytes or a path."""
    resp = client.do_request(client.url("blob", digest), "HEAD")
    resp.close()
    if resp.status_code == 200:
        report.blobs_present += 1
        return
    if resp.status_code != 404:
        raise _status_error(resp, f"{client.repo.url}: blob {digest}")
    resp = client.do_request(f"{client.prefix}://{client.container.upload_blob_url()}", "POST",
                             headers={"Content-Length": "0"})
    if resp.status_code != 202:
        raise _status_error(resp, f"{client.repo.url}: starting an upload")
    resp.close()
    location = client._get_location(resp, client.container)
    if not location:
        raise RemoteError(f"{client.repo.url}: the registry gave no upload location")
    put = oras.utils.append_url_params(location, {"digest": digest})
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
    if isinstance(source, bytes):
        resp = client.do_request(put, "PUT", data=source, headers=headers)
    else:
        with open(source, "rb") as f:  # streamed, not read into memory
            resp = client.do_request(put, "PUT", data=f, headers=headers)
    if resp.status_code not in (201, 204):
        raise _status_error(resp, f"{client.repo.url}: uploading blob {digest}")
    resp.close()
    report.blobs_uploaded += 1
    report.bytes_uploaded += size


def _push_artifact(client: _Client, tag: str, manifest: bytes, blobs: Sequence,
                   report: PublishReport) -> bool:
    """Push blobs and manifest under ``tag``; False when the tag already had this manifest."""
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    resp = client.do_request(client.url("manifest", tag), "HEAD",
                             headers={"Accept": MANIFEST_MEDIA_TYPE})
    resp.close()
    if resp.status_code == 200 and resp.headers.get("Docker-Content-Digest") == digest:
        return False
    for blob_digest, size, source in blobs:
        _push_blob(client, blob_digest, size, source, report)
    resp = client.do_request(client.url("manifest", tag), "PUT", data=manifest,
                             headers={"Content-Type": MANIFEST_MEDIA_TYPE})
    if resp.status_code != 201:
        raise _status_error(resp, client.repo.ref(tag))
    resp.close()
    return True


def publish(folder: str, url: str, os_version: str, opts: FetchOptions,
            note: Callable[[str], None] = lambda _m: None) -> PublishReport:
    """Push every archive of ``folder`` and its signed contents to ``url`` (oci://HOST/REPO).

    Checked before anything is pushed: the contents parse, every archive is offered
    with its sha512. A blob the registry already holds is not uploaded again, and a
    tag that already names the same manifest is left alone.
    """
    _require_oras()
    base = parse_repo(url)
    contents_tag = contents_ref(base, os_version).rpartition(":")[2]
    signed, archives, notes = _scan(folder)
    for line in notes:
        note(line)
    report = PublishReport([], [])
    config = ("sha256:" + hashlib.sha256(EMPTY_CONFIG).hexdigest(), len(EMPTY_CONFIG),
              EMPTY_CONFIG)
    for a in archives:
        ref = image_ref(base, a.name, a.version)
        repo, tag = parse_ref(ref)
        manifest = _manifest(IMAGE_ARTIFACT_TYPE, layer_media_type(a.fmt), "sha256:" + a.sha256,
                             a.size, os.path.basename(a.path))
        blobs = [config, ("sha256:" + a.sha256, a.size, a.path)]
        changed = _push_retrying(repo, tag, manifest, blobs, opts, report, note)
        (report.pushed if changed else report.unchanged).append(ref)
    ref = base.ref(contents_tag)
    digest = "sha256:" + hashlib.sha256(signed).hexdigest()
    manifest = _manifest(CONTENTS_ARTIFACT_TYPE, CONTENTS_MEDIA_TYPE, digest, len(signed),
                         SIGNED_CONTENTS_FILE)
    changed = _push_retrying(base, contents_tag, manifest,
                             [config, (digest, len(signed), signed)], opts, report, note)
    (report.pushed if changed else report.unchanged).append(ref)
    return report


def _push_retrying(repo: Repo, tag: str, manifest: bytes, blobs: Sequence, opts: FetchOptions,
                   report: PublishReport, note: Callable[[str], None]) -> bool:
    """_push_artifact with the retries of fetch (every step checks first, so it may repeat)."""
    def attempt() -> bool:
        client = _Client(repo, opts)
        try:
            return _push_artifact(client, tag, manifest, blobs, report)
        finally:
            report.requests += client.requests
            client.close()

    return retrying(repo.ref(tag), opts, attempt, note)
