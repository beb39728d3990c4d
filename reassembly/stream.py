"""One direction's byte stream: ordering, overlaps, gaps and memory caps.

The stream works in offsets (0 is the first byte after the SYN), never in sequence numbers:
the caller unwraps with :mod:`.seq`. It knows nothing about flows, packets or I/O; bytes leave
through a :class:`StreamSink`.

Model (after Suricata's IDS mode, with a first-wins fast path):

- ``nxt`` is the commit point: every byte before it was handed to the sink as data or as a gap
  and can never change again.
- Under a policy whose in-order bytes are final on arrival (``first``, ``windows``) in-order
  data is committed at once. Under ``last``, ``bsd`` and ``linux`` a later copy may still win,
  so data waits until the receiver ACKs it (then the receiver has it, and so do we), or until
  a cap or the end of the flow forces it.
- Bytes past ``nxt`` wait in ``segs``: sorted, non-overlapping ``[offset, bytes]`` pieces.
- Committed bytes not yet ACKed stay in ``tail`` so a retransmission with different bytes is
  seen as a conflict (the classic evasion), without holding anything the receiver confirmed.
- A hole the receiver has ACKed is capture loss: it becomes a gap once ACKs have passed it
  ``ACK_GRACE`` times (a mirror port may deliver the ACK just before the data it covers, see
  zeek/zeek#335), when a cap bites, or when the flow ends.
"""

from __future__ import annotations

from typing import Protocol

from .policy import OverlapPolicy
from .segments import merge

ACK_GRACE = 3
"""ACKs past a hole before it is declared a gap."""


class StreamSink(Protocol):
    def data(self, offset: int, data: bytes) -> None: ...

    def gap(self, offset: int, length: int) -> None: ...


class Budget:
    """Buffered bytes shared by all streams, checked against a global cap by the flow table."""

    __slots__ = ("used",)

    def __init__(self) -> None:
        self.used = 0


class ByteStream:
    __slots__ = (
        "sink",
        "policy",
        "final",
        "max_buffer",
        "retain",
        "budget",
        "nxt",
        "tail",
        "segs",
        "buffered",
        "acked",
        "hole_acks",
        "gaps",
        "gap_bytes",
        "acked_gaps",
        "retransmitted",
        "conflicts",
        "forced",
    )

    def __init__(
        self,
        sink: StreamSink,
        policy: OverlapPolicy = OverlapPolicy.FIRST,
        max_buffer: int = 4 << 20,
        budget: Budget | None = None,
        retain: int = 256 << 10,
    ) -> None:
        self.sink = sink
        self.policy = policy
        self.final = policy.final_on_arrival
        self.max_buffer = max_buffer
        self.retain = retain
        self.budget = budget if budget is not None else Budget()
        self.nxt = 0
        self.tail = bytearray()
        self.segs: list[list] = []  # [offset, bytes], sorted, non-overlapping
        self.buffered = 0
        self.acked = 0
        self.hole_acks = 0
        self.gaps: list[list[int]] = []
        self.gap_bytes = 0
        self.acked_gaps = 0  # gaps the receiver had acknowledged: capture loss, not our guess
        self.retransmitted = 0
        self.conflicts = 0
        self.forced = 0  # times a cap forced the stream past a hole

    # -- input ---------------------------------------------------------------------------------

    def add(self, off: int, data: bytes) -> int:
        """Take ``data`` at stream offset ``off``; return the number of conflicting overlaps."""
        conflicts_before = self.conflicts
        nxt = self.nxt
        end = off + len(data)
        if off < nxt:
            self._against_committed(off, data, min(end, nxt))
            if end <= nxt:
                return self.conflicts - conflicts_before
            data = data[nxt - off :]
            off = nxt
        if off == nxt and self.final and (not self.segs or self.segs[0][0] >= end):
            self._commit(data)  # in-order fast path
            if self.segs and self.segs[0][0] <= self.nxt:
                self._drain()
        else:
            self._insert(off, data)
            self._drain()
            if self.buffered > self.max_buffer:
                self.force(self.buffered - self.max_buffer)
        return self.conflicts - conflicts_before

    def ack(self, off: int) -> None:
        """The receiver acknowledged every byte before ``off``."""
        if off <= self.acked:
            return
        self.acked = off
        tail = self.tail
        if tail:
            drop = off - (self.nxt - len(tail))
            if drop > 0:
                del tail[:drop]
        if off > self.nxt:
            if not self.final and self.segs:
                self._drain()
            if off > self.nxt and (not self.segs or self.segs[0][0] > self.nxt):
                self.hole_acks += 1
                if self.hole_acks > ACK_GRACE:
                    self._skip_to(min(off, self.segs[0][0]) if self.segs else off)
                    self._drain()

    def force(self, nbytes: int) -> int:
        """Release at least ``nbytes`` of buffered data, jumping holes; return bytes released."""
        released = 0
        self.forced += 1
        while self.segs and released < nbytes:
            start = self.segs[0][0]
            if start > self.nxt:
                self._skip_to(start)
            before = self.buffered
            self._drain(force=True)
            released += before - self.buffered
        return released

    def flush(self, end_hint: int = 0) -> None:
        """End of the flow: commit everything buffered, holes as gaps, up to ``end_hint``."""
        while self.segs:
            start = self.segs[0][0]
            if start > self.nxt:
                self._skip_to(start)
            self._drain(force=True)
        if end_hint > self.nxt:
            self._skip_to(end_hint)
        self.tail = bytearray()

    # -- internals -----------------------------------------------------------------------------

    def _against_committed(self, off: int, data: bytes, stop: int) -> None:
        """Bytes ``[off, stop)`` were already committed: a retransmission, maybe conflicting."""
        self.retransmitted += stop - off
        tail = self.tail
        tail_start = self.nxt - len(tail)
        lo = max(off, tail_start)
        if lo < stop and tail[lo - tail_start : stop - tail_start] != data[lo - off : stop - off]:
            self.conflicts += 1

    def _commit(self, data: bytes) -> None:
        self.sink.data(self.nxt, data)
        self.nxt += len(data)
        self.hole_acks = 0
        if self.retain and self.acked < self.nxt:
            tail = self.tail
            if not tail and self.acked > self.nxt - len(data):
                data = data[self.acked - (self.nxt - len(data)) :]
            tail += data
            if len(tail) > self.retain:
                del tail[: len(tail) - self.retain]

    def _skip_to(self, off: int) -> None:
        """Declare ``[nxt, off)`` a gap: bytes the capture never held."""
        length = off - self.nxt
        if length <= 0:
            return
        self.sink.gap(self.nxt, length)
        gaps = self.gaps
        if gaps and gaps[-1][0] + gaps[-1][1] == self.nxt:
            gaps[-1][1] += length
        else:
            gaps.append([self.nxt, length])
        self.gap_bytes += length
        if self.acked > self.nxt:
            self.acked_gaps += 1
        self.nxt = off
        self.hole_acks = 0
        self.tail = bytearray()

    def _insert(self, s: int, data: bytes) -> None:
        res = merge(self.segs, s, data, self.policy)
        self.retransmitted += res.overlapped
        self.conflicts += res.conflicts
        self.buffered += res.added
        self.budget.used += res.added

    def _drain(self, force: bool = False) -> None:
        """Commit the buffered pieces that now continue the stream."""
        segs = self.segs
        limit = None if (self.final or force) else self.acked
        released = 0
        while segs and segs[0][0] <= self.nxt:
            a, d = segs[0]
            b = a + len(d)
            nxt = self.nxt
            if b <= nxt:  # wholly behind the commit point (a gap was declared over it)
                segs.pop(0)
                released += len(d)
                continue
            if limit is not None and limit <= nxt:
                break
            stop = b if limit is None else min(b, limit)
            self._commit(d[nxt - a : stop - a])
            if stop == b:
                segs.pop(0)
                released += len(d)
            else:
                segs[0] = [stop, d[stop - a :]]
                released += stop - a
        if released:
            self.buffered -= released
            self.budget.used -= released
