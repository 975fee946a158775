# SPDX-License-Identifier: Apache-2.0
"""Boot tests: print each suite's guest boot time with and without torcx at the end."""

from __future__ import annotations


def pytest_terminal_summary(terminalreporter):
    import sys

    mod = sys.modules.get("test_boot_e2e")
    times = getattr(mod, "BOOT_MS", None)
    if not times:
        return
    terminalreporter.section("torcx boot cost (systemd-analyze in the guest, userspace)")
    for suite, t in sorted(times.items()):
        with_t, without = t.get("with torcx"), t.get("without torcx")
        line = f"{suite}: with torcx {with_t} ms, without {without} ms"
        if with_t is not None and without is not None:
            line += f", cost {with_t - without:+.0f} ms"
        terminalreporter.write_line(line)
