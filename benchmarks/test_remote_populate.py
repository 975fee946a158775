# SPDX-License-Identifier: Apache-2.0
"""populate of the reference profile (three images as tgz) from an http remote and from
an OCI registry (Debian's docker-registry, anonymous, on 127.0.0.1), in one run.

Both servers are processes of their own (the http one is ``python3 -m http.server``,
as the README's publishing example), so neither shares the client's interpreter.

Each timed call is one whole ``populate``: signed contents, gpgv, the three archives
streamed in parallel and checked against their signed sha512, into an emptied store.
``extra_info`` records the requests each server answered per populate and the bytes.

    TORCX_BENCH_FULL=1 python3 -m pytest benchmarks/test_remote_populate.py \\
        --benchmark-enable --benchmark-columns=min,median,max
"""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(REPO, "tests", "remote"), os.path.join(REPO, "tests")]

from registrykit import REGISTRY, Registry  # noqa: E402
from remotekit import OS_VERSION, FakeRoot, GpgKeys  # noqa: E402

from torcx import paths as torcx_paths  # noqa: E402
from torcx.log import Logger  # noqa: E402
from torcx.remote import contents as remote_contents  # noqa: E402
from torcx.remote import populate as remote_populate  # noqa: E402
from torcx.remote.fetch import FetchOptions  # noqa: E402
from torcx.schemas import ImageRef  # noqa: E402

REFERENCE = "bench"


class HttpServer:
    """``python3 -m http.server`` on 127.0.0.1; its log counts the requests answered."""

    def __init__(self, folder: str, log: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.log = log
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory",
                 folder, str(port)], stdout=subprocess.DEVNULL, stderr=err)
        self.url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("http.server did not start") from None
                time.sleep(0.05)

    @property
    def total(self) -> int:
        last = None
        while True:  # log lines follow the responses; read once they stop growing
            with open(self.log, encoding="utf-8", errors="replace") as f:
                now = len(re.findall(r'"GET [^"]*" \d{3}', f.read()))
            if now == last:
                return now
            last = now
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def remotes(bench_workload, tmp_path_factory):
    """The reference archives published once: a folder served over http, and a registry."""
    if REGISTRY is None or shutil.which("gpg") is None:
        pytest.skip("needs docker-registry and gpg (sh scripts/setup.sh)")
    from torcx.remote import oci

    work = tmp_path_factory.mktemp("remote-bench")
    home = work / "gnupg"
    home.mkdir(mode=0o700)
    keys = GpgKeys(str(home))
    folder = work / "published"
    folder.mkdir()
    for image in bench_workload.images:
        target = folder / f"{image.name}:{REFERENCE}.torcx.tgz"
        try:
            os.link(image.tgz, target)
        except OSError:
            shutil.copyfile(image.tgz, target)
    unsigned = remote_contents.write_contents(str(folder))
    with open(unsigned, "rb") as f:
        signed = keys.clearsign(f.read())
    with open(unsigned + ".asc", "wb") as f:
        f.write(signed)
    registry = Registry(str(work / "registry"))
    http = HttpServer(str(folder), str(work / "http.log"))
    os.environ.setdefault("no_proxy", "127.0.0.1")
    try:
        oci.publish(str(folder), registry.url("torcx/bench"), OS_VERSION, FetchOptions())
        yield {"keys": keys, "http": http, "registry": registry, "work": work,
               "bytes": sum(i.tgz_bytes for i in bench_workload.images),
               "images": [i.name for i in bench_workload.images]}
    finally:
        http.stop()
        registry.stop()
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)


@pytest.mark.parametrize("kind", ["http", "oci"])
def test_populate_reference_profile(benchmark, remotes, bench_rounds, kind, tmp_path):
    root = FakeRoot(str(tmp_path / "root"), remotes["keys"])
    http, registry = remotes["http"], remotes["registry"]
    root.add_remote("bench", http.url if kind == "http" else registry.url("torcx/bench"))
    images = [ImageRef(name, REFERENCE, "bench") for name in remotes["images"]]
    paths = torcx_paths.load(root.path, environ={})

    def empty_store():
        shutil.rmtree(root.store, ignore_errors=True)

    def count() -> int:
        return http.total if kind == "http" else len(registry.settle())

    def populate():
        rc = remote_populate.populate(paths, images, log=Logger(stream=io.StringIO()),
                                      opts=FetchOptions())
        assert rc == 0

    before = count()
    benchmark.pedantic(populate, setup=empty_store, rounds=bench_rounds, iterations=1)
    calls = bench_rounds if benchmark.enabled else 1
    assert len([f for f in root.store_files() if ".torcx." in f]) == len(images)
    benchmark.extra_info["requests_per_populate"] = (count() - before) / calls
    benchmark.extra_info["megabytes"] = round(remotes["bytes"] / 1e6, 1)
