# SPDX-License-Identifier: Apache-2.0
"""Propagation: expose an unpacked image's assets to the system (SPEC.md section 6, step 4).

Two phases so that ``--dry-run`` can show exactly what a real run does:
``plan_image`` reads one unpacked image and lists what it would create,
``resolve`` orders the lists of all images (first image wins, conflicts and
pre-existing files reported, nothing overwritten), ``execute`` creates them.

Paths come in two flavours. *Target* paths are what the booted system sees
(``/run/torcx/unpack/docker/bin/docker``) and are what gets written into
symlinks and reports. *Host* paths are where this process touches the
filesystem: the target path under the ``--root`` prefix, given by a ``host``
function (``Paths.host``).
"""

from __future__ import annotations

import os
import posixpath
import stat

from .. import fstree, schemas
from ..errors import SchemaError
from ..records import Record
from . import MANIFEST, MANIFEST_LIMIT, Run, internal_error

TYPE_CHECKING = False  # for annotations only: collections.abc is not imported at boot
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

# Destination folder (target path) of each manifest key other than "bin".
UNIT_DIRS = {
    "units": "/run/systemd/system",
    "network": "/run/systemd/network",
    "sysusers": "/run/sysusers.d",
    "tmpfiles": "/run/tmpfiles.d",
    "udev_rules": "/run/udev/rules.d",
}
KINDS = ("bin",) + tuple(UNIT_DIRS)

# Actions, by what they create at ``dest``.
SYMLINK = "symlink"  # bin: a link into the unpacked image
COPY = "copy"        # a unit-like file, copied
MKDIR = "mkdir"      # a unit-like directory (e.g. multi-user.target.wants), recreated
LINK = "link"        # a symlink inside such a directory, copied as a link

COPY_MODE = 0o644  # as upstream: propagated configuration is plain readable data

# Bounds per image, far above any real image: a manifest may list the same
# folder 700,000 times, and a bin folder may hold a million files.
MAX_ASSETS = 4096      # distinct paths a manifest lists, all kinds together
MAX_ENTRIES = 65536    # things one image propagates

# ``host`` arguments map a target path to where it lives here: a function
# (torcx.paths.Paths.host, the --root prefix) or the root folder as a string.
HostMap = "Callable[[str], str] | str"


def _host_fn(host: HostMap) -> Callable[[str], str]:
    if not isinstance(host, str):
        return host
    root = host
    if not root or root == "/":
        return lambda target: target
    return lambda target: os.path.join(root, target.lstrip("/"))


class AssetError(ValueError):
    """A manifest entry cannot be propagated (missing, or escaping its image)."""


class Entry(Record):
    """One thing propagation creates: ``dest`` (target path) made from ``source``.

    ``image``, ``kind`` and ``action``; ``source``: target path inside the unpacked
    image; ``dest``: target path created; ``link``: symlink text for SYMLINK and LINK.
    """

    __slots__ = ("image", "kind", "action", "source", "dest", "link")
    _defaults = {"link": ""}
    _frozen = True

    def to_json(self) -> dict:
        d = {"image": self.image, "kind": self.kind, "action": self.action,
             "source": self.source, "dest": self.dest}
        if self.link:
            d["link"] = self.link
        return d


class Conflict(Record):
    """Two images provide the same destination; the earlier image's entry is kept.

    ``kept``: the image whose entry was propagated; ``dropped``: the one whose was not.
    """

    __slots__ = ("kind", "dest", "kept", "dropped")
    _frozen = True

    def to_json(self) -> dict:
        return {"kind": self.kind, "dest": self.dest, "kept": self.kept,
                "dropped": self.dropped}

    def __str__(self) -> str:
        return (f"{self.kind} {self.dest} provided by both {self.kept!r} and "
                f"{self.dropped!r}; keeping {self.kept!r}")


class Resolution(Record):
    """The ordered entries to create plus what was left out and why (``existing``: dest
    already on disk, not overwritten)."""

    __slots__ = ("entries", "conflicts", "existing")
    _factories = {"entries": list, "conflicts": list, "existing": list}


class Outcome(Record):
    """What ``execute`` did: created entries and per-entry failures ((entry, why) pairs)."""

    __slots__ = ("created", "existing", "failed")
    _factories = {"created": list, "existing": list, "failed": list}


def _lexists(path: str) -> bool:
    """Whether ``path`` is taken; when it cannot even be looked at (a parent that
    is a file, no permission), creating it will fail and say why (never overwrite)."""
    try:
        os.lstat(path)
    except OSError:
        return False
    return True


class _Image:
    """An unpacked image: its host folder (resolved) and its target path."""

    def __init__(self, name: str, host_dir: str, target_dir: str):
        self.name = name
        self.real = os.path.realpath(host_dir)
        self.target = target_dir.rstrip("/")

    def _confined(self, real: str, what: str) -> str:
        if real != self.real and not real.startswith(self.real + "/"):
            raise AssetError(f"{what}: resolves outside the image")
        return real

    def locate(self, asset: str, follow: bool) -> str:
        """Host path of manifest path ``asset``, refusing anything outside the image.

        The parent folders are always resolved; the last component only with
        ``follow`` (a bin may be a symlink to anything: it is linked, not read).
        """
        if not asset.startswith("/"):
            raise AssetError(f"{asset}: not an absolute path inside the image")
        norm = posixpath.normpath(asset)  # "/../x" -> "/x": cannot climb out lexically
        if norm == "/":
            raise AssetError(f"{asset}: is the image root")
        parent, base = posixpath.split(norm)
        host_parent = self._confined(os.path.realpath(self.real + parent), asset)
        host = os.path.join(host_parent, base)
        if not _lexists(host):
            raise AssetError(f"{asset}: no such file in the image")
        if follow:
            host = self._confined(os.path.realpath(host), asset)
        return host

    def target_of(self, host: str) -> str:
        """Target path of a host path inside this image."""
        return self.target + host[len(self.real):]


def read_image_file(host_dir: str, path: str, limit: int) -> bytes | None:
    """The bytes of regular file ``path`` (absolute, inside the image at ``host_dir``).

    None when nothing is there. Symlinks are followed only while they stay in
    the image, so a link to /etc/shadow or /dev/zero is never opened; a FIFO or
    device is refused without opening it for long (no hang), and so is a file
    above ``limit`` bytes. Raises AssetError (the problem, without the path).
    """
    img = _Image("", host_dir, "")
    rel = posixpath.normpath("/" + path).lstrip("/")
    if not rel or not os.path.lexists(os.path.join(img.real, rel)):
        return None
    real = os.path.realpath(os.path.join(img.real, rel))
    if not real.startswith(img.real + "/"):
        raise AssetError("resolves outside the image")
    fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise AssetError("not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise AssetError(f"larger than {limit} bytes")
    return data


def _bin_folder(img: _Image, asset: str, host: str):
    """The folder to walk for bin ``asset``, or None to link the asset itself.

    A symlink is walked only when it resolves to a folder inside the image; a
    link to anything else (an absolute path of the booted system, say) is
    linked as it is, like upstream.
    """
    if not os.path.islink(host):
        return host if os.path.isdir(host) else None
    try:
        real = img.locate(asset, follow=True)
    except AssetError:
        return None
    return real if os.path.isdir(real) else None


def _plan_bin(img: _Image, asset: str, bindir: str) -> list[Entry]:
    host = img.locate(asset, follow=False)
    folder = _bin_folder(img, asset, host)
    if folder is not None:
        host = folder
        found = []
        for top, _dirs, others in fstree.walk(host):
            found.extend(os.path.join(top, f) for f in others)  # links to folders too
            if len(found) > MAX_ENTRIES:
                raise AssetError(f"{asset}: more than {MAX_ENTRIES} files to link")
        paths = found
    else:
        paths = [host]
    out = []
    for path in paths:
        mode = os.lstat(path).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            continue  # sockets, fifos, devices are no binaries
        target = img.target_of(path)
        out.append(Entry(img.name, "bin", SYMLINK, target,
                         posixpath.join(bindir, os.path.basename(path)), link=target))
    return out


def _plan_unit(img: _Image, kind: str, asset: str) -> list[Entry]:
    destdir = UNIT_DIRS[kind]
    host = img.locate(asset, follow=True)
    # Named as listed (an alias link keeps its own name), without a trailing "/".
    dest = posixpath.join(destdir, posixpath.basename(posixpath.normpath(asset)))
    if not os.path.isdir(host):
        if not os.path.isfile(host):
            raise AssetError(f"{asset}: not a regular file or a folder")
        return [Entry(img.name, kind, COPY, img.target_of(host), dest)]
    # A folder (e.g. multi-user.target.wants/) is recreated one level deep.
    sub = dest
    out = [Entry(img.name, kind, MKDIR, img.target_of(host), sub)]
    for name in sorted(os.listdir(host)):
        path = os.path.join(host, name)
        mode = os.lstat(path).st_mode
        dest = posixpath.join(sub, name)
        if stat.S_ISLNK(mode):
            # Kept as written, like `systemctl enable` makes them (../foo.service).
            out.append(Entry(img.name, kind, LINK, img.target_of(path), dest,
                             link=os.readlink(path)))
        elif stat.S_ISREG(mode):
            out.append(Entry(img.name, kind, COPY, img.target_of(path), dest))
        # deeper folders are not propagated (one level deep, as upstream)
    return out


def plan_image(name: str, host_dir: str, target_dir: str, assets: dict,
               bindir: str) -> list[Entry]:
    """List what propagating one unpacked image creates, in manifest order.

    ``assets`` is the image manifest's value (keys of KINDS, lists of paths);
    ``host_dir``/``target_dir`` are the image's unpacked folder as seen here
    and on the target; ``bindir`` is the target bin dir. Raises AssetError
    naming the first manifest entry that cannot be propagated: an image with
    a bad manifest propagates nothing rather than half of itself.
    """
    img = _Image(name, host_dir, target_dir)
    entries: list[Entry] = []
    listed = {kind: _distinct(assets.get(kind) or ()) for kind in KINDS}
    count = sum(len(v) for v in listed.values())
    if count > MAX_ASSETS:
        raise AssetError(f"lists {count} distinct paths; at most {MAX_ASSETS} are allowed")
    for kind in KINDS:
        for asset in listed[kind]:
            if len(entries) > MAX_ENTRIES:
                raise AssetError(f"more than {MAX_ENTRIES} entries to propagate")
            try:
                if kind == "bin":
                    entries.extend(_plan_bin(img, asset, bindir))
                else:
                    entries.extend(_plan_unit(img, kind, asset))
            except OSError as e:
                raise AssetError(f"{asset}: {e.strerror or e}") from e
            except AssetError as e:
                raise AssetError(f"{kind}: {e}") from None
    return entries


def _distinct(listed) -> list[str]:
    """The manifest paths of one kind, each once (first place kept): '/bin', '/bin/'
    and '/./bin' are one folder, walked once however often it is listed."""
    seen: dict[str, str] = {}
    for asset in dict.fromkeys(listed):  # exact repeats first, cheaply
        if not asset:
            continue  # upstream skips empty entries
        key = posixpath.normpath(asset) if asset.startswith("/") else asset
        seen.setdefault(key, asset)
    return list(seen.values())


def resolve(host: HostMap, planned: Iterable[Sequence[Entry]]) -> Resolution:
    """Merge the per-image plans in image order: nothing is ever overwritten.

    The first image to claim a destination keeps it; a later claim is a
    Conflict (folders are shared, not claimed). A destination that already
    exists on disk (left by something else) is kept and reported.
    """
    host = _host_fn(host)
    res = Resolution()
    claimed: dict[str, Entry] = {}
    for entries in planned:
        claimed.update(_resolve_image(host, claimed, entries, res))
    return res


def _resolve_image(host: Callable[[str], str], claimed: dict, entries: Sequence[Entry],
                   res: Resolution) -> dict[str, Entry]:
    """Add one image's entries to ``res`` against the destinations ``claimed`` by the
    images before it; returns this image's own claims (the caller commits them)."""
    mine: dict[str, Entry] = {}
    for entry in entries:
        first = mine.get(entry.dest) or claimed.get(entry.dest)
        if first is not None:
            if entry.action == MKDIR and first.action == MKDIR:
                continue  # two images adding to multi-user.target.wants/
            if first.image != entry.image:
                res.conflicts.append(Conflict(entry.kind, entry.dest, first.image,
                                              entry.image))
            continue
        mine[entry.dest] = entry
        dest = host(entry.dest)
        if entry.action == MKDIR:
            if os.path.isdir(dest):
                continue  # an existing folder is merged into, as systemd does
        elif _lexists(dest):
            res.existing.append(entry)
            continue
        res.entries.append(entry)
    return mine


def _copy_new(src: str, dest: str) -> None:
    """Copy ``src`` to a new ``dest`` (EEXIST if anything is there, a symlink included).

    Created in place with O_EXCL: a temporary name and a link(2) would be one
    more name to leave behind when a call fails. A copy that fails part way is
    removed again (systemd reads the folders only once the apply is done).
    """
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 COPY_MODE)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            os.fchmod(out.fileno(), COPY_MODE)  # not subject to the umask
            while True:
                block = inp.read(1 << 16)
                if not block:
                    break
                out.write(block)
    except BaseException:
        _remove(dest, is_dir=False)
        raise


def _create(host: HostMap, entry: Entry) -> None:
    dest = host(entry.dest)
    os.makedirs(os.path.dirname(dest), mode=0o755, exist_ok=True)
    if entry.action in (SYMLINK, LINK):
        os.symlink(entry.link, dest)
    elif entry.action == COPY:
        _copy_new(host(entry.source), dest)
    elif entry.action == MKDIR:
        os.makedirs(dest, mode=0o755, exist_ok=True)
    else:  # pragma: no cover - every action is handled above
        raise AssertionError(f"unknown propagation action {entry.action}")


def execute(host: HostMap, entries: Iterable[Entry], out: Outcome | None = None, *,
            all_or_nothing: bool = False) -> Outcome:
    """Create ``entries`` in order into ``out``; a failing entry never stops the others,
    unless ``all_or_nothing``: then the first failure stops (see rollback)."""
    host = _host_fn(host)
    out = Outcome() if out is None else out
    for entry in entries:
        try:
            _create(host, entry)
        except FileExistsError:
            out.existing.append(entry)  # appeared meanwhile: still never overwritten
        except OSError as e:
            out.failed.append((entry, f"{entry.dest}: {e.strerror or e}"))
            if all_or_nothing:
                break
        else:
            out.created.append(entry)
    return out


def _remove(path: str, is_dir: bool) -> str:
    """Remove what we created at ``path`` (tried twice); '' or why it stays."""
    why = ""
    for _ in range(2):
        try:
            os.rmdir(path) if is_dir else os.unlink(path)
            return ""
        except FileNotFoundError:
            return ""
        except OSError as e:
            why = e.strerror or str(e)
    return why


def rollback(host: HostMap, created: Sequence[Entry]) -> list[str]:
    """Remove ``created`` (newest first); the destinations that could not be removed."""
    host = _host_fn(host)
    left = []
    for entry in reversed(created):
        why = _remove(host(entry.dest), is_dir=entry.action == MKDIR)
        if why:
            left.append(f"{entry.dest} ({why})")
    return left


# -- the apply's propagate phase ---------------------------------------------------

def read_assets(image_host: str, image_target: str) -> dict:
    """The image manifest's assets; an image without a manifest propagates nothing.

    Read without leaving the image (raises AssetError otherwise).
    """
    data = read_image_file(image_host, "/" + MANIFEST, MANIFEST_LIMIT)
    if data is None:
        return {}
    shown = f"{image_target}/{MANIFEST}"
    manifest = schemas.parse_image_manifest(schemas.load_json(data, shown), shown)
    return dict(manifest.items())


def plan_run(run: Run, unpack_host: str) -> None:
    """Read each unpacked image's manifest and list what it propagates."""
    paths = run.paths
    for image in run.images:
        if not image.ok:
            continue
        host = os.path.join(unpack_host, image.name)
        target = f"{paths.unpack_dir}/{image.name}"
        try:
            assets = read_assets(host, target)
        except SchemaError as e:
            image.fail("manifest", str(e))
            continue
        except AssetError as e:
            image.fail("manifest", f"{target}/{MANIFEST}: {e}")
            continue
        except OSError as e:
            image.fail("manifest", f"{target}/{MANIFEST}: {e.strerror or e}")
            continue
        except Exception as e:
            image.fail("manifest", f"{target}/{MANIFEST}: {internal_error(e)}")
            continue
        try:
            image.entries = plan_image(image.name, host, target, assets, paths.bin_dir)
        except AssetError as e:
            image.fail("manifest", f"{target}/{MANIFEST}: {e}")
        except Exception as e:  # a bug met by one image fails that image only
            image.fail("manifest", f"{target}/{MANIFEST}: {internal_error(e)}")


def resolve_run(run: Run):
    """Order all images' entries; in a dry run what would be created counts as created."""
    by_image = {im.name: im for im in run.images}
    res = resolve(run.paths.host, [im.entries for im in run.images if im.ok])
    run.conflicts = res.conflicts
    for entry in res.existing:
        by_image[entry.image].existing.append(entry)
    if run.dry_run:
        for entry in res.entries:
            by_image[entry.image].created.append(entry)
    return res


def propagate_run(run: Run) -> None:
    """Propagate image by image, each all or nothing.

    An image whose entry cannot be made has what it made removed again and
    fails alone; its destinations stay free for the images after it. After a
    SIGTERM the image in progress finishes, the ones after it are not started.
    """
    host = _host_fn(run.paths.host)
    claimed: dict[str, Entry] = {}
    for image in run.images:
        if not image.ok:
            continue
        if run.interrupted:
            image.fail("propagate", f"not propagated: the apply was interrupted "
                                    f"({run.interrupted})")
            continue
        res, out, failure = Resolution(), Outcome(), ""
        try:
            mine = _resolve_image(host, claimed, image.entries, res)
            execute(host, res.entries, out, all_or_nothing=True)
        except Exception as e:  # a bug met by one image fails that image only
            failure = internal_error(e)
        else:
            failure = out.failed[0][1] if out.failed else ""
        run.conflicts.extend(res.conflicts)
        image.existing.extend(res.existing + out.existing)
        if failure:
            left = rollback(host, out.created)
            if left:
                failure += f"; could not remove again: {', '.join(left)}"
            image.fail("propagate", failure)
            continue
        claimed.update(mine)
        image.created.extend(out.created)
