"""The active side: a userspace TCP endpoint that continues one half of a live connection.

After a cut-in there are two of these per connection: one talks to the real client while
impersonating the server, the other talks to the real server while impersonating the client.
Each starts from what passive tracking knew at the takeover (:class:`Takeover`) and from then
on is an ordinary synchronized TCP endpoint (RFC 9293 §3.10.7.4), sans-I/O: segments and the
time come in as arguments, segments to send accumulate in :attr:`Tcb.out`, and the caller
asks :meth:`Tcb.deadline` when to call :meth:`Tcb.on_timer`.

What it does: retransmission timeout with backoff (RFC 6298), fast retransmit and NewReno
recovery (RFC 5681 §3.2, RFC 6582), SACK-aware retransmission (RFC 2018, RFC 6675 in spirit:
SACKed ranges are never resent), flow control by the peer's window with window scaling
(RFC 7323 §2), zero-window probes (RFC 9293 §3.8.6.1), delayed ACKs (RFC 5681 §4.2),
timestamps with PAWS (RFC 7323 §3-5), RST and SYN checks (RFC 5961 §3-5), and the FIN states
of RFC 9293 §3.3.2.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import NamedTuple

from ..reassembly.seq import MASK, seq_diff
from .decode import ACK, FIN, PSH, RST, SYN
from .emit import encode_options
from .outoforder import MAX_PIECES, Arrival, OutOfOrderStore

# RFC 6298 (2.1) initial RTO. The lower bound is Linux's 200 ms, not the RFC's 1 s SHOULD
# (2.4): the peers are kernels that already recover at that pace, and a cut-in must not make
# a lossy link crawl.
RTO_INITIAL = 1.0
RTO_MIN = 0.2
RTO_MAX = 60.0
MAX_RETRIES = 15  # backoffs before giving up (Linux tcp_retries2)
DELACK = 0.04  # Linux's minimum delayed-ACK timeout; RFC 5681 §4.2 caps it at 500 ms
DUPACK_THRESHOLD = 3  # RFC 5681 §3.2
RCV_BUFFER = 4 << 20  # what we buffer for the handler before our window closes
TIME_WAIT = 60.0  # 2*MSL as Linux counts it (RFC 9293 §3.4.2): our last ACK may be lost


class Recovery(StrEnum):
    NONE = "none"
    FAST = "fast"  # fast retransmit / NewReno fast recovery (RFC 5681 §3.2, RFC 6582)
    RTO = "rto"  # after a timeout: the flight is resent under a slow-starting window


class TcbState(StrEnum):
    """RFC 9293 §3.3.2, the synchronized states (a takeover starts in ESTABLISHED)."""

    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSING = "CLOSING"
    TIME_WAIT = "TIME-WAIT"
    CLOSE_WAIT = "CLOSE-WAIT"
    LAST_ACK = "LAST-ACK"
    CLOSED = "CLOSED"


@dataclass(frozen=True, slots=True)
class TsClock:
    """The impersonated endpoint's timestamp clock: TSval ``base`` at time ``at``, ticking at
    ``rate`` per second. The peer's PAWS check (RFC 7323 §5) needs our TSvals to go on from
    the last one it saw, at about the same pace."""

    base: int
    at: float
    rate: float

    def value(self, now: float) -> int:
        return (self.base + int(max(0.0, now - self.at) * self.rate)) & MASK


@dataclass(frozen=True, slots=True)
class Takeover:
    """One half at the cut-in, as passive tracking saw it, from our (impersonated) side."""

    snd_una: int  # oldest of our bytes the peer has not acknowledged
    snd_nxt: int  # next sequence number of ours (everything before it was forwarded)
    unacked: bytes  # our bytes [snd_una, snd_nxt): held, and resent if lost
    rcv_nxt: int  # next byte expected from the peer (all before it was delivered)
    peer_window: int  # the peer's last raw window field
    peer_wscale: int  # shift for the peer's window field (0 without scaling)
    our_wscale: int  # the impersonated endpoint's shift: our window fields use it
    rcv_edge: int  # right edge of the window the impersonated endpoint advertised
    peer_mss: int  # largest segment we may send
    sack: bool  # SACK permitted both ways (RFC 2018 §2)
    clock: TsClock | None  # timestamps in force: our clock
    ts_recent: int = 0  # the peer's last TSval, echoed in TSecr (RFC 7323 §4.3)


class Incoming(NamedTuple):
    seq: int
    ack: int
    flags: int
    window: int
    payload: bytes
    tsval: int | None = None
    tsecr: int | None = None
    sack: tuple[tuple[int, int], ...] = ()


class Outgoing(NamedTuple):
    seq: int
    ack: int
    flags: int
    window: int
    options: bytes
    payload: bytes
    # Segments of this size are what the payload is to be cut into on the wire (a burst,
    # Tcb(burst=...), cut as TSO cuts one); 0: the payload is one segment.
    size: int = 0


def parse_incoming(
    seq: int, ack: int, flags: int, window: int, options: bytes, payload: bytes
) -> Incoming:
    """The fields an active endpoint reads from a segment, with timestamps and SACK blocks."""
    tsval = tsecr = None
    sack: list[tuple[int, int]] = []
    i, n = 0, len(options)
    while i < n:
        kind = options[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= n or options[i + 1] < 2 or i + options[i + 1] > n:
            break
        length = options[i + 1]
        if kind == 8 and length == 10:
            tsval = int.from_bytes(options[i + 2 : i + 6], "big")
            tsecr = int.from_bytes(options[i + 6 : i + 10], "big")
        elif kind == 5 and length >= 10 and (length - 2) % 8 == 0:
            for j in range(i + 2, i + length, 8):
                sack.append(
                    (
                        int.from_bytes(options[j : j + 4], "big"),
                        int.from_bytes(options[j + 4 : j + 8], "big"),
                    )
                )
        i += length
    return Incoming(seq, ack, flags, window, payload, tsval, tsecr, tuple(sack))


def _lt(a: int, b: int) -> bool:
    return seq_diff(a, b) < 0


def _le(a: int, b: int) -> bool:
    return seq_diff(a, b) <= 0


@dataclass(slots=True)
class Stats:
    segments_in: int = 0
    segments_out: int = 0
    retransmits: int = 0
    rto_fired: int = 0
    fast_retransmits: int = 0
    probes: int = 0
    bytes_in: int = 0  # payload bytes received once each (copies of held bytes not again)
    bytes_out: int = 0
    paws_dropped: int = 0
    challenge_acks: int = 0
    ooo_duplicates: int = 0  # out-of-order segments whose every byte was already held
    ooo_overlap_bytes: int = 0  # bytes received again where something was held: not kept twice
    ooo_dropped: int = 0  # out-of-order segments dropped at the cap on held ranges

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Tcb:
    """One synchronized TCP endpoint, continued from a :class:`Takeover`.

    Sequence numbers are kept as 32-bit values; lengths and offsets into the send buffer are
    plain ints relative to ``snd_una``.
    """

    def __init__(self, t: Takeover, now: float, ooo_pieces: int = MAX_PIECES,
                 burst: int = 0) -> None:  # fmt: skip
        """``burst``: new data goes out in Outgoing segments of up to this many bytes, whole
        MSS-sized segments each (Outgoing.size), for the frame layer to cut as a NIC's TSO
        cuts a super-segment; 0: a segment each."""
        self.state = TcbState.ESTABLISHED
        self.burst = burst
        # send side
        self.snd_una = t.snd_una
        self.snd_max = t.snd_nxt  # highest sequence number sent, +1
        self.sbuf = bytearray(t.unacked)  # bytes from snd_una: sent-unacked, then unsent
        assert len(self.sbuf) == (t.snd_nxt - t.snd_una) & MASK, "unacked bytes do not fit"
        self.snd_wnd = t.peer_window << t.peer_wscale
        self.max_wnd = self.snd_wnd
        self.snd_wl1 = t.rcv_nxt  # the takeover counts as the last window update
        self.snd_wl2 = t.snd_una
        self.peer_wscale = t.peer_wscale
        self.mss = max(t.peer_mss, 64)
        self.fin_queued = False  # close() called: a FIN follows the data
        self.fin_sent = False
        self.fin_acked = False
        # congestion control (RFC 5681): start from what was in flight, at least IW (RFC 6928)
        flight = len(self.sbuf)
        self.cwnd = max(10 * self.mss, flight + self.mss)
        self.ssthresh = 1 << 30
        self.dupacks = 0
        self.recovery = Recovery.NONE  # until snd_una reaches ``recover``
        self.recover = self.snd_una
        self.rtx_next = self.snd_una  # next sequence number to consider resending
        self.sacked: list[tuple[int, int]] = []  # offsets from snd_una, sorted, merged
        self.sack_ok = t.sack
        # RTT and timers (RFC 6298)
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = RTO_INITIAL
        self.backoff = 0
        self.timed: tuple[int, float] | None = None  # (seq end, time sent) of the timed segment
        self.rto_at: float | None = now + self.rto if flight else None
        self.persist_at: float | None = None
        self.delack_at: float | None = None
        self.timewait_at: float | None = None
        # receive side
        self.rcv_nxt = t.rcv_nxt
        self.our_wscale = t.our_wscale
        self.rcv_adv = t.rcv_edge  # right edge advertised; never moved left (RFC 9293 §3.8.6.2.2)
        if _lt(self.rcv_adv, self.rcv_nxt):
            self.rcv_adv = self.rcv_nxt
        self.rbuf = bytearray()  # in order, for the handler
        self.ooo = OutOfOrderStore(ooo_pieces)  # peer bytes past a hole, bounded (outoforder.py)
        self.peer_fin: int | None = None  # sequence number of the peer's FIN once known
        self.fin_received = False
        self.unacked_segments = 0  # full-sized segments received since our last ACK
        # timestamps (RFC 7323)
        self.clock = t.clock
        self.ts_recent = t.ts_recent
        # outcome
        self.reset = False  # the connection was reset (by the peer or by abort())
        self.error: str | None = None
        self.out: list[Outgoing] = []
        self.stats = Stats()

    # -- the application's side ------------------------------------------------------------

    def send(self, data: bytes, now: float) -> None:
        if self.fin_queued or self.state is TcbState.CLOSED:
            raise ConnectionError("send after close")
        self.sbuf += data
        self._output(now)

    def close(self, now: float) -> None:
        """Half-close: a FIN after everything queued (RFC 9293 §3.10.4)."""
        if self.fin_queued or self.state is TcbState.CLOSED:
            return
        self.fin_queued = True
        if self.state is TcbState.ESTABLISHED:
            self.state = TcbState.FIN_WAIT_1
        elif self.state is TcbState.CLOSE_WAIT:
            self.state = TcbState.LAST_ACK
        self._output(now)

    def abort(self, now: float) -> None:
        """RST now (RFC 9293 §3.10.5): the sequence number the peer expects next."""
        if self.state is TcbState.CLOSED:
            return
        self._emit(self._wire_nxt(), self.rcv_nxt, RST | ACK, b"", now)
        self._closed(reset=True)

    def read(self, n: int, now: float) -> bytes:
        data = bytes(self.rbuf[:n])
        del self.rbuf[:n]
        if data:
            self._window_update(now, len(data))
        return data

    @property
    def readable(self) -> int:
        return len(self.rbuf)

    @property
    def eof(self) -> bool:
        """The peer's FIN was received and everything before it read out."""
        return self.fin_received and not self.rbuf

    @property
    def queued(self) -> int:
        """Bytes not yet acknowledged by the peer (in flight and unsent)."""
        return len(self.sbuf)

    @property
    def finished(self) -> bool:
        return self.state is TcbState.CLOSED

    # -- timers ----------------------------------------------------------------------------

    def deadline(self) -> float | None:
        times = [
            t
            for t in (self.rto_at, self.persist_at, self.delack_at, self.timewait_at)
            if t is not None
        ]
        return min(times) if times else None

    def on_timer(self, now: float) -> None:
        if self.timewait_at is not None and now >= self.timewait_at:
            self.timewait_at = None
            self._closed()
            return
        if self.delack_at is not None and now >= self.delack_at:
            self._send_ack(now)
        if self.rto_at is not None and now >= self.rto_at:
            self._on_rto(now)
        if self.persist_at is not None and now >= self.persist_at:
            self._on_persist(now)

    def _on_rto(self, now: float) -> None:
        """RFC 6298 (5.4)-(5.7): resend the oldest segment, back off, restart the timer; the
        rest of the flight is resent as ACKs come back (RFC 5681 §3.1 after a timeout)."""
        self.rto_at = None
        if not self._outstanding():
            return
        self.backoff += 1
        if self.backoff > MAX_RETRIES:
            self.error = "retransmission timeout"
            self.abort(now)
            return
        self.stats.rto_fired += 1
        flight = seq_diff(self.snd_max, self.snd_una)
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.mss
        self.recovery = Recovery.RTO
        self.recover = self.snd_max
        self.rtx_next = self.snd_una
        self.dupacks = 0
        self.timed = None  # Karn: no RTT sample across a retransmission
        self.rto = min(self.rto * 2, RTO_MAX)
        # RFC 2018 §8: after a timeout the receiver may have dropped SACKed data; resend all.
        self.sacked.clear()
        self._retransmit_one(now)
        self._arm_rto(now, restart=True)

    def _on_persist(self, now: float) -> None:
        """Zero-window probe: an old sequence number with no data, which the peer must answer
        with an ACK carrying its window (RFC 9293 §3.10.7.4; Linux's tcp_xmit_probe_skb). The
        interval backs off like the RTO (RFC 9293 §3.8.6.1)."""
        self.persist_at = None
        if self.snd_wnd > 0 or not self._has_unsent():
            return
        self.stats.probes += 1
        self._emit((self.snd_una - 1) & MASK, self.rcv_nxt, ACK, b"", now)
        self.backoff = min(self.backoff + 1, MAX_RETRIES)
        self.persist_at = now + min(self.rto * (1 << self.backoff), RTO_MAX)

    def _outstanding(self) -> bool:
        return self.snd_una != self.snd_max or (self.fin_sent and not self.fin_acked)

    def _arm_rto(self, now: float, restart: bool = False) -> None:
        if not self._outstanding():
            self.rto_at = None
        elif self.rto_at is None or restart:
            self.rto_at = now + self.rto

    # -- the network's side ----------------------------------------------------------------

    def on_segment(self, seg: Incoming, now: float) -> None:
        """RFC 9293 §3.10.7.4, the checks in its order, for the synchronized states."""
        st = self.stats
        st.segments_in += 1
        if self.state is TcbState.CLOSED:
            return
        flags = seg.flags
        seglen = len(seg.payload) + (1 if flags & FIN else 0)
        # PAWS, RFC 7323 §5.3: a TSval older than ts_recent marks an old duplicate.
        if (
            self.clock is not None
            and seg.tsval is not None
            and not flags & RST
            and seq_diff(seg.tsval, self.ts_recent) < 0
            and not self._disordered_ack(seg)
        ):
            st.paws_dropped += 1
            self._send_ack(now)
            return
        # First: sequence number acceptable?
        wnd = seq_diff(self.rcv_adv, self.rcv_nxt)
        if not self._acceptable(seg.seq, seglen, wnd):
            if not flags & RST:
                self._send_ack(now)  # also answers keepalives and our peer's window probes
            return
        # Second: RST (RFC 5961 §3.2: exact match resets, otherwise a challenge ACK).
        if flags & RST:
            if seg.seq == self.rcv_nxt:
                # In TIME-WAIT both sides had closed: the RST (a stray ACK's answer from a
                # peer already CLOSED) ends the wait, not a connection (RFC 9293 §3.10.7.4).
                self._closed(reset=self.state is not TcbState.TIME_WAIT)
            else:
                st.challenge_acks += 1
                self._send_ack(now)
            return
        # Fourth: SYN in a synchronized state, RFC 5961 §4: challenge ACK.
        if flags & SYN:
            st.challenge_acks += 1
            self._send_ack(now)
            return
        # Fifth: ACK.
        if not flags & ACK:
            return
        if not self._on_ack(seg, now):
            return
        if self.state is TcbState.CLOSED:
            return
        # Timestamps: RFC 7323 §4.3, ts_recent follows segments that cover rcv_nxt.
        if seg.tsval is not None and _le(seg.seq, self.rcv_nxt):
            self.ts_recent = seg.tsval
        # Eighth: FIN, noted before the data so that a duplicate ACK for a data+FIN segment
        # past a hole SACKs the FIN too (see _sack_blocks); it takes effect in _check_fin.
        if flags & FIN:
            self.peer_fin = (seg.seq + len(seg.payload)) & MASK
        # Seventh: the data.
        if seg.payload and self.state in (
            TcbState.ESTABLISHED,
            TcbState.FIN_WAIT_1,
            TcbState.FIN_WAIT_2,
        ):
            self._on_data(seg.seq, seg.payload, now)
        self._check_fin(now)
        self._output(now)

    def _disordered_ack(self, seg: Incoming) -> bool:
        """A pure ACK overtaken by a later segment: old TSval, but nothing in it can be a
        stale duplicate, so it is let through (Linux's tcp_disordered_ack; its SACK blocks
        and window matter for recovery)."""
        return (
            not seg.payload
            and not seg.flags & (SYN | FIN)
            and seg.seq == self.rcv_nxt
            and _le(seg.ack, self.snd_una)
        )

    def _acceptable(self, seq: int, seglen: int, wnd: int) -> bool:
        """RFC 9293 §3.10.7.4's table of four cases."""
        if seglen == 0:
            if wnd == 0:
                return seq == self.rcv_nxt
            return 0 <= seq_diff(seq, self.rcv_nxt) < wnd
        if wnd == 0:
            return False
        start = seq_diff(seq, self.rcv_nxt)
        end = start + seglen - 1
        return 0 <= start < wnd or 0 <= end < wnd

    def _on_ack(self, seg: Incoming, now: float) -> bool:
        ack = seg.ack
        st = self.stats
        top = (self.snd_max + (1 if self.fin_sent else 0)) & MASK
        if seq_diff(ack, top) > 0:
            self._send_ack(now)  # acknowledges something not yet sent: RFC 9293 §3.10.7.4
            return False
        if seq_diff(ack, self.snd_una) < -max(self.max_wnd, 1):
            st.challenge_acks += 1  # RFC 5961 §5.2: too old to be plausible
            self._send_ack(now)
            return False
        if seg.sack and self.sack_ok:
            self._on_sack(seg.sack)
        acked = seq_diff(ack, self.snd_una)
        data_acked = min(max(acked, 0), len(self.sbuf))
        window_changed = False
        # Window update, RFC 9293 §3.10.7.4 (SND.WL1/WL2 rule).
        if _lt(self.snd_wl1, seg.seq) or (self.snd_wl1 == seg.seq and _le(self.snd_wl2, ack)):
            wnd = seg.window << self.peer_wscale
            window_changed = wnd != self.snd_wnd
            self.snd_wnd = wnd
            self.max_wnd = max(self.max_wnd, wnd)
            self.snd_wl1 = seg.seq
            self.snd_wl2 = ack
        if acked > 0:
            if data_acked:
                del self.sbuf[:data_acked]
                self._shift_sacked(data_acked)
            self.snd_una = (self.snd_una + data_acked) & MASK
            if self.fin_sent and acked > data_acked:
                self.fin_acked = True  # the one sequence number past our data is the FIN
            self._rtt_sample(ack, now)
            self.backoff = 0
            self.dupacks = 0
            if self.recovery is Recovery.FAST and _lt(self.snd_una, self.recover):
                # Partial ACK, RFC 6582 §3.2 (5): resend the next hole at once and deflate.
                self.rtx_next = self.snd_una
                self._retransmit_one(now)
                self.cwnd = max(self.cwnd - data_acked + self.mss, self.mss)
            elif self.recovery is Recovery.FAST:
                self.recovery = Recovery.NONE  # full ACK, RFC 6582 §3.2 (3)
                self.cwnd = max(min(self.cwnd, self.ssthresh), self.mss)
            else:
                if self.recovery is Recovery.RTO and not _lt(self.snd_una, self.recover):
                    self.recovery = Recovery.NONE
                if self.cwnd < self.ssthresh:
                    self.cwnd += min(data_acked, self.mss)  # slow start, RFC 5681 §3.1 (2)
                else:
                    self.cwnd += max(1, self.mss * self.mss // self.cwnd)  # avoidance (3)
            if _lt(self.rtx_next, self.snd_una):
                self.rtx_next = self.snd_una
            self._arm_rto(now, restart=True)
            if self.fin_acked:
                if self.state is TcbState.FIN_WAIT_1:
                    self.state = TcbState.FIN_WAIT_2
                elif self.state is TcbState.CLOSING:
                    self._time_wait(now)
                elif self.state is TcbState.LAST_ACK:
                    self._closed()
                    return True
        elif (
            acked == 0
            and not seg.payload
            and not seg.flags & FIN
            and not window_changed
            and self.snd_una != self.snd_max
        ):
            # A duplicate ACK as RFC 5681 §2 defines it.
            self.dupacks += 1
            if self.dupacks == DUPACK_THRESHOLD and self.recovery is Recovery.NONE:
                self._fast_retransmit(now)
            elif self.recovery is Recovery.FAST:
                self.cwnd += self.mss  # each dup ACK: a segment left the network
                if self.sack_ok and self.sacked:
                    self._retransmit_one(now)  # the next hole the SACK blocks show
        if (
            self.recovery is Recovery.NONE
            and self.sacked
            and self._sacked_bytes() >= DUPACK_THRESHOLD * self.mss
        ):
            # RFC 6675 §4 (IsLost): DupThresh segments SACKed above a hole mark it lost,
            # however few duplicate ACKs carried the news.
            self._fast_retransmit(now)
        if self.snd_wnd and self.persist_at is not None:
            self.persist_at = None
            self.backoff = 0
        return True

    def _fast_retransmit(self, now: float) -> None:
        """RFC 5681 §3.2 steps 2-4 (NewReno's recover point, RFC 6582 §3.2 (2))."""
        self.stats.fast_retransmits += 1
        flight = seq_diff(self.snd_max, self.snd_una)
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.ssthresh + DUPACK_THRESHOLD * self.mss
        self.recovery = Recovery.FAST
        self.recover = self.snd_max
        self.rtx_next = self.snd_una
        self.timed = None
        self._retransmit_one(now)

    def _on_sack(self, blocks: tuple[tuple[int, int], ...]) -> None:
        """RFC 2018 §4: remember which of our bytes above snd_una the peer holds."""
        size = len(self.sbuf)
        for left, right in blocks:
            lo = seq_diff(left, self.snd_una)
            hi = seq_diff(right, self.snd_una)
            lo, hi = max(lo, 0), min(hi, size)
            if lo < hi:
                self.sacked.append((lo, hi))
        self.sacked.sort()
        merged: list[tuple[int, int]] = []
        for lo, hi in self.sacked:
            if merged and lo <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        self.sacked = merged

    def _shift_sacked(self, n: int) -> None:
        self.sacked = [(lo - n, hi - n) for lo, hi in self.sacked if hi > n]
        if self.sacked and self.sacked[0][0] < 0:
            self.sacked[0] = (0, self.sacked[0][1])

    def _rtt_sample(self, ack: int, now: float) -> None:
        """RFC 6298 (2.2)-(2.3), one sample per flight from a timed segment (Karn's rule)."""
        if self.timed is None or _lt(ack, self.timed[0]):
            return
        r = now - self.timed[1]
        self.timed = None
        if self.srtt is None:
            self.srtt, self.rttvar = r, r / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - r)
            self.srtt = 0.875 * self.srtt + 0.125 * r
        self.rto = min(max(self.srtt + max(0.001, 4 * self.rttvar), RTO_MIN), RTO_MAX)

    def _on_data(self, seq: int, payload: bytes, now: float) -> None:
        off = seq_diff(seq, self.rcv_nxt)
        if off < 0:
            payload = payload[-off:]
            off = 0
        room = seq_diff(self.rcv_adv, self.rcv_nxt)
        if off + len(payload) > room:
            payload = payload[: max(0, room - off)]  # beyond the window: trimmed
        if not payload:
            self._send_ack(now)
            return
        if off == 0:
            self.rbuf += payload
            self.rcv_nxt = (self.rcv_nxt + len(payload)) & MASK
            # Held bytes under the in-order copy go (it was delivered: Linux's tcp_ofo_queue).
            again = self.ooo.advance(len(payload))
            self.stats.ooo_overlap_bytes += again
            self.stats.bytes_in += len(payload) - again
            self._pull_ooo()
            if self.peer_fin == self.rcv_nxt and not self.fin_received:
                return  # the FIN is next: its ACK (_check_fin) covers these bytes, one ACK
            if self.ooo:
                self._send_ack(now)  # still a hole: tell the sender at once (RFC 5681 §4.2)
                return
            # A segment made of several (a receive offload's, or inline's merged frames)
            # counts for each full one it holds, as Linux counts bytes since its last ACK.
            self.unacked_segments += max(1, len(payload) // self.mss)
            if self.unacked_segments >= 2 or len(payload) < self.mss // 2:
                # Every second segment (RFC 5681 §4.2), and at once for a short one, which
                # is usually the end of a message (a request waiting for its answer).
                self._send_ack(now)
            elif self.delack_at is None:
                self.delack_at = now + DELACK
        else:
            self._store_ooo(off, payload)
            self._send_ack(now)  # out of order: an immediate duplicate ACK (RFC 5681 §4.2)

    def _store_ooo(self, off: int, data: bytes) -> None:
        held = self.ooo.held
        match self.ooo.add(off, data):
            case Arrival.HELD:
                self.stats.bytes_in += self.ooo.held - held
                self.stats.ooo_overlap_bytes += len(data) - (self.ooo.held - held)
            case Arrival.DUPLICATE:
                self.stats.ooo_duplicates += 1
            case Arrival.DROPPED:
                self.stats.ooo_dropped += 1

    def _pull_ooo(self) -> None:
        """Move out-of-order bytes that became contiguous into the read buffer."""
        data = self.ooo.pull()
        if data:
            self.rbuf += data
            self.rcv_nxt = (self.rcv_nxt + len(data)) & MASK

    def _sack_blocks(self) -> list[tuple[int, int]]:
        """Our out-of-order data as SACK blocks, the one holding the latest segment first
        (RFC 2018 §4). A held FIN's sequence number belongs to the block that ends at it, as
        Linux reports it: a block stopping one short leaves the sender's FIN segment
        un-SACKed, and its retransmission can cross our ACK of the FIN, reach a closed socket
        and draw a RST."""
        fin = None if self.peer_fin is None else seq_diff(self.peer_fin, self.rcv_nxt)
        return [
            ((self.rcv_nxt + lo) & MASK, (self.rcv_nxt + hi + (hi == fin)) & MASK)
            for lo, hi in self.ooo.sack_blocks()
        ]

    def _check_fin(self, now: float) -> None:
        if self.peer_fin is None or self.fin_received or self.peer_fin != self.rcv_nxt:
            return
        self.fin_received = True
        self.rcv_nxt = (self.rcv_nxt + 1) & MASK
        if self.state is TcbState.ESTABLISHED:
            self.state = TcbState.CLOSE_WAIT
        elif self.state is TcbState.FIN_WAIT_1:
            if self.fin_acked:
                self._time_wait(now)
            else:
                self.state = TcbState.CLOSING
        elif self.state is TcbState.FIN_WAIT_2:
            self._time_wait(now)
        elif self.state is TcbState.TIME_WAIT:
            self.timewait_at = now + TIME_WAIT
        self._send_ack(now)

    def _time_wait(self, now: float) -> None:
        self.state = TcbState.TIME_WAIT
        self.rto_at = self.persist_at = None
        self.timewait_at = now + TIME_WAIT

    def _closed(self, reset: bool = False) -> None:
        self.state = TcbState.CLOSED
        self.reset = self.reset or reset
        self.rto_at = self.persist_at = self.delack_at = self.timewait_at = None

    # -- output ----------------------------------------------------------------------------

    def _window_field(self) -> int:
        """Our advertised window: what we can buffer, never retreating the right edge the
        peer already has (RFC 9293 §3.8.6.2.2), and moved on only by a full MSS or more
        (receiver SWS avoidance, same section)."""
        free = max(0, RCV_BUFFER - len(self.rbuf) - self.ooo.held)
        edge = (self.rcv_nxt + free) & MASK
        if seq_diff(edge, self.rcv_adv) >= min(self.mss, RCV_BUFFER // 2):
            self.rcv_adv = edge
        wnd = max(0, seq_diff(self.rcv_adv, self.rcv_nxt))
        scale = self.our_wscale
        field = min((wnd + (1 << scale) - 1) >> scale, 0xFFFF)  # rounded up: never shrinks
        self.rcv_adv = (self.rcv_nxt + (field << scale)) & MASK
        return field

    def _window_update(self, now: float, freed: int) -> None:
        before = seq_diff(self.rcv_adv, self.rcv_nxt)
        # After the peer's FIN it sends nothing more: an update is useless (Linux's
        # tcp_cleanup_rbuf checks RCV_SHUTDOWN), and may reach a socket already closed.
        if before < 2 * self.mss and not self.fin_received and self.state is not TcbState.CLOSED:
            self._send_ack(now)

    def _options(self, now: float, with_sack: bool) -> bytes:
        ts = None
        if self.clock is not None:
            ts = (self.clock.value(now), self.ts_recent)
        blocks = self._sack_blocks() if with_sack and self.sack_ok and self.ooo else ()
        return encode_options(timestamps=ts, sack_blocks=blocks)

    def _emit(self, seq: int, ack: int, flags: int, payload: bytes, now: float,
              size: int = 0) -> None:  # fmt: skip
        window = 0 if flags & RST else self._window_field()
        options = self._options(now, not flags & RST)
        self.out.append(Outgoing(seq & MASK, ack, flags, window, options, payload, size))
        self.stats.segments_out += -(-len(payload) // size) if size else 1
        if flags & ACK:
            self.delack_at = None
            self.unacked_segments = 0

    def _send_ack(self, now: float) -> None:
        if self.state is TcbState.CLOSED:
            return
        self._emit(self._wire_nxt(), self.rcv_nxt, ACK, b"", now)

    def _wire_nxt(self) -> int:
        """SND.NXT as the peer counts it: our FIN, once sent, takes a sequence number."""
        return (self.snd_max + 1) & MASK if self.fin_sent else self.snd_max

    def _has_unsent(self) -> bool:
        return seq_diff(self.snd_max, self.snd_una) < len(self.sbuf) or (
            self.fin_queued and not self.fin_sent
        )

    def _retransmit_one(self, now: float) -> bool:
        """Resend the first un-SACKed piece at or after rtx_next, below ``recover``."""
        start = seq_diff(self.rtx_next, self.snd_una)
        limit = min(seq_diff(self.recover, self.snd_una), seq_diff(self.snd_max, self.snd_una))
        for lo, hi in self.sacked:
            if lo <= start < hi:
                start = hi
        if start >= limit:
            if self.fin_sent and not self.fin_acked and start == len(self.sbuf):
                # only our FIN is left to resend: once, then rtx_next is past it
                self._emit(self.snd_max, self.rcv_nxt, FIN | ACK, b"", now)
                self.stats.retransmits += 1
                self.rtx_next = (self.snd_max + 1) & MASK
                return True
            return False
        end = min(start + self._send_mss(now), limit)
        for lo, _hi in self.sacked:
            if start < lo < end:
                end = lo
        payload = bytes(self.sbuf[start:end])
        flags = ACK | (PSH if end == len(self.sbuf) else 0)
        if self.fin_sent and end == len(self.sbuf):
            flags |= FIN
        self._emit(self.snd_una + start, self.rcv_nxt, flags, payload, now)
        self.stats.retransmits += 1
        self.rtx_next = (self.snd_una + end) & MASK
        return True

    def _output(self, now: float) -> None:
        """Send what the windows allow: retransmissions in recovery first, then new data,
        then the FIN."""
        if self.state in (TcbState.CLOSED, TcbState.TIME_WAIT):
            return
        sent_any = False
        # RTO recovery resends the flight under the (re-opening) congestion window.
        while self.recovery is Recovery.RTO and _lt(self.rtx_next, self.recover):
            outstanding = seq_diff(self.snd_max, self.rtx_next)
            resent = seq_diff(self.rtx_next, self.snd_una) - self._sacked_bytes()
            if resent >= self.cwnd or outstanding <= 0:
                break
            if not self._retransmit_one(now):
                break
            sent_any = True
        while True:
            sent_off = seq_diff(self.snd_max, self.snd_una)
            unsent = len(self.sbuf) - sent_off
            wnd_room = self.snd_wnd - sent_off
            cwnd_room = self.cwnd - (sent_off - self._sacked_bytes())
            room = min(wnd_room, cwnd_room)
            if unsent > 0:
                mss = self._send_mss(now)
                n = min(unsent, max(mss, self.burst // mss * mss), room)
                if n <= 0:
                    break
                # Sender SWS avoidance (RFC 9293 §3.8.6.2.1): no runts when more is queued,
                # unless the window will never be larger.
                if n < mss and n < unsent and n < self.max_wnd // 2:
                    break
                if n > mss and n < unsent:
                    n -= n % mss  # a burst is whole segments, but for the queue's last bytes
                payload = bytes(self.sbuf[sent_off : sent_off + n])
                last = n == unsent
                flags = ACK | (PSH if last else 0)
                if last and self.fin_queued and room > n:
                    flags |= FIN
                    self.fin_sent = True
                if self.timed is None and self.recovery is Recovery.NONE:
                    self.timed = ((self.snd_max + n) & MASK, now)
                self._emit(self.snd_max, self.rcv_nxt, flags, payload, now,
                           mss if n > mss else 0)  # fmt: skip
                self.stats.bytes_out += n
                self.snd_max = (self.snd_max + n) & MASK
                sent_any = True
                continue
            if self.fin_queued and not self.fin_sent:
                self._emit(self.snd_max, self.rcv_nxt, FIN | ACK, b"", now)
                self.fin_sent = True
                sent_any = True
            break
        if sent_any:
            self._arm_rto(now)
        idle = self.snd_una == self.snd_max
        if self._has_unsent() and self.snd_wnd == 0 and idle and self.persist_at is None:
            self.persist_at = now + max(self.rto, RTO_MIN)
        if self.unacked_segments and self.delack_at is None:
            self.delack_at = now + DELACK

    def _send_mss(self, now: float) -> int:
        """The data one segment may carry now: the MSS less the SACK blocks it will carry.
        The MSS counts data only, so what a sender adds in options comes off it (RFC 9293
        §3.7.1; Linux's tcp_current_mss); a full segment with blocks on top would exceed the
        path's MTU and be lost at every try while our out-of-order store is not empty."""
        if not (self.sack_ok and self.ooo):
            return self.mss
        return self.mss - (len(self._options(now, True)) - len(self._options(now, False)))

    def _sacked_bytes(self) -> int:
        return sum(hi - lo for lo, hi in self.sacked)
