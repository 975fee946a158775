# SPDX-License-Identifier: Apache-2.0
"""After the apply: gate the generated units, refresh the unit plan, start the rest.

- *gates*: for each applied image, ``RUNDIR/units/NAME.FP`` where FP is the
  fingerprint of the units it really has (torcx.apply.unitplan). The units the
  sandboxed generator wrote from the plan assert their gate, so a unit planned
  from anything but this very image never starts.
- *refresh*: the plan gets an entry for every applied archive, so the next boot's
  generator finds it fresh whoever packed it (written only when it changes).
- *late start*: as ``torcx-apply.service`` after a sandboxed generator
  (``TORCX_PLANNED`` set by its drop-in), the units of the images it could not
  plan were not known to PID 1 when the boot began. They are now in
  ``/run/systemd/system``; the ones linked into a ``.wants``/``.requires``
  folder of a target this boot reaches are started (no daemon-reload unless a
  unit of the same name was wrongly generated).
  They are started with ``--job-mode=ignore-requirements``, with what they pull
  in that the boot has not started: a plain start delayed the boot by up to a
  second (start_late says why).
"""

from __future__ import annotations

import os

from ..log import Logger
from . import Run, unitplan

__all__ = ["finish_units", "parse_planned"]


def parse_planned(value: str | None) -> dict | None:
    """``"NAME.FP NAME.FP"`` (the generator's drop-in) -> {NAME: FP}; None when unset."""
    if value is None:
        return None
    out = {}
    for item in value.split():
        name, _, fp = item.rpartition(".")
        if name:
            out[name] = fp
    return out


def finish_units(run: Run, log: Logger, planned: dict | None) -> None:
    paths = run.paths
    entries = {}
    late = []
    stale = False
    for image in run.images:
        if not image.ok or image.archive is None:
            continue
        units = unitplan.units_from_entries(paths.host, image.entries)
        fp = unitplan.fingerprint(units) if units is not None else None
        if units:
            gate = paths.host(unitplan.gate_path(paths, image.name, fp))
            try:
                os.makedirs(os.path.dirname(gate), mode=0o755, exist_ok=True)
                with open(gate, "w"):
                    pass
            except OSError as e:
                log.warning(f"{gate}: {e.strerror or e}; the generated units of "
                            f"{image.name} will not start")
        if units is not None:
            entries[image.archive.path] = unitplan.entry(image.archive, units, image.estimate)
        if planned is not None and units != [] and planned.get(image.name) != fp:
            late.append(image)
            stale = stale or image.name in planned
    if not run.dry_run:
        try:
            unitplan.update(paths, entries)
        except OSError as e:
            log.debug(f"unit plan not refreshed: {e.strerror or e}")
    if late:
        start_late(late, stale, log)


def _targets_wanting(images) -> dict:
    """{unit: {targets}} from the .wants/.requires links the images propagated."""
    wanted: dict = {}
    prefix = unitplan.UNIT_DIR + "/"
    for image in images:
        for e in image.created:
            if e.kind != "units" or not e.dest.startswith(prefix):
                continue
            folder, _, unit = e.dest[len(prefix):].partition("/")
            for suffix in (".wants", ".requires"):
                if unit and folder.endswith(suffix):
                    wanted.setdefault(unit, set()).add(folder[:-len(suffix)])
    return wanted


# What a start job pulls in (systemd's PULL_IN_START atoms; Requisite= only checks).
PULLS = ("Requires", "Wants", "BindsTo", "Upholds")
# States in which a start job would (re)start a unit.
STARTABLE = ("inactive", "failed")


# Asked with the targets: what units with DefaultDependencies=yes require, so that the
# walk needs no second question for addon units that require nothing else.
DEFAULT_DEPS = ("basic.target", "sysinit.target", "system.slice")


def _run(argv) -> tuple:
    """(exit status, stdout, stderr) of ``argv`` (a PATH lookup), stdin /dev/null.

    os.posix_spawnp rather than the subprocess module, whose imports (signal,
    threading, contextlib, ...) cost the boot about 20 ms.
    """
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)])
    except OSError:
        os.close(out_r)
        os.close(err_r)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    out, err = (_read_all(fd) for fd in (out_r, err_r))  # systemctl says little on stderr
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), out, err


def _read_all(fd: int) -> str:
    chunks = []
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace")


def _show(systemctl, units) -> dict:
    """{unit: {property: value}} of ``units`` as PID 1 has them (it loads them to answer)."""
    _, out, _ = systemctl("show", "-p", "Id,LoadState,ActiveState,Job," + ",".join(PULLS),
                          "--", *units)
    blocks = [dict(line.partition("=")[::2] for line in block.splitlines())
              for block in out.split("\n\n") if block.strip()]
    if len(blocks) == len(units):
        return dict(zip(units, blocks))
    return {b.get("Id"): b for b in blocks}


def _pull_in(systemctl, start, props) -> list:
    """``start`` and the units starting them pulls in that the boot has not started.

    systemd's own transaction follows Requires=/Wants=/BindsTo=/Upholds= through every
    unit, so it also restarts inactive units the boot already settled (skipped by
    their conditions); here the walk stops at a unit that is active or has a job (such
    as sysinit.target on its way): its dependencies are the boot's. ``props`` are the
    ``_show`` answers known already.
    """
    seen = set(start)
    level = list(start)
    out = []
    while level:
        missing = [u for u in level if u not in props]
        if missing:
            props.update(_show(systemctl, missing))
        following = []
        for unit in level:
            p = props.get(unit, {})
            if p.get("LoadState") != "loaded":
                continue  # not found, masked or broken: a start would fail them all
            if unit not in start and (p.get("Job") or p.get("ActiveState") not in STARTABLE):
                continue
            out.append(unit)
            for key in PULLS:
                for dep in p.get(key, "").split():
                    if dep not in seen:
                        seen.add(dep)
                        following.append(dep)
        level = following
    return out


def start_late(images, reload: bool, log: Logger) -> None:
    """Start the wanted units of ``images`` whose targets are active or on their way.

    A plain ``systemctl start`` makes PID 1 build a transaction over every dependency
    again: the units' ``Requires=sysinit.target`` re-enqueues the units sysinit.target
    wants whose conditions failed earlier in this boot, among them mount units
    (sys-kernel-config.mount, ...), whose starts PID 1 holds while its mountinfo
    monitor is rate-limited (more than 5 mount events a second, as the apply's own
    mounts make): sysinit.target, and the boot, waited for the limit to expire (up to
    a second). ``--job-mode=ignore-requirements`` adds jobs for the named units
    only, still ordered (After=basic.target waits for the boot's basic.target job);
    the units they need that the boot has not started are named too (_pull_in).
    """
    wanted = _targets_wanting(images)
    names = ", ".join(im.name for im in images)
    if not wanted:
        return

    def systemctl(*args):
        return _run(["systemctl", *args])

    try:
        if reload:  # a wrongly generated unit of the same name is loaded: replace it
            systemctl("daemon-reload")
        targets = sorted(set().union(*wanted.values()))
        props = _show(systemctl, targets + sorted((set(wanted) | set(DEFAULT_DEPS))
                                                  - set(targets)))
        # reached: active, or on its way (a job: at boot, a start job)
        reached = {t for t in targets if props.get(t, {}).get("Job")
                   or props.get(t, {}).get("ActiveState") in ("active", "activating")}
        start = sorted(u for u, ts in wanted.items() if ts & reached)
        if not start:
            return
        units = _pull_in(systemctl, start, props)
        unloadable = [u for u in start if u not in units]
        if unloadable:
            log.error(f"cannot start {' '.join(unloadable)} ({names}): "
                      + "; ".join(f"{u}: {props.get(u, {}).get('LoadState') or 'unknown'}"
                                  for u in unloadable))
        if not units:
            return
        rc, _, err = systemctl("start", "--no-block", "--job-mode=ignore-requirements", "--",
                               *units)
    except OSError as e:
        log.error(f"cannot start the units of {names}: {e}")
        return
    if rc != 0:
        log.error(f"starting {' '.join(units)} failed: {err.strip()}")
    else:
        log.info(f"started {' '.join(units)} ({names}: not planned by the generator)")
