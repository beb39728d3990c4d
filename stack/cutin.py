"""What an inline cut-in needs to know about a flow before it takes it over.

While a flow is undecided, every frame the inline tool forwards is shown to the flow's
:class:`CutInWatch`: per endpoint, how its frames look on the wire (layer-2 header with the
whole VLAN tag stack, TTL, IP ID, DS field), where its byte stream stands (next sequence number
forwarded, last ACK and window sent), its timestamp clock, and the bytes it sent that the peer
has not acknowledged yet. At the takeover these become the two :class:`~.active.Takeover`
records and the two frame templates of the active endpoints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from ..reassembly.seq import MASK, seq_diff
from .active import Takeover, TsClock
from .connection import Connection
from .decode import Segment
from .emit import PathTemplate

VLAN_TPIDS = (0x8100, 0x88A8, 0x9100, 0x9200, 0x9300)
# Common TCP timestamp clock rates (Linux: 1000 Hz since 4.13, 250/300/100 before; BSD: 1000;
# Windows: 10 or 100). A measured rate near one of them is taken as it.
COMMON_TS_RATES = (1.0, 10.0, 100.0, 250.0, 300.0, 1000.0)
DEFAULT_TS_RATE = 1000.0
IPV4_HEADER, IPV6_HEADER, TCP_HEADER, TS_OPTION = 20, 40, 20, 12
DEFAULT_MSS = 536  # RFC 9293 §3.7.1, when the SYN carried none
HOLD_LIMIT = 2.0  # seconds an armed cut-in may drop frames that would open a hole


class NotReady(NamedTuple):
    """Why a takeover cannot happen now; ``final``: nor later (the cut-in fails)."""

    reason: str
    final: bool


def l2_header(frame: bytes) -> bytes:
    """The Ethernet header up to and including the IP ethertype, tags and all."""
    off = 12
    while len(frame) >= off + 4 and int.from_bytes(frame[off : off + 2], "big") in VLAN_TPIDS:
        off += 4
    return frame[: off + 2]


class InFlight:
    """An endpoint's forwarded bytes that its peer has not acknowledged yet."""

    __slots__ = ("base", "data", "pieces")

    def __init__(self) -> None:
        self.base: int | None = None  # sequence number of data[0]
        self.data = bytearray()
        self.pieces: dict[int, bytes] = {}  # beyond a hole: seq -> bytes

    @property
    def end(self) -> int | None:
        return None if self.base is None else (self.base + len(self.data)) & MASK

    def add(self, seq: int, payload: bytes) -> None:
        if self.base is None:
            self.base = seq
        off = seq_diff(seq, self.base)
        if off < 0:
            payload = payload[-off:]
            off = 0
        have = len(self.data)
        if off > have:
            self.pieces[seq] = payload
            return
        if off + len(payload) > have:
            self.data += payload[have - off :]
            self._absorb()

    def _absorb(self) -> None:
        while self.pieces:
            end = self.end
            assert end is not None
            hit = [s for s in self.pieces if seq_diff(s, end) <= 0]
            if not hit:
                return
            for s in hit:
                p = self.pieces.pop(s)
                over = seq_diff(end, s)
                if over < len(p):
                    self.data += p[over:]
                    end = self.end
                    assert end is not None

    def ack(self, ack: int) -> None:
        if self.base is None:
            return
        n = seq_diff(ack, self.base)
        if n <= 0:
            return
        if n >= len(self.data):
            # Acknowledged past what we hold (bytes the tool never had): start again there.
            self.data.clear()
            self.base = ack
            self.pieces = {s: p for s, p in self.pieces.items() if seq_diff(s, ack) >= 0}
            self._absorb()
            return
        del self.data[:n]
        self.base = ack

    @property
    def contiguous(self) -> bool:
        return not self.pieces

    def take(self, una: int, nxt: int) -> bytes | None:
        """The bytes [una, nxt), or None where they are not all here."""
        n = seq_diff(nxt, una)
        if n == 0:
            return b""
        if self.base is None or n < 0:
            return None
        off = seq_diff(una, self.base)
        if off < 0 or off + n > len(self.data):
            return None
        return bytes(self.data[off : off + n])


@dataclass(slots=True)
class SideSeen:
    """One endpoint as its forwarded frames showed it."""

    iface: int = -1  # which of the two interfaces its frames arrive on
    l2: bytes = b""
    ttl: int = 64
    tos: int = 0
    flow_label: int = 0
    ip_id: int = 0
    df: bool = True
    nxt: int | None = None  # sequence number after its last forwarded byte
    ack: int | None = None  # the last ACK number it sent
    window: int = 0  # its last raw window field
    ts_first: tuple[float, int] | None = None  # (time, TSval) of its first timestamp
    ts_last: tuple[float, int] | None = None
    fin: bool = False
    rst: bool = False
    unacked: InFlight = field(default_factory=InFlight)

    def ts_rate(self) -> float:
        """Its timestamp clock's rate, measured over what was seen, snapped to a common one."""
        if self.ts_first is None or self.ts_last is None:
            return DEFAULT_TS_RATE
        dt = self.ts_last[0] - self.ts_first[0]
        dv = seq_diff(self.ts_last[1], self.ts_first[1])
        if dt < 0.2 or dv <= 0:
            return DEFAULT_TS_RATE
        rate = dv / dt
        for common in COMMON_TS_RATES:
            if abs(rate - common) <= 0.25 * common:
                return common
        return rate


def ip_fields(frame: bytes, l2len: int) -> tuple[int, int, int, bool, int]:
    """(tos or traffic class, IPv4 ID, flow label, DF, TTL or hop limit) of a frame."""
    ip = frame[l2len:]
    if ip and ip[0] >> 4 == 4 and len(ip) >= 20:
        return ip[1], int.from_bytes(ip[4:6], "big"), 0, bool(ip[6] & 0x40), ip[8]
    if ip and ip[0] >> 4 == 6 and len(ip) >= 40:
        word = int.from_bytes(ip[0:4], "big")
        return (word >> 20) & 0xFF, 0, word & 0xFFFFF, True, ip[7]
    return 0, 0, 0, True, 64


class CutInWatch:
    """Per undecided flow in inline mode: index 0 is the client, 1 the server."""

    __slots__ = ("sides", "holding_since")

    def __init__(self) -> None:
        self.sides = (SideSeen(), SideSeen())
        self.holding_since: float | None = None

    def opens_hole(self, conn: Connection, from_client: bool, seg: Segment, now: float) -> bool:
        """Armed (the verdict is intercept, the takeover not possible yet): would forwarding
        ``seg`` leave a hole in its sender's bytes in flight? It starts past everything the
        sender was seen sending, so what lies between was lost before the tool. Such a frame
        is better dropped, as if lost with them: under steady loss a new hole opens before the
        old ones fill, the flow never stands still, and the cut-in waits until a side closes.
        Dropped, the sender resends it (to the tool, once it owns the flow) and the holes
        already open fill with its retransmissions. For HOLD_LIMIT seconds at most."""
        if seg.flags & 0x06 or not (seg.payload or seg.flags & 0x01):
            return False  # SYN or RST, or a pure ACK: nothing that opens a hole
        me = self.sides[0 if from_client else 1]
        if me.nxt is None or seq_diff(seg.seq, me.nxt) <= 0:
            return False
        why = self.not_ready(conn)
        if why is None or why.final:
            return False
        if self.holding_since is None:
            self.holding_since = now
        return now - self.holding_since <= HOLD_LIMIT

    def forwarded(
        self,
        from_client: bool,
        iface: int,
        frame: bytes,
        seg: Segment,
        tsval: int | None,
        now: float,
    ) -> None:
        """A frame of this flow went through unchanged."""
        me, peer = self.sides if from_client else self.sides[::-1]
        if me.iface < 0 or not me.l2:
            me.iface = iface
            me.l2 = l2_header(frame)
        me.tos, me.ip_id, me.flow_label, me.df, me.ttl = ip_fields(frame, len(me.l2))
        flags = seg.flags
        if flags & 0x04:
            me.rst = True
            return
        length = len(seg.payload) + (1 if flags & 0x03 else 0)  # SYN and FIN take one
        end = (seg.seq + length) & MASK
        if me.nxt is None or seq_diff(end, me.nxt) > 0:
            me.nxt = end
        if seg.payload:
            me.unacked.add(seg.seq, seg.payload)
        elif flags & 0x02:
            me.unacked.base = end  # data starts after the SYN
        if flags & 0x01:
            me.fin = True
        if flags & 0x10:
            me.ack = seg.ack
            me.window = seg.window
            peer.unacked.ack(seg.ack)
        if tsval is not None:
            if me.ts_first is None:
                me.ts_first = (now, tsval)
            me.ts_last = (now, tsval)

    def clock(self, from_client: bool, tsval: int | None, now: float) -> None:
        """A timestamp seen on a frame that is not forwarded (the one a cut-in starts at):
        the sender's clock has reached it, so the tool's TSvals go on from there."""
        me = self.sides[0 if from_client else 1]
        if tsval is None or me.ts_last is None or seq_diff(tsval, me.ts_last[1]) <= 0:
            return  # none, or not newer (a reordered frame must not turn the clock back)
        me.ts_last = (now, tsval)

    def not_ready(self, conn: Connection) -> NotReady | None:
        """Why a takeover cannot happen now (None: it can)."""
        if not conn.handshake:
            # Picked up mid-stream there is no window scale to continue with.
            return NotReady("handshake not seen (window scale unknown)", conn.midstream)
        for side, name in zip(self.sides, ("client", "server"), strict=True):
            if side.rst:
                return NotReady(f"{name} reset", True)
            if side.fin:
                return NotReady(f"{name} closed", True)
            if side.nxt is None or side.ack is None or not side.l2:
                return NotReady(f"{name} not seen acknowledging yet", False)
            if not side.unacked.contiguous:
                return NotReady(f"{name} bytes missing in flight", False)
        return None

    def takeover(
        self, conn: Connection, now: float, mtus: tuple[int, int]
    ) -> tuple[tuple[Takeover, PathTemplate], tuple[Takeover, PathTemplate]] | NotReady:
        """((towards the client: we are the server), (towards the server: we are the client)),
        or why not. ``mtus`` are the IP MTUs of the client's and the server's interface."""
        why = self.not_ready(conn)
        if why:
            return why
        c, s = self.sides
        to_client = self._half(
            conn,
            ours=s,
            peer=c,
            ours_ep=conn.s,
            peer_ep=conn.c,
            ours_addr=conn.server,
            peer_addr=conn.client,
            mtu=mtus[c.iface],
            now=now,
        )
        to_server = self._half(
            conn,
            ours=c,
            peer=s,
            ours_ep=conn.c,
            peer_ep=conn.s,
            ours_addr=conn.client,
            peer_addr=conn.server,
            mtu=mtus[s.iface],
            now=now,
        )
        if isinstance(to_client, NotReady):
            return to_client
        if isinstance(to_server, NotReady):
            return to_server
        return to_client, to_server

    @staticmethod
    def _half(conn, *, ours, peer, ours_ep, peer_ep, ours_addr, peer_addr, mtu, now):  # type: ignore[no-untyped-def]
        una, nxt = peer.ack, ours.nxt
        held = ours.unacked.take(una, nxt)
        if held is None:
            return NotReady("bytes in flight not held", False)
        ws_ok = conn.wscale_ok
        ts = conn.ts_ok and ours.ts_last is not None and peer.ts_last is not None
        header = IPV6_HEADER if conn.v6 else IPV4_HEADER
        mss = min(peer_ep.mss or DEFAULT_MSS, mtu - header - TCP_HEADER)
        if ts:
            mss -= TS_OPTION  # RFC 9293 §3.7.1: the MSS counts data; options come off it
        clock = TsClock(ours.ts_last[1], ours.ts_last[0], ours.ts_rate()) if ts else None
        our_ws = (ours_ep.wscale or 0) if ws_ok else 0
        t = Takeover(
            snd_una=una,
            snd_nxt=nxt,
            unacked=held,
            rcv_nxt=peer.nxt,
            peer_window=peer.window,
            peer_wscale=(peer_ep.wscale or 0) if ws_ok else 0,
            our_wscale=our_ws,
            rcv_edge=(ours.ack + (ours.window << our_ws)) & MASK,
            peer_mss=mss,
            sack=ours_ep.sack_permitted and peer_ep.sack_permitted,
            clock=clock,
            ts_recent=peer.ts_last[1] if ts else 0,
        )
        template = PathTemplate(
            l2=ours.l2,
            src=ours_addr[0],
            dst=peer_addr[0],
            sport=ours_addr[1],
            dport=peer_addr[1],
            ttl=ours.ttl,
            tos=ours.tos,
            flow_label=ours.flow_label,
            ip_id=(ours.ip_id + 1) & 0xFFFF,
            df=ours.df,
        )
        return t, template
