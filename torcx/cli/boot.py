# SPDX-License-Identifier: Apache-2.0
"""``torcx install-boot`` and ``torcx uninstall-boot`` (torcx.boot.install does the work).

One summary line on stdout; the files, one per line, with ``--verbose debug``.
"""

from __future__ import annotations

from ..boot import install

__all__ = ["install_boot", "uninstall_boot"]


def install_boot(ctx, args) -> int:
    """``torcx install-boot [--root DIR] [--generator-dir D] [--wheel W] [--force]``."""
    done = install.install_boot(ctx.root, generator_dir=args.generator_dir, wheel=args.wheel,
                                force=args.force, log=ctx.log)
    if not done.changed:
        ctx.out(f"torcx is already installed under {ctx.root} ({len(done.unchanged)} "
                "file(s) unchanged), nothing to do")
    elif done.unchanged or done.removed:
        ctx.out(f"updated torcx under {ctx.root}: {len(done.written)} file(s) written, "
                f"{len(done.removed)} removed, {len(done.unchanged)} unchanged")
    else:
        ctx.out(f"installed {len(done.written)} file(s) under {ctx.root}")
    from ..boot.prepare import prepare_plan  # the first boot's generator opens no archive

    prepare_plan(ctx.paths, ctx.log)
    return 0


def uninstall_boot(ctx, args) -> int:
    """``torcx uninstall-boot [--root DIR]``."""
    from ..errors import TorcxError

    try:
        base_dir = {"base_dir": ctx.paths.base_dir}  # where install-boot planned the units
    except TorcxError as e:  # a broken config never keeps torcx installed
        ctx.log.warning(f"{e}; the unit plan in the default BASEDIR is removed")
        base_dir = {}
    done = install.uninstall_boot(ctx.root, log=ctx.log, **base_dir)
    kept = f", {len(done.kept)} kept (see the warnings)" if done.kept else ""
    ctx.out(f"removed {len(done.removed)} file(s) under {ctx.root}{kept}")
    return 1 if done.kept else 0
