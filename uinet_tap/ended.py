"""The live view's memory of ended flows: a bounded list, oldest out first, and a total budget
for the early bytes they keep. Pure: rows in, rows out, counts of what the caps dropped."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

from .snapshot import FlowRow

KEEP_ENDED_WATCH = 5000  # ended flows watch and inline list
KEEP_ENDED_REPLAY = 100_000  # replay lists every flow of a file up to this many
KEEP_BYTES = 4096  # early bytes kept per direction of each listed flow
BYTES_BUDGET = 64 << 20  # all ended flows' early bytes together


class EndedFlows:
    """At most ``keep`` rows (the oldest ended flow leaves first, counted in ``dropped``); their
    early bytes together within ``budget`` (the oldest flows' bytes are released first, counted
    in ``released``: the row stays, its hex view is empty)."""

    def __init__(self, keep: int = KEEP_ENDED_WATCH, budget: int = BYTES_BUDGET) -> None:
        self.keep = keep
        self.budget = budget
        self.dropped = 0  # rows that left the list for the cap
        self.released = 0  # rows whose early bytes left for the budget
        self.head_bytes = 0  # early bytes held now
        self._rows: OrderedDict[int, FlowRow] = OrderedDict()
        self._with_heads: OrderedDict[int, None] = OrderedDict()  # ids holding bytes, oldest first
        self._tuple: tuple[FlowRow, ...] | None = ()

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, row: FlowRow) -> None:
        old = self._rows.pop(row.id, None)
        if old is not None:  # an id seen again (a worker's renumbering, a re-add): replace
            self._forget_heads(old)
        if self.keep <= 0:
            self.dropped += 1
            return
        size = len(row.c2s_head) + len(row.s2c_head)
        if size > self.budget:
            row = dataclasses.replace(row, c2s_head=b"", s2c_head=b"")
            self.released += 1
            size = 0
        self._rows[row.id] = row
        if size:
            self._with_heads[row.id] = None
            self.head_bytes += size
        while len(self._rows) > self.keep:
            _, gone = self._rows.popitem(last=False)
            self._forget_heads(gone)
            self.dropped += 1
        while self.head_bytes > self.budget:
            fid, _ = self._with_heads.popitem(last=False)
            r = self._rows[fid]
            self.head_bytes -= len(r.c2s_head) + len(r.s2c_head)
            self._rows[fid] = dataclasses.replace(r, c2s_head=b"", s2c_head=b"")
            self.released += 1
        self._tuple = None

    def _forget_heads(self, row: FlowRow) -> None:
        if self._with_heads.pop(row.id, False) is None:
            self.head_bytes -= len(row.c2s_head) + len(row.s2c_head)

    def rows(self) -> tuple[FlowRow, ...]:
        """Oldest first. The same tuple until something is added (snapshots share it)."""
        if self._tuple is None:
            self._tuple = tuple(self._rows.values())
        return self._tuple
