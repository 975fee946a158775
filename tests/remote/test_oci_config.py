# SPDX-License-Identifier: Apache-2.0
"""OCI remotes without a registry: names, remote.json, credentials and publish's checks."""

from __future__ import annotations

import base64
import json
import os

import pytest
from remotekit import OS_VERSION, publish

from torcx import paths as torcx_paths
from torcx.errors import ConfigError, RemoteError, SchemaError
from torcx.remote import config as remote_config
from torcx.remote.fetch import FetchOptions
from torcx.remote.ociref import contents_ref, image_ref, parse_ref, parse_repo

pytest.importorskip("oras")
from torcx.remote import oci  # noqa: E402


def test_names():
    """oci:// names a repository; images below it tagged by reference; contents by OS."""
    base = parse_repo("oci://registry.example:5000/torcx/flatcar/")
    assert (base.scheme, base.host, base.path) == ("https", "registry.example:5000",
                                                   "torcx/flatcar")
    assert image_ref(base, "docker", "20.10") == "oci://registry.example:5000/torcx/flatcar/docker:20.10"
    assert contents_ref(base, OS_VERSION) == f"oci://registry.example:5000/torcx/flatcar:{OS_VERSION}"
    assert parse_ref("oci+http://127.0.0.1:5000/a/b:1.0")[0].scheme == "http"


@pytest.mark.parametrize("url, words", [
    ("oci://registry.example", "is not a repository name"),
    ("oci://registry.example/Torcx", "is not a repository name"),
    ("oci://bad_host!/torcx", "is not a registry host"),
    ("https://registry.example/torcx", "not an OCI registry URL"),
])
def test_bad_repository_urls(url, words):
    with pytest.raises(RemoteError, match=words):
        parse_repo(url)


def test_names_that_cannot_be_tags_or_repositories():
    base = parse_repo("oci://r.example/t")
    with pytest.raises(RemoteError, match="cannot be an OCI repository name"):
        image_ref(base, "Docker", "1")
    with pytest.raises(RemoteError, match="image reference '.hidden' cannot be an OCI tag"):
        image_ref(base, "docker", ".hidden")


def _remote(fake_root, value: dict) -> str:
    doc = {"kind": "remote-manifest-v0", "value": {"keys": [{"armored_keyring": "k.asc"}],
                                                   **value}}
    return fake_root.write("etc/torcx/remotes/main/remote.json", json.dumps(doc).encode())


def test_remote_json_mirrors_are_expanded(fake_root):
    _remote(fake_root, {"base_url": "oci://r.example/torcx/${ID}",
                        "mirrors": ["oci+http://m.example:5000/cache/torcx/${ID}"]})
    paths = torcx_paths.load(fake_root.path, environ={})
    remote = remote_config.find_remote(paths, "main")
    assert remote.is_oci and remote.mirrors == ("oci+http://m.example:5000/cache/torcx/flatcar",)
    assert remote.contents_url == f"oci://r.example/torcx/flatcar:{OS_VERSION}"


@pytest.mark.parametrize("value, error, words", [
    ({"base_url": "http://r.example/", "mirrors": ["oci://m.example/x"]}, SchemaError,
     "$.value.mirrors: mirrors are only for oci:// remotes"),
    ({"base_url": "oci://r.example/x", "mirrors": ["http://m.example/x"]}, SchemaError,
     "$.value.mirrors[0]: unsupported URL"),
    ({"base_url": "oci://r.example/UPPER"}, ConfigError, "$.value.base_url: "),
    ({"base_url": "oci://r.example/x", "mirrors": ["oci://m.example"]}, ConfigError,
     "$.value.mirrors[0]: "),
])
def test_remote_json_errors_name_the_file_and_field(fake_root, value, error, words):
    path = _remote(fake_root, value)
    paths = torcx_paths.load(fake_root.path, environ={})
    with pytest.raises(error) as e:
        remote_config.find_remote(paths, "main")
    assert "remote.json" in str(e.value) and words in str(e.value)
    assert path


def _auth(path, doc) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


def _basic(user, password):
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_credentials_order_and_forms(tmp_path):
    """TORCX_REGISTRY_AUTH first, then containers auth.json, then docker's config.json;
    keys as docker writes them; auth or username/password."""
    home = str(tmp_path / "home")
    _auth(f"{home}/.docker/config.json",
          {"auths": {"https://r.example": {"auth": _basic("docker", "d")},
                     "m.example:5000": {"username": "u", "password": "p"}}})
    _auth(f"{home}/.config/containers/auth.json",
          {"auths": {"r.example": {"auth": _basic("podman", "p")}}})
    env = {"HOME": home}
    assert oci.credentials("r.example", FetchOptions.from_env(env)) == _basic("podman", "p")
    assert oci.credentials("m.example:5000", FetchOptions.from_env(env)) == _basic("u", "p")
    assert oci.credentials("other.example", FetchOptions.from_env(env)) is None
    mine = _auth(str(tmp_path / "torcx.json"), {"auths": {"r.example": {"auth": _basic("t", "x")}}})
    env["TORCX_REGISTRY_AUTH"] = mine
    assert oci.credentials("r.example", FetchOptions.from_env(env)) == _basic("t", "x")


def test_bad_credentials_file_names_it_without_the_secret(tmp_path):
    path = _auth(str(tmp_path / "a.json"), {"auths": {"r.example": {"auth": "c2VjcmV0"}}})
    with pytest.raises(RemoteError) as e:
        oci.credentials("r.example", FetchOptions.from_env({"TORCX_REGISTRY_AUTH": path}))
    assert path in str(e.value) and "c2VjcmV0" not in str(e.value)
    with pytest.raises(ConfigError, match="expected an absolute path"):
        FetchOptions.from_env({"TORCX_REGISTRY_AUTH": "relative.json"})


def test_publish_refuses_archives_the_contents_do_not_sign(tmp_path, gpg_keys):
    """An archive whose sha512 differs from the signed contents: nothing is pushed."""
    folder = tmp_path / "pub"
    publish(str(folder), [("docker", "20.10")], gpg_keys)
    with open(folder / "docker:20.10.torcx.tgz", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ConfigError, match="sha512 differs from the signed contents"):
        oci.publish(str(folder), "oci+http://127.0.0.1:9/t", OS_VERSION, FetchOptions())
    os.unlink(folder / "torcx_remote_contents.json.asc")
    with pytest.raises(Exception, match="torcx_remote_contents.json.asc: missing"):
        oci.publish(str(folder), "oci+http://127.0.0.1:9/t", OS_VERSION, FetchOptions())


def test_credential_helper(tmp_path, monkeypatch):
    """credHelpers run docker-credential-NAME (through the SDK), as docker does."""
    helper = tmp_path / "bin" / "docker-credential-torcxtest"
    helper.parent.mkdir()
    helper.write_text('#!/bin/sh\nread host\n'
                      'printf \'{"ServerURL":"%s","Username":"helper","Secret":"h3lp"}\' "$host"\n')
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{helper.parent}:{os.environ['PATH']}")
    path = _auth(str(tmp_path / "config.json"), {"credHelpers": {"h.example": "torcxtest"}})
    opts = FetchOptions.from_env({"TORCX_REGISTRY_AUTH": path})
    assert oci.credentials("h.example", opts) == _basic("helper", "h3lp")
    assert oci.credentials("other.example", opts) is None
