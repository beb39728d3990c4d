"""RDP: the client opens with a TPKT (RFC 1006) carrying an X.224 Connection Request
(MS-RDPBCGR 2.2.1.1):

    03 00 <length, 2 bytes BE>   TPKT version 3
    <LI> e0 <dst-ref 2> <src-ref 2> <class 1>   X.224 CR; LI = TPKT length - 5
    [ "Cookie: mstshash=<user>\\r\\n" | routing token "Cookie: msts=...\\r\\n" ]
    [ RDP_NEG_REQ: 01 <flags> 08 00 <requested protocols, 4 LE> ]

The server's X.224 Connection Confirm has code d0. ISO-TSAP/S7comm (port 102) also sends a
TPKT + X.224 CR, but with TSAP parameters (c0/c1/c2) after the fixed part, so the bytes after
the fixed part must be one of RDP's (or nothing) before we claim it.
Finding: cookie (the mstshash user name, or the whole routing token).
"""

from __future__ import annotations

from ..api import NEED_MORE, NO_MATCH, Detection, FlowView, Match, Plugin

CR = 0xE0
CC = 0xD0
TPKT_HEAD = 4
X224_FIXED = 7  # LI, code, dst-ref, src-ref, class
MAX_TPKT = 4096  # a Connection Request is well under this
COOKIE = b"Cookie: "
MSTSHASH = b"mstshash="


def _tpkt(buf: bytes, code: int) -> tuple[int, bytes] | Detection:
    """Validate TPKT + X.224 fixed part with TPDU ``code``; (length, tpdu) or a Detection."""
    want = bytes([0x03, 0x00])
    if want[: len(buf)] != buf[:2]:
        return NO_MATCH
    if len(buf) < TPKT_HEAD:
        return NEED_MORE
    length = int.from_bytes(buf[2:4], "big")
    if not TPKT_HEAD + X224_FIXED <= length <= MAX_TPKT:
        return NO_MATCH
    if len(buf) >= 5 and buf[4] != length - 5:
        return NO_MATCH  # the X.224 length indicator covers the rest of the TPKT
    if len(buf) >= 6 and buf[5] != code:
        return NO_MATCH
    if len(buf) < length:
        return NEED_MORE
    return length, buf[TPKT_HEAD:length]


def _variable_part(rest: bytes) -> tuple[str | None] | None:
    """Check what follows the CR fixed part; returns (cookie,) or None if it is not RDP's."""
    cookie: str | None = None
    if rest.startswith(COOKIE):
        end = rest.find(b"\r\n")
        if end < 0:
            return None
        value = rest[len(COOKIE) : end]
        if not all(0x20 <= b < 0x7F for b in value):
            return None
        text = value.decode("ascii")
        cookie = text[len(MSTSHASH) :] if value.startswith(MSTSHASH) else text
        rest = rest[end + 2 :]
    if not rest:
        return (cookie,)
    # Only an RDP_NEG_REQ (type 1, length 8) may follow, optionally with the 36-byte
    # RDP_NEG_CORRELATION_INFO (type 6) newer clients append.
    if len(rest) not in (8, 44) or rest[0] != 0x01 or rest[2:4] != b"\x08\x00":
        return None
    if len(rest) == 44 and (rest[8] != 0x06 or rest[10:12] != b"\x24\x00"):
        return None
    return (cookie,)


class Rdp(Plugin):
    name = "rdp"
    ports = {3389}

    def detect(self, flow: FlowView) -> Match | Detection:
        c2s, s2c = flow.c2s, flow.s2c
        if not c2s:
            if not s2c:
                return NEED_MORE
            # Only the server side was captured: a Connection Confirm still says RDP.
            got = _tpkt(s2c, CC)
            if isinstance(got, tuple):
                return self.match("rdp")
            return got
        if flow.first_speaker == "server":
            return NO_MATCH  # the client sends the Connection Request first
        got = _tpkt(c2s, CR)
        if not isinstance(got, tuple):
            return got
        _, tpdu = got
        # dst-ref is 0 in a request; class 0 (RDP) ; then the variable part.
        if tpdu[2:4] != b"\x00\x00" or tpdu[6] & 0xF0:
            return NO_MATCH
        var = _variable_part(tpdu[X224_FIXED:])
        if var is None:
            return NO_MATCH
        return self.match("rdp", cookie=var[0])
