"""Progress for long-running verbs: one status line on stderr.

On a terminal the line is rewritten in place (carriage return) at most every
``tty_interval`` seconds; otherwise (a log, a pipe, CI) a full line is written at
most every ``interval`` seconds, so a long run neither floods a log nor stays
silent. :meth:`StatusLine.done` ends an in-place line before other output.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import IO


class StatusLine:
    """A throttled, single updating status line on ``stream`` (default: sys.stderr at each write)."""

    def __init__(self, prefix: str, *, quiet: bool = False, interval: float = 5.0, tty_interval: float = 0.25,
                 stream: IO[str] | None = None, first_after: float = 0.0) -> None:
        self.prefix = prefix
        self.quiet = quiet
        self._stream = stream
        self.tty = self._isatty()
        self.interval = tty_interval if self.tty else interval
        self._began = time.monotonic()
        self._last = self._began - self.interval + first_after
        self._width = 0

    def _out(self) -> IO[str]:
        return self._stream if self._stream is not None else sys.stderr

    def _isatty(self) -> bool:
        try:
            return bool(self._out().isatty())
        except (AttributeError, ValueError):
            return False

    def elapsed(self) -> float:
        """Seconds since the status line was made."""
        return time.monotonic() - self._began

    def update(self, text: str, force: bool = False) -> bool:
        """Show ``text`` if the interval has passed (or ``force``); True if it was shown."""
        if self.quiet:
            return False
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return False
        self._last = now
        line = f"{self.prefix}{text}"
        out = self._out()
        if self.tty:
            pad = max(0, self._width - len(line))
            out.write("\r" + line + " " * pad)
            self._width = len(line)
        else:
            out.write(line + "\n")
        out.flush()
        return True

    def done(self, text: str | None = None) -> None:
        """End the status line (on a terminal), optionally with a final ``text`` line."""
        if self.quiet:
            return
        out = self._out()
        if self.tty and self._width:
            out.write("\r" + " " * self._width + "\r")
            self._width = 0
        if text is not None:
            out.write(f"{self.prefix}{text}\n")
        out.flush()


def human_bytes(n: float) -> str:
    """``n`` bytes as a short human-readable size (KiB, MiB, GiB)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - the loop always returns


def reading(lines: Iterator[bytes], status: StatusLine, total: int | None, what: str) -> Iterator[bytes]:
    """Pass ``lines`` through, showing on ``status`` how much of ``what`` (``total`` bytes, if known) is read."""
    done = 0
    for count, line in enumerate(lines, 1):
        done += len(line)
        if count % 4096 == 0:
            share = f" of {human_bytes(total)} ({100 * done / total:.0f}%)" if total else ""
            status.update(f"reading {what}: {count:,} lines, {human_bytes(done)}{share}")
        yield line
