# SPDX-License-Identifier: Apache-2.0
"""The sandboxed generator with systemd-sysext images in the profile: it does not read them
(the apply checks them) and pulls systemd-sysext.service into the boot."""

from __future__ import annotations

import os

from torcx import paths as torcx_paths
from torcx.boot import plan_units


def test_plan_pulls_in_systemd_sysext_for_a_sysext_image(tmp_path):
    """A sysext image in the profile: no units generated for it, no mount attempted (the
    file is not even a file system), systemd-sysext.service wanted by sysinit.target."""
    root = tmp_path / "root"
    store = root / "usr/share/torcx/store"
    store.mkdir(parents=True)
    (store / "ext:1.torcx.raw").write_bytes(b"not read by the generator")
    profiles = root / "etc/torcx/profiles"
    profiles.mkdir(parents=True)
    (profiles / "p.json").write_text('{"kind": "profile-manifest-v0", "value": {"images": '
                                     '[{"name": "ext", "reference": "1"}]}}')
    (root / "etc/torcx/next-profile").write_text("p\n")
    normal, late = tmp_path / "gen", tmp_path / "late"
    paths = torcx_paths.load(str(root), environ={})
    assert plan_units.plan_generator_units(paths, str(normal), str(late)) == 0
    assert sorted(os.listdir(normal)) == ["sysinit.target.wants", "torcx-apply.service.d"]
    assert os.listdir(normal / "sysinit.target.wants") == ["systemd-sysext.service"]
    assert os.readlink(normal / "sysinit.target.wants/systemd-sysext.service") == \
        "/usr/lib/systemd/system/systemd-sysext.service"
