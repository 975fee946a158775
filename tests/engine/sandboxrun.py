# SPDX-License-Identifier: Apache-2.0
"""Run a sanitizer build of the engine where nothing it does can reach the machine.

As root: in a private mount namespace, on a tmpfs of its own that it is chrooted into,
with /usr, /etc and /proc bound read-only (libraries, the symbolizer, LeakSanitizer).
A link an input makes to "/" or "/etc" then leads into the tmpfs or to a read-only
mount, and the tmpfs vanishes with the namespace. Files the program leaves in
/out are copied to ``out`` first. Without root (which cannot chmod "/" anyway) the
program runs as it is, with TMPDIR in a temporary folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

_SANDBOX = r"""
set -u
mount --make-rprivate /
mount -t tmpfs -o size=2g,nr_inodes=400k,mode=0755 torcx-sanitizers "$W"
mkdir "$W/usr" "$W/etc" "$W/proc" "$W/in" "$W/tmp" "$W/out"
for d in usr etc proc; do
    mount --bind "/$d" "$W/$d" && mount -o remount,bind,ro "$W/$d" || exit 90
done
for l in bin sbin lib lib32 lib64 libx32; do
    if [ -L "/$l" ]; then ln -s "$(readlink "/$l")" "$W/$l"; fi
done
cp "$PROGRAM" "$W/program"
while IFS= read -r f; do cp "$f" "$W/in/"; done < "$INPUTS"
TMPDIR=/tmp chroot "$W" /program "$@"
rc=$?
cp -r "$W"/out/. "$OUT"/ 2>/dev/null
exit $rc
"""


def available() -> bool:
    return os.geteuid() == 0 and all(shutil.which(t) for t in ("unshare", "chroot", "mount"))


def run(program: Path, args: list[str], inputs: list[Path], work: Path, *,
        env: dict, timeout: int) -> tuple[subprocess.CompletedProcess, Path]:
    """Run ``program args``; ``inputs`` are copied to /in (args name them /in/NAME).

    Returns the completed process and the folder holding what it left in /out.
    """
    out = work / "out"
    out.mkdir(parents=True, exist_ok=True)
    if not available():
        folder = work / "in"
        folder.mkdir(exist_ok=True)
        for p in inputs:
            shutil.copy(p, folder / p.name)
        tmp = work / "tmp"
        tmp.mkdir(exist_ok=True)
        argv = [a.replace("/in/", f"{folder}/").replace("/out/", f"{out}/") for a in args]
        r = subprocess.run([str(program), *argv], env=dict(env, TMPDIR=str(tmp)),
                           capture_output=True, text=True, timeout=timeout)
        return r, out
    mnt = work / "sandbox"
    mnt.mkdir(exist_ok=True)
    listing = work / "inputs.txt"
    listing.write_text("".join(f"{p}\n" for p in inputs))
    full = dict(env, W=str(mnt), OUT=str(out), PROGRAM=str(program), INPUTS=str(listing))
    r = subprocess.run(["unshare", "--mount", "--propagation", "private",
                        "sh", "-c", _SANDBOX, "sandbox", *args],
                       env=full, capture_output=True, text=True, timeout=timeout)
    return r, out
