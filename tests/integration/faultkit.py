# SPDX-License-Identifier: Apache-2.0
"""Fault injection for the apply: ``torcx apply`` run under ``strace --inject``.

strace (Debian ``strace``) fails the Nth call of one system call with an errno,
counted per thread (``when=N``). A first run traces the apply without faults to
learn which calls the main thread makes once RUNDIR exists; the faulty runs then
hit those calls. ``check_promise`` asserts what the apply promises whatever
failed: status never claims what it cannot know, a failed image leaves nothing
propagated or reachable, the other images stay applied.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import torcx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(torcx.__file__)))
UNIT_DIRS = ("run/systemd/system", "run/systemd/network", "run/sysusers.d", "run/tmpfiles.d",
             "run/udev/rules.d")


def have_strace() -> bool:
    return shutil.which("strace") is not None


def _env(extra=None):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": REPO,
           "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "LC_ALL": "C.UTF-8"}
    env.update(extra or {})
    return env


def apply_argv(root, mount=False):
    return [sys.executable, "-B", "-m", "torcx", "--root", str(root), "apply",
            *([] if mount else ["--no-mount"]), "--json"]


def trace_calls(root, syscalls, log_path):
    """{syscall: [(N, argument text)]} of the main thread's calls made after RUNDIR was
    created, N counted per thread from its start as strace's when= counts."""
    traced = sorted(set(syscalls) | {"mkdir"})  # mkdir of RUNDIR marks the start
    subprocess.run(["strace", "-f", "-qq", "-o", str(log_path), "-e",
                    "trace=" + ",".join(traced), *apply_argv(root)],
                   env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    main_pid = None
    counts: dict[str, int] = {}
    calls: dict[str, list] = {s: [] for s in syscalls}
    started = False
    marker = os.path.join(str(root), "run/torcx")
    line_re = re.compile(r"^(\d+)\s+(\w+)\((.*)")
    with open(log_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = line_re.match(line)
            if not m or m.group(2) not in traced:
                continue
            pid, name, args = m.groups()
            main_pid = main_pid or pid
            if pid != main_pid:
                continue
            counts[name] = counts.get(name, 0) + 1
            if name == "mkdir" and f'"{marker}"' in args:
                started = True
            if started and name in calls:
                calls[name].append((counts[name], args[:120]))
    return calls


def run_with_fault(root, syscall, error, when, signal=None):
    """Run the apply with the ``when``-th ``syscall`` of each thread failing with ``error``
    (or, with ``signal``, that signal delivered as the call is made)."""
    what = f"signal={signal}" if signal else f"error={error}"
    # --seccomp-bpf stops only at the traced calls (fast), but strace 6.1 then drops
    # the signal= injections.
    fast = [] if signal else ["--seccomp-bpf"]
    proc = subprocess.run(
        ["strace", "-f", "-qq", *fast, "-o", "/dev/null", "-e", f"trace={syscall}",
         "-e", f"inject={syscall}:{what}:when={when}", *apply_argv(root)],
        env=_env(), capture_output=True, timeout=120)
    return proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(
        errors="replace")


def _entries_on_disk(root):
    """Every bin link and unit-like file or link under ROOT (target paths)."""
    found = set()
    bindir = os.path.join(root, "run/torcx/bin")
    if os.path.isdir(bindir):
        found.update("/run/torcx/bin/" + n for n in os.listdir(bindir))
    for d in UNIT_DIRS:
        top = os.path.join(root, d)
        if not os.path.isdir(top):
            continue
        for name in os.listdir(top):
            path = os.path.join(top, name)
            found.add(f"/{d}/{name}")
            if os.path.isdir(path) and not os.path.islink(path):
                found.update(f"/{d}/{name}/{n}" for n in os.listdir(path))
    return found


def check_promise(root, code, images, status, *, single_thread_fault):
    """Assert the apply's promise after a run that exited ``code``; ``status`` is the
    (exit code, JSON value) of ``torcx status --json``. Returns the record or None."""
    root = str(root)
    status_code, st = status
    record = None
    try:
        with open(os.path.join(root, "run/torcx/apply.json"), encoding="utf-8") as f:
            record = json.load(f)["value"]
    except (OSError, ValueError):
        pass
    # Status never claims a success it cannot know: "applied" (exit 0) only from a full
    # record of an applied, sealed run (checked against the disk below). The apply may
    # still exit 1 after that record, when printing its report fails.
    if status_code == 0:
        assert st["state"] == "applied", st
        assert record is not None and record["status"] == "applied", (code, record)
        assert not record.get("minimal") and record["sealed"], record
    if code != 0 and status_code == 0:
        assert all(im["status"] == "ok" for im in record["images"]), record
    if record is None:
        assert status_code != 0, st
        if os.path.lexists(os.path.join(root, "run/torcx")):
            assert code != 0 and status_code != 0, st
            assert st["state"] in ("unknown", "incomplete"), st
        return None
    assert record["status"] == st["state"] or st["state"] == "unknown" or (
        record["status"] == "failed" and st["state"] == "failed"), (record["status"], st)
    if record["status"] == "aborted":
        assert code != 0
        assert _entries_on_disk(root) == set()
        return record
    by_name = {im["name"]: im for im in record.get("images", [])}
    if record.get("minimal"):
        assert code != 0 and st["state"] == "failed"
        return record
    expected = set()
    for name in images:
        im = by_name[name]
        made = {e["dest"] for e in im["propagated"]}
        unpacked = os.path.join(root, "run/torcx/unpack", name)
        if im["status"] == "skipped":
            assert made == set(), (name, im)
        elif im["status"] == "ok":
            for dest in made:  # everything it says it made is there
                assert os.path.lexists(os.path.join(root, dest.lstrip("/"))), (name, dest)
            expected |= made
        else:  # a failed image: nothing propagated, nothing reachable
            assert made == set(), (name, im)
            if "could not be removed" not in im["error"]:
                assert not os.path.lexists(unpacked), (name, im["error"])
    on_disk = _entries_on_disk(root)
    folders = {d for d in on_disk if os.path.isdir(os.path.join(root, d.lstrip("/")))
               and not os.path.islink(os.path.join(root, d.lstrip("/")))}
    assert on_disk - folders <= expected, (on_disk - folders - expected, record)
    failed = [n for n in images if by_name[n]["status"] == "failed"]
    if failed:
        assert code != 0 and record["status"] == "failed"
        if single_thread_fault:
            assert len(failed) <= 1, [(n, by_name[n]["error"]) for n in failed]
    if code == 0:
        assert record["sealed"] and not failed
    if record["status"] != "applied":
        assert code != 0 and status_code != 0, (code, st)
    if record["status"] == "failed" and not record["sealed"]:
        assert "cannot seal" in record["error"], record["error"]
    if record["sealed"]:
        assert os.path.isfile(os.path.join(root, "run/metadata/torcx"))
    return record
