# SPDX-License-Identifier: Apache-2.0
"""The remote commands through the real command line: populate, check, list, contents."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time

from remotekit import Fault, publish

from torcx import schemas
from torcx.cli import main


def torcx(fake_root, *argv, environ=None):
    """Run ``torcx --root ROOT ARGV...``; returns (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    rc = main(["--root", fake_root.path, *argv], prog="torcx", environ=environ or {},
              stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


def test_populate_command_fetches_named_profile(fake_root, http_server):
    """`torcx profile populate --name P` lands the profile's missing image, then nothing."""
    archives = publish(http_server.state.root, [("docker", "20.10")], fake_root.keys)
    fake_root.add_remote("main", http_server.url)
    fake_root.add_profile("fleet", [("docker", "20.10", "main")])
    rc, _, err = torcx(fake_root, "profile", "populate", "--name", "fleet")
    assert rc == 0, err
    with open(os.path.join(fake_root.store, "docker:20.10.torcx.tgz"), "rb") as f:
        assert f.read() == archives["docker:20.10"]
    requests = http_server.state.total
    rc, _, err = torcx(fake_root, "profile", "populate", "--name", "fleet")
    assert rc == 0 and "nothing to fetch" in err
    assert http_server.state.total == requests


def test_check_remote_only_passes_when_offered(fake_root, http_server):
    """`profile check --remote-only` succeeds when the signed contents offer every image."""
    publish(http_server.state.root, [("docker", "20.10")], fake_root.keys)
    fake_root.add_remote("main", http_server.url)
    fake_root.add_profile("fleet", [("docker", "20.10", "main")])
    rc, _, err = torcx(fake_root, "profile", "check", "--remote-only", "--name", "fleet")
    assert rc == 0, err
    assert http_server.state.requests["/docker:20.10.torcx.tgz"] == 0  # contents only
    assert fake_root.store_files() == []


def test_check_remote_only_names_the_missing_version(fake_root, http_server):
    """`profile check --remote-only` fails naming an image the remote does not offer."""
    publish(http_server.state.root, [("docker", "20.10")], fake_root.keys)
    fake_root.add_remote("main", http_server.url)
    fake_root.add_profile("fleet", [("docker", "24.0", "main")])
    rc, _, err = torcx(fake_root, "profile", "check", "--remote-only", "--name", "fleet")
    assert rc == 1
    assert "docker:24.0: remote main does not offer docker:24.0" in err


def test_remote_list_json_prefers_confdir_over_usr(fake_root, gpg_keys):
    """`remote list --json` shows the CONFDIR copy of a remote that USR also ships."""
    fake_root.add_remote("main", "https://vendor.example/${ID}/", where="usr/share/torcx/remotes")
    fake_root.add_remote("main", "https://mirror.example/${VERSION_ID}/")
    fake_root.add_remote("extra", "file:///srv/extra", signer="stranger",
                         where="usr/share/oem/torcx/remotes")
    rc, out, err = torcx(fake_root, "remote", "list", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["kind"] == "torcx-remote-list-v0"
    by_name = {e["name"]: e for e in doc["value"]}
    assert by_name["main"]["path"] == "/etc/torcx/remotes/main"
    assert by_name["main"]["url"] == "https://mirror.example/3510.2.0/"
    assert by_name["main"]["keys"][0]["fingerprints"] == [gpg_keys.fingerprints["trusted"]]
    assert by_name["extra"]["path"] == "/usr/share/oem/torcx/remotes/extra"
    assert by_name["extra"]["keys"][0]["fingerprints"] == [gpg_keys.fingerprints["stranger"]]


def test_remote_contents_writes_unsigned_manifest(tmp_path, fake_root):
    """`remote contents DIR` lists each archive with its sha512 and relative location."""
    data = b"not really a tarball, only bytes to hash"
    (tmp_path / "docker:20.10.torcx.tgz").write_bytes(data)
    (tmp_path / "notes.txt").write_text("ignored\n")
    rc, out, err = torcx(fake_root, "remote", "contents", str(tmp_path))
    assert rc == 0, err
    path = tmp_path / "torcx_remote_contents.json"
    assert out.strip() == str(path)
    assert "gpg --clearsign" in err
    contents = schemas.parse_remote_contents(json.loads(path.read_text()), str(path))
    version = contents.find("docker", "20.10")
    assert version.sha512 == hashlib.sha512(data).hexdigest()
    assert version.format == "tgz"
    assert version.location == "docker%3A20.10.torcx.tgz"


def interrupt_populate(fake_root, sig=signal.SIGINT, **env_vars) -> tuple[int, str]:
    """Run ``profile populate --name fleet``, send ``sig`` once a download is streaming."""
    env = {**os.environ, **env_vars}
    proc = subprocess.Popen(
        [sys.executable, "-m", "torcx", "--root", fake_root.path, "profile", "populate",
         "--name", "fleet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # Wait (bounded) until a download has begun writing its temporary file.
        for _ in range(200):
            if any(f.endswith(".part") for f in fake_root.store_files()) or proc.poll() is not None:
                break
            time.sleep(0.025)
        assert any(f.endswith(".part") for f in fake_root.store_files())
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err.decode()


def test_interrupted_download_leaves_nothing(fake_root, http_server):
    """Ctrl-C while an archive is streaming exits 130 and removes the temporary file."""
    publish(http_server.state.root, [("docker", "20.10")], fake_root.keys)
    http_server.state.fault("/docker:20.10.torcx.tgz", Fault(stall=True), Fault(stall=True))
    fake_root.add_remote("main", http_server.url)
    fake_root.add_profile("fleet", [("docker", "20.10", "main")])
    rc, err = interrupt_populate(fake_root, TORCX_FETCH_READ_TIMEOUT="1", TORCX_FETCH_ATTEMPTS="2")
    assert rc == 130, err
    assert fake_root.store_files() == []


def test_terminated_download_leaves_nothing(fake_root, http_server):
    """SIGTERM while an archive is streaming exits 143 and removes the temporary file."""
    publish(http_server.state.root, [("docker", "20.10")], fake_root.keys)
    http_server.state.fault("/docker:20.10.torcx.tgz", Fault(stall=True), Fault(stall=True))
    fake_root.add_remote("main", http_server.url)
    fake_root.add_profile("fleet", [("docker", "20.10", "main")])
    rc, err = interrupt_populate(fake_root, signal.SIGTERM, TORCX_FETCH_READ_TIMEOUT="1",
                                 TORCX_FETCH_ATTEMPTS="2")
    assert rc == 143, err
    assert "terminated" in err
    assert fake_root.store_files() == []


def test_interrupt_starts_no_queued_download(fake_root, http_server):
    """Ctrl-C during the first of two downloads (one at a time): the second is never requested."""
    publish(http_server.state.root, [("docker", "20.10"), ("kubelet", "1.30")], fake_root.keys)
    http_server.state.fault("/docker:20.10.torcx.tgz", Fault(stall=True))
    fake_root.add_remote("main", http_server.url)
    fake_root.add_profile("fleet", [("docker", "20.10", "main"), ("kubelet", "1.30", "main")])
    rc, err = interrupt_populate(fake_root, TORCX_FETCH_JOBS="1", TORCX_FETCH_READ_TIMEOUT="1")
    assert rc == 130, err
    assert http_server.state.requests["/kubelet:1.30.torcx.tgz"] == 0
    assert fake_root.store_files() == []
