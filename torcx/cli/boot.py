# SPDX-License-Identifier: Apache-2.0
"""``torcx install-boot`` and ``torcx uninstall-boot`` (torcx.boot.install does the work)."""

from __future__ import annotations

from ..boot import install

__all__ = ["install_boot", "uninstall_boot"]


def install_boot(ctx, args) -> int:
    """``torcx install-boot [--root DIR] [--generator-dir D] [--wheel W] [--force]``."""
    installed = install.install_boot(ctx.root, generator_dir=args.generator_dir, wheel=args.wheel,
                             force=args.force, log=ctx.log)
    ctx.out(f"installed {len(installed)} file(s) under {ctx.root}")
    return 0


def uninstall_boot(ctx, args) -> int:
    """``torcx uninstall-boot [--root DIR]``."""
    removed = install.uninstall_boot(ctx.root, log=ctx.log)
    ctx.out(f"removed {len(removed)} file(s) under {ctx.root}")
    return 0
