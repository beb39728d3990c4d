"""Out-of-order stores: the bytes a receiver holds beyond its commit point, and how each target
resolves a new copy of bytes it already holds (see :mod:`.policy`).

Three shapes, one interface. Offsets are stream offsets; pieces are kept sorted by start in two
parallel lists (``starts``, ``data``) so lookups are a bisect and draining the front is one
slice deletion, never a ``pop(0)`` per piece.

- :class:`RunStore` (``first``, ``last``): disjoint runs. A new copy fills only what is not held
  (``first``) or overwrites what is (``last``). A piece that continues the run before it is
  appended to that run, so an in-order trickle of tiny segments costs one piece, not one each.
- :class:`TrimStore` (``bsd``, ``windows``): disjoint segments that keep their own (trimmed)
  boundaries, because the policy judges by where each queued segment starts: a queued segment
  starting at or before the new one keeps its bytes, one starting after it is overwritten
  (Snort 3 ``tcp_overlap_resolver``: left overlap keeps the first, a right overlap truncates the
  existing segment unless both start together). Never coalesced: that would move boundaries.
- :class:`LinuxStore` (``linux``): whole segments that may overlap, as ``tcp_data_queue_ofo``
  keeps them: a copy contained in the segment before it is dropped, one starting at the same
  sequence number and ending later replaces it, one that starts right where the segment before
  it ends is coalesced into it, and the segments a new one wholly covers are removed. Draining
  in start order skips what was already delivered (``tcp_ofo_queue``), so where segments still
  overlap the one starting first wins.

Work per insertion is a bisect, the bytes compared and copied, and a list insertion (pointer
moves over at most ``max_pieces`` entries, which the stream caps).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import NamedTuple

from .policy import OverlapPolicy


class Inserted(NamedTuple):
    overlapped: int  # bytes of the new copy that were held already
    conflicts: int  # held pieces whose bytes differed from the new copy's


class _Store:
    __slots__ = ("starts", "data", "held")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.data: list[bytearray] = []
        self.held = 0  # bytes in all pieces (overlapping Linux segments count in full)

    @property
    def pieces(self) -> int:
        return len(self.starts)

    def first_start(self) -> int | None:
        return self.starts[0] if self.starts else None

    def insert(self, s: int, data: bytes) -> Inserted:  # pragma: no cover - abstract
        raise NotImplementedError

    def take(self, nxt: int, limit: int | None = None) -> list[bytes]:
        """Remove and return the bytes that continue the stream at ``nxt``, in order, up to
        ``limit`` (None: as far as they reach). Pieces wholly before ``nxt`` are dropped."""
        starts, data = self.starts, self.data
        out: list[bytes] = []
        k = 0
        n = len(starts)
        cur = nxt
        while k < n and starts[k] <= cur:
            a = starts[k]
            d = data[k]
            b = a + len(d)
            if b > cur:
                if limit is not None and b > limit:
                    if limit > cur:
                        out.append(bytes(d[cur - a : limit - a]))
                        cur = limit
                    # keep the rest as a piece starting at ``cur``
                    self.held -= cur - a
                    del d[: cur - a]
                    starts[k] = cur
                    break
                out.append(bytes(d[cur - a :]) if cur > a else bytes(d))
                cur = b
            self.held -= len(d)
            k += 1
        if k:
            del starts[:k]
            del data[:k]
        return out

    def discard_before(self, off: int) -> None:
        """Forget every byte before ``off`` (a gap was declared over them)."""
        starts, data = self.starts, self.data
        k = 0
        while k < len(starts) and starts[k] < off:
            a, d = starts[k], data[k]
            if a + len(d) > off:
                self.held -= off - a
                del d[: off - a]
                starts[k] = off
                break
            self.held -= len(d)
            k += 1
        if k:
            del starts[:k]
            del data[:k]

    def clear(self) -> None:
        self.starts.clear()
        self.data.clear()
        self.held = 0

    def uncovered(self, s: int, e: int) -> list[tuple[int, int]]:
        """The ranges of ``[s, e)`` no piece holds."""
        out: list[tuple[int, int]] = []
        starts, data = self.starts, self.data
        k = max(0, bisect_right(starts, s) - 1)
        cur = s
        while k < len(starts) and starts[k] < e:
            a = starts[k]
            b = a + len(data[k])
            if a > cur:
                out.append((cur, a))
            cur = max(cur, b)
            k += 1
        if cur < e:
            out.append((cur, e))
        return out

    def _compare(self, s: int, new: bytes, lo: int, hi: int, k: int) -> bool:
        """Whether piece k's bytes on [lo, hi) differ from the new copy's."""
        a = self.starts[k]
        return new[lo - s : hi - s] != self.data[k][lo - a : hi - a]


class RunStore(_Store):
    """Disjoint runs; ``keep_old`` is ``first``, else ``last`` (see the module doc)."""

    __slots__ = ("keep_old",)

    def __init__(self, keep_old: bool) -> None:
        super().__init__()
        self.keep_old = keep_old

    def insert(self, s: int, new: bytes) -> Inserted:
        starts, data = self.starts, self.data
        e = s + len(new)
        k = bisect_right(starts, s) - 1
        if k < 0 or starts[k] + len(data[k]) <= s:
            k += 1  # the first piece that could overlap
        overlapped = conflicts = 0
        fills: list[tuple[int, int]] = []  # parts of the new copy no piece holds
        cur = s
        while k < len(starts) and starts[k] < e:
            a = starts[k]
            d = data[k]
            b = a + len(d)
            if a > cur:
                fills.append((cur, a))
            lo, hi = max(a, s), min(b, e)
            overlapped += hi - lo
            if self._compare(s, new, lo, hi, k):
                conflicts += 1
                if not self.keep_old:
                    d[lo - a : hi - a] = new[lo - s : hi - s]
            cur = b
            k += 1
        if cur < e:
            fills.append((cur, e))
        for lo, hi in fills:
            self._add(lo, new[lo - s : hi - s])
        return Inserted(overlapped, conflicts)

    def _add(self, s: int, piece: bytes) -> None:
        """Add bytes no piece holds: appended to the run that ends where they start, else a new
        piece (never merged into the run after it: prepending copies the whole run)."""
        starts, data = self.starts, self.data
        k = bisect_left(starts, s)
        self.held += len(piece)
        if k and starts[k - 1] + len(data[k - 1]) == s:
            data[k - 1] += piece
            return
        starts.insert(k, s)
        data.insert(k, bytearray(piece))


class TrimStore(_Store):
    """``bsd`` / ``windows``: disjoint segments with their own boundaries (see the module doc)."""

    __slots__ = ()

    def insert(self, s: int, new: bytes) -> Inserted:
        starts, data = self.starts, self.data
        e = s + len(new)
        src = s  # offset of new[0]
        overlapped = conflicts = 0
        # Left overlap: a queued segment starting before the new one keeps its bytes.
        k = bisect_left(starts, s) - 1
        if k >= 0:
            a = starts[k]
            b = a + len(data[k])
            if b > s:
                hi = min(b, e)
                overlapped += hi - s
                conflicts += self._compare(src, new, s, hi, k)
                if b >= e:
                    return Inserted(overlapped, conflicts)
                s = b
        # Right overlaps: the new segment wins over those starting after it; one starting
        # together with it keeps its bytes, and the new one goes on after it.
        k = bisect_left(starts, s)
        while k < len(starts) and starts[k] < e:
            a = starts[k]
            d = data[k]
            b = a + len(d)
            hi = min(b, e)
            overlapped += hi - a
            conflicts += self._compare(src, new, a, hi, k)
            if a == s:
                if b >= e:
                    return Inserted(overlapped, conflicts)
                s = b
                k += 1
                continue
            if b <= e:  # wholly covered: the old segment goes
                self.held -= len(d)
                del starts[k]
                del data[k]
                continue
            self.held -= e - a  # partly covered: its front is cut
            del d[: e - a]
            starts[k] = e
            break
        k = bisect_left(starts, s)
        starts.insert(k, s)
        data.insert(k, bytearray(new[s - src :]))
        self.held += e - s
        return Inserted(overlapped, conflicts)


class LinuxStore(_Store):
    """``linux``: whole, possibly overlapping segments (see the module doc)."""

    __slots__ = ()

    def insert(self, s: int, new: bytes) -> Inserted:
        starts, data = self.starts, self.data
        e = s + len(new)
        overlapped, conflicts = self._effective_overlap(s, new)
        k = bisect_right(starts, s) - 1  # the segment at or before the new one
        if k >= 0:
            a = starts[k]
            d = data[k]
            b = a + len(d)
            if b >= e:  # "all the bits are present": the new copy is dropped
                return Inserted(overlapped, conflicts)
            if a == s:  # same start, ends later: it replaces the queued one
                self.held += len(new) - len(d)
                data[k] = bytearray(new)
                self._remove_covered(k + 1, e)
                return Inserted(overlapped, conflicts)
            if b == s:  # continues it: coalesced (tcp_ooo_try_coalesce); nothing removed
                d += new
                self.held += len(new)
                return Inserted(overlapped, conflicts)
        k += 1
        starts.insert(k, s)
        data.insert(k, bytearray(new))
        self.held += len(new)
        self._remove_covered(k + 1, e)
        return Inserted(overlapped, conflicts)

    def _remove_covered(self, k: int, e: int) -> None:
        """Drop the queued segments from index k on that end at or before ``e``; stop at the
        first that reaches past it (or starts at or after it)."""
        starts, data = self.starts, self.data
        stop = k
        while stop < len(starts) and starts[stop] < e and starts[stop] + len(data[stop]) <= e:
            self.held -= len(data[stop])
            stop += 1
        if stop > k:
            del starts[k:stop]
            del data[k:stop]

    def _effective_overlap(self, s: int, new: bytes) -> Inserted:
        """Bytes of [s, e) already held, judged against what a drain would deliver (where
        queued segments overlap, the one starting first)."""
        starts, data = self.starts, self.data
        e = s + len(new)
        k = bisect_right(starts, s) - 1
        k = max(k, 0)
        # Earlier segments can reach past s: step back while they might (bounded by the
        # number of queued segments, which the stream caps).
        while k > 0 and starts[k - 1] + len(data[k - 1]) > s:
            k -= 1
        overlapped = conflicts = 0
        cur = s
        while k < len(starts) and starts[k] < e:
            a = starts[k]
            b = a + len(data[k])
            lo, hi = max(a, cur), min(b, e)
            if hi > lo:
                overlapped += hi - lo
                conflicts += self._compare(s, new, lo, hi, k)
                cur = hi
            k += 1
        return Inserted(overlapped, conflicts)


def make_store(policy: OverlapPolicy) -> _Store:
    if policy is OverlapPolicy.LINUX:
        return LinuxStore()
    if policy is OverlapPolicy.BSD or policy is OverlapPolicy.WINDOWS:
        return TrimStore()
    return RunStore(keep_old=policy is not OverlapPolicy.LAST)
