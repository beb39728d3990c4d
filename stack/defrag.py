"""IP fragment reassembly for IPv4 (RFC 791 §3.2) and IPv6 (RFC 8200 §4.5).

Bounded: at most ``max_datagrams`` partial datagrams (the oldest goes first), each at most
65,535 bytes, each dropped ``timeout`` seconds after its first fragment. Overlapping fragments
are resolved by an overlap policy, ``bsd`` by default as in Snort's frag3 and Suricata's
defrag (a fragment that starts before the one it overlaps wins). RFC 5722 tells an IPv6
receiver to drop such a datagram; an observer cannot know which copy a target used, so it
keeps one and counts the overlap.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from ..reassembly.policy import OverlapPolicy
from ..reassembly.segments import merge

MAX_DATAGRAM = 65535


@dataclass(slots=True)
class _Partial:
    first_seen: float
    pieces: list[list] = field(default_factory=list)  # [offset, bytes], sorted, disjoint
    total: int = -1  # payload length, known once the last fragment arrived
    header: object = None  # what the caller attached to the offset-0 fragment


class Defragmenter:
    def __init__(
        self,
        max_datagrams: int = 4096,
        timeout: float = 30.0,
        policy: OverlapPolicy = OverlapPolicy.BSD,
    ) -> None:
        self.max_datagrams = max_datagrams
        self.timeout = timeout
        self.policy = policy
        self._pending: OrderedDict[object, _Partial] = OrderedDict()
        self.reassembled = 0
        self.overlaps = 0
        self.expired = 0
        self.oversize = 0

    def add(
        self, ts: float, key: object, offset: int, more: bool, data: bytes, header: object = None
    ) -> tuple[bytes, object] | None:
        """Add one fragment; return ``(payload, header)`` once the datagram is complete."""
        self._expire(ts)
        if offset + len(data) > MAX_DATAGRAM:
            self.oversize += 1
            self._pending.pop(key, None)
            return None
        part = self._pending.get(key)
        if part is None:
            if len(self._pending) >= self.max_datagrams:
                self._pending.popitem(last=False)
                self.expired += 1
            part = self._pending[key] = _Partial(ts)
        if offset == 0 and header is not None:
            part.header = header
        if not more:
            part.total = offset + len(data)
        if data and merge(part.pieces, offset, data, self.policy).overlapped:
            self.overlaps += 1
        if part.total < 0 or part.header is None:
            return None
        pos = 0
        for o, d in part.pieces:
            if o != pos:
                return None
            pos += len(d)
        if pos < part.total:
            return None
        del self._pending[key]
        self.reassembled += 1
        return b"".join(d for _, d in part.pieces)[: part.total], part.header

    def _expire(self, now: float) -> None:
        pending = self._pending
        while pending:
            key, part = next(iter(pending.items()))
            if now - part.first_seen <= self.timeout:
                break
            del pending[key]
            self.expired += 1

    def pending(self) -> int:
        return len(self._pending)
