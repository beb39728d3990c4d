"""Frame decoding: link layer, IPv4/IPv6 (with extension headers and fragments), TCP.

Link types (pcap DLT numbers): Ethernet with any stack of 802.1Q / 802.1ad / QinQ tags (1),
raw IP (101, and 12/14 as some systems write it), raw IPv4 (228), raw IPv6 (229), Linux cooked
capture v1 (113) and v2 (276), BSD loopback (0, host-order family) and OpenBSD loopback (108).

A frame either becomes a :class:`Segment` or is counted under a reason in ``undecodable``;
nothing raises. The decoder trusts the IP length over the captured length (Ethernet padding and
trailers are not payload) except where the IP length is 0, which TSO produces (zeek PR #1831).
Bytes the IP header promises but the capture does not hold (snaplen) are reported as
``missing``: the reassembler turns them into a gap, never into invented data.
"""

from __future__ import annotations

import struct
from collections import Counter
from typing import NamedTuple

from .defrag import Defragmenter

DLT_NULL = 0
DLT_EN10MB = 1
DLT_RAW_ALT1 = 12
DLT_RAW_ALT2 = 14
DLT_RAW = 101
DLT_LOOP = 108
DLT_LINUX_SLL = 113
DLT_IPV4 = 228
DLT_IPV6 = 229
DLT_LINUX_SLL2 = 276

SUPPORTED_LINKTYPES = {
    DLT_NULL: "BSD loopback",
    DLT_EN10MB: "Ethernet",
    DLT_RAW_ALT1: "raw IP",
    DLT_RAW_ALT2: "raw IP",
    DLT_RAW: "raw IP",
    DLT_LOOP: "OpenBSD loopback",
    DLT_LINUX_SLL: "Linux cooked v1",
    DLT_IPV4: "raw IPv4",
    DLT_IPV6: "raw IPv6",
    DLT_LINUX_SLL2: "Linux cooked v2",
}

VLAN_TPIDS = frozenset((0x8100, 0x88A8, 0x9100, 0x9200))
ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD

# TCP flags (RFC 9293 §3.1)
FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20

# IPv6 extension headers that may precede TCP (RFC 8200 §4): hop-by-hop, routing, destination
# options, mobility, HIP, shim6 use the (next, len-in-8-octets) layout; AH counts 4-octet words.
_IP6_EXT_8 = frozenset((0, 43, 60, 135, 139, 140))
_IP6_FRAG = 44
_IP6_AH = 51
_PROTO_TCP = 6
_PROTO_GRE = 47
_GRE_ETHERNET = 0x6558  # transparent Ethernet bridging (RFC 1701)
_GRE_ERSPAN2 = 0x88BE

_IP4 = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_BSD_AF_INET = 2
_BSD_AF_INET6 = frozenset((10, 24, 28, 30))


class Segment(NamedTuple):
    """A decoded TCP segment. ``payload`` holds the captured bytes; ``missing`` counts the
    payload bytes the IP header promised but the capture cut off."""

    vlans: tuple[int, ...]
    v6: bool
    src: bytes
    dst: bytes
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    options: bytes
    payload: bytes
    missing: int
    ttl: int
    checksum_ok: bool | None  # None: not verified
    macs: bytes = b""  # Ethernet destination and source MAC (12 bytes), where the link has them
    urg: int = 0  # the urgent pointer field (meaningful only with the URG flag, RFC 9293 §3.1)


def ones_sum(data: bytes | bytearray, initial: int = 0) -> int:
    """The unfolded one's-complement sum of ``data`` as 16-bit big-endian words, plus
    ``initial``: feed it to :func:`checksum` as ``initial`` (a pseudo-header, say)."""
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8  # an odd length is padded with a zero byte (RFC 1071 §4.1)
    return value + initial


def checksum(data: bytes | bytearray, initial: int = 0) -> int:
    """RFC 1071 Internet checksum of ``data``, with ``initial`` (a one's-complement sum such
    as :func:`ones_sum` of a pseudo-header) added in. The result goes into the header as is.

    Fast in pure Python: the concatenated 16-bit words, read as one big integer, are congruent
    to their sum modulo 0xFFFF (2**16 = 1 mod 0xFFFF), and the one's-complement sum with
    end-around carry is that residue, except that a non-zero sum never folds to 0 (it is 0xFFFF)."""
    total = ones_sum(data, initial)
    r = total % 0xFFFF
    if r == 0 and total:
        r = 0xFFFF
    return ~r & 0xFFFF


def tcp_checksum_ok(src: bytes, dst: bytes, tcp: bytes) -> bool:
    """Verify a TCP checksum over the pseudo-header (RFC 9293 §3.1, RFC 8200 §8.1)."""
    if len(src) == 4:
        pseudo = src + dst + struct.pack("!BBH", 0, _PROTO_TCP, len(tcp))
    else:
        pseudo = src + dst + struct.pack("!IxxxB", len(tcp), _PROTO_TCP)
    return checksum(pseudo + tcp) == 0


class Decoder:
    """Stateful only for fragment reassembly; counts what it cannot use."""

    def __init__(self, linktype: int, verify_checksums: bool = False) -> None:
        if linktype not in SUPPORTED_LINKTYPES:
            raise ValueError(f"unsupported link type {linktype}")
        self.linktype = linktype
        self.verify_checksums = verify_checksums
        self.undecodable: Counter[str] = Counter()
        self.defrag = Defragmenter()

    def decode(
        self, ts: float, frame: bytes, wirelen: int | None = None, linktype: int | None = None
    ) -> Segment | None:
        """Decode one frame; ``wirelen`` is its length on the wire (> len(frame) if cut);
        ``linktype`` overrides the capture's (pcapng interfaces may differ)."""
        cut = 0 if wirelen is None else max(0, wirelen - len(frame))
        lt = self.linktype if linktype is None else linktype
        vlans: tuple[int, ...] = ()
        if lt == DLT_EN10MB:
            if len(frame) < 14:
                return self._bad("short_frame")
            off = 12
            etype = (frame[12] << 8) | frame[13]
            while etype in VLAN_TPIDS:
                if len(frame) < off + 6:
                    return self._bad("short_frame")
                vlans += (((frame[off + 2] << 8) | frame[off + 3]) & 0x0FFF,)
                off += 4
                etype = (frame[off] << 8) | frame[off + 1]
            off += 2
        elif lt == DLT_LINUX_SLL:
            if len(frame) < 16:
                return self._bad("short_frame")
            off = 14
            etype = (frame[14] << 8) | frame[15]
            while etype in VLAN_TPIDS:
                if len(frame) < off + 6:
                    return self._bad("short_frame")
                vlans += (((frame[off + 2] << 8) | frame[off + 3]) & 0x0FFF,)
                off += 4
                etype = (frame[off] << 8) | frame[off + 1]
            off += 2
        elif lt == DLT_LINUX_SLL2:
            if len(frame) < 20:
                return self._bad("short_frame")
            etype = (frame[0] << 8) | frame[1]
            off = 20
        elif lt in (DLT_NULL, DLT_LOOP):
            if len(frame) < 4:
                return self._bad("short_frame")
            if lt == DLT_LOOP:
                af = int.from_bytes(frame[:4], "big")
            else:  # host order of the capturing machine: try both
                af = int.from_bytes(frame[:4], "little")
                if af > 0xFFFF:
                    af = int.from_bytes(frame[:4], "big")
            etype = ETH_IPV4 if af == _BSD_AF_INET else ETH_IPV6 if af in _BSD_AF_INET6 else -1
            off = 4
        elif lt in SUPPORTED_LINKTYPES:  # raw IP: the version nibble says which
            if not frame:
                return self._bad("short_frame")
            off = 0
            version = frame[0] >> 4
            etype = ETH_IPV4 if version == 4 else ETH_IPV6 if version == 6 else -1
        else:
            return self._bad("unsupported_linktype")
        if etype == ETH_IPV4:
            seg = self._ipv4(ts, frame, off, vlans, cut)
        elif etype == ETH_IPV6:
            seg = self._ipv6(ts, frame, off, vlans, cut)
        else:
            return self._bad("unsupported_ethertype")
        if seg is not None and lt == DLT_EN10MB:
            seg = seg._replace(macs=frame[:12])
        return seg

    def _bad(self, reason: str) -> Segment | None:
        self.undecodable[reason] += 1
        return None

    def _ipv4(
        self, ts: float, frame: bytes, off: int, vlans: tuple[int, ...], cut: int
    ) -> Segment | None:
        if len(frame) < off + 20:
            return self._bad("short_frame")
        vihl, _tos, total, ident, frag, ttl, proto, _csum, src, dst = _IP4.unpack_from(frame, off)
        if vihl >> 4 != 4:
            return self._bad("bad_ip_header")
        ihl = (vihl & 0x0F) * 4
        if ihl < 20 or len(frame) < off + ihl:
            return self._bad("bad_ip_header")
        captured = len(frame) - off
        if total == 0:  # TSO: the NIC fills in the length; trust what was captured
            total = captured + cut
        elif total < ihl:
            return self._bad("bad_ip_header")
        # Bytes the header promises but the frame does not hold: cut by snaplen, or a frame
        # shorter than its header says. Either way they are missing, never made up.
        missing = max(0, total - captured)
        body = frame[off + ihl : off + min(total, captured)]
        if frag & 0x3FFF:  # MF set or a non-zero offset
            if missing:
                return self._bad("truncated_fragment")
            done = self.defrag.add(
                ts, (src, dst, ident, proto), (frag & 0x1FFF) * 8, bool(frag & 0x2000), body, proto
            )
            if done is None:
                return None
            body, proto = done  # type: ignore[assignment]
        if proto != _PROTO_TCP:
            if proto == _PROTO_GRE:
                return self._gre(ts, body, vlans, cut)
            return self._bad("non_tcp")
        return self._tcp(vlans, False, src, dst, body, missing, ttl)

    def _ipv6(
        self, ts: float, frame: bytes, off: int, vlans: tuple[int, ...], cut: int
    ) -> Segment | None:
        if len(frame) < off + 40:
            return self._bad("short_frame")
        if frame[off] >> 4 != 6:
            return self._bad("bad_ip_header")
        plen = (frame[off + 4] << 8) | frame[off + 5]
        nxt = frame[off + 6]
        hlim = frame[off + 7]
        src = frame[off + 8 : off + 24]
        dst = frame[off + 24 : off + 40]
        captured = len(frame) - off - 40
        if plen == 0:  # jumbogram or TSO: use what was captured
            plen = captured + cut
        missing = max(0, plen - captured)
        body = frame[off + 40 : off + 40 + min(plen, captured)]
        reassembled = False
        while True:
            # Walk the extension headers (RFC 8200 §4.1) up to TCP, GRE or a fragment header;
            # after reassembly, walk on through the headers the fragments carried.
            pos = 0
            frag: tuple[int, bool, int] | None = None
            while nxt != _PROTO_TCP:
                if nxt in _IP6_EXT_8 or nxt == _IP6_AH:
                    if len(body) < pos + 2:
                        return self._bad("bad_ip_header")
                    hlen = (body[pos + 1] + 2) * 4 if nxt == _IP6_AH else (body[pos + 1] + 1) * 8
                    nxt = body[pos]
                    pos += hlen
                elif nxt == _IP6_FRAG and not reassembled:
                    if len(body) < pos + 8:
                        return self._bad("bad_ip_header")
                    fo = (body[pos + 2] << 8) | body[pos + 3]
                    ident = int.from_bytes(body[pos + 4 : pos + 8], "big")
                    frag = (fo & 0xFFF8, bool(fo & 1), ident)
                    nxt = body[pos]
                    pos += 8
                    break
                elif nxt == _PROTO_GRE:
                    return self._gre(ts, body[pos:], vlans, cut)
                else:
                    return self._bad("non_tcp")
                if pos > len(body):
                    return self._bad("bad_ip_header")
            body = body[pos:]
            if frag is None:
                break
            offset, more, ident = frag
            if missing:
                return self._bad("truncated_fragment")
            reassembled = True
            if offset or more:  # an atomic fragment (RFC 6946) needs no reassembly
                done = self.defrag.add(ts, (src, dst, ident), offset, more, body, nxt)
                if done is None:
                    return None
                body, nxt = done  # type: ignore[assignment]
        return self._tcp(vlans, True, src, dst, body, missing, hlim)

    def _gre(self, ts: float, body: bytes, vlans: tuple[int, ...], cut: int) -> Segment | None:
        """GRE (RFC 2784, RFC 2890 key and sequence): decapsulate and decode the inner packet;
        the flow is the inner one."""
        if len(body) < 4:
            return self._bad("bad_gre_header")
        flags = body[0]
        if body[1] & 0x07:  # version 1 is PPTP's enhanced GRE
            return self._bad("unsupported_gre")
        off = 4 + 4 * (bool(flags & 0x80) + bool(flags & 0x20) + bool(flags & 0x10))
        proto = (body[2] << 8) | body[3]
        if proto == _GRE_ERSPAN2:
            off += 8
            proto = _GRE_ETHERNET
        inner = body[off:]
        if proto == _GRE_ETHERNET:
            return self.decode(ts, inner, None, DLT_EN10MB)
        if proto == ETH_IPV4:
            return self._ipv4(ts, inner, 0, vlans, cut)
        if proto == ETH_IPV6:
            return self._ipv6(ts, inner, 0, vlans, cut)
        return self._bad("unsupported_gre")

    def _tcp(
        self,
        vlans: tuple[int, ...],
        v6: bool,
        src: bytes,
        dst: bytes,
        tcp: bytes,
        missing: int,
        ttl: int,
    ) -> Segment | None:
        if len(tcp) < 20:
            return self._bad("bad_tcp_header")
        sport, dport, seq, ack, doff, flags, win, _csum, urg = _TCP.unpack_from(tcp)
        hlen = (doff >> 4) * 4
        if hlen < 20 or hlen > len(tcp):
            return self._bad("bad_tcp_header")
        ok: bool | None = None
        if self.verify_checksums and not missing:
            ok = tcp_checksum_ok(src, dst, tcp)
        return Segment(
            vlans,
            v6,
            src,
            dst,
            sport,
            dport,
            seq,
            ack,
            flags,
            win,
            tcp[20:hlen],
            tcp[hlen:],
            missing,
            ttl,
            ok,
            b"",
            urg,
        )
