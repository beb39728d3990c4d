"""`uinet-tap watch IFACE`: live capture, the engine, the live view or status lines.

Watch only listens: it opens a capture handle and never sends a frame."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from .engine import Engine
from .live import LiveCapture
from .live_view_data import SnapshotMaker


class Watch:
    def __init__(
        self,
        capture: LiveCapture,
        engine: Engine,
        tui: bool,
        status_interval: float = 5.0,
        duration: float | None = None,
        err: TextIO = sys.stderr,
        flush: Callable[[], None] = lambda: None,
    ) -> None:
        self.capture = capture
        self.engine = engine
        self.tui = tui
        self.status_interval = status_interval
        self.duration = duration
        self.err = err
        self.flush = flush
        self.maker = SnapshotMaker(engine)
        self.started = time.monotonic()
        self._last_status = self.started
        self._last_packets = 0
        self._last_expiry = 0.0

    def run(self) -> None:
        """Capture until q, SIGINT/SIGTERM (KeyboardInterrupt) or the duration ends."""
        view: Any = None
        if self.tui:
            from .tui import LiveView  # rich's live machinery only where a terminal is

            view = LiveView(title=self.capture.iface)
            view.start()
        else:
            print(f"uinet-tap watch: capturing on {self.capture.iface}: ready",
                  file=self.err, flush=True)  # fmt: skip
        try:
            self._loop(view)
        finally:
            if view is not None:
                view.stop()

    def _loop(self, view: Any) -> None:
        engine = self.engine
        while True:
            batch = self.capture.poll(0.05)
            if batch is not None:
                engine.feed_batch(batch)
            now = time.monotonic()
            if now - self._last_expiry >= 1.0:
                # Idle flows time out on the clock too, not only when packets move time on.
                self._last_expiry = now
                engine.expire(time.time())
                self.flush()
            if view is not None:
                view.update(self.maker.snapshot(self._drops()))
                if view.poll_keys():
                    return
            elif now - self._last_status >= self.status_interval:
                self._status(now)
            if self.duration is not None and now - self.started >= self.duration:
                return

    def _drops(self) -> tuple[int, int]:
        _recv, drop, ifdrop = self.capture.stats()
        return drop, ifdrop

    def _status(self, now: float) -> None:
        e = self.engine
        t = e.tracker
        packets = e.totals.packets
        rate = (packets - self._last_packets) / max(now - self._last_status, 1e-6)
        self._last_packets, self._last_status = packets, now
        drop, ifdrop = self._drops()
        errors = sum(e.inspection.inspector.errors.values()) if e.inspection else 0
        undecodable = e.decoder.undecodable
        not_tcp = sum(undecodable.get(k, 0) for k in ("non_tcp", "unsupported_ethertype"))
        print(
            f"uinet-tap watch {self.capture.iface}: {now - self.started:.0f}s "
            f"packets={packets} ({rate:.0f}/s) flows active={t.active} total={t.next_id} "
            f"drops kernel={drop} interface={ifdrop} "
            f"not-tcp={not_tcp} undecodable={sum(undecodable.values()) - not_tcp} "
            f"plugin-errors={errors}",
            file=self.err,
            flush=True,
        )

    def on_record(self, writer: Callable[[dict], None]) -> Callable[[dict], None]:
        """Records go to the writer and, as rows, to the view's list of ended flows."""

        def record(rec: dict) -> None:
            writer(rec)
            self.maker.closed_record(rec)

        return record
