# SPDX-License-Identifier: Apache-2.0
"""The fuzz seed corpus (csrc/fuzz/corpus): good archives and a reproducer of each defect.

Regenerate with ``python3 tests/engine/fuzz_corpus.py csrc/fuzz/corpus`` (the files are
committed; the same names are overwritten). Every file stays small: libFuzzer reads
them all at start and mutates them, and a seed over a few hundred KB slows it down.
"""

from __future__ import annotations

import os
import random
import sys
import tarfile
import zlib
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tarkit  # noqa: E402
from tarkit import directory, hardlink, reg, symlink  # noqa: E402


def _tar_bytes(members, digests=False) -> bytes:
    import io
    buf = io.BytesIO()
    members = list(members)
    if digests is True:
        members.insert(0, tarkit.digests_member(tarkit.digest_list(members)))
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            tar.addfile(m.info, io.BytesIO(m.data) if m.data or m.info.isreg() else None)
    return buf.getvalue()


def _gzip(data: bytes, level: int = 6) -> bytes:
    z = zlib.compressobj(level, zlib.DEFLATED, 31)
    return z.compress(data) + z.flush()


def _zstd_frame(parts) -> bytes:
    """("raw", bytes) and ("zeros", n) parts; zeros as RLE blocks (a few bytes per 128 KiB)."""
    out = bytearray(b"\x28\xb5\x2f\xfd\x00\x38")
    blocks = []
    for kind, value in parts:
        if kind == "raw":
            blocks += [(0, value[i:i + (1 << 17)]) for i in range(0, len(value), 1 << 17)]
        else:
            blocks += [(1, min(1 << 17, value - i)) for i in range(0, value, 1 << 17)]
    for n, (btype, payload) in enumerate(blocks):
        size = len(payload) if btype == 0 else payload
        out += ((n == len(blocks) - 1) | btype << 1 | size << 3).to_bytes(3, "little")
        out += payload if btype == 0 else b"\0"
    return bytes(out)


def _header(name, kind=tarfile.REGTYPE, size=0, linkname="") -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname, info.mtime = kind, size, linkname, tarkit.MTIME
    return info.tobuf(tarfile.PAX_FORMAT)


def seeds() -> dict[str, bytes]:
    good = [directory("d"), reg("d/a", b"alpha" * 300, mode=0o755), symlink("d/l", "a"),
            hardlink("d/h", "d/a"), reg("d/e", b""), directory("ro", mode=0o555),
            reg("ro/x", b"x" * 700)]
    plain = _tar_bytes(good, digests=True)
    out = {"good.tar": plain, "good.tgz": _gzip(plain)}
    # 1: symlinks out of the image (the harness's cleanup once chmod-ed "/" through one)
    out["defect1-symlinks-out.tar"] = _tar_bytes([
        symlink("root", "/"), symlink("up", "../../.."), directory("d"), symlink("d/etc", "/etc"),
        reg("f", b"x")])
    # 2: the gzip stream fails (bad CRC) after the tar end marker, 3 MiB of zeros later
    tail = _gzip(_tar_bytes(good) + bytes(3 << 20))
    out["defect2-crc-after-end.tgz"] = tail[:-8] + bytes(b ^ 0xFF for b in tail[-8:-4]) + tail[-4:]
    # 3: a late .torcx/digests; a bad body kept by a hard link, its name replaced
    fixed = reg("bin/a", b"good", mode=0o755)
    out["defect3-late-list.tar"] = _tar_bytes([
        directory("bin"), reg("bin/a", b"bad!", mode=0o4755), hardlink("bin/b", "bin/a"), fixed,
        tarkit.digests_member(tarkit.digest_list([fixed]))])
    # 4 and 5: deep paths with no folder entries (quadratic verify memory; 199k folders)
    out["defect45-deep-implicit.tgz"] = _gzip(_tar_bytes(
        [reg(f"c{i}/" + "a/" * 1990 + "f", b"") for i in range(20)]), 9)
    # 6: a hard link carrying a 1 GiB body of zeros; then trailing data after the tar end
    out["defect6-link-body.tar.zst"] = _zstd_frame([
        ("raw", _header("f", size=1) + b"x" + bytes(511)
         + _header("h", tarfile.LNKTYPE, 1 << 30, "f")), ("zeros", (1 << 30) + 10240)])
    out["defect6-trailing.tar.zst"] = _zstd_frame([
        ("raw", _tar_bytes([reg("f", b"x")])), ("zeros", 256 << 20)])
    # 7: many folders with long paths (the fixup sort)
    prefix = "/".join(["p" * 250] * 15)
    out["defect7-long-folders.tgz"] = _gzip(_tar_bytes(
        [directory(prefix)] + [directory(f"{prefix}/{i}") for i in range(300)]), 9)
    # 8: xattrs outside the allowlist, an ACL that would change the mode
    acl = (2).to_bytes(4, "little") + b"".join(
        t.to_bytes(2, "little") + (7).to_bytes(2, "little") + b"\xff" * 4 for t in (1, 4, 0x20))
    out["defect8-xattrs.tar"] = _tar_bytes([reg("f", b"x", mode=0o600, xattrs={
        "trusted.overlay.opaque": b"y", "security.selinux": b"system_u:object_r:shadow_t:s0",
        "system.posix_acl_access": acl, "user.ok": b"1",
        "security.capability": tarkit.CAP_NET_BIND_SERVICE_EP})])
    # 10: several concatenated gzip members
    third = len(plain) // 3
    out["defect10-multi-member.tgz"] = b"".join(
        _gzip(plain[i:i + third]) for i in range(0, len(plain), third))
    rng = random.Random(10)
    for name in ("good.tgz", "defect3-late-list.tar"):
        damaged = bytearray(out[name])
        for _ in range(4):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        out[f"damaged-{name}"] = bytes(damaged)
    return out


def write(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in seeds().items():
        (folder / name).write_bytes(data)
        written.append(folder / name)
    return written


if __name__ == "__main__":
    for path in write(sys.argv[1]):
        print(path, path.stat().st_size)
