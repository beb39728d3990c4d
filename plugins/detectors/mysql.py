"""MySQL / MariaDB: the server speaks first with the Initial Handshake packet (protocol 10):

    3-byte little-endian payload length, sequence id 0,
    payload: 0x0a, server_version NUL-terminated, connection id (4),
             auth-plugin-data part 1 (8), filler 0x00, capability flags low (2), ...

MariaDB sends the same packet (its version string reads "5.5.5-10.11.6-MariaDB..." for old
clients' sake). A server that refuses the host sends an ERR packet (0xff) instead; that is
MySQL too, without a version.
"""

from __future__ import annotations

from ..api import NEED_MORE, NO_MATCH, Detection, FlowView, Match, Plugin

PROTOCOL_10 = 0x0A
# Version (up to ~60 bytes) + fixed fields + 20-byte scramble + plugin name: a few hundred
# bytes at most; a bigger first packet is not a handshake.
MAX_HANDSHAKE = 1024
MAX_VERSION = 128
# Fixed part after the version's NUL: connection id 4 + scramble part 1 (8) + filler 1 +
# capability flags 2.
FIXED_AFTER_VERSION = 4 + 8 + 1 + 2


class Mysql(Plugin):
    name = "mysql"
    ports = {3306}

    def detect(self, flow: FlowView) -> Match | Detection:
        result = self._detect(flow)
        if result is NEED_MORE and flow.first_speaker == "client":
            # The server always speaks first, so a client that spoke first rules MySQL out;
            # only a complete, valid greeting overrides that (test helpers that build a view
            # from both sides mark the client as first speaker).
            return NO_MATCH
        return result

    def _detect(self, flow: FlowView) -> Match | Detection:
        s2c = flow.s2c
        if not s2c:
            return NEED_MORE
        header = s2c[:4]
        if len(header) >= 3:
            length = int.from_bytes(header[:3], "little")
            if not 1 <= length <= MAX_HANDSHAKE:
                return NO_MATCH
        if len(header) >= 4 and header[3] != 0:
            return NO_MATCH  # the greeting is packet 0
        if len(s2c) < 5:
            return NEED_MORE
        payload = s2c[4 : 4 + length]
        if payload[0] == 0xFF:
            return self._error(payload, length)
        if payload[0] != PROTOCOL_10:
            return NO_MATCH
        nul = payload.find(b"\0", 1, 1 + MAX_VERSION + 1)
        if nul < 0:
            version = payload[1 : 1 + MAX_VERSION + 1]
            if len(version) > MAX_VERSION or len(payload) >= length or not _version_ok(version):
                return NO_MATCH
            return NEED_MORE
        version = payload[1:nul]
        # Versions start with a digit ("8.0.36", "5.5.5-10.11.6-MariaDB-0+deb12u1").
        if not version or not version[:1].isdigit() or not _version_ok(version):
            return NO_MATCH
        if length < nul + 1 + FIXED_AFTER_VERSION:
            return NO_MATCH  # too short to hold the fixed fields
        fixed = payload[nul + 1 : nul + 1 + FIXED_AFTER_VERSION]
        if len(fixed) < FIXED_AFTER_VERSION:
            return NEED_MORE
        if fixed[12] != 0:
            return NO_MATCH  # the filler byte after scramble part 1 is always zero
        return self.match("mysql", server_version=version.decode("ascii"))

    def _error(self, payload: bytes, length: int) -> Match | Detection:
        # ERR packet: 0xff, error code (2, LE), message (an SQLSTATE marker is optional here
        # because the handshake has not negotiated CLIENT_PROTOCOL_41 yet).
        if len(payload) < min(length, 8):
            return NEED_MORE
        code = int.from_bytes(payload[1:3], "little")
        message = payload[3:length]
        if not 1000 <= code < 5000 or len(message) < 5:
            return NO_MATCH
        if not all(0x20 <= b < 0x7F for b in message[:64]):
            return NO_MATCH
        return self.match("mysql")


def _version_ok(raw: bytes) -> bool:
    return all(0x20 < b < 0x7F for b in raw)
