"""Synthetic capture builder for the reconstruction tests.

Everything is built with ``struct`` so that every byte is under the test's control:

* :class:`Seg` - one TCP segment (addresses, ports, seq/ack, flags, window, options, payload,
  checksum mode, IP-level knobs).  ``seg.l3()`` gives the IPv4/IPv6 packet,
  ``seg.fragments(...)`` splits it into IP fragments.
* :class:`Conversation` - a client/server pair that hands out segments with the right
  sequence and acknowledgement numbers (``syn``, ``synack``, ``ack``, ``c``/``s`` data at the
  next, a relative (stream offset) or an absolute sequence number, ``fin``, ``rst``,
  ``keepalive``, ``zero_window``...).  Sequence numbers wrap modulo 2**32.
* link encoders - :func:`ethernet` (any 802.1Q / 802.1ad tag stack), :func:`sll` (DLT 113),
  :func:`sll2` (DLT 276), raw IP (DLT 101/228/229), :func:`bsd_null` (DLT 0, host order),
  :func:`bsd_loop` (DLT 108, network order) and :func:`ppp` (DLT 9/50); :func:`encode` picks
  one by DLT number.
* encapsulations - :func:`pppoe` (a PPPoE session, ethertype 0x8864), :func:`mpls` (a label
  stack, optionally a pseudowire control word), :func:`ip_tunnel` (IP-in-IP, 6in4, 4in6, 6in6,
  or any IP protocol), :func:`gre` (RFC 2784/2890), :func:`erspan` (types I, II, III), and
  :func:`fragment_ipv4` (any IPv4 datagram into fragments).
* :func:`snap` cuts a frame like a capture snaplen does (returns ``(ts, frame, wirelen)``).
* :func:`write_pcap` and :func:`write_pcapng` write files for the CLI tests.

Frames are ``(ts, bytes)`` or ``(ts, bytes, wirelen)`` tuples, the input of
``uinet_tap.api.reconstruct``.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

MOD = 2**32

# DLT numbers
DLT_NULL = 0
DLT_EN10MB = 1
DLT_PPP = 9
DLT_PPP_SERIAL = 50
DLT_RAW = 101
DLT_LOOP = 108
DLT_LINUX_SLL = 113
DLT_RAW_IPV4 = 228
DLT_RAW_IPV6 = 229
DLT_LINUX_SLL2 = 276
DLT_USER0 = 147

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_ARP = 0x0806
TPID_8021Q = 0x8100
TPID_8021AD = 0x88A8
ETH_MPLS = 0x8847
ETH_PPPOE_DISCOVERY = 0x8863
ETH_PPPOE_SESSION = 0x8864
ETH_TEB = 0x6558  # transparent Ethernet bridging (GRE)
GRE_ERSPAN_1_2 = 0x88BE
GRE_ERSPAN_3 = 0x22EB
PPP_IPV4 = 0x0021
PPP_IPV6 = 0x0057
PPP_LCP = 0xC021

PROTO_IPIP = 4
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_IPV6 = 41
PROTO_GRE = 47

# IPv6 extension header numbers
IPV6_HOPOPTS = 0
IPV6_ROUTING = 43
IPV6_FRAGMENT = 44
IPV6_DSTOPTS = 60

TCP_FLAGS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20, "E": 0x40, "C": 0x80}


# --------------------------------------------------------------------------- checksums


def inet_sum(data: bytes, start: int = 0) -> int:
    """One's-complement sum folded to 16 bits (not inverted)."""
    if len(data) % 2:
        data += b"\x00"
    s = start
    for (w,) in struct.iter_unpack("!H", data):
        s += w
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def inet_checksum(data: bytes) -> int:
    return (~inet_sum(data)) & 0xFFFF


def pseudo_header(src: str, dst: str, proto: int, length: int) -> bytes:
    s = ipaddress.ip_address(src)
    d = ipaddress.ip_address(dst)
    if s.version == 4:
        return s.packed + d.packed + struct.pack("!BBH", 0, proto, length)
    return s.packed + d.packed + struct.pack("!I3xB", length, proto)


def tcp_checksum_ok(src: str, dst: str, tcp: bytes) -> bool:
    return inet_sum(pseudo_header(src, dst, PROTO_TCP, len(tcp)) + tcp) == 0xFFFF


# --------------------------------------------------------------------------- TCP options


def opt_mss(mss: int) -> bytes:
    return struct.pack("!BBH", 2, 4, mss)


def opt_wscale(shift: int) -> bytes:
    return struct.pack("!BBB", 3, 3, shift)


def opt_sack_permitted() -> bytes:
    return b"\x04\x02"


def opt_timestamps(tsval: int, tsecr: int = 0) -> bytes:
    return struct.pack("!BBII", 8, 10, tsval % MOD, tsecr % MOD)


def opt_sack(blocks: Sequence[tuple[int, int]]) -> bytes:
    return struct.pack("!BB", 5, 2 + 8 * len(blocks)) + b"".join(
        struct.pack("!II", a % MOD, b % MOD) for a, b in blocks
    )


def pad_options(opts: bytes) -> bytes:
    """NOP-pad in front so the option block is a multiple of 4 bytes."""
    if len(opts) % 4:
        opts = b"\x01" * (4 - len(opts) % 4) + opts
    if len(opts) > 40:
        raise ValueError("TCP options longer than 40 bytes")
    return opts


def syn_options(
    mss: int | None = 1460,
    wscale: int | None = None,
    sack_ok: bool = False,
    ts: tuple[int, int] | None = None,
) -> bytes:
    o = b""
    if mss is not None:
        o += opt_mss(mss)
    if sack_ok:
        o += opt_sack_permitted()
    if ts is not None:
        o += opt_timestamps(*ts)
    if wscale is not None:
        o += b"\x01" + opt_wscale(wscale)
    return pad_options(o)


# --------------------------------------------------------------------------- IPv6 extension headers


@dataclass
class Ext:
    """An IPv6 extension header (hop-by-hop 0, routing 43, destination options 60).

    ``body`` is everything after the (next header, length) pair for options headers; it is
    padded with a PadN option to a multiple of 8 bytes.  For routing headers the default
    body is type 0, segments left 0, no addresses (ignored by every receiver).
    """

    kind: int
    body: bytes | None = None

    def encode(self, next_header: int) -> bytes:
        if self.kind == IPV6_ROUTING:
            body = self.body if self.body is not None else struct.pack("!BB4x", 0, 0)
        else:
            body = self.body if self.body is not None else b""
            need = (-(len(body) + 2)) % 8
            if need == 1:
                body += b"\x00"  # Pad1
            elif need >= 2:
                body += bytes([1, need - 2]) + b"\x00" * (need - 2)  # PadN
            if len(body) + 2 < 8:
                body += bytes([1, 4]) + b"\x00" * 4
        total = 2 + len(body)
        assert total % 8 == 0, total
        return struct.pack("!BB", next_header, total // 8 - 1) + body


HOPOPTS = Ext(IPV6_HOPOPTS)
DSTOPTS = Ext(IPV6_DSTOPTS)
ROUTING = Ext(IPV6_ROUTING)


def ipv6_chain(exts: Sequence[Ext], final_proto: int) -> tuple[int, bytes]:
    """Encode a chain of extension headers; returns (first next-header value, bytes)."""
    out = b""
    nxt = final_proto
    for e in reversed(exts):
        out = e.encode(nxt) + out
        nxt = e.kind
    return nxt, out


# --------------------------------------------------------------------------- IP headers


def ipv4_header(
    src: str,
    dst: str,
    proto: int,
    payload_len: int,
    ident: int = 0,
    df: bool = True,
    mf: bool = False,
    frag_offset: int = 0,
    ttl: int = 64,
    total_length: int | None = None,
    tos: int = 0,
) -> bytes:
    tl = 20 + payload_len if total_length is None else total_length
    flags = (0x4000 if df else 0) | (0x2000 if mf else 0) | ((frag_offset // 8) & 0x1FFF)
    if frag_offset % 8:
        raise ValueError("IPv4 fragment offset must be a multiple of 8")
    h = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        tos,
        tl,
        ident & 0xFFFF,
        flags,
        ttl,
        proto,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return h[:10] + struct.pack("!H", inet_checksum(h)) + h[12:]


def ipv6_header(
    src: str, dst: str, next_header: int, payload_len: int, hop_limit: int = 64
) -> bytes:
    return struct.pack(
        "!IHBB16s16s",
        0x60000000,
        payload_len,
        next_header,
        hop_limit,
        ipaddress.IPv6Address(src).packed,
        ipaddress.IPv6Address(dst).packed,
    )


def is_v6(addr: str) -> bool:
    return ipaddress.ip_address(addr).version == 6


def udp_packet(src: str, dst: str, sport: int, dport: int, payload: bytes = b"x") -> bytes:
    """An IPv4/IPv6 UDP datagram (for the 'non_tcp' undecodable case)."""
    u = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    c = inet_checksum(pseudo_header(src, dst, PROTO_UDP, len(u)) + u) or 0xFFFF
    u = u[:6] + struct.pack("!H", c) + u[8:]
    if is_v6(src):
        return ipv6_header(src, dst, PROTO_UDP, len(u)) + u
    return ipv4_header(src, dst, PROTO_UDP, len(u)) + u


# --------------------------------------------------------------------------- TCP segment


@dataclass
class Seg:
    """One TCP segment plus the IP packet around it.

    csum: "good" (default), "bad" (correct checksum xor 0x5555), "zero" (0x0000),
    "partial" (the pseudo-header sum only, as left by checksum offload), or an int.
    """

    src: str
    dst: str
    sport: int
    dport: int
    seq: int
    ack: int = 0
    flags: str = "A"
    win: int = 65535
    options: bytes = b""
    payload: bytes = b""
    ts: float = 0.0
    csum: str | int = "good"
    urg: int = 0
    # IP level
    ip_id: int = 0
    ttl: int = 64
    ipv4_total_length: int | None = None  # e.g. 0 for a TSO super-segment
    exts: list[Ext] = field(default_factory=list)  # IPv6 extension headers before TCP

    @property
    def v6(self) -> bool:
        return is_v6(self.src)

    def flag_bits(self) -> int:
        bits = 0
        for ch in self.flags:
            bits |= TCP_FLAGS[ch]
        return bits

    def tcp(self) -> bytes:
        opts = pad_options(self.options)
        off = (20 + len(opts)) // 4
        hdr = struct.pack(
            "!HHIIBBHHH",
            self.sport,
            self.dport,
            self.seq % MOD,
            self.ack % MOD,
            off << 4,
            self.flag_bits(),
            self.win & 0xFFFF,
            0,
            self.urg,
        )
        seg = hdr + opts + self.payload
        ph = pseudo_header(self.src, self.dst, PROTO_TCP, len(seg))
        good = inet_checksum(ph + seg)
        if self.csum == "good":
            c = good
        elif self.csum == "bad":
            c = good ^ 0x5555
        elif self.csum == "zero":
            c = 0
        elif self.csum == "partial":
            c = inet_sum(ph)
        else:
            c = int(self.csum)
        return seg[:16] + struct.pack("!H", c) + seg[18:]

    def l3(self) -> bytes:
        """The whole IP packet."""
        t = self.tcp()
        if self.v6:
            nxt, chain = ipv6_chain(self.exts, PROTO_TCP)
            return ipv6_header(self.src, self.dst, nxt, len(chain) + len(t), self.ttl) + chain + t
        return (
            ipv4_header(
                self.src,
                self.dst,
                PROTO_TCP,
                len(t),
                ident=self.ip_id,
                ttl=self.ttl,
                total_length=self.ipv4_total_length,
            )
            + t
        )

    def fragments(
        self,
        pieces: Sequence[tuple[int, int] | tuple[int, int, bytes]] | int,
        order: Sequence[int] | None = None,
        ident: int = 0x4242,
        unfragmentable: int = 0,
    ) -> list[bytes]:
        """Split this packet into IP fragments.

        pieces: an int (fragment data size, a multiple of 8) or a list of (offset, length) or
        (offset, length, replacement bytes) in the fragmentable part (the TCP segment, plus for
        IPv6 the extension headers after index ``unfragmentable``).  Pieces may overlap.
        order: emission order as indices into the piece list (default: as given).
        For IPv6, ``self.exts[:unfragmentable]`` stay in front of the fragment header.
        """
        t = self.tcp()
        if self.v6:
            front = self.exts[:unfragmentable]
            back = self.exts[unfragmentable:]
            nxt_after, back_chain = ipv6_chain(back, PROTO_TCP)
            body = back_chain + t
        else:
            body = t
        if isinstance(pieces, int):
            size = pieces
            pieces = [(o, min(size, len(body) - o)) for o in range(0, len(body), size)]
        end = max(p[0] + p[1] for p in pieces)
        out = []
        for p in pieces:
            off, ln = p[0], p[1]
            data = p[2] if len(p) > 2 else body[off : off + ln]  # type: ignore[misc]
            more = off + ln < end
            if self.v6:
                if off % 8:
                    raise ValueError("fragment offset must be a multiple of 8")
                fh = struct.pack("!BBHI", nxt_after, 0, (off // 8) << 3 | (1 if more else 0), ident)
                chain = b""
                nh = IPV6_FRAGMENT
                for e in reversed(front):
                    chain = e.encode(nh) + chain
                    nh = e.kind
                pkt_payload = chain + fh + data
                out.append(
                    ipv6_header(self.src, self.dst, nh, len(pkt_payload), self.ttl) + pkt_payload
                )
            else:
                h = ipv4_header(
                    self.src,
                    self.dst,
                    PROTO_TCP,
                    len(data),
                    ident=ident,
                    df=False,
                    mf=more,
                    frag_offset=off,
                    ttl=self.ttl,
                )
                out.append(h + data)
        if order is not None:
            out = [out[i] for i in order]
        return out


# --------------------------------------------------------------------------- link layers


def _ethertype_for(l3: bytes) -> int:
    return ETH_IPV6 if l3 and l3[0] >> 4 == 6 else ETH_IPV4


def ethernet(
    l3: bytes,
    vlans: Sequence[int | tuple[int, int]] = (),
    ethertype: int | None = None,
    src_mac: bytes = b"\x02\x00\x00\x00\x00\x01",
    dst_mac: bytes = b"\x02\x00\x00\x00\x00\x02",
) -> bytes:
    """Ethernet II frame.  vlans: outermost first; an int is an 802.1Q (0x8100) tag, a tuple
    is (TPID, VID), e.g. [(0x88a8, 200), (0x8100, 100)] for QinQ."""
    et = _ethertype_for(l3) if ethertype is None else ethertype
    tags = b""
    for v in vlans:
        tpid, vid = (TPID_8021Q, v) if isinstance(v, int) else v
        tags += struct.pack("!HH", tpid, vid & 0x0FFF)
    return dst_mac + src_mac + tags + struct.pack("!H", et) + l3


def qinq(outer: int, inner: int) -> list[tuple[int, int]]:
    return [(TPID_8021AD, outer), (TPID_8021Q, inner)]


def sll(l3: bytes, pkttype: int = 0, proto: int | None = None) -> bytes:
    """Linux cooked capture v1 (DLT 113), 16-byte header."""
    p = _ethertype_for(l3) if proto is None else proto
    return struct.pack("!HHH8sH", pkttype, 1, 6, b"\x02\x00\x00\x00\x00\x01\x00\x00", p) + l3


def sll2(l3: bytes, pkttype: int = 0, ifindex: int = 2, proto: int | None = None) -> bytes:
    """Linux cooked capture v2 (DLT 276), 20-byte header."""
    p = _ethertype_for(l3) if proto is None else proto
    return (
        struct.pack("!HHIHBB8s", p, 0, ifindex, 1, pkttype, 6, b"\x02\x00\x00\x00\x00\x01\x00\x00")
        + l3
    )


AF_INET = 2
AF_INET6_BSD = 24  # NetBSD/OpenBSD
AF_INET6_FREEBSD = 28
AF_INET6_DARWIN = 30


def bsd_null(l3: bytes, af: int | None = None, byteorder: str = "<") -> bytes:
    """DLT_NULL (0): 4-byte address family in the capturing host's byte order (little endian
    by default)."""
    a = (AF_INET6_DARWIN if l3[0] >> 4 == 6 else AF_INET) if af is None else af
    return struct.pack(byteorder + "I", a) + l3


def bsd_loop(l3: bytes, af: int | None = None) -> bytes:
    """DLT_LOOP (108): 4-byte address family in network byte order."""
    a = (AF_INET6_BSD if l3[0] >> 4 == 6 else AF_INET) if af is None else af
    return struct.pack("!I", a) + l3


def ppp(l3: bytes, hdlc: bool = True, proto: int | None = None, compress: bool = False) -> bytes:
    """A PPP frame (DLT 9): RFC 1662's address and control octets FF 03 unless ``hdlc`` is
    False, then the protocol field (RFC 1661 §2), one octet with ``compress`` (PFC)."""
    p = (PPP_IPV6 if l3 and l3[0] >> 4 == 6 else PPP_IPV4) if proto is None else proto
    field = bytes([p]) if compress else struct.pack("!H", p)
    return (b"\xff\x03" if hdlc else b"") + field + l3


def pppoe(l3: bytes, session: int = 0x1234, proto: int | None = None, code: int = 0) -> bytes:
    """A PPPoE session payload (RFC 2516 §5), the Ethernet payload of ethertype 0x8864:
    VER 1, TYPE 1, CODE 0, session id, length, then the PPP protocol field and ``l3``."""
    inner = ppp(l3, hdlc=False, proto=proto)
    return struct.pack("!BBHH", 0x11, code, session, len(inner)) + inner


def mpls(payload: bytes, labels: Sequence[int], ttl: int = 64, control_word: bool = False) -> bytes:
    """An MPLS label stack (RFC 3032 §2.1), outermost label first, the last with the
    bottom-of-stack bit; ``control_word`` puts RFC 4385's (zero) control word before an
    Ethernet pseudowire payload."""
    out = b""
    for i, label in enumerate(labels):
        bos = 1 if i == len(labels) - 1 else 0
        out += struct.pack("!I", (label << 12) | (bos << 8) | ttl)
    return out + (b"\x00\x00\x00\x00" if control_word else b"") + payload


def ip_tunnel(inner: bytes, src: str = "192.0.2.1", dst: str = "192.0.2.2",
              proto: int | None = None, ident: int = 0) -> bytes:  # fmt: skip
    """``inner`` in an IPv4 or IPv6 header (by the addresses' family): IP-in-IP (4) or
    IPv6-in-IP (41) by ``inner``'s version unless ``proto`` names another (47 for GRE)."""
    if proto is None:
        proto = PROTO_IPV6 if inner and inner[0] >> 4 == 6 else PROTO_IPIP
    if is_v6(src):
        return ipv6_header(src, dst, proto, len(inner)) + inner
    return ipv4_header(src, dst, proto, len(inner), ident=ident, df=False) + inner


def gre(payload: bytes, proto: int, key: int | None = None, seq: int | None = None,
        checksum: bool = False, flags: int = 0, version: int = 0) -> bytes:  # fmt: skip
    """A GRE header (RFC 2784, RFC 2890) and ``payload``; ``flags`` ORs raw bits into the
    first octet (0x40 is RFC 1701's routing bit)."""
    bits = flags | (0x80 if checksum else 0) | (0x20 if key is not None else 0)
    bits |= 0x10 if seq is not None else 0
    h = struct.pack("!BBH", bits, version, proto)
    if checksum:
        h += b"\x00\x00\x00\x00"  # a receiver may ignore it; decoders do
    if key is not None:
        h += struct.pack("!I", key)
    if seq is not None:
        h += struct.pack("!I", seq)
    return h + payload


def erspan(frame: bytes, version: int = 2, session: int = 7, vlan: int = 0, seq: int = 1,
           subheader: bool = False, frame_type: int = 0) -> bytes:  # fmt: skip
    """A mirrored Ethernet ``frame`` in GRE (draft-foschiano-erspan): type 1 (no ERSPAN
    header, no GRE sequence number), 2 (8-octet header) or 3 (12 octets, ``subheader`` adds
    the 8-octet platform-specific one)."""
    if version == 1:
        return gre(frame, GRE_ERSPAN_1_2)
    if version == 2:
        h = struct.pack("!HHI", (1 << 12) | vlan, session & 0x3FF, 0)
        return gre(h + frame, GRE_ERSPAN_1_2, seq=seq)
    word3 = (frame_type & 0x1F) << 10 | (1 if subheader else 0)
    h = struct.pack("!HHIHH", (2 << 12) | vlan, session & 0x3FF, 0x01020304, 0, word3)
    if subheader:
        h += struct.pack("!II", 0, 0)  # platform ID 0 and its fields
    return gre(h + frame, GRE_ERSPAN_3, seq=seq)


def fragment_ipv4(datagram: bytes, size: int = 1480, ident: int = 0x5151) -> list[bytes]:
    """Split an IPv4 ``datagram`` (20-byte header) into fragments of ``size`` payload bytes
    (a multiple of 8), keeping its protocol, addresses and TTL."""
    if size % 8:
        raise ValueError("fragment size must be a multiple of 8")
    head, body = datagram[:20], datagram[20:]
    src = ".".join(str(b) for b in head[12:16])
    dst = ".".join(str(b) for b in head[16:20])
    out = []
    for off in range(0, len(body), size):
        piece = body[off : off + size]
        more = off + size < len(body)
        h = ipv4_header(src, dst, head[9], len(piece), ident=ident, df=False, mf=more,
                        frag_offset=off, ttl=head[8])  # fmt: skip
        out.append(h + piece)
    return out


def encode(
    l3: bytes, linktype: int = DLT_EN10MB, vlans: Sequence[int | tuple[int, int]] = ()
) -> bytes:
    """Wrap an IP packet for the given DLT."""
    if linktype == DLT_EN10MB:
        return ethernet(l3, vlans)
    if vlans:
        raise ValueError("VLAN tags only with Ethernet")
    if linktype in (DLT_RAW, DLT_RAW_IPV4, DLT_RAW_IPV6):
        return l3
    if linktype == DLT_LINUX_SLL:
        return sll(l3)
    if linktype == DLT_LINUX_SLL2:
        return sll2(l3)
    if linktype == DLT_NULL:
        return bsd_null(l3)
    if linktype == DLT_LOOP:
        return bsd_loop(l3)
    if linktype in (DLT_PPP, DLT_PPP_SERIAL):
        return ppp(l3)
    raise ValueError(f"no encoder for DLT {linktype}")


Frame = tuple[float, bytes] | tuple[float, bytes, int]


def frames(
    segs: Iterable[Seg],
    linktype: int = DLT_EN10MB,
    vlans: Sequence[int | tuple[int, int]] = (),
) -> list[Frame]:
    """Encode segments into (ts, frame) tuples."""
    return [(s.ts, encode(s.l3(), linktype, vlans)) for s in segs]


def frag_frames(
    seg: Seg, fragments: Sequence[bytes], linktype: int = DLT_EN10MB, vlans=(), dt: float = 0.0001
) -> list[Frame]:
    """Frames for a list of fragments of ``seg`` (timestamps seg.ts, +dt, ...)."""
    return [(seg.ts + i * dt, encode(f, linktype, vlans)) for i, f in enumerate(fragments)]


def snap(frame: Frame, snaplen: int) -> Frame:
    """Cut a frame to snaplen bytes, keeping its original (wire) length."""
    ts, data = frame[0], frame[1]
    wire = frame[2] if len(frame) > 2 else len(data)  # type: ignore[misc]
    if len(data) <= snaplen:
        return (ts, data) if wire == len(data) else (ts, data, wire)
    return (ts, data[:snaplen], wire)


# --------------------------------------------------------------------------- conversation


class Conversation:
    """Hands out the segments of one TCP connection.

    Sides are "c" (client) and "s" (server).  Each side has an ISN and a stream offset: the
    next byte it will send is at relative offset ``off[side]``, absolute sequence number
    ``isn + 1 + off`` (mod 2**32).  ``rel=`` places data at a stream offset, ``seq=`` at an
    absolute sequence number; neither given means "the next byte".  Sending data moves the
    offset forward to the end of the segment (never back) unless ``advance=False``.
    The default ACK is everything the peer has sent so far (including its SYN/FIN).
    Timestamps start at t0 and grow by dt per segment; ``at=`` sets the clock.
    """

    def __init__(
        self,
        client: str = "10.0.0.1",
        cport: int = 40000,
        server: str = "10.0.0.2",
        sport: int = 80,
        cisn: int = 1000,
        sisn: int = 5000,
        t0: float = 1000.0,
        dt: float = 0.001,
        win: int = 65535,
    ):
        if is_v6(client) != is_v6(server):
            raise ValueError("mixed address families")
        self.addr = {"c": client, "s": server}
        self.port = {"c": cport, "s": sport}
        self.isn = {"c": cisn % MOD, "s": sisn % MOD}
        self.off = {"c": 0, "s": 0}
        self.syn_sent = {"c": False, "s": False}
        self.fin_sent = {"c": False, "s": False}
        self.win = {"c": win, "s": win}
        self.t = t0
        self.dt = dt
        self.exts: list[Ext] = []  # IPv6 extension headers for every segment

    # -- helpers
    @staticmethod
    def peer(side: str) -> str:
        return "s" if side == "c" else "c"

    def seq_of(self, side: str, rel: int) -> int:
        """Absolute sequence number of stream offset ``rel`` of ``side``."""
        return (self.isn[side] + 1 + rel) % MOD

    def next_seq(self, side: str) -> int:
        return (self.seq_of(side, self.off[side]) + (1 if self.fin_sent[side] else 0)) % MOD

    def _clock(self, at: float | None) -> float:
        if at is not None:
            self.t = at
        ts = self.t
        self.t += self.dt
        return ts

    def seg(
        self,
        side: str,
        *,
        seq: int,
        flags: str,
        ack: int | None = None,
        payload: bytes = b"",
        win: int | None = None,
        options: bytes = b"",
        at: float | None = None,
        **kw,
    ) -> Seg:
        p = self.peer(side)
        if ack is None and "A" in flags:
            ack = self.next_seq(p)
        return Seg(
            src=self.addr[side],
            dst=self.addr[p],
            sport=self.port[side],
            dport=self.port[p],
            seq=seq % MOD,
            ack=(ack or 0) % MOD,
            flags=flags,
            win=self.win[side] if win is None else win,
            options=options,
            payload=payload,
            ts=self._clock(at),
            exts=list(kw.pop("exts", self.exts)),
            **kw,
        )

    # -- handshake
    def syn(
        self,
        data: bytes = b"",
        mss: int | None = 1460,
        wscale: int | None = None,
        sack_ok: bool = True,
        ts: tuple[int, int] | None = None,
        side: str = "c",
        **kw,
    ) -> Seg:
        """A SYN from ``side`` (client by default); ``data`` makes it a TFO SYN."""
        self.syn_sent[side] = True
        s = self.seg(
            side,
            seq=self.isn[side],
            flags="S",
            payload=data,
            options=syn_options(mss, wscale, sack_ok, ts),
            **kw,
        )
        self.off[side] = max(self.off[side], len(data))
        return s

    def synack(
        self,
        data: bytes = b"",
        mss: int | None = 1460,
        wscale: int | None = None,
        sack_ok: bool = True,
        ts: tuple[int, int] | None = None,
        side: str = "s",
        **kw,
    ) -> Seg:
        self.syn_sent[side] = True
        s = self.seg(
            side,
            seq=self.isn[side],
            flags="SA",
            payload=data,
            options=syn_options(mss, wscale, sack_ok, ts),
            **kw,
        )
        self.off[side] = max(self.off[side], len(data))
        return s

    def handshake(self, **kw) -> list[Seg]:
        """SYN, SYN-ACK, ACK.  Keyword args go to both SYNs (mss, wscale, sack_ok, ts)."""
        return [self.syn(**kw), self.synack(**kw), self.ack("c")]

    # -- data and control
    def ack(self, side: str = "c", ack: int | None = None, win: int | None = None, **kw) -> Seg:
        """A pure ACK from ``side``."""
        return self.seg(side, seq=self.next_seq(side), flags="A", ack=ack, win=win, **kw)

    def data(
        self,
        side: str,
        payload: bytes,
        rel: int | None = None,
        seq: int | None = None,
        flags: str = "PA",
        advance: bool = True,
        **kw,
    ) -> Seg:
        if seq is None:
            if rel is None:
                rel = self.off[side]
            seq = self.seq_of(side, rel)
        else:
            rel = (seq - self.seq_of(side, 0)) % MOD
            if rel >= 2**31:
                rel -= MOD
        s = self.seg(side, seq=seq, flags=flags, payload=payload, **kw)
        if advance and len(payload):
            self.off[side] = max(self.off[side], rel + len(payload))
        return s

    def c(self, payload: bytes, **kw) -> Seg:
        """Client-to-server data."""
        return self.data("c", payload, **kw)

    def s(self, payload: bytes, **kw) -> Seg:
        """Server-to-client data."""
        return self.data("s", payload, **kw)

    def fin(self, side: str, payload: bytes = b"", **kw) -> Seg:
        """FIN (with optional data) at the side's next sequence number."""
        s = self.seg(side, seq=self.seq_of(side, self.off[side]), flags="FA", payload=payload, **kw)
        self.off[side] += len(payload)
        self.fin_sent[side] = True
        return s

    def rst(
        self,
        side: str,
        seq: int | None = None,
        rel: int | None = None,
        ack: int | None = None,
        flags: str = "RA",
        **kw,
    ) -> Seg:
        """RST from ``side``; default seq is the side's next sequence number."""
        if seq is None:
            seq = self.next_seq(side) if rel is None else self.seq_of(side, rel)
        if "A" not in flags and ack is None:
            ack = 0
        return self.seg(side, seq=seq, flags=flags, ack=ack, **kw)

    def keepalive(self, side: str, payload: bytes = b"\x00", **kw) -> Seg:
        """Keepalive: seq = SND.NXT - 1 with 0 or 1 garbage byte."""
        return self.seg(side, seq=(self.next_seq(side) - 1) % MOD, flags="A", payload=payload, **kw)

    def zero_window(self, side: str, **kw) -> Seg:
        """A pure ACK from ``side`` advertising a zero window."""
        return self.ack(side, win=0, **kw)

    def zero_window_probe(self, side: str, payload: bytes, **kw) -> Seg:
        """A probe: ``payload`` (usually the next byte) at SND.NXT, without moving SND.NXT."""
        return self.data(side, payload, flags="A", advance=False, **kw)

    def frames(self, segs: Iterable[Seg], linktype: int = DLT_EN10MB, vlans=()) -> list[Frame]:
        return frames(segs, linktype, vlans)


def with_ts(seg: Seg, ts: float) -> Seg:
    return replace(seg, ts=ts)


# --------------------------------------------------------------------------- files


def _norm(fr: Frame) -> tuple[float, bytes, int]:
    ts, data = fr[0], fr[1]
    wire = fr[2] if len(fr) > 2 else len(data)  # type: ignore[misc]
    return ts, data, wire


def _split_ts(ts: float, units: int) -> tuple[int, int]:
    whole = int(ts)
    frac = round((ts - whole) * units)
    if frac >= units:
        whole, frac = whole + 1, frac - units
    return whole, frac


def pcap_bytes(
    frames_: Iterable[Frame],
    linktype: int = DLT_EN10MB,
    snaplen: int = 262144,
    byteorder: str = "<",
    nanosecond: bool = False,
) -> bytes:
    """Classic pcap; byteorder "<" or ">", microsecond or nanosecond timestamps."""
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    units = 1_000_000_000 if nanosecond else 1_000_000
    out = [struct.pack(byteorder + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for fr in frames_:
        ts, data, wire = _norm(fr)
        if len(data) > snaplen:
            data = data[:snaplen]
        sec, frac = _split_ts(ts, units)
        out.append(struct.pack(byteorder + "IIII", sec, frac, len(data), wire) + data)
    return b"".join(out)


def write_pcap(
    path,
    frames_: Iterable[Frame],
    linktype: int = DLT_EN10MB,
    snaplen: int = 262144,
    byteorder: str = "<",
    nanosecond: bool = False,
) -> None:
    """Classic pcap file (little-endian microsecond by default)."""
    with open(path, "wb") as f:
        f.write(pcap_bytes(frames_, linktype, snaplen, byteorder, nanosecond))


def _block(btype: int, body: bytes) -> bytes:
    body += b"\x00" * ((-len(body)) % 4)
    n = 12 + len(body)
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


def pcapng_bytes(
    frames_: Iterable[Frame], linktype: int = DLT_EN10MB, snaplen: int = 262144
) -> bytes:
    shb = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    # IDB with if_tsresol = 6 (microseconds, the default) stated explicitly
    opts = struct.pack("<HHB3x", 9, 1, 6) + struct.pack("<HH", 0, 0)
    idb = _block(0x00000001, struct.pack("<HHI", linktype, 0, snaplen) + opts)
    out = [shb, idb]
    for fr in frames_:
        ts, data, wire = _norm(fr)
        if len(data) > snaplen:
            data = data[:snaplen]
        sec, usec = _split_ts(ts, 1_000_000)
        t = sec * 1_000_000 + usec
        body = struct.pack("<IIIII", 0, t >> 32, t & 0xFFFFFFFF, len(data), wire) + data
        out.append(_block(0x00000006, body))
    return b"".join(out)


def write_pcapng(
    path, frames_: Iterable[Frame], linktype: int = DLT_EN10MB, snaplen: int = 262144
) -> None:
    """pcapng: one SHB, one IDB, one EPB per frame."""
    with open(path, "wb") as f:
        f.write(pcapng_bytes(frames_, linktype, snaplen))


def pcapng_multi_bytes(
    items: Iterable[tuple[int, Frame]], linktypes: Sequence[int], snaplen: int = 262144
) -> bytes:
    """pcapng with one interface per link type in ``linktypes``; ``items`` are
    ``(interface index, frame)``, in file order (libpcap refuses such files)."""
    shb = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    out = [shb] + [_block(0x00000001, struct.pack("<HHI", lt, 0, snaplen)) for lt in linktypes]
    for iface, fr in items:
        ts, data, wire = _norm(fr)
        data = data[:snaplen]
        sec, usec = _split_ts(ts, 1_000_000)
        t = sec * 1_000_000 + usec
        body = struct.pack("<IIIII", iface, t >> 32, t & 0xFFFFFFFF, len(data), wire) + data
        out.append(_block(0x00000006, body))
    return b"".join(out)


# --------------------------------------------------------------------------- naming


def endpoint(addr: str, port: int) -> str:
    """The flow-record spelling: "ip:port", "[v6]:port"."""
    a = ipaddress.ip_address(addr)
    return f"[{a.compressed}]:{port}" if a.version == 6 else f"{a}:{port}"


def tcpflow_name(src: str, sport: int, dst: str, dport: int) -> str:
    """tcpflow file name for IPv4: 010.000.000.001.40000-010.000.000.002.00080."""

    def one(a: str, p: int) -> str:
        return ".".join(f"{int(x):03d}" for x in a.split(".")) + f".{p:05d}"

    return f"{one(src, sport)}-{one(dst, dport)}"
