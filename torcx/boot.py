# SPDX-License-Identifier: Apache-2.0
"""Boot integration: the generator's two modes, torcx-apply.service, install-boot.

Since systemd 253 a generator runs in a sandbox: its own mount namespace (a
slave of PID 1's) with ``/`` read-only. Mounts it makes vanish when it exits,
so the original design (the generator unpacks, mounts and links everything)
leaves addon units pointing at nothing. And ``/run`` is ``noexec`` on real
boots, so the unpack dir must be an exec-able tmpfs that lives in PID 1's
namespace. Hence two modes:

- *apply*: the generator shares PID 1's mount namespace (systemd <= 252) or is
  run by hand: it applies everything itself, as upstream did.
- *plan*: the generator is sandboxed. It only plans: merges the profiles,
  finds the archives and reads each image's manifest and unit files (a tar is
  streamed only until those members have been seen; a squashfs/erofs image is
  loop-mounted for the moment of reading, in the sandbox's own namespace).
  It writes those units and their ``.wants``/``.requires`` links into its
  output folder, each with a drop-in that orders it after
  ``torcx-apply.service`` and asserts that its image was applied; and it pulls
  in ``torcx-apply.service`` (shipped by ``install-boot``; a copy goes into
  the generator's late folder as a fallback), which runs ``torcx apply`` in
  PID 1's mount namespace before ``sysinit.target``; ``torcx-sysusers.service``
  then creates the users and groups of the addons (systemd-sysusers.service
  has run by then: it cannot be ordered after the apply without a cycle).

Per-image assertions rather than ``Requires=torcx-apply.service``: one corrupt
image makes the apply exit non-zero, and Requires= would then fail every addon
unit; with ``Wants=`` plus ``AssertPathExists=`` on the image's own unpacked
manifest only the units of the images that failed fail.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import posixpath
import shutil
import sys
import tempfile
import time

from . import log as _log
from .errors import ConfigError, CorruptArchive, TorcxError
from .paths import host_path

__all__ = [
    "APPLY_UNIT",
    "BOOT_UNITS",
    "generator_main",
    "in_pid1_mount_namespace",
    "install_boot",
    "plan_generator_units",
    "read_unit_members",
    "uninstall_boot",
]

APPLY_UNIT = "torcx-apply.service"
SYSUSERS_UNIT = "torcx-sysusers.service"
BOOT_UNITS = (APPLY_UNIT, SYSUSERS_UNIT)  # shipped in torcx/units, pulled in by sysinit.target
DROPIN_NAME = "50-torcx-apply.conf"
GENERATOR_DIRS = ("/usr/lib/systemd/system-generators", "/etc/systemd/system-generators")
UNIT_DIRS = {"/usr/lib/systemd/system-generators": "/usr/lib/systemd/system",
             "/etc/systemd/system-generators": "/etc/systemd/system"}
LAUNCHER = "/usr/bin/torcx"
PACKAGE_DIR = "/usr/lib/python3/dist-packages"  # on sys.path of every Debian python3
RECORD = "/usr/lib/torcx/install-boot.list"
MARKER = "installed by `torcx install-boot`"
SYSTEMD_UNIT_DIR = "/run/systemd/system"  # where propagation puts units
TAR_FORMATS = ("tgz", "tar.zst", "tar.xz", "tar")


# -- where are we --------------------------------------------------------------------

def in_pid1_mount_namespace(pid: int = 1) -> bool:
    """True when this process shares PID 1's (or ``pid``'s) mount namespace.

    Mounts made there persist after this process exits. When it cannot be
    told (no /proc, no privilege), True: behave as upstream did.
    """
    try:
        return os.readlink("/proc/self/ns/mnt") == os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return True


def _boot_logger(ctx_log: _log.Logger) -> _log.Logger:
    """At boot, generator stderr may go nowhere: also log to /dev/kmsg, else a file."""
    import stat

    streams = [sys.stderr]
    try:
        if not stat.S_ISCHR(os.stat("/dev/kmsg").st_mode):
            raise OSError("not the kernel log")  # never create a file named /dev/kmsg
        streams.append(open("/dev/kmsg", "w", encoding="utf-8"))  # noqa: SIM115
    except OSError:
        try:  # no kernel log (containers): a file the journal of the boot can be checked with
            os.makedirs("/run/log", exist_ok=True)
            streams.append(open("/run/log/torcx-generator.log", "a", encoding="utf-8"))  # noqa: SIM115
        except OSError:
            pass
    return _log.Logger(ctx_log.level, stream=_Tee(streams), prefix="torcx-generator",
                       priority_prefix=True)


class _Tee:
    def __init__(self, streams):
        self.streams = streams

    def write(self, text: str) -> None:
        for s in self.streams:
            try:
                s.write(text)
            except (OSError, ValueError):
                pass

    def flush(self) -> None:
        for s in self.streams:
            try:
                s.flush()
            except (OSError, ValueError):
                pass


# -- the generator -------------------------------------------------------------------

def generator_main(ctx, args) -> int:
    """``torcx-generator``: apply everything, or only plan when sandboxed (see module doc)."""
    outputs = list(getattr(args, "output_dirs", []) or [])
    sandboxed = ctx.root == "/" and len(outputs) == 3 and not in_pid1_mount_namespace()
    log = _boot_logger(ctx.log) if ctx.root == "/" else ctx.log
    ctx.log = log
    if not sandboxed:
        if ctx.root != "/":
            why = f"--root {ctx.root}"
        elif len(outputs) != 3:
            why = "run by hand"
        else:
            why = "in PID 1's mount namespace"
        log.info(f"{why}: applying now")
        from . import apply

        return apply.main(ctx, args)
    normal, _early, late = outputs
    log.info("sandboxed generator (own mount namespace): planning; "
             f"{APPLY_UNIT} applies in PID 1's namespace")
    start = time.monotonic()
    status = plan_generator_units(ctx.paths, normal, late, log)
    log.info(f"planned in {(time.monotonic() - start) * 1000:.1f} ms")
    return status


def plan_generator_units(paths, normal_dir: str, late_dir: str, log=_log.NULL) -> int:
    """Write the addon units (+ drop-ins) into ``normal_dir`` and the apply unit into ``late_dir``.

    Returns 0, or 1 when some image's units could not be read (the apply will
    report that image as failed; the other images' units are still written).
    """
    from . import profiles
    from .store import Store

    if os.path.exists(paths.host(paths.run_dir)):
        log.info(f"{paths.run_dir} exists: torcx already ran this boot, units are in "
                 f"{SYSTEMD_UNIT_DIR}; nothing to generate")
        return 0
    _write_boot_units(late_dir)
    sel = profiles.select(paths, log)
    store = Store(paths, log=log)
    failed = 0
    for image in sel.images:
        archive = store.find(image.name, image.reference)
        if archive is None:
            log.error(f"image {image.name}:{image.reference} not found in any store; "
                      "its units are not generated")
            failed += 1
            continue
        try:
            units = _write_image_units(paths, archive, normal_dir, log)
        except (TorcxError, OSError, ValueError, ImportError) as e:
            log.error(f"{archive.path}: cannot read the units of {image.name}: {e}; "
                      "its units are not generated")
            failed += 1
            continue
        log.info(f"{image.name}:{image.reference}: {len(units)} unit(s) from {archive.path}")
    return 1 if failed else 0


def _write_boot_units(late_dir: str) -> None:
    """Fallback copies of the boot units (shipped ones win) and their sysinit.target links.

    They run torcx with this very interpreter, so they work however torcx was installed.
    """
    wants = os.path.join(late_dir, "sysinit.target.wants")
    os.makedirs(wants, exist_ok=True)
    for unit in BOOT_UNITS:
        _write_file(os.path.join(late_dir, unit),
                    unit_text(unit, f"{sys.executable} -I -m torcx"))
        link = os.path.join(wants, unit)
        if not os.path.lexists(link):
            os.symlink("../" + unit, link)


@contextlib.contextmanager
def _readable_image(archive, tmp: str):
    """(folder, manifest or None) of an image's manifest and units, for a moment.

    A tarball's manifest and unit members are copied out (the rest is not
    decoded); a squashfs/erofs image is loop-mounted, here in the sandbox's own
    mount namespace, and unmounted again.
    """
    if archive.format in TAR_FORMATS:
        folder = os.path.join(tmp, "image")
        yield folder, read_unit_members(archive.host_path, folder)
        return
    from . import engine

    folder = os.path.join(tmp, "mnt")
    os.mkdir(folder)
    engine.loop_mount(archive.host_path, folder, archive.format)
    try:
        yield folder, (_read_manifest(folder) if manifest_path_in(folder) else None)
    finally:
        engine.umount(folder)


def _write_image_units(paths, archive, normal_dir: str, log) -> list[str]:
    """Read one image's manifest and units, write them + drop-ins; return the unit names."""
    from . import propagate

    with tempfile.TemporaryDirectory(prefix="torcx-generator.") as tmp, \
            _readable_image(archive, tmp) as (image_root, manifest):
        if manifest is None or not manifest.units:
            return []
        # Propagation's own rules (one level deep, links kept, confined to the
        # image), with the generator folder in place of /run/systemd/system.
        entries = propagate.plan_image(archive.name, image_root, image_root,
                                       {"units": manifest.units}, paths.bin_dir)
        moved = [dataclasses.replace(e, dest=normal_dir + e.dest[len(SYSTEMD_UNIT_DIR):])
                 for e in entries if e.dest.startswith(SYSTEMD_UNIT_DIR + "/")]
        res = propagate.resolve("/", [moved])
        for c in res.conflicts:
            log.warning(f"{c}, ignoring")
        for e in res.existing:
            log.warning(f"{e.dest} already generated by an earlier image, ignoring")
        outcome = propagate.execute("/", res.entries)
        for _entry, why in outcome.failed:
            log.error(f"cannot generate {why}")
    gate = f"{paths.unpack_dir}/{archive.name}/.torcx/manifest.json"
    names = []
    for entry in outcome.created:
        if entry.action != propagate.COPY or os.path.dirname(entry.dest) != normal_dir:
            continue  # files inside .wants/ folders are links, not units to gate
        name = os.path.basename(entry.dest)
        _write_file(os.path.join(normal_dir, name + ".d", DROPIN_NAME),
                    dropin_text(archive.name, gate))
        names.append(name)
    return names


def dropin_text(image: str, gate: str) -> str:
    return (f"# Generated by torcx-generator: this unit comes from the torcx image {image},\n"
            f"# whose files exist once {APPLY_UNIT} has applied it.\n"
            "[Unit]\n"
            f"Wants={APPLY_UNIT}\n"
            f"After={APPLY_UNIT}\n"
            f"AssertPathExists={gate}\n")


def manifest_path_in(image_root: str) -> str | None:
    p = os.path.join(image_root, ".torcx", "manifest.json")
    return p if os.path.isfile(p) and not os.path.islink(p) else None


def _read_manifest(image_root: str):
    from . import schemas

    return schemas.read_image_manifest(os.path.join(image_root, ".torcx", "manifest.json"))


# -- reading the unit members of a tar without decoding all of it ---------------------

def _member(path: str) -> str | None:
    """Normalised relative member path, or None for one that could escape."""
    p = posixpath.normpath("/" + path.lstrip("/")).lstrip("/")
    if not p or p == "." or any(part == ".." for part in path.split("/")):
        return None
    return p


def read_unit_members(archive_path: str, dest: str):
    """Write an image's manifest and its ``units`` members under ``dest``; return the manifest.

    Streams the archive with libarchive and stops as soon as the manifest and
    every unit path have been read: a folder's entries must follow the folder,
    as tar and ``torcx image pack`` write them. ``torcx image pack`` puts
    ``.torcx/`` first, so its archives are read once, up to their units. When
    the manifest does not lead the archive, units may come before it, so the
    archive is read a second time with the wanted paths known. Returns None
    when the image has no manifest.
    """
    from . import schemas

    os.makedirs(dest)
    where = archive_path + ":.torcx/manifest.json"
    text, complete = _stream_members(archive_path, dest, None)
    if text is None:
        return None
    manifest = schemas.parse_image_manifest(schemas.load_json(text, where), where)
    wanted = {m for m in (_member(u) for u in manifest.units) if m}
    if not complete and wanted:
        _stream_members(archive_path, dest, wanted)
    # A unit may be a relative symlink to a file elsewhere in the image (an alias),
    # or sit below a folder that is one (lib -> usr/lib): fetch the targets too,
    # following chains a few links deep.
    for _ in range(8):
        targets = _unresolved_targets(dest, wanted)
        if not targets:
            break
        wanted |= targets
        _stream_members(archive_path, dest, targets)
    return manifest


def _unresolved_targets(dest: str, wanted: set) -> set:
    """Image paths that wanted paths lead to through symlinks but that were not read yet."""
    found = set()
    for path in wanted:
        host = os.path.join(dest, path)
        if os.path.exists(host):
            continue
        target = _inside(dest, path, follow_leaf=True)
        if target is None:
            continue  # resolves outside the image: propagation refuses it anyway
        rel = os.path.relpath(target, os.path.realpath(dest))
        if rel != path and rel not in wanted:
            found.add(rel)
    return found


def _inside(dest: str, path: str, follow_leaf: bool = False) -> str | None:
    """Host path of image ``path`` below ``dest``, through symlinks that stay inside it only.

    None when the path leads out of the image: nothing is ever written there.
    """
    real_dest = os.path.realpath(dest)
    if follow_leaf:
        real = os.path.realpath(os.path.join(dest, path))
    else:
        parent = os.path.realpath(os.path.join(dest, posixpath.dirname(path)))
        real = os.path.join(parent, posixpath.basename(path))
    if real != real_dest and not real.startswith(real_dest + os.sep):
        return None
    return real


def _stream_members(archive_path: str, dest: str, wanted: set | None):
    """One pass over the archive; returns (manifest text or None, units complete?).

    ``wanted=None``: find the manifest, and read the units in the same pass if
    the manifest comes before any other member. A damaged archive is a
    CorruptArchive naming it, so that only its image fails.
    """
    import libarchive

    try:
        return _stream_members_once(libarchive, archive_path, dest, wanted)
    except libarchive.ArchiveError as e:
        raise CorruptArchive(getattr(e, "msg", None) or str(e),
                             filename=archive_path) from None


def _stream_members_once(libarchive, archive_path: str, dest: str, wanted: set | None):
    manifest = None
    leading = True  # no member outside .torcx/ seen before the manifest
    seen: set = set()
    with libarchive.file_reader(archive_path) as reader:
        for entry in reader:
            path = _member(entry.pathname)
            if path is None:
                continue
            if path == ".torcx" or path.startswith(".torcx/"):
                if manifest is None and wanted is None and path == ".torcx/manifest.json" \
                        and entry.isfile:
                    manifest = _read_entry(entry)
                    _store(entry, dest, path, manifest)
                    wanted = _wanted_from(manifest)
                    if wanted is None or not leading:
                        return manifest, False  # parse errors are reported by the caller
                continue
            if wanted is None:
                leading = False
                continue
            related = _related(path, wanted)
            if related:
                seen.add(related)
                _store(entry, dest, path)
            elif entry.issym and any(w.startswith(path + "/") for w in wanted):
                _store(entry, dest, path)  # a folder link on the way (lib -> usr/lib)
            elif seen >= wanted:
                break  # past the last unit member
    return manifest, True


def _wanted_from(text: bytes):
    import json

    try:
        units = json.loads(text)["value"].get("units") or []
        return {m for m in (_member(u) for u in units if isinstance(u, str)) if m}
    except (ValueError, KeyError, AttributeError, TypeError):
        return None


def _related(path: str, wanted: set) -> str | None:
    """The wanted unit path ``path`` is, or whose folder it sits in (one level deep)."""
    if path in wanted:
        return path
    parent = posixpath.dirname(path)
    return parent if parent in wanted else None


def _read_entry(entry) -> bytes:
    return b"".join(entry.get_blocks())


def _store(entry, dest: str, path: str, data: bytes | None = None) -> None:
    """Recreate one member under dest: folders, regular files and symlinks only.

    Links are created, never written through out of dest (a .wants folder that
    is a link to a host folder must not become a way to write there).
    """
    target = _inside(dest, path)
    if target is None:
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if entry.isdir:
        if not os.path.lexists(target):
            os.mkdir(target)
    elif entry.issym:
        if not os.path.lexists(target):
            os.symlink(entry.linkpath, target)
    elif entry.isfile:
        _write_new(target, _read_entry(entry) if data is None else data)
    elif entry.islnk:
        source = _member(entry.linkpath or "")
        source_host = _inside(dest, source) if source else None
        if source_host and os.path.isfile(source_host) and not os.path.islink(source_host):
            with open(source_host, "rb") as f:
                _write_new(target, f.read())


def _write_new(target: str, data: bytes) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


# -- torcx-apply.service and install-boot --------------------------------------------

def unit_text(unit: str, launcher: str) -> str:
    """A shipped boot unit (torcx/units/UNIT), running torcx as ``launcher``."""
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "units", unit), encoding="utf-8") as f:
        return f.read().replace("/usr/bin/torcx ", launcher + " ")


def _write_file(path: str, text: str, mode: int = 0o644) -> None:
    """Atomic write, creating the folder; no fsync (generator output lives in /run)."""
    from .schemas import write_atomic

    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomic(path, text, mode, durable=False)


def launcher_text(interpreter: str) -> str:
    return (f"#!{interpreter} -I\n"
            f"# SPDX-License-Identifier: Apache-2.0\n"
            f"# torcx launcher, {MARKER}; multicall on the name it is called by.\n"
            "import sys\n\n"
            "from torcx.cli import main\n\n"
            "sys.exit(main())\n")


def _ours(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return MARKER in f.read(4096)
    except OSError:
        return False


def install_boot(root: str = "/", *, generator_dir: str = GENERATOR_DIRS[0],
                 wheel: str | None = None, force: bool = False, log=_log.NULL) -> list[str]:
    """Install the generator, the launcher and torcx-apply.service under ``root``.

    ``wheel``: also unpack a torcx wheel (abi3: one build serves every Python
    3.9+) into ``PACKAGE_DIR``, so the target's own python3 runs torcx.
    Returns the installed paths (logical), also recorded in RECORD for
    ``uninstall_boot``. An existing file not installed by us is never replaced
    unless ``force``.
    """
    root = os.path.abspath(root or "/")
    if generator_dir not in GENERATOR_DIRS:
        raise ConfigError(f"--generator-dir must be one of {', '.join(GENERATOR_DIRS)}")
    interpreter = "/usr/bin/python3" if root != "/" else sys.executable
    installed: list[str] = []
    if wheel:
        installed += _unpack_wheel(root, wheel)
        _precompile(root, log)
    elif root != "/" and not _has_package(root):
        log.warning(f"no torcx package for the python3 of {root} (looked in "
                    f"{PACKAGE_DIR} and /usr/local/lib/python3*/dist-packages); its boot "
                    "will fail until one is installed: pass --wheel")
    files = [
        (LAUNCHER, launcher_text(interpreter), 0o755),
        (f"{generator_dir}/torcx-generator", launcher_text(interpreter), 0o755),
    ] + [(f"{UNIT_DIRS[generator_dir]}/{unit}", unit_text(unit, LAUNCHER), 0o644)
         for unit in BOOT_UNITS]
    for logical, _text, _mode in files:
        host = host_path(root, logical)
        if os.path.lexists(host) and not force and not _ours(host):
            raise ConfigError(f"{host} exists and was not installed by torcx; "
                              "use --force to replace it")
    for logical, text, mode in files:
        _write_file(host_path(root, logical), text, mode)
        installed.append(logical)
        log.info(f"installed {logical}")
    previous = _read_record(root)
    _write_file(host_path(root, RECORD), "".join(
        p + "\n" for p in dict.fromkeys(previous + installed)))
    return installed


def _precompile(root: str, log) -> None:
    """Byte-compile the unpacked package with the target's own python3.

    On an immutable /usr nothing can write __pycache__ at boot, and compiling
    torcx's modules costs each of the two boot-time processes about 30 ms.
    Hash-checked .pyc files stay valid when an image builder resets mtimes.
    """
    import subprocess

    args = ["-I", "-m", "compileall", "-q", "--invalidation-mode", "checked-hash",
            f"{PACKAGE_DIR}/torcx"]
    if root == "/":
        cmd = [sys.executable] + args
    elif os.geteuid() == 0:
        cmd = ["chroot", root, "/usr/bin/python3"] + args
    else:
        log.warning(f"not root: torcx is not byte-compiled for the python3 of {root}")
        return
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        problem = (r.stderr or r.stdout).strip().splitlines()[-1:] if r.returncode else None
    except OSError as e:
        problem = [str(e)]
    if problem:
        log.warning(f"torcx not byte-compiled for the python3 of {root} ({problem[0]}); "
                    "with a read-only /usr it compiles at every boot")


def _has_package(root: str) -> bool:
    import glob

    patterns = [PACKAGE_DIR, "/usr/lib/python3.*/dist-packages",
                "/usr/local/lib/python3.*/dist-packages"]
    return any(glob.glob(os.path.join(host_path(root, p), "torcx", "cli.py")) for p in patterns)


def _unpack_wheel(root: str, wheel: str) -> list[str]:
    """Unpack the package and its dist-info from a wheel into PACKAGE_DIR."""
    import zipfile

    out = []
    base = host_path(root, PACKAGE_DIR)
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            name = info.filename
            top = name.split("/", 1)[0]
            if info.is_dir() or ".data/" in name or not (top == "torcx"
                                                         or top.endswith(".dist-info")):
                continue
            member = _member(name)
            if member is None:
                raise ConfigError(f"{wheel}: unsafe member {name!r}")
            target = os.path.join(base, member)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(info) as src, open(target + ".torcx-tmp", "wb") as dst:
                shutil.copyfileobj(src, dst)
            mode = (info.external_attr >> 16) & 0o777 or 0o644
            os.chmod(target + ".torcx-tmp", mode)
            os.replace(target + ".torcx-tmp", target)
            out.append(f"{PACKAGE_DIR}/{member}")
    if not any(p.endswith("/torcx/cli.py") for p in out):
        raise ConfigError(f"{wheel}: not a torcx wheel (no torcx/cli.py)")
    return out


def _read_record(root: str) -> list[str]:
    try:
        with open(host_path(root, RECORD), encoding="utf-8") as f:
            return [ln.strip() for ln in f if ln.strip().startswith("/")]
    except FileNotFoundError:
        return []


def uninstall_boot(root: str = "/", log=_log.NULL) -> list[str]:
    """Remove what install_boot recorded, and the package folders it leaves empty.

    Byte-code caches Python wrote into the package since are removed with it;
    nothing else is touched. Returns the removed paths (logical).
    """
    root = os.path.abspath(root or "/")
    package_dir = host_path(root, PACKAGE_DIR)
    removed = []
    folders: set = set()
    for logical in _read_record(root):
        host = host_path(root, logical)
        try:
            os.unlink(host)
        except FileNotFoundError:
            continue
        removed.append(logical)
        log.info(f"removed {logical}")
        parent = os.path.dirname(host)
        while parent.startswith(package_dir + "/"):
            folders.add(parent)
            parent = os.path.dirname(parent)
    for folder in sorted(folders, key=len, reverse=True):  # deepest first
        shutil.rmtree(os.path.join(folder, "__pycache__"), ignore_errors=True)
        try:
            os.rmdir(folder)
        except OSError:
            pass  # holds files we did not install: keep it
    record = host_path(root, RECORD)
    for undo, path in ((os.unlink, record), (os.rmdir, os.path.dirname(record))):
        try:
            undo(path)
        except OSError:
            pass
    return removed


def install_boot_main(ctx, args) -> int:
    """``torcx install-boot [--root DIR] [--generator-dir D] [--wheel W] [--force]``."""
    installed = install_boot(ctx.root, generator_dir=args.generator_dir, wheel=args.wheel,
                             force=args.force, log=ctx.log)
    ctx.out(f"installed {len(installed)} file(s) under {ctx.root}")
    return 0


def uninstall_boot_main(ctx, args) -> int:
    """``torcx uninstall-boot [--root DIR]``."""
    removed = uninstall_boot(ctx.root, log=ctx.log)
    ctx.out(f"removed {len(removed)} file(s) under {ctx.root}")
    return 0
