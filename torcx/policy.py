# SPDX-License-Identifier: Apache-2.0
"""Trust at boot: what an image from each class of store needs before it is applied.

Levels, weakest first: ``none`` (nothing required), ``integrity`` (the
archive's own ``.torcx/digests``, or for a mounted image the digest of the
image file that ``pack``/``populate`` recorded next to it; what torcx always
did) and ``signed`` (the store folder holds ``torcx_remote_contents.json.asc``,
clear-signed by an allowed key, and the archive's sha512 is the signed one).

Where the levels come from, each only able to raise what the one before set:
the vendor's ``USR/share/torcx/policy.json``, the admin's
``CONFDIR/policy.json``, then ``torcx.policy=`` on the kernel command line
(this boot only). Without any of them every store is at ``integrity``.
Keys: ``USR/share/torcx/keys/*.asc`` (or binary ``*.gpg``), plus
``CONFDIR/keys/*`` only where the vendor's file says ``"admin_keys": true``
(or there is no vendor file). A policy file that cannot be read fails closed:
every store but the vendor's then needs a signature.

The archive itself is never read here: :meth:`Verifier.decide` says what an
archive needs (and which sha512 it must have), the caller checks it while it
reads the archive anyway (the engine's ``pin_sha256``/``pin_sha512`` for tarballs,
:func:`torcx.engine.digest_files` for image files). :meth:`Verifier.verify_file`
does both for any file of a store folder (a sysext image too), for callers that
have no reading of their own.
At most one signature check (gpgv) per store folder and run.
"""

from __future__ import annotations

import os
import posixpath

from . import schemas
from .errors import PolicyError, RemoteError, SchemaError
from .log import NULL
from .paths import PROC_CMDLINE, read_text_file

POLICY_KIND = "torcx-policy-v0"
LEVELS = ("none", "integrity", "signed")
CLASSES = ("vendor", "oem", "config", "user", "runtime")
DEFAULT_LEVEL = "integrity"
CMDLINE_KEY = "torcx.policy="
SIGNED_FILE = "torcx_remote_contents.json.asc"
# What pack/populate record next to an image file, best first: XXH3-128
# (xxh128sum format; several GB/s, enough against corruption) or SHA-512
# (sha512sum format; what populate knows from the signed contents).
RECORDED_SUFFIXES = (".xxh128", ".sha512")
_RECORDED_ALGO = {".xxh128": "xxh3", ".sha512": "sha512"}
KEY_SUFFIXES = (".asc", ".gpg")

_HEX_DIGITS = {"sha512": 128, "xxh3": 32}

__all__ = ["CLASSES", "LEVELS", "RECORDED_SUFFIXES", "Decision", "Policy", "Verifier", "load",
           "read_recorded_digest", "recorded_digest_path", "write_recorded_digest"]


def _rank(level: str) -> int:
    return LEVELS.index(level)


class Policy:
    """The effective policy of a run: a level per store class, and the keys allowed.

    (Plain classes here, not dataclasses: this module is on the boot path, and
    dataclasses imports inspect.)
    """

    __slots__ = ("levels", "check_files", "admin_keys", "sources", "problems", "key_paths")

    def __init__(self):
        self.levels = dict.fromkeys(CLASSES, DEFAULT_LEVEL)
        self.check_files = False  # also check every file of a mounted image (reads everything)
        self.admin_keys = True
        self.sources: list[str] = []   # what set it, in order
        self.problems: list[str] = []  # ignored or failed-closed inputs
        self.key_paths: list[str] = []  # logical paths of the keyrings

    def tighten(self, levels: dict, source: str) -> None:
        for cls, level in levels.items():
            if _rank(level) > _rank(self.levels[cls]):
                self.levels[cls] = level
            elif _rank(level) < _rank(self.levels[cls]):
                self.problems.append(f"{source}: {cls} {level!r} would loosen "
                                     f"{self.levels[cls]!r}, ignored")

    @property
    def default(self) -> bool:
        """No file and no kernel option: today's behaviour."""
        return not self.sources

    def to_json(self) -> dict:
        return {"levels": dict(self.levels), "check_files": self.check_files,
                "admin_keys": self.admin_keys, "sources": list(self.sources),
                "problems": list(self.problems), "keyrings": list(self.key_paths)}

    def summary(self) -> str:
        levels = ", ".join(f"{c} {lv}" for c, lv in self.levels.items())
        origin = " + ".join(self.sources) if self.sources else "default (no policy file)"
        files = "; every file of mounted images checked" if self.check_files else ""
        return f"{levels} (from {origin}){files}"


# -- reading -----------------------------------------------------------------------

def parse_policy(doc, filename: str) -> tuple[dict, bool | None, bool | None]:
    """``torcx-policy-v0``: (levels by class, check_files, admin_keys); SchemaError if bad."""
    c = schemas._Checker(filename)
    _, value = c.envelope(doc, (POLICY_KIND,))
    stores = c.field(value, "stores", "$.value", "object", required=False) or {}
    levels = {}
    for cls, level in stores.items():
        path = f"$.value.stores.{cls}"
        if cls not in CLASSES:
            c.fail(path, f"unknown store class, expected one of {', '.join(CLASSES)}")
        c.typed(level, path, "string")
        if level not in LEVELS:
            c.fail(path, f"unknown level {level!r}, expected one of {', '.join(LEVELS)}")
        levels[cls] = level
    check_files = c.field(value, "check_files", "$.value", "boolean", required=False)
    admin_keys = c.field(value, "admin_keys", "$.value", "boolean", required=False)
    for key in value:
        if key not in ("stores", "check_files", "admin_keys"):
            c.fail(f"$.value.{key}", "unknown field")
    return levels, check_files, admin_keys


def parse_cmdline(cmdline: str) -> tuple[dict, bool, list]:
    """Levels from ``torcx.policy=LEVEL`` (every store but the vendor's) or
    ``torcx.policy=CLASS:LEVEL,...`` (and ``files``, to check every file of mounted
    images); (levels, check_files, problems)."""
    levels: dict = {}
    check_files = False
    problems = []
    for word in cmdline.split():
        if not word.startswith(CMDLINE_KEY):
            continue
        for item in word[len(CMDLINE_KEY):].split(","):
            cls, colon, level = item.rpartition(":")
            if item == "files":
                check_files = True
            elif level in LEVELS and (not colon or cls in CLASSES):
                # A bare LEVEL spares the vendor store: /usr holds the keys too.
                for c in ([cls] if colon else CLASSES[1:]):
                    if _rank(level) > _rank(levels.get(c, "none")):
                        levels[c] = level
            else:
                problems.append(f"kernel command line: {CMDLINE_KEY}{item} not understood "
                                f"(expected LEVEL, CLASS:LEVEL or files), ignoring")
    return levels, check_files, problems


def vendor_policy_path(paths) -> str:
    return paths.vendor_dir + "/policy.json"


def admin_policy_path(paths) -> str:
    return paths.conf_dir + "/policy.json"


def _read_policy_file(paths, path: str, pol: Policy):
    """The parsed file, None if absent; a broken file fails closed and is recorded."""
    host = paths.host(path)
    try:
        with open(host, "rb") as f:
            raw = f.read(1 << 20)
    except FileNotFoundError:
        return None
    except OSError as e:
        problem = f"{path}: cannot read: {e.strerror or e}"
    else:
        try:
            return parse_policy(schemas.load_json(raw, path), path)
        except SchemaError as e:
            problem = str(e)
    pol.problems.append(f"{problem}; every store but the vendor's now needs a signature")
    pol.sources.append(f"{path} (unreadable: fail closed)")
    pol.tighten({c: "signed" for c in CLASSES if c != "vendor"}, path)
    return None


def load(paths, log=NULL, *, cmdline: str | None = None) -> Policy:
    """The effective policy: vendor file, tightened by /etc, then by the kernel command line.

    ``cmdline`` overrides /proc/cmdline (tests). Never raises for bad input:
    problems are logged, recorded and resolved towards the stricter choice.
    """
    pol = Policy()
    vendor_path, admin_path = vendor_policy_path(paths), admin_policy_path(paths)
    vendor = _read_policy_file(paths, vendor_path, pol)
    if pol.sources:  # the vendor's file is there but unreadable: no admin keys either
        pol.admin_keys = False
    if vendor is not None:
        levels, check_files, admin_keys = vendor
        pol.levels.update(levels)  # the vendor sets the base, in both directions
        pol.check_files = bool(check_files)
        pol.admin_keys = bool(admin_keys)
        pol.sources.append(vendor_path)
    admin = _read_policy_file(paths, admin_path, pol)
    if admin is not None:
        levels, check_files, admin_keys = admin
        pol.tighten(levels, admin_path)
        if check_files:
            pol.check_files = True
        elif check_files is False and pol.check_files:
            pol.problems.append(f"{admin_path}: check_files false would loosen the "
                                "vendor's true, ignored")
        if admin_keys and not pol.admin_keys:
            pol.problems.append(f"{admin_path}: admin_keys true would loosen the vendor "
                                "policy, ignored")
        elif admin_keys is False:
            pol.admin_keys = False
        pol.sources.append(admin_path)
    if cmdline is None:
        cmdline = read_text_file(paths.host(PROC_CMDLINE)) or ""
    levels, check_files, problems = parse_cmdline(cmdline)
    pol.problems.extend(problems)
    if levels or check_files:
        pol.tighten(levels, "kernel command line")
        pol.check_files = pol.check_files or check_files
        pol.sources.append("kernel command line")
    pol.key_paths = _key_paths(paths, paths.vendor_dir + "/keys")
    if pol.admin_keys:
        pol.key_paths += _key_paths(paths, paths.conf_dir + "/keys")
    for problem in pol.problems:
        log.warning(f"policy: {problem}")
    return pol


def _key_paths(paths, folder: str) -> list[str]:
    try:
        names = sorted(os.listdir(paths.host(folder)))
    except OSError:
        return []
    return [f"{folder}/{n}" for n in names if n.endswith(KEY_SUFFIXES)]


def store_class(paths, store: str) -> str:
    """The class of a store folder (logical path); an unknown folder counts as runtime."""
    if store == paths.vendor_store:
        return "vendor"
    if store == paths.oem_store or store.startswith(paths.oem_store + "/"):
        return "oem"
    if store in paths.config_store_paths:
        return "config"
    user = paths.user_store()
    if store == user or posixpath.dirname(store) == user:
        return "user"
    return "runtime"


# -- recorded digests (integrity of image files) -------------------------------------

def recorded_digest_path(archive_path: str, algo: str = "xxh3") -> str:
    suffix = ".xxh128" if algo == "xxh3" else ".sha512"
    return archive_path + suffix


def write_recorded_digest(archive_path: str, hex_digest: str, algo: str = "xxh3") -> str:
    """Write ``ARCHIVE.xxh128`` (``xxh128sum -c`` format) or ``ARCHIVE.sha512``
    (``sha512sum -c``) atomically; returns its path."""
    path = recorded_digest_path(archive_path, algo)
    line = f"{hex_digest}  {os.path.basename(archive_path)}\n"
    schemas.write_atomic(path, line.encode(), 0o644)
    return path


def read_recorded_digest(host_path: str, logical: str, algo: str) -> str | None:
    """The hex digest in a recorded digest file, None if there is none; PolicyError if bad."""
    try:
        with open(host_path, "rb") as f:
            text = f.read(4096).decode("ascii", "replace")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise PolicyError(f"{logical}: cannot read: {e.strerror or e}") from None
    value = text.split()[0].lower() if text.split() else ""
    if not schemas.is_hex(value, _HEX_DIGITS[algo], schemas.HEX_LOWER):
        raise PolicyError(f"{logical}: not a {'xxh128sum' if algo == 'xxh3' else 'sha512sum'} "
                          "line (the hex digest, then the file name)")
    return value


# -- decisions ------------------------------------------------------------------------

class Decision:
    """What one archive needs, and once checked, why it passed."""

    __slots__ = ("store", "store_class", "level", "pin_sha256", "pin_sha512", "pin_xxh3",
                 "pin_source", "pin_file", "signers", "check_files", "reason")

    def __init__(self, store: str, store_class: str, level: str, *, check_files=False):
        self.store, self.store_class, self.level = store, store_class, level
        self.pin_sha256: str | None = None  # the archive's bytes must have this sha256
        self.pin_sha512: str | None = None  # or this sha512
        self.pin_xxh3: str | None = None    # or this XXH3-128 (recorded, integrity only)
        self.pin_source = ""   # "signed" or "recorded"
        self.pin_file = ""     # the signed contents or .sha512 file
        self.signers: tuple = ()  # fingerprints of the keys that signed the store's contents
        self.check_files = check_files  # a mounted image is also checked file by file
        self.reason = ""       # why it passed (set once checked)

    def to_json(self) -> dict:
        return {"store": self.store, "class": self.store_class, "level": self.level,
                "pin": self.pin_source or None, "pin_file": self.pin_file or None,
                "signers": list(self.signers), "check_files": self.check_files,
                "reason": self.reason}

    @property
    def pinned(self) -> bool:
        return bool(self.pin_sha256 or self.pin_sha512 or self.pin_xxh3)

    @property
    def pin(self) -> tuple[str, str]:
        """(algorithm, hex) of the pinned digest, the fastest one first; ("", "") if none."""
        for algo in ("sha256", "sha512", "xxh3"):
            value = getattr(self, f"pin_{algo}")
            if value:
                return algo, value
        return "", ""

    def mismatch(self, path: str, actual: str) -> str:
        """The reason for an archive whose digest is not the pinned one."""
        algo, want = self.pin
        name = "xxh3-128" if algo == "xxh3" else algo
        if self.pin_source == "signed":
            return (f"{path}: {name} {actual} differs from the signed {want} in "
                    f"{self.pin_file} (signed by {', '.join(self.signers)}); store "
                    f"{self.store} ({self.store_class}) needs signed images")
        return f"{path}: {name} {actual} differs from {want} recorded in {self.pin_file}"

    def passed(self, how: str) -> None:
        algo = self.pin[0]
        name = "xxh3-128" if algo == "xxh3" else algo
        if self.pin_source == "signed":
            self.reason = (f"signed: {name} matches {self.pin_file}, signed by "
                           f"{', '.join(self.signers)}; {how}")
        elif self.pin_source == "recorded":
            self.reason = f"{self.level}: image-file {name} matches {self.pin_file}; {how}"
        else:
            self.reason = f"{self.level}: {how}"


class _SignedStore:
    __slots__ = ("contents", "signers", "error")

    def __init__(self, contents=None, signers: tuple = (), error: str = ""):
        self.contents, self.signers, self.error = contents, signers, error


class Verifier:
    """Decides, per archive, what the policy needs; one gpgv run per signed store."""

    def __init__(self, policy: Policy, paths, log=NULL):
        self.policy, self.paths, self.log = policy, paths, log
        self._stores: dict[str, _SignedStore] = {}
        self._keyrings = None

    def level_of(self, store: str) -> tuple[str, str]:
        cls = store_class(self.paths, store)
        return cls, self.policy.levels[cls]

    def decide(self, name: str, reference: str, fmt: str, path: str, store: str,
               mountable: bool) -> Decision:
        """What the archive at ``path`` (logical, in folder ``store``) needs; PolicyError
        when the store cannot vouch for it (unsigned, unknown key, not listed)."""
        cls, level = self.level_of(store)
        d = Decision(store, cls, level, check_files=self.policy.check_files)
        if level == "signed":
            signed = self._signed(store)
            if signed.error:
                raise PolicyError(signed.error)
            version = _find(signed.contents, name, reference, fmt, posixpath.basename(path))
            if version is None:
                what = f"{name}:{reference} ({fmt})" if reference else "its file name"
                raise PolicyError(f"{path}: {what} is not listed in "
                                  f"{store}/{SIGNED_FILE} (signed by "
                                  f"{', '.join(signed.signers)}); store {store} ({cls}) "
                                  "needs signed images")
            d.pin_sha512, d.pin_source = version.sha512, "signed"
            d.pin_sha256 = version.sha256  # signed too, and faster (SHA-NI) when present
            d.pin_file, d.signers = f"{store}/{SIGNED_FILE}", signed.signers
        elif level == "integrity" and mountable:
            for suffix in RECORDED_SUFFIXES:
                algo, recorded = _RECORDED_ALGO[suffix], path + suffix
                value = read_recorded_digest(self.paths.host(recorded), recorded, algo)
                if value is not None:
                    setattr(d, f"pin_{algo}", value)
                    d.pin_source, d.pin_file = "recorded", recorded
                    break
            else:
                d.check_files = True  # no image digest: every file, as torcx always did
        return d

    def decide_archive(self, archive) -> Decision:
        """:meth:`decide` for a :class:`torcx.store.Archive`."""
        return self.decide(archive.name, archive.reference, archive.format, archive.path,
                           archive.store, archive.mountable)

    def check_file(self, host_path: str, decision: Decision):
        """Digest a whole file against the decision's pin: the Decision (passed) or a
        PolicyError, returned (see :func:`check_files`)."""
        return check_files([(host_path, decision)])[0]

    def verify_file(self, path: str, store: str, fmt: str | None = None) -> Decision:
        """Decide and check any file of a store folder (e.g. a sysext image), reading it
        once if the policy pins its digest; PolicyError if it does not pass.

        ``path`` and ``store`` are logical; a name that is not ``NAME:REF.torcx.EXT``
        is looked up in the signed contents by its file name as location. A file
        with a recorded digest or a signature is digested whole, like a mounted image.
        """
        from .store import parse_archive_filename

        filename = posixpath.basename(path)
        parsed = parse_archive_filename(filename)
        name, reference, fmt = parsed if parsed else (filename, "", fmt or "")
        d = self.decide(name, reference, fmt, path, store, mountable=True)
        if not d.pinned:
            d.passed("no digest to check" if d.level == "none"
                     else "no recorded digest (its own checks are the caller's)")
            return d
        result = check_files([(self.paths.host(path), d)])[0]
        if isinstance(result, PolicyError):
            raise PolicyError(str(result).replace(self.paths.host(path), path))
        return result

    # -- signed stores ------------------------------------------------------------

    def keyrings(self) -> list:
        if self._keyrings is None:
            from . import openpgp

            self._keyrings = []
            for path in self.policy.key_paths:
                try:
                    self._keyrings.append(openpgp.load_keyring(self.paths.host(path)))
                except RemoteError as e:
                    self.log.warning(f"policy: {path}: {e}, ignoring")
        return self._keyrings

    def _signed(self, store: str) -> _SignedStore:
        found = self._stores.get(store)
        if found is None:
            found = self._stores[store] = self._verify_store(store)
        return found

    def _verify_store(self, store: str) -> _SignedStore:
        from . import openpgp

        cls = store_class(self.paths, store)
        where = f"store {store} ({cls}) needs signed images"
        signed_path = f"{store}/{SIGNED_FILE}"
        rings = self.keyrings()
        tried = ", ".join(f for k in rings for f in k.fingerprints) or "none"
        try:
            with open(self.paths.host(signed_path), "rb") as f:
                signed = f.read(16 << 20)
        except FileNotFoundError:
            return _SignedStore(error=f"{where}: {signed_path} is missing (unsigned store); "
                                      f"keys allowed: {tried}")
        except OSError as e:
            return _SignedStore(error=f"{where}: {signed_path}: cannot read: "
                                      f"{e.strerror or e}")
        if not rings:
            return _SignedStore(error=f"{where}: no keys allowed (none in "
                                      f"{self.paths.vendor_dir}/keys"
                                      + (f" or {self.paths.conf_dir}/keys"
                                         if self.policy.admin_keys else "") + ")")
        try:
            text, signers = openpgp.verify_clearsigned_by(signed, rings, what=signed_path)
            contents = schemas.parse_remote_contents(schemas.load_json(text, signed_path),
                                                     signed_path)
        except (RemoteError, SchemaError) as e:
            return _SignedStore(error=f"{where}: {e}")
        return _SignedStore(contents=contents, signers=signers)


def _find(contents, name: str, reference: str, fmt: str, filename: str):
    """The signed version of an archive: same name and version, its file name as location
    if one matches, else the one of its format."""
    import urllib.parse

    if not reference:  # not NAME:REF.torcx.EXT: by its file name as location only
        return next((v for im in contents.images for v in im.versions
                     if posixpath.basename(urllib.parse.unquote(v.location)) == filename), None)
    versions = [v for im in contents.images if im.name == name
                for v in im.versions if v.version == reference]
    for v in versions:
        if posixpath.basename(urllib.parse.unquote(v.location)) == filename:
            return v
    for v in versions:
        if v.format == fmt:
            return v
    return None


def check_files(items) -> list:
    """[(host path, Decision)] -> for each, the Decision (passed) or a PolicyError.

    Every file is read once, several in parallel, by the engine (SHA-512 for a
    signed or recorded sha512, XXH3-128 for a recorded one).
    """
    from . import engine

    digests = engine.digest_files([host for host, _ in items],
                                  algos=[d.pin[0] for _, d in items])
    out: list = []
    for (host, d), r in zip(items, digests):
        algo, want = d.pin
        actual = getattr(r, algo)
        if r.error is not None:
            out.append(PolicyError(f"{host}: cannot read: {r.error.strerror}"))
        elif actual != want:
            out.append(PolicyError(d.mismatch(host, actual)))
        else:
            d.passed(f"image file read once ({r.bytes} bytes), its files not read at boot")
            out.append(d)
    return out
