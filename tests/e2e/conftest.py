# SPDX-License-Identifier: Apache-2.0
"""Boot tests: print each suite's guest boot time with and without torcx at the end."""

from __future__ import annotations


def pytest_terminal_summary(terminalreporter):
    import sys

    mod = sys.modules.get("test_boot_e2e")
    times = getattr(mod, "BOOT_MS", None)
    if not times:
        return
    terminalreporter.section("torcx boot cost (median guest boot, systemd-analyze)")
    for suite, t in sorted(times.items()):
        with_t, without = t.get("with torcx"), t.get("without torcx")
        if with_t is None or without is None:
            continue
        line = (f"{suite}: {without:.0f} ms without torcx, {with_t:.0f} ms with two addons "
                f"({with_t - without:+.0f} ms)")
        for part in ("generator", "torcx-apply.service"):
            if t.get(part) is not None:
                line += f"; {part} {t[part]:.0f} ms"
        terminalreporter.write_line(line)
