"""One passively tracked TCP connection: two endpoints, each with its outgoing byte stream."""

from __future__ import annotations

from enum import Enum, StrEnum

from ..reassembly.seq import MASK, seq_diff
from ..reassembly.stream import ByteStream
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
    )

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.isn: int | None = None
        self.base: int | None = None  # sequence number of stream offset 0
        self.syn = False
        self.fin_off: int | None = None  # stream offset of the FIN
        self.seen_end = 0  # highest stream offset sent (captured or promised by IP length)
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
        "fast_slot",
        "bypassed",
        "user",
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
        self.fast_slot = -1  # its slot in the C fast path's table, -1 when not there
        self.bypassed = False  # passed with --bypass: counted, no longer reassembled
        self.user: object = None  # the application's per-connection state

    @property
    def closed(self) -> bool:
        return self.state in (ConnState.CLOSED, ConnState.RESET)

    def endpoints(self) -> tuple[Endpoint, Endpoint]:
        return self.c, self.s
