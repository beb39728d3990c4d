"""PostgreSQL: the client's first message (protocol 3, https://www.postgresql.org/docs/current/
protocol-message-formats.html) is untyped: int32 length, int32 code, body.

- StartupMessage: code 0x0003_000m (3.0; 3.2 since PostgreSQL 18), then NUL-terminated
  key/value pairs and a final NUL -> findings user, database;
- SSLRequest (length 8, code 80877103 = 04 d2 16 2f): the server answers one byte, 'S' or 'N'
  (after 'N' the StartupMessage follows in clear, and we read it too) -> ssl_request true;
- GSSENCRequest (80877104 = 04 d2 16 30) and CancelRequest (length 16, 80877102).

An SSLRequest/GSSENCRequest matches at once, with ``complete=False`` while the answer is
still to come or, after 'N', while the StartupMessage that follows in clear is not whole
(libpq may also send an SSLRequest after a refused GSSENCRequest; each request takes one
answer byte). The inspector asks again as data arrives. 'S'/'G' (encryption follows) or
'E' (an old server's error) complete the match: no user/database will be readable.
"""

from __future__ import annotations

import struct

from ..api import NEED_MORE, NO_MATCH, Detection, FlowView, Match, Plugin

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
PROTOCOL_MAJOR = 3
MAX_STARTUP = 10000  # the server's MAX_STARTUP_PACKET_LENGTH: longer packets are refused
ANSWERS = (b"S", b"N", b"E", b"G")
MAX_REQUESTS = 2  # libpq: GSSENCRequest, then SSLRequest when GSS encryption is refused


class _Short(Exception):
    """The bytes end before the message does: a valid prefix so far."""


def _u32(buf: bytes, pos: int) -> int:
    if len(buf) < pos + 4:
        raise _Short
    return int(struct.unpack_from(">I", buf, pos)[0])


def _header_prefix_ok(buf: bytes) -> bool:
    """For fewer than 8 bytes: could these still become a valid first message?"""
    if len(buf) >= 4:
        length = int.from_bytes(buf[:4], "big")
        if not 8 <= length <= MAX_STARTUP:
            return False
        code = buf[4:8]
        candidates = [
            SSL_REQUEST.to_bytes(4, "big"),
            GSSENC_REQUEST.to_bytes(4, "big"),
            CANCEL_REQUEST.to_bytes(4, "big"),
            b"\x00\x03\x00",  # protocol 3.x (the minor byte comes last)
        ]
        return any(c.startswith(code[: len(c)]) for c in candidates)
    # Lengths above 10000 have a non-zero first or second byte.
    return buf[:2] == b"\x00\x00"[: len(buf[:2])]


def parse_startup(buf: bytes) -> dict[str, str]:
    """Parse one StartupMessage at the start of ``buf``; return its parameters.
    Raises _Short for a valid prefix, ValueError when it is not one."""
    if len(buf) < 8:
        if _header_prefix_ok(buf):
            raise _Short
        raise ValueError("bad header")
    length = _u32(buf, 0)
    code = _u32(buf, 4)
    if not 8 < length <= MAX_STARTUP or code >> 16 != PROTOCOL_MAJOR or code & 0xFFFF > 9:
        raise ValueError("not a StartupMessage")
    body = buf[8:length]
    complete = len(buf) >= length
    params: dict[str, str] = {}
    pos = 0
    # Walk key\0value\0 ... \0; each step consumes at least one byte, so O(length).
    while True:
        if pos >= len(body):
            if complete:
                raise ValueError("missing terminator")
            raise _Short
        if body[pos] == 0:
            if not complete:
                raise _Short  # the terminator must be the last byte of the message
            if pos != len(body) - 1:
                raise ValueError("bytes after the terminator")
            break
        kend = body.find(b"\0", pos)
        if kend < 0:
            _check_key(body[pos:])
            if complete:
                raise ValueError("unterminated key")
            raise _Short
        key = _check_key(body[pos:kend])
        vend = body.find(b"\0", kend + 1)
        if vend < 0:
            if complete:
                raise ValueError("unterminated value")
            raise _Short
        params[key] = body[kend + 1 : vend].decode("utf-8", errors="replace")
        pos = vend + 1
    if "user" not in params:
        raise ValueError("no user")  # the protocol requires it
    return params


def _check_key(raw: bytes) -> str:
    # Parameter names are identifiers ("user", "application_name", "_pq_.x"): printable.
    if not all(0x21 <= b < 0x7F for b in raw):
        raise ValueError("bad parameter name")
    return raw.decode("ascii")


class Postgresql(Plugin):
    name = "postgresql"
    ports = {5432}

    def detect(self, flow: FlowView) -> Match | Detection:
        c2s, s2c = flow.c2s, flow.s2c
        if flow.first_speaker == "server":
            return NO_MATCH  # the client always speaks first
        if not c2s:
            return NEED_MORE if not s2c else NO_MATCH
        if len(c2s) < 8:
            return NEED_MORE if _header_prefix_ok(c2s) else NO_MATCH
        length = _u32(c2s, 0)
        code = _u32(c2s, 4)
        if length == 8 and code in (SSL_REQUEST, GSSENC_REQUEST):
            return self._encryption_request(c2s, s2c)
        if length == 16 and code == CANCEL_REQUEST:
            return self.match("postgresql")
        try:
            params = parse_startup(c2s)
        except _Short:
            return NEED_MORE
        except ValueError:
            return NO_MATCH
        # libpq sends database only when it differs from user; the server defaults to user.
        return self.match("postgresql", user=params["user"], database=params.get("database"))

    def _encryption_request(self, c2s: bytes, s2c: bytes) -> Match | Detection:
        """SSLRequest / GSSENCRequest first: each takes one answer byte; after 'N' the next
        request or the StartupMessage follows in clear."""
        # The server answers a single byte: S/G (go encrypt), N (no), or E (old server).
        if s2c and s2c[:1] not in ANSWERS:
            return NO_MATCH
        ssl = False
        pos = 0
        for answered in range(MAX_REQUESTS):
            rest = c2s[pos:]
            if len(rest) < 8 or _u32(rest, 0) != 8:
                break
            code = _u32(rest, 4)
            if code not in (SSL_REQUEST, GSSENC_REQUEST):
                break
            ssl = ssl or code == SSL_REQUEST
            flag = True if ssl else None
            answer = s2c[answered : answered + 1]
            if not answer:
                return self.match("postgresql", complete=False, ssl_request=flag)
            if answer != b"N":
                # S/G: encryption follows; E or anything else: the server gives up.
                return self.match("postgresql", ssl_request=flag)
            pos += 8
        # Refused: the StartupMessage follows in clear; read it once it is all there.
        flag = True if ssl else None
        try:
            params = parse_startup(c2s[pos:])
        except _Short:
            return self.match("postgresql", complete=False, ssl_request=flag)
        except ValueError:
            return self.match("postgresql", ssl_request=flag)
        return self.match(
            "postgresql", user=params["user"], database=params.get("database"), ssl_request=flag
        )
