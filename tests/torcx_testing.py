# SPDX-License-Identifier: Apache-2.0
"""Shared test helpers: the root guard and running code in a private mount namespace.

Imported by name (`from torcx_testing import ...`): tests/ is on sys.path, and a
unique module name avoids the ambiguity of importing "conftest" beside benchmarks/.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from torcx.mountns import run_private


def is_root() -> bool:
    return os.geteuid() == 0


needs_root = pytest.mark.skipif(not is_root(), reason="needs root (mounts)")


def guard_root(root) -> str:
    """Refuse to let a test operate on the real root."""
    path = os.path.realpath(os.fspath(root))
    if path == "/":
        raise RuntimeError("refusing to run a test against the real root /")
    return path


def in_mount_namespace(fn, *args):
    """Run fn(*args) in a forked child inside a new private mount namespace.

    Mounts made there vanish with the child, so nothing leaks into the host. The
    product's torcx.mountns.run_private does the work: fn's (picklable) result is
    returned; a torcx error comes back as itself, any other failure (a failed
    assert included) as RuntimeError carrying the child's traceback.
    """
    return run_private(fn, *args)


class GpgKeys:
    """Keys generated in a private GNUPGHOME: 'trusted' and 'stranger'."""

    def __init__(self, home: str):
        self.home = home
        self.fingerprints: dict[str, str] = {}
        for who in ("trusted", "stranger"):
            uid = f"{who} <{who}@torcx.test>"
            self._gpg("--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never")
            out = self._gpg("--with-colons", "--list-keys", uid).decode()
            fpr = next(line.split(":")[9] for line in out.splitlines()
                       if line.startswith("fpr:"))
            self.fingerprints[who] = fpr

    def _gpg(self, *args: str, data: bytes | None = None) -> bytes:
        proc = subprocess.run(["gpg", "--batch", "--homedir", self.home, *args],
                              input=data, capture_output=True, check=True)
        return proc.stdout

    def armored(self, who: str) -> bytes:
        return self._gpg("--armor", "--export", self.fingerprints[who])

    def clearsign(self, data: bytes, *who: str) -> bytes:
        """Clear-sign ``data`` with each of the named keys ('trusted' by default)."""
        users = [arg for w in (who or ("trusted",)) for arg in ("--local-user",
                                                                 self.fingerprints[w])]
        return self._gpg("--clearsign", *users, data=data)


def make_gpg_keys(tmp_path_factory):
    """A session's GpgKeys (skips without gpg/gpgv); stops gpg-agent afterwards."""
    if shutil.which("gpg") is None or shutil.which("gpgv") is None:
        pytest.skip("needs gpg and gpgv (Debian gnupg, gpgv)")
    home = tmp_path_factory.mktemp("gnupg")
    os.chmod(home, 0o700)
    yield GpgKeys(str(home))
    # gpg-agent was started for key generation; stop it so no process outlives the tests.
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)


def modules_loaded(code: str, *wrapper: str) -> set:
    """The modules a fresh ``python3 -I -S`` has loaded after running ``code``, with the
    path the boot launcher gives it (torcx, cffi's backend, xxhash); ``wrapper``: a
    command to run it under (e.g. ``unshare -m``). TORCX_* variables are not passed."""
    import sys

    import _cffi_backend
    import xxhash

    import torcx

    path = [os.path.dirname(os.path.dirname(os.path.abspath(torcx.__file__)))] + [
        os.path.dirname(m.__file__) for m in (_cffi_backend, xxhash)]
    script = (f"import sys; sys.path += {path!r}\n{code}\n"
              "print(' '.join(sorted(sys.modules)), file=sys.stderr)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCX_")}
    r = subprocess.run([*wrapper, sys.executable, "-I", "-S", "-c", script],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    return set(r.stderr.strip().splitlines()[-1].split())
