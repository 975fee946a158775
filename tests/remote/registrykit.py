# SPDX-License-Identifier: Apache-2.0
"""Real OCI registries for tests: Debian's docker-registry (CNCF distribution) started on
127.0.0.1 with a config made here (anonymous, htpasswd over TLS, or bearer tokens from
the small token server below, signed with a key made in the test)."""

from __future__ import annotations

import base64
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field

REGISTRY = shutil.which("docker-registry")
_LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")
_ACCESS = re.compile(r'"([A-Z]+) (\S+) HTTP/[0-9.]+" (\d{3})')


class Registry:
    """One docker-registry process; its access log counts the requests it answered."""

    def __init__(self, workdir: str, *, tls: tuple[str, str] | None = None,
                 auth: dict | None = None):
        os.makedirs(workdir, exist_ok=True)
        self.workdir = workdir
        self.storage = os.path.join(workdir, "storage")
        http_conf: dict = {"addr": "127.0.0.1:0", "secret": "torcx-test"}
        if tls:
            http_conf["tls"] = {"certificate": tls[0], "key": tls[1]}
        config = {"version": "0.1",
                  "log": {"level": "info", "accesslog": {"disabled": False}},
                  "storage": {"filesystem": {"rootdirectory": self.storage},
                              "delete": {"enabled": True}},
                  "http": http_conf}
        if auth:
            config["auth"] = auth
        path = os.path.join(workdir, "config.yml")  # JSON is YAML
        with open(path, "w") as f:
            json.dump(config, f)
        self.access_log = os.path.join(workdir, "access.log")
        self.error_log = os.path.join(workdir, "registry.log")
        with open(self.access_log, "wb") as out, open(self.error_log, "wb") as err:
            self.proc = subprocess.Popen([REGISTRY, "serve", path], stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        port = None
        while port is None:
            with open(self.error_log, "rb") as f:
                m = _LISTENING.search(f.read())
            if m:
                port = int(m.group(1))
            elif self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                with open(self.error_log, "rb") as f:
                    raise RuntimeError(f"docker-registry did not start: {f.read()[-2000:]!r}")
            else:
                time.sleep(0.02)
        self.host = f"127.0.0.1:{port}"
        self.prefix = "oci://" if tls else "oci+http://"

    def url(self, path: str) -> str:
        return f"{self.prefix}{self.host}/{path}"

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request answered so far."""
        with open(self.access_log, encoding="utf-8", errors="replace") as f:
            return [(m.group(1), m.group(2), int(m.group(3)))
                    for m in map(_ACCESS.search, f) if m]

    def settle(self) -> list[tuple[str, str, int]]:
        """requests(), once the log has stopped growing (lines follow the responses)."""
        last = None
        while True:
            now = self.requests()
            if now == last:
                return now
            last = now
            time.sleep(0.05)

    def blob_data(self, digest: str) -> str:
        hexd = digest.split(":", 1)[1]
        return os.path.join(self.storage, "docker/registry/v2/blobs/sha256", hexd[:2], hexd,
                            "data")

    def stall(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def htpasswd_file(path: str, user: str, password: str) -> str:
    """A bcrypt htpasswd file (apache2-utils' htpasswd), as distribution requires."""
    out = subprocess.run(["htpasswd", "-Bbn", user, password], check=True,
                         capture_output=True).stdout
    with open(path, "wb") as f:
        f.write(out)
    return path


def auth_file(path: str, host: str, user: str, password: str) -> str:
    """A docker-style config.json with basic credentials for host."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    with open(path, "w") as f:
        json.dump({"auths": {host: {"auth": token}}}, f)
    return path


# ------------------------------------------------------------------ a token server

def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenServer:
    """Docker token authentication (distribution's ``auth: token``): anonymous pull for
    everybody, push for ``users`` (basic credentials); JWTs signed RS256 by ``key``."""

    cert: str
    key: str
    users: dict
    service: str = "torcx-test"
    issuer: str = "torcx-test-issuer"
    issued: list = field(default_factory=list)
    refused: int = 0
    stalled: threading.Event = field(default_factory=threading.Event)  # answer nothing
    released: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        with open(self.cert, "rb") as f:
            pem = f.read().decode()
        der = base64.b64decode("".join(
            line for line in pem.splitlines() if line and "-----" not in line))
        self._x5c = base64.b64encode(der).decode()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if server.stalled.is_set():
                    server.released.wait(30)
                    return
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                user = server._user(self.headers.get("Authorization", ""))
                if user is False:
                    server.refused += 1
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps({"token": server.token(user, query.get("scope", []))})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self.realm = f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def stop(self) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def registry_auth(self) -> dict:
        return {"token": {"realm": self.realm, "service": self.service,
                          "issuer": self.issuer, "rootcertbundle": self.cert}}

    def _user(self, header: str):
        """'' for anonymous, the user name, or False for wrong credentials."""
        if not header:
            return ""
        if not header.startswith("Basic "):
            return False
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user if self.users.get(user) == password else False

    def token(self, user: str, scopes: list) -> str:
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")[0], scope.split(":")[1], scope.split(":")[2]
            granted = [a for a in actions.split(",") if a == "pull" or user]
            access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": user, "aud": self.service, "exp": now + 600,
                  "nbf": now - 60, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        signing_input = (_b64url(json.dumps(header).encode()) + "."
                         + _b64url(json.dumps(claims).encode()))
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key],
                                   input=signing_input.encode(), capture_output=True,
                                   check=True).stdout
        self.issued.append((user, [a["name"] + ":" + ",".join(a["actions"]) for a in access]))
        return signing_input + "." + _b64url(signature)
