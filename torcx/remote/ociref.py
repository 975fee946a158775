# SPDX-License-Identifier: Apache-2.0
"""Names in an OCI registry remote: ``oci://HOST[:PORT]/REPOSITORY`` and its artifacts.

Pure string work (no registry client), so ``torcx remote list`` and the remote
configuration never import one. The layout (README "Fleets: OCI registries"):

- ``oci://HOST/REPO`` (``oci+http://`` for a registry without TLS) is the remote;
- the archive of image NAME:REF is the artifact ``HOST/REPO/NAME:REF``: one
  repository per image, tag = image reference;
- the signed contents for OS version V is the artifact ``HOST/REPO:V``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import RemoteError

__all__ = ["Repo", "contents_ref", "image_ref", "parse_ref", "parse_repo"]

SCHEMES = {"oci://": "https", "oci+http://": "http"}
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
                      r"(?::[0-9]{1,5})?$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_COMPONENT_RE = re.compile(rf"^{_COMPONENT}$")


@dataclass(frozen=True)
class Repo:
    """A repository in a registry; ``scheme`` is the transport (https or http)."""

    scheme: str
    host: str
    path: str

    @property
    def url(self) -> str:
        prefix = "oci://" if self.scheme == "https" else "oci+http://"
        return f"{prefix}{self.host}/{self.path}"

    def child(self, name: str) -> Repo:
        return Repo(self.scheme, self.host, f"{self.path}/{name}")

    def ref(self, tag: str) -> str:
        return f"{self.url}:{tag}"


def parse_repo(url: str) -> Repo:
    """``oci://HOST[:PORT]/REPO`` -> Repo; RemoteError says what is wrong."""
    prefix = next((p for p in SCHEMES if url.startswith(p)), None)
    if prefix is None:
        raise RemoteError(f"{url!r}: not an OCI registry URL (oci:// or oci+http://)")
    scheme, rest = SCHEMES[prefix], url[len(prefix):].rstrip("/")
    host, _, path = rest.partition("/")
    if not _HOST_RE.match(host):
        raise RemoteError(f"{url!r}: {host!r} is not a registry host[:port]")
    if not _PATH_RE.match(path):
        raise RemoteError(f"{url!r}: {path!r} is not a repository name (lowercase "
                          "letters and digits, separated by '.', '_', '-' or '/')")
    return Repo(scheme, host, path)


def check_tag(tag: str, what: str) -> str:
    if not _TAG_RE.match(tag):
        raise RemoteError(f"{what} {tag!r} cannot be an OCI tag (letters, digits, '.', "
                          "'_', '-', at most 128, not starting with '.' or '-')")
    return tag


def image_ref(base: Repo, name: str, reference: str) -> str:
    """The artifact URL of image ``name:reference`` below ``base``."""
    if not _COMPONENT_RE.match(name):
        raise RemoteError(f"image name {name!r} cannot be an OCI repository name "
                          "(lowercase letters and digits, separated by '.', '_' or '-')")
    return base.child(name).ref(check_tag(reference, "image reference"))


def contents_ref(base: Repo, os_version: str) -> str:
    """The artifact URL of the signed contents for ``os_version``."""
    return base.ref(check_tag(os_version, "OS version"))


def parse_ref(url: str) -> tuple[Repo, str]:
    """``oci://HOST/REPO:TAG`` -> (Repo, TAG)."""
    head, sep, tag = url.rpartition(":")
    if not sep or "/" in tag or head.endswith("/"):
        raise RemoteError(f"{url!r}: expected oci://HOST/REPOSITORY:TAG")
    return parse_repo(head), check_tag(tag, "tag")
