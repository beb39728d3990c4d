"""Frame decoding: link layer, encapsulations, IPv4/IPv6 (with extension headers and
fragments), TCP.

Link types (pcap DLT numbers): Ethernet (1), PPP (9, and 50 in HDLC-like framing), raw IP (101,
and 12/14 as some systems write it), raw IPv4 (228), raw IPv6 (229), Linux cooked capture v1
(113) and v2 (276), BSD loopback (0, host-order family) and OpenBSD loopback (108). Between the
link and TCP a frame may carry any mix of 802.1Q / 802.1ad tags, MPLS label stacks (with an
Ethernet pseudowire below), PPPoE sessions, IP-in-IP (IPv4 or IPv6 in IPv4 or IPv6) and GRE
(with Ethernet, ERSPAN I/II/III or IP inside): see :mod:`.encap`.

Decapsulation is one loop, one header per turn, never a recursion on packet content: a frame
with more than :data:`MAX_LAYERS` headers below TCP is ``too_many_layers``. The flow's VLAN
stack is every tag met on the way in, outermost first: the outer link's tags, then those of an
Ethernet frame carried in a tunnel (as Suricata adds a tunnelled frame's tags to its packet's).

A frame either becomes a :class:`Segment` or is counted under a reason in ``undecodable``
(fragments held for reassembly are neither: the defragmenter counts them); nothing raises. The
decoder trusts the IP length over the captured length (Ethernet padding and trailers are not
payload) except where the IP length is 0, which TSO produces (zeek PR #1831). Bytes the IP
header promises but the capture does not hold (snaplen) are reported as ``missing``: the
reassembler turns them into a gap, never into invented data.
"""

from __future__ import annotations

import struct
from collections import Counter
from typing import NamedTuple

from .defrag import Defragmenter
from .encap import (
    DLT_EN10MB,
    DLT_IPV4,
    DLT_IPV6,
    DLT_LINUX_SLL,
    DLT_LINUX_SLL2,
    DLT_LOOP,
    DLT_NULL,
    DLT_PPP,
    DLT_PPP_SERIAL,
    DLT_RAW,
    DLT_RAW_ALT1,
    DLT_RAW_ALT2,
    ETH_IPV4,
    ETH_IPV6,
    ETHERTYPES,
    SUPPORTED_LINKTYPES,
    VLAN_TPIDS,
    Layer,
    gre,
    link_header,
    mpls,
    ppp,
    pppoe,
)

__all__ = [
    "DLT_EN10MB", "DLT_IPV4", "DLT_IPV6", "DLT_LINUX_SLL", "DLT_LINUX_SLL2", "DLT_LOOP",
    "DLT_NULL", "DLT_PPP", "DLT_PPP_SERIAL", "DLT_RAW", "DLT_RAW_ALT1", "DLT_RAW_ALT2",
    "ETH_IPV4", "ETH_IPV6", "SUPPORTED_LINKTYPES", "VLAN_TPIDS", "ACK", "FIN", "PSH", "RST",
    "SYN", "URG", "MAX_LAYERS", "MAX_IP6_EXTENSIONS", "NOT_TCP_REASONS", "Decoder", "Segment",
    "checksum", "ones_sum", "tcp_checksum_ok",
]  # fmt: skip

# TCP flags (RFC 9293 §3.1)
FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20

# Headers below TCP a frame may carry, the link-layer header included (raw IP has none), each
# VLAN tag and each MPLS label counting as one: Suricata's decoder.max-layers default. Ethernet,
# QinQ, two labels, a pseudowire's Ethernet, a tag, IPv4, GRE with ERSPAN, Ethernet, a tag and
# IPv4 are 12; a GRE bomb nested hundreds deep stops here.
MAX_LAYERS = 16
# Extension headers walked per IPv6 header (the fragment header included). RFC 8200 §4.1's
# recommended order has seven, each at most once but Destination Options (twice).
MAX_IP6_EXTENSIONS = 8

# Reasons for frames that are well formed but carry no TCP; every other reason is a frame the
# decoder could not use (malformed, or an encapsulation it does not take).
NOT_TCP_REASONS = frozenset(("non_tcp", "unsupported_ethertype", "unsupported_ppp"))

# IPv6 extension headers that may precede TCP (RFC 8200 §4): hop-by-hop, routing, destination
# options, mobility, HIP, shim6 use the (next, len-in-8-octets) layout; AH counts 4-octet words.
_IP6_EXT_8 = frozenset((0, 43, 60, 135, 139, 140))
_IP6_FRAG = 44
_IP6_AH = 51
_IP6_EXTENSIONS = _IP6_EXT_8 | {_IP6_FRAG, _IP6_AH}
_PROTO_TCP = 6

_ETHERNET = Layer.ETHERNET
_VLAN = Layer.VLAN
_MPLS = Layer.MPLS
_PPPOE = Layer.PPPOE
_PPP = Layer.PPP
_IPV4 = Layer.IPV4
_IPV6 = Layer.IPV6
_GRE = Layer.GRE
# What an IP protocol / next header number carries that the decoder walks into (RFC 2003
# IP-in-IP, RFC 4213 §3.5 IPv6-in-IPv4 and RFC 2473 for IPv6 outer headers, RFC 2784 GRE).
_IP_PAYLOADS = {4: _IPV4, 41: _IPV6, 47: _GRE}

_IP4 = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")


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
    # The mirror session a tunnelled copy came in (a VXLAN network identifier, a TZSP sensor):
    # 0 for none. Part of the flow key: two sessions' identical tuples are two connections.
    tunnel: int = 0


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
        ``linktype`` overrides the capture's (pcapng interfaces may differ).

        One turn of the loop reads one header at ``off`` in ``buf`` and names the next
        (``kind``); an IP header's payload becomes the next ``buf`` (trimmed to the IP length,
        or reassembled from fragments)."""
        cut = 0 if wirelen is None else max(0, wirelen - len(frame))
        lt = self.linktype if linktype is None else linktype
        kind: Layer
        if lt == DLT_EN10MB:
            kind, off, layers = _ETHERNET, 0, 0
            macs = frame[:12]
        else:
            step = link_header(lt, frame)
            if isinstance(step, str):
                return self._bad(step)
            kind, off = step
            layers = 1 if off else 0
            macs = b""
        buf = frame
        vlans: tuple[int, ...] = ()
        while True:
            layers += 1
            if layers > MAX_LAYERS:
                return self._bad("too_many_layers")
            if kind is _IPV4:
                n = len(buf)
                if n < off + 20:
                    return self._bad("short_frame")
                vihl, _tos, total, ident, frag, ttl, proto, _csum, src, dst = _IP4.unpack_from(
                    buf, off
                )
                if vihl >> 4 != 4:
                    return self._bad("bad_ip_header")
                ihl = (vihl & 0x0F) * 4
                if ihl < 20 or n < off + ihl:
                    return self._bad("bad_ip_header")
                captured = n - off
                if total == 0:  # TSO: the NIC fills in the length; trust what was captured
                    total = captured + cut
                elif total < ihl:
                    return self._bad("bad_ip_header")
                # Bytes the header promises but the frame does not hold: cut by snaplen, or a
                # frame shorter than its header says. Either way they are missing, never made up.
                if total > captured:
                    missing = total - captured
                    body = buf[off + ihl :]
                else:
                    missing = 0
                    body = buf[off + ihl : off + total]
                if frag & 0x3FFF:  # MF set or a non-zero offset
                    if missing:
                        return self._bad("truncated_fragment")
                    key = (src, dst, ident, proto, vlans)
                    done = self.defrag.add(
                        ts, key, (frag & 0x1FFF) * 8, bool(frag & 0x2000), body, proto
                    )
                    if done is None:
                        return None
                    body, proto = done  # type: ignore[assignment]
                if proto == _PROTO_TCP:
                    return self._tcp(vlans, False, src, dst, body, missing, ttl, macs)
                inner = _IP_PAYLOADS.get(proto)
                if inner is None:
                    return self._bad("non_tcp")
                kind, buf, off = inner, body, 0
            elif kind is _ETHERNET:
                if len(buf) < off + 14:
                    return self._bad("short_frame")
                nxt = ETHERTYPES.get((buf[off + 12] << 8) | buf[off + 13])
                if nxt is None:
                    return self._bad("unsupported_ethertype")
                kind = nxt
                off += 14
            elif kind is _VLAN:  # the tag control information, then the next ethertype
                if len(buf) < off + 4:
                    return self._bad("short_frame")
                vlans += (((buf[off] << 8) | buf[off + 1]) & 0x0FFF,)
                nxt = ETHERTYPES.get((buf[off + 2] << 8) | buf[off + 3])
                if nxt is None:
                    return self._bad("unsupported_ethertype")
                kind = nxt
                off += 4
            elif kind is _IPV6:
                n = len(buf)
                if n < off + 40:
                    return self._bad("short_frame")
                if buf[off] >> 4 != 6:
                    return self._bad("bad_ip_header")
                plen = (buf[off + 4] << 8) | buf[off + 5]
                proto = buf[off + 6]
                hlim = buf[off + 7]
                src = buf[off + 8 : off + 24]
                dst = buf[off + 24 : off + 40]
                captured = n - off - 40
                if plen == 0:  # jumbogram or TSO: use what was captured
                    plen = captured + cut
                if plen > captured:
                    missing = plen - captured
                    body = buf[off + 40 :]
                else:
                    missing = 0
                    body = buf[off + 40 : off + 40 + plen]
                if proto != _PROTO_TCP:
                    walked = self._ip6_extensions(ts, src, dst, vlans, body, proto, missing)
                    if walked is None:
                        return None
                    body, proto = walked
                if proto == _PROTO_TCP:
                    return self._tcp(vlans, True, src, dst, body, missing, hlim, macs)
                inner = _IP_PAYLOADS.get(proto)
                if inner is None:
                    return self._bad("non_tcp")
                kind, buf, off = inner, body, 0
            else:
                if kind is _GRE:
                    step = gre(buf, off)
                elif kind is _MPLS:
                    step = mpls(buf, off)
                elif kind is _PPPOE:
                    step = pppoe(buf, off)
                else:
                    step = ppp(buf, off)
                if isinstance(step, str):
                    return self._bad(step)
                kind, off = step

    def _bad(self, reason: str) -> Segment | None:
        self.undecodable[reason] += 1
        return None

    def _ip6_extensions(
        self,
        ts: float,
        src: bytes,
        dst: bytes,
        vlans: tuple[int, ...],
        body: bytes,
        nxt: int,
        missing: int,
    ) -> tuple[bytes, int] | None:
        """Walk the extension headers (RFC 8200 §4.1) to the first header that is not one:
        ``(the bytes from there, its number)``; reassemble at a fragment header (RFC 8200
        §4.5) and walk on through the headers the fragments carried. None: counted, or a
        fragment held."""
        pos = 0
        walked = 0
        reassembled = False
        while nxt in _IP6_EXTENSIONS:
            walked += 1
            if walked > MAX_IP6_EXTENSIONS:
                self._bad("too_many_extension_headers")
                return None
            if nxt == _IP6_FRAG:
                if reassembled or len(body) < pos + 8:  # one fragment header per datagram
                    self._bad("bad_ip_header")
                    return None
                fo = (body[pos + 2] << 8) | body[pos + 3]
                ident = int.from_bytes(body[pos + 4 : pos + 8], "big")
                nxt = body[pos]
                body = body[pos + 8 :]
                pos = 0
                if missing:
                    self._bad("truncated_fragment")
                    return None
                reassembled = True
                offset, more = fo & 0xFFF8, bool(fo & 1)
                if offset or more:  # an atomic fragment (RFC 6946) needs no reassembly
                    done = self.defrag.add(ts, (src, dst, ident, vlans), offset, more, body, nxt)
                    if done is None:
                        return None
                    body, nxt = done  # type: ignore[assignment]
                continue
            if len(body) < pos + 2:
                self._bad("bad_ip_header")
                return None
            hlen = (body[pos + 1] + 2) * 4 if nxt == _IP6_AH else (body[pos + 1] + 1) * 8
            nxt = body[pos]
            pos += hlen
            if pos > len(body):
                self._bad("bad_ip_header")
                return None
        return (body[pos:] if pos else body), nxt

    def _tcp(
        self,
        vlans: tuple[int, ...],
        v6: bool,
        src: bytes,
        dst: bytes,
        tcp: bytes,
        missing: int,
        ttl: int,
        macs: bytes,
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
            macs,
            urg,
        )
