"""Receiver policies: how a target's TCP resolves overlapping copies of the same bytes, and what
its application reads of urgent data.

Target-based reassembly (Novak and Sturges, "Target-Based TCP Stream Reassembly", 2007; Snort's
stream and Suricata's ``host-os-policy`` use the same names). Three model a receiving stack,
two model an observer:

- ``linux``: a Linux receiver, checked against a real Linux 6.x kernel's ``recv()``
  (``captures/evasion``). In-order bytes are final on arrival; its out-of-order queue keeps whole
  segments, which may overlap: a copy contained in one already queued is dropped, one starting
  at the same sequence number and ending later replaces it, one starting earlier covers what it
  overlaps, and contiguous appends coalesce (``tcp_data_queue_ofo``). The urgent byte is taken
  out of band (``SO_OOBINLINE`` off, the default).
- ``bsd``: 4.4BSD's ``tcp_reass`` as Snort 3 documents it: a queued segment that starts at or
  before the new one keeps its bytes; the new one wins over segments that start after it.
  Urgent byte out of band.
- ``windows``: Snort 3 resolves Windows overlaps as ``bsd``; urgent byte out of band (Winsock's
  default is BSD-style urgent data, ``SO_OOBINLINE`` off).
- ``first`` keeps the copy captured first (Zeek, tshark); urgent bytes stay in the stream.
- ``last`` keeps the copy captured last (tcpflow); it waits for the receiver's ACK before a byte
  is final; urgent bytes stay in the stream.

Every policy applies the acceptability rules every TCP receiver applies (RFC 9293 §3.10.7.4,
RFC 5961, RFC 7323 §5): data outside the window, after an accepted RST, on a segment whose ACK
is unacceptable, or with an older timestamp is not what the application read.
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
        """Whether the new copy replaces the old one on their overlap, judging one old piece at
        a time (IP defragmentation, :mod:`.segments`)."""
        if self is OverlapPolicy.LAST:
            return True
        if self is OverlapPolicy.BSD or self is OverlapPolicy.WINDOWS:
            return new_start < old_start
        if self is OverlapPolicy.LINUX:
            return new_start < old_start or (new_start == old_start and new_end > old_end)
        return False  # FIRST

    @property
    def final_on_arrival(self) -> bool:
        """In-order bytes are what the application reads at once: a later copy cannot change
        them (every receiving stack; ``first`` by definition). Only ``last`` waits for the ACK."""
        return self is not OverlapPolicy.LAST

    @property
    def urgent_out_of_band(self) -> bool:
        """The byte the urgent pointer names is taken out of the stream (RFC 6093 §3.1: the
        BSD and Linux default); the observer policies keep it in band."""
        return self in (OverlapPolicy.LINUX, OverlapPolicy.BSD, OverlapPolicy.WINDOWS)

    @property
    def models_receiver(self) -> bool:
        return self.urgent_out_of_band
