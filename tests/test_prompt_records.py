"""watch and inline write a closed connection's record within seconds of its last packet
(--timeout-closing 5) and remember its tuple for a minute, so a straggler after the record is
counted, never a second record; replay keeps capture-time semantics (60 s closing, stragglers
join the connection while it is tracked)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from frames import Conversation, frames  # noqa: E402
from uinet_tap.stack import fastpath  # noqa: E402

from uinet_tap.api import _batches  # noqa: E402
from uinet_tap.engine import Engine, Options  # noqa: E402

MODES = ["off", "c"] if fastpath.AVAILABLE else ["off"]


def run(mode: str, live: bool) -> tuple[list[tuple[float, dict]], dict]:
    """A download closed by FIN/FIN/ACK at t=1000.x, a retransmitted data segment of it 8 s
    later, and 20 s of another connection's traffic; the clock drives expiry as watch's does.
    Returns (capture time each record was written at, record) and the stats."""
    cv = Conversation(t0=1000.0)
    segs = cv.handshake()
    segs += [cv.c(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"), cv.ack("s")]
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    segs += [cv.s(reply), cv.ack("c"), cv.fin("s"), cv.fin("c"), cv.ack("s")]
    last = segs[-1].ts
    late = cv.data("s", b"hello", rel=len(reply) - 5, advance=False, at=last + 8)
    other = Conversation(cport=41000, t0=last + 0.5)
    busy = other.handshake()
    for k in range(40):
        busy.append(other.c(b"x", at=last + 0.5 + k * 0.5))
    opts = {"timeout_closing": 5.0, "closed_memory": 60.0} if live else {}
    written: list[tuple[float, dict]] = []
    now = [0.0]
    engine = Engine(1, Options(fastpath=mode, **opts), lambda r: written.append((now[0], r)))
    for seg in sorted([*segs, late, *busy], key=lambda s: s.ts):
        now[0] = seg.ts
        for batch in _batches(frames([seg]), 1):
            engine.feed_batch(batch)
        engine.expire(seg.ts)
    engine.finish()
    return written, engine.stats()


@pytest.mark.parametrize("mode", MODES)
def test_live_record_within_seconds_and_the_straggler_counted(mode: str):
    written, stats = run(mode, live=True)
    first = [(t, r) for t, r in written if r["client"].endswith(":40000")]
    assert len(first) == 1, [r["close"] for _, r in first]  # no second record
    at, rec = first[0]
    assert rec["close"] == "fin" and at - rec["end"] <= 6.0, (at, rec["end"])
    assert stats["stragglers"] == 1


@pytest.mark.parametrize("mode", MODES)
def test_replay_keeps_capture_time_semantics(mode: str):
    written, stats = run(mode, live=False)
    first = [r for _, r in written if r["client"].endswith(":40000")]
    assert len(first) == 1 and stats["stragglers"] == 0
    assert first[0]["s2c"]["retransmitted_bytes"] == 5  # the straggler joined it
