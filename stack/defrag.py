"""IP fragment reassembly for IPv4 (RFC 791 §3.2) and IPv6 (RFC 8200 §4.5).

Bounded, and each bound that bites is counted (the run summary's ``fragment_*`` keys):

- ``max_datagrams`` partial datagrams (4,096): a new one evicts the oldest (``evicted``);
- ``memcap`` payload bytes held across them (32 MiB, Suricata's defrag memcap): the oldest go
  until a fragment fits (``memcap_evicted``);
- ``timeout`` seconds (30, as Linux's ipfrag_time) after its first fragment an unfinished
  datagram is dropped (``timed_out``);
- a fragment reaching past 65,535 bytes drops its datagram (``oversize``): no IP datagram is
  longer, so it is an attack or garbage;
- ``max_fragments`` fragments per datagram (128: a 64 KiB datagram over IPv4's 576-byte
  minimum is 115): one more drops it (``too_many``), which also bounds the work a datagram
  of tiny fragments costs.

Every partial datagram goes oldest first, whichever bound bites.

Overlapping fragments are resolved by an overlap policy, ``bsd`` by default as in Snort's frag3
and Suricata's defrag (a fragment that starts before the one it overlaps wins). RFC 5722 tells
an IPv6 receiver to drop such a datagram; an observer cannot know which copy a target used, so
it keeps one and counts the overlap.

The pieces held are disjoint after each merge, so the bytes held are a running sum and
completeness is a comparison, O(1) per fragment. Only a datagram whose pieces reach past the
length its last fragment gave (inconsistent fragments) is walked, and at most
``max_fragments`` pieces.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from ..reassembly.policy import OverlapPolicy
from ..reassembly.segments import merge

MAX_DATAGRAM = 65535
MAX_DATAGRAMS = 4096
MEMCAP = 32 << 20
TIMEOUT = 30.0
MAX_FRAGMENTS = 128


@dataclass(slots=True)
class _Partial:
    first_seen: float
    pieces: list[list] = field(default_factory=list)  # [offset, bytes], sorted, disjoint
    held: int = 0  # bytes in pieces
    end: int = 0  # the end of the last piece
    fragments: int = 0
    total: int = -1  # payload length, known once the last fragment arrived
    header: object = None  # what the caller attached to the offset-0 fragment


class Defragmenter:
    def __init__(
        self,
        max_datagrams: int = MAX_DATAGRAMS,
        timeout: float = TIMEOUT,
        policy: OverlapPolicy = OverlapPolicy.BSD,
        memcap: int = MEMCAP,
        max_fragments: int = MAX_FRAGMENTS,
    ) -> None:
        self.max_datagrams = max_datagrams
        self.timeout = timeout
        self.policy = policy
        self.memcap = memcap
        self.max_fragments = max_fragments
        self._pending: OrderedDict[object, _Partial] = OrderedDict()
        self.held = 0  # payload bytes held across partial datagrams
        self.fragments = 0  # fragments offered
        self.reassembled = 0
        self.overlaps = 0
        self.evicted = 0
        self.memcap_evicted = 0
        self.timed_out = 0
        self.oversize = 0
        self.too_many = 0

    def add(
        self, ts: float, key: object, offset: int, more: bool, data: bytes, header: object = None
    ) -> tuple[bytes, object] | None:
        """Add one fragment; return ``(payload, header)`` once the datagram is complete."""
        self.fragments += 1
        self._expire(ts)
        if offset + len(data) > MAX_DATAGRAM:
            self.oversize += 1
            self._drop(key)
            return None
        part = self._pending.get(key)
        if part is None:
            if len(self._pending) >= self.max_datagrams:
                self._drop(next(iter(self._pending)))
                self.evicted += 1
            part = self._pending[key] = _Partial(ts)
        part.fragments += 1
        if part.fragments > self.max_fragments:
            self.too_many += 1
            self._drop(key)
            return None
        if self.held + len(data) > self.memcap and not self._make_room(key, len(data)):
            return None
        if offset == 0 and header is not None:
            part.header = header
        if not more:
            part.total = offset + len(data)
        if data:
            res = merge(part.pieces, offset, data, self.policy)
            if res.overlapped:
                self.overlaps += 1
            part.held += res.added
            self.held += res.added
            part.end = max(part.end, offset + len(data))
        total = part.total
        if total < 0 or part.header is None or part.held < total:
            return None
        if part.end > total and not _covers(part.pieces, total):
            return None
        self._drop(key)
        self.reassembled += 1
        return b"".join(d for _, d in part.pieces)[:total], part.header

    def _make_room(self, key: object, need: int) -> bool:
        """Evict the oldest other partial datagrams until ``need`` more bytes fit under the
        memcap; False (and ``key``'s own datagram dropped) if even that is not enough."""
        pending = self._pending
        while self.held + need > self.memcap and len(pending) > 1:
            oldest = iter(pending)
            victim = next(oldest)
            if victim == key:  # the fragment's own datagram is the oldest: the next one goes
                victim = next(oldest)
            self._drop(victim)
            self.memcap_evicted += 1
        if self.held + need <= self.memcap:
            return True
        self._drop(key)
        self.memcap_evicted += 1
        return False

    def _drop(self, key: object) -> None:
        part = self._pending.pop(key, None)
        if part is not None:
            self.held -= part.held

    def _expire(self, now: float) -> None:
        pending = self._pending
        while pending:
            key, part = next(iter(pending.items()))
            if now - part.first_seen <= self.timeout:
                break
            self._drop(key)
            self.timed_out += 1

    def pending(self) -> int:
        return len(self._pending)


def _covers(pieces: list[list], total: int) -> bool:
    """Whether sorted, disjoint ``pieces`` cover [0, total) without a hole."""
    pos = 0
    for o, d in pieces:
        if o > pos or pos >= total:
            break
        pos = o + len(d)
    return pos >= total
