# SPDX-License-Identifier: Apache-2.0
"""Build glue: cffi compiles csrc/ into torcx._native; metadata is in pyproject.toml."""

from setuptools import setup

setup(
    cffi_modules=["csrc/_ffi_build.py:ffibuilder"],
    # The extension uses only the limited API (py_limited_api in _ffi_build.py), so one
    # wheel (tag cp39-abi3) serves every CPython 3.9+: an image's own python3 can run it.
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
