# SPDX-License-Identifier: Apache-2.0
"""cffi build script: compiles csrc/ into torcx._native (out-of-line API mode)."""

import os
import re
import sys

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Debian package that provides each header the engine compiles against.
REQUIRED_HEADERS = {
    "archive.h": "libarchive-dev",
    "xxhash.h": "libxxhash-dev",
    "isa-l/igzip_lib.h": "libisal-dev",
    "openssl/evp.h": "libssl-dev",  # types only: digest.c loads libcrypto on first use
}


def _read(*parts):
    with open(os.path.join(*parts), encoding="utf-8") as f:
        return f.read()


def _version():
    return re.search(r'__version__ = "([^"]+)"', _read(ROOT, "torcx", "__init__.py")).group(1)


def _check_headers():
    dirs = ["/usr/include", "/usr/local/include"]
    dirs += [d for d in os.environ.get("CPATH", "").split(":") if d]
    for header, package in REQUIRED_HEADERS.items():
        if not any(os.path.exists(os.path.join(d, header)) for d in dirs):
            sys.exit(f"torcx build: {header} not found; install the Debian package {package}")


def _sources():
    """Every translation unit in csrc/ (not fuzz/, which has its own main)."""
    return [os.path.join("csrc", f) for f in sorted(os.listdir(HERE)) if f.endswith(".c")]


def _cdef():
    header = _read(HERE, "torcx_engine.h")
    return header.split("/* cffi:begin */")[1].split("/* cffi:end */")[0]


_check_headers()
ffibuilder = FFI()
ffibuilder.cdef(_cdef())
ffibuilder.set_source(
    "torcx._native",
    '#include "torcx_engine.h"',
    sources=_sources(),
    include_dirs=[HERE],
    libraries=["archive", "xxhash", "isal", "pthread"],
    define_macros=[("TORCX_VERSION", f'"{_version()}"'), ("_GNU_SOURCE", "1")],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
    py_limited_api=True,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
