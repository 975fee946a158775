# SPDX-License-Identifier: Apache-2.0
"""Downloads for remotes: http, https and file URLs, standard library only.

- Separate connect and read timeouts: urllib has a single timeout, so the
  connection classes below switch the socket to the read timeout once connected.
- Bounded retries, with a doubling pause, on transient faults only: HTTP 5xx, 408
  and 429, timeouts, reset or refused connections, truncated bodies. A 404 or a
  digest mismatch is final.
- Archives stream into a temporary file inside the destination folder while their
  sha512 is computed; only a verified file is renamed to its final name. Any
  failure, including Ctrl-C, removes the temporary file. An archive larger than
  TORCX_FETCH_MAX_BYTES (announced, or while streaming) is refused: the sha512
  check comes only at the end, too late to protect the disk.
- Several downloads run in parallel on a bounded thread pool.

Tunables come from the environment (see FetchOptions.from_env); TORCX_CA_FILE
names the only CA bundle trusted for https (the system bundle otherwise, which
OpenSSL also lets SSL_CERT_FILE replace).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import os
import socket
import ssl
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, TextIO

from .. import __version__
from ..errors import ConfigError, RemoteError
from ..schemas import fsync_dir

__all__ = ["Body", "Download", "FetchOptions", "Outcome", "Progress", "Transient",
           "download_all", "fetch_document", "registry_auth_files", "retrying"]

_CHUNK = 256 * 1024
_TRANSIENT_HTTP = frozenset({408, 429})
_USER_AGENT = f"torcx/{__version__}"


@dataclass(frozen=True)
class FetchOptions:
    """How downloads behave; times in seconds."""

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    attempts: int = 3
    backoff: float = 0.5
    jobs: int = 4
    ca_file: str | None = None
    max_document: int = 16 << 20
    max_archive: int = 8 << 30
    # docker-style credential files for OCI registries, first match wins (never printed)
    registry_auth_files: tuple = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> FetchOptions:
        """Read TORCX_FETCH_{CONNECT_TIMEOUT,READ_TIMEOUT,ATTEMPTS,BACKOFF,JOBS,MAX_BYTES},
        TORCX_CA_FILE."""
        def number(var: str, default, kind, minimum, maximum=1e9):
            text = environ.get(var, "").strip()
            if not text:
                return default
            try:
                value = kind(text)
            except ValueError:
                value = None
            if value is None or not minimum <= value < maximum:  # also refuses nan and inf
                raise ConfigError(f"{var}={text!r}: expected a finite {kind.__name__} >= {minimum}")
            return value

        ca_file = environ.get("TORCX_CA_FILE") or None
        if ca_file is not None and not os.path.isabs(ca_file):
            raise ConfigError(f"TORCX_CA_FILE={ca_file!r}: expected an absolute path")
        return cls(
            connect_timeout=number("TORCX_FETCH_CONNECT_TIMEOUT", cls.connect_timeout, float, 0.01),
            read_timeout=number("TORCX_FETCH_READ_TIMEOUT", cls.read_timeout, float, 0.01),
            attempts=number("TORCX_FETCH_ATTEMPTS", cls.attempts, int, 1),
            backoff=number("TORCX_FETCH_BACKOFF", cls.backoff, float, 0.0),
            jobs=number("TORCX_FETCH_JOBS", cls.jobs, int, 1),
            max_archive=number("TORCX_FETCH_MAX_BYTES", cls.max_archive, int, 1, 1 << 63),
            ca_file=ca_file,
            registry_auth_files=registry_auth_files(environ),
        )


def registry_auth_files(environ: Mapping[str, str]) -> tuple:
    """Where registry clients keep credentials, in the order they are read.

    TORCX_REGISTRY_AUTH, then REGISTRY_AUTH_FILE and the containers auth.json
    places (podman, skopeo, buildah), then docker's config.json.
    """
    files = []
    for var in ("TORCX_REGISTRY_AUTH", "REGISTRY_AUTH_FILE"):
        if environ.get(var):
            if not os.path.isabs(environ[var]):
                raise ConfigError(f"{var}={environ[var]!r}: expected an absolute path")
            files.append(environ[var])
    home = environ.get("HOME", "")
    if environ.get("XDG_RUNTIME_DIR"):
        files.append(os.path.join(environ["XDG_RUNTIME_DIR"], "containers/auth.json"))
    if home:
        files.append(os.path.join(home, ".config/containers/auth.json"))
    if environ.get("DOCKER_CONFIG"):
        files.append(os.path.join(environ["DOCKER_CONFIG"], "config.json"))
    elif home:
        files.append(os.path.join(home, ".docker/config.json"))
    return tuple(files)


class _Transient(Exception):
    """A fault worth another attempt."""


Transient = _Transient  # for other openers (torcx.remote.oci)


class _Cancelled(Exception):
    """The user interrupted the run."""


# ---------------------------------------------------------------- opening URLs

class _ReadTimeoutHTTP(http.client.HTTPConnection):
    read_timeout: float = 30.0

    def connect(self) -> None:
        super().connect()  # under the connect timeout given by urllib
        self.sock.settimeout(self.read_timeout)


class _ReadTimeoutHTTPS(http.client.HTTPSConnection):
    read_timeout: float = 30.0

    def connect(self) -> None:
        super().connect()  # TCP and TLS handshake under the connect timeout
        self.sock.settimeout(self.read_timeout)


def _connection_class(base: type, read_timeout: float) -> type:
    return type(base.__name__, (base,), {"read_timeout": read_timeout})


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, read_timeout: float):
        super().__init__()
        self._cls = _connection_class(_ReadTimeoutHTTP, read_timeout)

    def http_open(self, req):
        return self.do_open(self._cls, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, read_timeout: float, context: ssl.SSLContext):
        super().__init__(context=context)
        self._cls = _connection_class(_ReadTimeoutHTTPS, read_timeout)
        self._ctx = context

    def https_open(self, req):
        return self.do_open(self._cls, req, context=self._ctx)


_opener_lock = threading.Lock()
_openers: dict = {}


def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Certificates and host names verified: against ca_file only, or the system's CAs."""
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ValueError) as e:
        raise RemoteError(f"TORCX_CA_FILE {ca_file}: cannot load: "
                          f"{getattr(e, 'strerror', None) or e}") from None


def _opener(opts: FetchOptions) -> urllib.request.OpenerDirector:
    key = (opts.read_timeout, opts.ca_file)
    with _opener_lock:
        if key not in _openers:
            context = _tls_context(opts.ca_file)
            # Built by hand, not with build_opener: no ftp, file or data handlers, so
            # a redirect can only lead to another http(s) URL (proxies still apply).
            opener = urllib.request.OpenerDirector()
            for handler in (urllib.request.ProxyHandler(), urllib.request.UnknownHandler(),
                            _HTTPHandler(opts.read_timeout),
                            _HTTPSHandler(opts.read_timeout, context),
                            urllib.request.HTTPDefaultErrorHandler(),
                            urllib.request.HTTPRedirectHandler(),
                            urllib.request.HTTPErrorProcessor()):
                opener.add_handler(handler)
            _openers[key] = opener
        return _openers[key]


def _is_transient_oserror(e: BaseException) -> bool:
    if isinstance(e, (socket.timeout, TimeoutError, ConnectionError)):
        return True
    return isinstance(e, socket.gaierror) and e.errno == socket.EAI_AGAIN


def _describe(e: BaseException) -> str:
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


class _Body:
    """A readable body plus the size announced for it (None if unknown)."""

    def __init__(self, stream, size: int | None):
        self.stream = stream
        self.size = size

    def read(self, n: int) -> bytes:
        try:
            return self.stream.read(n)
        except http.client.IncompleteRead as e:
            raise _Transient(
                f"truncated: connection closed after {len(e.partial)} more bytes") from None
        except http.client.HTTPException as e:  # e.g. an overlong chunk-size line
            raise _Transient(f"bad HTTP response: {e!r}") from None
        except OSError as e:
            if _is_transient_oserror(e):
                raise _Transient(_describe(e)) from None
            raise RemoteError(_describe(e)) from None

    def close(self) -> None:
        self.stream.close()


Body = _Body


def _file_path(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise RemoteError(f"{url}: file URLs must name a local path")
    return urllib.request.url2pathname(parts.path)


def _open(url: str, opts: FetchOptions) -> _Body:
    """Open one URL once; raises _Transient or RemoteError (the URL is added by callers)."""
    try:
        scheme = urllib.parse.urlsplit(url).scheme
    except ValueError as e:
        raise RemoteError(f"not a valid URL: {e}") from None
    if scheme == "file":
        path = _file_path(url)
        try:
            f = open(path, "rb")
            return _Body(f, os.fstat(f.fileno()).st_size)
        except OSError as e:
            raise RemoteError(e.strerror or str(e)) from None
        except ValueError as e:  # a NUL byte in the path
            raise RemoteError(f"invalid path: {e}") from None
    if scheme not in ("http", "https"):
        raise RemoteError(f"unsupported URL scheme {scheme!r} (http, https, file)")
    req = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT,
                                               "Accept-Encoding": "identity"})
    try:
        resp = _opener(opts).open(req, timeout=opts.connect_timeout)
    except urllib.error.HTTPError as e:
        e.close()
        message = f"HTTP {e.code} {e.reason}"
        if e.code >= 500 or e.code in _TRANSIENT_HTTP:
            raise _Transient(message) from None
        raise RemoteError(message) from None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, BaseException) and _is_transient_oserror(reason):
            raise _Transient(_describe(reason)) from None
        raise RemoteError(_describe(reason) if isinstance(reason, BaseException)
                          else str(reason)) from None
    except OSError as e:  # timeouts and resets while reading the status line
        if _is_transient_oserror(e):
            raise _Transient(_describe(e)) from None
        raise RemoteError(_describe(e)) from None
    except http.client.HTTPException as e:
        raise _Transient(f"bad HTTP response: {e!r}") from None
    length = resp.headers.get("Content-Length")
    size = int(length) if length and length.isdigit() else None
    return _Body(resp, size)


def retrying(url: str, opts: FetchOptions, attempt: Callable[[], object],
              note: Callable[[str], None], cancel: threading.Event | None = None):
    """Run attempt() until it succeeds, fails for good, or the attempts run out."""
    for n in range(1, opts.attempts + 1):
        try:
            return attempt()
        except _Transient as e:
            if n == opts.attempts:
                raise RemoteError(f"{url}: {e} (gave up after {n} attempts)") from None
            pause = opts.backoff * (2 ** (n - 1))
            note(f"{url}: {e}; retrying in {pause:g}s ({n}/{opts.attempts})")
            if cancel is not None and cancel.wait(pause):
                raise _Cancelled() from None
            if cancel is None:
                time.sleep(pause)
        except RemoteError as e:
            raise RemoteError(f"{url}: {e}") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _ignore(_message: str) -> None:
    pass


def fetch_document(url: str, opts: FetchOptions,
                   note: Callable[[str], None] = _ignore) -> bytes:
    """Fetch a small document (at most opts.max_document bytes) into memory."""
    def attempt() -> bytes:
        body = _open(url, opts)
        try:
            chunks, total = [], 0
            while True:
                chunk = body.read(_CHUNK)
                if not chunk:
                    break
                total += len(chunk)
                if total > opts.max_document:
                    raise RemoteError(f"larger than {opts.max_document} bytes, refusing")
                chunks.append(chunk)
            if body.size is not None and total != body.size:
                raise _Transient(f"truncated: got {total} of {body.size} bytes")
            return b"".join(chunks)
        finally:
            body.close()

    return retrying(url, opts, attempt, note)


# ---------------------------------------------------------------- archives

@dataclass(frozen=True)
class Download:
    """One archive to fetch from ``url`` into ``dest_dir/filename``, pinned by sha512.

    ``fallbacks`` are tried in order when ``url`` fails for good (mirrors, then the
    origin); ``opener(url, opts) -> Body`` opens what is not an http, https or file
    URL (an OCI registry).
    """

    label: str
    url: str
    dest_dir: str
    filename: str
    sha512: str  # lowercase hex
    fallbacks: tuple = ()
    opener: Callable | None = field(default=None, compare=False)

    @property
    def path(self) -> str:
        return os.path.join(self.dest_dir, self.filename)


@dataclass(frozen=True)
class Outcome:
    download: Download
    size: int = 0
    error: str | None = None


class Progress:
    """A one-line progress bar on a terminal; plain start/end lines otherwise."""

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None,
                 quiet: bool = False, notes: Callable[[str], None] | None = None):
        self._out = stream if stream is not None else sys.stderr
        self._tty = self._out.isatty() if tty is None else tty
        self._quiet = quiet  # no bar, no start/end lines; notes still go out
        self._notes = notes  # where notes (retries) go; the stream by default
        self._lock = threading.Lock()
        self._sizes: dict = {}  # label -> [done, total or None], finished ones kept
        self._running: set = set()
        self._drawn = 0.0
        self._finished = 0
        self._count = 0

    def begin(self, count: int) -> None:
        self._count = count

    def start(self, label: str, url: str) -> None:
        with self._lock:
            self._sizes[label] = [0, None]
            self._running.add(label)
            if not self._tty and not self._quiet:
                self._print(f"fetching {label} from {url}")

    def size(self, label: str, total: int | None) -> None:
        with self._lock:
            self._sizes[label] = [0, total]

    def advance(self, label: str, n: int) -> None:
        with self._lock:
            self._sizes[label][0] += n
            now = time.monotonic()
            if self._tty and not self._quiet and now - self._drawn >= 0.1:
                self._drawn = now
                self._draw()

    def end(self, label: str, message: str | None) -> None:
        with self._lock:
            self._finished += 1
            self._running.discard(label)
            if self._quiet:
                return
            if message:
                self._print(message)
            elif self._tty:
                self._out.write("\r\x1b[K")
            if self._tty and self._running:
                self._draw()

    def note(self, message: str) -> None:
        with self._lock:
            if self._notes is None:
                self._print(message)
                return
            if self._tty and not self._quiet:
                self._out.write("\r\x1b[K")
            self._notes(message)

    def _print(self, line: str) -> None:
        if self._tty:
            self._out.write("\r\x1b[K")
        self._out.write(line + "\n")
        self._out.flush()

    def _draw(self) -> None:
        done = sum(d for d, _ in self._sizes.values())
        known = [t for _, t in self._sizes.values() if t]
        total = sum(known) if len(known) == len(self._sizes) else None
        width = 30
        if total:
            filled = min(width, done * width // total)
            bar = "#" * filled + "-" * (width - filled)
            amount = f"{_mib(done)}/{_mib(total)} MiB"
        else:
            bar = "?" * width
            amount = f"{_mib(done)} MiB"
        self._out.write(f"\r\x1b[K[{bar}] {amount}  {self._finished}/{self._count} done, "
                        f"{len(self._running)} running")
        self._out.flush()


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f}"


def _too_large(limit: int, detail: str) -> RemoteError:
    # Final, not transient: another attempt would fetch the same bytes again.
    return RemoteError(f"larger than TORCX_FETCH_MAX_BYTES ({limit} bytes): {detail}")


def _stream_to(body: _Body, fd: int, job: Download, progress: Progress,
               cancel: threading.Event, limit: int) -> tuple[int, str]:
    digest = hashlib.sha512()
    total = 0
    while True:
        if cancel.is_set():
            raise _Cancelled()
        chunk = body.read(_CHUNK)
        if not chunk:
            break
        if total + len(chunk) > limit:
            raise _too_large(limit, f"stopped after {total} bytes")
        digest.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view):]
        total += len(chunk)
        progress.advance(job.label, len(chunk))
    if body.size is not None and total != body.size:
        raise _Transient(f"truncated: got {total} of {body.size} bytes")
    return total, digest.hexdigest()


def _download_once(job: Download, url: str, opts: FetchOptions, progress: Progress,
                   cancel: threading.Event) -> int:
    body = (job.opener or _open)(url, opts)
    if body.size is not None and body.size > opts.max_archive:
        body.close()
        raise _too_large(opts.max_archive, f"{body.size} bytes announced, nothing read")
    fd, tmp = tempfile.mkstemp(prefix=f".{job.filename}.", suffix=".part", dir=job.dest_dir)
    try:
        try:
            progress.size(job.label, body.size)
            size, got = _stream_to(body, fd, job, progress, cancel, opts.max_archive)
        finally:
            body.close()
        if not hmac.compare_digest(got, job.sha512.lower()):
            raise RemoteError(f"sha512 mismatch: expected {job.sha512.lower()[:16]}..., "
                              f"got {got[:16]}... ({size} bytes)")
        os.fchmod(fd, 0o644)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, job.path)
        tmp = ""
        fsync_dir(job.dest_dir)
        return size
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp:
            _unlink_quietly(tmp)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _run_one(job: Download, opts: FetchOptions, progress: Progress,
             cancel: threading.Event) -> Outcome:
    progress.start(job.label, job.url)
    errors = []
    sources = (job.url, *job.fallbacks)
    for n, url in enumerate(sources):
        try:
            size = retrying(url, opts,
                            lambda url=url: _download_once(job, url, opts, progress, cancel),
                            progress.note, cancel)
        except _Cancelled:
            progress.end(job.label, None)
            return Outcome(job, error="cancelled")
        except (RemoteError, OSError) as e:
            message = str(e) if isinstance(e, RemoteError) else f"{job.path}: {_describe(e)}"
            errors.append(message)
            if n + 1 < len(sources):
                progress.note(f"{job.label}: {message}; trying {sources[n + 1]}")
            continue
        progress.end(job.label, f"fetched {job.label} ({size} bytes, sha512 verified) "
                                f"from {url} -> {job.path}")
        return Outcome(job, size=size)
    progress.end(job.label, None)  # the caller reports failures
    return Outcome(job, error="; ".join(errors))


def download_all(jobs: Sequence[Download], opts: FetchOptions,
                 progress: Progress | None = None) -> list[Outcome]:
    """Fetch every job (at most opts.jobs at a time); one Outcome per job, in order."""
    progress = progress or Progress()
    progress.begin(len(jobs))
    if not jobs:
        return []
    cancel = threading.Event()
    with ThreadPoolExecutor(max_workers=min(opts.jobs, len(jobs)),
                            thread_name_prefix="torcx-fetch") as pool:
        futures = [pool.submit(_run_one, job, opts, progress, cancel) for job in jobs]
        try:
            return [f.result() for f in futures]
        except BaseException:
            cancel.set()  # workers stop at their next chunk and remove their temp files
            pool.shutdown(wait=False, cancel_futures=True)  # queued ones never start
            raise
