# SPDX-License-Identifier: Apache-2.0
"""OCI registry remotes against real registries (Debian's docker-registry, CNCF distribution)
started here on 127.0.0.1: anonymous, htpasswd basic auth over TLS, bearer tokens from a
token server made in the test, and a mirror holding only some images.

Every failure checks the same promise as the http remotes: exit 1, an error naming the
image and the reason, nothing at all in the store.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil

import pytest
from registrykit import REGISTRY, Registry, TokenServer, auth_file, htpasswd_file
from remotekit import OS_VERSION, make_archive, publish

from torcx.cli import main

pytestmark = pytest.mark.skipif(REGISTRY is None or shutil.which("htpasswd") is None,
                                reason="needs docker-registry and htpasswd "
                                       "(Debian docker-registry, apache2-utils)")

PASSWORD = "s3cret-Pa55"
PROFILE = [("docker", "20.10", "main"), ("containerd", "1.7", "main")]
IMAGES = [("docker", "20.10"), ("containerd", "1.7"), ("kubelet", "1.28")]
ENV = {"no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1"}
FAST = {**ENV, "TORCX_FETCH_CONNECT_TIMEOUT": "2", "TORCX_FETCH_READ_TIMEOUT": "0.5",
        "TORCX_FETCH_ATTEMPTS": "2", "TORCX_FETCH_BACKOFF": "0.05"}


# ------------------------------------------------------------------ registries, one per module

@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    reg = Registry(str(tmp_path_factory.mktemp("registry")))
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    reg = Registry(str(tmp_path_factory.mktemp("mirror")))
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory, tls_cert):
    """htpasswd basic auth over TLS, with the test's self-signed certificate."""
    work = tmp_path_factory.mktemp("tls-registry")
    users = htpasswd_file(str(work / "htpasswd"), "publisher", PASSWORD)
    reg = Registry(str(work / "reg"), tls=tls_cert,
                   auth={"htpasswd": {"realm": "torcx-test", "path": users}})
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory, tls_cert):
    """auth: token; the realm is a token server signing JWTs with the test's key."""
    tokens = TokenServer(tls_cert[0], tls_cert[1], {"publisher": PASSWORD})
    tokens.start()
    reg = Registry(str(tmp_path_factory.mktemp("token-registry")), auth=tokens.registry_auth())
    yield reg, tokens
    reg.stop()
    tokens.stop()


@pytest.fixture
def repo(request) -> str:
    """A repository path of this test's own."""
    return "torcx/" + request.node.name.lower().replace("[", "-").replace("]", "")[:60]


def torcx(*argv, root=None, environ=None):
    out, err = io.StringIO(), io.StringIO()
    prefix = ["--root", root.path] if root is not None else []
    rc = main([*prefix, *argv], prog="torcx", environ=environ or ENV, stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


def push(folder, url, environ=None, os_version=OS_VERSION) -> dict:
    """`torcx remote publish FOLDER URL --json`; returns its report."""
    rc, out, err = torcx("remote", "publish", str(folder), url, "-n", os_version, "--json",
                         environ=environ)
    assert rc == 0, err
    return json.loads(out)["value"]


def populate(fake_root, environ=None):
    return torcx("profile", "populate", "--name", "fleet", root=fake_root, environ=environ)


def stored(fake_root, name) -> bytes:
    with open(os.path.join(fake_root.store, name), "rb") as f:
        return f.read()


def node(fake_root, url, mirrors=()):
    """Remote 'main' at url (mirrors tried first) and the two-image profile 'fleet'."""
    path = fake_root.add_remote("main", url)
    if mirrors:
        with open(path) as f:
            doc = json.load(f)
        doc["value"]["mirrors"] = list(mirrors)
        with open(path, "w") as f:
            json.dump(doc, f)
    fake_root.add_profile("fleet", PROFILE)


def assert_failed_cleanly(fake_root, rc, err, *words):
    assert rc == 1, err
    line = next((x for x in err.splitlines() if "populate: docker:20.10:" in x), "")
    assert line, err
    for word in words:
        assert word in line, line
    # Nothing of the failed image, no temporary file (another image may have landed).
    assert [f for f in fake_root.store_files() if "docker" in f or f.startswith(".")] == []


# ------------------------------------------------------------------ publish and populate

def test_publish_then_populate_two_images_and_again_nothing(registry, repo, tmp_path,
                                                            fake_root):
    """Publish three images; populate a two-image profile (6 requests); a second populate
    asks the registry nothing; publishing again uploads nothing."""
    archives = publish(str(tmp_path / "pub"), IMAGES, fake_root.keys)
    report = push(tmp_path / "pub", registry.url(repo))
    assert report["blobs_uploaded"] == 8  # 3 archives + the signed contents + 4 configs
    assert len(report["pushed"]) == 4
    node(fake_root, registry.url(repo))

    before = len(registry.settle())
    rc, _, err = populate(fake_root)
    assert rc == 0, err
    assert fake_root.store_files() == ["containerd:1.7.torcx.tgz", "docker:20.10.torcx.tgz",
                                       "torcx_remote_contents.json.asc"]
    with open(tmp_path / "pub" / "torcx_remote_contents.json.asc", "rb") as f:
        assert stored(fake_root, "torcx_remote_contents.json.asc") == f.read()  # kept, as http
    assert stored(fake_root, "docker:20.10.torcx.tgz") == archives["docker:20.10"]
    assert stored(fake_root, "containerd:1.7.torcx.tgz") == archives["containerd:1.7"]
    made = registry.settle()[before:]
    assert [m for m, _, _ in made] == ["GET"] * 6, made  # contents + 2 per image
    assert not any("kubelet" in path for _, path, _ in made)

    rc, _, err = populate(fake_root)
    assert rc == 0 and "nothing to fetch" in err
    assert len(registry.settle()) == before + 6

    again = push(tmp_path / "pub", registry.url(repo))
    assert again["blobs_uploaded"] == 0 and again["pushed"] == []
    assert len(again["unchanged"]) == 4


def test_publish_uploads_only_new_blobs(registry, repo, tmp_path, fake_root):
    """A new version of an image uploads its archive and the new contents; the rest stays."""
    publish(str(tmp_path / "pub"), IMAGES[:2], fake_root.keys)
    push(tmp_path / "pub", registry.url(repo))
    with open(tmp_path / "pub" / "docker:24.0.torcx.tgz", "wb") as f:
        f.write(make_archive("docker", "24.0"))
    rc, out, err = torcx("remote", "contents", str(tmp_path / "pub"))
    assert rc == 0, err
    with open(out.strip(), "rb") as f:
        signed = fake_root.keys.clearsign(f.read())
    with open(out.strip() + ".asc", "wb") as f:
        f.write(signed)
    report = push(tmp_path / "pub", registry.url(repo))
    assert report["pushed"] == [registry.url(repo) + "/docker:24.0",
                                registry.url(repo) + ":" + OS_VERSION]
    assert len(report["unchanged"]) == 2
    assert report["blobs_uploaded"] == 2  # the new archive and the new contents
    assert report["blobs_present"] == 2  # the empty configs of both repositories


def test_check_remote_only_and_list(registry, repo, tmp_path, fake_root):
    """`profile check --remote-only` reads only the signed contents; `remote list` shows
    the contents tag and the mirrors."""
    publish(str(tmp_path / "pub"), IMAGES, fake_root.keys)
    push(tmp_path / "pub", registry.url(repo))
    node(fake_root, registry.url(repo), mirrors=[registry.url("torcx/elsewhere")])
    before = len(registry.settle())
    rc, _, err = torcx("profile", "check", "--remote-only", "--name", "fleet", root=fake_root)
    assert rc == 0, err
    assert not any("/blobs/" in p and "docker" in p for _, p, _ in registry.settle()[before:])
    rc, out, err = torcx("remote", "list", "--json", root=fake_root)
    assert rc == 0, err
    entry = json.loads(out)["value"][0]
    assert entry["contents"] == registry.url(repo) + ":" + OS_VERSION
    assert entry["mirrors"] == [registry.url("torcx/elsewhere")]
    rc, out, err = torcx("remote", "list", root=fake_root)
    assert f"\tmirror {registry.url('torcx/elsewhere')}" in out.splitlines()
    assert f"\tcontents {registry.url(repo)}:{OS_VERSION}" in out.splitlines()


# ------------------------------------------------------------------ authentication

def test_basic_auth_over_tls(tls_registry, repo, tmp_path, fake_root, tls_cert):
    """htpasswd over TLS: publish and populate with credentials from TORCX_REGISTRY_AUTH;
    the password is never printed."""
    creds = auth_file(str(tmp_path / "auth.json"), tls_registry.host, "publisher", PASSWORD)
    env = {**ENV, "TORCX_REGISTRY_AUTH": creds, "TORCX_CA_FILE": tls_cert[0]}
    archives = publish(str(tmp_path / "pub"), IMAGES[:2], fake_root.keys)
    rc, out, err = torcx("remote", "publish", str(tmp_path / "pub"), tls_registry.url(repo),
                         "-n", OS_VERSION, environ=env)
    assert rc == 0, err
    assert PASSWORD not in out + err
    node(fake_root, tls_registry.url(repo))
    before = len(tls_registry.settle())
    rc, out, err = populate(fake_root, env)
    assert rc == 0, err
    assert stored(fake_root, "docker:20.10.torcx.tgz") == archives["docker:20.10"]
    assert PASSWORD not in out + err
    statuses = sorted(s for _, _, s in tls_registry.settle()[before:])
    assert statuses == [200] * 6 + [401] * 3  # one challenge per repository


def test_https_trusts_the_system_cas_not_a_bundle_of_its_own(tls_registry, repo, tmp_path,
                                                              fake_root, tls_cert,
                                                              monkeypatch):
    """Without TORCX_CA_FILE, https trusts what OpenSSL trusts (SSL_CERT_FILE here), as
    http remotes do; an unknown certificate is a final TLS error, not retried."""
    creds = auth_file(str(tmp_path / "auth.json"), tls_registry.host, "publisher", PASSWORD)
    publish(str(tmp_path / "pub"), IMAGES[:2], fake_root.keys)
    push(tmp_path / "pub", tls_registry.url(repo),
         {**ENV, "TORCX_REGISTRY_AUTH": creds, "TORCX_CA_FILE": tls_cert[0]})
    node(fake_root, tls_registry.url(repo))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "none.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "none"))
    rc, _, err = populate(fake_root, {**FAST, "TORCX_REGISTRY_AUTH": creds})
    assert_failed_cleanly(fake_root, rc, err, "TLS", "CERTIFICATE_VERIFY_FAILED")
    assert "retrying" not in err
    monkeypatch.setenv("SSL_CERT_FILE", tls_cert[0])
    rc, _, err = populate(fake_root, {**FAST, "TORCX_REGISTRY_AUTH": creds})
    assert rc == 0, err


def test_wrong_credentials_fail_cleanly(tls_registry, repo, tmp_path, fake_root, tls_cert):
    """Wrong basic credentials: the image fails naming the 401, nothing stored, no secret."""
    good = auth_file(str(tmp_path / "good.json"), tls_registry.host, "publisher", PASSWORD)
    publish(str(tmp_path / "pub"), IMAGES[:2], fake_root.keys)
    push(tmp_path / "pub", tls_registry.url(repo),
         {**ENV, "TORCX_REGISTRY_AUTH": good, "TORCX_CA_FILE": tls_cert[0]})
    bad = auth_file(str(tmp_path / "bad.json"), tls_registry.host, "publisher", "wrong-guess")
    node(fake_root, tls_registry.url(repo))
    rc, out, err = populate(fake_root, {**FAST, "TORCX_REGISTRY_AUTH": bad,
                                        "TORCX_CA_FILE": tls_cert[0]})
    assert_failed_cleanly(fake_root, rc, err, "HTTP 401", "credentials missing or rejected")
    assert "wrong-guess" not in out + err


def test_bearer_token_challenge(token_registry, repo, tmp_path, fake_root):
    """auth: token (as public registries): publish with credentials (a push token),
    populate anonymously (pull tokens), as the token server saw it."""
    reg, tokens = token_registry
    creds = auth_file(str(tmp_path / "auth.json"), reg.host, "publisher", PASSWORD)
    archives = publish(str(tmp_path / "pub"), IMAGES[:2], fake_root.keys)
    push(tmp_path / "pub", reg.url(repo), {**ENV, "TORCX_REGISTRY_AUTH": creds})
    assert any(user == "publisher" and any("pull,push" in a for a in access)
               for user, access in tokens.issued)
    node(fake_root, reg.url(repo))
    issued = len(tokens.issued)
    rc, _, err = populate(fake_root)
    assert rc == 0, err
    assert stored(fake_root, "containerd:1.7.torcx.tgz") == archives["containerd:1.7"]
    pulls = tokens.issued[issued:]
    assert len(pulls) == 3 and all(user == "" for user, _ in pulls)  # one per repository


def test_bearer_token_wrong_credentials_fail_cleanly(token_registry, repo, tmp_path,
                                                     fake_root):
    """A token server refusing the credentials: the registry's 401 is the reason given."""
    reg, tokens = token_registry
    creds = auth_file(str(tmp_path / "auth.json"), reg.host, "publisher", PASSWORD)
    publish(str(tmp_path / "pub"), IMAGES[:2], fake_root.keys)
    push(tmp_path / "pub", reg.url(repo), {**ENV, "TORCX_REGISTRY_AUTH": creds})
    bad = auth_file(str(tmp_path / "bad.json"), reg.host, "publisher", "nope")
    node(fake_root, reg.url(repo))
    refused = tokens.refused
    rc, _, err = populate(fake_root, {**FAST, "TORCX_REGISTRY_AUTH": bad})
    assert_failed_cleanly(fake_root, rc, err, "HTTP 401", "credentials missing or rejected")
    assert tokens.refused > refused


def test_stalled_token_server_fails_cleanly(token_registry, repo, tmp_path, fake_root):
    """A token server that stops answering is timed out like the registry itself."""
    reg, tokens = token_registry
    creds = auth_file(str(tmp_path / "auth.json"), reg.host, "publisher", PASSWORD)
    publish(str(tmp_path / "pub"), IMAGES[:2], fake_root.keys)
    push(tmp_path / "pub", reg.url(repo), {**ENV, "TORCX_REGISTRY_AUTH": creds})
    node(fake_root, reg.url(repo))
    tokens.stalled.set()
    try:
        rc, _, err = populate(fake_root, FAST)
    finally:
        tokens.stalled.clear()
        tokens.released.set()
    assert_failed_cleanly(fake_root, rc, err, "timed out", "gave up after 2 attempts")


# ------------------------------------------------------------------ mirrors

def test_mirror_with_some_images_falls_back_to_origin(registry, mirror, repo, tmp_path,
                                                      fake_root):
    """A dead mirror, then a mirror holding only docker, then the origin: docker comes
    from the mirror, containerd from the origin."""
    archives = publish(str(tmp_path / "pub"), IMAGES[:2], fake_root.keys)
    push(tmp_path / "pub", registry.url(repo))
    os.unlink(tmp_path / "pub" / "containerd:1.7.torcx.tgz")
    push(tmp_path / "pub", mirror.url(repo))  # the same signed contents, one archive
    dead = "oci+http://127.0.0.1:9/" + repo  # the discard port: connection refused
    node(fake_root, registry.url(repo), mirrors=[dead, mirror.url(repo)])
    before_origin, before_mirror = len(registry.settle()), len(mirror.settle())
    rc, _, err = populate(fake_root, FAST)
    assert rc == 0, err
    assert stored(fake_root, "docker:20.10.torcx.tgz") == archives["docker:20.10"]
    assert stored(fake_root, "containerd:1.7.torcx.tgz") == archives["containerd:1.7"]
    from_mirror = [p for _, p, s in mirror.settle()[before_mirror:] if s == 200]
    from_origin = [p for _, p, s in registry.settle()[before_origin:] if s == 200]
    assert any("/docker/blobs/" in p for p in from_mirror)
    assert not any("/docker/" in p for p in from_origin)
    assert any("/containerd/blobs/" in p for p in from_origin)
    assert f"/v2/{repo}/manifests/{OS_VERSION}" in from_mirror  # contents from the mirror
    assert not any(p.endswith(OS_VERSION) for p in from_origin)


def retag_docker(folder, url, keys):
    """Point docker:20.10 at another archive (published with its own contents, signed,
    for another OS version, so the signed contents of OS_VERSION stay as they were)."""
    evil = make_archive("docker", "evil")
    os.makedirs(folder)
    with open(os.path.join(folder, "docker:20.10.torcx.tgz"), "wb") as f:
        f.write(evil)
    doc = {"kind": "torcx-remote-contents-v1", "value": {"images": [{"name": "docker",
           "versions": [{"version": "20.10", "format": "tgz", "location": "x",
                         "hash": "sha512-" + hashlib.sha512(evil).hexdigest()}]}]}}
    with open(os.path.join(folder, "torcx_remote_contents.json.asc"), "wb") as f:
        f.write(keys.clearsign(json.dumps(doc).encode()))
    push(folder, url, os_version="9999.0.0")


def test_mirror_serving_another_archive_falls_back_to_origin(registry, mirror, repo,
                                                             tmp_path, fake_root):
    """A mirror whose tag names an archive that fails the signed sha512: origin's is used."""
    archives = publish(str(tmp_path / "pub"), IMAGES[:2], fake_root.keys)
    push(tmp_path / "pub", registry.url(repo))
    push(tmp_path / "pub", mirror.url(repo))
    retag_docker(str(tmp_path / "evil"), mirror.url(repo), fake_root.keys)
    node(fake_root, registry.url(repo), mirrors=[mirror.url(repo)])
    rc, _, err = populate(fake_root, FAST)
    assert rc == 0, err
    assert "sha512 mismatch" in err and f"trying {registry.url(repo)}/docker:20.10" in err
    assert stored(fake_root, "docker:20.10.torcx.tgz") == archives["docker:20.10"]


# ------------------------------------------------------------------ failures

def test_tag_whose_blob_was_replaced_fails_cleanly(registry, repo, tmp_path, fake_root):
    """The tag now names another archive than the signed one: sha512 mismatch."""
    publish(str(tmp_path / "pub"), IMAGES[:2], fake_root.keys)
    push(tmp_path / "pub", registry.url(repo))
    retag_docker(str(tmp_path / "evil"), registry.url(repo), fake_root.keys)
    node(fake_root, registry.url(repo))
    rc, _, err = populate(fake_root, FAST)
    assert_failed_cleanly(fake_root, rc, err, "sha512 mismatch", "docker:20.10")


def test_contents_signed_by_unknown_key_fail_cleanly(registry, repo, tmp_path, fake_root):
    """Contents signed by a key the remote does not list: nothing is pulled."""
    publish(str(tmp_path / "pub"), IMAGES[:2], fake_root.keys, signer="stranger")
    push(tmp_path / "pub", registry.url(repo))
    node(fake_root, registry.url(repo))
    before = len(registry.settle())
    rc, _, err = populate(fake_root, FAST)
    assert_failed_cleanly(fake_root, rc, err, "signed by an unknown key")
    assert not any("/docker/" in p for _, p, _ in registry.settle()[before:])


def test_stalled_registry_fails_cleanly(registry, mirror, repo, tmp_path, fake_root):
    """The signed contents come from a mirror holding no archive; the origin stops answering
    (SIGSTOP): each image times out, bounded retries, then an error naming it."""
    publish(str(tmp_path / "pub"), IMAGES[:2], fake_root.keys)
    push(tmp_path / "pub", registry.url(repo))
    os.makedirs(tmp_path / "contents-only")
    shutil.copy(tmp_path / "pub" / "torcx_remote_contents.json.asc", tmp_path / "contents-only")
    push(tmp_path / "contents-only", mirror.url(repo))
    node(fake_root, registry.url(repo), mirrors=[mirror.url(repo)])
    registry.stall()
    try:
        rc, _, err = populate(fake_root, FAST)
    finally:
        registry.resume()
    assert_failed_cleanly(fake_root, rc, err, "manifest unknown", "timed out",
                          "gave up after 2 attempts")
    assert "populate: containerd:1.7: " in err


def test_foreign_manifest_media_type_fails_cleanly(registry, repo, tmp_path, fake_root):
    """A tag holding a container image layer instead of a torcx archive is refused."""
    from torcx.remote import oci
    from torcx.remote.fetch import FetchOptions
    from torcx.remote.ociref import parse_ref

    archives = publish(str(tmp_path / "pub"), IMAGES[:2], fake_root.keys)
    push(tmp_path / "pub", registry.url(repo))
    data = archives["docker:20.10"]
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    manifest = oci._manifest(oci.IMAGE_ARTIFACT_TYPE, "application/vnd.oci.image.layer.v1.tar+gzip",
                             digest, len(data), "layer.tar.gz")
    client = oci._Client(parse_ref(registry.url(repo) + "/docker:20.10")[0],
                         FetchOptions.from_env(ENV))
    try:
        oci._push_artifact(client, "20.10", manifest, [], oci.PublishReport([], []))
    finally:
        client.close()
    node(fake_root, registry.url(repo))
    rc, _, err = populate(fake_root, FAST)
    assert_failed_cleanly(fake_root, rc, err, "foreign layer media type",
                          "application/vnd.oci.image.layer.v1.tar+gzip")


def test_blob_larger_than_the_cap_fails_cleanly(registry, repo, tmp_path, fake_root):
    """An archive over TORCX_FETCH_MAX_BYTES is refused before a byte of it is read."""
    publish(str(tmp_path / "pub"), IMAGES[:2], fake_root.keys)
    push(tmp_path / "pub", registry.url(repo))
    node(fake_root, registry.url(repo))
    before = len(registry.settle())
    rc, _, err = populate(fake_root, {**FAST, "TORCX_FETCH_MAX_BYTES": "100"})
    assert_failed_cleanly(fake_root, rc, err, "larger than TORCX_FETCH_MAX_BYTES (100 bytes)")
    assert not any("/docker/blobs/" in p for _, p, _ in registry.settle()[before:])
