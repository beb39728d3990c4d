"""In-process entry points: reconstruct frames without files or a terminal (tests, notebooks)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .engine import Engine, Options
from .pcapfile import Batch


def _batches(frames: Iterable[tuple[Any, ...]], linktype: int, size: int = 64) -> Iterable[Batch]:
    """Frames as driver batches; a batch with any snaplen-cut frame carries wire lengths."""
    pending: list[tuple[Any, ...]] = []

    def make() -> Batch:
        offsets, pos = [], 0
        for item in pending:
            offsets.append(pos)
            pos += len(item[1])
        cut = any(len(item) > 2 and item[2] is not None for item in pending)
        return Batch(
            b"".join(bytes(item[1]) for item in pending),
            [float(item[0]) for item in pending],
            offsets,
            [len(item[1]) for item in pending],
            linktype,
            [item[2] if len(item) > 2 and item[2] is not None else len(item[1]) for item in pending]
            if cut
            else None,
        )

    for item in frames:
        pending.append(item)
        if len(pending) >= size:
            yield make()
            pending = []
    if pending:
        yield make()


@dataclass(frozen=True, slots=True)
class Result:
    records: list[dict]
    stats: dict


def reconstruct(
    frames: Iterable[tuple[Any, ...]],
    linktype: int = 1,
    keep_streams: bool = False,
    **options: Any,
) -> Result:
    """Rebuild every TCP connection in ``frames``: ``(ts, frame)`` or ``(ts, frame, wirelen)``.

    Returns the flow records (the ``--flows`` JSON objects, sorted by id; with
    ``keep_streams`` each direction also holds ``data``, gap bytes as zeros) and the run stats.
    """
    records: list[dict] = []
    engine = Engine(linktype, Options.from_kwargs(**options), records.append, None, keep_streams)
    # Through feed_batch, as the CLI does, so the fast paths see the same frames.
    for batch in _batches(frames, linktype):
        engine.feed_batch(batch)
    engine.finish()
    records.sort(key=lambda r: r["id"])
    return Result(records, engine.stats())
