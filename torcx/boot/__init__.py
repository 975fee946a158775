# SPDX-License-Identifier: Apache-2.0
"""Boot integration: the generator's two modes, torcx-apply.service, install-boot.

Since systemd 253 a generator runs in a sandbox: its own mount namespace (a
slave of PID 1's) with ``/`` read-only. Mounts it makes vanish when it exits,
so the original design (the generator unpacks, mounts and links everything)
leaves addon units pointing at nothing. And ``/run`` is ``noexec`` on real
boots, so the unpack dir must be an exec-able tmpfs that lives in PID 1's
namespace. Hence two modes:

- *apply*: the generator shares PID 1's mount namespace (systemd <= 252) or is
  run by hand: it applies everything itself, as upstream did.
- *plan*: the generator is sandboxed. PID 1 waits for it, so it opens no
  archive: it merges the profiles, finds the archives, and writes the units of
  each image whose archive has a fresh entry in the prepared unit plan
  (torcx.apply.unitplan, checked by device, inode, size, mtime and ctime;
  prepared by set-next, populate, pack and install-boot, refreshed by every
  apply) into its output folder, each with a drop-in that orders it after
  ``torcx-apply.service`` and asserts the gate the apply creates for exactly
  those units. It pulls in ``torcx-apply.service`` (shipped by
  ``install-boot``; a copy goes into the generator's late folder as a
  fallback), which applies in PID 1's mount namespace before
  ``sysinit.target`` and starts the units of the images that were not
  planned (torcx.apply.bootunits). ``torcx-sysusers.service`` then creates
  the users and groups of the addons (systemd-sysusers.service has run by
  then: it cannot be ordered after the apply without a cycle).

In both modes ``torcx-sysusers.service`` is pulled in when addons bring
sysusers.d files: ``systemd-sysusers.service`` has ``ConditionNeedsUpdate=``
and is skipped on every boot after the first since the last /usr update.

Per-image gates rather than ``Requires=torcx-apply.service``: one corrupt
image makes the apply exit non-zero, and Requires= would then fail every addon
unit; with ``Wants=`` plus ``AssertPathExists=`` on the image's own gate only
the units of the images that failed (or whose plan was wrong) fail.

Here: the generator's entry and the choice of mode. Modules: plan_units (the
sandboxed generator's units), prepare (the unit plan, ahead of the boot),
unit_reader (an image's manifest and units, read without unpacking it),
unitfiles (the shipped units in units/, the drop-ins), install
(``torcx install-boot``).
"""

from __future__ import annotations

import os
import sys
import time

from .. import log as _log

__all__ = ["generator_main", "in_pid1_mount_namespace"]


# -- where are we --------------------------------------------------------------------

def in_pid1_mount_namespace(pid: int = 1) -> bool:
    """True when this process shares PID 1's (or ``pid``'s) mount namespace.

    Mounts made there persist after this process exits. When it cannot be
    told (no /proc, no privilege), True: behave as upstream did.
    """
    try:
        return os.readlink("/proc/self/ns/mnt") == os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return True


def _boot_logger(ctx_log: _log.Logger) -> _log.Logger:
    """At boot, generator stderr may go nowhere: also log to /dev/kmsg, else a file."""
    import stat

    streams = [sys.stderr]
    try:
        if not stat.S_ISCHR(os.stat("/dev/kmsg").st_mode):
            raise OSError("not the kernel log")  # never create a file named /dev/kmsg
        streams.append(open("/dev/kmsg", "w", encoding="utf-8"))  # noqa: SIM115
    except OSError:
        try:  # no kernel log (containers): a file the journal of the boot can be checked with
            os.makedirs("/run/log", exist_ok=True)
            streams.append(open("/run/log/torcx-generator.log", "a", encoding="utf-8"))  # noqa: SIM115
        except OSError:
            pass
    return _log.Logger(ctx_log.level, stream=_Tee(streams), prefix="torcx-generator",
                       priority_prefix=True)


class _Tee:
    def __init__(self, streams):
        self.streams = streams

    def write(self, text: str) -> None:
        for s in self.streams:
            try:
                s.write(text)
            except (OSError, ValueError):
                pass

    def flush(self) -> None:
        for s in self.streams:
            try:
                s.flush()
            except (OSError, ValueError):
                pass


def _pull_in_sysusers(paths, late_dir: str, log) -> None:
    """After an apply in PID 1's namespace: have torcx-sysusers.service create the addons'
    users. systemd-sysusers.service has ``ConditionNeedsUpdate=/etc`` and skips every
    boot after the first since the last /usr update; the addon units need their users
    on every boot (and systemd-tmpfiles-setup.service, ordered after, their owners)."""
    try:
        from ..apply.sysusers import pending_path

        if not os.path.exists(pending_path(paths)):
            return
        from .plan_units import write_boot_units
        from .unitfiles import SYSUSERS_UNIT

        write_boot_units(late_dir, (SYSUSERS_UNIT,))
    except OSError as e:
        if not isinstance(e, FileNotFoundError):
            log.warning(f"torcx-sysusers.service not pulled in: {e}")


# -- the generator -------------------------------------------------------------------

def generator_main(ctx, args) -> int:
    """``torcx-generator``: apply everything, or only plan when sandboxed (see module doc)."""
    outputs = list(getattr(args, "output_dirs", []) or [])
    sandboxed = ctx.root == "/" and len(outputs) == 3 and not in_pid1_mount_namespace()
    log = _boot_logger(ctx.log) if ctx.root == "/" else ctx.log
    ctx.log = log
    if not sandboxed:
        if ctx.root != "/":
            why = f"--root {ctx.root}"
        elif len(outputs) != 3:
            why = "run by hand"
        else:
            why = "in PID 1's mount namespace"
        log.info(f"{why}: applying now")
        from ..apply.run import main as apply_main

        status = apply_main(ctx, args)
        if len(outputs) == 3:
            _pull_in_sysusers(ctx.paths, outputs[2], log)
        if len(outputs) == 3 and os.path.isdir(ctx.paths.host("/run/extensions")):
            from .unitfiles import want_sysext_service  # the apply linked sysext images

            want_sysext_service(outputs[0])
        return status
    from .plan_units import plan_generator_units  # only when sandboxed
    from .unitfiles import APPLY_UNIT

    normal, _early, late = outputs
    log.info("sandboxed generator (own mount namespace): planning; "
             f"{APPLY_UNIT} applies in PID 1's namespace")
    start = time.monotonic()
    status = plan_generator_units(ctx.paths, normal, late, log)
    log.info(f"planned in {(time.monotonic() - start) * 1000:.1f} ms")
    return status
