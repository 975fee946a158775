# SPDX-License-Identifier: Apache-2.0
"""Trust at boot on systemd 257 (Debian trixie, generators sandboxed): under a vendor
policy that wants signed images from the user store, a signed addon in
/var/lib/torcx/store starts and an unsigned one is refused in phase 'policy', while
the machine reaches multi-user.target. Keys are made with gpg in the test."""

from __future__ import annotations

import json
import os
import shutil

import e2e_fixtures as fx
import pytest
from test_boot_e2e import ensure_rootfs, expect, status_images, unit_state

from torcx.remote.contents import contents_doc

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="boots need root (overlay, nspawn, cgroups)"),
    pytest.mark.skipif(not (shutil.which("debootstrap") and shutil.which("systemd-nspawn")),
                       reason="needs debootstrap and systemd-nspawn (systemd-container)"),
    pytest.mark.skipif(not (shutil.which("gpg") and shutil.which("gpgv")),
                       reason="needs gpg and gpgv"),
]

SIGNED, UNSIGNED = "hello-signed", "hello-unsigned"
USER_STORE = "/var/lib/torcx/store"


def test_signed_addon_starts_and_unsigned_is_refused(tmp_path, gpg_keys):
    """Signed store contents verified by gpgv at boot: the signed addon runs, the
    unsigned one (in the versioned user store, which has no signed contents) never
    starts, torcx status says why, and multi-user.target is reached."""
    from e2e_nspawn import Guest

    from torcx import cli

    work = str(tmp_path)
    signed_store = os.path.join(work, "signed")
    unsigned_store = os.path.join(work, "unsigned")
    fx.pack(fx.addon_tree(work, SIGNED), SIGNED, signed_store, "tgz")
    fx.pack(fx.addon_tree(work, UNSIGNED), UNSIGNED, unsigned_store, "tgz")
    signed = gpg_keys.clearsign(json.dumps(contents_doc(signed_store)).encode())
    wheel = fx.build_wheel(os.path.join(work, "wheel"))

    with Guest(ensure_rootfs("trixie-gpgv"), "trixie-trust") as guest:
        import io

        assert cli.main(["install-boot", "--root", guest.root, "--wheel", wheel],
                        stdout=io.StringIO()) == 0
        with open(guest.path("/usr/lib/os-release")) as f:
            version = next(line.split("=", 1)[1].strip().strip('"') for line in f
                           if line.startswith("VERSION_ID="))
        os.makedirs(guest.path(f"{USER_STORE}/{version}"))
        shutil.copy(os.path.join(signed_store, f"{SIGNED}:1.torcx.tgz"), guest.path(USER_STORE))
        shutil.copy(os.path.join(unsigned_store, f"{UNSIGNED}:1.torcx.tgz"),
                    guest.path(f"{USER_STORE}/{version}"))
        guest.write(f"{USER_STORE}/torcx_remote_contents.json.asc", signed.decode())
        guest.write("/usr/share/torcx/keys/vendor.asc", gpg_keys.armored("trusted").decode())
        guest.write("/usr/share/torcx/policy.json",
                    '{"kind": "torcx-policy-v0", "value": {"stores": {"user": "signed"}}}\n')
        guest.write("/etc/torcx/profiles/e2e.json", fx.profile_json([SIGNED, UNSIGNED]))
        guest.write("/etc/torcx/next-profile", "e2e\n")
        units = [f"{SIGNED}.service", f"{UNSIGNED}.service", "torcx-apply.service"]
        boot = guest.boot(fx.checks_script(units))

    expect(boot.finished and not boot.timed_out and boot.rc == 0,
           "the guest did not boot, probe and power off cleanly", boot)
    expect(boot.read("multi-user").strip() == "active", "multi-user.target not reached", boot)
    good = unit_state(boot, f"{SIGNED}.service")
    expect((good.get("ActiveState"), good.get("Result")) == ("active", "success"),
           f"the signed addon did not run: {good}", boot)
    expect(f"ran /run/torcx/bin/{SIGNED}" in boot.read(f"markers/{SIGNED}"),
           "the signed addon's binary did not run", boot)
    bad = unit_state(boot, f"{UNSIGNED}.service")
    expect(bad.get("ActiveState") != "active" and not boot.read(f"markers/{UNSIGNED}"),
           f"the unsigned addon ran: {bad}", boot)
    images = status_images(boot)
    refused = images.get(UNSIGNED, {})
    expect(refused.get("status") == "failed" and refused.get("stage") == "policy"
           and "torcx_remote_contents.json.asc is missing" in refused.get("error", ""),
           f"torcx status does not report the refused image: {refused}", boot)
    trust = images.get(SIGNED, {}).get("trust") or {}
    expect(images.get(SIGNED, {}).get("status") == "ok" and trust.get("level") == "signed"
           and gpg_keys.fingerprints["trusted"] in trust.get("signers", []),
           f"the signed image is not reported as signed: {images.get(SIGNED)}", boot)
