# SPDX-License-Identifier: Apache-2.0
"""torcx and systemd-sysext in real trixie boots (systemd 257, nspawn, /run noexec):

(a) a torcx profile selects bakery-style sysext images built here (one squashfs under
    its torcx name, one erofs under the bakery's file name; a static binary and a unit
    started by an Upholds= drop-in): torcx checks them and links them into
    /run/extensions, systemd-sysext merges them and their units start in the same boot;
    a third image, for another OS ID, is refused alone and named in `torcx status`;
(b) an image made by `torcx image pack` and turned into a sysext by `torcx image export
    --sysext` is merged by systemd-sysext alone (torcx is not installed in that boot) and
    its service starts.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess

import e2e_fixtures as fx
import pytest
from e2e_nspawn import Guest
from e2e_rootfs import ensure_rootfs as _ensure_rootfs
from e2e_rootfs import is_ready, mirror_problem

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="boots need root (overlay, nspawn, cgroups)"),
    pytest.mark.skipif(not (shutil.which("debootstrap") and shutil.which("systemd-nspawn")),
                       reason="needs debootstrap and systemd-nspawn (systemd-container)"),
    pytest.mark.skipif(not (shutil.which("mksquashfs") and shutil.which("mkfs.erofs")),
                       reason="needs mksquashfs and mkfs.erofs"),
    pytest.mark.skipif(not shutil.which("gcc"), reason="needs gcc (a static test binary)"),
]

SUITE = "trixie"  # systemd 257 (its systemd-sysext loads units with EXTENSION_RELOAD_MANAGER)
MARKERS = "/run/torcx-e2e-sysext"
# name -> (file name in the store, file system, extension-release)
SYSEXTS = {
    "sxsq": ("sxsq:1.torcx.raw", "squashfs", "ID=_any\nEXTENSION_RELOAD_MANAGER=1\n"),
    "sxer": ("sxer-1-x86-64.raw", "erofs",
             "ID=debian\nVERSION_ID=13\nARCHITECTURE=x86-64\nEXTENSION_RELOAD_MANAGER=1\n"),
    "sxbad": ("sxbad:1.torcx.raw", "squashfs",
              "ID=fedora\nVERSION_ID=41\nEXTENSION_RELOAD_MANAGER=1\n"),
}
GOOD = ("sxsq", "sxer")

STATIC_C = r"""
#include <stdio.h>
#include <sys/stat.h>
/* torcx e2e: a static binary in a sysext image proves it ran, and as which path. */
int main(int argc, char **argv) {
        char path[256];
        FILE *f;
        mkdir("@MARKERS@", 0755);
        snprintf(path, sizeof(path), "@MARKERS@/%s", argc > 1 ? argv[1] : "unnamed");
        f = fopen(path, "w");
        if (!f)
                return 1;
        fprintf(f, "ran %s\n", argv[0]);
        return fclose(f) != 0;
}
""".replace("@MARKERS@", MARKERS)


def ensure_rootfs() -> str:
    if not is_ready(SUITE):
        problem = mirror_problem(SUITE)
        if problem:
            pytest.skip(f"cannot build the {SUITE} root folder: {problem}")
    return _ensure_rootfs(SUITE)


@pytest.fixture(scope="module")
def static_binary(tmp_path_factory):
    work = tmp_path_factory.mktemp("static")
    src, out = work / "mark.c", work / "mark"
    src.write_text(STATIC_C)
    r = subprocess.run(["gcc", "-static", "-Os", "-s", "-o", str(out), str(src)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"gcc -static failed (libc.a missing?): {r.stderr.strip()[-200:]}")
    return str(out)


def bakery_image(work: str, name: str, binary: str, fstype: str, release: str, out: str):
    """A sysext image as the bakery bakes one: usr/bin, a unit, an Upholds= drop-in."""
    tree = os.path.join(work, f"{name}-tree")
    units = os.path.join(tree, "usr/lib/systemd/system")
    os.makedirs(os.path.join(tree, "usr/bin"))
    os.makedirs(os.path.join(units, "multi-user.target.d"))
    os.makedirs(os.path.join(tree, "usr/lib/extension-release.d"))
    shutil.copy(binary, os.path.join(tree, "usr/bin", name))
    with open(os.path.join(units, f"{name}.service"), "w") as f:
        f.write(f"[Unit]\nDescription=sysext e2e {name}\n\n[Service]\nType=oneshot\n"
                f"RemainAfterExit=yes\nExecStart=/usr/bin/{name} {name}\n")
    with open(os.path.join(units, "multi-user.target.d", f"10-{name}.conf"), "w") as f:
        f.write(f"[Unit]\nUpholds={name}.service\n")
    with open(os.path.join(tree, "usr/lib/extension-release.d", f"extension-release.{name}"),
              "w") as f:
        f.write(release)
    cmd = (["mksquashfs", tree, out, "-quiet", "-noappend", "-all-root"] if fstype == "squashfs"
           else ["mkfs.erofs", "--all-root", out, tree])
    subprocess.run(cmd, check=True, capture_output=True)
    return out


def checks(units) -> str:
    lines = ["R=/e2e-results",
             "torcx status --json >$R/status.json 2>$R/status.err",
             "torcx status >$R/status.txt 2>&1",
             "systemd-sysext status >$R/sysext-status 2>&1",
             "ls -l /run/extensions >$R/extensions 2>&1",
             f"cp -r {MARKERS} $R/markers 2>/dev/null",
             "journalctl -b -u systemd-sysext -u torcx-apply --no-pager >$R/sysext-journal 2>&1"]
    for unit in units:
        lines.append(f"systemctl show {unit} -p LoadState,ActiveState,Result,FragmentPath "
                     f">$R/show-{unit} 2>&1")
    return "\n".join(lines) + "\n"


def expect(condition, what: str, boot) -> None:
    assert condition, f"{what}\n{boot.evidence()}"


def test_profile_selects_sysext_images(static_binary, tmp_path):
    """(a) Two sysext images of a torcx profile (squashfs, erofs) are merged and their units
    start in the same boot; an image for another OS ID is refused alone, named in status."""
    from torcx import cli

    work = str(tmp_path)
    wheel = fx.build_wheel(os.path.join(work, "wheel"))
    units = [f"{n}.service" for n in SYSEXTS] + ["systemd-sysext.service",
                                                 "torcx-apply.service"]
    with Guest(ensure_rootfs(), "trixie-sysext-profile") as guest:
        rc = cli.main(["install-boot", "--root", guest.root, "--wheel", wheel],
                      stdout=io.StringIO())
        assert rc == 0
        store = guest.path(fx.STORE)
        os.makedirs(store)
        for name, (filename, fstype, release) in SYSEXTS.items():
            bakery_image(work, name, static_binary, fstype, release,
                         os.path.join(store, filename))
        images = ", ".join(f'{{"name": "{n}", "reference": "1"}}' for n in SYSEXTS)
        guest.write("/etc/torcx/profiles/e2e.json",
                    f'{{"kind": "profile-manifest-v0", "value": {{"images": [{images}]}}}}\n')
        guest.write("/etc/torcx/next-profile", "e2e\n")
        boot = guest.boot(checks(units), bind_loop=True)
    expect(boot.finished and not boot.timed_out and boot.rc == 0,
           "the guest did not boot, probe and power off cleanly", boot)
    expect(boot.read("multi-user").strip() in ("", "active"), "multi-user not reached", boot)
    sysext = fx.show(boot.read("show-systemd-sysext.service"))
    expect(sysext.get("ActiveState") == "active", f"systemd-sysext did not run: {sysext}",
           boot)
    for name in GOOD:
        state = fx.show(boot.read(f"show-{name}.service"))
        expect((state.get("ActiveState"), state.get("Result")) == ("active", "success"),
               f"{name}.service did not start: {state}", boot)
        expect(state.get("FragmentPath") == f"/usr/lib/systemd/system/{name}.service",
               f"{name}.service not loaded from the merged /usr: {state}", boot)
        expect(boot.read(f"markers/{name}").strip() == f"ran /usr/bin/{name}",
               f"{name}'s static binary did not run", boot)
        expect(f"{name}.raw ->" in boot.read("extensions"),
               f"{name} not linked into /run/extensions", boot)
    expect("sxbad" not in boot.read("extensions") and not boot.read("markers/sxbad"),
           "the image for another OS was handed to systemd-sysext", boot)
    bad = fx.show(boot.read("show-sxbad.service"))
    expect(bad.get("LoadState") == "not-found", f"sxbad.service exists: {bad}", boot)
    status = {im["name"]: im for im in
              json.loads(boot.read("status.json") or "{}").get("value", {}).get("images", [])}
    for name in GOOD:
        expect(status.get(name, {}).get("status") == "ok", f"{name} not ok in status", boot)
    refusal = (status.get("sxbad", {}).get("sysext") or {}).get("refusal") or {}
    expect(status.get("sxbad", {}).get("status") == "failed" and refusal.get("rule") == "ID"
           and refusal.get("values", {}).get("ID") == "fedora"
           and refusal.get("values", {}).get("host") == "debian",
           f"torcx status does not name the refused rule: {status.get('sxbad')}", boot)
    expect("ID='fedora' but the host is 'debian'" in boot.read("status.txt"),
           "torcx status (text) does not say why sxbad was refused", boot)


def test_exported_image_merged_by_systemd_sysext_alone(tmp_path):
    """(b) `torcx image pack` then `torcx image export --sysext`: systemd-sysext merges the
    result in a boot without torcx, and the image's service starts from /usr."""
    from torcx import cli

    work = str(tmp_path)
    name = "hello-export"
    archive = fx.pack(fx.addon_tree(work, name), name, os.path.join(work, "store"), "tgz")
    out = os.path.join(work, "out")
    rc = cli.main(["image", "export", archive, "--sysext", "-o", out, "--id", "debian",
                   "--version-id", "13", "--format", "erofs"], stdout=io.StringIO())
    assert rc == 0
    unit = f"{name}.service"
    with Guest(ensure_rootfs(), "trixie-sysext-export") as guest:
        assert not os.path.exists(guest.path("/usr/bin/torcx"))
        os.makedirs(guest.path("/var/lib/extensions"))
        shutil.copy(os.path.join(out, f"{name}.raw"), guest.path("/var/lib/extensions"))
        guest.enable("systemd-sysext.service", "sysinit.target")
        boot = guest.boot(checks([unit, "systemd-sysext.service"]) +
                          "cp -r /run/torcx-e2e $R/addon-markers 2>/dev/null\n"
                          "getent group >$R/groups 2>&1\n", bind_loop=True)
    expect(boot.finished and not boot.timed_out and boot.rc == 0,
           "the guest did not boot, probe and power off cleanly", boot)
    state = fx.show(boot.read(f"show-{unit}"))
    expect((state.get("ActiveState"), state.get("Result")) == ("active", "success"),
           f"{unit} did not start: {state}", boot)
    expect(state.get("FragmentPath") == f"/usr/lib/systemd/system/{unit}",
           f"{unit} not loaded from the merged /usr: {state}", boot)
    marker = boot.read(f"addon-markers/{name}")
    expect(f"ran /usr/bin/{name}" in marker, f"the addon did not run from /usr ({marker!r})",
           boot)
    expect(name in boot.read("sysext-status"), "systemd-sysext status does not list it", boot)
    expect(boot.read("failed-units").strip() == "", "some unit failed", boot)
