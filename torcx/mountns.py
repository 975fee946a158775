# SPDX-License-Identifier: Apache-2.0
"""Run a function in a forked child inside a private mount namespace.

Used to read squashfs/erofs images by loop-mounting them read-only: mounts made
in the child vanish with it, so nothing leaks into the host, even on a crash.
Needs root (CAP_SYS_ADMIN).
"""

from __future__ import annotations

import ctypes
import os
import pickle
import tempfile
import traceback

from . import errors

CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

_libc = ctypes.CDLL(None, use_errno=True)


def can_mount() -> bool:
    return os.geteuid() == 0


def _encode_error(e: BaseException):
    # Exceptions cross the pipe as plain fields: the torcx ones take keyword-only
    # arguments and would not unpickle as themselves.
    if isinstance(e, errors.ExtractError):
        return ("extract", type(e).__name__, e.message, e.filename, e.entry, e.errno)
    if isinstance(e, errors.TorcxError) and isinstance(e, OSError):
        return ("oserror", type(e).__name__, e.errno, e.strerror or str(e), e.filename)
    return ("other", type(e).__name__, f"{e}\n{traceback.format_exc()}")


def _decode_error(payload) -> BaseException:
    kind, cls_name = payload[0], payload[1]
    cls = getattr(errors, cls_name, None)
    if kind == "extract" and cls is not None:
        _, _, message, filename, entry, err_no = payload
        return cls(message, filename=filename, entry=entry, err_no=err_no or 0)
    if kind == "oserror" and cls is not None:
        _, _, err_no, message, filename = payload
        return cls(err_no, message, filename) if filename else cls(err_no, message)
    return RuntimeError(f"in the mount namespace child: {cls_name}: {payload[-1]}")


def run_private(fn, *args):
    """Return ``fn(*args)`` run in a child with its own private mount namespace.

    The result must be picklable; torcx errors raised by ``fn`` are raised again
    here as themselves, anything else as RuntimeError carrying the traceback.
    """
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        os.close(rfd)
        status = 0
        try:
            if _libc.unshare(CLONE_NEWNS) != 0:
                err = ctypes.get_errno()
                raise errors.MountError(err, f"unshare(CLONE_NEWNS): {os.strerror(err)}")
            if _libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
                err = ctypes.get_errno()
                raise errors.MountError(err, f"making / private: {os.strerror(err)}")
            payload = ("ok", fn(*args))
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            payload = ("error", _encode_error(e))
            status = 1
        try:
            data = pickle.dumps(payload)
        except Exception as e:  # noqa: BLE001
            data = pickle.dumps(("error", ("other", "PicklingError", str(e))))
        try:
            with os.fdopen(wfd, "wb") as w:
                w.write(data)
        finally:
            os._exit(status)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as r:
        data = r.read()
    os.waitpid(pid, 0)
    if not data:
        raise RuntimeError("the mount namespace child died without a report")
    kind, value = pickle.loads(data)
    if kind == "error":
        raise _decode_error(value)
    return value


def with_mounted_image(image: str, fstype: str, fn, *args):
    """Loop-mount ``image`` read-only in a private mount namespace; ``fn(mnt, *args)``."""
    def inner():
        from . import engine  # the only module that mounts

        mnt = tempfile.mkdtemp(prefix="torcx-image-")
        try:
            engine.loop_mount(image, mnt, fstype)
            try:
                return fn(mnt, *args)
            finally:
                engine.umount(mnt)
        finally:
            os.rmdir(mnt)

    return run_private(inner)
