# SPDX-License-Identifier: Apache-2.0
"""The prepared unit plan: each archive's systemd units, known before the boot.

PID 1 waits for every generator, so the sandboxed generator (systemd 253+)
never opens an archive: it writes an image's units only from an entry of this
plan whose archive still has the recorded identity (device, inode, size,
mtime, ctime). Any other image's units are started by ``torcx-apply.service``
once it has applied them (torcx.apply.bootunits).

The plan lives in ``BASEDIR/unit-plan.json``. ``torcx profile set-next``,
``populate``, ``install-boot`` and ``image pack`` into a store prepare it
(torcx.boot.prepare); every apply refreshes it from the images it unpacked,
so the next boot finds it fresh whoever packed the archives.

An entry's units are a list of ``["file", REL, TEXT]``, ``["dir", REL]`` and
``["link", REL, TARGET]``, REL relative to the unit folder, as propagation
makes them. Their fingerprint gates the generated units: the apply creates
``RUNDIR/units/NAME.FP`` only for what it really unpacked, so a plan that is
wrong anyway (a file changed with its times restored) starts nothing.

A gzip archive's entry also records what sizing's member scan found
(``"size": {"members": M, "need": N}``), so the apply does not scan it again
at every boot; a forged one can only make sizing tighter (torcx.apply.sizing).
"""

from __future__ import annotations

import os

from .. import jsontext

__all__ = ["PLAN_FILE", "fingerprint", "fresh", "gate_path", "identity", "load",
           "units_from_entries", "update"]

PLAN_FILE = "unit-plan.json"
KIND = "torcx-unit-plan-v0"
UNIT_DIR = "/run/systemd/system"  # where propagation puts units
UNIT_TEXT_LIMIT = 1 << 20  # bytes; a larger unit file is not planned (started after the apply)


def plan_path(paths) -> str:
    return paths.host(paths.base_dir.rstrip("/") + "/" + PLAN_FILE)


def gate_path(paths, name: str, fp: str) -> str:
    """Logical path the apply creates when image ``name``'s units have fingerprint ``fp``."""
    return f"{paths.run_dir.rstrip('/')}/units/{name}.{fp}"


def identity(host_path: str) -> list | None:
    try:
        st = os.stat(host_path)
    except OSError:
        return None
    return stat_identity(st)


def stat_identity(st) -> list:
    """The identity an entry records, of a stat result (fstat of an open archive)."""
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def fingerprint(units: list) -> str:
    """XXH3-128 of the units (xxhash: hashlib would load OpenSSL at every boot)."""
    import xxhash

    text = jsontext.dumps(units, separators=(",", ":"), ensure_ascii=True)
    return xxhash.xxh3_128_hexdigest(text.encode())[:16]


def load(paths) -> dict:
    """{logical archive path: entry}; a missing or unreadable plan is an empty one."""
    try:
        with open(plan_path(paths), encoding="utf-8") as f:
            doc = jsontext.loads(f.read())
        archives = doc["value"]["archives"] if doc.get("kind") == KIND else {}
        return archives if isinstance(archives, dict) else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return {}


def fresh(plan: dict, archive) -> dict | None:
    """The plan's entry for ``archive`` (a torcx.store.Archive) if it is still valid."""
    entry = plan.get(archive.path)
    if not isinstance(entry, dict) or entry.get("name") != archive.name:
        return None
    if entry.get("identity") != identity(archive.host_path):
        return None
    units = entry.get("units")
    if not isinstance(units, list) or not _well_formed(units):
        return None
    return entry


def _well_formed(units: list) -> bool:
    for u in units:
        if not (isinstance(u, list) and len(u) in (2, 3) and u[0] in ("file", "dir", "link")
                and all(isinstance(x, str) for x in u)):
            return False
        rel = u[1]
        if rel.startswith("/") or ".." in rel.split("/") or rel.count("/") > 1:
            return False
        if (u[0] == "dir") != (len(u) == 2):
            return False
    return True


def units_from_entries(host, entries) -> list | None:
    """The plan form of an image's propagated units (torcx.apply.propagate entries).

    ``host`` maps a target path to this machine's path (Paths.host). None when
    a unit cannot be planned (not UTF-8, too large): its image's units are then
    started after the apply.
    """
    out = []
    for e in entries:
        if e.kind != "units" or not e.dest.startswith(UNIT_DIR + "/"):
            continue
        rel = e.dest[len(UNIT_DIR) + 1:]
        if e.action == "mkdir":
            out.append(["dir", rel])
        elif e.action == "link":
            out.append(["link", rel, e.link])
        elif e.action == "copy":
            try:
                with open(host(e.source), "rb") as f:
                    data = f.read(UNIT_TEXT_LIMIT + 1)
                if len(data) > UNIT_TEXT_LIMIT:
                    return None
                out.append(["file", rel, data.decode("utf-8")])
            except (OSError, UnicodeDecodeError):
                return None
    return out


def update(paths, entries: dict, *, prune: bool = True) -> bool:
    """Merge ``entries`` ({logical archive path: entry}) into the plan; True if written.

    With ``prune``, entries whose archive is gone or changed are dropped. The
    file is rewritten only when it changes (an apply at boot usually writes
    nothing); a failure to write is left to the caller to ignore.
    """
    from ..schemas import write_atomic

    plan = load(paths)
    new = dict(plan)
    new.update(entries)
    if prune:
        for path in list(new):
            entry = new[path]
            if path in entries:
                continue
            if not isinstance(entry, dict) or entry.get("identity") != identity(
                    paths.host(path)):
                del new[path]
    if new == plan and (not new or os.path.exists(plan_path(paths))):
        return False  # unchanged, or nothing to plan (no empty file is created)
    target = plan_path(paths)
    os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
    text = jsontext.dumps({"kind": KIND, "value": {"archives": new}}, indent=1, sort_keys=True)
    write_atomic(target, text + "\n", 0o644, durable=False)
    return True


def entry(archive, units: list, estimate=None) -> dict:
    """A plan entry for ``archive`` (a torcx.store.Archive) with these units.

    ``estimate`` (torcx.apply.sizing.Estimate) adds the size facts of a gzip
    archive (``"size": {"members": M, "need": N}``), which spare the next
    apply the member scan (torcx.apply.sizing).
    """
    out = {"name": archive.name, "identity": identity(archive.host_path), "units": units}
    if estimate is not None and estimate.members is not None:
        out["size"] = {"members": estimate.members, "need": estimate.need}
    return out


def sized(plan: dict, archive) -> dict | None:
    """The plan's entry for ``archive`` if it records size facts; its identity is checked
    by torcx.apply.sizing against the file it opens."""
    entry = plan.get(archive.path)
    if isinstance(entry, dict) and entry.get("name") == archive.name and "size" in entry:
        return entry
    return None
