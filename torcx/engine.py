# SPDX-License-Identifier: Apache-2.0
"""Python face of the native engine: the only module that touches ``lib``.

Jobs in, one Result per job out. Failures come back as ExtractError
subclasses, either attached to a Result (extract_many) or raised (extract,
verify). The GIL is released for the whole batch by cffi.
"""

from __future__ import annotations

import errno
import os

from . import __version__, errors
from .records import Record

TYPE_CHECKING = False  # for annotations only: collections.abc is not imported at boot
if TYPE_CHECKING:
    from collections.abc import Sequence

try:
    from ._native import ffi, lib
except ImportError as e:  # pragma: no cover - depends on the build
    raise ImportError(
        f"torcx: the native engine is not built ({e}); run 'pip install .' "
        "with libarchive-dev, libxxhash-dev, libisal-dev and libssl-dev installed"
    ) from e

_built = ffi.string(lib.torcx_version()).decode()
if _built != __version__:  # pragma: no cover - stale build
    raise ImportError(
        f"torcx: native engine version {_built} does not match package version "
        f"{__version__}; rebuild with 'pip install .'"
    )

DEFAULT_MAX_ENTRIES = 1_000_000
DEFAULT_MAX_BYTES = 1 << 36  # 64 GiB of files per image; also bounds hashing of sparse holes
DEFAULT_MAX_PATH = 4096
# max_decoded=0: the engine allows 2 * max_bytes + 64 MiB of decoded tar stream.


class Job(Record):
    """One archive to extract into ``dest`` (a folder that must not exist yet).

    ``dest=None`` reads and verifies without writing anything.
    ``pin_xxh3``/``pin_sha256``/``pin_sha512`` pin the digest of the archive bytes (hex).
    ``ownership=None`` applies ownership and special mode bits when running as root.
    ``max_entries`` bounds the inodes made (entries plus folders made for missing
    parents); ``max_decoded`` the bytes of the decoded tar stream, skipped ones
    included (0: ``2 * max_bytes + 64 MiB``).
    """

    __slots__ = (
        "archive", "dest", "pin_xxh3", "pin_sha256", "sha256", "pin_sha512", "sha512",
        "ownership", "allow_devices", "require_digests", "max_entries", "max_bytes",
        "max_decoded", "max_path",
    )
    _defaults = {
        "pin_xxh3": None, "pin_sha256": None, "sha256": False, "pin_sha512": None,
        "sha512": False, "ownership": None, "allow_devices": False, "require_digests": False,
        "max_entries": DEFAULT_MAX_ENTRIES, "max_bytes": DEFAULT_MAX_BYTES, "max_decoded": 0,
        "max_path": DEFAULT_MAX_PATH,
    }
    _frozen = True


class Result(Record):
    """Outcome of one job; ``error`` is None on success."""

    __slots__ = (
        "archive", "dest", "entries", "files", "dirs", "symlinks", "hardlinks", "others",
        "bytes", "archive_bytes", "decoded_bytes", "archive_xxh3", "archive_sha256",
        "archive_sha512", "compression", "verified", "seconds", "error",
    )
    _defaults = {
        "entries": 0, "files": 0, "dirs": 0, "symlinks": 0, "hardlinks": 0, "others": 0,
        "bytes": 0, "archive_bytes": 0, "decoded_bytes": 0, "archive_xxh3": "",
        "archive_sha256": "", "archive_sha512": "", "compression": "", "verified": False,
        "seconds": 0.0, "error": None,
    }
    _hidden = ("error",)

    @property
    def ok(self) -> bool:
        return self.error is None


_ERROR_CLASSES = {
    lib.TORCX_E_OS: errors.ExtractError,
    lib.TORCX_E_FORMAT: errors.CorruptArchive,
    lib.TORCX_E_UNSAFE: errors.UnsafeArchive,
    lib.TORCX_E_LINK: errors.UnsafeArchive,
    lib.TORCX_E_LIMIT: errors.LimitExceeded,
    lib.TORCX_E_DEVICE: errors.UnsafeArchive,
    lib.TORCX_E_DIGEST: errors.DigestMismatch,
    lib.TORCX_E_UNLISTED: errors.DigestMismatch,
    lib.TORCX_E_MISSING: errors.DigestMismatch,
    lib.TORCX_E_ARCHIVE_DIGEST: errors.DigestMismatch,
    lib.TORCX_E_DIGEST_LIST: errors.DigestMismatch,
    lib.TORCX_E_EXISTS: errors.ExtractError,
}


def _error_from(res, archive: str) -> errors.ExtractError:
    cls = _ERROR_CLASSES.get(res.code)
    message = ffi.string(res.message).decode(errors="replace")
    if cls is None:
        cls = errors.ExtractError
        message = f"{message} (unhandled error code {res.code}; this is a bug)"
    return cls(
        message,
        filename=archive,
        entry=ffi.string(res.entry_path).decode(errors="surrogateescape"),
        entry_index=res.entry_index,
        err_no=res.err_no,
        code=res.code,
    )


def _flags(job: Job, is_root: bool) -> int:
    flags = 0
    if job.ownership or (job.ownership is None and is_root):
        flags |= lib.TORCX_JOB_OWNERSHIP
    if job.allow_devices:
        flags |= lib.TORCX_JOB_ALLOW_DEVICES
    if job.sha256 or job.pin_sha256:
        flags |= lib.TORCX_JOB_SHA256
    if job.sha512 or job.pin_sha512:
        flags |= lib.TORCX_JOB_SHA512
    if job.dest is None:
        flags |= lib.TORCX_JOB_NO_WRITE
    if job.require_digests:
        flags |= lib.TORCX_JOB_REQUIRE_DIGESTS
    return flags


def extract_many(jobs: Sequence[Job], threads: int = 0) -> list[Result]:
    """Run every job in one parallel batch; a failed job never stops the others.

    ``threads=0`` uses one thread per online core. Results are in job order;
    a failed job's Result has ``error`` set and nothing left at its ``dest``.
    """
    n = len(jobs)
    if n == 0:
        return []
    c_jobs = ffi.new("struct torcx_job[]", n)
    c_results = ffi.new("struct torcx_result[]", n)
    keep = []  # owns the C strings until the batch returns
    is_root = os.geteuid() == 0

    def cstr(value):
        if value is None:
            return ffi.NULL
        s = ffi.new("char[]", os.fsencode(value))
        keep.append(s)
        return s

    for c, job in zip(c_jobs, jobs):
        c.archive = cstr(job.archive)
        c.dest = cstr(job.dest)
        c.pin_xxh3 = cstr(job.pin_xxh3.lower() if job.pin_xxh3 else None)
        c.pin_sha256 = cstr(job.pin_sha256.lower() if job.pin_sha256 else None)
        c.pin_sha512 = cstr(job.pin_sha512.lower() if job.pin_sha512 else None)
        c.max_entries = job.max_entries
        c.max_bytes = job.max_bytes
        c.max_decoded = job.max_decoded
        c.max_path = job.max_path
        c.flags = _flags(job, is_root)
    r = lib.torcx_extract_batch(c_jobs, c_results, n, threads)
    if r < 0:
        raise errors.ExtractError(f"cannot run extraction batch: {os.strerror(-r)}", err_no=-r)
    results = []
    for job, res in zip(jobs, c_results):
        results.append(Result(
            archive=job.archive,
            dest=job.dest,
            entries=res.entries,
            files=res.files,
            dirs=res.dirs,
            symlinks=res.symlinks,
            hardlinks=res.hardlinks,
            others=res.others,
            bytes=res.bytes,
            archive_bytes=res.archive_bytes,
            decoded_bytes=res.decoded_bytes,
            archive_xxh3=ffi.string(res.archive_xxh3).decode(),
            archive_sha256=ffi.string(res.archive_sha256).decode(),
            archive_sha512=ffi.string(res.archive_sha512).decode(),
            compression=ffi.string(res.compression).decode(),
            verified=bool(res.verified),
            seconds=res.seconds,
            error=None if res.code == lib.TORCX_OK else _error_from(res, job.archive),
        ))
    return results


def extract(archive: str, dest: str, **options) -> Result:
    """Extract one archive into ``dest``; raise its ExtractError on failure."""
    (result,) = extract_many([Job(archive, dest, **options)], threads=1)
    if result.error is not None:
        raise result.error
    return result


def verify(archive: str, **options) -> Result:
    """Read one archive and check it against its digests without writing anything."""
    (result,) = extract_many([Job(archive, None, **options)], threads=1)
    if result.error is not None:
        raise result.error
    return result


class FileDigest(Record):
    """SHA-512 of one whole file; ``error`` is an OSError when it could not be read."""

    __slots__ = ("path", "sha512", "bytes", "xxh3", "sha256", "error")
    _defaults = {"sha512": "", "bytes": 0, "xxh3": "", "sha256": "", "error": None}
    _frozen = True
    _hidden = ("error",)


_FILE_ERRORS = {
    errno.EINVAL: "not a regular file",
    # digest.c loads libcrypto on the first SHA digest, not with the engine
    errno.ELIBACC: "cannot load libcrypto (OpenSSL) for a SHA digest",
}


def digest_files(paths: Sequence[str], threads: int = 0,
                 algos: Sequence[str] | None = None) -> list[FileDigest]:
    """SHA-512 (or per file ``algos[i]``: "sha512", "sha256", "xxh3" or "both" for
    SHA-512 and XXH3-128) of each whole file,
    several files in parallel, one sequential read each.

    The GIL is released for the whole call; ``threads=0`` uses one thread per core.
    """
    n = len(paths)
    if n == 0:
        return []
    c_files = ffi.new("struct torcx_file_digest[]", n)
    keep = [ffi.new("char[]", os.fsencode(p)) for p in paths]
    bits = {"sha512": lib.TORCX_FILE_SHA512, "xxh3": lib.TORCX_FILE_XXH3,
            "sha256": lib.TORCX_FILE_SHA256,
            "both": lib.TORCX_FILE_SHA512 | lib.TORCX_FILE_XXH3}
    for i, (c, s) in enumerate(zip(c_files, keep)):
        c.path = s
        c.algos = bits[algos[i]] if algos else lib.TORCX_FILE_SHA512
    r = lib.torcx_digest_files(c_files, n, threads)
    if r < 0:
        raise errors.ExtractError(f"cannot digest files: {os.strerror(-r)}", err_no=-r)
    out = []
    for path, c in zip(paths, c_files):
        error = None
        if c.err_no:
            text = _FILE_ERRORS.get(c.err_no) or os.strerror(c.err_no)
            error = OSError(c.err_no, text, path)
        out.append(FileDigest(path, ffi.string(c.sha512).decode(), c.bytes,
                              ffi.string(c.xxh3).decode(), ffi.string(c.sha256).decode(),
                              error))
    return out


def gzip_size(path: str) -> tuple[int, int]:
    """(decoded bytes, members) of a gzip file, from every member's ISIZE; OSError if it
    cannot be read or is not gzip. Costs about one read of the file, no inflating."""
    total = ffi.new("uint64_t *")
    members = ffi.new("uint64_t *")
    r = lib.torcx_gzip_size(os.fsencode(path), total, members)
    if r < 0:
        raise OSError(-r, os.strerror(-r), path)
    return total[0], members[0]


def _check_mount(r: int, what: str, path: str) -> None:
    if r < 0:
        raise errors.MountError(-r, f"{what} {path}: {os.strerror(-r)}", path)


def mount_tmpfs(target: str, size_bytes: int, mode: int = 0o755, nr_inodes: int = 0) -> None:
    """Mount a tmpfs of ``size_bytes`` and ``nr_inodes`` (0: the kernel's default) on
    ``target``: nodev; exec and setuid stay allowed."""
    _check_mount(lib.torcx_mount_tmpfs(os.fsencode(target), size_bytes, mode, nr_inodes),
                 "mounting tmpfs on", target)


def remount_ro(target: str) -> None:
    """Remount the mount at ``target`` read-only, keeping its other flags (nosuid, noexec, ...)."""
    _check_mount(lib.torcx_remount_ro(os.fsencode(target)), "remounting read-only", target)


def loop_mount(image: str, target: str, fstype: str) -> None:
    """Attach ``image`` to a free autoclear read-only loop device and mount it on ``target``."""
    _check_mount(lib.torcx_loop_mount(os.fsencode(image), os.fsencode(target),
                                      fstype.encode()), f"loop-mounting {image} on", target)


def umount(target: str) -> None:
    """Unmount ``target`` (lazily, so a busy mount does not block the apply)."""
    _check_mount(lib.torcx_umount(os.fsencode(target)), "unmounting", target)
