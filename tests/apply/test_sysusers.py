# SPDX-License-Identifier: Apache-2.0
"""torcx-sysusers.service runs only when an addon's user, group or membership is missing
from /etc (RUNDIR/sysusers-pending); anything not understood counts as missing."""

from __future__ import annotations

import io
import json

import pytest

from torcx import cli
from torcx.apply.sysusers import missing

PASSWD = "root:x:0:0:root:/root:/bin/sh\nsvc:x:990:990::/:/usr/sbin/nologin\n"
GROUP = "root:x:0:\nsvc:x:990:\nwheel:x:10:root,svc\n"


def host_in(root):
    return lambda target: str(root) + target


@pytest.fixture
def root(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(PASSWD)
    (tmp_path / "etc/group").write_text(GROUP)
    (tmp_path / "run/sysusers.d").mkdir(parents=True)
    return tmp_path


def conf(root, text, name="a.conf"):
    (root / "run/sysusers.d" / name).write_text(text)
    return f"/run/sysusers.d/{name}"


@pytest.mark.parametrize("text", [
    'u svc - "a service user" /var/lib/svc\n',
    "g svc -\ng wheel 10\n",
    "m svc wheel\nm root wheel\n",
    "u svc 990:svc\n",
    "# a comment\n\nr - 500-900\n",
])
def test_everything_present_is_nothing_to_do(root, text):
    assert missing(host_in(root), [conf(root, text)]) == []


@pytest.mark.parametrize("text,want", [
    ("u new -\n", ["user new", "group new"]),
    ("u svc 990:other\nu other2 5:svc\n", ["user other2"]),
    ("g staff -\n", ["group staff"]),
    ("m svc root\n", ["member svc root"]),
    ("m svc nogroup\n", ["member svc nogroup"]),
])
def test_what_is_missing_is_named(root, text, want):
    assert missing(host_in(root), [conf(root, text)]) == want


@pytest.mark.parametrize("text", [
    "u %a-user -\n", 'u "quoted" -\n', "u svc\\x2d -\n", "x svc -\n", "u\n",
])
def test_what_is_not_understood_counts_as_missing(root, text):
    assert missing(host_in(root), [conf(root, text)]) != []


def test_an_override_in_etc_counts_as_missing(root):
    path = conf(root, "g svc -\n")
    (root / "etc/sysusers.d").mkdir()
    (root / "etc/sysusers.d/a.conf").write_text("g other -\n")
    assert missing(host_in(root), [path]) == ["/run/sysusers.d/a.conf: overridden in "
                                              "/etc/sysusers.d"]


def test_no_passwd_counts_as_missing(root):
    (root / "etc/passwd").unlink()
    assert missing(host_in(root), [conf(root, "g svc -\n")]) != []


def _image(tmp_path, sysusers: str):
    tree = tmp_path / "tree"
    (tree / ".torcx").mkdir(parents=True)
    (tree / "lib/sysusers.d").mkdir(parents=True)
    (tree / "lib/sysusers.d/svc.conf").write_text(sysusers)
    (tree / ".torcx/manifest.json").write_text(json.dumps({
        "kind": "image-manifest-v0", "value": {"sysusers": ["/lib/sysusers.d/svc.conf"]}}))
    return tree


@pytest.mark.parametrize("sysusers,pending", [("u svc -\n", False), ("u svc2 -\n", True)])
def test_the_apply_marks_pending_only_when_needed(tmp_path, sysusers, pending):
    root = tmp_path / "root"
    store = root / "usr/share/torcx/store"
    assert cli.main(["image", "pack", str(_image(tmp_path, sysusers)), "--name", "svc",
                     "--reference", "1", "-o", str(store), "--format", "tgz"],
                    stdout=io.StringIO()) == 0
    (root / "etc/torcx/profiles").mkdir(parents=True)
    (root / "etc/torcx/profiles/p.json").write_text(json.dumps({
        "kind": "profile-manifest-v0", "value": {"images": [
            {"name": "svc", "reference": "1"}]}}))
    (root / "etc/torcx/next-profile").write_text("p\n")
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/group").write_text(GROUP)
    assert cli.main(["--root", str(root), "apply", "--no-mount"], stdout=io.StringIO()) == 0
    assert (root / "run/sysusers.d/svc.conf").is_file()
    marker = root / "run/torcx/sysusers-pending"
    assert marker.exists() is pending
    if pending:
        assert marker.read_text() == "user svc2\ngroup svc2\n"
