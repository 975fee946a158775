# SPDX-License-Identifier: Apache-2.0
"""``torcx profile populate``, ``profile check --remote-only``,
``torcx remote list|contents|publish``."""

from __future__ import annotations

from .. import profiles, schemas
from ..remote.config import list_remotes, remote_list_doc
from ..remote.contents import write_contents
from ..remote.fetch import FetchOptions
from ..remote.populate import populate as populate_images
from ..remote.populate import remote_problems, wanted_images

__all__ = ["check_remote", "populate", "remote_contents", "remote_list", "remote_publish"]


def _ctx_paths(ctx, os_version: str | None):
    return ctx.load_paths(os_version=os_version) if os_version else ctx.paths


def populate(ctx, args) -> int:
    """``torcx profile populate [--name P|--file F] [-n OSVER]``."""
    paths = _ctx_paths(ctx, args.os_version)
    _, profile = profiles.read_given_or_next(paths, file=args.file, name=args.name,
                                             log=ctx.log)
    images = profile.images
    status = populate_images(paths, images, log=ctx.log,
                             opts=FetchOptions.from_env(ctx.environ))
    if args.os_version is None:  # the archives of this OS version: plan the next boot
        from ..boot.prepare import prepare_plan

        prepare_plan(paths, ctx.log)
    return status


def check_remote(ctx, images, os_version: str | None) -> int:
    """``torcx profile check --remote-only``: every image's remote offers it, signed."""
    paths = _ctx_paths(ctx, os_version)
    wanted = [im for im in wanted_images(images) if im.remote]
    for image in wanted_images(images):
        if not image.remote:
            ctx.log.notice(f"{image}: has no remote, not checked")
    if not wanted:
        ctx.log.info("no image of the profile names a remote")
        return 0
    problems = remote_problems(paths, wanted, opts=FetchOptions.from_env(ctx.environ))
    for line in problems:
        ctx.log.error(f"check: {line}")
    if problems:
        return 1
    ctx.log.info(f"all {len(wanted)} image(s) with a remote are offered, signed and "
                 "verified")
    return 0


def remote_list(ctx, args) -> int:
    """``torcx remote list [--json]``: configured remotes, resolved URLs, key fingerprints."""
    paths = ctx.paths
    remotes, problems = list_remotes(paths)
    doc = remote_list_doc(paths, remotes)
    for line in problems:
        ctx.log.error(line)
    if args.json:
        ctx.out(schemas.dumps(doc))
    else:
        for entry in doc["value"]:
            ctx.out(f"{entry['name']}\t{entry['url']}\t{entry['path']}")
            for mirror in entry.get("mirrors", ()):
                ctx.out(f"\tmirror {mirror}")
            if "contents" in entry:
                ctx.out(f"\tcontents {entry['contents']}")
            for key in entry["keys"]:
                shown = ", ".join(key["fingerprints"]) or key.get("error", "")
                ctx.out(f"\tkey {key['path']}: {shown}")
    return 1 if problems else 0


def remote_contents(ctx, args) -> int:
    """``torcx remote contents DIR``: write DIR/torcx_remote_contents.json, unsigned."""
    path = write_contents(args.dir)
    ctx.out(path)
    ctx.log.info(f"sign it with: gpg --clearsign --output {path}.asc {path}")
    return 0


def remote_publish(ctx, args) -> int:
    """``torcx remote publish DIR oci://HOST/REPO -n OSVER [--json]``."""
    from ..remote import oci  # the registry client: only for this command

    report = oci.publish(args.dir, args.url, args.os_version,
                         FetchOptions.from_env(ctx.environ), note=ctx.log.notice)
    summary = {"pushed": report.pushed, "unchanged": report.unchanged,
               "blobs_uploaded": report.blobs_uploaded, "bytes_uploaded": report.bytes_uploaded,
               "blobs_present": report.blobs_present, "requests": report.requests}
    if args.json:
        ctx.out(schemas.dumps({"kind": "torcx-remote-publish-v0", "value": summary}))
    else:
        for ref in report.pushed:
            ctx.out(f"pushed\t{ref}")
        for ref in report.unchanged:
            ctx.out(f"unchanged\t{ref}")
    ctx.log.info(f"publish: {report.blobs_uploaded} blob(s) uploaded "
                 f"({report.bytes_uploaded} bytes), {report.blobs_present} already present, "
                 f"{report.requests} requests")
    return 0
