# SPDX-License-Identifier: Apache-2.0
"""``torcx status [--json]``: what this boot applied (torcx.apply.status collects it)."""

from __future__ import annotations

import json

from .. import paths
from ..apply.status import STATUS_KIND, collect, human
from ..errors import ConfigError, SchemaError

__all__ = ["main"]


def _paths(ctx):
    """The paths, leniently: a broken config file must not hide what the boot applied.

    The apply itself used the defaults in that case (and recorded the fault),
    so the defaults are where its results are.
    """
    try:
        return ctx.paths
    except (ConfigError, SchemaError) as e:
        ctx.log.warning(f"{e}; reading the status from the default locations")
        return paths.load(ctx.root, environ=ctx.environ, strict=False)


def main(ctx, args) -> int:
    """Print the status; exit 1 when this boot's apply failed or did not run."""
    status = collect(_paths(ctx))
    if getattr(args, "json", False):
        ctx.out(json.dumps({"kind": STATUS_KIND, "value": status}, indent=2, sort_keys=True))
    else:
        ctx.out(human(status))
    return 0 if status["state"] == "applied" else 1
