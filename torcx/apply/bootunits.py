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
            entries[image.archive.path] = unitplan.entry(image.archive, units)
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


def start_late(images, reload: bool, log: Logger) -> None:
    """Start the wanted units of ``images`` whose targets are active or on their way."""
    import subprocess

    wanted = _targets_wanting(images)
    names = ", ".join(im.name for im in images)
    if not wanted:
        return

    def systemctl(*args):
        return subprocess.run(["systemctl", *args], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True)

    try:
        if reload:  # a wrongly generated unit of the same name is loaded: replace it
            systemctl("daemon-reload")
        jobs = {line.split()[1] for line in systemctl("list-jobs", "--no-legend",
                                                       "--plain").stdout.splitlines()
                if len(line.split()) >= 3 and line.split()[2] == "start"}
        targets = sorted(set().union(*wanted.values()))
        states = systemctl("is-active", *targets).stdout.split()
        reached = jobs | {t for t, s in zip(targets, states) if s in ("active", "activating")}
        start = sorted(u for u, ts in wanted.items() if ts & reached)
        if not start:
            return
        r = systemctl("start", "--no-block", *start)
    except OSError as e:
        log.error(f"cannot start the units of {names}: {e}")
        return
    if r.returncode != 0:
        log.error(f"starting {' '.join(start)} failed: {r.stderr.strip()}")
    else:
        log.info(f"started {' '.join(start)} ({names}: not planned by the generator)")
