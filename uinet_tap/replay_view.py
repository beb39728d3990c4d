"""`uinet-tap replay CAPTURE --tui`: the live view over a file, as fast as it reads or paced
at a multiple of capture time."""

from __future__ import annotations

import time
from collections.abc import Iterable

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


def replay_with_view(
    engine: Engine,
    batches: Iterable[Batch],
    title: str,
    speed: float,
    keep_ended: int = KEEP_ENDED_REPLAY,
    keep_bytes: int = KEEP_BYTES,
) -> None:
    """Feed the file through the engine under the live view; after the end of the file the
    view stays (every flow listed, as ended, up to ``keep_ended``) until q. Returns early on
    q. The view's clock is capture time."""
    from .tui import LiveView

    maker = SnapshotMaker(engine, keep_ended=keep_ended, keep_bytes=keep_bytes)
    record = engine.on_record

    def on_record(rec: dict) -> None:
        if record is not None:
            record(rec)
        maker.closed_record(rec)

    engine.on_record = on_record
    first_ts: float | None = None
    wall0 = time.monotonic()
    with LiveView(title=title) as view:
        for batch in batches:
            for chunk in _chunks(batch) if speed > 0 else (batch,):
                if speed > 0 and len(chunk.times):
                    ts = float(chunk.times[0])
                    if first_ts is None:
                        first_ts = ts
                    delay = (ts - first_ts) / speed - (time.monotonic() - wall0)
                    while delay > 0:  # keep the view and keys alive while waiting
                        if view.poll_keys():
                            return
                        time.sleep(min(delay, 0.05))
                        delay = (ts - first_ts) / speed - (time.monotonic() - wall0)
                engine.feed_batch(chunk)
                if view.due():
                    view.update(maker.snapshot())
                if view.poll_keys():
                    return
        engine.finish()
        view.update(maker.snapshot(), force=True)
        while not view.poll_keys():
            time.sleep(0.05)
