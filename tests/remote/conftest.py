# SPDX-License-Identifier: Apache-2.0
"""Fixtures for remote tests: gpg keys, HTTP and HTTPS servers, a fake root."""

from __future__ import annotations

import shutil
import ssl
import subprocess

import pytest
from remotekit import FakeRoot, serve


@pytest.fixture(autouse=True)
def no_proxy_for_loopback(monkeypatch):
    """Test servers listen on 127.0.0.1: never send their requests to a proxy."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def http_server(tmp_path):
    root = tmp_path / "srv-http"
    root.mkdir()
    yield from serve(str(root))


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1, made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return str(cert), str(key)


@pytest.fixture
def https_server(tmp_path, tls_cert):
    root = tmp_path / "srv-https"
    root.mkdir()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_cert)
    yield from serve(str(root), context)


@pytest.fixture
def fake_root(tmp_path, gpg_keys) -> FakeRoot:
    return FakeRoot(str(tmp_path / "root"), gpg_keys)


@pytest.fixture
def fast_fetch(monkeypatch):
    """Short timeouts and pauses so fault scenarios finish in about a second."""
    monkeypatch.setenv("TORCX_FETCH_CONNECT_TIMEOUT", "2")
    monkeypatch.setenv("TORCX_FETCH_READ_TIMEOUT", "0.4")
    monkeypatch.setenv("TORCX_FETCH_ATTEMPTS", "2")
    monkeypatch.setenv("TORCX_FETCH_BACKOFF", "0.05")
