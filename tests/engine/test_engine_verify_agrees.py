# SPDX-License-Identifier: Apache-2.0
"""verify() (read-only, used by `torcx image verify`) refuses exactly what extract() refuses.

A difference means an image that passes its check and then fails at boot, or
the other way round. Each archive of the corpus goes through both, and both
must agree on success or on the exception class.
"""

from __future__ import annotations

import pytest
from tarkit import chardev, directory, fifo, hardlink, reg, symlink

from torcx import engine, errors

CORPUS = {
    "absolute": lambda s: [reg(f"{s}/pwned", b"x")],
    "dotdot": lambda s: [reg("../sentinel/pwned", b"x")],
    "through-root-link": lambda s: [symlink("root", "/"), reg(f"root{s}/pwned", b"x")],
    "through-up-link": lambda s: [symlink("up", ".."), reg("up/sentinel/pwned", b"x")],
    "through-inside-link": lambda s: [directory("real"), symlink("alias", "real"),
                                      reg("alias/f", b"x")],
    "dir-through-link": lambda s: [symlink("l", "../sentinel"), directory("l/new")],
    "through-file": lambda s: [reg("a", b"1"), reg("a/b", b"2")],
    "hardlink-absolute": lambda s: [hardlink("h", f"{s}/secret")],
    "hardlink-later": lambda s: [hardlink("h", "later"), reg("later", b"x")],
    "hardlink-through-link": lambda s: [symlink("l", "../sentinel"), hardlink("h", "l/secret")],
    "hardlink-to-dir": lambda s: [directory("d"), hardlink("h", "d")],
    "fifo": lambda s: [fifo("p")],
    "device": lambda s: [chardev("c", 1, 3)],
    "root-as-symlink": lambda s: [symlink(".", "/")],
    "list-as-symlink": lambda s: [reg("a", b"1"), symlink(".torcx/digests", "/etc/passwd")],
    "dir-replaced-by-link": lambda s: [directory("d"), symlink("d", "x")],
    "link-replaced-by-dir": lambda s: [symlink("d", "../sentinel"), directory("d"),
                                       reg("d/f", b"x")],
    "full-dir-replaced-by-link": lambda s: [directory("d"), reg("d/f", b"1"), symlink("d", "x")],
    "full-dir-replaced-by-file": lambda s: [directory("d"), reg("d/f", b"1"), reg("d", b"x")],
    "component-over-name-max": lambda s: [reg("y" * 300, b"x")],
    "hardlink-to-file-replaced-by-link": lambda s: [reg("a", b"1"), symlink("a", "x"),
                                                    hardlink("h", "a")],
    "hardlink-to-file-replaced-by-dir": lambda s: [reg("a", b"1"), directory("a"),
                                                   hardlink("h", "a")],
}


def _outcome(fn):
    try:
        fn()
    except errors.ExtractError as e:
        return type(e).__name__
    return "ok"


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_verify_agrees_with_extract(sandbox, case):
    """verify() and extract() give the same outcome for one corpus archive."""
    archive = str(sandbox.archive(CORPUS[case](str(sandbox.sentinel))))
    extracted = _outcome(lambda: engine.extract(archive, str(sandbox.dest)))
    verified = _outcome(lambda: engine.verify(archive))
    assert verified == extracted
