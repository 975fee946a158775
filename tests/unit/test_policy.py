# SPDX-License-Identifier: Apache-2.0
"""torcx-policy-v0 and the kernel option: parsing, tightening, store classes."""

from __future__ import annotations

import json

import pytest

from torcx import paths as torcx_paths
from torcx import policy
from torcx.errors import SchemaError


def _doc(value):
    return {"kind": "torcx-policy-v0", "value": value}


def test_policy_file_parses():
    """Levels per class, check_files and admin_keys are read."""
    levels, check_files, admin_keys = policy.parse_policy(
        _doc({"stores": {"user": "signed", "vendor": "none"}, "check_files": True,
              "admin_keys": False}), "p.json")
    assert (levels, check_files, admin_keys) == (
        {"user": "signed", "vendor": "none"}, True, False)


@pytest.mark.parametrize("value, where", [
    ({"stores": {"usr": "signed"}}, "$.value.stores.usr"),
    ({"stores": {"user": "sealed"}}, "$.value.stores.user"),
    ({"stores": {"user": 1}}, "$.value.stores.user"),
    ({"check_files": "yes"}, "$.value.check_files"),
    ({"keys": []}, "$.value.keys"),
])
def test_bad_policy_names_the_json_path(value, where):
    """A bad field is a SchemaError naming the file and the JSON path."""
    with pytest.raises(SchemaError, match=f"p.json: {where.replace('$', '[$]')}"):
        policy.parse_policy(_doc(value), "p.json")


def test_kernel_option_forms():
    """torcx.policy=LEVEL spares the vendor store; CLASS:LEVEL and files are understood."""
    levels, files, problems = policy.parse_cmdline("ro torcx.policy=signed quiet")
    assert levels == dict.fromkeys(("oem", "config", "user", "runtime"), "signed")
    assert (files, problems) == (False, [])
    levels, files, problems = policy.parse_cmdline("torcx.policy=vendor:signed,files,oops")
    assert levels == {"vendor": "signed"} and files
    assert problems and "oops" in problems[0]


def test_admin_policy_only_tightens(tmp_path):
    """/etc raises levels and never lowers them; the kernel option raises them further."""
    (tmp_path / "usr/share/torcx").mkdir(parents=True)
    (tmp_path / "etc/torcx").mkdir(parents=True)
    (tmp_path / "usr/share/torcx/policy.json").write_text(json.dumps(
        _doc({"stores": {"user": "signed", "oem": "none"}})))
    (tmp_path / "etc/torcx/policy.json").write_text(json.dumps(
        _doc({"stores": {"user": "integrity", "oem": "integrity"}})))
    p = torcx_paths.load(str(tmp_path), environ={})
    pol = policy.load(p, cmdline="torcx.policy=runtime:signed")
    assert (pol.levels["user"], pol.levels["oem"], pol.levels["runtime"]) == (
        "signed", "integrity", "signed")
    assert pol.levels["vendor"] == "integrity" and not pol.admin_keys
    assert any("would loosen" in problem for problem in pol.problems)


def test_no_policy_is_the_default(tmp_path):
    """Without any file or option every class is at integrity and admin keys are allowed."""
    pol = policy.load(torcx_paths.load(str(tmp_path), environ={}), cmdline="")
    assert pol.default and set(pol.levels.values()) == {"integrity"} and pol.admin_keys


def test_store_classes(tmp_path):
    """Each store of the search order has its class."""
    p = torcx_paths.load(str(tmp_path), environ={"TORCX_STOREPATH": "/srv/extra"},
                         os_version="1.2")
    classes = [policy.store_class(p, s) for s in p.store_paths]
    assert classes == ["oem", "oem", "user", "user", "runtime"] or \
        classes == ["vendor", "oem", "oem", "user", "user", "runtime"]


def test_unreadable_vendor_policy_fails_closed(tmp_path):
    """A vendor file that does not parse: every store but the vendor's needs a signature,
    and keys in /etc are not allowed."""
    (tmp_path / "usr/share/torcx").mkdir(parents=True)
    (tmp_path / "usr/share/torcx/policy.json").write_text('{"kind": "torcx-policy-v0"}')
    pol = policy.load(torcx_paths.load(str(tmp_path), environ={}), cmdline="")
    assert pol.levels == {"vendor": "integrity", "oem": "signed", "config": "signed",
                          "user": "signed", "runtime": "signed"}
    assert not pol.admin_keys and "fail closed" in pol.sources[0]
    assert "$.value: missing required field" in pol.problems[0]
