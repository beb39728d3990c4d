"""SMB over direct TCP (445) or NetBIOS session service (139), client first.

Each SMB message rides in a NetBIOS session message: 00 <length, 3 bytes BE>, then
ff "SMB" (SMB1), fe "SMB" (SMB2/3; StructureSize 64 follows), fd "SMB" (SMB3 encryption
transform) or fc "SMB" (SMB 3.1.1 compression transform). On 139 the client may first send a
NetBIOS session request (0x81, two encoded NetBIOS names); the server answers 0x82, then SMB
follows, so a session request alone is NEED_MORE.
Finding: version, "1" or "2+" (from the server's reply when present: an SMB1 Negotiate from a
client that offers SMB2 dialects is answered in SMB2, and that is what the flow speaks).
"""

from __future__ import annotations

from ..api import NEED_MORE, NO_MATCH, Detection, FlowView, Match, Plugin

SESSION_MESSAGE = 0x00
SESSION_REQUEST = 0x81
POSITIVE_RESPONSE = 0x82
KEEPALIVE = 0x85
MAGIC = {b"\xffSMB": "1", b"\xfeSMB": "2+", b"\xfdSMB": "2+", b"\xfcSMB": "2+"}
MIN_LEN = {b"\xffSMB": 35, b"\xfeSMB": 64, b"\xfdSMB": 52, b"\xfcSMB": 16}  # header sizes
MAX_NBSS_PREFIX = 8  # keepalives / session packets skipped before giving up


def smb_version(buf: bytes, request: bool) -> str | Detection:
    """The SMB version of the first SMB message in ``buf`` (NetBIOS framing), NEED_MORE for a
    valid prefix, NO_MATCH otherwise. ``request``: the client side (0x81 allowed), else the
    server side (0x82 allowed)."""
    pos = 0
    # A bounded number of NetBIOS control packets may precede the first SMB message.
    for _ in range(MAX_NBSS_PREFIX):
        if len(buf) <= pos:
            return NEED_MORE
        kind = buf[pos]
        head = buf[pos : pos + 4]
        if kind == SESSION_MESSAGE:
            break
        if kind == KEEPALIVE:
            if b"\x85\x00\x00\x00"[: len(head)] != head:
                return NO_MATCH
            pos += 4
            continue
        if kind == POSITIVE_RESPONSE and not request:
            if b"\x82\x00\x00\x00"[: len(head)] != head:
                return NO_MATCH
            pos += 4
            continue
        if kind == SESSION_REQUEST and request and pos == 0:
            got = _session_request(buf)
            if isinstance(got, Detection):
                return got
            pos = got
            continue
        return NO_MATCH
    else:
        return NO_MATCH
    if len(buf) < pos + 4:
        return NEED_MORE
    length = int.from_bytes(buf[pos + 1 : pos + 4], "big")
    magic = buf[pos + 4 : pos + 8]
    cand = next((m for m in MAGIC if m.startswith(magic)), None) if len(magic) < 4 else magic
    if cand not in MAGIC:
        return NO_MATCH
    if length < MIN_LEN[cand]:
        return NO_MATCH
    if len(magic) < 4:
        return NEED_MORE
    if cand == b"\xfeSMB":
        size = buf[pos + 8 : pos + 10]
        if b"\x40\x00"[: len(size)] != size:
            return NO_MATCH  # SMB2 header StructureSize is always 64
        if len(size) < 2:
            return NEED_MORE
    return MAGIC[cand]


def _session_request(buf: bytes) -> int | Detection:
    """Validate a NetBIOS session request at 0; the position after it, or a Detection."""
    if len(buf) < 4:
        return NEED_MORE if buf[1:2] in (b"", b"\x00", b"\x01") else NO_MATCH
    if buf[1] & 0xFE:
        return NO_MATCH
    length = int.from_bytes(buf[2:4], "big") | (buf[1] & 1) << 16
    if not 68 <= length <= 512:  # two 34-byte encoded names (plus optional scope)
        return NO_MATCH
    body = buf[4 : 4 + length]
    # First-level encoded name: length byte 32, then 32 bytes in 'A'..'P'.
    name = body[:33]
    if name[:1] not in (b"", b"\x20") or not all(0x41 <= b <= 0x50 for b in name[1:]):
        return NO_MATCH
    if len(body) < length:
        return NEED_MORE
    return 4 + length


class Smb(Plugin):
    name = "smb"
    ports = {445, 139}

    def detect(self, flow: FlowView) -> Match | Detection:
        if flow.first_speaker == "server":
            return NO_MATCH  # the client always speaks first
        c2s, s2c = flow.c2s, flow.s2c
        if not c2s:
            return NEED_MORE if not s2c else NO_MATCH
        version = smb_version(c2s, request=True)
        if isinstance(version, Detection):  # (Detection is a str enum: test it first)
            return version
        if s2c:
            reply = smb_version(s2c, request=False)
            if not isinstance(reply, Detection):
                version = reply  # the server's answer is the dialect family in use
        return self.match("smb", version=version)
