# SPDX-License-Identifier: Apache-2.0
"""A failing image or profile never stops the rest: applies with faults under --root."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from apply_images import FakeRoot, write
from applykit import apply_json, guard_root, read_seal, torcx


@pytest.fixture
def root(tmp_path):
    guard_root(tmp_path)
    return FakeRoot(tmp_path / "root")


def corrupt(path):
    """Flip bytes in the middle of an archive, keeping its size."""
    with open(path, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(size // 2)
        f.write(b"\xff" * 16)


def by_name(report):
    return {im["name"]: im for im in report["images"]}


def test_one_corrupt_image_among_several(root):
    """A corrupt archive fails alone: the others are applied, the seal lists the failure."""
    root.add_hello(name="a")
    corrupt(root.add_image("broken", "1", files={"big": "x" * 200_000}))
    root.add_hello(name="c", fmt="tar.zst")
    root.profile("vendor", [("a", "1"), ("broken", "1"), ("c", "1")])
    code, rep = apply_json(root.path)
    assert code == 1
    images = by_name(rep)
    assert (images["a"]["status"], images["c"]["status"]) == ("ok", "ok")
    assert (images["broken"]["status"], images["broken"]["stage"]) == ("failed", "unpack")
    assert "broken:1.torcx.tgz" in images["broken"]["error"]
    assert not os.path.lexists(root.host("/run/torcx/unpack/broken"))
    assert os.path.islink(root.host("/run/torcx/bin/c"))
    assert read_seal(root.path)["TORCX_FAILED_IMAGES"] == '"broken"'


def test_missing_archive_fails_that_image_only(root):
    """An image no store holds fails at lookup; the rest is applied and sealed."""
    root.add_hello()
    root.profile("vendor", [("ghost", "9"), ("hello", "1")])
    code, rep = apply_json(root.path)
    assert code == 1
    images = by_name(rep)
    assert (images["ghost"]["status"], images["ghost"]["stage"]) == ("failed", "lookup")
    assert "ghost:9 not found" in images["ghost"]["error"]
    assert images["hello"]["status"] == "ok"
    assert rep["sealed"] is True


def test_bad_manifest_fails_image_and_propagates_nothing(root):
    """An image whose manifest is invalid JSON fails at 'manifest' and exposes nothing."""
    root.add_image("bad", "1", files={"bin/bad": ("#!/bin/sh\n", 0o755)},
                   manifest='{"kind": "image-manifest-v0", "value": {"bin": [')
    root.add_hello()
    root.profile("vendor", [("bad", "1"), ("hello", "1")])
    code, rep = apply_json(root.path)
    assert code == 1
    bad = by_name(rep)["bad"]
    assert (bad["status"], bad["stage"]) == ("failed", "manifest")
    assert "/run/torcx/unpack/bad/.torcx/manifest.json: $: invalid JSON" in bad["error"]
    assert sorted(os.listdir(root.host("/run/torcx/bin"))) == ["hello"]


def test_manifest_naming_missing_file_fails_image(root):
    """A manifest listing a file the image lacks fails the image, naming the entry."""
    root.add_image("gap", "1", files={"bin/a": "x"}, manifest={"bin": ["/bin/a", "/bin/b"]})
    root.profile("vendor", [("gap", "1")])
    code, rep = apply_json(root.path)
    assert code == 1
    gap = by_name(rep)["gap"]
    assert gap["stage"] == "manifest" and "/bin/b: no such file" in gap["error"]
    assert os.listdir(root.host("/run/torcx/bin")) == []


def test_broken_upper_profile_keeps_lower_profiles(root):
    """An upper profile with invalid JSON is reported as an error; vendor images still apply."""
    root.add_hello()
    root.profile("vendor", [("hello", "1")])
    root.raw_profile("user", '{"kind": "profile-manifest-v0", "value": {"images": [}')
    root.next_profile("user")
    code, rep = apply_json(root.path)
    assert code == 1
    assert rep["images"][0]["status"] == "ok"
    (problem,) = rep["profiles"]["problems"]
    assert (problem["profile"], problem["severity"]) == ("user", "error")
    assert "user.json" in problem["message"]
    assert read_seal(root.path)["TORCX_UPPER_PROFILE"] == '""'


def test_unknown_upper_profile_is_a_warning(root):
    """next-profile naming no existing profile warns and applies the lower profiles, exit 0."""
    root.add_hello()
    root.profile("vendor", [("hello", "1")])
    root.next_profile("gone")
    res = torcx(root.path, "apply", "--no-mount")
    assert res.code == 0, res.out
    assert "'gone'" in res.err and "warning" in res.err
    assert os.path.islink(root.host("/run/torcx/bin/hello"))


def test_leftover_next_profile_with_garbage_keeps_lower_profiles(root):
    """A next-profile holding an invalid name is an error; the lower profiles still apply."""
    root.add_hello()
    root.profile("vendor", [("hello", "1")])
    root.next_profile("../../etc/passwd")
    code, rep = apply_json(root.path)
    assert code == 1
    assert rep["profiles"]["problems"][0]["profile"] == "next-profile"
    assert by_name(rep)["hello"]["status"] == "ok"


def test_failed_image_is_reported_by_status(root):
    """After a partial failure torcx status names the failed image and why, exit 1."""
    root.add_hello()
    root.profile("vendor", [("hello", "1"), ("ghost", "9")])
    apply_json(root.path)
    res = torcx(root.path, "status")
    assert res.code == 1
    assert "ghost:9" in res.out and "not found in any store" in res.out
    assert "failed images: ghost" in res.out


def test_broken_config_file_keeps_vendor_addons(root):
    """An invalid CONFDIR/config.json is an error; defaults are used and the images apply."""
    root.add_hello()
    root.profile("vendor", [("hello", "1")])
    write(root.host("/etc/torcx/config.json"), '{"kind": "torcx-config-v0", "value": [}')
    code, rep = apply_json(root.path)
    assert code == 1
    assert rep["status"] == "failed"
    (problem,) = rep["config_problems"]
    assert "etc/torcx/config.json" in problem and "invalid JSON" in problem
    assert by_name(rep)["hello"]["status"] == "ok"
    status = torcx(root.path, "status")
    assert status.code == 1
    assert "configuration: " in status.out and "etc/torcx/config.json" in status.out


def test_tmpfs_that_cannot_be_mounted_aborts_cleanly(root):
    """Without the right to mount, the apply aborts before unpacking, records why, exits 1."""

    root.add_hello()
    root.profile("vendor", [("hello", "1")])
    cmd = [sys.executable, "-m", "torcx", "--root", root.path, "apply", "--json"]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv is needed to drop CAP_SYS_ADMIN as root")
        cmd = ["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin", *cmd]
    res = subprocess.run(cmd, capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    assert res.returncode == 1, res.stderr
    rep = json.loads(res.stdout)["value"]
    assert rep["status"] == "aborted" and rep["sealed"] is False
    assert "mounting tmpfs on" in rep["error"]
    assert rep["images"][0]["error"].startswith("unpack dir not prepared")
    assert not os.path.exists(root.host("/run/metadata/torcx"))
    with open(root.host("/run/torcx/apply.json")) as f:
        assert json.load(f)["value"]["status"] == "aborted"
    assert torcx(root.path, "status").code == 1


def test_upper_profile_naming_an_unwritable_image_keeps_lower_profiles(root):
    """An upper profile naming an image "a\\nb" is an error; vendor images apply and seal."""
    root.add_hello()
    root.profile("vendor", [("hello", "1")])
    root.raw_profile("user", json.dumps({"kind": "profile-manifest-v0", "value": {
        "images": [{"name": "a\nb", "reference": "1"}]}}))
    root.next_profile("user")
    code, rep = apply_json(root.path)
    assert code == 1
    (problem,) = rep["profiles"]["problems"]
    assert problem["profile"] == "user" and "images[0].name" in problem["message"]
    assert by_name(rep)["hello"]["status"] == "ok"
    assert read_seal(root.path)["TORCX_UPPER_PROFILE"] == '""'


def test_manifest_path_that_is_not_unicode_fails_that_image_only(root):
    """A manifest path with a lone surrogate (\\ud800) fails its image; the others are sealed."""
    root.add_image("odd", "1", files={"bin/odd": "x"},
                   manifest='{"kind": "image-manifest-v0", "value": {"bin": ["/bin/\\ud800"]}}')
    root.add_hello()
    root.profile("vendor", [("odd", "1"), ("hello", "1")])
    code, rep = apply_json(root.path)
    assert code == 1
    odd = by_name(rep)["odd"]
    assert (odd["status"], odd["stage"]) == ("failed", "manifest")
    assert "$.value.bin[0]" in odd["error"]
    assert by_name(rep)["hello"]["status"] == "ok"
    assert read_seal(root.path)["TORCX_FAILED_IMAGES"] == '"odd"'


def test_seal_that_cannot_be_written_is_recorded(root):
    """When /run/metadata is not a folder the apply fails naming it, and still records why."""
    root.add_hello()
    root.profile("vendor", [("hello", "1")])
    write(root.host("/run/metadata"), "not a folder")
    code, rep = apply_json(root.path)
    assert code == 1
    assert rep["status"] == "failed" and rep["sealed"] is False
    assert "run/metadata" in rep["error"]
    assert by_name(rep)["hello"]["status"] == "ok"
    with open(root.host("/run/torcx/apply.json")) as f:
        assert json.load(f)["value"]["error"] == rep["error"]


def test_status_after_a_seal_that_could_not_be_written_says_why(root):
    """torcx status reads the record when the seal folder is broken, and prints the error."""
    root.add_hello()
    root.profile("vendor", [("hello", "1")])
    write(root.host("/run/metadata"), "not a folder")
    apply_json(root.path)
    res = torcx(root.path, "status")
    assert res.code == 1
    assert "error: cannot seal: " in res.out and "run/metadata" in res.out
    assert "hello:1" in res.out


def test_extraction_batch_that_cannot_start_fails_its_images_and_seals(root, monkeypatch):
    """If the engine cannot run the batch at all (ENOMEM), its images fail; the run still seals."""
    from torcx import engine, errors

    def no_memory(jobs, threads=0):
        raise errors.ExtractError("cannot run extraction batch: Cannot allocate memory",
                                  err_no=12)

    monkeypatch.setattr(engine, "extract_many", no_memory)  # ENOMEM cannot be provoked
    root.add_hello()
    root.profile("vendor", [("hello", "1")])
    code, rep = apply_json(root.path)
    assert code == 1
    hello = by_name(rep)["hello"]
    assert (hello["status"], hello["stage"]) == ("failed", "unpack")
    assert "Cannot allocate memory" in hello["error"]
    assert read_seal(root.path)["TORCX_FAILED_IMAGES"] == '"hello"'


def test_next_profile_that_is_a_fifo_does_not_hang_the_boot(root):
    """A FIFO at CONFDIR/next-profile is refused at once, naming it; the lower profiles apply."""
    root.add_hello()
    root.profile("vendor", [("hello", "1")])
    os.makedirs(root.host("/etc/torcx"), exist_ok=True)
    os.mkfifo(root.host("/etc/torcx/next-profile"))
    code, rep = apply_json(root.path)
    assert code == 1
    (problem,) = rep["profiles"]["problems"]
    assert problem["profile"] == "next-profile"
    assert "/etc/torcx/next-profile: not a regular file" in problem["message"]
    assert by_name(rep)["hello"]["status"] == "ok"


def test_config_file_that_is_a_fifo_does_not_hang_the_boot(root):
    """A FIFO at CONFDIR/config.json is refused at once, naming it; the defaults are used."""
    root.add_hello()
    root.profile("vendor", [("hello", "1")])
    os.makedirs(root.host("/etc/torcx"), exist_ok=True)
    os.mkfifo(root.host("/etc/torcx/config.json"))
    code, rep = apply_json(root.path)
    assert code == 1
    (problem,) = rep["config_problems"]
    assert "etc/torcx/config.json: not a regular file" in problem
    assert by_name(rep)["hello"]["status"] == "ok"


def test_manifest_symlinked_out_of_the_image_is_refused(root):
    """A .torcx/manifest.json linking to a host file (say /dev/zero) is never read."""
    outside = root.host("/srv/manifest.json")
    write(outside, json.dumps({"kind": "image-manifest-v0", "value": {"bin": ["/bin/a"]}}))
    root.add_image("sly", "1", files={"bin/a": ("#!/bin/sh\n", 0o755)},
                   links={".torcx/manifest.json": outside})
    root.add_hello()
    root.profile("vendor", [("sly", "1"), ("hello", "1")])
    code, rep = apply_json(root.path)
    assert code == 1
    sly = by_name(rep)["sly"]
    assert (sly["status"], sly["stage"]) == ("failed", "manifest")
    assert "/run/torcx/unpack/sly/.torcx/manifest.json: resolves outside the image" in sly["error"]
    assert sorted(os.listdir(root.host("/run/torcx/bin"))) == ["hello"]


def test_manifest_symlinked_inside_the_image_is_read(root):
    """A .torcx/manifest.json that is a relative link to a file of the image is followed."""
    root.add_image("lnk", "1", files={
        "bin/a": ("#!/bin/sh\n", 0o755),
        "meta/manifest.json": json.dumps({"kind": "image-manifest-v0",
                                          "value": {"bin": ["/bin/a"]}})},
        links={".torcx/manifest.json": "../meta/manifest.json"})
    root.profile("vendor", [("lnk", "1")])
    code, rep = apply_json(root.path)
    assert code == 0, rep
    assert os.readlink(root.host("/run/torcx/bin/a")) == "/run/torcx/unpack/lnk/bin/a"


def test_image_decoding_past_its_estimate_fails_alone(root):
    """A tgz whose hard link skips 256 MiB of zeros while its ISIZE says 600 KB is stopped
    at its plan's bound (not decoded to the end); the other images still apply."""
    import struct
    import tarfile
    import zlib

    def header(info):
        info.mtime = 1_600_000_000
        return info.tobuf(tarfile.PAX_FORMAT)

    f = tarfile.TarInfo("f")
    f.size = 1
    link = tarfile.TarInfo("h")
    link.type, link.linkname, link.size = tarfile.LNKTYPE, "f", 256 << 20
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    gz = z.compress(header(f) + b"x" + bytes(511) + header(link))
    for _ in range(256):
        gz += z.compress(bytes(1 << 20))
    gz += z.compress(bytes(10240)) + z.flush()
    gz = gz[:-4] + struct.pack("<I", 2 * len(gz))  # ISIZE: twice the compressed size
    with open(os.path.join(root.store, "bomb:1.torcx.tgz"), "wb") as out:
        out.write(gz)
    root.add_hello()
    root.profile("vendor", [("bomb", "1"), ("hello", "1")])
    code, rep = apply_json(root.path)
    assert code == 1
    bomb, hello = rep["images"]
    assert (bomb["status"], bomb["stage"]) == ("failed", "unpack")
    assert "decodes to more than" in bomb["error"], bomb["error"]
    assert hello["status"] == "ok"
