# SPDX-License-Identifier: Apache-2.0
"""Build glue: cffi compiles csrc/ into torcx._native; metadata is in pyproject.toml."""

from setuptools import setup
from setuptools.command.build_ext import build_ext


class BuildExt(build_ext):
    """Release builds link the engine stripped (-s: half the size, 262 KB to 130 KB; the
    dynamic symbols Python loads stay); ``build_ext --debug`` keeps every symbol and the
    debug information for gdb and perf."""

    def build_extension(self, ext):
        if not self.debug and "-s" not in ext.extra_link_args:
            ext.extra_link_args = [*ext.extra_link_args, "-s"]
        super().build_extension(ext)


setup(
    cffi_modules=["csrc/_ffi_build.py:ffibuilder"],
    cmdclass={"build_ext": BuildExt},
    # The extension uses only the limited API (py_limited_api in _ffi_build.py), so one
    # wheel (tag cp39-abi3) serves every CPython 3.9+: an image's own python3 can run it.
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
