# SPDX-License-Identifier: Apache-2.0
"""Boot benchmark: what torcx costs a real boot, against no addons and systemd-sysext.

Run on demand, as root, where the boot tests run (systemd-nspawn, debootstrap; the
root folders are the e2e cache); never part of the test run's timing assertions:

    python3 benchmarks/bootbench.py [--suite trixie] [--rounds 7] [--baseline SRC]
    python3 benchmarks/bootbench.py --reference      # the reference profile (565 MB)

Every round boots each variant once, in a rotating order (interleaved, so load from
other work spreads over all of them); the tables give medians. Variants:

- ``none``: the root folder as it is;
- ``torcx``: two small addons (a tgz and a squashfs, each with a oneshot unit wanted
  by multi-user.target), selected with ``torcx profile set-next`` (the unit plan is
  prepared, the generator opens no archive);
- ``torcx, no plan``: the same with next-profile written by hand (no plan: the units
  start after the apply);
- ``torcx (baseline)``: with ``--baseline SRC``, the same as ``torcx, no plan`` with a
  wheel built from another source tree (e.g. ``git archive`` of an older commit, which
  may not prepare plans); with ``--baseline-prepared``, as ``torcx`` (set-next);
- ``systemd-sysext``: the same two addons as extensions (a folder and a squashfs
  ``.raw``) merged by ``systemd-sysext.service``; their units are started by a oneshot
  ``systemctl start --no-block --job-mode=ignore-requirements`` after the merge (the
  .wants links an extension brings are not seen by the boot's jobs, computed before
  the merge). The job mode keeps the measure fair to sysext: a plain start from before
  sysinit.target makes PID 1 re-enqueue the units sysinit.target wants that were
  skipped for their conditions, among them mount units (sys-kernel-config.mount, ...),
  and PID 1 holds mount unit starts while its mountinfo monitor is rate-limited (more
  than 5 mount events a second, which the merge makes): sysinit.target then waits for
  the limit to expire, +800 ms of boot that is the starter's, not sysext's
  (``--sysext-plain-start`` adds that variant to show it). torcx's late start of
  unplanned images avoids it the same way (torcx.apply.bootunits.start_late).

Each guest is a machine's first boot since its last /usr update (systemd-sysusers.service
and the other ``ConditionNeedsUpdate=`` units run), unless ``--later-boot``: then every
guest has ``/etc/.updated`` and ``/var/.updated``, and the addons' groups exist in
``/etc/group``, as on every later boot of a machine that has these addons (torcx then
skips ``torcx-sysusers.service``: torcx.apply.sysusers).

Measured from PID 1's own timestamps (``systemctl show``): userspace boot to the
default target; the generator phase (GeneratorsStart to GeneratorsFinish); each
service's activation (InactiveExit to ActiveEnter); when the addon units became
active (since userspace start). torcx's own overhead is the generator phase growth
over ``none`` plus ``torcx-apply.service``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [os.path.join(REPO, "tests", "e2e"), REPO]

import e2e_fixtures as fx  # noqa: E402
from e2e_nspawn import LOOP_SPARE, Guest, ensure_free_loops, release_loops  # noqa: E402
from e2e_rootfs import ensure_rootfs  # noqa: E402

ADDONS = {"hello-tgz": "tgz", "hello-sqfs": "squashfs"}
SERVICES = ("torcx-apply.service", "torcx-sysusers.service", "systemd-sysext.service")
MANAGER = ("UserspaceTimestampMonotonic", "FinishTimestampMonotonic",
           "GeneratorsStartTimestampMonotonic", "GeneratorsFinishTimestampMonotonic")

SYSEXT_STARTER = """[Unit]
Description=Start the units of the merged system extensions
DefaultDependencies=no
After=systemd-sysext.service
Before=sysinit.target

[Service]
Type=oneshot
ExecStart=systemctl start --no-block {mode}{units}
"""
FAIR_MODE = "--job-mode=ignore-requirements "  # the addon units need nothing but the boot's

PROBE_CHECKS = """R=/e2e-results
systemctl show -p {manager} >$R/manager 2>&1
for u in {units}; do
  systemctl show "$u" -p ActiveState,InactiveExitTimestampMonotonic,\
ActiveEnterTimestampMonotonic >"$R/unit-$u" 2>&1
done
"""


def build_wheel(src: str, work: str) -> str:
    """The abi3 wheel of the torcx source tree ``src``."""
    saved = fx.REPO
    fx.REPO = src
    try:
        return fx.build_wheel(work)
    finally:
        fx.REPO = saved


# -- the guests ------------------------------------------------------------------------

def torcx_guest(rootfs: str, label: str, wheel: str, archives: dict, *, prepared: bool):
    from torcx import cli

    guest = Guest(rootfs, label)
    try:
        rc = cli.main(["install-boot", "--root", guest.root, "--wheel", wheel],
                      stdout=open(os.devnull, "w"))  # noqa: SIM115
        if rc != 0:
            raise RuntimeError(f"install-boot --root {guest.root} exited {rc}")
        os.makedirs(guest.path(fx.STORE))
        for path in archives.values():
            shutil.copy(path, guest.path(fx.STORE))
        guest.write("/etc/torcx/profiles/bench.json", fx.profile_json(list(archives)))
        if prepared:
            added = ensure_free_loops(LOOP_SPARE)
            try:
                rc = cli.main(["--root", guest.root, "profile", "set-next", "bench"],
                              stderr=open(os.devnull, "w"))  # noqa: SIM115
            finally:
                release_loops(added)
            if rc != 0:
                raise RuntimeError(f"set-next --root {guest.root} exited {rc}")
        else:
            guest.write("/etc/torcx/next-profile", "bench\n")
    except BaseException:
        guest.close()
        raise
    return guest


def later_boot(guest: Guest, addons=()) -> Guest:
    """The guest as on a later boot: /usr not updated since the last boot, and the addons'
    groups (``g NAME -`` in their sysusers.d files) created by an earlier boot."""
    for folder in ("/etc", "/var"):
        guest.write(f"{folder}/.updated", fx.UPDATED)
    with open(guest.path("/etc/group"), "a") as f:
        for i, name in enumerate(addons):
            f.write(f"{name}:x:{900 + i}:\n")
    return guest


def sysext_guest(rootfs: str, label: str, trees: dict, squashfs: str, *,
                 mode: str = FAIR_MODE) -> Guest:
    """The two addons as system extensions: ``hello-tgz`` a folder, ``hello-sqfs`` a .raw;
    ``mode``: the starter's job mode option (see the module's docstring)."""
    guest = Guest(rootfs, label)
    try:
        for name, tree in trees.items():
            if name == "hello-sqfs":
                os.makedirs(guest.path("/var/lib/extensions"), exist_ok=True)
                shutil.copy(squashfs, guest.path(f"/var/lib/extensions/{name}.raw"))
            else:
                shutil.copytree(tree, guest.path(f"/var/lib/extensions/{name}"), symlinks=True)
        guest.enable("systemd-sysext.service", "sysinit.target")
        # PID 1 computed the boot's jobs before the merge: units of an extension are not
        # started by the .wants links it brings; start them as torcx does (after the merge).
        guest.write("/etc/systemd/system/sysext-addons.service", SYSEXT_STARTER.format(
            mode=mode, units=" ".join(f"{n}.service" for n in trees)))
        guest.enable("sysext-addons.service", "sysinit.target")
    except BaseException:
        guest.close()
        raise
    return guest


def os_release(rootfs: str) -> dict:
    out = {}
    for line in open(os.path.join(rootfs, "usr/lib/os-release"), encoding="utf-8"):
        key, _, value = line.strip().partition("=")
        out[key] = value.strip('"')
    return out


def sysext_tree(parent: str, name: str, release: dict) -> str:
    """An extension holding the same addon under /usr, its unit enabled for multi-user."""
    root = os.path.join(parent, name)
    units = os.path.join(root, "usr/lib/systemd/system")
    os.makedirs(os.path.join(units, "multi-user.target.wants"))
    os.makedirs(os.path.join(root, "usr/bin"))
    os.makedirs(os.path.join(root, "usr/lib/extension-release.d"))
    with open(os.path.join(root, "usr/bin", name), "w") as f:
        f.write(f"#!/bin/sh\nmkdir -p {fx.MARKERS}\necho ran >{fx.MARKERS}/{name}\n")
    os.chmod(os.path.join(root, "usr/bin", name), 0o755)
    with open(os.path.join(units, f"{name}.service"), "w") as f:
        f.write(f"[Unit]\nDescription=sysext addon {name}\n\n[Service]\nType=oneshot\n"
                f"RemainAfterExit=yes\nExecStart=/usr/bin/{name}\n\n"
                "[Install]\nWantedBy=multi-user.target\n")
    os.symlink(f"../{name}.service", os.path.join(units, "multi-user.target.wants",
                                                  f"{name}.service"))
    with open(os.path.join(root, f"usr/lib/extension-release.d/extension-release.{name}"),
              "w") as f:
        f.write(f"ID={release.get('ID', 'debian')}\n"
                f"VERSION_ID={release.get('VERSION_ID', '')}\n")
    return root


# -- measuring ---------------------------------------------------------------------------

def _ms(boot, name: str, key: str) -> float | None:
    value = fx.show(boot.read(name)).get(key, "")
    return int(value) / 1000 if value.isdigit() and int(value) else None


def measure(boot, units) -> dict:
    if not (boot.finished and boot.rc == 0):
        raise RuntimeError(boot.evidence())
    m = {}
    start = _ms(boot, "manager", "UserspaceTimestampMonotonic") or 0.0
    finish = _ms(boot, "manager", "FinishTimestampMonotonic")
    m["boot"] = finish - start if finish else boot.userspace_ms
    g0 = _ms(boot, "manager", "GeneratorsStartTimestampMonotonic")
    g1 = _ms(boot, "manager", "GeneratorsFinishTimestampMonotonic")
    m["generators"] = g1 - g0 if g0 and g1 else None
    for unit in SERVICES:
        a = _ms(boot, f"unit-{unit}", "InactiveExitTimestampMonotonic")
        b = _ms(boot, f"unit-{unit}", "ActiveEnterTimestampMonotonic")
        m[unit] = b - a if a and b else None
    active = []
    for unit in units:
        state = fx.show(boot.read(f"unit-{unit}"))
        at = _ms(boot, f"unit-{unit}", "ActiveEnterTimestampMonotonic")
        if state.get("ActiveState") != "active" or at is None:
            active = None
            break
        active.append(at - start)
    m["addons active"] = max(active) if active else None
    return m


def checks(units) -> str:
    return PROBE_CHECKS.format(manager=",".join(MANAGER), units=" ".join(units + list(SERVICES)))


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def table(results: dict, rounds: int, title: str) -> str:
    none = {k: median([r[k] for r in results["none"]]) for k in results["none"][0]}
    lines = [f"{title} (median of {rounds} interleaved boots; ms)", "",
             "| variant | boot to default target | vs none | generator phase | growth "
             "| apply service | torcx overhead | torcx-sysusers | sysext service "
             "| addon units active at |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for variant, runs in results.items():
        med = {k: median([r[k] for r in runs]) for k in runs[0]}
        growth = (med["generators"] - none["generators"]
                  if med["generators"] is not None and none["generators"] is not None else None)
        overhead = None
        if variant.startswith("torcx") and growth is not None:
            overhead = growth + (med["torcx-apply.service"] or 0.0)

        def f(v, signed=False):
            return "-" if v is None else (f"{v:+.0f}" if signed else f"{v:.0f}")

        lines.append(
            f"| {variant} | {f(med['boot'])} | {f(med['boot'] - none['boot'], True)} "
            f"| {f(med['generators'])} | {f(growth, True)} | {f(med['torcx-apply.service'])} "
            f"| {f(overhead)} | {f(med['torcx-sysusers.service'])} "
            f"| {f(med['systemd-sysext.service'])} | {f(med['addons active'])} |")
    return "\n".join(lines)


def run_rounds(variants: dict, units: list, rounds: int, log) -> dict:
    """variants: {name: factory() -> Guest}; every round boots each once, order rotated."""
    names = list(variants)
    results = {n: [] for n in names}
    for i in range(rounds):
        order = names[i % len(names):] + names[:i % len(names)]
        for name in order:
            with variants[name](f"bench-{i}-{len(results[name])}") as guest:
                boot = guest.boot(checks(units), bind_loop=True)
            m = measure(boot, [] if name == "none" else units)
            results[name].append(m)
            log(f"round {i + 1}/{rounds} {name}: " + ", ".join(
                f"{k} {v:.0f}" for k, v in m.items() if v is not None))
    return results


# -- the reference profile ---------------------------------------------------------------

def reference_archives(work: str) -> dict:
    """The benchmark workload's images (GNU tar, units after the payload) with a oneshot
    unit wanted by multi-user.target each, so that their start can be timed."""
    import json

    import xxhash

    sys.path.insert(0, HERE)
    import workload

    w = workload.ensure()
    os.makedirs(work, exist_ok=True)
    out = {}
    for image in w.images:
        name = f"ref-{image.name}"
        tree = os.path.join(work, name)
        subprocess.run(["cp", "-al", image.tree, tree], check=True)
        units = os.path.join(tree, "lib/systemd/system")
        os.makedirs(os.path.join(units, "multi-user.target.wants"), exist_ok=True)
        body = (f"[Unit]\nDescription=reference addon {name}\n\n[Service]\nType=oneshot\n"
                f"RemainAfterExit=yes\nExecStart=/bin/test -d /run/torcx/unpack/{name}/bin\n\n"
                "[Install]\nWantedBy=multi-user.target\n")
        unit = os.path.join(units, f"{name}.service")
        with open(unit, "w") as f:
            f.write(body)
        os.symlink(f"../{name}.service",
                   os.path.join(units, "multi-user.target.wants", f"{name}.service"))
        manifest = os.path.join(tree, ".torcx/manifest.json")
        doc = json.load(open(manifest))
        doc["value"]["units"] = [f"/lib/systemd/system/{name}.service",
                                 "/lib/systemd/system/multi-user.target.wants"]
        os.unlink(manifest)  # a hard link into the cached tree: never write through it
        with open(manifest, "w") as f:
            json.dump(doc, f)
        digests = os.path.join(tree, ".torcx/digests")
        lines = [ln for ln in open(digests).read().splitlines()
                 if not ln.endswith("  .torcx/manifest.json")]
        for rel in (".torcx/manifest.json", f"lib/systemd/system/{name}.service"):
            lines.append(f"{xxhash.xxh3_128_hexdigest(open(os.path.join(tree, rel), 'rb').read())}"
                         f"  {rel}")
        os.unlink(digests)
        with open(digests, "w") as f:
            f.write("\n".join(lines) + "\n")
        archive = os.path.join(work, f"{name}:1.torcx.tgz")
        # GNU tar in name order: .torcx/ first, then bin/ (the payload), then the units.
        subprocess.run(f"tar --create --format=gnu --sort=name --owner=0 --group=0 "
                       f"--numeric-owner -C {tree} .torcx bin lib $(cd {tree} && ls -A | "
                       f"grep -vx -e .torcx -e bin -e lib) | pigz -6 -n > '{archive}'",
                       shell=True, check=True)
        shutil.rmtree(tree)
        out[name] = archive
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suite", default="trixie", choices=["bookworm", "trixie"])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--baseline", metavar="SRC", help="also boot torcx built from SRC")
    ap.add_argument("--reference", action="store_true",
                    help="the reference profile (benchmarks/workload.py) instead of two addons")
    ap.add_argument("--no-sysext", action="store_true")
    ap.add_argument("--baseline-prepared", action="store_true",
                    help="prepare the baseline's unit plan with set-next, as for torcx")
    ap.add_argument("--later-boot", action="store_true",
                    help="every guest a later boot (see the module's docstring)")
    ap.add_argument("--sysext-plain-start", action="store_true",
                    help="also boot sysext with its units started in the default job mode")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bootbench: needs root (overlay mounts, nspawn)", file=sys.stderr)
        return 2
    rootfs = ensure_rootfs(args.suite)
    work = tempfile.mkdtemp(prefix="torcx-bootbench.", dir="/var/tmp")
    try:
        wheel = build_wheel(REPO, os.path.join(work, "wheel"))
        base = build_wheel(os.path.abspath(args.baseline), os.path.join(work, "base")) \
            if args.baseline else None
        if args.reference:
            archives = reference_archives(os.path.join(work, "ref"))
        else:
            archives = {n: fx.pack(fx.addon_tree(os.path.join(work, "addons"), n), n,
                                   os.path.join(work, "store"), fmt)
                        for n, fmt in ADDONS.items()}
        units = [f"{n}.service" for n in archives]
        def later(guest, names=()):
            return later_boot(guest, names) if args.later_boot else guest

        variants = {
            "none": lambda label: later(Guest(rootfs, label)),
            "torcx": lambda label: later(torcx_guest(rootfs, label, wheel, archives,
                                                     prepared=True), archives),
            "torcx, no plan": lambda label: later(torcx_guest(rootfs, label, wheel, archives,
                                                              prepared=False), archives),
        }
        if base:
            variants["torcx (baseline)"] = lambda label: later(torcx_guest(
                rootfs, label, base, archives, prepared=args.baseline_prepared), archives)
        if not args.reference and not args.no_sysext:
            release = os_release(rootfs)
            trees = {n: sysext_tree(os.path.join(work, "sysext"), n, release) for n in ADDONS}
            raw = os.path.join(work, "hello-sqfs.raw")
            subprocess.run(["mksquashfs", trees["hello-sqfs"], raw, "-quiet", "-noappend",
                            "-all-root"], check=True, stdout=subprocess.DEVNULL)
            variants["systemd-sysext"] = lambda label: later(
                sysext_guest(rootfs, label, trees, raw), trees)
            if args.sysext_plain_start:
                variants["systemd-sysext (plain start)"] = lambda label: later(sysext_guest(
                    rootfs, label, trees, raw, mode=""), trees)
        results = run_rounds(variants, units, args.rounds,
                             lambda line: print(line, file=sys.stderr, flush=True))
        what = "reference profile (3 images, 565 MB)" if args.reference else "two small addons"
        print(table(results, args.rounds, f"{args.suite}, {what}"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
