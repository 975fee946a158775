# SPDX-License-Identifier: Apache-2.0
"""Verify OpenPGP clear-signed documents with gpgv.

Why gpgv: it is GnuPG's verify-only tool, maintained with GnuPG, installed on every
Debian system (the ``gpgv`` package is what apt itself uses to check archive
signatures), and calling it adds no Python dependency. It has no trust database
and no agent: a signature is good exactly when it was made by a key in the
keyrings we name on its command line.

The trust rule: the verified payload is taken ONLY from what gpgv writes to its
``--output`` file, and only when gpgv's status lines report a good signature by a
configured key and nothing bad (a further signature by a key we lack is tolerated,
as apt does, so publishers can rotate keys). The ``.asc`` text is never parsed here: text around the
signed block, or a second block, cannot reach the caller. (gpgv writes the plaintext
before it has checked the signature, so the output file is thrown away unless
every check passes.)

The remote's keys are ASCII-armored keyrings, which gpgv does not read; they are
de-armored here (base64 with a CRC-24 check, RFC 4880 section 6) into a temporary
binary keyring. The small packet walk below only reads key fingerprints for
messages and ``torcx remote list``; it decides nothing about trust.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .errors import RemoteError

__all__ = ["Keyring", "load_keyring", "verify_clearsigned", "verify_clearsigned_by"]

_ARMOR_BEGIN = b"-----BEGIN PGP PUBLIC KEY BLOCK-----"
_ARMOR_END = b"-----END PGP PUBLIC KEY BLOCK-----"
_TAG_PUBLIC_KEY = 6
_GPGV_TIMEOUT_S = 60
# Status keywords that condemn the whole document (gpg's doc/DETAILS).
_BAD_STATUS = ("BADSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG")
_ERRSIG_NO_PUBKEY = "9"  # the <rc> field of ERRSIG: the signing key is not in our keyrings


@dataclass(frozen=True)
class Keyring:
    """An OpenPGP keyring read from ``path``: binary packets and primary fingerprints."""

    path: str
    packets: bytes
    fingerprints: tuple[str, ...]


def _crc24(data: bytes) -> int:
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def _dearmor(text: bytes, path: str) -> bytes:
    """Decode every public key block of an armored file (several blocks are concatenated)."""
    out = bytearray()
    lines = text.replace(b"\r\n", b"\n").split(b"\n")
    i = 0
    blocks = 0
    while i < len(lines):
        if lines[i].strip() != _ARMOR_BEGIN:
            i += 1
            continue
        i += 1
        while i < len(lines) and lines[i].strip():  # armor headers ("Comment: ...")
            if b":" not in lines[i]:
                break  # no header block: body starts right away
            i += 1
        body: list[bytes] = []
        checksum = None
        while i < len(lines) and lines[i].strip() != _ARMOR_END:
            line = lines[i].strip()
            if line.startswith(b"="):
                checksum = line[1:]
            elif line:
                body.append(line)
            i += 1
        if i == len(lines):
            raise RemoteError(f"{path}: armored key block has no END line")
        try:
            data = base64.b64decode(b"".join(body), validate=True)
            if checksum is not None and int.from_bytes(
                    base64.b64decode(checksum, validate=True), "big") != _crc24(data):
                raise RemoteError(f"{path}: armor checksum mismatch")
        except ValueError as e:
            raise RemoteError(f"{path}: invalid armored key block: {e}") from None
        out += data
        blocks += 1
        i += 1
    if not blocks:
        raise RemoteError(f"{path}: no '{_ARMOR_BEGIN.decode()}' found")
    return bytes(out)


def _packets(data: bytes, path: str) -> Iterator[tuple[int, bytes]]:
    """Yield (tag, body) for each OpenPGP packet (RFC 4880 section 4.2)."""
    def number(at: int, size: int) -> int:
        if at + size > len(data):
            raise RemoteError(f"{path}: truncated OpenPGP packet header at {pos}")
        return int.from_bytes(data[at:at + size], "big")

    pos = 0
    while pos < len(data):
        ctb = data[pos]
        if not ctb & 0x80:
            raise RemoteError(f"{path}: not an OpenPGP keyring (bad packet header at {pos})")
        if ctb & 0x40:  # new format
            tag = ctb & 0x3F
            first = number(pos + 1, 1)
            if first < 192:
                length, start = first, pos + 2
            elif first < 224:
                length = ((first - 192) << 8) + number(pos + 2, 1) + 192
                start = pos + 3
            elif first == 255:
                length, start = number(pos + 2, 4), pos + 6
            else:
                raise RemoteError(f"{path}: partial-length packet in a keyring")
        else:  # old format
            tag = (ctb >> 2) & 0x0F
            size = (1, 2, 4, 0)[ctb & 3]
            length = number(pos + 1, size) if size else len(data) - pos - 1
            start = pos + 1 + size
        if start + length > len(data):
            raise RemoteError(f"{path}: truncated OpenPGP packet")
        yield tag, data[start:start + length]
        pos = start + length


def _fingerprint(body: bytes, path: str) -> str:
    version = body[0] if body else 0
    if version == 4:
        if len(body) > 0xFFFF:  # the v4 fingerprint hashes a two-octet length
            raise RemoteError(f"{path}: v4 public key packet too long ({len(body)} bytes)")
        return hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest().upper()
    if version in (5, 6):
        prefix = b"\x9a" if version == 5 else b"\x9b"
        return hashlib.sha256(prefix + len(body).to_bytes(4, "big") + body).hexdigest().upper()
    return f"(v{version} key)"


def load_keyring(path: str) -> Keyring:
    """Read an armored (or binary) keyring; it must hold at least one public key."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise RemoteError(f"{path}: cannot read keyring: {e.strerror}") from None
    packets = raw if raw[:1] and raw[0] & 0x80 else _dearmor(raw, path)
    fprs = tuple(_fingerprint(body, path) for tag, body in _packets(packets, path)
                 if tag == _TAG_PUBLIC_KEY)
    if not fprs:
        raise RemoteError(f"{path}: keyring holds no public key")
    return Keyring(path=path, packets=packets, fingerprints=fprs)


def _gpgv() -> str:
    exe = shutil.which("gpgv")
    if exe is None:
        raise RemoteError("gpgv not found: install the Debian package 'gpgv' to verify remotes")
    return exe


def _judge(rc: int, status: str) -> str:
    """Return '' when gpgv vouched for exactly one signed text, else the reason it did not.

    One good signature by a configured key is enough, even when other signatures
    on the same text are by keys we do not have (gpgv then exits 2): that is how
    a publisher rotates keys, and how apt judges gpgv's verdict. Any bad,
    expired or revoked signature, or an error other than a missing key, fails.
    """
    records = [line.split()[1:] for line in status.splitlines()
               if line.startswith("[GNUPG:] ") and len(line.split()) > 1]
    words = [r[0] for r in records]
    if "NEWSIG" not in words:
        return "not signed (no OpenPGP signature found)"
    if words.count("PLAINTEXT") != 1:
        return "more than one signed text"
    bad = sorted({w for w in words if w in _BAD_STATUS})
    if bad:
        return f"bad signature ({', '.join(bad)})"
    errors = [r for r in records if r[0] == "ERRSIG"]
    unknown = [r for r in errors if len(r) > 6 and r[6] == _ERRSIG_NO_PUBKEY]
    if len(unknown) != len(errors):
        return "a signature cannot be checked (unsupported or malformed)"
    if "VALIDSIG" not in words:
        return "signed by an unknown key" if unknown else f"gpgv rejected it (exit status {rc})"
    if rc != 0 and not (rc == 2 and unknown):
        return f"gpgv rejected it (exit status {rc})"
    return ""


def verify_clearsigned(signed: bytes, keyrings: Sequence[Keyring], *, what: str) -> bytes:
    """Return the text of a clear-signed document, verified by gpgv against ``keyrings``.

    ``what`` names the document in errors (e.g. "remote example: <url>"). Raises
    RemoteError naming the reason and the fingerprints of the keys tried.
    """
    return verify_clearsigned_by(signed, keyrings, what=what)[0]


def _signers(status: str) -> tuple[str, ...]:
    """Primary-key fingerprints of the good signatures (VALIDSIG's last field)."""
    found = []
    for line in status.splitlines():
        words = line.split()
        if len(words) > 2 and words[0] == "[GNUPG:]" and words[1] == "VALIDSIG":
            fpr = words[-1].upper()
            if fpr not in found:
                found.append(fpr)
    return tuple(found)


def verify_clearsigned_by(signed: bytes, keyrings: Sequence[Keyring], *,
                          what: str) -> tuple[bytes, tuple[str, ...]]:
    """:func:`verify_clearsigned`, also returning the fingerprints of the keys that signed."""
    tried = ", ".join(f for k in keyrings for f in k.fingerprints) or "none"
    if not keyrings:
        raise RemoteError(f"{what}: no keys configured; refusing unverified contents")
    with tempfile.TemporaryDirectory(prefix="torcx-gpgv.") as tmp:
        os.chmod(tmp, 0o700)
        keyring = os.path.join(tmp, "keys.gpg")
        with open(keyring, "wb") as f:
            for k in keyrings:
                f.write(k.packets)
        # No ".asc" suffix: gpgv would look for a detached data file next to it.
        source = os.path.join(tmp, "signed")
        with open(source, "wb") as f:
            f.write(signed)
        output = os.path.join(tmp, "verified")
        cmd = [_gpgv(), "--homedir", tmp, "--status-fd", "1", "--keyring", keyring,
               "--output", output, source]
        try:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=_GPGV_TIMEOUT_S, env={**os.environ, "LC_ALL": "C"})
        except subprocess.TimeoutExpired:
            raise RemoteError(f"{what}: gpgv timed out; keys tried: {tried}") from None
        status = proc.stdout.decode("utf-8", "replace")
        reason = _judge(proc.returncode, status)
        if reason:
            raise RemoteError(f"{what}: signature not verified: {reason}; keys tried: {tried}")
        with open(output, "rb") as f:
            return f.read(), _signers(status)
