"""Diagnostics (``-v``, ``--log-level``): the standard ``logging`` module, logger ``uinet_tap``,
one line a record on stderr as ``debug: ...``. The default level is warning, and nothing is
logged at warning or above, so a run's output is unchanged unless asked for.

The live view owns the terminal: while it is open and stderr is that terminal, records are
held (at most ``HOLD``; beyond that the oldest are dropped and counted) and written when the
view closes. With stderr redirected (``2>FILE``) they are written as they come.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections import deque
from collections.abc import Callable, Iterator

from .plugins.guard import GUARD

log = logging.getLogger("uinet_tap")

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
HOLD = 10_000  # records held while the view is open


class _Stderr(logging.Handler):
    """To ``sys.stderr`` as it is when a record comes (tests swap it), or held."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(levelname_lower)s: %(message)s"))
        self.holding = 0  # views open over a terminal stderr
        self.held: deque[str] = deque(maxlen=HOLD)
        self.dropped = 0

    def format(self, record: logging.LogRecord) -> str:
        record.levelname_lower = record.levelname.lower()
        return super().format(record)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a bad format argument is our bug: never the run's end
            self.handleError(record)
            return
        if self.holding:
            if len(self.held) == HOLD:
                self.dropped += 1
            self.held.append(line)
            return
        self._write(line)

    @staticmethod
    def _write(line: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            print(line, file=sys.stderr, flush=True)

    def write_held(self) -> None:  # not release(): that is logging.Handler's lock
        if self.dropped:
            self._write(f"warning: {self.dropped:,} log lines dropped while the view was open "
                        f"(the last {HOLD:,} follow)")  # fmt: skip
        while self.held:
            self._write(self.held.popleft())
        self.dropped = 0


_handler = _Stderr()
log.addHandler(_handler)
log.propagate = False  # the root logger's configuration (a library's) is not ours
log.setLevel(logging.WARNING)


def set_level(level: int) -> None:
    log.setLevel(level)
    # A plugin failure's traceback is made only when it would be shown.
    GUARD.keep_traces = level <= logging.DEBUG


def debug_enabled() -> bool:
    return log.isEnabledFor(logging.DEBUG)


@contextlib.contextmanager
def held_while_view() -> Iterator[None]:
    """Around the live view: records held until it closes when stderr is its terminal."""
    try:
        hold = sys.stderr.isatty()
    except (AttributeError, ValueError):
        hold = False
    if not hold:
        yield
        return
    _handler.holding += 1
    try:
        yield
    finally:
        _handler.holding -= 1
        if not _handler.holding:
            _handler.write_held()


class _Forward(logging.Handler):
    def __init__(self, send: Callable[[int, str], None]) -> None:
        super().__init__()
        self.send = send

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.send(record.levelno, record.getMessage())


def forward_to(send: Callable[[int, str], None]) -> None:
    """In a watch worker process: records go to the parent (``send(level, message)``), which
    logs them under the view's rules; a worker never writes to the terminal itself."""
    log.removeHandler(_handler)
    log.addHandler(_Forward(send))
