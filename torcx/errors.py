# SPDX-License-Identifier: Apache-2.0
"""The one exception tree of torcx. TorcxError is never raised directly."""

from __future__ import annotations

import errno as _errno


class TorcxError(Exception):
    """Base of every torcx failure."""


class ConfigError(TorcxError, ValueError):
    """A configuration value, path or command-line argument is invalid."""


class UsageError(ConfigError):
    """The command line is wrong: exit 2."""


class SchemaError(TorcxError, ValueError):
    """A JSON document is invalid; the message names the file and the JSON path."""

    def __init__(self, filename: str, jsonpath: str, problem: str):
        self.filename = filename
        self.jsonpath = jsonpath
        self.problem = problem
        super().__init__(f"{filename}: {jsonpath}: {problem}")


class NotFound(TorcxError, LookupError):
    """A profile, image or remote could not be found."""


class ExtractError(TorcxError, OSError):
    """An archive could not be extracted or verified.

    Carries the archive path (``filename``), the path of the faulty entry inside
    the archive (``entry``, may be empty), its index (``entry_index``, -1 if
    none), the errno (0 if the fault is not a system error) and a message.
    """

    def __init__(self, message: str, *, filename: str = "", entry: str = "",
                 entry_index: int = -1, err_no: int = 0, code: int = 0):
        OSError.__init__(self, err_no or _errno.EIO, message)
        self.errno = err_no
        self.filename = filename
        self.entry = entry
        self.entry_index = entry_index
        self.code = code
        self.message = message

    def __str__(self) -> str:
        where = self.filename
        if self.entry:
            where += f": {self.entry}"
        return f"{where}: {self.message}" if where else self.message


class UnsafeArchive(ExtractError):
    """An entry would be created outside its destination, or is refused by policy."""


class CorruptArchive(ExtractError):
    """The archive stream is corrupt, truncated or not a supported format."""


class LimitExceeded(ExtractError):
    """A hard limit (entries, bytes, path length) was exceeded."""


class DigestMismatch(ExtractError):
    """Content does not match its recorded digest (file list or pinned archive digest)."""


class NoDigestList(DigestMismatch):
    """An image carries no .torcx/digests, so its files cannot be checked."""


class MountError(TorcxError, OSError):
    """A mount, loop device or remount failed."""


class RemoteError(TorcxError):
    """A remote could not be used: unreachable, bad signature, bad content."""


class PolicyError(TorcxError):
    """An image does not meet the trust policy of its store (unsigned, unknown key,
    a digest other than the signed or recorded one)."""


class InvalidImage(TorcxError, ValueError):
    """An image root folder cannot be packed; ``problems`` lists every fault with its path."""

    def __init__(self, rootfs: str, problems):
        self.rootfs = rootfs
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{rootfs}: {len(self.problems)} problem(s), nothing written:\n{lines}")


class PackError(TorcxError, OSError):
    """An image archive could not be written (output exists, a tool failed, input changed)."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()
