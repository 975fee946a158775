# SPDX-License-Identifier: Apache-2.0
"""populate against real HTTP(S) servers on 127.0.0.1 with keys made in the test.

Every failure scenario checks the same promise: a non-zero result naming the
image and the reason, and nothing at all in the store (no temp file either).
"""

from __future__ import annotations

import hashlib
import io
import os

import pytest
from remotekit import OS_VERSION, Fault, contents_doc, make_archive, publish, write_contents

from torcx import paths as torcx_paths
from torcx.errors import RemoteError
from torcx.log import Logger
from torcx.remote import config as remote_config
from torcx.remote import contents as remote_contents
from torcx.remote import populate as remote_populate
from torcx.schemas import ImageRef

SIGNED = "torcx_remote_contents.json.asc"  # kept next to the archives


def run_populate(fake_root, images, os_version=None):
    """populate() for ``images`` under the fake root; returns (rc, log text)."""
    paths = torcx_paths.load(fake_root.path, environ={}, os_version=os_version)
    stream = io.StringIO()
    rc = remote_populate.populate(paths, images, log=Logger(stream=stream))
    return rc, stream.getvalue()


def one_image_remote(fake_root, server, name="docker", version="20.10"):
    """Publish one image on ``server`` as remote 'main'; returns its archive bytes."""
    archives = publish(server.state.root, [(name, version)], fake_root.keys)
    fake_root.add_remote("main", server.url + "/")
    return archives[f"{name}:{version}"]


DOCKER = [ImageRef("docker", "20.10", "main")]


def test_two_remotes_land_verified_archives_and_second_run_fetches_nothing(
        fake_root, http_server, https_server, tls_cert, monkeypatch):
    """A profile spanning an http and an https remote lands both archives, once."""
    monkeypatch.setenv("TORCX_CA_FILE", tls_cert[0])
    alpha = publish(http_server.state.root, [("docker", "20.10"), ("docker", "19.03")],
                    fake_root.keys)
    beta = publish(https_server.state.root, [("containerd", "1.7")], fake_root.keys)
    fake_root.add_remote("alpha", http_server.url + "/")
    fake_root.add_remote("beta", https_server.url)
    images = [ImageRef("docker", "20.10", "alpha"), ImageRef("containerd", "1.7", "beta"),
              ImageRef("local-only", "1", None)]

    rc, err = run_populate(fake_root, images)
    assert rc == 0, err
    assert fake_root.store_files() == ["containerd:1.7.torcx.tgz", "docker:20.10.torcx.tgz"]
    with open(os.path.join(fake_root.store, "docker:20.10.torcx.tgz"), "rb") as f:
        assert f.read() == alpha["docker:20.10"]
    with open(os.path.join(fake_root.store, "containerd:1.7.torcx.tgz"), "rb") as f:
        assert f.read() == beta["containerd:1.7"]
    assert "local-only:1: in no store and has no remote, skipping" in err
    assert http_server.state.requests["/docker:20.10.torcx.tgz"] == 1
    assert http_server.state.requests["/docker:19.03.torcx.tgz"] == 0

    before = (http_server.state.total, https_server.state.total)
    rc, err = run_populate(fake_root, images)
    assert rc == 0, err
    assert (http_server.state.total, https_server.state.total) == before
    assert "nothing to fetch" in err


def test_tampered_contents_fail_cleanly(fake_root, http_server):
    """A contents file changed after signing is refused and nothing is downloaded."""
    one_image_remote(fake_root, http_server)
    asc = os.path.join(http_server.state.root, "torcx_remote_contents.json.asc")
    with open(asc, "rb") as f:
        signed = f.read()
    with open(asc, "wb") as f:
        f.write(signed.replace(b'"tgz"', b'"tar"'))
    rc, err = run_populate(fake_root, DOCKER)
    assert rc == 1
    assert "docker:20.10: remote main:" in err and "bad signature" in err
    assert fake_root.keys.fingerprints["trusted"] in err
    assert http_server.state.requests["/docker:20.10.torcx.tgz"] == 0
    assert fake_root.store_files() == []


def test_signature_by_unknown_key_fails_cleanly(fake_root, http_server):
    """Contents signed by a key the remote does not list are refused."""
    publish(http_server.state.root, [("docker", "20.10")], fake_root.keys, signer="stranger")
    fake_root.add_remote("main", http_server.url)
    rc, err = run_populate(fake_root, DOCKER)
    assert rc == 1
    assert "unknown key" in err and fake_root.keys.fingerprints["trusted"] in err
    assert fake_root.store_files() == []


def test_unsigned_contents_fail_cleanly(fake_root, http_server):
    """Plain JSON served as the .asc file is refused."""
    data = make_archive("docker", "20.10")
    with open(os.path.join(http_server.state.root, "docker:20.10.torcx.tgz"), "wb") as f:
        f.write(data)
    doc = contents_doc([{"name": "docker", "version": "20.10",
                         "location": "docker:20.10.torcx.tgz",
                         "sha512": hashlib.sha512(data).hexdigest()}])
    write_contents(http_server.state.root, doc, None)
    fake_root.add_remote("main", http_server.url)
    rc, err = run_populate(fake_root, DOCKER)
    assert rc == 1
    assert "not signed" in err
    assert fake_root.store_files() == []


def test_sha512_mismatch_fails_cleanly(fake_root, http_server):
    """An archive whose bytes differ from the signed sha512 never enters the store."""
    one_image_remote(fake_root, http_server)
    with open(os.path.join(http_server.state.root, "docker:20.10.torcx.tgz"), "wb") as f:
        f.write(make_archive("docker", "evil"))
    rc, err = run_populate(fake_root, DOCKER)
    assert rc == 1
    assert "docker:20.10" in err and "sha512 mismatch" in err
    assert http_server.state.requests["/docker:20.10.torcx.tgz"] == 1  # final, not retried
    assert fake_root.store_files() == []


def test_truncated_download_fails_cleanly(fake_root, http_server, fast_fetch):
    """A body cut short of its Content-Length fails after the bounded retries."""
    one_image_remote(fake_root, http_server)
    http_server.state.fault("/docker:20.10.torcx.tgz", Fault(truncate=True),
                            Fault(truncate=True))
    rc, err = run_populate(fake_root, DOCKER)
    assert rc == 1
    assert "docker:20.10" in err and "truncated" in err and "after 2 attempts" in err
    assert fake_root.store_files() == []


def test_missing_archive_404_fails_cleanly(fake_root, http_server, fast_fetch):
    """A 404 for the archive is final: one request, an error, an empty store."""
    one_image_remote(fake_root, http_server)
    os.unlink(os.path.join(http_server.state.root, "docker:20.10.torcx.tgz"))
    rc, err = run_populate(fake_root, DOCKER)
    assert rc == 1
    assert "docker:20.10" in err and "HTTP 404" in err
    assert http_server.state.requests["/docker:20.10.torcx.tgz"] == 1
    assert fake_root.store_files() == []


def test_server_error_then_success_is_retried(fake_root, http_server, fast_fetch):
    """A 500 followed by a good answer lands the verified archive on the second try."""
    data = one_image_remote(fake_root, http_server)
    http_server.state.fault("/docker:20.10.torcx.tgz", Fault(status=500))
    rc, err = run_populate(fake_root, DOCKER)
    assert rc == 0, err
    assert "HTTP 500" in err and "retrying" in err
    assert http_server.state.requests["/docker:20.10.torcx.tgz"] == 2
    assert fake_root.store_files() == ["docker:20.10.torcx.tgz", SIGNED]
    with open(os.path.join(fake_root.store, "docker:20.10.torcx.tgz"), "rb") as f:
        assert f.read() == data


def test_stalled_server_times_out_cleanly(fake_root, http_server, fast_fetch):
    """A server that goes silent mid-body hits the read timeout on every attempt."""
    one_image_remote(fake_root, http_server)
    http_server.state.fault("/docker:20.10.torcx.tgz", Fault(stall=True), Fault(stall=True))
    rc, err = run_populate(fake_root, DOCKER)
    assert rc == 1
    assert "docker:20.10" in err and "timed out" in err
    assert fake_root.store_files() == []


def test_malformed_chunked_body_fails_cleanly(fake_root, http_server, fast_fetch):
    """A chunked body with an overlong chunk-size line fails the image, not the whole run."""
    one_image_remote(fake_root, http_server)
    http_server.state.fault("/docker:20.10.torcx.tgz", Fault(bad_chunk=True),
                            Fault(bad_chunk=True))
    rc, err = run_populate(fake_root, DOCKER)
    assert rc == 1
    assert "docker:20.10" in err and "bad HTTP response" in err
    assert fake_root.store_files() == []


def test_archive_at_the_size_cap_streams_in(fake_root, http_server, monkeypatch):
    """A chunked body (no Content-Length) of exactly TORCX_FETCH_MAX_BYTES lands verified."""
    data = one_image_remote(fake_root, http_server)
    monkeypatch.setenv("TORCX_FETCH_MAX_BYTES", str(len(data)))
    http_server.state.fault("/docker:20.10.torcx.tgz", Fault(chunked=True))
    rc, err = run_populate(fake_root, DOCKER)
    assert rc == 0, err
    with open(os.path.join(fake_root.store, "docker:20.10.torcx.tgz"), "rb") as f:
        assert f.read() == data


def test_archive_over_the_size_cap_is_stopped_while_streaming(fake_root, http_server,
                                                              monkeypatch):
    """A chunked body past TORCX_FETCH_MAX_BYTES fails the image for good, no temp file left."""
    data = one_image_remote(fake_root, http_server)
    limit = len(data) - 1
    monkeypatch.setenv("TORCX_FETCH_MAX_BYTES", str(limit))
    http_server.state.fault("/docker:20.10.torcx.tgz", Fault(chunked=True))
    rc, err = run_populate(fake_root, DOCKER)
    assert rc == 1
    assert "docker:20.10" in err
    assert f"larger than TORCX_FETCH_MAX_BYTES ({limit} bytes): stopped after" in err
    assert http_server.state.requests["/docker:20.10.torcx.tgz"] == 1  # final, not retried
    assert fake_root.store_files() == []


def test_announced_length_over_the_size_cap_is_refused_before_reading(
        fake_root, http_server, fast_fetch, monkeypatch):
    """A Content-Length over TORCX_FETCH_MAX_BYTES fails at once, without reading the body."""
    data = one_image_remote(fake_root, http_server)
    limit = len(data) - 1
    monkeypatch.setenv("TORCX_FETCH_MAX_BYTES", str(limit))
    # The server goes silent after the headers: reading the body would time out instead.
    http_server.state.fault("/docker:20.10.torcx.tgz", Fault(stall=True))
    rc, err = run_populate(fake_root, DOCKER)
    assert rc == 1
    assert "docker:20.10" in err
    assert (f"larger than TORCX_FETCH_MAX_BYTES ({limit} bytes): {len(data)} bytes announced, "
            "nothing read") in err
    assert "timed out" not in err
    assert http_server.state.requests["/docker:20.10.torcx.tgz"] == 1
    assert fake_root.store_files() == []


def test_missing_ca_file_is_named(fake_root, https_server, monkeypatch):
    """A TORCX_CA_FILE that cannot be read is named in the error, not a vague ENOENT."""
    one_image_remote(fake_root, https_server)
    monkeypatch.setenv("TORCX_CA_FILE", "/nonexistent/ca.pem")
    rc, err = run_populate(fake_root, DOCKER)
    assert rc == 1
    assert "TORCX_CA_FILE /nonexistent/ca.pem" in err
    assert fake_root.store_files() == []


def signed_location(fake_root, server, location):
    """Remote 'main' on ``server`` offering docker:20.10 at ``location``, signed."""
    data = make_archive("docker", "20.10")
    doc = contents_doc([{"name": "docker", "version": "20.10", "location": location,
                         "sha512": hashlib.sha512(data).hexdigest()}])
    write_contents(server.state.root, doc, fake_root.keys)
    fake_root.add_remote("main", server.url)


def test_location_escaping_the_remote_is_refused(fake_root, http_server):
    """A signed location with '../' is refused before any archive request."""
    signed_location(fake_root, http_server, "../docker:20.10.torcx.tgz")
    rc, err = run_populate(fake_root, DOCKER)
    assert rc == 1
    assert "docker:20.10" in err and "'..'" in err
    assert http_server.state.total == 1  # the contents file only
    assert fake_root.store_files() == []


def test_malformed_absolute_location_fails_cleanly(fake_root, http_server):
    """A signed location that is no valid URL (an unclosed IPv6 host) fails the image cleanly."""
    signed_location(fake_root, http_server, "http://[::1/docker:20.10.torcx.tgz")
    rc, err = run_populate(fake_root, DOCKER)
    assert rc == 1
    assert "docker:20.10" in err and "not a valid URL" in err
    assert fake_root.store_files() == []


def test_malformed_base_url_names_the_remote_manifest(fake_root):
    """A base_url that is no valid URL fails the image, naming the remote's remote.json."""
    manifest = fake_root.add_remote("main", "http://[::1/torcx/")
    rc, err = run_populate(fake_root, DOCKER)
    assert rc == 1
    assert "docker:20.10" in err and "not a valid URL" in err
    assert manifest.split(fake_root.path, 1)[1] in err


@pytest.mark.parametrize("name,reference", [("docker", "../../etc/x"), ("a/b", "1"),
                                            ("docker", "..")])
def test_name_or_reference_that_is_a_path_is_refused_before_any_request(
        fake_root, http_server, name, reference):
    """A profile entry that cannot be a store file name fails naming it; nothing is fetched."""
    one_image_remote(fake_root, http_server)
    rc, err = run_populate(fake_root, [ImageRef(name, reference, "main")])
    assert rc == 1
    assert f"{reference!r} cannot be part of a store file name" in err or \
        f"{name!r} cannot be part of a store file name" in err
    assert http_server.state.total == 0
    assert fake_root.store_files() == []


def test_version_missing_from_contents_is_an_error(fake_root, http_server):
    """A reference the remote does not offer is named in the error."""
    one_image_remote(fake_root, http_server)
    rc, err = run_populate(fake_root, [ImageRef("docker", "99.0", "main")])
    assert rc == 1
    assert "remote main does not offer docker:99.0" in err
    assert fake_root.store_files() == []


def test_unknown_remote_is_an_error(fake_root):
    """An image naming a remote that is not configured fails, naming both."""
    rc, err = run_populate(fake_root, [ImageRef("docker", "20.10", "nowhere")])
    assert rc == 1
    assert "docker:20.10" in err and "remote 'nowhere' not found" in err


def test_file_remote_under_root(fake_root, gpg_keys):
    """A file:// remote names a path on the target system, read below --root."""
    mirror = os.path.join(fake_root.path, "srv/mirror")
    archives = publish(mirror, [("docker", "20.10")], gpg_keys)
    fake_root.add_remote("main", "file:///srv/mirror")
    rc, err = run_populate(fake_root, DOCKER)
    assert rc == 0, err
    with open(os.path.join(fake_root.store, "docker:20.10.torcx.tgz"), "rb") as f:
        assert f.read() == archives["docker:20.10"]


def test_file_remote_location_with_encoded_nul_fails_cleanly(fake_root, gpg_keys):
    """A file:// remote whose signed location decodes to a NUL byte fails the image cleanly."""
    mirror = os.path.join(fake_root.path, "srv/mirror")
    os.makedirs(mirror)
    data = make_archive("docker", "20.10")
    doc = contents_doc([{"name": "docker", "version": "20.10", "location": "docker%00.tgz",
                         "sha512": hashlib.sha512(data).hexdigest()}])
    write_contents(mirror, doc, gpg_keys)
    fake_root.add_remote("main", "file:///srv/mirror")
    rc, err = run_populate(fake_root, DOCKER)
    assert rc == 1
    assert "docker:20.10" in err and "control character" in err
    assert fake_root.store_files() == []


def test_file_remote_climbing_out_of_the_root_is_refused(fake_root, gpg_keys, tmp_path):
    """A file:// base_url with '..' would be read outside --root: refused, naming remote.json."""
    publish(str(tmp_path / "outside"), [("docker", "20.10")], gpg_keys)
    fake_root.add_remote("main", "file:///../outside")
    rc, err = run_populate(fake_root, DOCKER)
    assert rc == 1
    assert "remote.json" in err and "'..'" in err
    assert fake_root.store_files() == []


def test_https_without_trusted_ca_fails_cleanly(fake_root, https_server):
    """A self-signed server is refused unless TORCX_CA_FILE trusts it."""
    one_image_remote(fake_root, https_server)
    rc, err = run_populate(fake_root, DOCKER)
    assert rc == 1
    assert "certificate verify failed" in err.lower() or "certificate" in err.lower()
    assert fake_root.store_files() == []


def test_base_url_template_uses_os_release(fake_root, http_server):
    """${ID}, ${VERSION_ID} and ${COREOS_BOARD} come from USR/lib/os-release."""
    folder = os.path.join(http_server.state.root, "flatcar", OS_VERSION, "amd64-usr")
    publish(folder, [("docker", "20.10")], fake_root.keys)
    fake_root.add_remote("main", http_server.url + "/${ID}/${VERSION_ID}/${COREOS_BOARD}/")
    rc, err = run_populate(fake_root, DOCKER)
    assert rc == 0, err
    assert fake_root.store_files() == ["docker:20.10.torcx.tgz", SIGNED]


def test_os_version_option_selects_the_store(fake_root, http_server):
    """populate -n OSVER fills BASEDIR/store/OSVER instead of the running version."""
    one_image_remote(fake_root, http_server)
    rc, err = run_populate(fake_root, DOCKER, os_version="4000.0.0")
    assert rc == 0, err
    assert sorted(os.listdir(os.path.join(fake_root.path, "var/lib/torcx/store/4000.0.0"))) == [
        "docker:20.10.torcx.tgz", SIGNED]
    assert fake_root.store_files() == []


def test_published_folder_round_trip(fake_root, http_server, gpg_keys):
    """write_contents output, clear-signed with gpg, is what populate accepts."""
    data = make_archive("docker", "20.10")
    with open(os.path.join(http_server.state.root, "docker:20.10.torcx.tgz"), "wb") as f:
        f.write(data)
    path = remote_contents.write_contents(http_server.state.root)
    with open(path, "rb") as f:
        write_contents(http_server.state.root, f.read(), gpg_keys)
    fake_root.add_remote("main", http_server.url)
    rc, err = run_populate(fake_root, DOCKER)
    assert rc == 0, err
    assert fake_root.store_files() == ["docker:20.10.torcx.tgz", SIGNED]


@pytest.mark.parametrize("location", [
    "../x.torcx.tgz", "a/../../x.torcx.tgz", "%2e%2e/x.torcx.tgz", "/etc/shadow",
    "//evil.example/x.torcx.tgz", "file:///etc/shadow", "ftp://host/x", "a\\..\\x",
])
def test_location_url_refuses_escapes(location):
    """Locations that leave base_url or use another scheme are refused."""
    r = remote_config.Remote("main", "/etc/torcx/remotes/main", "http://h/r/", "http://h/r/",
                      "http://h/r/", ())
    with pytest.raises(RemoteError):
        remote_populate.location_url(r, location)


def test_location_url_accepts_relative_and_http():
    """A relative location joins base_url; an absolute https URL is used as is."""
    r = remote_config.Remote("main", "/etc/torcx/remotes/main", "http://h/r", "http://h/r",
                      "http://h/r", ())
    assert remote_populate.location_url(r, "sub/a:1.torcx.tgz") == "http://h/r/sub/a:1.torcx.tgz"
    assert remote_populate.location_url(r, "https://cdn/a.tgz") == "https://cdn/a.tgz"
