# SPDX-License-Identifier: Apache-2.0
"""Build glue: cffi compiles csrc/ into torcx._native; metadata is in pyproject.toml."""

from setuptools import setup

setup(cffi_modules=["csrc/_ffi_build.py:ffibuilder"])
