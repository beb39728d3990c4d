"""Merging one segment into a sorted list of non-overlapping pieces under an overlap policy.

Shared by the TCP stream (out-of-order store) and IP defragmentation: both must decide, byte
range by byte range, whether an overlapping copy replaces what is already held.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from operator import itemgetter

from .policy import OverlapPolicy

_start = itemgetter(0)


@dataclass(slots=True)
class MergeResult:
    added: int = 0  # bytes not held before
    overlapped: int = 0  # bytes held before (a retransmission or overlap)
    conflicts: int = 0  # overlapping pieces whose bytes differed


def merge(segs: list[list], s: int, data: bytes, policy: OverlapPolicy) -> MergeResult:
    """Insert ``data`` at offset ``s`` into ``segs`` ([offset, bytes], sorted, non-overlapping)."""
    res = MergeResult()
    e = s + len(data)
    i = bisect_right(segs, s, key=_start) - 1
    if i < 0 or segs[i][0] + len(segs[i][1]) <= s:
        i += 1
    out: list[list] = []
    cur = s
    j = i
    while j < len(segs) and segs[j][0] < e:
        a, old = segs[j]
        b = a + len(old)
        if cur < a:
            out.append([cur, data[cur - s : a - s]])
            res.added += a - cur
        lo = max(s, a)
        hi = min(e, b)
        new_part = data[lo - s : hi - s]
        res.overlapped += hi - lo
        if new_part != old[lo - a : hi - a]:
            res.conflicts += 1
            if policy.new_wins(s, e, a, b):
                old = old[: lo - a] + new_part + old[hi - a :]
        out.append([a, old])
        cur = max(cur, b)
        j += 1
    if cur < e:
        out.append([cur, data[cur - s :]])
        res.added += e - cur
    segs[i:j] = out
    return res
