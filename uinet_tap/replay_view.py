"""`uinet-tap replay CAPTURE --tui`: the live view over a file, as fast as it reads or paced
at a multiple of capture time."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from .ended import KEEP_BYTES, KEEP_ENDED_REPLAY
from .engine import Engine
from .live_view_data import SnapshotMaker
from .pcapfile import Batch

CHUNK = 64  # frames fed between clock checks when paced


def _chunks(batch: Batch) -> Iterable[Batch]:
    for i in range(0, len(batch.lengths), CHUNK):
        j = i + CHUNK
        yield Batch(
            batch.data, batch.times[i:j], batch.offsets[i:j], batch.lengths[i:j],
            batch.linktype, batch.wirelens[i:j] if batch.wirelens is not None else None,
        )  # fmt: skip


class ViewEnd(Enum):
    """How a replay under the view ended."""

    END_OF_FILE = "end of file"  # read to the end, then q: the normal end
    QUIT = "quit"  # q before the end of the file
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM, before the end or after it


@dataclass(frozen=True, slots=True)
class ViewRun:
    """``read``: seconds spent reading the file (from the start to its end, to q or to
    Ctrl-C, less the waits that pace it at ``--speed`` and the time paused with p), what
    packets/s is measured on; ``view``: seconds the view was open in all, the pauses and the
    user's time after the end included."""

    end: ViewEnd
    read: float
    view: float


def replay_with_view(
    engine: Engine,
    batches: Iterable[Batch],
    title: str,
    speed: float,
    keep_ended: int = KEEP_ENDED_REPLAY,
    keep_bytes: int = KEEP_BYTES,
) -> ViewRun:
    """Feed the file through the engine under the live view; after the end of the file the
    view stays (every flow listed, as ended, up to ``keep_ended``; its clock is capture time)
    until q. Returns early on q, and on Ctrl-C or SIGTERM
    (KeyboardInterrupt) with the terminal restored."""
    from .tui import LiveView

    maker = SnapshotMaker(engine, keep_ended=keep_ended, keep_bytes=keep_bytes)
    record = engine.on_record

    def on_record(rec: dict) -> None:
        if record is not None:
            record(rec)
        maker.closed_record(rec)

    engine.on_record = on_record
    engine.on_line = None  # the view reads every record's object
    first_ts: float | None = None
    wall0 = time.monotonic()
    paced = 0.0  # seconds slept to keep to --speed: not reading
    paused = 0.0  # seconds held by p before the end of the file: the user's, not reading
    pause_began: float | None = None  # when the pause under way began
    read_end: float | None = None  # when the end of the file was reached

    def hold(view: LiveView) -> bool:
        """While p holds the view, read nothing (the replay is paused, pacing too) and keep
        the keys alive; True on q."""
        nonlocal paused, pause_began
        while view.paused:
            if pause_began is None:
                pause_began = time.monotonic()
            if view.poll_keys():
                return True
            if view.paused:
                time.sleep(0.05)
        if pause_began is not None:
            paused += time.monotonic() - pause_began
            pause_began = None
        return False

    def run(view: LiveView) -> ViewEnd:
        nonlocal first_ts, paced, read_end
        for batch in batches:
            for chunk in _chunks(batch) if speed > 0 else (batch,):
                if hold(view):
                    return ViewEnd.QUIT
                if speed > 0 and len(chunk.times):
                    ts = float(chunk.times[0])
                    if first_ts is None:
                        first_ts = ts
                    # the file's clock stands still while paused: wall time less the pauses
                    delay = (ts - first_ts) / speed - (time.monotonic() - wall0 - paused)
                    while delay > 0:  # keep the view and keys alive while waiting
                        if view.poll_keys() or hold(view):
                            return ViewEnd.QUIT
                        if view.due():  # what was read so far, shown while pacing waits
                            view.update(maker.snapshot())
                        slept = time.monotonic()
                        time.sleep(min(delay, 0.05))
                        paced += time.monotonic() - slept
                        delay = (ts - first_ts) / speed - (time.monotonic() - wall0 - paused)
                engine.feed_batch(chunk)
                if view.due():
                    view.update(maker.snapshot())
                if view.poll_keys():
                    return ViewEnd.QUIT
        engine.finish()
        read_end = time.monotonic()
        view.update(maker.snapshot(), force=True)
        while not view.poll_keys():
            time.sleep(0.05)
        return ViewEnd.END_OF_FILE

    with LiveView(title=title) as view:
        try:
            end = run(view)
        except KeyboardInterrupt:
            end = ViewEnd.INTERRUPTED
    now = time.monotonic()
    if pause_began is not None:  # q or Ctrl-C while paused
        paused += now - pause_began
    read = (read_end if read_end is not None else now) - wall0 - paced - paused
    return ViewRun(end, max(read, 0.0), now - wall0)
