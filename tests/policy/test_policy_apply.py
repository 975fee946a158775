# SPDX-License-Identifier: Apache-2.0
"""The policy phase of the apply under --root (tarballs, no mounts), with real gpg keys.

Under a vendor policy that wants signed images from the user store: what applies,
what is refused alone (phase 'policy', naming store, keys tried and what is wrong),
and that the vendor's image on /usr applies whatever happens to the user store.
"""

from __future__ import annotations

import json
import os

import pytest
from applykit import apply_json, torcx
from policykit import SIGNED, image_tree, pack, write

USER_ARCHIVE = "userapp:1.torcx.tgz"


def _statuses(rep):
    return {im["name"]: (im["status"], im["stage"]) for im in rep["images"]}


def _image(rep, name):
    return next(im for im in rep["images"] if im["name"] == name)


@pytest.fixture
def signed_root(root):
    """Vendor image on /usr, user image in /var/lib/torcx/store, user store: signed."""
    root.add_hello(name="vendorapp")
    root.user_image("userapp")
    root.profile("vendor", [("vendorapp", "1"), ("userapp", "1")])
    root.vendor_keys("trusted")
    root.policy("vendor", {"user": "signed"})
    return root


def _refused(root, *needles):
    code, rep = apply_json(root.path)
    assert code == 1
    assert _statuses(rep) == {"vendorapp": ("ok", ""), "userapp": ("failed", "policy")}
    error = _image(rep, "userapp")["error"]
    for needle in needles:
        assert needle in error, error
    assert not os.path.exists(root.host("/run/torcx/unpack/userapp"))
    assert os.path.exists(root.host("/run/torcx/unpack/vendorapp/bin/vendorapp"))
    return error


def test_signed_image_applies(signed_root, gpg_keys):
    """A store signed by the vendor's key: the user image applies, and the report says why."""
    signed_root.sign_store()
    code, rep = apply_json(signed_root.path)
    assert code == 0, rep
    assert _statuses(rep) == {"vendorapp": ("ok", ""), "userapp": ("ok", "")}
    trust = _image(rep, "userapp")["trust"]
    assert (trust["class"], trust["level"], trust["pin"]) == ("user", "signed", "signed")
    assert trust["signers"] == [gpg_keys.fingerprints["trusted"]]
    assert "signed: sha256 matches /var/lib/torcx/store/" + SIGNED in trust["reason"]
    assert rep["policy"]["levels"]["user"] == "signed"
    assert rep["policy"]["sources"] == ["/usr/share/torcx/policy.json"]


def test_rebuilt_archive_with_fresh_digest_list_is_refused(signed_root):
    """An archive rebuilt after signing, with a self-consistent digest list, is refused."""
    signed_root.sign_store()
    src = os.path.join(signed_root.work, "evil")
    image_tree(src, {"bin/userapp": ("#!/bin/sh\necho owned\n", 0o755)},
               manifest={"bin": ["/bin/userapp"]})
    pack(src, os.path.join(signed_root.user_store, USER_ARCHIVE), "tgz")
    error = _refused(signed_root, "differs from the signed", SIGNED, "store /var/lib/torcx/store")
    assert "trusted" not in error  # fingerprints, not names


def test_contents_signed_by_unknown_key_is_refused(signed_root, gpg_keys):
    """Contents signed by a key the vendor does not trust: refused, naming the keys tried."""
    signed_root.sign_store(who="stranger")
    _refused(signed_root, "unknown key", gpg_keys.fingerprints["trusted"],
             "store /var/lib/torcx/store (user) needs signed images")


def test_unsigned_store_is_refused(signed_root, gpg_keys):
    """No signed contents in the store: refused, saying the file is missing."""
    _refused(signed_root, f"{SIGNED} is missing", gpg_keys.fingerprints["trusted"])


def test_truncated_signature_is_refused(signed_root):
    """A signed contents file cut in its signature block is refused."""
    signed = signed_root.sign_store()
    with open(os.path.join(signed_root.user_store, SIGNED), "wb") as f:
        f.write(signed[: len(signed) - 120])
    _refused(signed_root, "signature not verified")


@pytest.mark.parametrize("field", ["hash", "sha256"])
def test_contents_naming_another_sha512_are_refused(signed_root, field):
    """Correctly signed contents whose digest for the archive is another one are refused:
    an upstream-style sha512 (no sha256 beside it), or our sha256."""
    doc = json.loads(signed_root.contents())
    version = doc["value"]["images"][0]["versions"][0]
    if field == "hash":
        del version["sha256"]
        version["hash"] = "sha512-" + "ab" * 64
    else:
        version["sha256"] = "cd" * 32
    signed_root.sign_store(doc=json.dumps(doc).encode())
    _refused(signed_root, "differs from the signed " + ("ab" * 64 if field == "hash"
                                                         else "cd" * 32))


def test_image_missing_from_signed_contents_is_refused(signed_root):
    """An archive the signed contents do not list is refused, saying so."""
    signed_root.sign_store()
    signed_root.user_image("extra")
    signed_root.profile("vendor", [("vendorapp", "1"), ("extra", "1")])
    code, rep = apply_json(signed_root.path)
    assert _statuses(rep)["extra"] == ("failed", "policy")
    assert "extra:1 (tgz) is not listed in" in _image(rep, "extra")["error"]


def test_etc_cannot_loosen_the_vendor_policy(signed_root):
    """/etc saying 'none' for the user store leaves it signed, and says it was ignored."""
    signed_root.policy("etc", {"user": "none", "runtime": "signed"}, admin_keys=True)
    signed_root.admin_keys("stranger")
    signed_root.sign_store(who="stranger")  # admin keys are not allowed by the vendor
    _refused(signed_root, "unknown key")
    code, rep = apply_json(signed_root.path, "--dry-run")
    assert rep["policy"]["levels"]["user"] == "signed"
    assert rep["policy"]["levels"]["runtime"] == "signed"  # tightening is allowed
    problems = " | ".join(rep["policy"]["problems"])
    assert "user 'none' would loosen 'signed', ignored" in problems
    assert "admin_keys true would loosen the vendor policy, ignored" in problems


def test_admin_keys_when_the_vendor_allows_them(signed_root):
    """With "admin_keys": true in the vendor policy, a key in /etc/torcx/keys may sign."""
    signed_root.policy("vendor", {"user": "signed"}, admin_keys=True)
    signed_root.admin_keys("stranger")
    signed_root.sign_store(who="stranger")
    code, rep = apply_json(signed_root.path)
    assert code == 0, rep


def test_kernel_option_tightens_for_one_boot(root):
    """No policy file: an unsigned user image applies; torcx.policy=signed refuses it."""
    root.add_hello(name="vendorapp")
    root.user_image("userapp")
    root.profile("vendor", [("vendorapp", "1"), ("userapp", "1")])
    root.vendor_keys("trusted")
    code, rep = apply_json(root.path, "--dry-run")
    assert code == 0 and rep["policy"]["sources"] == []
    assert _image(rep, "userapp")["status"] == "planned"
    root.cmdline("quiet torcx.policy=signed")
    _refused(root, f"{SIGNED} is missing")


def test_broken_policy_file_fails_closed(signed_root):
    """An /etc policy that does not parse makes every store but the vendor's need a signature."""
    signed_root.policy("vendor", {"user": "integrity"})
    write(signed_root.host("/etc/torcx/policy.json"), "{not json")
    error = _refused(signed_root, "is missing")
    assert "needs signed images" in error


def test_status_says_which_policy_applied_and_why(signed_root):
    """torcx status names the policy's origin and, per image, why it passed."""
    signed_root.sign_store()
    apply_json(signed_root.path)
    res = torcx(signed_root.path, "status")
    assert "policy: vendor integrity, oem integrity, config integrity, user signed, " \
           "runtime integrity (from /usr/share/torcx/policy.json)" in res.out
    assert "trust (user store, signed): signed: sha256 matches" in res.out
    assert "trust (vendor store, integrity): integrity: every file matched" in res.out
