"""Frames out: building segments as an impersonated endpoint, and fixing offloaded frames.

Inline mode speaks for both endpoints of a live connection, so what it sends must look like
what that endpoint sends: the same layer-2 header (MACs and the whole VLAN tag stack, copied as
raw bytes), TTL / hop limit, TOS and flow label, and an IPv4 ID that keeps counting.

It also forwards frames captured on interfaces with offloads on: GSO super-frames (up to
64 KiB) are cut back to the MTU the way Linux GSO does (``tcp_gso_segment``), and frames that
carry a partial checksum (``TP_STATUS_CSUMNOTREADY``) get their checksums completed.

RFCs: 1071 (Internet checksum), 791 (IPv4), 8200 (IPv6, §8.1 upper-layer checksums), 9293
(TCP, §3.1 header and pseudo-header), 7323 (timestamps, window scale), 2018 (SACK), 768 (UDP).
Pure functions on bytes: no I/O, no clock.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from .decode import ETH_IPV4, ETH_IPV6, FIN, PSH, VLAN_TPIDS, checksum, ones_sum

_PROTO_TCP = 6
_PROTO_UDP = 17
_CWR = 0x80
_MOD32 = 0xFFFFFFFF

# IPv6 extension headers complete_checksums walks through (RFC 8200 §4.3, §4.4, §4.6)
_IP6_HOPOPTS, _IP6_ROUTING, _IP6_DSTOPTS = 0, 43, 60
_IP6_WALKABLE = frozenset((_IP6_HOPOPTS, _IP6_ROUTING, _IP6_DSTOPTS))

_IP4 = struct.Struct("!BBHHHBBH4s4s")
_IP6_HEAD = struct.Struct("!IHBB")
_TCP = struct.Struct("!HHIIBBHHH")
_TCP_CSUM_AT = 16
_UDP_CSUM_AT = 6
_IP4_CSUM_AT = 10

# TCP option kinds (RFC 9293 §3.2)
_NOP, _MSS, _WSCALE, _SACK_PERM, _SACK, _TS = 1, 2, 3, 4, 5, 8
_MAX_OPTIONS = 40


# --------------------------------------------------------------------------- checksum


def _pseudo_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """The pseudo-header's sum: RFC 9293 §3.1 (IPv4), RFC 8200 §8.1 (IPv6)."""
    if len(src) == 4:
        return ones_sum(src + dst + struct.pack("!BBH", 0, proto, length))
    return ones_sum(src + dst + struct.pack("!I3xB", length, proto))


# --------------------------------------------------------------------------- building


@dataclass(slots=True)
class PathTemplate:
    """How frames from one (impersonated) endpoint towards its peer look on the wire."""

    l2: bytes  # dst MAC, src MAC, every VLAN tag (TPID+TCI) as seen, then the IP ethertype
    src: bytes  # IPv4 (4 bytes) or IPv6 (16 bytes) source address
    dst: bytes
    sport: int
    dport: int
    ttl: int = 64  # TTL or hop limit
    tos: int = 0  # IPv4 TOS / IPv6 traffic class
    flow_label: int = 0  # IPv6 only
    ip_id: int = 0  # next IPv4 identification; build() uses it and increments it (mod 2**16)
    df: bool = True  # IPv4 don't-fragment

    @property
    def v6(self) -> bool:
        return len(self.src) == 16


def encode_options(
    *,
    mss: int | None = None,
    wscale: int | None = None,
    sack_permitted: bool = False,
    timestamps: tuple[int, int] | None = None,
    sack_blocks: Sequence[tuple[int, int]] = (),
) -> bytes:
    """TCP options in the layout Linux writes (``tcp_options_write``), NOP-padded to a
    multiple of 4: MSS; SACK-permitted + TS together (or NOP NOP TS, or NOP NOP SACK-permitted);
    NOP window scale; NOP NOP SACK blocks. ``timestamps`` is (TSval, TSecr). SACK blocks past
    what fits in 40 bytes are dropped (3 with timestamps, 4 without), as Linux does, so the
    first blocks should be the most recent ones (RFC 2018 §4)."""
    out = bytearray()
    if mss is not None:
        out += struct.pack("!BBH", _MSS, 4, mss)
    if timestamps is not None:
        tsval, tsecr = timestamps
        # RFC 7323 §3: 10 bytes; Linux puts SACK-permitted in the two bytes NOPs would fill.
        out += bytes((_SACK_PERM, 2)) if sack_permitted else bytes((_NOP, _NOP))
        out += struct.pack("!BBII", _TS, 10, tsval & _MOD32, tsecr & _MOD32)
    elif sack_permitted:
        out += bytes((_NOP, _NOP, _SACK_PERM, 2))
    if wscale is not None:
        if not 0 <= wscale <= 14:  # RFC 7323 §2.3: a sender must not send more than 14
            raise ValueError(f"window scale {wscale} is not 0-14")
        out += bytes((_NOP, _WSCALE, 3, wscale))
    if sack_blocks:
        room = (_MAX_OPTIONS - len(out) - 4) // 8  # RFC 2018 §3: NOP NOP kind len, 8 a block
        blocks = list(sack_blocks)[: max(0, min(4, room))]
        if blocks:
            out += bytes((_NOP, _NOP, _SACK, 2 + 8 * len(blocks)))
            for left, right in blocks:
                out += struct.pack("!II", left & _MOD32, right & _MOD32)
    out += bytes((_NOP,)) * (-len(out) % 4)
    if len(out) > _MAX_OPTIONS:
        raise ValueError(f"TCP options are {len(out)} bytes, more than 40")
    return bytes(out)


def check_build(t: PathTemplate, options: bytes) -> None:
    """What build() (and its C twin, stack/fastpath.py) refuses: options not a multiple of 4
    bytes or over 40, a layer-2 header that does not end in the addresses' ethertype."""
    if len(options) % 4 or len(options) > _MAX_OPTIONS:
        raise ValueError(f"TCP options must be a multiple of 4 bytes, at most 40: {len(options)}")
    if len(t.l2) < 14 or t.l2[-2:] != (ETH_IPV6 if t.v6 else ETH_IPV4).to_bytes(2, "big"):
        raise ValueError("l2 must be an Ethernet header ending in the ethertype of the addresses")


def build(
    t: PathTemplate,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    options: bytes = b"",
    payload: bytes = b"",
) -> bytes:
    """A complete frame from ``t``'s endpoint: ``t.l2``, the IP header, TCP with ``options``
    (a multiple of 4 bytes, at most 40) and ``payload``, all checksums filled in. ``window``
    is the raw 16-bit field (already scaled down); ``flags`` may carry the AE/NS bit (0x100).
    IPv4 takes ``t.ip_id`` and advances it."""
    check_build(t, options)
    v6 = t.v6
    hlen = 20 + len(options)
    tcp = bytearray(hlen + len(payload))
    _TCP.pack_into(
        tcp,
        0,
        t.sport,
        t.dport,
        seq & _MOD32,
        ack & _MOD32,
        (hlen // 4) << 4 | (flags >> 8) & 1,
        flags & 0xFF,
        window & 0xFFFF,
        0,
        0,
    )
    tcp[20:hlen] = options
    tcp[hlen:] = payload
    csum = checksum(tcp, _pseudo_sum(t.src, t.dst, _PROTO_TCP, len(tcp)))
    struct.pack_into("!H", tcp, _TCP_CSUM_AT, csum)
    if v6:
        first = 6 << 28 | (t.tos & 0xFF) << 20 | t.flow_label & 0xFFFFF
        ip = _IP6_HEAD.pack(first, len(tcp), _PROTO_TCP, t.ttl) + t.src + t.dst
    else:
        ip_id = t.ip_id & 0xFFFF
        t.ip_id = (ip_id + 1) & 0xFFFF
        frag = 0x4000 if t.df else 0
        ip4 = (0x45, t.tos, 20 + len(tcp), ip_id, frag, t.ttl, _PROTO_TCP, 0, t.src, t.dst)
        hdr = bytearray(_IP4.pack(*ip4))
        struct.pack_into("!H", hdr, _IP4_CSUM_AT, checksum(hdr))
        ip = bytes(hdr)
    return t.l2 + ip + tcp


# --------------------------------------------------------------------------- parsing our own


class _Packet(NamedTuple):
    """Where things are in an Ethernet frame carrying IP (offsets into the frame)."""

    ip: int  # the IP header
    l4: int  # the transport header
    end: int  # the end of the IP packet (Ethernet padding may follow)
    v6: bool
    proto: int
    src: bytes
    dst: bytes  # for the pseudo-header: the final destination (RFC 8200 §8.1)
    fragment: bool
    ext: bool  # IPv6 extension headers before l4


def _parse(frame: bytes) -> _Packet | None:
    """Walk L2 tags and the IP header; None for anything not IP over Ethernet or malformed."""
    n = len(frame)
    if n < 14:
        return None
    off = 12
    etype = int.from_bytes(frame[12:14], "big")
    while etype in VLAN_TPIDS:
        off += 4
        if n < off + 2:
            return None
        etype = int.from_bytes(frame[off : off + 2], "big")
    ip = off + 2
    if etype == ETH_IPV4:
        if n < ip + 20 or frame[ip] >> 4 != 4:
            return None
        ihl = (frame[ip] & 0x0F) * 4
        total = int.from_bytes(frame[ip + 2 : ip + 4], "big")
        if total == 0:  # TSO leaves it to the NIC: the capture is the packet
            total = n - ip
        if ihl < 20 or total < ihl or ip + total > n:
            return None
        frag = int.from_bytes(frame[ip + 6 : ip + 8], "big") & 0x3FFF  # MF or an offset
        return _Packet(
            ip, ip + ihl, ip + total, False, frame[ip + 9],
            frame[ip + 12 : ip + 16], frame[ip + 16 : ip + 20], bool(frag), False,
        )  # fmt: skip
    if etype == ETH_IPV6:
        if n < ip + 40 or frame[ip] >> 4 != 6:
            return None
        plen = int.from_bytes(frame[ip + 4 : ip + 6], "big")
        end = n if plen == 0 else ip + 40 + plen  # 0: TSO (or a jumbogram), as above
        if end > n:
            return None
        nxt = frame[ip + 6]
        src, dst = frame[ip + 8 : ip + 24], frame[ip + 24 : ip + 40]
        pos = ip + 40
        while nxt in _IP6_WALKABLE:
            if end < pos + 8:
                return None
            hlen = (frame[pos + 1] + 1) * 8
            if pos + hlen > end:
                return None
            if nxt == _IP6_ROUTING and frame[pos + 3]:  # segments left: dst is not final
                final = _final_destination(frame[pos : pos + hlen])
                if final is None:
                    return None
                dst = final
            nxt = frame[pos]
            pos += hlen
        return _Packet(ip, pos, end, True, nxt, src, dst, nxt == 44, pos != ip + 40)
    return None


def _final_destination(rh: bytes) -> bytes | None:
    """The last destination a routing header still has to visit (RFC 8200 §8.1): type 0's
    last address (RFC 2460), type 2's home address (RFC 6275 §6.4), SRH's segment 0
    (RFC 8754 §2, the list is in reverse). Other types: unknown, None."""
    kind = rh[2]
    if kind == 0 and len(rh) >= 24:
        return rh[-16:]
    if kind == 2 and len(rh) >= 24:
        return rh[8:24]
    if kind == 4 and len(rh) >= 24:
        return rh[8:24]
    return None


# --------------------------------------------------------------------------- fixing frames


def complete_checksums(frame: bytes) -> bytes:
    """Fill in the IPv4 header checksum and the TCP or UDP checksum of a frame that carries a
    partial one (``TP_STATUS_CSUMNOTREADY``: the field holds only the pseudo-header sum).
    Anything it cannot parse, and IP fragments (their checksum spans other frames), come back
    unchanged; so does an IPv4 UDP checksum of 0, which means "none" (RFC 768)."""
    p = _parse(frame)
    if p is None or p.fragment:
        return frame
    out = bytearray(frame)
    if not p.v6:
        out[p.ip + _IP4_CSUM_AT : p.ip + _IP4_CSUM_AT + 2] = b"\0\0"
        struct.pack_into("!H", out, p.ip + _IP4_CSUM_AT, checksum(out[p.ip : p.l4]))
    if p.proto == _PROTO_TCP and p.end - p.l4 >= 20:
        at = p.l4 + _TCP_CSUM_AT
    elif p.proto == _PROTO_UDP and p.end - p.l4 >= 8:
        at = p.l4 + _UDP_CSUM_AT
        if not p.v6 and out[at] == out[at + 1] == 0:
            return bytes(out)
    else:
        return bytes(out)
    out[at : at + 2] = b"\0\0"
    csum = checksum(out[p.l4 : p.end], _pseudo_sum(p.src, p.dst, p.proto, p.end - p.l4))
    if csum == 0 and p.proto == _PROTO_UDP:
        csum = 0xFFFF  # RFC 768: a computed 0 is sent as all ones
    struct.pack_into("!H", out, at, csum)
    return bytes(out)


def resegment(frame: bytes, mtu: int) -> list[bytes]:
    """Cut a TCP super-frame whose IP packet exceeds ``mtu`` into frames that fit, as Linux
    GSO does: the same L2 header and IP/TCP headers (options, timestamps included) on every
    piece, sequence numbers advanced, the IPv4 ID counting up per piece, CWR on the first piece
    only and FIN/PSH on the last only, checksums recomputed. A frame that fits, and one this
    cannot cut (not TCP, an IP fragment, IPv6 extension headers), is returned alone and
    untouched; Ethernet padding after the IP packet is not carried over to the pieces."""
    p = _parse(frame)
    if p is None or p.end - p.ip <= mtu:
        return [frame]
    if p.proto != _PROTO_TCP or p.fragment or p.ext or p.end - p.l4 < 20:
        return [frame]
    thl = (frame[p.l4 + 12] >> 4) * 4
    if thl < 20 or p.l4 + thl > p.end:
        return [frame]
    mss = mtu - (p.l4 - p.ip) - thl
    payload = frame[p.l4 + thl : p.end]
    if mss <= 0 or not payload:
        return [frame]
    l2 = frame[: p.ip]
    ip_hdr = bytearray(frame[p.ip : p.l4])
    tcp_hdr = bytearray(frame[p.l4 : p.l4 + thl])
    seq0 = int.from_bytes(tcp_hdr[4:8], "big")
    flags = tcp_hdr[13]
    ip_id = 0 if p.v6 else int.from_bytes(ip_hdr[4:6], "big")
    pieces = []
    count = -(-len(payload) // mss)
    for i in range(count):
        chunk = payload[i * mss : (i + 1) * mss]
        seg_flags = flags
        if i:
            seg_flags &= ~_CWR  # tcp_gso_segment: CWR on the first segment only
        if i < count - 1:
            seg_flags &= ~(FIN | PSH)
        tcp_hdr[13] = seg_flags
        struct.pack_into("!I", tcp_hdr, 4, (seq0 + i * mss) & _MOD32)
        tcp_hdr[_TCP_CSUM_AT : _TCP_CSUM_AT + 2] = b"\0\0"
        tcp_len = thl + len(chunk)
        csum = checksum(tcp_hdr + chunk, _pseudo_sum(p.src, p.dst, _PROTO_TCP, tcp_len))
        struct.pack_into("!H", tcp_hdr, _TCP_CSUM_AT, csum)
        if p.v6:
            struct.pack_into("!H", ip_hdr, 4, tcp_len)
        else:
            struct.pack_into("!HH", ip_hdr, 2, len(ip_hdr) + tcp_len, (ip_id + i) & 0xFFFF)
            ip_hdr[_IP4_CSUM_AT : _IP4_CSUM_AT + 2] = b"\0\0"
            struct.pack_into("!H", ip_hdr, _IP4_CSUM_AT, checksum(ip_hdr))
        pieces.append(l2 + ip_hdr + tcp_hdr + chunk)
    return pieces
