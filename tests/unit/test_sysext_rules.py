# SPDX-License-Identifier: Apache-2.0
"""systemd's extension-release rules (torcx.sysext), case by case as systemd 257 decides them
in extension_release_validate(): scope, architecture, ID/_any/ID_LIKE, SYSEXT_LEVEL else
VERSION_ID, rolling hosts; and the checks around them (release file name, os-release)."""

from __future__ import annotations

import os

import pytest

from torcx import sysext
from torcx.paths import Paths
from torcx.sysext import Host, check_tree, detect_format, host_architecture, validate

DEBIAN = Host(id="debian", version_id="13", architecture="x86-64")
FLATCAR = Host(id="flatcar", version_id="4152.2.0", sysext_level="1.0", architecture="x86-64")
ROLLING = Host(id="arch", architecture="x86-64")
UBUNTU = Host(id="ubuntu", version_id="24.04", id_like=("debian",), architecture="x86-64")
LEVEL_ONLY = Host(id="flatcar", sysext_level="1.0", architecture="x86-64")

# (case, host, release, rule refused by, or None when systemd merges it)
CASES = [
    ("ID and VERSION_ID match", DEBIAN, {"ID": "debian", "VERSION_ID": "13"}, None),
    ("VERSION_ID differs", DEBIAN, {"ID": "debian", "VERSION_ID": "12"}, "VERSION_ID"),
    ("VERSION_ID missing on a versioned host", DEBIAN, {"ID": "debian"}, "VERSION_ID"),
    ("SYSEXT_LEVEL without host level falls back to VERSION_ID", DEBIAN,
     {"ID": "debian", "SYSEXT_LEVEL": "1.0"}, "VERSION_ID"),
    ("SYSEXT_LEVEL and VERSION_ID, host has no level: VERSION_ID decides", DEBIAN,
     {"ID": "debian", "SYSEXT_LEVEL": "9", "VERSION_ID": "13"}, None),
    ("SYSEXT_LEVEL matches the host's, VERSION_ID ignored", FLATCAR,
     {"ID": "flatcar", "SYSEXT_LEVEL": "1.0", "VERSION_ID": "1"}, None),
    ("SYSEXT_LEVEL differs", FLATCAR, {"ID": "flatcar", "SYSEXT_LEVEL": "2.0"}, "SYSEXT_LEVEL"),
    ("no SYSEXT_LEVEL: VERSION_ID must match", FLATCAR,
     {"ID": "flatcar", "VERSION_ID": "4152.2.0"}, None),
    ("no SYSEXT_LEVEL, other VERSION_ID", FLATCAR,
     {"ID": "flatcar", "VERSION_ID": "3033.0.0"}, "VERSION_ID"),
    ("host with only SYSEXT_LEVEL, image without one", LEVEL_ONLY, {"ID": "flatcar"}, None),
    ("rolling host: ID is enough", ROLLING, {"ID": "arch"}, None),
    ("rolling host, other ID", ROLLING, {"ID": "debian"}, "ID"),
    ("_any matches every OS and skips versions", FLATCAR, {"ID": "_any"}, None),
    ("_any still honours ARCHITECTURE", DEBIAN, {"ID": "_any", "ARCHITECTURE": "arm64"},
     "ARCHITECTURE"),
    ("ID missing", DEBIAN, {"VERSION_ID": "13"}, "ID"),
    ("ID empty", DEBIAN, {"ID": "", "VERSION_ID": "13"}, "ID"),
    ("other ID", DEBIAN, {"ID": "fedora", "VERSION_ID": "13"}, "ID"),
    ("ID from the host's ID_LIKE", UBUNTU, {"ID": "debian", "VERSION_ID": "24.04"}, None),
    ("ID_LIKE match still checks VERSION_ID", UBUNTU, {"ID": "debian", "VERSION_ID": "13"},
     "VERSION_ID"),
    ("ID_LIKE does not work backwards", DEBIAN, {"ID": "ubuntu", "VERSION_ID": "13"}, "ID"),
    ("ARCHITECTURE matches", DEBIAN, {"ID": "debian", "VERSION_ID": "13",
                                      "ARCHITECTURE": "x86-64"}, None),
    ("ARCHITECTURE _any", DEBIAN, {"ID": "debian", "VERSION_ID": "13",
                                   "ARCHITECTURE": "_any"}, None),
    ("ARCHITECTURE in uname's spelling is not systemd's", DEBIAN,
     {"ID": "debian", "VERSION_ID": "13", "ARCHITECTURE": "x86_64"}, "ARCHITECTURE"),
    ("ARCHITECTURE checked before ID", DEBIAN, {"ID": "fedora", "ARCHITECTURE": "arm64"},
     "ARCHITECTURE"),
    ("SYSEXT_SCOPE system", DEBIAN, {"ID": "_any", "SYSEXT_SCOPE": "system"}, None),
    ("SYSEXT_SCOPE list with system", DEBIAN, {"ID": "_any", "SYSEXT_SCOPE": "initrd system"},
     None),
    ("SYSEXT_SCOPE initrd only", DEBIAN, {"ID": "_any", "SYSEXT_SCOPE": "initrd"},
     "SYSEXT_SCOPE"),
    ("SYSEXT_SCOPE empty allows nothing", DEBIAN, {"ID": "_any", "SYSEXT_SCOPE": ""},
     "SYSEXT_SCOPE"),
    ("no release data", DEBIAN, {}, "release"),
]


@pytest.mark.parametrize("case,host,release,rule", CASES, ids=[c[0] for c in CASES])
def test_extension_release_rules(case, host, release, rule):
    """Each case decides as systemd 257's extension_release_validate() does."""
    refusal = validate("ext", release, host)
    assert (refusal.rule if refusal else None) == rule, f"{case}: {refusal}"


def test_refusal_names_the_values():
    """A refusal says which rule failed and with which values, for `torcx status`."""
    r = validate("ext", {"ID": "fedora", "VERSION_ID": "13"}, UBUNTU)
    assert r.rule == "ID"
    assert r.values == {"ID": "fedora", "host": "ubuntu", "host_id_like": ["debian"]}
    assert str(r) == "ID: ID='fedora' but the host is 'ubuntu' (ID_LIKE 'debian')"


@pytest.mark.parametrize("machine,name", [("x86_64", "x86-64"), ("aarch64", "arm64"),
                                          ("i686", "x86"), ("ppc64le", "ppc64-le"),
                                          ("armv7l", "arm"), ("s390x", "s390x"),
                                          ("riscv64", "riscv64")])
def test_architecture_names_are_systemds(machine, name):
    """uname -m is translated to systemd's architecture names."""
    assert host_architecture(machine) == name


def _tree(tmp_path, name="ext", release="ID=_any\n", release_name=None):
    root = tmp_path / "img"
    d = root / sysext.RELEASE_DIR
    d.mkdir(parents=True)
    (d / f"extension-release.{release_name or name}").write_text(release)
    return str(root)


def test_release_file_must_be_named_after_the_image(tmp_path):
    """A release file named for another image is refused, naming what was found."""
    release, refusal = check_tree(_tree(tmp_path, release_name="other"), "ext", DEBIAN)
    assert refusal.rule == "name"
    assert "extension-release.ext" in str(refusal)
    assert refusal.values["found"] == ["usr/lib/extension-release.d/extension-release.other"]


def test_os_release_inside_is_refused(tmp_path):
    """An image that would replace the host's usr/lib/os-release is refused."""
    root = _tree(tmp_path)
    with open(os.path.join(root, "usr/lib/os-release"), "w") as f:
        f.write("ID=evil\n")
    assert check_tree(root, "ext", DEBIAN)[1].rule == "os-release"


def test_a_good_tree_passes_and_its_release_is_returned(tmp_path):
    """The release data is read with os-release quoting rules."""
    root = _tree(tmp_path, release='ID="debian"\nVERSION_ID="13"\n# comment\n')
    release, refusal = check_tree(root, "ext", DEBIAN)
    assert refusal is None and release == {"ID": "debian", "VERSION_ID": "13"}


def test_host_reads_etc_before_usr(tmp_path):
    """The host's facts come from /etc/os-release first, as systemd reads them."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "etc/os-release").write_text('ID=ubuntu\nID_LIKE="debian"\nVERSION_ID=24.04\n')
    (tmp_path / "usr/lib/os-release").write_text("ID=other\n")
    host = sysext.read_host(Paths(root=str(tmp_path)))
    assert (host.id, host.id_like, host.version_id) == ("ubuntu", ("debian",), "24.04")
    (tmp_path / "etc/os-release").unlink()
    assert sysext.read_host(Paths(root=str(tmp_path))).id == "other"


def test_format_detected_by_superblock(tmp_path):
    """squashfs and erofs are told apart by their magic, whatever the file is called."""
    sq = tmp_path / "a.raw"
    sq.write_bytes(b"hsqs" + bytes(2000))
    er = tmp_path / "b.raw"
    er.write_bytes(bytes(1024) + b"\xe2\xe1\xf5\xe0" + bytes(100))
    other = tmp_path / "c.raw"
    other.write_bytes(bytes(4096))
    assert [detect_format(str(p)) for p in (sq, er, other)] == ["squashfs", "erofs", None]
