# SPDX-License-Identifier: Apache-2.0
"""A tiny leveled logger to stderr (the logging module costs start-up time at boot).

As ``torcx-generator`` each line carries a systemd priority prefix (``<3>`` for
errors ... ``<7>`` for debug, see sd-daemon(3)) so the journal files it at the
right level; as ``torcx`` lines read ``torcx: warning: ...``.
"""

from __future__ import annotations

import sys

# syslog priorities, as sd-daemon(3) prefixes use them
ERROR, WARNING, NOTICE, INFO, DEBUG = 3, 4, 5, 6, 7

LEVELS = {
    "error": ERROR,
    "warn": WARNING,
    "warning": WARNING,
    "notice": NOTICE,
    "info": INFO,
    "debug": DEBUG,
}
_NAMES = {ERROR: "error", WARNING: "warning", NOTICE: "notice", INFO: "info", DEBUG: "debug"}


def parse_level(text: str) -> int:
    """A level name (debug, info, notice, warn[ing], error) or a syslog number 3-7."""
    value = text.strip().lower()
    if value in LEVELS:
        return LEVELS[value]
    if value.isdigit() and ERROR <= int(value) <= DEBUG:
        return int(value)
    raise ValueError(f"unknown log level {text!r} (debug, info, notice, warning, error)")


class Logger:
    """Writes lines at or above ``level`` (lower number = more severe) to ``stream``."""

    __slots__ = ("level", "stream", "prefix", "priority_prefix")

    def __init__(self, level: int = INFO, *, stream=None, prefix: str = "torcx",
                 priority_prefix: bool = False):
        self.level = level
        self.stream = stream
        self.prefix = prefix
        self.priority_prefix = priority_prefix

    def enabled(self, priority: int) -> bool:
        return priority <= self.level

    def log(self, priority: int, message: str) -> None:
        if priority > self.level:
            return
        stream = self.stream if self.stream is not None else sys.stderr
        if self.priority_prefix:
            line = f"<{priority}>{self.prefix}: {message}\n"
        elif priority <= WARNING:
            line = f"{self.prefix}: {_NAMES[priority]}: {message}\n"
        else:
            line = f"{self.prefix}: {message}\n"
        try:
            stream.write(line)
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken stderr must not turn a log line into a failure

    def debug(self, message: str) -> None:
        self.log(DEBUG, message)

    def info(self, message: str) -> None:
        self.log(INFO, message)

    def notice(self, message: str) -> None:
        self.log(NOTICE, message)

    def warning(self, message: str) -> None:
        self.log(WARNING, message)

    def error(self, message: str) -> None:
        self.log(ERROR, message)


class NullLogger(Logger):
    """Drops everything (default for library calls without a logger)."""

    __slots__ = ()

    def __init__(self):
        super().__init__(level=0)

    def log(self, priority: int, message: str) -> None:
        return None


NULL = NullLogger()
