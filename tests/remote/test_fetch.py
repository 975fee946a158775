# SPDX-License-Identifier: Apache-2.0
"""The download layer on its own: parallel bound, progress display, settings, limits."""

from __future__ import annotations

import hashlib
import io
import os
import threading

import pytest
from remotekit import Fault

from torcx.errors import ConfigError, RemoteError
from torcx.remote import fetch


def serve_blobs(server, count: int, size: int = 300_000) -> list:
    """Put ``count`` random files on the server; returns Download jobs into dest later."""
    blobs = []
    for i in range(count):
        data = os.urandom(size)
        name = f"img{i}:1.torcx.tgz"
        with open(os.path.join(server.state.root, name), "wb") as f:
            f.write(data)
        blobs.append((name, hashlib.sha512(data).hexdigest()))
    return blobs


def jobs_for(server, blobs, dest) -> list:
    return [fetch.Download(name.split(".")[0], f"{server.url}/{name}", str(dest), name, digest)
            for name, digest in blobs]


def test_downloads_run_in_parallel_within_the_bound(http_server, tmp_path):
    """With jobs=2, four downloads run two at a time: never one alone, never three."""
    http_server.state.barrier = threading.Barrier(2)
    blobs = serve_blobs(http_server, 4)
    dest = tmp_path / "store"
    dest.mkdir()
    opts = fetch.FetchOptions(jobs=2, attempts=1)
    outcomes = fetch.download_all(jobs_for(http_server, blobs, dest), opts,
                                  fetch.Progress(io.StringIO(), tty=False))
    assert [o.error for o in outcomes] == [None] * 4
    assert http_server.state.max_inflight == 2
    assert sorted(os.listdir(dest)) == sorted(name for name, _ in blobs)


def test_progress_bar_on_a_terminal(http_server, tmp_path):
    """On a terminal the progress is one redrawn line with a bar, then a result line."""
    blobs = serve_blobs(http_server, 1)
    screen = io.StringIO()
    fetch.download_all(jobs_for(http_server, blobs, tmp_path), fetch.FetchOptions(),
                       fetch.Progress(screen, tty=True))
    text = screen.getvalue()
    assert "\r\x1b[K[" in text and "#" in text and "0/1 done, 1 running" in text
    assert "fetched img0:1 (300000 bytes, sha512 verified)" in text
    assert "fetching img0:1 from" not in text  # the bar replaces the start lines


def test_plain_progress_lines_off_a_terminal(http_server, tmp_path):
    """Off a terminal the progress is plain start and end lines, no control characters."""
    blobs = serve_blobs(http_server, 1)
    log = io.StringIO()
    fetch.download_all(jobs_for(http_server, blobs, tmp_path), fetch.FetchOptions(),
                       fetch.Progress(log, tty=False))
    lines = log.getvalue().splitlines()
    assert lines[0] == f"fetching img0:1 from {http_server.url}/img0:1.torcx.tgz"
    assert lines[1].startswith("fetched img0:1 (300000 bytes, sha512 verified)")
    assert "\r" not in log.getvalue() and "\x1b" not in log.getvalue()


def test_settings_from_environment():
    """TORCX_FETCH_* variables set the timeouts, attempts, pause and parallelism."""
    opts = fetch.FetchOptions.from_env({
        "TORCX_FETCH_CONNECT_TIMEOUT": "1.5", "TORCX_FETCH_READ_TIMEOUT": "2",
        "TORCX_FETCH_ATTEMPTS": "5", "TORCX_FETCH_BACKOFF": "0", "TORCX_FETCH_JOBS": "8",
        "TORCX_FETCH_MAX_BYTES": str(16 << 30), "TORCX_CA_FILE": "/etc/ssl/ca.pem"})
    assert (opts.connect_timeout, opts.read_timeout, opts.attempts, opts.backoff,
            opts.jobs, opts.max_archive, opts.ca_file) == (1.5, 2.0, 5, 0.0, 8, 16 << 30,
                                                           "/etc/ssl/ca.pem")


def test_archive_size_cap_defaults_to_8_gib():
    """Without TORCX_FETCH_MAX_BYTES an archive may be up to 8 GiB."""
    assert fetch.FetchOptions.from_env({}).max_archive == 8 << 30


@pytest.mark.parametrize("var,value", [
    ("TORCX_FETCH_ATTEMPTS", "0"), ("TORCX_FETCH_READ_TIMEOUT", "soon"),
    ("TORCX_FETCH_JOBS", "-1"), ("TORCX_CA_FILE", "relative.pem"),
    ("TORCX_FETCH_READ_TIMEOUT", "nan"), ("TORCX_FETCH_CONNECT_TIMEOUT", "inf"),
    ("TORCX_FETCH_BACKOFF", "1e400"), ("TORCX_FETCH_MAX_BYTES", "0"),
    ("TORCX_FETCH_MAX_BYTES", "8G"),
])
def test_bad_setting_names_the_variable(var, value):
    """A malformed setting is a ConfigError naming the variable."""
    with pytest.raises(ConfigError, match=var):
        fetch.FetchOptions.from_env({var: value})


def test_oversized_document_is_refused(http_server):
    """A contents document larger than the limit is refused, not read into memory."""
    with open(os.path.join(http_server.state.root, "big.asc"), "wb") as f:
        f.write(b"x" * 2048)
    opts = fetch.FetchOptions(max_document=1024)
    with pytest.raises(RemoteError, match="larger than 1024 bytes"):
        fetch.fetch_document(f"{http_server.url}/big.asc", opts)


def test_redirect_to_http_is_followed(http_server, tmp_path):
    """A 302 to another http URL (a CDN, a mirror) is followed and still verified."""
    (name, digest), = serve_blobs(http_server, 1)
    http_server.state.fault("/moved.tgz", Fault(redirect=f"{http_server.url}/{name}"))
    job = fetch.Download("img0:1", f"{http_server.url}/moved.tgz", str(tmp_path), name, digest)
    outcome, = fetch.download_all([job], fetch.FetchOptions(), fetch.Progress(io.StringIO()))
    assert outcome.error is None
    assert os.path.isfile(job.path)


@pytest.mark.parametrize("target", ["ftp://127.0.0.1:1/x.tgz", "file:///etc/passwd"])
def test_redirect_to_other_schemes_is_refused(http_server, tmp_path, target):
    """A redirect may not lead to ftp or file URLs; nothing is written."""
    dest = tmp_path / "store"
    dest.mkdir()
    http_server.state.fault("/x.tgz", Fault(redirect=target))
    job = fetch.Download("x:1", f"{http_server.url}/x.tgz", str(dest), "x:1.torcx.tgz",
                         "0" * 128)
    outcome, = fetch.download_all([job], fetch.FetchOptions(attempts=1),
                                  fetch.Progress(io.StringIO()))
    assert outcome.error is not None
    assert os.listdir(dest) == []


def test_malformed_url_is_a_remote_error():
    """A URL that urllib cannot parse is a RemoteError naming it, not a ValueError."""
    with pytest.raises(RemoteError, match=r"http://\[::1/x: not a valid URL"):
        fetch.fetch_document("http://[::1/x", fetch.FetchOptions(attempts=1))
