# SPDX-License-Identifier: Apache-2.0
"""Boot a throwaway copy of a cached root folder with systemd-nspawn, as on a real machine.

What makes the boot honest (see the measured notes behind this harness):

- PID 1 is a three-line wrapper that remounts ``/run`` ``noexec`` and then execs
  systemd, as Debian's initramfs leaves it; nspawn's own ``/run`` allows exec
  and would give a false pass.
- ``--register=no --keep-unit`` run nspawn without a host systemd or dbus; the
  boot gets its own cgroup so nspawn's payload/supervisor cgroups neither leak
  into nor collide at the host's cgroup root.
- The probe unit (``WantedBy=multi-user.target``, ``Type=simple``, no ``After=``:
  ordering it after the target would be a cycle) waits for the boot to finish,
  runs the test's checks, collects the journal into a bind-mounted folder and
  powers the guest off. A watchdog halts a guest that does not, with SIGTERM
  (a clean halt; a second one ends it at once), never SIGKILL: a killed nspawn
  leaves the guest's systemd running.

Every boot runs on an overlay over the cached tree, so the cache stays clean.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

WORK_PARENT = os.environ.get("TORCX_E2E_WORKDIR", "/tmp")
KEEP = os.environ.get("TORCX_E2E_KEEP") == "1"

INIT = """#!/bin/sh
# e2e: /run as a real Debian boot leaves it (initramfs-tools mounts it noexec)
mount -o remount,nodev,nosuid,noexec /run
exec /lib/systemd/systemd "$@"
"""

PROBE = """#!/bin/sh
# e2e probe: wait for the boot to settle, collect evidence, power off.
R=/e2e-results
timeout 90 systemctl is-system-running --wait >$R/system-state 2>&1
systemctl --failed --no-legend --no-pager --plain >$R/failed-units 2>&1
systemd-analyze >$R/analyze 2>&1
systemd-analyze blame --no-pager >$R/blame 2>&1
timeout 60 sh /usr/local/lib/e2e/checks.sh >$R/checks.log 2>&1
echo $? >$R/checks.rc
journalctl -b --no-pager -o short-monotonic >$R/journal 2>&1
echo done >$R/done
systemctl poweroff
"""

PROBE_UNIT = """[Unit]
Description=torcx e2e probe (collect evidence, then power off)

[Service]
Type=simple
ExecStart=/usr/local/sbin/e2e-probe
"""

_NOISE = re.compile(r"System call .* is not known|Failed to add rule|cap_sys_resource")


def write(path: str, text: str, mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, mode)


@dataclass
class Boot:
    """What one boot left behind: exit status, watchdog, timings and the evidence files."""

    label: str
    results: str
    rc: int | None = None
    timed_out: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    files: dict = field(default_factory=dict)  # evidence, kept after the guest is gone

    def collect(self) -> None:
        """Read every evidence file into memory (the work dir is removed with the guest)."""
        for top, _dirs, names in os.walk(self.results):
            for name in names:
                path = os.path.join(top, name)
                try:
                    with open(path, encoding="utf-8", errors="replace") as f:
                        self.files[os.path.relpath(path, self.results)] = f.read()
                except OSError:
                    continue

    def read(self, name: str) -> str:
        return self.files.get(name, "")

    @property
    def finished(self) -> bool:
        return self.read("done").strip() == "done"

    @property
    def userspace_ms(self) -> float | None:
        """Guest boot time to reach the default target, from systemd-analyze."""
        m = re.search(r"Startup finished in (.*?) \(userspace\)", self.read("analyze"))
        if not m:
            m = re.search(r"Startup finished in (\S+)", self.read("analyze"))
        return _ms(m.group(1)) if m else None

    def unit_ms(self, unit: str) -> float | None:
        """How long ``unit`` took to start, from systemd-analyze blame."""
        for line in self.read("blame").splitlines():
            parts = line.split()
            if parts and parts[-1] == unit:
                return _ms(" ".join(parts[:-1]))
        return None

    def logged_ms(self, name: str, pattern: str) -> float | None:
        """A duration in ms: the (first matching) group of regex ``pattern`` in file ``name``."""
        m = re.search(pattern, self.read(name), re.MULTILINE)
        return float(next(g for g in m.groups() if g)) if m else None

    def evidence(self) -> str:
        """Everything a reader needs to see why a boot failed."""
        console = [ln for ln in self.read("console.log").splitlines() if not _NOISE.search(ln)]
        parts = [f"==== boot {self.label}: nspawn rc={self.rc} timed_out={self.timed_out} "
                 f"{self.seconds:.2f}s"]
        parts += self.notes
        last = ("watchdog.log", "journal")
        for name in sorted(set(self.files) - set(last) - {"console.log", "blame"}) + list(last):
            parts.append(f"---- {name}\n{self.read(name).rstrip()}")
        parts.append("---- console (tail)\n" + "\n".join(console[-60:]))
        return "\n".join(parts)


def _ms(text: str) -> float:
    """'1.234s' or '512ms' or '1min 2.5s' -> milliseconds."""
    total = 0.0
    for value, unit in re.findall(r"([\d.]+)(min|ms|us|s)", text):
        total += float(value) * {"min": 60000, "s": 1000, "ms": 1, "us": 0.001}[unit]
    return total


LOOP_SPARE = 3  # free loop devices a boot needs (its images), plus room for other work
LOOP_CTL_ADD, LOOP_CTL_REMOVE = 0x4C80, 0x4C81
LOOP_MAJOR = 7


def _loop_devices() -> dict:
    """{index: bound?} of the kernel's loop devices."""
    found = {}
    for name in os.listdir("/sys/block"):
        m = re.fullmatch(r"loop(\d+)", name)
        if m:
            found[int(m.group(1))] = os.path.exists(f"/sys/block/{name}/loop/backing_file")
    return found


def ensure_free_loops(spare: int) -> list[tuple[int, bool, bool]]:
    """Make sure at least ``spare`` unbound loop devices exist, each with its /dev node.

    The guest sees only the nodes bound in when it starts, and LOOP_CTL_GET_FREE hands
    out the lowest unbound device: every device needs its node (on a /dev that is not
    devtmpfs other work may have removed some), and enough must be free that a loop
    device taken meanwhile by other work does not leave the guest without one.
    Returns [(index, device added, node added)] for release_loops.
    """
    import fcntl
    import stat

    added = []
    devices = _loop_devices()
    free = [i for i, bound in devices.items() if not bound]
    with open("/dev/loop-control", "rb") as ctl:
        index = 0
        while len(free) < spare and index < 256:
            if index not in devices:
                try:
                    fcntl.ioctl(ctl.fileno(), LOOP_CTL_ADD, index)
                except OSError:
                    index += 1
                    continue  # taken meanwhile, or the kernel's max_loop
                devices[index] = False
                free.append(index)
                added.append([index, True, False])
            index += 1
    for index in sorted(devices):
        node = f"/dev/loop{index}"
        if not os.path.exists(node):
            os.mknod(node, 0o660 | stat.S_IFBLK, os.makedev(LOOP_MAJOR, index))
            for item in added:
                if item[0] == index:
                    item[2] = True
                    break
            else:
                added.append([index, False, True])
    return [tuple(a) for a in added]


def release_loops(added) -> None:
    """Remove the loop devices and nodes ensure_free_loops added (and only those)."""
    import fcntl

    for index, device, node in added:
        if device:
            try:
                with open("/dev/loop-control", "rb") as ctl:
                    fcntl.ioctl(ctl.fileno(), LOOP_CTL_REMOVE, index)
            except OSError:
                continue  # in use by someone now: leave it and its node
        if node:
            try:
                os.unlink(f"/dev/loop{index}")
            except OSError:
                pass


def _cgroup_hierarchies() -> list[str]:
    """Host cgroup hierarchies nspawn uses: cgroup2 and the v1 name=systemd one."""
    found = []
    for h in ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        try:
            fstype = subprocess.run(["stat", "-fc", "%T", h], capture_output=True,
                                    text=True).stdout.strip()
        except OSError:
            continue
        if fstype == "cgroup2fs" or os.path.exists(os.path.join(h, "release_agent")):
            found.append(h)
    return found


def _guest_init_pid(nspawn_pid: int) -> int | None:
    """The guest's init: nspawn's child that lives in another PID namespace."""
    own = os.readlink("/proc/self/ns/pid")
    try:
        tasks = os.listdir(f"/proc/{nspawn_pid}/task")
    except OSError:
        return None
    for t in tasks:
        try:
            with open(f"/proc/{nspawn_pid}/task/{t}/children") as f:
                children = f.read().split()
        except OSError:
            continue
        for c in children:
            try:
                if os.readlink(f"/proc/{c}/ns/pid") != own:
                    return int(c)
            except OSError:
                continue
    return None


class Guest:
    """A throwaway overlay over ``rootfs``: prepare files under ``root``, then boot() once."""

    def __init__(self, rootfs: str, label: str):
        self.label = label
        self.work = tempfile.mkdtemp(prefix="torcx-e2e.", dir=WORK_PARENT)
        self.machine = "torcx-e2e-" + os.urandom(4).hex()  # [a-z0-9-] only
        self.root = os.path.join(self.work, "root")
        self.results = os.path.join(self.work, "results")
        for d in ("upper", "ovlwork", "root", "results"):
            os.makedirs(os.path.join(self.work, d))
        opts = (f"lowerdir={rootfs},upperdir={self.work}/upper,"
                f"workdir={self.work}/ovlwork")
        r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, self.root],
                           capture_output=True, text=True)
        self.overlay = r.returncode == 0
        if not self.overlay:  # no overlayfs: a copy costs a few seconds more
            subprocess.run(["cp", "-a", "--reflink=auto", rootfs + "/.", self.root], check=True)
        self.cgroups: list[str] = []
        self.loops: list[tuple[int, bool, bool]] = []  # loop devices and nodes we added

    def path(self, guest_path: str) -> str:
        return os.path.join(self.root, guest_path.lstrip("/"))

    def write(self, guest_path: str, text: str, mode: int = 0o644) -> None:
        write(self.path(guest_path), text, mode)

    def enable(self, unit: str, target: str = "multi-user.target") -> None:
        link = self.path(f"/etc/systemd/system/{target}.wants/{unit}")
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(f"../{unit}", link)

    def boot(self, checks: str, *, bind_loop: bool = False, timeout: float = 120) -> Boot:
        """Boot once; ``checks`` is a shell script the probe runs in the booted guest."""
        self.write("/usr/local/sbin/e2e-init", INIT, 0o755)
        self.write("/usr/local/sbin/e2e-probe", PROBE, 0o755)
        self.write("/usr/local/lib/e2e/checks.sh", checks, 0o755)
        self.write("/etc/systemd/system/e2e-probe.service", PROBE_UNIT)
        self.enable("e2e-probe.service")
        cmd = ["systemd-nspawn", "-D", self.root, "-M", self.machine, "--console=passive",
               "--private-network", "--register=no", "--keep-unit",
               f"--bind={self.results}:/e2e-results", "--kill-signal=SIGRTMIN+3"]
        if bind_loop:
            self.loops.extend(ensure_free_loops(LOOP_SPARE))
            loops = [d for d in sorted(os.listdir("/dev"))
                     if re.fullmatch(r"loop(\d+|-control)", d)]
            cmd += [f"--bind=/dev/{d}" for d in loops]
        cmd.append("/usr/local/sbin/e2e-init")  # init comes last: later options go to it
        if os.path.isdir("/run/systemd/system") and shutil.which("systemd-run"):
            cmd = ["systemd-run", "--scope", "--quiet", "-p", "Delegate=yes", "--"] + cmd
        else:
            for h in _cgroup_hierarchies():
                cg = os.path.join(h, self.machine)
                os.makedirs(cg, exist_ok=True)
                self.cgroups.append(cg)
        cgroups = list(self.cgroups)

        def enter_own_cgroup():
            for cg in cgroups:
                with open(os.path.join(cg, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))

        boot = Boot(self.label, self.results)
        start = time.monotonic()
        with open(os.path.join(self.results, "console.log"), "wb") as console:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=console,
                                    stderr=subprocess.STDOUT, preexec_fn=enter_own_cgroup)
        leader = None
        deadline = start + timeout
        try:
            while proc.poll() is None:
                leader = leader or _guest_init_pid(proc.pid)
                if time.monotonic() > deadline:
                    boot.timed_out = True
                    self._halt(proc, leader, boot)
                    break
                time.sleep(0.05)
        except BaseException:  # interrupted: never leave a guest running behind us
            if proc.poll() is None:
                self._halt(proc, leader, boot)
            raise
        boot.rc = proc.wait()
        boot.seconds = time.monotonic() - start
        boot.collect()
        return boot

    def _halt(self, proc: subprocess.Popen, leader: int | None, boot: Boot) -> None:
        """Watchdog: grab what the live guest can tell, then halt it with SIGTERM."""
        if leader:
            r = subprocess.run(
                ["nsenter", "-t", str(leader), "-a", "--", "sh", "-c",
                 "systemctl is-system-running; systemctl list-jobs --no-pager; "
                 "systemctl --failed --no-pager; journalctl -b --no-pager -o short-monotonic"],
                capture_output=True, text=True, timeout=30)
            write(os.path.join(self.results, "watchdog.log"), r.stdout + r.stderr)
        boot.notes.append("watchdog: the guest did not power off in time, halted it")
        for _ in range(2):  # first SIGTERM: clean halt; second: immediate termination
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
                return
            except subprocess.TimeoutExpired:
                continue
        if leader:  # nspawn is stuck: end the guest's PID namespace through its init
            os.kill(leader, signal.SIGKILL)
        proc.wait(timeout=30)

    def close(self) -> None:
        """Undo everything this guest created on the host (by path, never by name)."""
        release_loops(self.loops)
        self.loops = []
        out = subprocess.run(["losetup", "-n", "-l", "-O", "NAME,BACK-FILE"],
                             capture_output=True, text=True).stdout
        for line in out.splitlines():
            parts = line.split(None, 1)
            if len(parts) == 2 and parts[1].startswith(self.work + "/"):
                subprocess.run(["losetup", "-d", parts[0]], capture_output=True)
        if self.overlay:
            if subprocess.run(["umount", self.root], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", self.root], capture_output=True)
        for cg in self.cgroups:
            for top, _dirs, _ in sorted(os.walk(cg), key=lambda w: -len(w[0])):
                try:
                    os.rmdir(top)
                except OSError:
                    pass
        # nspawn cannot remove this itself when the host /run is not a tmpfs
        shutil.rmtree(f"/run/systemd/nspawn/propagate/{self.machine}", ignore_errors=True)
        if not KEEP:
            shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
