# SPDX-License-Identifier: Apache-2.0
"""torcx in real systemd boots: Debian bookworm (systemd 252, generators share PID 1's
mounts) and trixie (systemd 257, generators sandboxed), under systemd-nspawn with /run
remounted noexec as on a real boot. The guest runs torcx with its own python3 from the
abi3 wheel, installed by `torcx install-boot --root GUEST --wheel W`."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import statistics

import e2e_fixtures as fx
import e2e_nspawn
import pytest
from e2e_nspawn import LOOP_SPARE, Guest, ensure_free_loops, release_loops
from e2e_rootfs import ensure_rootfs as _ensure_rootfs
from e2e_rootfs import is_ready, mirror_problem

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="boots need root (overlay, nspawn, cgroups)"),
    pytest.mark.skipif(not (shutil.which("debootstrap") and shutil.which("systemd-nspawn")),
                       reason="needs debootstrap and systemd-nspawn (systemd-container)"),
    pytest.mark.skipif(not shutil.which("mksquashfs"), reason="needs mksquashfs"),
]

SUITES = ["bookworm", "trixie"]
# Where the addon units come from: systemd 252 runs the generator in PID 1's mount
# namespace, so it applies by itself; 257 sandboxes it, so it only plans (units in its
# output folder) and torcx-apply.service applies.
UNIT_SOURCE = {"bookworm": "/run/systemd/system/", "trixie": "/run/systemd/generator/"}
GOOD = {"hello-tgz": "tgz", "hello-sqfs": "squashfs"}
BROKEN = "broken-tgz"


@pytest.fixture(scope="session")
def wheel(tmp_path_factory):
    return fx.build_wheel(str(tmp_path_factory.mktemp("wheel")))


USER_ADDON = "hello-user"


@pytest.fixture(scope="session")
def user_archive(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("user-addon"))
    return fx.pack(fx.user_addon_tree(work, USER_ADDON), USER_ADDON,
                   os.path.join(work, "store"), "tgz")


@pytest.fixture(scope="session")
def archives(tmp_path_factory):
    """name -> archive path: the two good addons and one whose payload is corrupt."""
    work = str(tmp_path_factory.mktemp("addons"))
    store = os.path.join(work, "store")
    out = {name: fx.pack(fx.addon_tree(work, name), name, store, fmt)
           for name, fmt in GOOD.items()}
    out[BROKEN] = fx.pack(fx.addon_tree(work, BROKEN), BROKEN, store, "tgz")
    fx.corrupt_payload(out[BROKEN], f"bin/{BROKEN}")
    return out


def ensure_rootfs(suite: str) -> str:
    """The cached SUITE root folder; skipped (not failed) when no mirror can build it."""
    if not is_ready(suite):
        problem = mirror_problem(suite)
        if problem:
            pytest.skip(f"cannot build the {suite} root folder, Debian mirror unusable: "
                        f"{problem}")
    return _ensure_rootfs(suite)


def torcx_guest(suite: str, label: str, wheel: str, archives: dict, names, *,
                store: str = fx.STORE, prepared: bool = True) -> Guest:
    """A throwaway guest with torcx installed, the archives in ``store``, a profile.

    ``prepared``: the profile is selected with `torcx profile set-next`, which prepares
    the unit plan of the next boot; otherwise next-profile is written by hand (no plan).
    """
    from torcx import cli

    guest = Guest(ensure_rootfs(suite), label)
    try:
        rc = cli.main(["install-boot", "--root", guest.root, "--wheel", wheel],
                      stdout=io.StringIO())
        assert rc == 0, f"torcx install-boot --root {guest.root} exited {rc}"
        os.makedirs(guest.path(store))
        for name in names:
            shutil.copy(archives[name], guest.path(store))
        guest.write("/etc/torcx/profiles/e2e.json", fx.profile_json(names))
        if prepared:
            added = ensure_free_loops(LOOP_SPARE)  # set-next loop-mounts squashfs images
            try:
                rc = cli.main(["--root", guest.root, "profile", "set-next", "e2e"])
            finally:
                release_loops(added)
            assert rc == 0, f"torcx profile set-next --root {guest.root} exited {rc}"
        else:
            guest.write("/etc/torcx/next-profile", "e2e\n")
    except BaseException:
        guest.close()
        raise
    return guest


def expect(condition, what: str, boot) -> None:
    assert condition, f"{what}\n{boot.evidence()}"


def status_images(boot) -> dict:
    doc = json.loads(boot.read("status.json") or "{}")
    return {im["name"]: im for im in doc.get("value", {}).get("images", [])}


def unit_state(boot, unit: str) -> dict:
    return fx.show(boot.read(f"show-{unit}"))


@pytest.mark.parametrize("suite", SUITES)
def test_addons_start_in_the_boot_that_applies_them(suite, wheel, archives):
    """A tgz and a squashfs addon are applied, verified and sealed; their units run their
    binaries from /run/torcx/bin and their sysusers groups exist in that same boot, with
    /run noexec."""
    units = [f"{n}.service" for n in GOOD] + ["torcx-apply.service"]
    with torcx_guest(suite, f"{suite}-torcx", wheel, archives, list(GOOD)) as guest:
        boot = guest.boot(fx.checks_script(units), bind_loop=True)
    expect(boot.finished and not boot.timed_out and boot.rc == 0,
           "the guest did not boot, probe and power off cleanly", boot)
    expect(boot.read("system-state").strip() == "running", "system not running", boot)
    expect(boot.read("multi-user").strip() == "active", "multi-user.target not reached", boot)
    for name in GOOD:
        state = unit_state(boot, f"{name}.service")
        expect((state.get("ActiveState"), state.get("Result")) == ("active", "success"),
               f"{name}.service did not run: {state}", boot)
        expect(state.get("FragmentPath", "").startswith(UNIT_SOURCE[suite]),
               f"{name}.service not loaded from {UNIT_SOURCE[suite]}: {state}", boot)
        marker = boot.read(f"markers/{name}")
        expect(f"ran /run/torcx/bin/{name} -> /run/torcx/unpack/{name}/bin/{name}" in marker,
               f"{name} did not run from /run/torcx/bin (marker: {marker!r})", boot)
    if suite == "trixie":
        apply_unit = unit_state(boot, "torcx-apply.service")
        expect(apply_unit.get("ActiveState") == "active", "torcx-apply.service did not run",
               boot)
    groups = {line.split(":")[0] for line in boot.read("groups").splitlines()}
    expect(set(GOOD) <= groups, f"the addons' sysusers groups were not created: {groups}",
           boot)
    images = status_images(boot)
    expect(boot.read("status.rc").strip() == "0", "torcx status did not report success", boot)
    for name in GOOD:
        expect(images.get(name, {}).get("status") == "ok", f"{name} not applied", boot)
    for name in GOOD:
        expect(images[name].get("verified") is True, f"{name} was not verified", boot)
    seal = boot.read("seal")
    expect('TORCX_BINDIR="/run/torcx/bin"' in seal and "TORCX_UPPER_PROFILE=\"e2e\"" in seal,
           f"seal file missing or wrong: {seal!r}", boot)
    expect(boot.read("unpack-write.rc").strip() not in ("", "0")
           and "Read-only" in boot.read("unpack-write.err"),
           "the unpack dir is writable", boot)
    expect(boot.read("failed-units").strip() == "", "some unit failed", boot)
    complaints = [ln for ln in boot.read("journal").splitlines()
                  if re.search(r"(torcx-apply\.service|50-torcx-apply\.conf).*"
                               r"(Unknown|Failed to parse|Ignoring|cycle)", ln)]
    expect(not complaints, f"systemd complains about the torcx units: {complaints}", boot)
    for name in GOOD:
        after = fx.show(boot.read(f"reloaded-{name}.service"))
        expect((after.get("LoadState"), after.get("ActiveState")) == ("loaded", "active"),
               f"{name}.service lost by a daemon-reload: {after}", boot)


NEEDING = "hello-needs"


@pytest.fixture(scope="session")
def needing_archive(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("needing-addon"))
    return fx.pack(fx.needing_addon_tree(work, NEEDING), NEEDING,
                   os.path.join(work, "store"), "tgz")


def condition_rechecks(journal: str) -> dict:
    """{unit: n} of the units PID 1 skipped for an unmet condition more than once."""
    seen: dict = {}
    for m in re.finditer(r"systemd\[1\]: (\S+) - .* skipped, unmet condition check", journal):
        seen[m.group(1)] = seen.get(m.group(1), 0) + 1
    return {u: n for u, n in seen.items() if n > 1}


@pytest.mark.parametrize("suite", ["trixie"])
def test_units_of_an_unplanned_image_start_after_the_apply(suite, wheel, archives,
                                                           needing_archive):
    """Without a prepared plan (next-profile written by hand) the sandboxed generator writes
    no addon unit; torcx-apply.service starts them once applied, with the units they
    require, after basic.target, without starting again what the boot had settled (the
    units sysinit.target wants that were skipped for their conditions: re-enqueued mount
    units made the boot wait for PID 1's mount rate limit), and leaves a plan behind for
    the next boot."""
    addons = dict(archives, **{NEEDING: needing_archive})
    names = list(GOOD) + [NEEDING]
    units = [f"{n}.service" for n in names] + [f"{NEEDING}-helper.service",
                                               "torcx-apply.service"]
    checks = fx.checks_script(units)
    for unit in units + ["basic.target"]:
        checks += (f"systemctl show {unit} -p InactiveExitTimestampMonotonic,"
                   f"ActiveEnterTimestampMonotonic >$R/times-{unit} 2>&1\n")
    with torcx_guest(suite, f"{suite}-unplanned", wheel, addons, names,
                     prepared=False) as guest:
        boot = guest.boot(checks, bind_loop=True)
        plan = json.loads(open(guest.path("/var/lib/torcx/unit-plan.json")).read())
    expect(boot.finished and not boot.timed_out and boot.rc == 0,
           "the guest did not boot, probe and power off cleanly", boot)
    for name in GOOD:
        state = unit_state(boot, f"{name}.service")
        expect((state.get("ActiveState"), state.get("Result")) == ("active", "success"),
               f"{name}.service did not run: {state}", boot)
        expect(state.get("FragmentPath", "").startswith("/run/systemd/system/"),
               f"{name}.service not loaded from the apply's units: {state}", boot)
        expect(f"ran /run/torcx/bin/{name}" in boot.read(f"markers/{name}"),
               f"{name} did not run from /run/torcx/bin", boot)
    for unit in (f"{NEEDING}.service", f"{NEEDING}-helper.service"):
        state = unit_state(boot, unit)
        expect((state.get("ActiveState"), state.get("Result")) == ("active", "success"),
               f"{unit} did not run: {state}", boot)
    expect(boot.read(f"markers/{NEEDING}") == "ran helper\nran main\n",
           f"{NEEDING}: its required helper did not run first: "
           f"{boot.read(f'markers/{NEEDING}')!r}", boot)
    basic = fx.show(boot.read("times-basic.target")).get("ActiveEnterTimestampMonotonic")
    for name in names:
        began = fx.show(boot.read(f"times-{name}.service")).get("InactiveExitTimestampMonotonic")
        expect(basic and began and int(began) >= int(basic),
               f"{name}.service started before basic.target ({began} < {basic})", boot)
    rechecks = condition_rechecks(boot.read("journal"))
    expect(not rechecks, f"units the boot had settled were started again: {rechecks}", boot)
    expect(boot.read("failed-units").strip() == "", "some unit failed", boot)
    planned = {e["name"] for e in plan["value"]["archives"].values()}
    expect(planned == set(names), f"the apply did not prepare the next boot: {planned}", boot)


@pytest.mark.parametrize("suite", SUITES)
def test_addon_users_on_every_boot(suite, wheel, user_archive):
    """On a machine that booted before (/etc/.updated, /var/.updated: systemd-sysusers.service
    is skipped), an addon from the user store, selected by the user profile, still gets its
    sysusers.d user before its service runs as that user, and its tmpfiles.d folder owned by
    that user."""
    name = USER_ADDON
    unit = f"{name}.service"
    with torcx_guest(suite, f"{suite}-users", wheel, {name: user_archive}, [name],
                     store="/var/lib/torcx/store") as guest:
        for folder in ("/etc", "/var"):
            guest.write(f"{folder}/.updated", fx.UPDATED)
        checks = fx.checks_script([unit, "systemd-sysusers.service"])
        checks += (f"stat -c '%U %a' /run/{name}-state >$R/state-owner 2>&1\n"
                   f"cat /run/{name}-state/ran >$R/state-ran 2>&1\n"
                   f"getent passwd {name} >$R/passwd 2>&1\n")
        boot = guest.boot(checks, bind_loop=True)
    expect(boot.finished and not boot.timed_out and boot.rc == 0,
           "the guest did not boot, probe and power off cleanly", boot)
    sysusers = unit_state(boot, "systemd-sysusers.service")
    expect(sysusers.get("ActiveState") != "active",
           f"systemd-sysusers.service ran: the scenario is not a later boot: {sysusers}", boot)
    expect(boot.read("passwd").startswith(f"{name}:"), "the addon user was not created", boot)
    state = unit_state(boot, unit)
    expect((state.get("ActiveState"), state.get("Result")) == ("active", "success"),
           f"{unit} did not run as its user: {state}", boot)
    expect(boot.read("state-owner").strip() == f"{name} 750",
           f"the tmpfiles.d folder is not owned by the addon user: "
           f"{boot.read('state-owner')!r}", boot)
    expect(boot.read("state-ran").strip() == f"ran as {name}",
           f"the service did not run as {name}: {boot.read('state-ran')!r}", boot)
    expect(boot.read("failed-units").strip() == "", "some unit failed", boot)


@pytest.mark.parametrize("suite", SUITES)
def test_existing_addon_users_cost_no_sysusers_run(suite, wheel, user_archive):
    """A later boot whose /etc already has the addon's user and group: torcx-sysusers.service
    is skipped (nothing on the boot's critical path), and the addon still runs as its user
    in its tmpfiles.d folder."""
    name = USER_ADDON
    unit = f"{name}.service"
    with torcx_guest(suite, f"{suite}-users-exist", wheel, {name: user_archive}, [name],
                     store="/var/lib/torcx/store") as guest:
        for folder in ("/etc", "/var"):
            guest.write(f"{folder}/.updated", fx.UPDATED)
        for db, line in (("passwd", f"{name}:x:990:990::/run/{name}-state:/usr/sbin/nologin"),
                         ("group", f"{name}:x:990:")):
            with open(guest.path(f"/etc/{db}"), "a") as f:
                f.write(line + "\n")
        checks = fx.checks_script([unit, "torcx-sysusers.service"])
        checks += (f"systemctl show torcx-sysusers.service -p ConditionResult "
                   f">$R/sysusers-condition 2>&1\n"
                   f"cat /run/{name}-state/ran >$R/state-ran 2>&1\n")
        boot = guest.boot(checks, bind_loop=True)
    expect(boot.finished and not boot.timed_out and boot.rc == 0,
           "the guest did not boot, probe and power off cleanly", boot)
    expect(boot.read("sysusers-condition").strip() == "ConditionResult=no",
           f"torcx-sysusers.service ran although the users exist: "
           f"{boot.read('sysusers-condition')!r}", boot)
    state = unit_state(boot, unit)
    expect((state.get("ActiveState"), state.get("Result")) == ("active", "success"),
           f"{unit} did not run as its user: {state}", boot)
    expect(boot.read("state-ran").strip() == f"ran as {name}",
           f"the service did not run as {name}: {boot.read('state-ran')!r}", boot)
    expect(boot.read("failed-units").strip() == "", "some unit failed", boot)


def test_loop_nodes_are_ensured_and_released():
    """The harness makes free loop devices with their nodes exist before a boot, and
    afterwards removes only what it added."""
    before = sorted(d for d in os.listdir("/dev") if re.fullmatch(r"loop\d+", d))
    added = ensure_free_loops(LOOP_SPARE)
    try:
        free = [i for i, bound in e2e_nspawn._loop_devices().items()
                if not bound and os.path.exists(f"/dev/loop{i}")]
        assert len(free) >= LOOP_SPARE
    finally:
        release_loops(added)
    after = sorted(d for d in os.listdir("/dev") if re.fullmatch(r"loop\d+", d))
    busy = {f"loop{i}" for i, device, node in added if device and node}  # taken meanwhile
    assert set(after) >= set(before) and set(after) - set(before) <= busy


@pytest.mark.parametrize("suite", SUITES)
def test_corrupt_addon_fails_alone(suite, wheel, archives):
    """An addon whose payload does not match its digest list fails alone: the good addon
    still runs and the machine still reaches multi-user.target."""
    names = ["hello-tgz", BROKEN]
    units = [f"{n}.service" for n in names] + ["torcx-apply.service"]
    with torcx_guest(suite, f"{suite}-corrupt", wheel, archives, names) as guest:
        boot = guest.boot(fx.checks_script(units), bind_loop=True)
    expect(boot.finished and not boot.timed_out and boot.rc == 0,
           "the guest did not boot, probe and power off cleanly", boot)
    expect(boot.read("multi-user").strip() == "active", "multi-user.target not reached", boot)
    good = unit_state(boot, "hello-tgz.service")
    expect(good.get("ActiveState") == "active", f"the good addon did not run: {good}", boot)
    expect("ran /run/torcx/bin/hello-tgz" in boot.read("markers/hello-tgz"),
           "the good addon's binary did not run", boot)
    bad = unit_state(boot, f"{BROKEN}.service")
    expect(bad.get("ActiveState") != "active" and not boot.read(f"markers/{BROKEN}"),
           f"the corrupt addon ran: {bad}", boot)
    images = status_images(boot)
    expect(images.get(BROKEN, {}).get("status") == "failed"
           and "digest" in images[BROKEN].get("error", "").lower(),
           f"torcx status does not report the corrupt image: {images.get(BROKEN)}", boot)
    expect(images.get("hello-tgz", {}).get("status") == "ok", "good image not applied", boot)
    expect(fx.show(boot.read("show-hello-tgz.service")).get("LoadState") == "loaded",
           "good unit not loaded", boot)


@pytest.mark.parametrize("suite", SUITES)
def test_boot_time_with_and_without_torcx(suite, wheel, archives, request):
    """The same root folder boots with and without torcx (two addons), alternately, three
    times each; the guest's own boot times (systemd-analyze) give the cost of torcx."""
    runs: dict = {"without torcx": [], "with torcx": [], "torcx-apply.service": [],
                  "generator": []}
    for i in range(3):
        with Guest(ensure_rootfs(suite), f"{suite}-plain-{i}") as guest:
            plain = guest.boot("true\n")
        with torcx_guest(suite, f"{suite}-timed-{i}", wheel, archives, list(GOOD)) as guest:
            timed = guest.boot(fx.checks_script([]), bind_loop=True)
        for boot in (plain, timed):
            expect(boot.finished and boot.rc == 0
                   and boot.read("system-state").strip() == "running",
                   "the guest did not boot cleanly", boot)
        runs["without torcx"].append(plain.userspace_ms)
        runs["with torcx"].append(timed.userspace_ms)
        runs["torcx-apply.service"].append(timed.unit_ms("torcx-apply.service"))
        runs["generator"].append(timed.logged_ms(  # plan (257) or whole apply (252)
            "torcx-generator.log", r"planned in ([\d.]+) ms|applied .*\(([\d.]+) ms\)$"))
    t = {k: statistics.median(v) for k, v in runs.items() if None not in v}
    line = (f"torcx boot cost, {suite} (median guest boot, systemd-analyze): "
            f"{t['without torcx']:.0f} ms without torcx, {t['with torcx']:.0f} ms with two "
            f"addons ({t['with torcx'] - t['without torcx']:+.0f} ms)")
    for part in ("generator", "torcx-apply.service"):
        if part in t:
            line += f"; {part} {t[part]:.0f} ms"
    print(line)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:  # in the run's output, pass or fail
        with capture.global_and_fixture_disabled():
            reporter.write("\n")  # progress dots or the test's name precede it
            reporter.write_line(line)
