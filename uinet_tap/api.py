"""In-process entry points: reconstruct frames without files or a terminal (tests, notebooks)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .engine import Engine, Options


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
    for item in frames:
        engine.feed(item[0], item[1], item[2] if len(item) > 2 else None)
    engine.finish()
    records.sort(key=lambda r: r["id"])
    return Result(records, engine.stats())
