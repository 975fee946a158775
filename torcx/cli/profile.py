# SPDX-License-Identifier: Apache-2.0
"""The ``torcx profile list|new|set-next|use-image|check`` commands.

Handlers follow the contract in :mod:`torcx.cli` (``fn(ctx, args)``). Paths
printed in JSON output are target-system paths (without the ``--root`` prefix),
like the ones written into files. Paths given with ``--file`` are taken as they
are, relative to the current folder, not to ``--root``.
"""

from __future__ import annotations

import os

from .. import profiles, schemas
from ..errors import ConfigError, NotFound, UsageError
from ..store import Store


def print_json(ctx, doc) -> None:
    ctx.out(schemas.dumps(doc))


# -- profile list --------------------------------------------------------------------

def profile_list(ctx, args):
    paths = ctx.paths
    available = profiles.list_profiles(paths, ctx.log)
    current = profiles.read_current(paths, ctx.log)
    try:
        next_name = profiles.read_next_profile(paths)
    except ConfigError as e:
        ctx.log.warning(f"{e}, ignoring")
        next_name = None
    if next_name is not None and next_name not in available:
        ctx.log.warning(f"next profile {next_name!r} does not exist")
        next_name = None
    print_json(ctx, schemas.profile_list_doc(
        lower_profile_names=current.lower_profile_names,
        user_profile_name=current.upper_profile_name,
        current_profile_path=current.profile_path,
        next_profile_name=next_name,
        profiles=sorted(available),
    ))


# -- profile new -----------------------------------------------------------------------

def _exactly_one_target(args, command: str) -> None:
    if not args.name and not args.file:
        raise UsageError(f"{command} needs --name=P or --file=F")


def profile_new(ctx, args):
    _exactly_one_target(args, "profile new")
    paths = ctx.paths
    available = profiles.list_profiles(paths, ctx.log)
    if args.name:
        name = profiles.check_name(args.name)
        if name in available:
            raise ConfigError(f"profile {name!r} already exists ({available[name]})")
        target = paths.host(f"{paths.user_profile_dir}/{name}.json")
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
    else:
        target = args.file
        if not target.endswith(".json"):
            raise UsageError(f"--file {target}: a profile file name must end in .json")

    source = None
    if args.from_next:
        source = profiles.read_next_profile(paths)
        if source is None:
            raise NotFound(f"no next profile is selected ({paths.next_profile})")
    elif args.from_name:
        source = profiles.check_name(args.from_name)
    if source is not None:
        if source not in available:
            raise NotFound(f"profile {source!r} not found")
        profile = schemas.read_profile(paths.host(available[source]))
        doc = schemas.profile_doc(profile.images, profile.kind)
    else:
        doc = schemas.profile_doc([], schemas.PROFILE_V0)

    _create_exclusive(target, schemas.dumps(doc))
    ctx.log.info(f"created profile {target}" + (f" from {source}" if source else ""))


def _create_exclusive(path: str, text: str) -> None:
    """Write a new file atomically; refuse to replace an existing one."""
    if os.path.lexists(path):
        raise ConfigError(f"{path} already exists, not overwriting it")
    folder, base = os.path.split(path)
    tmp = os.path.join(folder, f".{base}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except OSError as e:  # name the file asked for, not our temporary one
        raise OSError(e.errno, e.strerror, path) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # fails if the file appeared meanwhile; never replaces
        except FileExistsError:
            raise ConfigError(f"{path} already exists, not overwriting it") from None
    finally:
        os.unlink(tmp)


# -- profile set-next ------------------------------------------------------------------

def profile_set_next(ctx, args):
    paths = ctx.paths
    name = profiles.parse_next_profile(args.profile, "NAME")
    if name is None:
        raise UsageError("set-next needs a profile name")
    source = profiles.find_profile(paths, name, ctx.log)
    # Refuse to select a profile the next boot could not read.
    schemas.read_profile(paths.host(source))
    profiles.write_next_profile(paths, name)
    ctx.log.info(f"profile {name} selected for the next boot")
    _prepare_boot(ctx, upper=name)


def _prepare_boot(ctx, **kw) -> None:
    """The unit plan of the next boot (torcx.boot.prepare): its generator then opens no archive."""
    from ..boot.prepare import prepare_plan

    prepare_plan(ctx.paths, ctx.log, **kw)


# -- profile use-image ------------------------------------------------------------------

def _split_image(text: str):
    name, colon, ref = text.partition(":")
    if not colon or not name:
        raise UsageError(f"expected NAME:REF, got {text!r}")
    return name, ref


def profile_use_image(ctx, args):
    _exactly_one_target(args, "profile use-image")
    name, ref = _split_image(args.image)
    # Validate through the schema so the profile we write stays readable.
    probe = schemas.parse_profile(
        {"kind": schemas.PROFILE_V0, "value": {"images": [{"name": name, "reference": ref}]}},
        args.image)
    image = probe.images[0]
    paths = ctx.paths
    if args.name:
        pname = profiles.check_name(args.name)
        target = paths.host(f"{paths.user_profile_dir}/{pname}.json")
        if not os.path.isfile(target):
            raise NotFound(f"profile {pname!r} is not a user profile "
                           f"(only {paths.user_profile_dir} can be edited)")
    else:
        target = args.file

    if ref:
        store = Store(paths, log=ctx.log)
        if store.find(name, ref) is None:
            if args.allow != "missing":
                raise NotFound(f"image {name}:{ref} is not in any store "
                               "(pass --allow=missing to add it anyway)")
            ctx.log.warning(f"image {name}:{ref} is not in any store, adding it anyway")

    profile = schemas.read_profile(target)
    updated = []
    placed = False
    for entry in profile.images:
        if entry.name != name:
            updated.append(entry)
        elif not placed:
            # Replace in place, keeping the entry's remote; later duplicates go.
            updated.append(schemas.ImageRef(name, ref, entry.remote))
            placed = True
    if not placed:
        updated.append(image)
    schemas.write_json(target, schemas.profile_doc(updated, profile.kind))
    ctx.log.info(f"{target}: {name}:{ref}" + (" (switched off)" if not ref else ""))


# -- profile check ---------------------------------------------------------------------

def profile_check(ctx, args):
    paths = ctx.load_paths(os_version=args.os_version) if args.os_version else ctx.paths
    source, profile = profiles.read_given_or_next(paths, file=args.file, name=args.name,
                                                  log=ctx.log)

    wanted = [im for im in profile.images if im.reference]
    if not wanted:
        ctx.log.warning(f"{source}: the profile names no images")
        return 0

    if args.remote_only:
        from .remote import check_remote

        return check_remote(ctx, wanted, paths.os_version)

    store = Store(paths, log=ctx.log)
    missing = []
    for im in wanted:
        found = store.find(im.name, im.reference)
        if found is None:
            missing.append(str(im))
            ctx.log.error(f"image {im} not found in any store")
        else:
            ctx.log.debug(f"image {im}: {found.path} ({found.format})")
    if missing:
        raise NotFound(f"{source}: {len(missing)} of {len(wanted)} image(s) missing: "
                       + ", ".join(missing))
    ctx.log.info(f"{source}: all {len(wanted)} image(s) present")
    return 0
