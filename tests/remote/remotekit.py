# SPDX-License-Identifier: Apache-2.0
"""Real things for remote tests: OpenPGP keys made with gpg, HTTP(S) servers on
127.0.0.1 with scripted faults, archives, signed contents and a fake root."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import ssl
import tarfile
import threading
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field

from torcx_testing import GpgKeys

OS_VERSION = "3510.2.0"
OS_RELEASE = (f'NAME="Flatcar Container Linux"\nID=flatcar\nVERSION_ID="{OS_VERSION}"\n'
              "COREOS_BOARD=amd64-usr\n")

# ------------------------------------------------------------------ HTTP servers

@dataclass
class Fault:
    """What the server does for one request to a path, instead of serving the file."""

    status: int = 0          # send this status with an empty body
    truncate: bool = False   # announce the full length, send half, close
    stall: bool = False      # send headers and a few bytes, then go silent
    redirect: str = ""       # answer 302 with this Location
    bad_chunk: bool = False  # a chunked body whose chunk-size line is far too long
    chunked: bool = False    # the file as a chunked body: no Content-Length announced


@dataclass
class ServerState:
    root: str
    requests: Counter = field(default_factory=Counter)
    faults: dict = field(default_factory=dict)  # url path -> list[Fault], consumed in order
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Archive requests wait here in groups (set to a Barrier to observe parallelism).
    barrier: threading.Barrier | None = None
    inflight: int = 0
    max_inflight: int = 0

    def enter(self) -> None:
        with self.lock:
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)

    def leave(self) -> None:
        with self.lock:
            self.inflight -= 1

    def fault(self, path: str, *faults: Fault) -> None:
        self.faults.setdefault(path, []).extend(faults)

    def next_fault(self, path: str) -> Fault | None:
        with self.lock:
            self.requests[path] += 1
            queue = self.faults.get(path)
            return queue.pop(0) if queue else None

    @property
    def total(self) -> int:
        return sum(self.requests.values())


def _handler(state: ServerState):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output clean
            pass

        def do_GET(self):
            path = urllib.parse.unquote(self.path.split("?", 1)[0])
            fault = state.next_fault(path)
            if fault and fault.redirect:
                self.send_response(302)
                self.send_header("Location", fault.redirect)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if fault and fault.bad_chunk:
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b"1" * 70000 + b"\r\n")
                self.close_connection = True
                return
            if fault and fault.status:
                self.send_response(fault.status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            local = os.path.realpath(os.path.join(state.root, path.lstrip("/")))
            if not local.startswith(state.root + os.sep) or not os.path.isfile(local):
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            with open(local, "rb") as f:
                body = f.read()
            if state.barrier is not None and path.endswith(".tgz"):
                state.enter()
                try:
                    state.barrier.wait(10)  # parties arrive together or the test fails
                finally:
                    state.leave()
            self.send_response(200)
            if fault and fault.chunked:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for start in range(0, len(body), 64):
                    part = body[start:start + 64]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.write(b"0\r\n\r\n")
                return
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if fault and fault.truncate:
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            if fault and fault.stall:
                self.wfile.write(body[:16])
                self.wfile.flush()
                state.release.wait(30)  # released at teardown
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


@dataclass
class RunningServer:
    url: str
    state: ServerState


def serve(root: str, context: ssl.SSLContext | None = None, host: str = "127.0.0.1"):
    state = ServerState(root=os.path.realpath(root))
    server = _Server((host, 0), _handler(state))
    scheme = "http"
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    running = RunningServer(f"{scheme}://{host}:{server.server_address[1]}", state)
    try:
        yield running
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)








# ------------------------------------------------------------------ archives and remotes

def make_archive(name: str, version: str) -> bytes:
    """A small real gzip tarball with one file naming its image."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        payload = f"{name} {version}\n".encode() * 2000
        info = tarfile.TarInfo(f"bin/{name}")
        info.size = len(payload)
        info.mode = 0o755
        tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def contents_doc(entries: list[dict]) -> bytes:
    """torcx-remote-contents-v1 JSON for entries {name, version, location, sha512, format}."""
    images: dict[str, list] = {}
    for e in entries:
        images.setdefault(e["name"], []).append({
            "version": e["version"],
            "format": e.get("format", "tgz"),
            "hash": "sha512-" + e["sha512"],
            "location": e["location"],
        })
    doc = {"kind": "torcx-remote-contents-v1",
           "value": {"images": [{"name": n, "versions": v} for n, v in images.items()]}}
    return json.dumps(doc, indent=2).encode() + b"\n"


def publish(folder: str, images: list[tuple[str, str]], keys: GpgKeys, *,
            signer: str = "trusted") -> dict[str, bytes]:
    """Write archives and a clear-signed contents file into folder; returns the archives."""
    os.makedirs(folder, exist_ok=True)
    archives, entries = {}, []
    for name, version in images:
        data = make_archive(name, version)
        filename = f"{name}:{version}.torcx.tgz"
        with open(os.path.join(folder, filename), "wb") as f:
            f.write(data)
        archives[f"{name}:{version}"] = data
        entries.append({"name": name, "version": version, "location": filename,
                        "sha512": hashlib.sha512(data).hexdigest()})
    write_contents(folder, contents_doc(entries), keys, signer=signer)
    return archives


def write_contents(folder: str, doc: bytes, keys: GpgKeys | None, *,
                   signer: str = "trusted") -> None:
    signed = keys.clearsign(doc, signer) if keys is not None else doc
    with open(os.path.join(folder, "torcx_remote_contents.json.asc"), "wb") as f:
        f.write(signed)


class FakeRoot:
    """A --root tree: os-release, remotes under CONFDIR, a profile, an empty user store."""

    def __init__(self, path: str, keys: GpgKeys):
        if os.path.realpath(path) == "/":
            raise RuntimeError("refusing to run a test against the real root /")
        self.path = path
        self.keys = keys
        self.write("usr/lib/os-release", OS_RELEASE.encode())

    def write(self, rel: str, data: bytes) -> str:
        full = os.path.join(self.path, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
        return full

    def add_remote(self, name: str, base_url: str, *, signer: str = "trusted",
                   where: str = "etc/torcx/remotes") -> str:
        self.write(f"{where}/{name}/keys/{signer}.asc", self.keys.armored(signer))
        doc = {"kind": "remote-manifest-v0",
               "value": {"base_url": base_url,
                         "keys": [{"armored_keyring": f"keys/{signer}.asc"}]}}
        return self.write(f"{where}/{name}/remote.json", json.dumps(doc).encode())

    def add_profile(self, name: str, images: list[tuple[str, str, str | None]]) -> str:
        entries = []
        for image, ref, remote in images:
            entry = {"name": image, "reference": ref}
            if remote:
                entry["remote"] = remote
            entries.append(entry)
        doc = {"kind": "profile-manifest-v1", "value": {"images": entries}}
        return self.write(f"etc/torcx/profiles/{name}.json", json.dumps(doc).encode())

    @property
    def store(self) -> str:
        return os.path.join(self.path, "var/lib/torcx/store", OS_VERSION)

    def store_files(self) -> list[str]:
        """Everything in the versioned user store, hidden temp files included."""
        return sorted(os.listdir(self.store)) if os.path.isdir(self.store) else []




