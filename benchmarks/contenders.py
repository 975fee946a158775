# SPDX-License-Identifier: Apache-2.0
"""Every way of extracting a set of images that the benchmarks compare.

A contender extracts a list of images into an empty folder ``out``, one
subfolder per image. ``prepare`` (untimed) empties ``out`` and creates the
destination folders the tool needs; ``run`` is the timed part.
``probe`` runs the contender once more in child processes under GNU time
(``/usr/bin/time -f "%M %U %S"``) and returns the largest maximum RSS and the
total CPU time of them: the same method for every contender (a command-line
tool runs as itself; a Python library runs in ``python3 contenders.py ...``).

Run as a script, it extracts once in-process (that is what ``probe``
measures for the Python libraries):
``python3 benchmarks/contenders.py TOOL FORMAT WORKLOAD_FOLDER OUT IMAGE...``
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

import workload as wl

# Command-line tools run once per archive, one after the other.
CLI_TOOLS: dict[str, tuple[Callable[[str, str], list[str]], tuple[str, ...]]] = {
    "gnu-tar": (lambda a, d: ["tar", "-xzf", a, "-C", d], ("tar", "gzip")),
    "gnu-tar-pigz": (lambda a, d: ["tar", "-I", "pigz", "-xf", a, "-C", d], ("tar", "pigz")),
    "gnu-tar-zstd": (lambda a, d: ["tar", "-I", "zstd", "-xf", a, "-C", d], ("tar", "zstd")),
    "bsdtar": (lambda a, d: ["bsdtar", "-xf", a, "-C", d], ("bsdtar",)),
}
ENGINE_THREADS = {"torcx-engine": 0, "torcx-engine-1thread": 1}
GNU_TIME = "/usr/bin/time"  # Debian package "time"
PYTHON_TOOLS = ("python-tarfile", "libarchive-c", *ENGINE_THREADS)
FORMATS = ("tgz", "zst", "tree")


@dataclass(frozen=True)
class Contender:
    tool: str
    fmt: str  # "tgz", "zst" or "tree" (the unpacked trees, for cp -a)

    @property
    def label(self) -> str:
        return f"{self.tool} ({self.fmt})"

    def missing(self) -> str | None:
        """Why this contender cannot run here, or None."""
        if self.tool == "cp-a":
            programs: tuple[str, ...] = ("cp",)
        elif self.tool in CLI_TOOLS:
            programs = CLI_TOOLS[self.tool][1]
        else:
            programs = ()
            module = "torcx.engine" if self.tool in ENGINE_THREADS else \
                "libarchive" if self.tool == "libarchive-c" else "tarfile"
            try:
                __import__(module)
            except ImportError as e:
                return f"{self.label}: cannot import {module}: {e}"
        absent = [p for p in programs if shutil.which(p) is None]
        return f"{self.label}: not installed: {', '.join(absent)}" if absent else None

    def prepare(self, images: Sequence[wl.Image], out: str) -> None:
        """Leave ``out`` empty, plus the empty destination folders the tool needs."""
        shutil.rmtree(out, ignore_errors=True)
        os.mkdir(out)
        # The engine creates its destinations (they must not exist); cp -a
        # creates them as copies of the trees; the others extract into them.
        if self.tool not in ENGINE_THREADS and self.tool != "cp-a":
            for image in images:
                os.mkdir(os.path.join(out, image.name))

    def commands(self, images: Sequence[wl.Image], out: str) -> list[list[str]]:
        """The child processes that run this contender, one after the other."""
        if self.tool == "cp-a":
            return [["cp", "-a", *[i.tree for i in images], out]]
        if self.tool in CLI_TOOLS:
            argv = CLI_TOOLS[self.tool][0]
            return [argv(i.archive(self.fmt), os.path.join(out, i.name)) for i in images]
        folder = os.path.dirname(os.path.dirname(images[0].tree))
        return [[sys.executable, os.path.abspath(__file__), self.tool, self.fmt, folder, out,
                 *[i.name for i in images]]]

    def run(self, images: Sequence[wl.Image], out: str) -> list:
        """Extract ``images`` into ``out`` (prepared); return the engine's results, if any."""
        if self.tool in PYTHON_TOOLS:
            return _run_in_process(self.tool, self.fmt, images, out)
        for argv in self.commands(images, out):
            done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: "
                                   f"{done.stderr.decode(errors='replace').strip()}")
        return []

    def probe(self, images: Sequence[wl.Image], out: str) -> Probe | None:
        """Extract once more in child processes under GNU time; None without GNU time."""
        self.prepare(images, out)
        probes = [probe(argv) for argv in self.commands(images, out)]
        if None in probes:
            return None
        return Probe(peak_rss_kib=max(p.peak_rss_kib for p in probes),
                     cpu_s=sum(p.cpu_s for p in probes))


@dataclass(frozen=True)
class Probe:
    peak_rss_kib: int  # largest max RSS of the child processes
    cpu_s: float  # their user + system CPU seconds


def probe(argv: list[str], cwd: str | None = None) -> Probe | None:
    """Run ``argv`` under GNU time; return its max RSS and CPU time (None without GNU time).

    GNU time forks the command from a small process: a child forked straight
    from this (large) Python process would report this process's own peak,
    which the kernel carries over fork and exec. For a command that forks
    (tar and its gzip), %M is the larger of the two peaks, not their sum;
    the CPU time covers both. CPU time is what the contender costs whatever
    else the machine is doing, a check on wall-clock times taken on a busy one.
    """
    if not os.access(GNU_TIME, os.X_OK):
        return None
    with tempfile.NamedTemporaryFile("r", prefix="torcx-bench-probe-") as report:
        done = subprocess.run([GNU_TIME, "-f", "%M %U %S", "-o", report.name, *argv],
                              cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: "
                               f"{done.stderr.decode(errors='replace').strip()}")
        rss, user, system = report.read().split()[-3:]
        return Probe(peak_rss_kib=int(rss), cpu_s=float(user) + float(system))


def _run_in_process(tool: str, fmt: str, images: Sequence[wl.Image], out: str) -> list:
    if tool in ENGINE_THREADS:
        from torcx import engine

        jobs = [engine.Job(i.archive(fmt), os.path.join(out, i.name)) for i in images]
        results = engine.extract_many(jobs, threads=ENGINE_THREADS[tool])
        for result in results:
            if result.error is not None:
                raise result.error
        return results
    if tool == "python-tarfile":
        import tarfile

        # The "tar" filter is GNU tar's behaviour (Python 3.12+ warns without one).
        options = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}
        for image in images:
            with tarfile.open(image.archive(fmt)) as tar:
                tar.extractall(os.path.join(out, image.name), **options)
        return []
    if tool == "libarchive-c":
        import libarchive
        import libarchive.extract as la

        # What GNU tar restores as root: owner, permissions, mtimes.
        flags = la.EXTRACT_OWNER | la.EXTRACT_PERM | la.EXTRACT_TIME
        cwd = os.getcwd()
        try:
            for image in images:  # extract_file writes into the current folder
                os.chdir(os.path.join(out, image.name))
                libarchive.extract_file(image.archive(fmt), flags)
        finally:
            os.chdir(cwd)
        return []
    raise ValueError(f"unknown in-process contender {tool!r}")


def main(argv: list[str]) -> int:
    if len(argv) < 5 or argv[0] not in PYTHON_TOOLS or argv[1] not in FORMATS:
        print(f"usage: contenders.py {{{'|'.join(PYTHON_TOOLS)}}} {{{'|'.join(FORMATS)}}} "
              "WORKLOAD_FOLDER OUT IMAGE...", file=sys.stderr)
        return 2
    tool, fmt, folder, out, names = argv[0], argv[1], argv[2], argv[3], argv[4:]
    work = wl.load(folder)
    _run_in_process(tool, fmt, [work.image(n) for n in names], out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
