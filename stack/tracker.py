"""Passive tracking of every TCP connection seen: the flow table and both endpoints' state.

Follows RFC 9293 (handshake, FIN, sequence space), RFC 5961 §3 and RFC 9293 §3.10.7.4 (which
RSTs a receiver accepts), RFC 7323 (window scale, timestamps and PAWS) and RFC 7413 (data on
SYN). Sans-I/O: segments and capture timestamps in, events out; stream bytes leave through the
sinks the application hands in.

Bounded: ``max_flows`` connections (the stalest is evicted), ``max_buffer`` buffered bytes over
all streams (the stalest connections are forced past their holes), idle timeouts per state
class. Every limit that bites is counted.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..reassembly.policy import OverlapPolicy
from ..reassembly.seq import MASK, seq_diff
from ..reassembly.stream import Budget, ByteStream, StreamSink
from .connection import TIMEOUT_CLASS, Connection, ConnState, Endpoint
from .decode import ACK, FIN, RST, SYN, Segment
from .events import CloseReason, Direction, Event, FlowClosed, FlowOpened
from .fastpath import CFastPath
from .options import parse_options, timestamp

SinkFactory = Callable[[Connection, Direction], StreamSink]

EPHEMERAL_LOW = 32768
_FAST_STATES = (
    ConnState.SYN_RECEIVED,
    ConnState.ESTABLISHED,
    ConnState.HALF_CLOSED,
    ConnState.CLOSED,
)
_PSH_ACK_FIN = 0x19
_HALF = 1 << 31
MAX_SEQ_JUMP = 1 << 30  # a segment further than this from the stream is not this stream's


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    overlap_policy: OverlapPolicy = OverlapPolicy.FIRST
    ignore_vlan: bool = False
    verify_checksums: bool = False
    max_flows: int = 1_000_000
    max_flow_buffer: int = 4 << 20
    max_buffer: int = 512 << 20
    timeout_half_open: float = 60.0
    timeout_established: float = 600.0
    timeout_closing: float = 60.0


class _NullSink:
    def data(self, offset: int, data: bytes) -> None:
        pass

    def gap(self, offset: int, length: int) -> None:
        pass


def _null_factory(conn: Connection, direction: Direction) -> StreamSink:
    return _NullSink()


def guess_server_is_first(sport: int, dport: int) -> bool:
    """Mid-stream orientation: the side on a well-known port (< 1024), else the side below the
    ephemeral range, is the server. Returns True when the *sender* looks like the server."""
    if (sport < 1024) != (dport < 1024):
        return sport < 1024
    if (sport < EPHEMERAL_LOW) != (dport < EPHEMERAL_LOW):
        return sport < EPHEMERAL_LOW
    return False


class Tracker:
    def __init__(self, config: TrackerConfig | None = None, sinks: SinkFactory | None = None):
        self.config = config or TrackerConfig()
        self.sinks = sinks or _null_factory
        self.budget = Budget()
        self.table: dict[bytes, tuple[Connection, bool]] = {}  # key -> (conn, sender is client)
        self.lrus: tuple[OrderedDict[Connection, None], ...] = (
            OrderedDict(),
            OrderedDict(),
            OrderedDict(),
        )
        c = self.config
        self.timeouts = (c.timeout_half_open, c.timeout_established, c.timeout_closing)
        self.events: list[Event] = []
        self.anomalies: Counter[str] = Counter()
        self.next_id = 0
        self.active = 0
        self.evicted = 0
        self.buffer_forced = 0
        self.orphans = 0  # segments of no known connection that could not start one
        self.tcp_packets = 0
        self.last_expiry = float("-inf")
        self.now = 0.0
        self.fast: CFastPath | None = None  # set by the application to use the C fast path
        self.config_retain = 256 << 10  # bytes kept per direction for conflict checks

    def use_fast_path(self, fast: CFastPath) -> None:
        self.fast = fast
        fast.place = self._place

    # -- flow table ----------------------------------------------------------------------------

    def key(self, seg: Segment) -> tuple[bytes, bytes]:
        """(this direction's key, the reverse direction's key) in the flow table."""
        return self._key(seg)

    def _key(self, seg: Segment) -> tuple[bytes, bytes]:
        sp = seg.sport.to_bytes(2, "big")
        dp = seg.dport.to_bytes(2, "big")
        prefix = b"" if self.config.ignore_vlan or not seg.vlans else repr(seg.vlans).encode()
        return (prefix + seg.src + seg.dst + sp + dp, prefix + seg.dst + seg.src + dp + sp)

    def _open(self, ts: float, seg: Segment, keys: tuple[bytes, bytes], sender_client: bool):
        if self.active >= self.config.max_flows:
            self._evict_stalest()
        a = (seg.src, seg.sport)
        b = (seg.dst, seg.dport)
        client, server = (a, b) if sender_client else (b, a)
        ckey, skey = keys if sender_client else (keys[1], keys[0])
        cfg = self.config
        vlans = () if cfg.ignore_vlan else seg.vlans
        conn = Connection(
            self.next_id,
            (ckey, skey),
            vlans,
            seg.v6,
            client,
            server,
            Endpoint(ByteStream(_NullSink(), cfg.overlap_policy, cfg.max_flow_buffer, self.budget)),
            Endpoint(ByteStream(_NullSink(), cfg.overlap_policy, cfg.max_flow_buffer, self.budget)),
            ts,
        )
        if cfg.ignore_vlan and seg.vlans:
            conn.vlans = seg.vlans  # reported, not keyed
        self.next_id += 1
        conn.c.stream.sink = self.sinks(conn, Direction.C2S)
        conn.s.stream.sink = self.sinks(conn, Direction.S2C)
        self.table[ckey] = (conn, True)
        self.table[skey] = (conn, False)
        self.active += 1
        self._place(conn)
        self.events.append(FlowOpened(conn))
        return conn

    def _place(self, conn: Connection) -> None:
        """Put the connection on its state's timeout list; each list is kept in order of
        last_seen (every path that sees a packet moves the connection to the end)."""
        lru = self.lrus[TIMEOUT_CLASS[conn.state]]
        if conn.lru is not lru:
            if conn.lru is not None:
                del conn.lru[conn]  # type: ignore[attr-defined]
            lru[conn] = None
            conn.lru = lru

    def _finish(self, conn: Connection, reason: CloseReason) -> None:
        """Take a connection out of the table, flush its streams, emit FlowClosed."""
        if conn.fast_slot >= 0:
            self.fast.detach(conn)  # type: ignore[union-attr]
        for key in conn.keys:
            entry = self.table.get(key)
            if entry is not None and entry[0] is conn:
                del self.table[key]
        if conn.lru is not None:
            del conn.lru[conn]  # type: ignore[attr-defined]
            conn.lru = None
        self.active -= 1
        for ep in (conn.c, conn.s):
            # A bypassed stream ends where reassembly stopped: nothing after it is a gap.
            ep.stream.flush(0 if conn.bypassed else self._end_hint(ep))
            if ep.stream.acked_gaps:
                conn.anomalies["ack_unseen"] = (
                    conn.anomalies.get("ack_unseen", 0) + ep.stream.acked_gaps
                )
                self.anomalies["ack_unseen"] += ep.stream.acked_gaps
        if conn.state is ConnState.RESET:
            reason = CloseReason.RST
        elif conn.state is ConnState.CLOSED:
            reason = CloseReason.FIN
        conn.close = reason
        self.events.append(FlowClosed(conn, reason))

    @staticmethod
    def _end_hint(ep: Endpoint) -> int:
        """Where the stream ends: the sender's last byte or, past it, what the peer ACKed (data
        the capture never held). An ACK one past the last byte acknowledges a FIN (RFC 9293
        §3.4): when that FIN was not captured it is not a missing byte."""
        acked = ep.stream.acked
        end = ep.seen_end
        if ep.fin_off is not None:
            return max(end, min(acked, ep.fin_off))
        if acked == end + 1:
            return end
        return max(end, acked)

    def _evict_stalest(self) -> None:
        heads = [next(iter(lru)) for lru in self.lrus if lru]
        if heads:
            victim = min(heads, key=lambda c: c.last_seen)
            self.evicted += 1
            self._finish(victim, CloseReason.EVICTED)

    def _enforce_buffer(self) -> None:
        """Over the global cap: force the stalest connections' streams past their holes."""
        cap = self.config.max_buffer
        for lru in self.lrus:
            for conn in list(lru):
                for ep in (conn.c, conn.s):
                    if ep.stream.buffered:
                        ep.stream.force(ep.stream.buffered)
                        self.buffer_forced += 1
                if self.budget.used <= cap:
                    return

    def expire(self, now: float) -> None:
        """Close connections idle longer than their state's timeout (capture time)."""
        for cls, lru in enumerate(self.lrus):
            limit = now - self.timeouts[cls]
            while lru:
                conn = next(iter(lru))
                if conn.last_seen >= limit:
                    break
                self._finish(conn, CloseReason.TIMEOUT)

    def flush(self) -> None:
        """End of input: every connection still open ends with reason ``eof``."""
        for lru in self.lrus:
            while lru:
                self._finish(next(iter(lru)), CloseReason.EOF)

    def drain_events(self) -> list[Event]:
        events, self.events = self.events, []
        return events

    # -- per segment ---------------------------------------------------------------------------

    def segment(self, ts: float, seg: Segment) -> None:
        self.tcp_packets += 1
        self.now = ts
        if ts - self.last_expiry >= 1.0:
            self.last_expiry = ts
            self.expire(ts)
        if seg.checksum_ok is False:
            self.anomalies["bad_checksum"] += 1
            return
        keys = self._key(seg)
        flags = seg.flags
        entry = self.table.get(keys[0])
        if entry is None:
            conn = self._new_connection(ts, seg, keys)
            if conn is None:
                return
            from_client = conn.keys[0] == keys[0]
        else:
            conn, from_client = entry
            if conn.fast_slot >= 0:
                self.fast.detach(conn)  # type: ignore[union-attr]
            if flags & SYN and not flags & ACK:
                conn, from_client = self._syn_on_known(ts, seg, keys, conn, from_client)
        conn.last_seen = ts
        lru = conn.lru
        if lru is not None:
            lru.move_to_end(conn)  # type: ignore[attr-defined]
        sender, peer = (conn.c, conn.s) if from_client else (conn.s, conn.c)
        self._process(conn, sender, peer, seg, from_client)
        if self.budget.used > self.config.max_buffer:
            self._enforce_buffer()
        fast = self.fast
        if fast is not None and conn.lru is not None and fast.eligible(conn):
            fast.attach(conn)

    def fast_segment(
        self,
        ts: float,
        key: bytes,
        seq: int,
        ack: int,
        flags: int,
        window: int,
        options: bytes,
        payload: bytes,
        ttl: int,
    ) -> bool:
        """The common case in one function: an ACK, with or without in-order data, with or
        without FIN, on an established or closing connection. Returns False, having changed
        nothing, for anything else; the caller then takes the general path (:meth:`segment`),
        which gives the same results. _fast.c does exactly this in C; the test suite runs
        through all three (``UINET_TAP_FASTPATH``). Timeouts due at ``ts`` run first, as
        segment() runs them (the frame is a TCP segment either way): they may end this very
        connection, and then the frame is not its."""
        if ts - self.last_expiry >= 1.0:
            self.last_expiry = ts
            self.expire(ts)
        entry = self.table.get(key)
        if entry is None or flags & ~_PSH_ACK_FIN or not flags & ACK:
            return False
        conn, from_client = entry
        if conn.state not in _FAST_STATES:
            return False
        ep, peer = (conn.c, conn.s) if from_client else (conn.s, conn.c)
        if conn.bypassed:
            self._fast_seen(ts, conn, ep, ttl)
            ep.payload_bytes += len(payload)
            ep.last_ack = ack
            ep.window = window
            if flags & FIN:
                self._on_fin(conn, ep, ep.seen_end)
            return True
        base = ep.base
        pbase = peer.base
        if base is None or pbase is None or not peer.packets:
            return False
        stream = ep.stream
        nxt = stream.nxt
        n = len(payload)
        fin = flags & FIN
        off = nxt + (((seq - base - nxt + _HALF) & MASK) - _HALF)
        if n:
            if (
                off != nxt
                or stream.segs
                or not stream.final
                or conn.state is ConnState.CLOSED  # data after both FINs: the general path
                or (n == 1 and (off == ep.seen_end - 1 or peer.window == 0))
            ):
                return False
        elif off != ep.seen_end if fin else off == ep.seen_end - 1:
            return False  # a FIN elsewhere, or a keepalive / zero-window probe
        pstream = peer.stream
        pnxt = pstream.nxt
        aoff = pnxt + (((ack - pbase - pnxt + _HALF) & MASK) - _HALF)
        if aoff > pstream.acked:
            if peer.fin_off is not None:
                if aoff > peer.fin_off:
                    aoff = peer.fin_off  # the ACK of a FIN covers no byte
            elif aoff > peer.seen_end:
                return False  # bytes never seen, or the ACK of an unseen FIN
        # -- committed to the fast path from here on --
        self._fast_seen(ts, conn, ep, ttl)
        ep.last_ack = ack
        if conn.state is ConnState.SYN_RECEIVED and aoff >= 0 and ep is conn.c:
            conn.state = ConnState.ESTABLISHED  # the client ACKed the SYN-ACK
            self._place(conn)
        if aoff > pstream.acked:
            pstream.ack(aoff)
        if n:
            ep.payload_bytes += n
            end = off + n
            if end > ep.seen_end:
                ep.seen_end = end
                ep.last_opts = options
            stream._commit(payload)
        if fin:
            self._on_fin(conn, ep, off + n)
        ep.window = window
        return True

    def _fast_seen(self, ts: float, conn: Connection, ep: Endpoint, ttl: int) -> None:
        """The bookkeeping of every segment the fast path takes (segment() does the same)."""
        self.tcp_packets += 1
        self.now = ts
        conn.last_seen = ts
        conn.lru.move_to_end(conn)  # type: ignore[attr-defined]
        ep.packets += 1
        ep.ttl = ttl

    def _new_connection(
        self, ts: float, seg: Segment, keys: tuple[bytes, bytes]
    ) -> Connection | None:
        flags = seg.flags
        if flags & SYN:
            # SYN: the sender is the client. SYN-ACK with the SYN missed: the sender is the server.
            conn = self._open(ts, seg, keys, sender_client=not flags & ACK)
            conn.state = ConnState.SYN_SENT if not flags & ACK else ConnState.SYN_RECEIVED
            self._place(conn)
            return conn
        if flags & RST or not (seg.payload or seg.missing):
            # No SYN and nothing to reconstruct: a stray ACK, FIN or RST of a connection
            # that ended or was never seen. Counted; it cannot start a stream.
            self.orphans += 1
            return None
        server_first = guess_server_is_first(seg.sport, seg.dport)
        conn = self._open(ts, seg, keys, sender_client=not server_first)
        conn.midstream = True
        conn.state = ConnState.ESTABLISHED
        self._place(conn)
        return conn

    def _syn_on_known(
        self,
        ts: float,
        seg: Segment,
        keys: tuple[bytes, bytes],
        conn: Connection,
        from_client: bool,
    ) -> tuple[Connection, bool]:
        """A bare SYN on a known 4-tuple: a retransmission, the other half of a simultaneous
        open, the original SYN captured late, or a new connection reusing the tuple."""
        ep = conn.c if from_client else conn.s
        if ep.isn is not None and ep.isn == seg.seq:
            return conn, from_client  # retransmitted SYN
        if (
            ep.isn is None
            and ep.base is not None
            and not conn.closed
            and seq_diff(ep.base, seg.seq) == 1
        ):
            # The SYN of a connection picked up mid-stream, captured late (arkime PR #4019):
            # it sits just before the stream's first byte.
            return conn, from_client
        if ep.isn is None and ep.base is None and conn.state is ConnState.SYN_SENT:
            return conn, from_client  # simultaneous open: the peer's own SYN
        # A SYN with a new ISN on a tuple in use: RFC 9293 §3.10.7.4 would challenge it in
        # ESTABLISHED, but to a passive observer a fresh SYN with another ISN is the start of
        # the next connection (Suricata, Zeek and tcpflow all split here).
        self._finish(conn, CloseReason.TIMEOUT if not conn.closed else CloseReason.FIN)
        new = self._open(ts, seg, keys, sender_client=True)
        new.state = ConnState.SYN_SENT
        self._place(new)
        self._anomaly(new, "tuple_reuse")
        return new, True

    def _anomaly(self, conn: Connection, kind: str) -> None:
        conn.anomalies[kind] = conn.anomalies.get(kind, 0) + 1
        self.anomalies[kind] += 1

    def _process(
        self, conn: Connection, ep: Endpoint, peer: Endpoint, seg: Segment, from_client: bool
    ) -> None:
        flags = seg.flags
        ep.packets += 1
        ep.ttl = seg.ttl
        if seg.macs and not ep.mac:
            ep.mac = seg.macs[6:12]  # the sender's own address (source MAC)
        if conn.state is ConnState.SYN_SENT and not ep.syn and not flags & SYN:
            # The SYN's receiver has not answered yet. RFC 9293 §3.10.7.3: in SYN-SENT the
            # client drops any segment without SYN but a RST that ACKs its SYN; in LISTEN the
            # server ignores a RST. Injected RSTs and FINs ahead of the SYN-ACK land here.
            if flags & RST and not from_client and self._rst_answers_syn(conn, ep, peer, seg):
                conn.state = ConnState.RESET
                self._place(conn)
            else:
                self._anomaly(conn, "invalid_in_handshake")
            return
        if conn.bypassed:
            self._counted_only(conn, ep, peer, seg)
            return
        if flags & SYN:
            self._on_syn(conn, ep, peer, seg)
        elif ep.base is None:
            ep.base = seg.seq  # no SYN from this side: its stream starts at the first byte seen
        if flags & RST:
            if not self._rst_acceptable(conn, ep, peer, seg):
                return  # neither ends the flow nor touches its state (RFC 5961 §3)
            if conn.state is ConnState.CLOSED:
                # Both FINs were exchanged: the connection already ended cleanly; a RST now
                # (a kernel answering a late duplicate ACK on a closed socket) does not make
                # it a reset one.
                self._anomaly(conn, "rst_after_fin")
            else:
                conn.state = ConnState.RESET
                self._place(conn)
        if flags & ACK:
            self._on_ack(conn, ep, peer, seg.ack)
        payload = seg.payload
        nbytes = len(payload) + seg.missing
        seq = seg.seq
        if flags & SYN:
            seq = (seq + 1) & MASK  # SYN data starts after the SYN (RFC 7413 §2)
        off = ep.offset(seq)
        if nbytes:
            if flags & RST:
                # RFC 9293 §3.5.3 lets a RST carry diagnostic text. tshark and tcpflow put it
                # in the stream (Suricata does not); we keep it, and say so.
                self._anomaly(conn, "rst_with_data")
            self._on_data(conn, ep, peer, seg, off, payload, nbytes)
        elif off == ep.seen_end - 1 and not flags & (SYN | FIN | RST):
            # RFC 9293 §3.8.4 keepalive and the Linux zero-window probe: empty, at SND.NXT-1.
            self._anomaly(conn, "zero_window_probe" if peer.window == 0 else "keepalive")
        if flags & FIN:
            self._on_fin(conn, ep, off + nbytes)
        ep.window = seg.window

    def forget(self, conn: Connection) -> None:
        """Stop timing a connection out: inline mode's cut-in owns it and will end it."""
        if conn.lru is not None:
            del conn.lru[conn]  # type: ignore[attr-defined]
            conn.lru = None

    def end(self, conn: Connection, reason: CloseReason) -> None:
        """End a connection for a reason the capture does not show (inline mode: its own RSTs
        when it blocks a flow, or the end of a cut-in): its record is written now."""
        if reason is CloseReason.RST:
            conn.state = ConnState.RESET
        elif reason is CloseReason.FIN:
            conn.state = ConnState.CLOSED
        self._finish(conn, reason)

    def bypass(self, conn: Connection) -> None:
        """Stop reassembling a connection (a PASS verdict with --bypass): from now on its
        segments only move counters and its state; what was buffered is flushed at the end."""
        conn.bypassed = True
        if conn.fast_slot >= 0:
            self.fast.bypass(conn)  # type: ignore[union-attr]

    def _counted_only(self, conn: Connection, ep: Endpoint, peer: Endpoint, seg: Segment) -> None:
        flags = seg.flags
        ep.payload_bytes += len(seg.payload) + seg.missing
        if flags & ACK:
            ep.last_ack = seg.ack
        # Without the byte stream no RST can be checked against it: any RST ends it.
        if flags & RST and not conn.closed:
            conn.state = ConnState.RESET
            self._place(conn)
        elif flags & FIN:
            self._on_fin(conn, ep, ep.seen_end)
        ep.window = seg.window

    def _on_syn(self, conn: Connection, ep: Endpoint, peer: Endpoint, seg: Segment) -> None:
        if ep.isn is not None:
            return  # retransmitted SYN or SYN-ACK
        opts = parse_options(seg.options)
        ep.syn = True
        ep.isn = seg.seq
        ep.base = (seg.seq + 1) & MASK
        ep.wscale = opts.wscale
        ep.mss = opts.mss
        ep.sack_permitted = opts.sack_permitted
        ep.ts_enabled = opts.tsval is not None
        ep.last_opts = seg.options
        if seg.flags & ACK:
            if peer.syn:
                conn.handshake = True
                conn.wscale_ok = ep.wscale is not None and peer.wscale is not None
                conn.ts_ok = ep.ts_enabled and peer.ts_enabled
            if conn.state is ConnState.SYN_SENT:
                conn.state = ConnState.SYN_RECEIVED
                self._place(conn)
        elif peer.syn and peer.isn != seg.seq:
            self._anomaly(conn, "simultaneous_open")  # RFC 9293 §3.5, figure 8
        if seg.payload:
            self._anomaly(conn, "syn_data")

    def _on_ack(self, conn: Connection, ep: Endpoint, peer: Endpoint, ack: int) -> None:
        ep.last_ack = ack
        if peer.base is None:
            # The peer's first byte is what this side acknowledges (its SYN-ACK was not seen).
            peer.base = ack
            return
        if not peer.packets:
            # The capture holds no segment of the peer at all (an asymmetric tap, a one-sided
            # capture): its ACKs say bytes flowed, but that direction was never in view, so it
            # is reported empty rather than as one long gap (Suricata's async-oneside).
            return
        off = peer.offset(ack)
        if peer.fin_off is not None:
            if off > peer.fin_off:
                off = peer.fin_off  # the ACK of a FIN covers no byte
        elif off == peer.seen_end + 1 and off > peer.stream.acked:
            off = peer.seen_end  # most likely the ACK of a FIN the capture missed
        if off > peer.seen_end:
            if off - peer.seen_end > MAX_SEQ_JUMP:
                self._anomaly(conn, "ack_out_of_range")
                return
            peer.seen_end = off
        if conn.state is ConnState.SYN_RECEIVED and off >= 0 and ep is conn.c:
            conn.state = ConnState.ESTABLISHED
            self._place(conn)
        peer.stream.ack(off)

    def _on_data(
        self,
        conn: Connection,
        ep: Endpoint,
        peer: Endpoint,
        seg: Segment,
        off: int,
        payload: bytes,
        nbytes: int,
    ) -> None:
        stream = ep.stream
        if (
            nbytes == 1
            and off == ep.seen_end - 1
            and stream.nxt >= ep.seen_end
            and peer.last_ack == ep.seq_at(ep.seen_end)
        ):
            # A keepalive with one garbage byte at SND.NXT-1 (RFC 9293 §3.8.4), sent only when
            # everything is acknowledged, or a zero-window probe re-sending that byte: already
            # in the stream and not compared. Unacknowledged, the same segment is a
            # retransmission and is compared like any other.
            self._anomaly(conn, "zero_window_probe" if peer.window == 0 else "keepalive")
            return
        if peer.window == 0 and nbytes == 1 and off == ep.seen_end and peer.last_ack is not None:
            # A probe into a zero window (RFC 9293 §3.8.6.1): the receiver drops it and the
            # sender sends the byte again when the window opens; do not let it decide the byte.
            self._anomaly(conn, "zero_window_probe")
            return
        if off < 0:
            if off + nbytes <= 0:
                self._anomaly(conn, "data_before_start")
                return
            payload = payload[-off:]
            nbytes += off
            off = 0
        if off - ep.seen_end > MAX_SEQ_JUMP:
            self._anomaly(conn, "seq_out_of_range")
            return
        if conn.closed:
            self._anomaly(conn, "data_after_close")
        ep.payload_bytes += nbytes
        end = off + nbytes
        if end > ep.seen_end:
            ep.seen_end = end
            ep.last_opts = seg.options
        if seg.missing:
            self._anomaly(conn, "truncated_segment")
        if payload and stream.add(off, payload):
            self._anomaly(conn, "overlap_conflict")

    def _on_fin(self, conn: Connection, ep: Endpoint, fin_off: int) -> None:
        if ep.fin_off is None:
            ep.fin_off = fin_off
            if fin_off > ep.seen_end:
                ep.seen_end = fin_off
        if conn.state is ConnState.RESET or conn.state is ConnState.CLOSED:
            return
        other = conn.s if ep is conn.c else conn.c
        conn.state = ConnState.CLOSED if other.fin_off is not None else ConnState.HALF_CLOSED
        self._place(conn)

    def _rst_answers_syn(
        self, conn: Connection, ep: Endpoint, peer: Endpoint, seg: Segment
    ) -> bool:
        """RFC 9293 §3.10.7.3: in SYN-SENT a RST counts only if it ACKs the SYN. Linux also
        drops it when its TSecr does not echo a timestamp the client sent (PAWS on the
        handshake; the bug-3286 evasion)."""
        if not seg.flags & ACK or peer.isn is None or seg.ack != (peer.isn + 1) & MASK:
            self._anomaly(conn, "rst_out_of_window")
            return False
        if peer.ts_enabled:
            opts = parse_options(seg.options)
            syn_ts = timestamp(peer.last_opts)
            if opts.tsecr and syn_ts is not None and seq_diff(opts.tsecr, syn_ts) < 0:
                self._anomaly(conn, "rst_paws")
                return False
        return True

    def _rst_acceptable(self, conn: Connection, ep: Endpoint, peer: Endpoint, seg: Segment) -> bool:
        """Would the receiver act on this RST? RFC 5961 §3.2 / RFC 9293 §3.10.7.4: only one
        at exactly RCV.NXT resets; one elsewhere in the window draws a challenge ACK; one
        outside the window is dropped. PAWS (RFC 7323 §5.3) applies first."""
        if conn.state is ConnState.RESET:
            return True
        if conn.ts_ok:
            tsval = timestamp(seg.options)
            recent = timestamp(ep.last_opts) if ep.last_opts else None
            if tsval is not None and recent is not None and seq_diff(tsval, recent) < 0:
                self._anomaly(conn, "rst_paws")
                return False
        seq = seg.seq
        # A FIN takes one sequence number (RFC 9293 §3.4): after it, SND.NXT is one past it.
        snd_nxt = ep.seq_at(ep.seen_end if ep.fin_off is None else ep.fin_off + 1)
        rcv_nxt = peer.last_ack if peer.last_ack is not None else snd_nxt
        if seq in (rcv_nxt, snd_nxt):
            return True
        shift = (peer.wscale or 0) if conn.wscale_ok else 0
        window = max(peer.window, 1) << shift
        if 0 < seq_diff(seq, rcv_nxt) < window:
            self._anomaly(conn, "rst_inexact")
        else:
            self._anomaly(conn, "rst_out_of_window")
        return False
