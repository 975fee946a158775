# SPDX-License-Identifier: Apache-2.0
"""torcx: boot-time addon manager for immutable Linux systems.

Importing the package is cheap on purpose (the generator runs at boot): the
native engine is loaded only when one of its names is first used.
"""

__version__ = "0.1.0"  # the compiled engine must match it (torcx.engine)

from .errors import (
    ConfigError,
    CorruptArchive,
    DigestMismatch,
    ExtractError,
    InvalidImage,
    LimitExceeded,
    MountError,
    NotFound,
    PackError,
    RemoteError,
    SchemaError,
    TorcxError,
    UnsafeArchive,
)

__all__ = [
    "ConfigError",
    "CorruptArchive",
    "DigestMismatch",
    "ExtractError",
    "InvalidImage",
    "Job",
    "LimitExceeded",
    "MountError",
    "NotFound",
    "PackError",
    "PolicyError",
    "RemoteError",
    "Result",
    "SchemaError",
    "TorcxError",
    "UnsafeArchive",
    "__version__",
    "extract",
    "extract_many",
    "verify",
]

_ENGINE_NAMES = {"Job", "Result", "extract", "extract_many", "verify"}


def __getattr__(name):
    if name in _ENGINE_NAMES:
        from . import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'torcx' has no attribute {name!r}")
