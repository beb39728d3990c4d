"""SOCKS detectors: SOCKS4/4a (``socks4``) and SOCKS5 (``socks5``, RFC 1928/1929).

SOCKS4 / 4a
    c2s ``04 cmd port(2) ip(4) userid NUL`` with cmd 1 (CONNECT) or 2 (BIND); SOCKS4a when
    the ip is 0.0.0.x (x != 0), followed by ``hostname NUL``. Matches on the complete request;
    ``target`` is "ip:port" or "hostname:port". If the server already answered, its reply must
    be ``00 5a..5d``. The userid and hostname must be printable and short (<= 255 bytes).

SOCKS5
    c2s greeting ``05 n methods[n]`` (n >= 1). It matches once something confirms it: the
    server's method selection ``05 m`` (m offered, or ff "no acceptable method"), or a valid
    request after the greeting. ``target`` ("host:port", "[v6]:port" for IPv6) comes from the
    request ``05 cmd 00 atyp addr port`` (cmd 1-3, atyp 1/3/4); with username/password
    authentication (method 02 selected) the RFC 1929 sub-negotiation ``01 ulen user plen
    pass`` is skipped first. Without a method selection, a request that has started but is
    incomplete waits (NEED_MORE). Once the server's selection confirms SOCKS5 and the request
    is not whole yet, the flow matches without a target and ``complete=False``: the inspector
    asks again as data arrives until the request gives the target. With method ff (refused)
    or a method whose exchange is not readable (GSSAPI, private methods) no target will come:
    the match is complete. Bytes after the greeting that turn out not to be a request once
    matched also end it (complete, no target).
"""

from __future__ import annotations

import ipaddress

from ..api import NEED_MORE, NO_MATCH, Detection, FlowView, Match, Plugin

MAX_FIELD = 255  # userid / hostname bound: longer is not SOCKS4 in practice
PARTIAL = "partial"
INVALID = "invalid"
READABLE_METHODS = (0x00, 0x02)  # no authentication, username/password: the request follows


def _printable(raw: bytes) -> bool:
    return all(0x20 <= b <= 0x7E for b in raw)


def _cstring(data: bytes, start: int) -> bytes | str:
    """The NUL-terminated printable string at ``start``, or PARTIAL / INVALID."""
    end = data.find(b"\x00", start, start + MAX_FIELD + 1)
    if end < 0:
        rest = data[start : start + MAX_FIELD + 1]
        return PARTIAL if len(rest) <= MAX_FIELD and _printable(rest) else INVALID
    raw = data[start:end]
    return raw if _printable(raw) else INVALID


# --- SOCKS4 ---------------------------------------------------------------------------------


def socks4_request(data: bytes) -> str:
    """The target of a complete SOCKS4/4a request, or PARTIAL / INVALID (``data`` not empty)."""
    head = data[:8]
    if head[0] != 0x04 or (len(head) > 1 and head[1] not in (1, 2)):
        return INVALID
    if len(head) < 8:
        return PARTIAL
    port = int.from_bytes(head[2:4], "big")
    userid = _cstring(data, 8)
    if not isinstance(userid, bytes):
        return userid
    ip = head[4:8]
    if ip[:3] != b"\x00\x00\x00" or ip[3] == 0:
        return f"{ipaddress.IPv4Address(ip)}:{port}"
    host = _cstring(data, 8 + len(userid) + 1)  # SOCKS4a: the name follows the userid
    if not isinstance(host, bytes):
        return host
    return f"{host.decode('ascii')}:{port}" if host else INVALID


def _socks4_reply_ok(s2c: bytes) -> bool:
    return s2c[:1] in (b"", b"\x00") and (len(s2c) < 2 or 0x5A <= s2c[1] <= 0x5D)


class Socks4(Plugin):
    name = "socks4"
    ports = {1080}

    def detect(self, flow: FlowView) -> Match | Detection:
        if not flow.c2s:
            return NO_MATCH if flow.s2c else NEED_MORE
        target = socks4_request(flow.c2s)
        if target == INVALID or not _socks4_reply_ok(flow.s2c):
            return NO_MATCH
        if target == PARTIAL:
            return NEED_MORE
        return self.match("socks4", target=target)


# --- SOCKS5 ---------------------------------------------------------------------------------


def socks5_greeting(data: bytes) -> bytes | str:
    """The offered methods of a complete greeting, or PARTIAL / INVALID."""
    if data[:1] != b"\x05"[: len(data[:1])]:
        return INVALID
    if len(data) < 2:
        return PARTIAL
    if data[1] == 0:
        return INVALID
    methods = data[2 : 2 + data[1]]
    return methods if len(methods) == data[1] else PARTIAL


def _skip_userpass(data: bytes, pos: int) -> int | str:
    """Offset after an RFC 1929 username/password request at ``pos``, or PARTIAL / INVALID."""
    if pos >= len(data):
        return PARTIAL
    if data[pos] != 0x01:
        return INVALID
    if pos + 1 >= len(data):
        return PARTIAL
    after_user = pos + 2 + data[pos + 1]
    if after_user >= len(data):
        return PARTIAL
    end = after_user + 1 + data[after_user]
    return end if end <= len(data) else PARTIAL


def socks5_request(data: bytes, pos: int) -> str:
    """The "host:port" of a SOCKS5 request at ``pos``, or PARTIAL / INVALID."""
    head = data[pos : pos + 5]
    checks = ((0, (5,)), (1, (1, 2, 3)), (2, (0,)), (3, (1, 3, 4)))
    if any(len(head) > i and head[i] not in allowed for i, allowed in checks):
        return INVALID
    if len(head) < 5:
        return PARTIAL
    atyp = head[3]
    if atyp == 1:
        addr_len, start = 4, pos + 4
    elif atyp == 4:
        addr_len, start = 16, pos + 4
    else:
        addr_len, start = head[4], pos + 5
    raw = data[start : start + addr_len]
    port_raw = data[start + addr_len : start + addr_len + 2]
    if len(raw) < addr_len or len(port_raw) < 2:
        return PARTIAL
    port = int.from_bytes(port_raw, "big")
    if atyp == 1:
        return f"{ipaddress.IPv4Address(raw)}:{port}"
    if atyp == 4:
        return f"[{ipaddress.IPv6Address(raw)}]:{port}"
    if not raw or not _printable(raw):
        return INVALID
    return f"{raw.decode('ascii')}:{port}"


def _socks5_reply(s2c: bytes, methods: bytes) -> int | str | None:
    """The selected method, None if the server has not answered, or PARTIAL / INVALID."""
    if not s2c:
        return None
    if s2c[0] != 0x05:
        return INVALID
    if len(s2c) < 2:
        return PARTIAL
    return s2c[1] if s2c[1] in methods or s2c[1] == 0xFF else INVALID


class Socks5(Plugin):
    name = "socks5"
    ports = {1080}

    def detect(self, flow: FlowView) -> Match | Detection:
        result = self._detect(flow)
        if result is NO_MATCH and flow.protocol == self.name:
            # Matched already and asked again for the target: it is not coming.
            return self.match("socks5")
        return result

    def _detect(self, flow: FlowView) -> Match | Detection:
        data = flow.c2s
        if not data:
            return NO_MATCH if flow.s2c else NEED_MORE
        methods = socks5_greeting(data)
        if methods == INVALID:
            return NO_MATCH
        if not isinstance(methods, bytes):
            return NO_MATCH if flow.s2c else NEED_MORE  # the server answers whole greetings
        selected = _socks5_reply(flow.s2c, methods)
        if selected == INVALID:
            return NO_MATCH
        if isinstance(selected, int) and selected not in READABLE_METHODS:
            return self.match("socks5")  # refused, or GSSAPI/private: no readable request
        pos: int | str = 2 + len(methods)
        if selected == 0x02:
            pos = _skip_userpass(data, 2 + len(methods))
        if pos == INVALID:
            return NO_MATCH
        target = socks5_request(data, pos) if isinstance(pos, int) else PARTIAL
        if target == INVALID:
            return NO_MATCH
        if target != PARTIAL:
            return self.match("socks5", target=target)
        # No complete request yet: the method selection confirms SOCKS5, the target is to come.
        if isinstance(selected, int):
            return self.match("socks5", complete=False)
        return NEED_MORE
