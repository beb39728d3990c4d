"""The headers around IP: link-layer headers, and the encapsulations a frame may carry between
the link and TCP (802.1Q tags, MPLS, PPPoE, PPP, GRE with ERSPAN).

Each function reads exactly one header at ``off`` in ``buf`` and answers either
``(Layer, offset)`` (what follows and where) or the undecodable reason as a string. Every read
is bounds-checked and no length field is trusted; nothing here loops over packet content, so
the decoder's layer cap (``decode.MAX_LAYERS``) bounds the work per frame.
"""

from __future__ import annotations

from enum import Enum


class Layer(Enum):
    """The kind of header the decoder reads next."""

    ETHERNET = "ethernet"
    VLAN = "vlan"  # one 802.1Q / 802.1ad tag (TCI and the next ethertype)
    MPLS = "mpls"  # one label stack entry (RFC 3032 §2.1)
    PPPOE = "pppoe"  # a PPPoE session header (RFC 2516 §5)
    PPP = "ppp"  # a PPP protocol field (RFC 1661 §2), with or without RFC 1662's FF 03
    IPV4 = "ipv4"
    IPV6 = "ipv6"
    GRE = "gre"  # RFC 2784 / RFC 2890, with an ERSPAN header where it carries one


Step = tuple[Layer, int]

# pcap link types (DLT numbers, https://www.tcpdump.org/linktypes.html)
DLT_NULL = 0
DLT_EN10MB = 1
DLT_PPP = 9
DLT_RAW_ALT1 = 12
DLT_RAW_ALT2 = 14
DLT_PPP_SERIAL = 50
DLT_RAW = 101
DLT_LOOP = 108
DLT_LINUX_SLL = 113
DLT_IPV4 = 228
DLT_IPV6 = 229
DLT_LINUX_SLL2 = 276

SUPPORTED_LINKTYPES = {
    DLT_NULL: "BSD loopback",
    DLT_EN10MB: "Ethernet",
    DLT_PPP: "PPP",
    DLT_RAW_ALT1: "raw IP",
    DLT_RAW_ALT2: "raw IP",
    DLT_PPP_SERIAL: "PPP in HDLC-like framing",
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
ETH_MPLS = 0x8847
ETH_MPLS_MULTICAST = 0x8848
ETH_PPPOE_SESSION = 0x8864  # 0x8863 (discovery) carries no IP: unsupported_ethertype
ETH_TEB = 0x6558  # transparent Ethernet bridging, GRE's Ethernet payload (RFC 1701)
GRE_ERSPAN_1_2 = 0x88BE
GRE_ERSPAN_3 = 0x22EB

# What an ethertype (Ethernet, cooked captures, GRE's protocol type) says follows.
ETHERTYPES: dict[int, Layer] = {
    ETH_IPV4: Layer.IPV4,
    ETH_IPV6: Layer.IPV6,
    ETH_MPLS: Layer.MPLS,
    ETH_MPLS_MULTICAST: Layer.MPLS,
    ETH_PPPOE_SESSION: Layer.PPPOE,
    ETH_TEB: Layer.ETHERNET,
    **{tpid: Layer.VLAN for tpid in VLAN_TPIDS},
}

# PPP protocol numbers (RFC 1332 IPCP's 0x0021, RFC 5072's 0x0057, RFC 3032 §5's MPLS);
# anything else (LCP, IPCP, CHAP, ...) is PPP's own business, not TCP.
PPP_PROTOCOLS: dict[int, Layer] = {
    0x0021: Layer.IPV4,
    0x0057: Layer.IPV6,
    0x0281: Layer.MPLS,
    0x0283: Layer.MPLS,
}

_BSD_AF_INET = 2
_BSD_AF_INET6 = frozenset((10, 24, 28, 30))  # Linux, NetBSD/OpenBSD, FreeBSD, Darwin


def link_header(linktype: int, frame: bytes) -> Step | str:
    """The link-layer header of every link type but Ethernet (which the decoder reads as a
    layer of its own, since GRE and pseudowires carry it too)."""
    n = len(frame)
    if linktype == DLT_LINUX_SLL:
        if n < 16:
            return "short_frame"
        return _by_ethertype((frame[14] << 8) | frame[15], 16)
    if linktype == DLT_LINUX_SLL2:
        if n < 20:
            return "short_frame"
        return _by_ethertype((frame[0] << 8) | frame[1], 20)
    if linktype in (DLT_NULL, DLT_LOOP):
        if n < 4:
            return "short_frame"
        if linktype == DLT_LOOP:
            af = int.from_bytes(frame[:4], "big")
        else:  # host order of the capturing machine: try both
            af = int.from_bytes(frame[:4], "little")
            if af > 0xFFFF:
                af = int.from_bytes(frame[:4], "big")
        if af == _BSD_AF_INET:
            return Layer.IPV4, 4
        if af in _BSD_AF_INET6:
            return Layer.IPV6, 4
        return "unsupported_ethertype"
    if linktype in (DLT_PPP, DLT_PPP_SERIAL):
        return Layer.PPP, 0
    if linktype in SUPPORTED_LINKTYPES:  # raw IP: the version nibble says which
        if not n:
            return "short_frame"
        version = frame[0] >> 4
        if version == 4:
            return Layer.IPV4, 0
        if version == 6:
            return Layer.IPV6, 0
        return "bad_ip_header"
    return "unsupported_linktype"


def _by_ethertype(etype: int, off: int) -> Step | str:
    layer = ETHERTYPES.get(etype)
    return "unsupported_ethertype" if layer is None else (layer, off)


def mpls(buf: bytes, off: int) -> Step | str:
    """One label stack entry (RFC 3032 §2.1). Above the bottom of the stack another entry
    follows; below it the payload, which MPLS does not name: the IPv4 and IPv6 explicit-null
    labels (0, 2) and then the first nibble tell (4 IPv4, 6 IPv6, 0 the RFC 4385 §3 control
    word of an Ethernet pseudowire, as Suricata reads it)."""
    if len(buf) < off + 4:
        return "short_frame"
    if not buf[off + 2] & 0x01:  # S bit clear: more labels
        return Layer.MPLS, off + 4
    label = (buf[off] << 12) | (buf[off + 1] << 4) | (buf[off + 2] >> 4)
    off += 4
    if label == 0:
        return Layer.IPV4, off
    if label == 2:
        return Layer.IPV6, off
    if len(buf) <= off:
        return "short_frame"
    nibble = buf[off] >> 4
    if nibble == 4:
        return Layer.IPV4, off
    if nibble == 6:
        return Layer.IPV6, off
    if nibble == 0:
        return Layer.ETHERNET, off + 4
    return "unsupported_mpls"  # 1: an associated channel (RFC 4385 §5), or unknown


def pppoe(buf: bytes, off: int) -> Step | str:
    """A PPPoE session header (RFC 2516 §4, §5): VER 1, TYPE 1, CODE 0, session id, length;
    the PPP protocol field follows (without address and control fields)."""
    if len(buf) < off + 6:
        return "short_frame"
    if buf[off] != 0x11 or buf[off + 1] != 0:
        return "bad_pppoe_header"
    return Layer.PPP, off + 6


def ppp(buf: bytes, off: int) -> Step | str:
    """A PPP protocol field (RFC 1661 §2), after RFC 1662's address and control octets
    (FF 03) where the link sends them; a one-octet field where the protocol field is
    compressed (RFC 1661 §6.5: an odd first octet)."""
    n = len(buf)
    if n >= off + 2 and buf[off] == 0xFF and buf[off + 1] == 0x03:
        off += 2
    if n <= off:
        return "short_frame"
    proto = buf[off]
    if proto & 0x01:
        off += 1
    elif n < off + 2:
        return "short_frame"
    else:
        proto = (proto << 8) | buf[off + 1]
        off += 2
    layer = PPP_PROTOCOLS.get(proto)
    return "unsupported_ppp" if layer is None else (layer, off)


def gre(buf: bytes, off: int) -> Step | str:
    """GRE (RFC 2784, with RFC 2890's key and sequence number). As Linux's GRE receive path,
    version 1 (PPTP's enhanced GRE) and RFC 1701's routing field are not taken. ERSPAN
    (draft-foschiano-erspan) rides on GRE: type I has no header of its own, type II an
    8-octet one, type III 12 octets plus an optional 8-octet platform subheader."""
    if len(buf) < off + 4:
        return "bad_gre_header"
    flags = buf[off]
    if buf[off + 1] & 0x07 or flags & 0x40:
        return "unsupported_gre"
    proto = (buf[off + 2] << 8) | buf[off + 3]
    seq = flags & 0x10
    off += 4 + 4 * (bool(flags & 0x80) + bool(flags & 0x20) + bool(seq))
    if proto == GRE_ERSPAN_1_2:
        if seq:  # type II: a version 1 header; type I (no sequence number) has none
            if len(buf) < off + 8:
                return "bad_gre_header"
            if buf[off] >> 4 != 1:
                return "unsupported_gre"
            off += 8
        proto = ETH_TEB
    elif proto == GRE_ERSPAN_3:
        if len(buf) < off + 12:
            return "bad_gre_header"
        # version 2; frame type (FT) 0 is Ethernet, anything else is not taken
        if buf[off] >> 4 != 2 or (buf[off + 10] >> 2) & 0x1F:
            return "unsupported_gre"
        off += 20 if buf[off + 11] & 0x01 else 12  # O bit: the platform subheader
        proto = ETH_TEB
    if len(buf) < off:
        return "bad_gre_header"
    layer = ETHERTYPES.get(proto)
    return "unsupported_gre" if layer is None else (layer, off)
