"""The active endpoint's out-of-order store: peer bytes above RCV.NXT waiting for a hole.

The peer decides what arrives, so every copy, overlap and hole it sends must cost a bounded
amount of work and memory:

- bytes already held are never held twice: a copy of them is dropped (counted as a
  duplicate), and a segment that overlaps what is held keeps only its new bytes (the first
  copy wins, as Linux trims a new out-of-order segment against its queue);
- held ranges that touch are merged, so the store is a sorted list of disjoint, non-adjacent
  ranges; at most ``max_pieces`` of them. A segment that would open one more is dropped, the
  newest as a receiver may drop any out-of-order data it has not acknowledged: what is held
  was already reported in SACK blocks and must not be reneged on (RFC 2018 §8);
- the bytes live in one buffer spanning RCV.NXT to the highest held byte, so an arrival
  copies only its own new bytes, and the caller bounds that span by its receive window;
- an arrival costs two binary searches and work in the number of ranges it touches (a list
  splice at most), never a re-sort, and the held byte count is kept as it changes.

Positions are the caller's offsets from RCV.NXT; inside, ranges are kept in unbounded
absolute offsets (``base`` is RCV.NXT's), so moving RCV.NXT renumbers nothing.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from enum import StrEnum

MAX_PIECES = 256  # disjoint held ranges; far more holes than SACK can report (RFC 2018 §3)
RECENT = 4  # arrivals remembered for SACK order: the most blocks an option holds


class Arrival(StrEnum):
    """What became of an out-of-order segment."""

    HELD = "held"  # some of its bytes were new and are now held
    DUPLICATE = "duplicate"  # every byte was already held
    DROPPED = "dropped"  # it would have opened one range more than the cap


class OutOfOrderStore:
    def __init__(self, max_pieces: int = MAX_PIECES) -> None:
        if max_pieces < 1:
            raise ValueError("max_pieces must be at least 1")
        self.max_pieces = max_pieces
        self.base = 0  # absolute offset of RCV.NXT
        self.held = 0  # bytes held, kept as ranges change
        self._starts: list[int] = []  # absolute, sorted; ranges are disjoint and not adjacent
        self._ends: list[int] = []  # so these are sorted too
        self._buf = bytearray()  # bytes from base to the last range's end (holes are zeros)
        self._recent: list[int] = []  # absolute offsets of recent arrivals, newest first

    def __len__(self) -> int:
        """The number of disjoint ranges held."""
        return len(self._starts)

    def ranges(self) -> list[tuple[int, int]]:
        """Held ranges as (start, end) offsets from RCV.NXT, in order."""
        pairs = zip(self._starts, self._ends, strict=True)
        return [(s - self.base, e - self.base) for s, e in pairs]

    def add(self, off: int, data: bytes) -> Arrival:
        """Hold ``data`` found at ``off`` > 0 bytes past RCV.NXT (already cut to the window)."""
        lo = self.base + off
        hi = lo + len(data)
        starts, ends = self._starts, self._ends
        first = bisect_left(ends, lo)  # first range ending at or after lo: touches or follows
        last = bisect_right(starts, hi)  # ranges before this one start at or before hi
        if first == last and len(starts) >= self.max_pieces:
            return Arrival.DROPPED
        # Copy only the bytes no touching range holds (the first copy wins).
        span = hi - self.base
        if span > len(self._buf):
            self._buf.extend(bytes(span - len(self._buf)))
        added = 0
        at = lo
        for i in range(first, last):
            if starts[i] > at:
                self._put(at, starts[i], data, lo)
                added += starts[i] - at
            at = max(at, ends[i])
        if at < hi:
            self._put(at, hi, data, lo)
            added += hi - at
        if added == 0:
            self._remember(lo)
            return Arrival.DUPLICATE
        new_start = min(lo, starts[first]) if first < last else lo
        new_end = max(hi, ends[last - 1]) if first < last else hi
        starts[first:last] = [new_start]
        ends[first:last] = [new_end]
        self.held += added
        self._remember(lo)
        return Arrival.HELD

    def advance(self, n: int) -> int:
        """RCV.NXT moved ``n`` bytes on through in-order data: held bytes below it are dropped
        (the in-order copy was delivered). Returns how many held bytes that dropped."""
        self.base += n
        starts, ends = self._starts, self._ends
        gone = 0
        k = 0
        while k < len(starts) and ends[k] <= self.base:
            gone += ends[k] - starts[k]
            k += 1
        if k:
            del starts[:k], ends[:k]
        if starts and starts[0] < self.base:
            gone += self.base - starts[0]
            starts[0] = self.base
        del self._buf[:n]  # CPython drops a bytearray's head without moving the rest
        self.held -= gone
        return gone

    def pull(self) -> bytes:
        """The held bytes that now start at RCV.NXT, removed; RCV.NXT moves past them."""
        if not self._starts or self._starts[0] != self.base:
            return b""
        end = self._ends[0]
        n = end - self.base
        data = bytes(self._buf[:n])
        del self._buf[:n]
        del self._starts[0], self._ends[0]
        self.held -= n
        self.base = end
        return data

    def sack_blocks(self, limit: int = RECENT) -> list[tuple[int, int]]:
        """Up to ``limit`` held ranges as offsets from RCV.NXT for SACK: first the one holding
        the most recent arrival, then those holding earlier arrivals, newest first (RFC 2018
        §4), then the lowest others (the holes a sender most needs to fill)."""
        starts, ends = self._starts, self._ends
        picked: list[int] = []
        for pos in self._recent:
            i = bisect_right(starts, pos) - 1
            if i >= 0 and pos < ends[i] and i not in picked:
                picked.append(i)
        for i in range(len(starts)):
            if len(picked) >= limit:
                break
            if i not in picked:
                picked.append(i)
        return [(starts[i] - self.base, ends[i] - self.base) for i in picked[:limit]]

    def _put(self, a: int, b: int, data: bytes, lo: int) -> None:
        self._buf[a - self.base : b - self.base] = data[a - lo : b - lo]

    def _remember(self, pos: int) -> None:
        recent = self._recent
        if pos in recent:
            recent.remove(pos)
        recent.insert(0, pos)
        del recent[RECENT:]
