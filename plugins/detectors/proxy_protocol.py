"""HAProxy PROXY protocol detector (v1 text and v2 binary), c2s only.

What is recognised
    v1: ``PROXY TCP4|TCP6 src dst sport dport\\r\\n`` (at most 107 bytes, addresses checked
        with :mod:`ipaddress` against the family) and ``PROXY UNKNOWN...\\r\\n`` (matches
        without addresses).
    v2: the 12-byte signature ``0d 0a 0d 0a 00 0d 0a 51 55 49 54 0a``, version 2 with command
        LOCAL (no addresses) or PROXY, then family/transport and a length that must cover the
        address block; INET (0x1x) and INET6 (0x2x) give addresses, UNIX and UNSPEC match
        without them. TLVs after the addresses are not needed and not read.
Findings ``src`` and ``dst`` as "ip:port" ("[v6]:port" for IPv6).
:func:`header_length` gives the size of a complete header, so the framework can look at the
proxied protocol behind it.
"""

from __future__ import annotations

import ipaddress
from typing import Any, ClassVar

from ..api import NEED_MORE, NO_MATCH, Detection, FlowView, Match, Plugin

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 line, CRLF included (spec 2.1)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_HEADER = 16
V2_ADDR_LEN = {0x1: 12, 0x2: 36, 0x3: 216, 0x0: 0}  # by address family (high nibble)

Parsed = tuple[str, dict[str, Any], int]  # status, findings, header length
PARTIAL: Parsed = ("partial", {}, 0)
INVALID: Parsed = ("invalid", {}, 0)


def _endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _port(raw: bytes) -> int | None:
    if not raw.isdigit() or len(raw) > 5:
        return None
    value = int(raw)
    return value if value <= 65535 else None


def _ip(raw: bytes, family: bytes) -> str | None:
    cls = ipaddress.IPv4Address if family == b"TCP4" else ipaddress.IPv6Address
    try:
        return str(cls(raw.decode("ascii")))
    except (ValueError, UnicodeDecodeError):  # not an address of that family
        return None


def parse_v1(data: bytes) -> Parsed:
    if len(data) < len(V1_PREFIX):
        return PARTIAL if V1_PREFIX.startswith(data) else INVALID
    if not data.startswith(V1_PREFIX):
        return INVALID
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        head = data[:V1_MAX]
        printable = all(0x20 <= b <= 0x7E for b in head.removesuffix(b"\r"))
        return PARTIAL if len(head) < V1_MAX and printable else INVALID
    parts = data[len(V1_PREFIX) : end].split(b" ")
    if parts[0] == b"UNKNOWN":
        return "ok", {}, end + 2
    if parts[0] not in (b"TCP4", b"TCP6") or len(parts) != 5:
        return INVALID
    src, dst = _ip(parts[1], parts[0]), _ip(parts[2], parts[0])
    sport, dport = _port(parts[3]), _port(parts[4])
    if src is None or dst is None or sport is None or dport is None:
        return INVALID
    return "ok", {"src": _endpoint(src, sport), "dst": _endpoint(dst, dport)}, end + 2


def _v2_addresses(family: int, block: bytes) -> dict[str, str]:
    if family == 0x1:
        src, dst = str(ipaddress.IPv4Address(block[0:4])), str(ipaddress.IPv4Address(block[4:8]))
        ports = block[8:12]
    elif family == 0x2:
        src = str(ipaddress.IPv6Address(block[0:16]))
        dst = str(ipaddress.IPv6Address(block[16:32]))
        ports = block[32:36]
    else:
        return {}  # UNIX sockets and UNSPEC carry no ip:port
    sport, dport = int.from_bytes(ports[:2], "big"), int.from_bytes(ports[2:], "big")
    return {"src": _endpoint(src, sport), "dst": _endpoint(dst, dport)}


def parse_v2(data: bytes) -> Parsed:
    if len(data) < len(V2_SIGNATURE):
        return PARTIAL if V2_SIGNATURE.startswith(data) else INVALID
    if not data.startswith(V2_SIGNATURE):
        return INVALID
    if len(data) > 12 and data[12] not in (0x20, 0x21):  # version 2, LOCAL or PROXY
        return INVALID
    if len(data) > 13 and (data[13] >> 4 not in V2_ADDR_LEN or data[13] & 0x0F > 2):
        return INVALID
    if len(data) < V2_HEADER:
        return PARTIAL
    family, length = data[13] >> 4, int.from_bytes(data[14:16], "big")
    if data[12] == 0x20:  # LOCAL: health checks from the proxy itself, no addresses
        return "ok", {}, V2_HEADER + length
    addr_len = V2_ADDR_LEN[family]
    if length < addr_len:
        return INVALID
    block = data[V2_HEADER : V2_HEADER + addr_len]
    if len(block) < addr_len:
        return PARTIAL
    return "ok", _v2_addresses(family, block), V2_HEADER + length


def parse(data: bytes) -> Parsed:
    return parse_v2(data) if data[:1] == b"\r" else parse_v1(data)


def header_length(data: bytes) -> int | None:
    """Bytes taken by a complete PROXY header at the start of ``data`` (None if there is
    none, or it is incomplete); for v2 this includes the TLVs, which may still be arriving."""
    status, _, length = parse(data)
    return length if status == "ok" else None


class ProxyProtocol(Plugin):
    name = "proxy-protocol"
    ports: ClassVar[set[int]] = set()

    def detect(self, flow: FlowView) -> Match | Detection:
        if not flow.c2s:
            return NO_MATCH if flow.s2c else NEED_MORE  # the proxy (client) speaks first
        status, findings, _ = parse(flow.c2s)
        if status == "invalid":
            return NO_MATCH
        if status == "partial":
            return NEED_MORE
        return self.match("proxy-protocol", **findings)
