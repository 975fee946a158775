# SPDX-License-Identifier: Apache-2.0
"""What the boot tests put into a guest: the torcx wheel, addon images, a profile, checks."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import sys
import tarfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STORE = "/usr/share/torcx/store"
MARKERS = "/run/torcx-e2e"

# Files of the source tree a wheel build needs (a copy keeps the shared tree clean).
_SOURCES = ("torcx", "csrc", "setup.py", "pyproject.toml", "README.md")


def build_wheel(workdir: str) -> str:
    """Build the abi3 torcx wheel from this checkout; returns its path."""
    src = os.path.join(workdir, "src")
    for name in _SOURCES:
        path = os.path.join(REPO, name)
        if os.path.isdir(path):
            shutil.copytree(path, os.path.join(src, name),
                            ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.o",
                                                          "_native.c"))
        else:
            os.makedirs(src, exist_ok=True)
            shutil.copy2(path, src)
    out = os.path.join(workdir, "dist")
    base = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
            "--disable-pip-version-check", "-w", out, src]
    r = subprocess.run(base + ["--no-build-isolation"], capture_output=True, text=True)
    if r.returncode != 0:  # the build tools are not installed here: let pip fetch them
        r = subprocess.run(base, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"building the torcx wheel failed:\n{r.stdout}\n{r.stderr}")
    (wheel,) = [f for f in os.listdir(out) if f.endswith(".whl")]
    if "-abi3-" not in wheel:
        raise RuntimeError(f"{wheel}: not an abi3 wheel; one build must serve 3.11 and 3.13")
    return os.path.join(out, wheel)


def addon_tree(parent: str, name: str) -> str:
    """An upstream-style addon: a binary, its unit, the .wants link, the manifest."""
    root = os.path.join(parent, name)
    units = os.path.join(root, "lib/systemd/system")
    os.makedirs(os.path.join(root, "bin"))
    os.makedirs(os.path.join(units, "multi-user.target.wants"))
    os.makedirs(os.path.join(root, ".torcx"))
    with open(os.path.join(root, "bin", name), "w") as f:
        f.write("#!/bin/sh\n"
                f"# torcx e2e addon {name}: prove it ran, and from where\n"
                f"mkdir -p {MARKERS}\n"
                f'echo "ran $0 -> $(readlink -f "$0")" >{MARKERS}/{name}\n')
    os.chmod(os.path.join(root, "bin", name), 0o755)
    with open(os.path.join(units, f"{name}.service"), "w") as f:
        f.write("[Unit]\n"
                f"Description=torcx e2e addon {name}\n\n"
                "[Service]\n"
                "Type=oneshot\n"
                "RemainAfterExit=yes\n"
                f"ExecStart=/run/torcx/bin/{name}\n\n"
                "[Install]\n"
                "WantedBy=multi-user.target\n")
    os.symlink(f"../{name}.service",
               os.path.join(units, "multi-user.target.wants", f"{name}.service"))
    os.makedirs(os.path.join(root, "lib/sysusers.d"))
    with open(os.path.join(root, "lib/sysusers.d", f"{name}.conf"), "w") as f:
        f.write(f"g {name} -\n")  # the addon's own group (created at boot)
    with open(os.path.join(root, ".torcx", "manifest.json"), "w") as f:
        f.write('{"kind": "image-manifest-v0", "value": {'
                f'"bin": ["/bin/{name}"], '
                f'"units": ["/lib/systemd/system/{name}.service", '
                '"/lib/systemd/system/multi-user.target.wants"], '
                f'"sysusers": ["/lib/sysusers.d/{name}.conf"]}}}}\n')
    return root


def needing_addon_tree(parent: str, name: str) -> str:
    """An addon whose wanted unit Requires= a unit of its own that no target wants
    (``NAME-helper.service``): a start must pull the helper in."""
    root = os.path.join(parent, name)
    units = os.path.join(root, "lib/systemd/system")
    for d in ("bin", "lib/systemd/system/multi-user.target.wants", ".torcx"):
        os.makedirs(os.path.join(root, d))
    with open(os.path.join(root, "bin", name), "w") as f:
        f.write(f'#!/bin/sh\nmkdir -p {MARKERS}\necho "ran $1" >>{MARKERS}/{name}\n')
    os.chmod(os.path.join(root, "bin", name), 0o755)
    with open(os.path.join(units, f"{name}.service"), "w") as f:
        f.write(f"[Unit]\nDescription=torcx e2e addon {name}\nRequires={name}-helper.service\n"
                f"After={name}-helper.service\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\n"
                f"ExecStart=/run/torcx/bin/{name} main\n\n[Install]\nWantedBy=multi-user.target\n")
    with open(os.path.join(units, f"{name}-helper.service"), "w") as f:
        f.write(f"[Unit]\nDescription=torcx e2e addon {name} (helper)\n\n[Service]\n"
                f"Type=oneshot\nRemainAfterExit=yes\nExecStart=/run/torcx/bin/{name} helper\n")
    os.symlink(f"../{name}.service",
               os.path.join(units, "multi-user.target.wants", f"{name}.service"))
    with open(os.path.join(root, ".torcx", "manifest.json"), "w") as f:
        f.write('{"kind": "image-manifest-v0", "value": {'
                f'"bin": ["/bin/{name}"], '
                f'"units": ["/lib/systemd/system/{name}.service", '
                f'"/lib/systemd/system/{name}-helper.service", '
                '"/lib/systemd/system/multi-user.target.wants"]}}\n')
    return root


def user_addon_tree(parent: str, name: str) -> str:
    """An addon whose service runs as its own sysusers.d user, in a tmpfiles.d folder it owns."""
    root = os.path.join(parent, name)
    for d in ("bin", "lib/systemd/system/multi-user.target.wants", "lib/sysusers.d",
              "lib/tmpfiles.d", ".torcx"):
        os.makedirs(os.path.join(root, d))
    state = f"/run/{name}-state"
    with open(os.path.join(root, "bin", name), "w") as f:
        f.write(f'#!/bin/sh\necho "ran as $(id -un)" >{state}/ran\n')
    os.chmod(os.path.join(root, "bin", name), 0o755)
    with open(os.path.join(root, "lib/systemd/system", f"{name}.service"), "w") as f:
        f.write(f"[Unit]\nDescription=torcx e2e addon {name} (own user)\n\n"
                f"[Service]\nType=oneshot\nRemainAfterExit=yes\nUser={name}\n"
                f"ExecStart=/run/torcx/bin/{name}\n\n[Install]\nWantedBy=multi-user.target\n")
    os.symlink(f"../{name}.service",
               os.path.join(root, "lib/systemd/system/multi-user.target.wants", f"{name}.service"))
    with open(os.path.join(root, "lib/sysusers.d", f"{name}.conf"), "w") as f:
        f.write(f'u {name} - "torcx e2e addon user" {state}\n')
    with open(os.path.join(root, "lib/tmpfiles.d", f"{name}.conf"), "w") as f:
        f.write(f"d {state} 0750 {name} {name} -\n")
    with open(os.path.join(root, ".torcx", "manifest.json"), "w") as f:
        f.write('{"kind": "image-manifest-v0", "value": {'
                f'"bin": ["/bin/{name}"], '
                f'"units": ["/lib/systemd/system/{name}.service", '
                '"/lib/systemd/system/multi-user.target.wants"], '
                f'"sysusers": ["/lib/sysusers.d/{name}.conf"], '
                f'"tmpfiles": ["/lib/tmpfiles.d/{name}.conf"]}}}}\n')
    return root


UPDATED = ("# This file was created by systemd-update-done. Its only\n"
           "# purpose is to hold a timestamp of the time this directory\n"
           "# was updated. See man:systemd-update-done.service(8).\n")


def pack(tree: str, name: str, out_dir: str, fmt: str) -> str:
    """`torcx image pack` (the real command); returns the archive path."""
    from torcx.cli import main

    os.makedirs(out_dir, exist_ok=True)
    rc = main(["image", "pack", tree, "--name", name, "--reference", "1", "-o", out_dir,
               "--format", fmt])
    if rc != 0:
        raise RuntimeError(f"torcx image pack {tree} --format {fmt} exited {rc}")
    ext = {"tgz": "tgz", "squashfs": "squashfs"}[fmt]
    return os.path.join(out_dir, f"{name}:1.torcx.{ext}")


def corrupt_payload(archive: str, member: str) -> None:
    """Flip a byte of one file inside a tgz, keeping its size: the digest list no longer matches."""
    with gzip.open(archive, "rb") as f:
        data = f.read()
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data)) as src, \
            tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for info in src.getmembers():
            body = src.extractfile(info).read() if info.isfile() else None
            if info.name.lstrip("./") == member:
                body = body.replace(b"prove", b"PROVE", 1)
            dst.addfile(info, io.BytesIO(body) if body is not None else None)
    with gzip.open(archive, "wb") as f:
        f.write(out.getvalue())


def profile_json(names) -> str:
    images = ", ".join(f'{{"name": "{n}", "reference": "1"}}' for n in names)
    return f'{{"kind": "profile-manifest-v0", "value": {{"images": [{images}]}}}}\n'


def checks_script(units) -> str:
    """What the probe runs in the booted guest; every answer lands in /e2e-results."""
    lines = [
        "R=/e2e-results",
        "torcx status --json >$R/status.json 2>$R/status.err; echo $? >$R/status.rc",
        "cp /run/metadata/torcx $R/seal 2>/dev/null",
        # The unpack dir must be sealed read-only: a write must fail.
        "touch /run/torcx/unpack/e2e-write-test 2>$R/unpack-write.err; "
        "echo $? >$R/unpack-write.rc",
        "grep ' /run/torcx/unpack' /proc/self/mountinfo >$R/unpack-mounts 2>&1",
        "systemctl is-active multi-user.target >$R/multi-user 2>&1",
        "getent group >$R/groups 2>&1",
        f"cp -r {MARKERS} $R/markers 2>/dev/null",
        "cp /run/log/torcx-generator.log /run/torcx/generator.log $R/ 2>/dev/null",
        "ls -lR /run/torcx/bin /run/systemd/generator /run/systemd/generator.late "
        ">$R/run-ls 2>&1",
    ]
    for unit in units:
        lines.append(f"systemctl show {unit} -p LoadState,ActiveState,SubState,Result,"
                     f"FragmentPath,DropInPaths >$R/show-{unit} 2>&1")
        lines.append(f"systemctl status --no-pager -l {unit} >$R/status-{unit} 2>&1")
    # A later daemon-reload (a package install, an admin) re-runs the generator: the
    # addon units must stay loaded and active.
    lines.append("systemctl daemon-reload >$R/reload.log 2>&1")
    for unit in units:
        lines.append(f"systemctl show {unit} -p LoadState,ActiveState,FragmentPath "
                     f">$R/reloaded-{unit} 2>&1")
    return "\n".join(lines) + "\n"


def show(text: str) -> dict:
    """Parse `systemctl show` KEY=value lines."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
