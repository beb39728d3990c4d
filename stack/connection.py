"""One passively tracked TCP connection: two endpoints, each with its outgoing byte stream."""

from __future__ import annotations

from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Any

from ..reassembly.seq import MASK, seq_diff
from ..reassembly.stream import ByteStream, StreamSink
from .events import CloseReason


class ConnState(StrEnum):
    """Connection state as an observer sees it (RFC 9293 §3.3.2 names where they fit)."""

    SYN_SENT = "SYN"  # a SYN seen, no answer yet
    SYN_RECEIVED = "SYN-ACK"  # the SYN-ACK seen
    ESTABLISHED = "EST"  # handshake done, or picked up mid-stream
    HALF_CLOSED = "FIN"  # one side sent FIN
    CLOSED = "CLOSED"  # both sides sent FIN
    RESET = "RST"  # an acceptable RST


class TimeoutClass(int, Enum):
    HALF_OPEN = 0
    ESTABLISHED = 1
    CLOSING = 2


TIMEOUT_CLASS = {
    ConnState.SYN_SENT: TimeoutClass.HALF_OPEN,
    ConnState.SYN_RECEIVED: TimeoutClass.HALF_OPEN,
    ConnState.ESTABLISHED: TimeoutClass.ESTABLISHED,
    ConnState.HALF_CLOSED: TimeoutClass.ESTABLISHED,
    ConnState.CLOSED: TimeoutClass.CLOSING,
    ConnState.RESET: TimeoutClass.CLOSING,
}


class Endpoint:
    """One side: what it sent (its stream) and the TCP facts learnt from its segments."""

    __slots__ = (
        "stream",
        "isn",
        "base",
        "syn",
        "fin_off",
        "seen_end",
        "window",
        "wscale",
        "mss",
        "sack_permitted",
        "ts_enabled",
        "last_opts",
        "last_ack",
        "packets",
        "payload_bytes",
        "ttl",
        "mac",
        "edge",
        "edge_ack",
        "max_wnd",
        "ts_recent",
        "ts_recent_at",
        "doubtful",
        "ack_claim",
        "fin_held",
        "fin_needed",
    )

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.isn: int | None = None
        self.base: int | None = None  # sequence number of stream offset 0
        self.syn = False
        self.fin_off: int | None = None  # stream offset of the FIN
        self.seen_end = 0  # end of the highest data seen (captured, tentative, or cut by snaplen)
        self.window = -1  # last raw window field; -1 until seen
        self.wscale: int | None = None  # from its SYN
        self.mss: int | None = None
        self.sack_permitted = False
        self.ts_enabled = False  # sent a timestamp option on its SYN
        self.last_opts = b""  # options of its latest in-order segment (TSval for PAWS)
        self.last_ack: int | None = None  # the last ACK number it sent (peer's sequence space)
        self.packets = 0
        self.payload_bytes = 0
        self.ttl = 0
        self.mac = b""
        # The right edge of the window the peer last advertised for this stream (RFC 9293
        # §3.8.6: its latest ACK + scaled window; a receiver judges by its last advertisement),
        # None until the peer has ACKed anything; the ACK it came with; and the largest window
        # advertised: what this side could have had in flight.
        self.edge: int | None = None
        self.edge_ack = 0
        self.max_wnd = 0
        # TS.Recent the peer holds for this side (RFC 7323 §4.3), and when it was taken.
        self.ts_recent: int | None = None
        self.ts_recent_at = 0.0
        # Tentative data that rode on an ACK of peer data never seen: (the peer offset its
        # ACK named, offset, bytes), confirmed once the peer is seen to have sent that much.
        self.doubtful: list[tuple[int, int, bytes]] | None = None
        # The furthest the peer acknowledged of this stream beyond what this side was seen
        # sending: applied as far as this side's later segments show it sent.
        self.ack_claim = 0
        # A FIN the receiver may have dropped (beyond its window, or on an ACK of data never
        # seen): its offset, taken once the receiver's ACK covers it.
        self.fin_held: int | None = None
        # For a FIN that rode on an ACK of data never seen: the peer offset that ACK named
        # (as for doubtful data, the peer seen sending that much confirms it too).
        self.fin_needed: int | None = None

    def learn_syn(
        self, isn: int, wscale: int | None, mss: int | None, sack: bool, ts: bool
    ) -> None:
        """What this side's SYN tells of it: its ISN (its stream starts one after), window
        scale, MSS, SACK-permitted and whether it sent a timestamp."""
        self.syn = True
        self.isn = isn
        self.base = (isn + 1) & MASK
        self.wscale = wscale
        self.mss = mss
        self.sack_permitted = sack
        self.ts_enabled = ts

    @property
    def claimed_end(self) -> int:
        """The end of the data this side sent as far as its segments show, tentative bytes
        included (what an ACK of its stream may reach without inferring unseen data)."""
        return max(self.seen_end, self.stream.tentative_end)

    @property
    def sent_end(self) -> int:
        """SND.NXT as far as anyone can tell: the data seen, or what the peer acknowledged."""
        return max(self.seen_end, self.stream.acked)

    def offset(self, seq: int) -> int:
        """Stream offset of ``seq``, unwrapped around the commit point (base must be known)."""
        nxt = self.stream.nxt
        return nxt + seq_diff(seq, (self.base + nxt) & MASK)  # type: ignore[operator]

    def seq_at(self, offset: int) -> int:
        return (self.base + offset) & MASK  # type: ignore[operator]


class Connection:
    __slots__ = (
        "id",
        "keys",
        "vlans",
        "v6",
        "client",
        "server",
        "c",
        "s",
        "state",
        "midstream",
        "handshake",
        "wscale_ok",
        "ts_ok",
        "start",
        "last_seen",
        "close",
        "anomalies",
        "lru",
        "moved",
        "fast_slot",
        "bypassed",
        "user",
        "alt_synacks",
        "tunnel",
        "born",
    )

    def __init__(
        self,
        conn_id: int,
        keys: tuple[bytes, bytes],
        vlans: tuple[int, ...],
        v6: bool,
        client: tuple[bytes, int],
        server: tuple[bytes, int],
        c: Endpoint,
        s: Endpoint,
        ts: float,
    ) -> None:
        self.id = conn_id
        self.keys = keys  # (client->server key, server->client key) in the flow table
        self.vlans = vlans
        self.v6 = v6
        self.client = client
        self.server = server
        self.c = c
        self.s = s
        self.state = ConnState.ESTABLISHED
        self.midstream = False
        self.handshake = False  # SYN and SYN-ACK both seen
        self.wscale_ok = False  # window scaling in force (both SYNs carried it, RFC 7323 §2.2)
        self.ts_ok = False  # timestamps in force (both SYNs carried them, RFC 7323 §3.2)
        self.start = ts
        self.last_seen = ts
        self.close: CloseReason | None = None
        self.anomalies: dict[str, int] = {}
        self.lru: object = None  # the timeout list this connection is on
        # The tracker's count of TCP frames when it last moved to the end of that list (the
        # order C's own list of light flows is merged in: Tracker._head).
        self.moved = 0
        self.fast_slot = -1  # its slot in the C fast path's table, -1 when not there
        self.bypassed = False  # passed with --bypass: counted, no longer reassembled
        self.user: object = None  # the application's per-connection state
        # SYN-ACKs with another ISN, kept until the client's ACK says which one it took
        # (Suricata's max-synack-queued): (segment, time) each.
        self.alt_synacks: list | None = None
        self.tunnel = 0  # the mirror session it came in (Segment.tunnel), 0 for none
        # A connection C opened and carries (stack/tracker.py Born): c and s are made only
        # when something asks for them (__getattr__). None: they are there.
        self.born: Any = None

    if not TYPE_CHECKING:  # to a type checker, c and s are plain attributes

        def __getattr__(self, name: str) -> Any:
            # Only an unset slot comes here: c and s of a connection C opened, made now as
            # they would have been all along.
            if name in ("c", "s") and self.born is not None:
                self.born.make(self)
                return object.__getattribute__(self, name)
            raise AttributeError(name)

    def syn_facts(self) -> tuple[int | None, int | None, bool]:
        """(the client's MSS, the server's MSS, SACK permitted both ways), as their SYNs
        said, whether c and s are made yet."""
        born = self.born
        if born is not None:
            return born.syn_facts(self)  # type: ignore[no-any-return]
        return self.c.mss, self.s.mss, self.c.sack_permitted and self.s.sack_permitted

    @property
    def has_gaps(self) -> bool:
        """Whether either stream has a gap (one whose endpoints are not made has none: its
        bytes never went to Python's reassembly)."""
        return self.born is None and bool(self.c.stream.gaps or self.s.stream.gaps)

    def sinks(self) -> tuple[StreamSink, StreamSink]:
        """The sinks of its two directions (client's first), whether c and s are made yet
        (a connection C opened has them made now if they are not: Born.make_sinks)."""
        born = self.born
        if born is not None:
            return born.sinks or born.make_sinks(self)  # type: ignore[no-any-return]
        return self.c.stream.sink, self.s.stream.sink

    def made_sinks(self) -> tuple[StreamSink, StreamSink] | None:
        """sinks(), or None where they are not made (and need not be)."""
        born = self.born
        if born is not None:
            return born.sinks  # type: ignore[no-any-return]
        return self.c.stream.sink, self.s.stream.sink

    @property
    def closed(self) -> bool:
        return self.state in (ConnState.CLOSED, ConnState.RESET)

    def endpoints(self) -> tuple[Endpoint, Endpoint]:
        return self.c, self.s

    def length(self, ep: Endpoint) -> int:
        """How long ``ep``'s stream is: what was delivered, or for a bypassed connection
        (reassembly stopped at the verdict) as far as the sequence numbers tell, bounded by
        what the receiver acknowledged when its ACKs were seen (data it never took is not
        the stream: an injected segment far ahead does not make a connection bigger)."""
        peer = self.s if ep is self.c else self.c
        return stream_length(
            self.bypassed, ep.stream.delivered, ep.base, ep.seen_end, peer.last_ack
        )


def stream_length(
    bypassed: bool, delivered: int, base: int | None, seen_end: int, peer_last_ack: int | None
) -> int:
    """Connection.length from the numbers it reads."""
    if not bypassed or base is None:
        return delivered
    end = seen_end
    if peer_last_ack is not None:
        acked = end + seq_diff(peer_last_ack, (base + end) & MASK)
        end = min(end, acked)
    return max(delivered, end)


def end_hint(seen_end: int, acked: int, fin_off: int | None) -> int:
    """Tracker._end_hint from the numbers it reads."""
    if fin_off is not None:
        return max(seen_end, min(acked, fin_off))
    if acked == seen_end + 1:
        return seen_end
    return max(seen_end, acked)
