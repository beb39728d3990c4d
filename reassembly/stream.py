"""One direction's byte stream as the receiving application reads it: ordering, overlaps,
tentative bytes, urgent data, gaps and memory caps.

The stream works in offsets (0 is the first byte after the SYN), never in sequence numbers: the
caller unwraps with :mod:`.seq` and decides what is acceptable at all (the window, the ACK, PAWS,
a RST: ``stack/tracker.py``). It knows nothing about flows, packets or I/O; bytes leave through a
:class:`StreamSink`, at *delivered* offsets: the stream's own, less the urgent bytes a receiver
took out of band before them.

Model:

- ``nxt`` is the commit point: every byte before it was handed to the sink as data or as a gap
  and can never change again. Under every receiver policy (and ``first``) bytes that continue
  the stream are committed on arrival, as a receiver's application reads them; under ``last``
  they wait until the receiver ACKs them (then it has them, and so do we).
- Bytes past ``nxt`` wait in the policy's out-of-order store (:mod:`.store`), which decides what a
  new copy of held bytes does.
- *Tentative* bytes are bytes the receiver may not have taken: data beyond the window it last
  advertised, or data on a SYN before the SYN-ACK says. They wait apart, and become part of the
  stream only where the receiver's ACK covers them and no acceptable copy arrived meanwhile;
  otherwise they are discarded (the caller counts them as an anomaly).
- The urgent byte (RFC 6093 §3.1: the byte before the one the urgent pointer names, as BSD and
  Linux read it) is taken out of band under the receiver policies: the application never reads
  it, so neither does the sink. Only the latest urgent pointer counts (Linux ``tcp_check_urg``).
- Committed bytes not yet ACKed stay in ``tail`` so a retransmission with different bytes is seen
  as a conflict (the classic evasion), without holding anything the receiver confirmed.
- A hole the receiver has ACKed is capture loss: it becomes a gap once ACKs have passed it
  ``ACK_GRACE`` times (a mirror port may deliver the ACK just before the data it covers, see
  zeek/zeek#335), when a cap bites, or when the flow ends.

Memory: held bytes are charged with a per-piece cost (:data:`PIECE_COST`), so the byte caps bound
real memory even for one-byte segments; the number of pieces is capped too. Over a cap the
oldest hole becomes a gap (the data past it is committed); every bite is counted in ``limits``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

from .policy import OverlapPolicy
from .store import LinuxStore, RunStore, _Store, make_store

ACK_GRACE = 3
"""ACKs past a hole before it is declared a gap."""
PIECE_COST = 96
CHARGES_PER_FRAME = 1024  # ByteStream.charged_at: frame * this + the charge within the frame
"""Bytes of Python objects per held piece (list slots, a bytearray's header, its offset): what
a held piece costs beyond its bytes, charged against the caps."""
MAX_GAPS_LISTED = 1024
"""Gaps listed per direction in a record; the rest are counted (gap_count, gap_bytes)."""
MAX_PIECES = 4096
"""Out-of-order pieces held per direction (Snort's ``queue_limit`` counts segments too)."""
MAX_HASHED_GAP = 64 << 20
"""Gap bytes per direction hashed as zeros. Past it the direction's hash is given up
(``gap_not_hashed``): a few forged sequence numbers must not buy seconds of hashing."""


class StreamSink(Protocol):
    def data(self, offset: int, data: bytes) -> None: ...

    def gap(self, offset: int, length: int, hashed: bool = True) -> None: ...


class Budget:
    """Held bytes of all streams against the global cap: the total charge, the streams holding
    any (stalest first, so the cap is enforced by forcing the front, O(1) amortised), and the
    bytes retained for conflict checks (``tail``), under a cap of their own."""

    __slots__ = (
        "used", "holders", "retained", "c_retained", "retain_cap", "c_used", "frame", "tick",
        "unsorted",
    )  # fmt: skip

    def __init__(self, retain_cap: int = 1 << 62) -> None:
        self.used = 0
        self.holders: OrderedDict[ByteStream, None] = OrderedDict()
        self.retained = 0
        self.c_retained = 0  # what the C fast path retains for the connections it carries
        self.retain_cap = retain_cap
        self.c_used = 0  # what the C fast path holds out of order (bytes and piece cost)
        # When each holder was last charged (ByteStream.charged_at): the frame the tracker is
        # at and the charges within it, so streams the C fast path held (and charged by its
        # own count) can take their place among the others when they come back.
        self.frame = 0
        self.tick = 0
        self.unsorted = False  # a stream came back from C: holders not in charge order

    def charge_stamp(self) -> int:
        self.tick += 1
        return self.frame * CHARGES_PER_FRAME + min(self.tick, CHARGES_PER_FRAME - 1)

    def enforce(self, cap: int) -> int:
        """Force the stalest holders past their holes until the total is within ``cap``;
        returns how many streams were forced."""
        forced = 0
        if self.unsorted:
            self.holders = OrderedDict.fromkeys(sorted(self.holders, key=_charged_at))
            self.unsorted = False
        holders = self.holders
        while self.used > cap and holders:
            stream = next(iter(holders))
            stream.release("max_buffer")
            forced += 1
        return forced


class ByteStream:
    __slots__ = (
        "sink",
        "policy",
        "final",
        "oob",
        "max_buffer",
        "max_pieces",
        "retain",
        "budget",
        "nxt",
        "removed",
        "urg",
        "tail",
        "store",
        "tentative",
        "cost",
        "acked",
        "hole_acks",
        "gaps",
        "gap_bytes",
        "gap_count",
        "gap_end",
        "acked_gaps",
        "retransmitted",
        "conflicts",
        "urgent",
        "urgent_ambiguous",
        "discarded",
        "charged_at",
        "accepted_end",
        "limits",
    )

    def __init__(
        self,
        sink: StreamSink,
        policy: OverlapPolicy = OverlapPolicy.LINUX,
        max_buffer: int = 4 << 20,
        budget: Budget | None = None,
        retain: int = 256 << 10,
        max_pieces: int = MAX_PIECES,
    ) -> None:
        self.sink = sink
        self.policy = policy
        self.final = policy.final_on_arrival
        self.oob = policy.urgent_out_of_band
        self.max_buffer = max_buffer
        self.max_pieces = max_pieces
        self.retain = retain
        self.budget = budget if budget is not None else Budget()
        self.nxt = 0
        self.removed = 0  # urgent bytes taken out of band before nxt
        self.urg = -1  # offset of the pending urgent byte, -1 if none
        self.tail = bytearray()
        self.store: _Store | LinuxStore = make_store(policy)
        self.tentative = RunStore(keep_old=True)
        self.cost = 0  # this stream's charge against the budget
        self.acked = 0
        self.hole_acks = 0
        self.gaps: list[list[int]] = []  # [delivered offset, length]
        self.gap_bytes = 0
        self.gap_count = 0  # gaps, also those past the listed ones
        self.gap_end = -1  # where the last gap ended (delivered offset)
        self.acked_gaps = 0  # gaps the receiver had acknowledged: capture loss, not our guess
        self.retransmitted = 0
        self.conflicts = 0
        self.urgent = 0  # urgent bytes taken out of band
        # Urgent pointers that came after an urgent byte was taken out of band: whether the
        # application had read past that byte (else the new pointer puts it back in band,
        # tcp_check_urg) is timing no segment shows. Read as data arrives, it had.
        self.urgent_ambiguous = 0
        self.discarded = 0  # tentative bytes discarded: the receiver never took them
        self.accepted_end = 0  # one past the last tentative byte the receiver took
        self.limits: dict[str, int] | None = None  # limits that bit: kind -> times
        self.charged_at = 0  # Budget.charge_stamp() of the last charge while holding bytes

    # -- what the record reports ---------------------------------------------------------------

    @property
    def delivered(self) -> int:
        """Bytes the application read so far, gaps included."""
        return self.nxt - self.removed

    @property
    def buffered(self) -> int:
        """Bytes held out of order or tentatively."""
        return self.store.held + self.tentative.held

    @property
    def tentative_end(self) -> int:
        """One past the last tentative byte (0 when there is none)."""
        t = self.tentative
        return t.starts[-1] + len(t.data[-1]) if t.starts else 0

    @property
    def plain(self) -> bool:
        """Nothing held, no hole pending, no urgent byte taken or pending: the stream is its
        sequence space from nxt on (what the fast paths require)."""
        return (
            not self.store.pieces
            and not self.tentative.starts
            and not self.hole_acks
            and self.acked <= self.nxt
            and self.urg < 0
            and not self.removed
        )

    # -- input ---------------------------------------------------------------------------------

    def add(self, off: int, data: bytes) -> int:
        """Take acceptable ``data`` at stream offset ``off``; return the number of conflicting
        overlaps."""
        conflicts_before = self.conflicts
        nxt = self.nxt
        rest = self._past_committed(off, data)
        if rest is None:
            return self.conflicts - conflicts_before
        off, data = rest
        end = off + len(data)
        store = self.store
        if self.tentative.starts:
            self.retransmitted += self.tentative.covered(off, end)  # seen before, tentatively
        first = store.first_start() if store.pieces else None
        if off == nxt and self.final and (first is None or first >= end):
            self._commit(data)  # in-order fast path
            if first is not None and first <= self.nxt:
                self._drain()
        else:
            res = store.insert(off, data)
            self.retransmitted += res.overlapped
            self.conflicts += res.conflicts
            first = store.first_start()
            if first is not None and (self.final or first <= self.acked):
                self._drain()
        if self.tentative.starts and self.tentative.starts[0] < self.nxt:
            self.tentative.discard_before(self.nxt)  # an acceptable copy came first
        self._charge()
        return self.conflicts - conflicts_before

    def add_tentative(self, off: int, data: bytes) -> int:
        """Bytes the receiver may not have taken (beyond its window, on a SYN, on an ACK of
        data never seen): held apart until its ACK covers them. Returns the number of
        conflicting overlaps with copies seen before."""
        conflicts_before = self.conflicts
        rest = self._past_committed(off, data)
        if rest is None:
            return self.conflicts - conflicts_before
        off, data = rest
        end = off + len(data)
        if self.store.pieces:
            self.retransmitted += self.store.covered(off, end)
        res = self.tentative.insert(off, data)
        self.retransmitted += res.overlapped
        self.conflicts += res.conflicts
        self._charge()
        return self.conflicts - conflicts_before

    def confirm_tentative(self, off: int, data: bytes) -> int:
        """Tentative ``data`` at ``off`` turned out acceptable when it came (the evidence came
        later): it takes its place among the other copies as if accepted then. Returns the
        number of conflicting overlaps."""
        tent = self.tentative
        end = off + len(data)
        held = [(lo, hi) for lo, hi in _complement(tent.uncovered(off, end), off, end)]
        conflicts = 0
        for lo, hi in held:  # only what is still tentative: the rest was settled meanwhile
            tent.remove_range(lo, hi)
            conflicts += self.add(lo, data[lo - off : hi - off])
        return conflicts

    def flush_tentative(self) -> None:
        """The receiver said it did not take the tentative bytes (a SYN-ACK that acknowledges
        the SYN but not its data): they go, counted by the caller."""
        if self.tentative.held:
            self.tentative.clear()
            self._charge()

    def accept_tentative(self) -> None:
        """Take every tentative byte as received (where no acceptable copy holds it)."""
        if self.tentative.held:
            self._accept_tentative(1 << 62)
            self._charge()

    def set_urgent(self, off: int) -> None:
        """An acceptable segment's urgent pointer names the byte at ``off`` (RFC 6093 §3.1, the
        BSD reading Linux keeps: one before SEG.SEQ + SEG.UP). Linux ``tcp_check_urg``: ignored
        if that byte was already received, or if it does not lie after the pending one; else it
        replaces the pending one (whose byte, if not yet read, stays in band)."""
        if not self.oob or off < self.nxt or off <= self.urg:
            return
        if self.urgent:
            self.urgent_ambiguous += 1
        self.urg = off

    def ack(self, off: int) -> None:
        """The receiver acknowledged every byte before ``off``."""
        if off <= self.acked:
            return
        self.acked = off
        tail = self.tail
        if tail:
            drop = off - (self.nxt - len(tail))
            if drop > 0:
                drop = min(drop, len(tail))
                del tail[:drop]
                self.budget.retained -= drop
        if self.tentative.starts and self.tentative.starts[0] < off:
            self._accept_tentative(off)
        if off > self.nxt:
            store = self.store
            first = store.first_start()
            if first is not None and (not self.final or first <= self.nxt):
                self._drain()
                first = store.first_start()
            if off > self.nxt and (first is None or first > self.nxt):
                self.hole_acks += 1
                if self.hole_acks > ACK_GRACE:
                    self._skip_to(off if first is None else min(off, first))
                    self._drain(force=True)
        self._charge()

    def release(self, reason: str) -> None:
        """A cap bit: discard the tentative bytes and commit everything held, holes as gaps."""
        self._limit(reason)
        if self.tentative.held:
            self.discarded += self.tentative.held
            self.tentative.clear()
        self._commit_all()
        self._charge()

    def flush(self, end_hint: int = 0) -> None:
        """End of the flow: commit everything held, holes as gaps, up to ``end_hint``;
        tentative bytes nobody acknowledged are discarded."""
        if self.tentative.held:
            self.discarded += self.tentative.held
            self.tentative.clear()
        self._commit_all()
        if end_hint > self.nxt:
            self._skip_to(end_hint)
        if self.tail:
            self.budget.retained -= len(self.tail)
            self.tail = bytearray()
        self._charge()

    # -- internals -----------------------------------------------------------------------------

    def _limit(self, kind: str) -> None:
        self.count_limit(kind, 1)

    def count_limit(self, kind: str, n: int) -> None:
        """A limit bit ``n`` times (the C fast path reports its own this way)."""
        limits = self.limits
        if limits is None:
            limits = self.limits = {}
        limits[kind] = limits.get(kind, 0) + n

    def _charge(self) -> None:
        """Bring this stream's charge against the budget up to date; enforce the per-direction
        caps (bytes with their per-piece cost, and pieces)."""
        store, tent = self.store, self.tentative
        pieces = store.pieces + len(tent.starts)
        cost = store.held + tent.held + PIECE_COST * pieces
        if cost > self.max_buffer or pieces > self.max_pieces:
            self._relieve("max_pieces" if pieces > self.max_pieces else "max_flow_buffer")
            cost = store.held + tent.held + PIECE_COST * (store.pieces + len(tent.starts))
        budget = self.budget
        budget.used += cost - self.cost
        if cost:
            self.charged_at = budget.charge_stamp()
            holders = budget.holders
            if self.cost:
                holders.move_to_end(self)
            else:
                holders[self] = None
        elif self.cost:
            del budget.holders[self]
        self.cost = cost

    def _relieve(self, kind: str) -> None:
        """Over a per-direction cap: tentative bytes go first (the least trusted), then the
        oldest holes become gaps until the stream is back under half its caps."""
        self._limit(kind)
        store, tent = self.store, self.tentative
        if tent.held:
            self.discarded += tent.held
            tent.clear()
        while store.pieces and (
            store.held + PIECE_COST * store.pieces > self.max_buffer // 2
            or store.pieces > self.max_pieces // 2
        ):
            self._commit_next()

    def _accept_tentative(self, off: int) -> None:
        """The receiver's ACK passed tentative bytes: it took them. Fill what no acceptable
        copy holds (those copies arrived in the window, so they win)."""
        tent = self.tentative
        accepted: list[tuple[int, bytes]] = []
        while tent.starts and tent.starts[0] < off:
            a = tent.starts[0]
            d = tent.data[0]
            b = min(a + len(d), off)
            accepted.append((a, bytes(d[: b - a])))
            self.accepted_end = max(self.accepted_end, b)
            tent.discard_before(b)
        store = self.store
        for start, piece in accepted:
            if start + len(piece) <= self.nxt:
                continue
            if start < self.nxt:
                piece = piece[self.nxt - start :]
                start = self.nxt
            for lo, hi in store.uncovered(start, start + len(piece)):
                store.insert(lo, piece[lo - start : hi - start])
        first = store.first_start()
        if first is not None and first <= self.nxt:
            self._drain()

    def _past_committed(self, off: int, data: bytes) -> tuple[int, bytes] | None:
        """The part of ``data`` at ``off`` not committed yet (None: all of it was); the
        committed part is counted as a retransmission, maybe conflicting."""
        nxt = self.nxt
        if off >= nxt:
            return off, data
        end = off + len(data)
        self._against_committed(off, data, min(end, nxt))
        if end <= nxt:
            return None
        return nxt, data[nxt - off :]

    def _against_committed(self, off: int, data: bytes, stop: int) -> None:
        """Bytes ``[off, stop)`` were already committed: a retransmission, maybe conflicting."""
        self.retransmitted += stop - off
        tail = self.tail
        tail_start = self.nxt - len(tail)
        lo = max(off, tail_start)
        if lo < stop and tail[lo - tail_start : stop - tail_start] != data[lo - off : stop - off]:
            self.conflicts += 1

    def _commit(self, data: bytes) -> None:
        nxt = self.nxt
        n = len(data)
        urg = self.urg
        if nxt <= urg < nxt + n:
            # The urgent byte is read out of band: the sink gets what is around it.
            k = urg - nxt
            if k:
                self.sink.data(nxt - self.removed, data[:k])
            self.removed += 1
            self.urgent += 1
            self.urg = -1
            if k + 1 < n:
                self.sink.data(nxt + k + 1 - self.removed, data[k + 1 :])
        else:
            self.sink.data(nxt - self.removed, data)
        self.nxt = nxt + n
        self.hole_acks = 0
        if self.retain and self.acked < self.nxt:
            tail = self.tail
            if not tail and self.acked > nxt:
                data = data[self.acked - nxt :]
            budget = self.budget
            if budget.retained + budget.c_retained + len(data) > budget.retain_cap:
                # Retained bytes over their global cap: this stream stops checking its
                # unacknowledged bytes for conflicts until the receiver catches up.
                if tail:
                    budget.retained -= len(tail)
                    self.tail = bytearray()
                self._limit("retain")
                return
            tail += data
            budget.retained += len(data)
            if len(tail) > self.retain:
                drop = len(tail) - self.retain
                del tail[:drop]
                budget.retained -= drop

    def _skip_to(self, off: int) -> None:
        """Declare ``[nxt, off)`` a gap: bytes the capture never held."""
        length = off - self.nxt
        if length <= 0:
            return
        start = self.nxt - self.removed
        if self.nxt <= self.urg < off:
            # The urgent byte was lost with the rest: the application read one byte less.
            self.removed += 1
            self.urgent += 1
            self.urg = -1
            length -= 1
        if length:
            hashed = self.gap_bytes + length <= MAX_HASHED_GAP
            if not hashed and self.gap_bytes <= MAX_HASHED_GAP:
                self._limit("gap_not_hashed")
            self.sink.gap(start, length, hashed)
            gaps = self.gaps
            if self.gap_end == start and self.gap_count:
                if gaps and gaps[-1][0] + gaps[-1][1] == start:
                    gaps[-1][1] += length  # it continues the last gap listed
            else:
                self.gap_count += 1
                if len(gaps) < MAX_GAPS_LISTED:
                    gaps.append([start, length])
                else:
                    self._limit("max_gaps_listed")  # still in gap_count and gap_bytes
            self.gap_end = start + length
            self.gap_bytes += length
            if self.acked > self.nxt:
                self.acked_gaps += 1
        self.nxt = off
        self.hole_acks = 0
        if self.tail:
            self.budget.retained -= len(self.tail)
            self.tail = bytearray()
        self.store.discard_before(off)
        if self.tentative.starts:
            self.tentative.discard_before(off)

    def _commit_next(self) -> None:
        """Commit up to the end of the first held run, its hole (if any) as a gap."""
        start = self.store.first_start()
        if start is not None and start > self.nxt:
            self._skip_to(start)
        self._drain(force=True)

    def _commit_all(self) -> None:
        while self.store.pieces:
            self._commit_next()

    def _drain(self, force: bool = False) -> None:
        """Commit the held pieces that now continue the stream."""
        limit = None if (self.final or force) else self.acked
        if limit is not None and limit <= self.nxt:
            return
        for chunk in self.store.take(self.nxt, limit):
            self._commit(chunk)


def _charged_at(stream: ByteStream) -> int:
    return stream.charged_at


def _complement(gaps: list[tuple[int, int]], s: int, e: int) -> list[tuple[int, int]]:
    """The parts of [s, e) outside ``gaps`` (sorted, disjoint, within [s, e))."""
    out = []
    cur = s
    for lo, hi in gaps:
        if lo > cur:
            out.append((cur, lo))
        cur = hi
    if cur < e:
        out.append((cur, e))
    return out
