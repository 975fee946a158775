# SPDX-License-Identifier: Apache-2.0
"""No single failing system call, and no SIGTERM, breaks the apply's promise (issues 16, 10).

``torcx apply --no-mount`` of a three-image profile runs under strace with one
call failing (ENOSPC, EIO or EACCES at the Nth openat/write/rename/mkdir/
symlink/fchmod/unlink of a thread); after each run, status must tell the truth
and a failed image must leave nothing propagated (faultkit.check_promise).
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
from apply_images import FakeRoot
from applykit import guard_root, torcx
from faultkit import check_promise, have_strace, run_with_fault, trace_calls

pytestmark = pytest.mark.skipif(not have_strace(), reason="needs strace (Debian strace)")

IMAGES = ["a", "b", "c"]
# Called by this process's main thread only (the engine's threads use the *at forms):
# one fault fails at most one image there.
MAIN_ONLY = ("mkdir", "symlink", "rename", "unlink")
ANY_THREAD = ("openat", "write", "fchmod")
ERRORS = ("ENOSPC", "EIO", "EACCES")
# TORCX_SLOW=1: every call the main thread makes once RUNDIR exists (a few hundred runs).
EVERY_CALL = os.environ.get("TORCX_SLOW") == "1"
POINTS_PER_SYSCALL = {"mkdir": 6, "symlink": 6, "rename": 4, "unlink": 3, "openat": 10,
                      "write": 6, "fchmod": 4}


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A root with three images (bins, units, a .wants link, tmpfiles) and their profile."""
    base = tmp_path_factory.mktemp("faults")
    guard_root(base)
    root = FakeRoot(base / "template")
    root.add_hello(name="a")
    root.add_image("b", "1", "tar.zst", files={
        "bin/b1": ("#!/bin/sh\n", 0o755), "bin/b2": ("#!/bin/sh\n", 0o755),
        "lib/tmpfiles.d/b.conf": "d /run/b 0755 - - -\n",
        "lib/systemd/system/b.service": "[Service]\nExecStart=/bin/true\n",
    }, manifest={"bin": ["/bin"], "tmpfiles": ["/lib/tmpfiles.d/b.conf"],
                 "units": ["/lib/systemd/system/b.service"]})
    root.add_hello(name="c")
    root.profile("vendor", [(n, "1") for n in IMAGES])
    return base, root.path


def _fresh(base, label):
    dest = base / label
    shutil.copytree(base / "template", dest, symlinks=True)
    return dest


def _points(base, template_path, syscalls):
    """(syscall, N) pairs spread over the main thread's calls made once RUNDIR exists."""
    root = _fresh(base, "trace-" + syscalls[0])
    calls = trace_calls(root, syscalls, base / f"trace-{syscalls[0]}.log")
    points = []
    for s in syscalls:
        found = [n for n, _args in calls[s]]
        want = POINTS_PER_SYSCALL[s]
        if len(found) > want and not EVERY_CALL:  # evenly spread, first and last included
            step = (len(found) - 1) / (want - 1)
            found = sorted({found[round(i * step)] for i in range(want)})
        points.extend((s, n) for n in found)
    assert points, calls
    return points


def _run_points(base, points, single_thread_fault):
    def one(i_point):
        i, (syscall, n) = i_point
        error = ERRORS[i % len(ERRORS)]
        root = _fresh(base, f"run-{syscall}-{n}-{error}")
        code, out, err = run_with_fault(root, syscall, error, n)
        assert "Traceback" not in err, (syscall, n, error, err[-2000:])
        status = torcx(str(root), "status", "--json")
        try:
            check_promise(root, code, IMAGES, (status.code, status.json["value"]),
                          single_thread_fault=single_thread_fault)
        except AssertionError as e:
            raise AssertionError(f"{syscall} #{n} {error}: {e}") from None
        shutil.rmtree(root)
        return code

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(one, enumerate(points)))


def test_one_failing_call_of_the_main_thread(template):
    """mkdir, symlink, rename, unlink failing once: at most one image fails, the others
    are applied, sealed and recorded, or the run says why it could not."""
    base, template_path = template
    codes = _run_points(base, _points(base, template_path, MAIN_ONLY), True)
    assert 1 in codes  # the faults did hit something


def test_one_failing_call_per_thread(template):
    """openat, write, fchmod failing once in each thread (the engine's too): status
    stays truthful and nothing of a failed image stays propagated."""
    base, template_path = template
    codes = _run_points(base, _points(base, template_path, ANY_THREAD), False)
    assert 1 in codes


def _sigterm_at(base, syscall, n, label):
    root = _fresh(base, label)
    code, _out, err = run_with_fault(root, syscall, None, n, signal="TERM")
    assert "Traceback" not in err, err[-2000:]
    status = torcx(str(root), "status", "--json")
    record = check_promise(root, code, IMAGES, (status.code, status.json["value"]),
                           single_thread_fault=False)
    return code, record, status.json["value"]


def test_sigterm_during_propagation_finishes_the_image_then_seals(template):
    """SIGTERM while image a is being propagated: a is finished, b and c are not started
    (and their trees removed), then the seal and the record say it was interrupted."""
    base, _ = template
    calls = trace_calls(_fresh(base, "trace-sigterm"), ["symlink"], base / "trace-sigterm.log")
    second = calls["symlink"][1][0]  # a's .wants link: a is half propagated
    code, record, status = _sigterm_at(base, "symlink", second, "sigterm-propagate")
    assert code == 1
    assert (record["interrupted"], record["sealed"]) == ("SIGTERM", True)
    images = {im["name"]: im for im in record["images"]}
    assert images["a"]["status"] == "ok"
    assert len(images["a"]["propagated"]) == 4
    for name in ("b", "c"):
        assert images[name]["status"] == "failed"
        assert "interrupted (SIGTERM)" in images[name]["error"]
    assert status["state"] == "failed" and "interrupted by SIGTERM" in status["error"]


def test_sigterm_at_the_start_seals_an_empty_apply(template):
    """SIGTERM as RUNDIR is created: no image is applied, nothing is left unpacked, and the
    run is still sealed and recorded as interrupted."""
    base, _ = template
    calls = trace_calls(_fresh(base, "trace-sigterm0"), ["mkdir"], base / "trace-sigterm0.log")
    first = calls["mkdir"][0][0]  # the mkdir of RUNDIR itself
    code, record, status = _sigterm_at(base, "mkdir", first, "sigterm-start")
    assert code == 1
    assert (record["interrupted"], record["sealed"]) == ("SIGTERM", True)
    assert all(im["status"] == "failed" for im in record["images"])
    root = base / "sigterm-start"
    assert os.listdir(root / "run/torcx/unpack") == []
    assert os.listdir(root / "run/torcx/bin") == []


def _record_renames(base, label):
    calls = trace_calls(_fresh(base, label), ["rename"], base / f"{label}.log")
    return [n for n, args in calls["rename"] if "apply.json" in args]


def test_record_that_cannot_be_written_in_full_is_replaced_by_a_minimal_one(template):
    """The full RUNDIR/apply.json cannot be written (ENOSPC at its rename): a minimal
    record is, the run exits 1, and status says failed, not applied."""
    base, _ = template
    (n,) = _record_renames(base, "trace-record")
    root = _fresh(base, "record-once")
    code, _out, err = run_with_fault(root, "rename", "ENOSPC", n)
    assert code == 1, err
    status = torcx(str(root), "status", "--json")
    record = check_promise(root, code, IMAGES, (status.code, status.json["value"]),
                           single_thread_fault=True)
    assert record["minimal"] is True
    assert status.code == 1 and status.json["value"]["state"] == "failed"
    assert "cannot write /run/torcx/apply.json" in status.json["value"]["error"]


def test_no_record_at_all_makes_status_unknown(template):
    """Neither the full nor the minimal record can be written: status says unknown and
    exits 1 (was: 'applied', exit 0, from the seal alone)."""
    base, _ = template
    (n,) = _record_renames(base, "trace-norecord")
    root = _fresh(base, "record-never")
    code, _out, err = run_with_fault(root, "rename", "ENOSPC", f"{n}+")
    assert code == 1, err
    status = torcx(str(root), "status", "--json")
    check_promise(root, code, IMAGES, (status.code, status.json["value"]),
                  single_thread_fault=True)
    assert (status.code, status.json["value"]["state"]) == (1, "unknown")
    assert status.json["value"]["sealed"] is True
