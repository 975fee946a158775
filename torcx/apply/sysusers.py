# SPDX-License-Identifier: Apache-2.0
"""Do the addons' sysusers.d entries still need systemd-sysusers this boot?

``torcx-sysusers.service`` runs ``systemd-sysusers`` before sysinit.target, on
the boot's critical path, only when ``RUNDIR/sysusers-pending`` exists. The
apply creates it unless every user, group and membership that the propagated
sysusers.d files declare is already in ``/etc/passwd`` and ``/etc/group`` (a
persistent /etc after the first boot). Anything this reading does not
understand (specifiers or quotes in a name or ID, a file /etc/sysusers.d
overrides, an unreadable database) counts as pending: a wrong "nothing to do"
would leave an addon unit failing with 217/USER, a wrong "pending" costs one
run.
"""

from __future__ import annotations

import os

from ..log import Logger
from . import Run

__all__ = ["PENDING_FILE", "mark_pending", "missing", "pending_path"]

PENDING_FILE = "sysusers-pending"
_SYSUSERS_DIR = "/run/sysusers.d"
_ETC_OVERRIDES = "/etc/sysusers.d"


def pending_path(paths) -> str:
    """This machine's path of RUNDIR/sysusers-pending."""
    return paths.host(f"{paths.run_dir.rstrip('/')}/{PENDING_FILE}")


def _database(path: str) -> dict[str, list[str]]:
    """{name: fields} of a passwd/group file (no NSS: systemd-sysusers reads the files)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return {line.split(":", 1)[0]: line.rstrip("\n").split(":")
                for line in f if ":" in line}


def missing(host, conf_paths: list[str]) -> list[str]:
    """What the sysusers.d files at ``conf_paths`` (target paths) declare and /etc lacks,
    as ``"user NAME"`` / ``"group NAME"`` / ``"member USER GROUP"`` / ``"FILE: why"``."""
    try:
        users = _database(host("/etc/passwd"))
        groups = _database(host("/etc/group"))
    except OSError as e:
        return [f"/etc/passwd, /etc/group: {e.strerror or e}"]
    out = []
    for conf in conf_paths:
        if os.path.lexists(host(f"{_ETC_OVERRIDES}/{os.path.basename(conf)}")):
            out.append(f"{conf}: overridden in {_ETC_OVERRIDES}")
            continue
        try:
            with open(host(conf), encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            out.append(f"{conf}: {getattr(e, 'strerror', None) or e}")
            continue
        for line in lines:
            fields = line.split(None, 3)[:3]  # type, name, ID; the GECOS may be quoted
            if not fields or fields[0].startswith("#"):
                continue
            if len(fields) < 2 or any(ch in f for f in fields for ch in "\"'%\\"):
                out.append(f"{conf}: not read here: {line.strip()}")
                continue
            kind, name = fields[0], fields[1]
            if kind in ("u", "u!"):
                if name not in users:
                    out.append(f"user {name}")
                ids = fields[2] if len(fields) > 2 else "-"
                if ":" not in ids and name not in groups:  # its own group, same name
                    out.append(f"group {name}")
            elif kind == "g":
                if name not in groups:
                    out.append(f"group {name}")
            elif kind == "m":
                group = groups.get(fields[2]) if len(fields) > 2 else None
                if group is None or name not in (group[3].split(",") if len(group) > 3 else []):
                    out.append(f"member {name} {fields[2] if len(fields) > 2 else '?'}")
            elif kind != "r":  # ranges create nothing
                out.append(f"{conf}: not read here: {line.strip()}")
    return out


def mark_pending(run: Run, log: Logger) -> None:
    """Create RUNDIR/sysusers-pending when the propagated sysusers.d files need a run."""
    confs = [e.dest for im in run.images if im.ok for e in im.created
             if e.kind == "sysusers" and e.dest.endswith(".conf")]
    if not confs:
        return
    try:
        needed = missing(run.paths.host, confs)
    except Exception as e:  # a bug here must not skip the users: run systemd-sysusers
        needed = [f"not checked: {type(e).__name__}: {e}"]
    if not needed:
        log.debug("sysusers: every addon user and group exists; "
                  "torcx-sysusers.service has nothing to do")
        return
    log.debug(f"sysusers: {', '.join(needed[:5])}{' ...' if len(needed) > 5 else ''}")
    path = pending_path(run.paths)
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(needed) + "\n")
    except OSError as e:
        log.warning(f"{path}: {e.strerror or e}; addon users may be missing")
