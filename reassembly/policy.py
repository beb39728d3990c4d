"""Overlap policies: which copy wins where two segments carry different bytes for one offset.

Target-based reassembly (Novak and Sturges, "Target-Based TCP Stream Reassembly", 2007;
Snort's stream5 and Suricata's ``host-os-policy`` use the same names):

- ``first`` keeps the copy captured first (Zeek, tshark, Suricata's default for 0.0.0.0/0);
- ``last`` keeps the copy captured last (tcpflow, Suricata ``old-linux``);
- ``bsd``: the original wins, unless the new segment starts before the original one;
- ``linux``: as ``bsd``, and the new segment also wins when it starts at the same sequence
  number as the original and ends after it;
- ``windows``: the original wins (for TCP data Windows behaves as ``first``).
"""

from __future__ import annotations

from enum import StrEnum


class OverlapPolicy(StrEnum):
    FIRST = "first"
    LAST = "last"
    BSD = "bsd"
    LINUX = "linux"
    WINDOWS = "windows"

    def new_wins(self, new_start: int, new_end: int, old_start: int, old_end: int) -> bool:
        """Whether the new segment's bytes replace the old segment's on their overlap."""
        if self is OverlapPolicy.LAST:
            return True
        if self is OverlapPolicy.BSD:
            return new_start < old_start
        if self is OverlapPolicy.LINUX:
            return new_start < old_start or (new_start == old_start and new_end > old_end)
        return False  # FIRST, WINDOWS

    @property
    def final_on_arrival(self) -> bool:
        """In-order bytes can never change later: deliver them at once, without waiting for
        the receiver's ACK."""
        return self in (OverlapPolicy.FIRST, OverlapPolicy.WINDOWS)
