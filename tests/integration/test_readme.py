# SPDX-License-Identifier: Apache-2.0
"""The README's examples run as written: every shell block marked for this test, in order,
in one empty folder, with the real `torcx` command (this checkout) on PATH.

They run as root in namespaces of their own, so what they write to the system stays
there: a private tmpfs on /var/lib and /srv, an overlay on /etc (with mirror.example
in /etc/hosts), a network namespace with only loopback, and a PID namespace that ends
the example's web server with it. Outside the blocks, the test only provides what the
text assumes: an archive in /srv/torcx and the publisher's key releases@example.org.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys

import pytest
from torcx_testing import needs_root

from torcx.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MARKER = "<!-- tests/integration/test_readme.py runs this block as written -->"

WRAPPER = r"""
set -eu
ip link set lo up
mount -t tmpfs tmpfs /var/lib
mount -t tmpfs tmpfs /srv
mount -t tmpfs tmpfs "$SCRATCH"
mkdir "$SCRATCH/upper" "$SCRATCH/work" "$SCRATCH/gnupg"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$SCRATCH/upper,workdir=$SCRATCH/work" /etc
echo "127.0.0.1 mirror.example" >> /etc/hosts
mkdir /srv/torcx
cp "$ARCHIVE" /srv/torcx/
chmod 700 "$SCRATCH/gnupg"
export GNUPGHOME="$SCRATCH/gnupg"
gpg --batch --quiet --passphrase '' --quick-gen-key releases@example.org ed25519 sign never
cd "$WORK"
for block in "$@"; do
    echo "== $block"
    sh -eu "$block"
    case $(cat "$block") in
    *"http.server"*"8080 &"*)  # the example serves in the background: wait until it answers
        python3 -c 'import socket, time
for _ in range(300):
    try:
        socket.create_connection(("127.0.0.1", 8080)).close()
        break
    except OSError:
        time.sleep(0.1)' ;;
    esac
done
echo "== stores"
find /var/lib/torcx/store -name '*.torcx.*' | sort
"""


def marked_blocks() -> list[str]:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    return re.findall(re.escape(MARKER) + r"\n```sh\n(.*?)\n```\n", text, re.S)


def test_readme_marks_its_runnable_examples():
    """Building images and both Remotes examples are marked (the run below cannot be empty)."""
    blocks = marked_blocks()
    assert len(blocks) == 3
    assert "torcx image pack rootfs" in blocks[0]
    assert "torcx remote contents /srv/torcx" in blocks[1]
    assert "torcx profile populate --name fleet" in blocks[2]


@needs_root
@pytest.mark.skipif(any(shutil.which(t) is None for t in ("unshare", "ip", "gpg")),
                    reason="needs unshare, ip and gpg")
def test_readme_examples_run_as_written(tmp_path):
    """Every marked block exits 0, in order, in one empty folder: the image is packed,
    inspected and verified; the remote is published, served, and a node populates from it."""
    archive_dir = tmp_path / "archive"
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin/docker").write_text("#!/bin/sh\necho docker\n")
    (tree / "bin/docker").chmod(0o755)
    assert main(["image", "pack", str(tree), "--name", "docker", "--reference", "20.10",
                 "-o", str(archive_dir)], environ={}, stdout=io.StringIO()) == 0
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "torcx").write_text(f'#!/bin/sh\nexec {sys.executable} -m torcx "$@"\n')
    (bindir / "torcx").chmod(0o755)
    scripts = []
    for i, block in enumerate(marked_blocks()):
        scripts.append(tmp_path / f"block{i}.sh")
        scripts[-1].write_text(block + "\n")
    work = tmp_path / "empty"
    scratch = tmp_path / "scratch"
    work.mkdir()
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCX_")
           and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
           and k not in ("SOURCE_DATE_EPOCH", "GNUPGHOME")}
    env.update(PATH=f"{bindir}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
               PYTHONPATH=ROOT, WORK=str(work), SCRATCH=str(scratch),
               ARCHIVE=str(archive_dir / "docker:20.10.torcx.tgz"))
    r = subprocess.run(["unshare", "--mount", "--net", "--pid", "--fork", "--mount-proc",
                        "--propagation", "private", "sh", "-c", WRAPPER, "sh",
                        *map(str, scripts)],
                       env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       check=False, timeout=600)  # a guard: a block that never ends
    log = r.stdout + r.stderr
    assert r.returncode == 0, log
    out = r.stdout
    assert "OK " in out and "and its sha512 digest" in out  # verify, pinned
    stores = out.split("== stores\n", 1)[1].split()
    assert any(p.endswith("/tool:1.0.torcx.tgz") for p in stores), log
    assert any(re.fullmatch(r"/var/lib/torcx/store/[^/]+/docker:20\.10\.torcx\.tgz", p)
               for p in stores), log
