# SPDX-License-Identifier: Apache-2.0
"""``torcx image export NAME:REF --sysext -o DIR``: a torcx image as a systemd-sysext image.

The mapping (README "torcx and systemd-sysext"):

- every file of the image at ``/P`` lands at ``/usr/P`` (``bin``, ``lib``,
  ``share``... under ``usr/``, so relative paths between them still hold), and
  one at ``/usr/P`` at ``/usr/P`` too; ``.torcx/`` is dropped;
- a manifest ``bin`` entry not already at ``/bin/NAME`` gets a link
  ``usr/bin/NAME`` (torcx's ``/run/torcx/bin/NAME``);
- ``units``, ``network``, ``sysusers``, ``tmpfiles``, ``udev_rules`` entries land
  in ``usr/lib/systemd/system``, ``usr/lib/systemd/network``,
  ``usr/lib/sysusers.d``, ``usr/lib/tmpfiles.d``, ``usr/lib/udev/rules.d``;
- unit files are rewritten: ``EnvironmentFile=`` of the seal file removed,
  ``/run/torcx/bin/`` and ``${TORCX_BINDIR}`` become ``/usr/bin``,
  ``/run/torcx/unpack/NAME/`` and ``${TORCX_UNPACKDIR}/NAME/`` become ``/usr/``,
  torcx's own units (``torcx.target``, ``torcx-apply.service``...) are dropped
  from dependency lines; a ``T.wants/U`` or ``T.requires/U`` link becomes the
  drop-in ``T.d/10-torcx-U.conf`` with ``Upholds=U`` (a target that is already
  active does not pull in new wants after systemd-sysext's reload; Upholds does);
- ``usr/lib/extension-release.d/extension-release.NAME``: ID, VERSION_ID or
  SYSEXT_LEVEL, ARCHITECTURE (defaults: the host's), EXTENSION_RELOAD_MANAGER=1
  when the image has units.

Refused, with the path: files outside the standard folders (bin, sbin, lib,
lib64, libexec, share, include) that the manifest does not name; anything under
/etc, /var, /run, /usr, /opt and the other top-level folders that are not /usr
content; usr/lib/os-release; a unit that uses another TORCX_* value or another
image's files. The result is written reproducibly with pack's rules (every
timestamp the epoch: --source-date-epoch, SOURCE_DATE_EPOCH, else the newest
mtime of the image; files owned by root; erofs UUID from NAME:REF).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field

from .. import schemas
from ..errors import InvalidImage, PackError
from ..sysext import ARCHITECTURES, RELEASE_DIR, Host, validate
from .check import Problem

__all__ = ["ExportResult", "export_sysext"]

STANDARD = frozenset(("bin", "sbin", "lib", "lib64", "libexec", "share", "include"))
# Top-level folders whose files have no meaning under /usr (a confext or the OS owns them).
FORBIDDEN = frozenset(("etc", "var", "run", "opt", "dev", "proc", "sys", "tmp", "boot",
                       "home", "root", "srv", "mnt", "media"))
ASSET_DIRS = {"units": "lib/systemd/system", "network": "lib/systemd/network",
              "sysusers": "lib/sysusers.d", "tmpfiles": "lib/tmpfiles.d",
              "udev_rules": "lib/udev/rules.d"}
UNIT_DIR = "lib/systemd/system"  # under usr/
TORCX_UNITS = ("torcx.target", "torcx-apply.service", "torcx-sysusers.service")
_DEP_KEYS = ("After", "Before", "Requires", "Wants", "BindsTo", "PartOf", "Requisite",
             "Upholds", "WantedBy", "RequiredBy", "UpheldBy")
_TORCX_VAR = re.compile(r"\$\{?(TORCX_[A-Z_]+)\}?")
_BINDIR = re.compile(r"/run/torcx/bin(?=[/:\s\"']|$)")  # also in PATH=...:/run/torcx/bin
_SEAL_ENV = re.compile(r"^\s*EnvironmentFile\s*=\s*-?/run/metadata/torcx\s*$")
_UNIT_SUFFIXES = (".service", ".socket", ".target", ".timer", ".path", ".mount", ".automount",
                  ".swap", ".slice", ".scope", ".device", ".conf")
FORMATS = ("squashfs", "erofs")


@dataclass
class ExportResult:
    path: str
    name: str
    format: str
    sha256: str
    release: dict
    units: list = field(default_factory=list)
    upholds: list = field(default_factory=list)

    def to_json(self) -> dict:
        return {"path": self.path, "name": self.name, "format": self.format,
                "sha256": self.sha256, "extension_release": self.release,
                "units": self.units, "upholds": self.upholds}

    def lines(self) -> list[str]:
        out = [f"wrote {self.path} ({self.format}, sysext {self.name})",
               f"  sha256 {self.sha256}",
               "  extension-release: " + " ".join(f"{k}={v}" for k, v in self.release.items())]
        out += [f"  unit {u}" for u in self.units]
        out += [f"  {t} upholds {u}" for t, u in self.upholds]
        return out


def _extract(archive, dest: str) -> None:
    """The image's files into ``dest`` (tarballs verified by the engine)."""
    if archive.format == "squashfs":
        cmd = ["unsquashfs", "-no-progress", "-quiet", "-d", dest, archive.host_path]
    elif archive.format == "erofs":
        cmd = ["fsck.erofs", f"--extract={dest}", archive.host_path]
    else:
        from .. import engine

        engine.extract(archive.host_path, dest)
        return
    if shutil.which(cmd[0]) is None:
        raise PackError(errno.ENOENT, f"{cmd[0]} not found: needed to read {archive.path}")
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        raise PackError(errno.EIO, f"{archive.path}: {cmd[0]} failed: "
                        + " / ".join((proc.stderr or proc.stdout).strip().splitlines()[-2:]))


def _walk(top: str):
    """Relative paths of every entry below ``top`` (folders included), sorted."""
    for dirpath, dirs, files in os.walk(top):
        dirs.sort()
        rel = os.path.relpath(dirpath, top)
        for n in sorted(dirs + files):
            yield n if rel == "." else f"{rel}/{n}"


def _rel(path: str) -> str:
    """An image path's place under usr/: ``/bin/x`` and ``/usr/bin/x`` are both ``bin/x``."""
    rel = path.strip("/")
    return rel[4:] if rel.startswith("usr/") else rel


def _covered(rel: str, manifest_paths: list[str]) -> bool:
    return any(rel == m or rel.startswith(m + "/") for m in map(_rel, manifest_paths))


def _merge_usr(usr: str, problems: list[Problem]) -> None:
    """Move the image's own usr/ up into usr/ (its /usr/bin and /bin are one /usr/bin)."""
    inner = os.path.join(usr, "usr")
    if os.path.islink(inner) or not os.path.isdir(inner):
        return

    def merge(src: str, dst: str, shown: str) -> None:
        for n in sorted(os.listdir(src)):
            s, d = os.path.join(src, n), os.path.join(dst, n)
            if not os.path.lexists(d):
                os.rename(s, d)
            elif (os.path.isdir(s) and not os.path.islink(s) and os.path.isdir(d)
                  and not os.path.islink(d)):
                merge(s, d, f"{shown}/{n}")
            else:
                problems.append(Problem(f"/usr{shown}/{n}", f"both /usr{shown}/{n} and "
                                        f"{shown}/{n} are in the image"))
    merge(inner, usr, "")
    shutil.rmtree(inner)


def _check_files(src: str, manifest) -> list[Problem]:
    named = [p for key in schemas.ASSET_KEYS for p in getattr(manifest, key, [])] \
        if manifest else []
    problems = []
    for rel in _walk(src):
        top = rel.split("/", 1)[0]
        if top == ".torcx":
            continue
        full = os.path.join(src, rel)
        if os.path.isdir(full) and not os.path.islink(full):
            continue
        if top in FORBIDDEN:
            problems.append(Problem(f"/{rel}", f"under /{top}: only /usr content is merged "
                                    "by systemd-sysext"))
            continue
        if top not in STANDARD and not _covered(rel, named):
            problems.append(Problem(f"/{rel}", "outside the standard folders "
                                    f"({', '.join(sorted(STANDARD))}) and not named by the "
                                    "manifest"))
    if os.path.lexists(os.path.join(src, "lib/os-release")):
        problems.append(Problem("/lib/os-release", "would become usr/lib/os-release, which "
                                "systemd-sysext refuses"))
    return problems


def _relink(usr: str, link_rel: str, target_rel: str) -> str | None:
    """Link ``usr/link_rel`` -> ``usr/target_rel`` (relative); a problem text if taken."""
    link = os.path.join(usr, link_rel)
    if os.path.lexists(link):
        if os.path.realpath(link) == os.path.realpath(os.path.join(usr, target_rel)):
            return None
        return f"/usr/{link_rel} would be both the image's file and a link to /usr/{target_rel}"
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.symlink(os.path.relpath(os.path.join(usr, target_rel), os.path.dirname(link)), link)
    return None


def _place_assets(usr: str, manifest, problems: list[Problem]) -> list[tuple[str, str]]:
    """bin links and asset files in their usr/lib folders; returns (target, unit) upholds."""
    upholds = []
    for path in manifest.bin if manifest else []:
        rel = _rel(path)
        full = os.path.join(usr, rel)
        files = [rel]
        if os.path.isdir(full) and not os.path.islink(full):
            files = [f"{rel}/{f}" for f in sorted(os.listdir(full))
                     if not os.path.isdir(os.path.join(full, f))]
        for f in files:
            why = _relink(usr, f"bin/{os.path.basename(f)}", f)
            if why:
                problems.append(Problem(path, why))
    for key, folder in ASSET_DIRS.items():
        for path in getattr(manifest, key, []) if manifest else []:
            rel = _rel(path)
            full = os.path.join(usr, rel)
            if os.path.isdir(full) and not os.path.islink(full):
                if key == "units" and re.search(r"\.(wants|requires)$", rel):
                    target = os.path.basename(rel).rsplit(".", 1)[0]
                    for unit in sorted(os.listdir(full)):
                        upholds.append((target, unit))
                    if os.path.dirname(rel) == UNIT_DIR:
                        shutil.rmtree(full)  # replaced by Upholds= drop-ins
                    continue
                # one level deep, as torcx propagates it (e.g. a unit's drop-in folder)
                into = f"{folder}/{os.path.basename(rel)}"
                entries = [(f"{rel}/{f}", f"{into}/{f}") for f in sorted(os.listdir(full))]
            else:
                entries = [(rel, f"{folder}/{os.path.basename(rel)}")]
            for e, dest in entries:
                if e == dest:
                    continue
                if key == "units":  # a copy: unit files are rewritten in place
                    if os.path.lexists(os.path.join(usr, dest)):
                        problems.append(Problem(path, f"/usr/{dest} exists in the image"))
                        continue
                    os.makedirs(os.path.dirname(os.path.join(usr, dest)), exist_ok=True)
                    if os.path.islink(os.path.join(usr, e)):  # an alias link stays a link
                        os.symlink(os.readlink(os.path.join(usr, e)), os.path.join(usr, dest))
                    else:
                        shutil.copyfile(os.path.join(usr, e), os.path.join(usr, dest))
                    continue
                why = _relink(usr, dest, e)
                if why:
                    problems.append(Problem(path, why))
    return upholds


def _rewrite_unit(text: str, name: str, where: str, problems: list[Problem]) -> str:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if _SEAL_ENV.match(line):
            continue
        line = _BINDIR.sub("/usr/bin", line.replace("${TORCX_BINDIR}", "/usr/bin")
                           .replace("$TORCX_BINDIR", "/usr/bin"))
        line = (line
                .replace(f"${{TORCX_UNPACKDIR}}/{name}/", f"/run/torcx/unpack/{name}/")
                .replace(f"$TORCX_UNPACKDIR/{name}/", f"/run/torcx/unpack/{name}/")
                .replace(f"/run/torcx/unpack/{name}/usr/", "/usr/")
                .replace(f"/run/torcx/unpack/{name}/", "/usr/"))
        key, eq, value = line.partition("=")
        if eq and key.strip() in _DEP_KEYS:
            kept = [u for u in value.split() if u not in TORCX_UNITS]
            if not kept:
                continue
            line = f"{key}={' '.join(kept)}"
        m = _TORCX_VAR.search(line)
        if m or "/run/torcx/" in line or "/run/metadata/torcx" in line:
            what = m.group(1) if m else line.strip()
            problems.append(Problem(f"{where}:{n}", f"uses {what}, which has no meaning "
                                    "without torcx"))
        out.append(line)
    return "\n".join(out) + "\n"


def _rewrite_units(usr: str, name: str, problems: list[Problem]) -> list[str]:
    units_dir = os.path.join(usr, UNIT_DIR)
    units = []
    for rel in list(_walk(units_dir)) if os.path.isdir(units_dir) else []:
        full = os.path.join(units_dir, rel)
        if os.path.islink(full) or not os.path.isfile(full) or not rel.endswith(_UNIT_SUFFIXES):
            continue
        real = os.path.realpath(full)
        with open(real, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
        new = _rewrite_unit(text, name, f"/usr/{UNIT_DIR}/{rel}", problems)
        os.unlink(full)  # a link into the image's own tree: the rewritten copy replaces it
        with open(full, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(new)
        os.chmod(full, 0o644)
        if "/" not in rel:
            units.append(rel)
    return units


def _release(host: Host, *, ext_id, version_id, level, arch, reload: bool) -> dict:
    rel = {"ID": ext_id or host.id}
    if rel["ID"] != "_any":
        if level:
            rel["SYSEXT_LEVEL"] = level
        elif version_id or host.version_id:
            rel["VERSION_ID"] = version_id or host.version_id
    rel["ARCHITECTURE"] = arch or host.architecture
    if reload:
        rel["EXTENSION_RELOAD_MANAGER"] = "1"
    return rel


def export_sysext(archive, out_dir: str, host: Host, *, fmt: str = "squashfs",
                  ext_id: str | None = None, version_id: str | None = None,
                  level: str | None = None, arch: str | None = None,
                  epoch: int | None = None, overwrite: bool = False) -> ExportResult:
    """Write ``out_dir/NAME.raw``, the sysext image of torcx image ``archive``."""
    from .formats import FORMATS as PACK_FORMATS
    from .fsimage import fs_image_command

    name = archive.name
    if fmt not in FORMATS:
        raise PackError(errno.EINVAL, f"--format {fmt}: a sysext is squashfs or erofs")
    if arch and arch not in ARCHITECTURES and arch != "_any":
        raise PackError(errno.EINVAL, f"--arch {arch}: not one of systemd's architecture names "
                        f"({', '.join(sorted(ARCHITECTURES))})")
    spec = PACK_FORMATS[fmt]
    if shutil.which(spec.tool) is None:
        raise PackError(errno.ENOENT, f"{spec.tool} not found; install "
                        f"{'squashfs-tools' if fmt == 'squashfs' else 'erofs-utils'}")
    final = os.path.join(out_dir, f"{name}.raw")
    if os.path.lexists(final) and not overwrite:
        raise PackError(errno.EEXIST, f"{final}: exists; pass --overwrite to replace it")
    os.makedirs(out_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".torcx-export-{name}.", dir=out_dir)
    try:
        stage = os.path.join(work, "stage")
        usr = os.path.join(stage, "usr")
        os.makedirs(stage)
        _extract(archive, usr)
        manifest = None
        mpath = os.path.join(usr, ".torcx/manifest.json")
        if os.path.isfile(mpath):
            with open(mpath, encoding="utf-8") as f:
                manifest = schemas.parse_image_manifest(json.load(f),
                                                        f"{archive.path}:/.torcx/manifest.json")
        problems: list[Problem] = []
        _merge_usr(usr, problems)
        problems += _check_files(usr, manifest)
        if problems:
            raise InvalidImage(archive.path, problems)
        newest = max((int(os.lstat(os.path.join(usr, r)).st_mtime) for r in _walk(usr)),
                     default=0)
        shutil.rmtree(os.path.join(usr, ".torcx"), ignore_errors=True)
        for top in list(os.listdir(usr)):
            if top in FORBIDDEN:  # empty folders (files there were refused above)
                shutil.rmtree(os.path.join(usr, top))
        upholds = _place_assets(usr, manifest, problems)
        units = _rewrite_units(usr, name, problems)
        for target, unit in upholds:
            dropin = os.path.join(usr, UNIT_DIR, f"{target}.d", f"10-torcx-{unit}.conf")
            os.makedirs(os.path.dirname(dropin), exist_ok=True)
            with open(dropin, "w", encoding="utf-8") as f:
                f.write(f"# torcx image {name}: was {target}.wants/{unit}\n"
                        f"[Unit]\nUpholds={unit}\n")
        if problems:
            raise InvalidImage(archive.path, problems)
        release = _release(host, ext_id=ext_id, version_id=version_id, level=level, arch=arch,
                           reload=bool(units))
        refusal = validate(name, release, Host(id=release["ID"], version_id=release.get(
            "VERSION_ID", ""), sysext_level=release.get("SYSEXT_LEVEL", ""),
            architecture=release["ARCHITECTURE"]))
        if refusal is not None:  # what we write must pass on the host it names
            raise PackError(errno.EINVAL, f"extension-release of {name}: {refusal}")
        rel_dir = os.path.join(usr, "lib/extension-release.d")
        os.makedirs(rel_dir, exist_ok=True)
        with open(os.path.join(stage, RELEASE_DIR, f"extension-release.{name}"), "w",
                  encoding="utf-8") as f:
            f.write("".join(f"{k}={v}\n" for k, v in release.items()))
        for dirpath, dirs, _files in os.walk(stage):
            for d in dirs:
                p = os.path.join(dirpath, d)
                if not os.path.islink(p):
                    os.chmod(p, stat.S_IMODE(os.lstat(p).st_mode) | 0o755)
        tmp = os.path.join(work, "out.raw")
        if epoch is None:
            epoch = newest
        cmd = fs_image_command(spec, stage, tmp, name=name, reference=archive.reference,
                               level=None, threads=1, epoch=epoch, keep_owner=False)
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if proc.returncode != 0:
            raise PackError(errno.EIO, f"{spec.tool} failed (exit {proc.returncode}): "
                            + " / ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:]))
        os.chmod(tmp, 0o644)
        if overwrite:
            os.replace(tmp, final)
        else:
            _publish_new(tmp, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    import hashlib

    h = hashlib.sha256()
    with open(final, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return ExportResult(final, name, fmt, h.hexdigest(), release, sorted(units),
                        sorted(upholds))


def _publish_new(tmp: str, final: str) -> None:
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise PackError(errno.EEXIST, f"{final}: exists; pass --overwrite to replace it") from None
