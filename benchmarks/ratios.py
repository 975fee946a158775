# SPDX-License-Identifier: Apache-2.0
"""Print the contenders and the issues' target ratios (2 and 12) from one pytest-benchmark JSON.

    python3 -m pytest benchmarks/test_extract.py --benchmark-enable --benchmark-json=bench.json
    python3 benchmarks/ratios.py bench.json

Times are each contender's best round (min): on a shared machine the least
disturbed round is the fairest comparison; medians are shown beside them, and
the CPU seconds (user + system, from one extra run under GNU time) show what
each contender costs whatever else the machine was doing.
Exit status: 0 when every target is met, 1 when one is missed, 2 on bad input.
"""

from __future__ import annotations

import json
import sys

MB = 1_000_000
RSS_LIMIT_KIB = 64 * 1024  # "peak RSS under 64 MB"


def _load(path: str) -> dict[tuple[str, str, str], dict]:
    with open(path) as f:
        data = json.load(f)
    rows = {}
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if "set" in info:
            rows[(info["set"], info["tool"], info["format"])] = bench
    return rows


def _table(rows: dict[tuple[str, str, str], dict]) -> None:
    print(f"{'set':17} {'contender':30} {'min s':>8} {'median s':>9} {'MB/s':>7} "
          f"{'files/s':>8} {'peak RSS MB':>11} {'CPU s':>6}")
    for (group, tool, fmt), bench in sorted(rows.items(), key=lambda kv: (
            kv[0][0], kv[1]["stats"]["min"])):
        info, stats = bench["extra_info"], bench["stats"]
        rss, cpu = info.get("peak_rss_kib"), info.get("cpu_s")
        print(f"{group:17} {tool + ' (' + fmt + ')':30} {stats['min']:8.3f} "
              f"{stats['median']:9.3f} {info['unpacked_bytes'] / MB / stats['min']:7.0f} "
              f"{info['files'] / stats['min']:8.0f} "
              f"{'n/a' if rss is None else f'{rss / 1024:.1f}':>11} "
              f"{'n/a' if cpu is None else f'{cpu:.2f}':>6}")


def _phases(rows: dict[tuple[str, str, str], dict]) -> None:
    """The apply's own phase timings (RUNDIR/apply.json, median / best of the timed rounds)
    and how it sized its archives, and each torcx apply against the baseline's."""
    applies = {tool: b for (group, tool, _), b in rows.items()
               if group == "full-apply" and "total_ms" in b["extra_info"]}
    if not applies:
        return
    print("\napply phases (ms, median / best)")
    for tool, bench in sorted(applies.items()):
        info = bench["extra_info"]
        phases = "  ".join(f"{k[:-3]} {v['median']:.1f} / {v['min']:.1f}"
                           for k, v in sorted(info.items())
                           if k.endswith("_ms") and isinstance(v, dict))
        print(f"  {tool:22} {phases}")
        print(f"  {'':22} sized by: {', '.join(info.get('sizing', [])) or 'n/a'}")
    base = applies.get("torcx-apply-baseline")
    ours = applies.get("torcx-apply")
    if base and ours:
        b, o = base["stats"], ours["stats"]
        print(f"  torcx-apply vs baseline, blocks of rounds one after the other: "
              f"{b['min'] / o['min']:.2f}x (best rounds), "
              f"{b['median'] / o['median']:.2f}x (medians)")
    mixed = base and base["extra_info"].get("interleaved")
    if mixed:
        b = base["stats"]
        print(f"  torcx-apply vs baseline, interleaved rounds: {mixed['min']:.3f} / "
              f"{mixed['median']:.3f} s against {b['min']:.3f} / {b['median']:.3f} s: "
              f"{b['min'] / mixed['min']:.2f}x (best rounds), "
              f"{b['median'] / mixed['median']:.2f}x (medians)")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: ratios.py BENCHMARK_JSON", file=sys.stderr)
        return 2
    try:
        rows = _load(argv[0])
    except (OSError, ValueError) as e:
        print(f"ratios: {argv[0]}: cannot read benchmark JSON: {e}", file=sys.stderr)
        return 2
    if not rows:
        print(f"ratios: {argv[0]}: no timed torcx benchmarks (run with --benchmark-enable)",
              file=sys.stderr)
        return 2

    def best(group: str, tool: str, fmt: str) -> float | None:
        bench = rows.get((group, tool, fmt))
        return bench["stats"]["min"] if bench else None

    three_info = next((b["extra_info"] for (g, _, _), b in rows.items() if g == "three-images"),
                      None)
    if three_info:
        print(f"three images: {three_info['unpacked_bytes'] / MB:.1f} MB unpacked, "
              f"{three_info['entries']} entries, {three_info['files']} files\n")
    _table(rows)
    _phases(rows)
    print()

    three, single = "three-images", "single-large-tgz"
    engine_tgz, engine_zst = best(three, "torcx-engine", "tgz"), best(three, "torcx-engine", "zst")
    tar_tgz, cp = best(three, "gnu-tar", "tgz"), best(three, "cp-a", "tree")
    single_engine, single_tar = best(single, "torcx-engine", "tgz"), best(single, "gnu-tar", "tgz")
    engine_rss = [b["extra_info"].get("peak_rss_kib") for (_, tool, _), b in rows.items()
                  if tool.startswith("torcx-engine")]

    # (what, measured ratio or None, target text, met?)
    checks = []

    def speedup(what: str, fast: float | None, slow: float | None, at_least: float):
        ratio = slow / fast if fast and slow else None
        checks.append((what, f"{ratio:.2f}x faster" if ratio else "not measured",
                       f">= {at_least:g}x", ratio is not None and ratio >= at_least))

    def within(what: str, ours: float | None, floor: float | None, at_most: float):
        ratio = ours / floor if ours and floor else None
        checks.append((what, f"{ratio:.2f}x the time" if ratio else "not measured",
                       f"<= {at_most:g}x", ratio is not None and ratio <= at_most))

    speedup("3-image tgz batch vs sequential tar -xzf", engine_tgz, tar_tgz, 4)
    within("3-image tgz batch vs cp -a", engine_tgz, cp, 2)
    speedup("single large tgz vs tar -xzf", single_engine, single_tar, 2)
    within("3-image tar.zst batch vs cp -a", engine_zst, cp, 1.4)
    # Issue 12 item 4: the whole apply against the original's sequential unpack.
    speedup("full torcx apply vs original (stand-in)", best("full-apply", "torcx-apply", "tgz"),
            best("full-apply", "original-standin", "tgz"), 5)
    go_standin = best("full-apply", "original-go-standin", "tgz")
    if go_standin:  # only where a Go toolchain built it
        speedup("full torcx apply vs original (Go stand-in)",
                best("full-apply", "torcx-apply", "tgz"), go_standin, 5)
    known = [r for r in engine_rss if r is not None]
    peak = max(known) if known else None
    checks.append(("engine peak RSS (whole python3 process)",
                   f"{peak / 1024:.1f} MB" if peak else "not measured",
                   f"< {RSS_LIMIT_KIB // 1024} MB", peak is not None and peak < RSS_LIMIT_KIB))

    for what, measured, target, met in checks:
        print(f"{what:42} {measured:>18}   target {target:8} {'met' if met else 'MISSED'}")
    return 0 if all(met for *_, met in checks) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
