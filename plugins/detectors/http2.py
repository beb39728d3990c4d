"""HTTP/2 with prior knowledge (h2c): the client connection preface.

What is recognised
    c2s starts with the 24-byte preface ``PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n`` (RFC 9113
    3.4); NEED_MORE while c2s is a prefix of it. The server may speak first: its connection
    preface is a SETTINGS frame, which nghttpd sends as soon as the connection is up, before
    the client's preface arrives; so s2c may already hold frames (the start of a SETTINGS
    frame on stream 0) while c2s is empty or a prefix of the preface.
    The preface decides. The frames after it are walked to the first HEADERS frame (plus
    CONTINUATION frames) whose HPACK block gives ``method``, ``host`` (:authority, else a
    Host header), ``path`` and ``user_agent``; until that header block is whole the match is
    ``complete=False`` and the inspector calls detect() again as data arrives (within the
    8 KiB budget). ``status`` comes from the server's first HEADERS frame (s2c, no preface);
    the match also stays incomplete until that frame is whole (as HTTP/1 waits for the
    status line), unless the server's frames end that hope (GOAWAY, RST_STREAM, a framing
    error). Once the request findings are in (``method`` in ``flow.findings``), later calls
    read only s2c. A framing error after the preface completes the match without header
    findings.

HPACK decoding uses the pure-Python ``hpack`` package (RFC 7541, with the Huffman code), a
declared dependency; should it be missing the detector still matches, without header
findings.
A fresh decoder is correct here because the first header block of each direction is
decoded against an empty dynamic table.
"""

from __future__ import annotations

from typing import Any

from ..api import NEED_MORE, NO_MATCH, Detection, FlowView, Match, Plugin

try:  # optional dependency: see the module docstring
    import hpack
except ImportError:  # pragma: no cover - depends on the environment
    hpack = None  # type: ignore[assignment]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
BUDGET = 8192
FRAME_HEADER = 9
TYPE_HEADERS, TYPE_RST_STREAM, TYPE_SETTINGS, TYPE_GOAWAY, TYPE_CONTINUATION = 1, 3, 4, 7, 9
MAX_SETTINGS = 6 * 64  # a SETTINGS frame lists a few parameters (7 are defined)
FLAG_END_HEADERS, FLAG_PADDED, FLAG_PRIORITY = 0x4, 0x8, 0x20
MAX_FRAMES = 64  # a client sends SETTINGS/WINDOW_UPDATE/PRIORITY before HEADERS, not more


def _header_block(data: bytes, pos: int) -> tuple[str, bytes]:
    """Walk frames from ``pos`` to the first complete header block.

    Returns ("ok", block), ("none", b"") when the data ends on a frame boundary without
    HEADERS, ("partial", b"") when a frame is cut, ("invalid", b"") on a framing error.
    """
    block = bytearray()
    in_headers = False
    for _ in range(MAX_FRAMES):
        if pos == len(data):
            return ("partial" if in_headers else "none"), b""
        if pos + FRAME_HEADER > len(data):
            return "partial", b""
        length = int.from_bytes(data[pos : pos + 3], "big")
        ftype, flags = data[pos + 3], data[pos + 4]
        payload = data[pos + FRAME_HEADER : pos + FRAME_HEADER + length]
        if len(payload) < length:
            return "partial", b""
        pos += FRAME_HEADER + length
        if in_headers and ftype != TYPE_CONTINUATION:
            return "invalid", b""  # RFC 9113 6.10: nothing may interleave
        if ftype == TYPE_HEADERS:
            fragment = _headers_fragment(payload, flags)
            if fragment is None:
                return "invalid", b""
            block += fragment
            in_headers = True
        elif ftype == TYPE_CONTINUATION and in_headers:
            block += payload
        else:
            continue
        if flags & FLAG_END_HEADERS:
            return "ok", bytes(block)
    return "none", b""


def _headers_fragment(payload: bytes, flags: int) -> bytes | None:
    """Strip padding and priority fields from a HEADERS payload."""
    start, pad = 0, 0
    if flags & FLAG_PADDED:
        if not payload:
            return None
        pad, start = payload[0], 1
    if flags & FLAG_PRIORITY:
        start += 5
    if start + pad > len(payload):
        return None
    return payload[start : len(payload) - pad]


def decode_headers(block: bytes) -> dict[str, str]:
    """HPACK-decode one header block into {name: value} (first wins); {} if impossible."""
    if hpack is None:
        return {}
    try:
        pairs = hpack.Decoder().decode(block, raw=True)
    except hpack.HPACKError:  # malformed block: no findings rather than an exception
        return {}
    out: dict[str, str] = {}
    for name, value in pairs:
        out.setdefault(bytes(name).decode("latin-1").lower(), bytes(value).decode("latin-1"))
    return out


def request_findings(headers: dict[str, str]) -> dict[str, Any]:
    return {
        "method": headers.get(":method"),
        "host": headers.get(":authority") or headers.get("host"),
        "path": headers.get(":path"),
        "user_agent": headers.get("user-agent"),
    }


def server_preface_ok(s2c: bytes) -> bool:
    """Could s2c be (the start of) a server connection preface: a SETTINGS frame (not an ACK)
    on stream 0 whose length is a multiple of 6 (RFC 9113 3.4, 6.5)?"""
    head = s2c[:FRAME_HEADER]
    if len(head) >= 3 and int.from_bytes(head[:3], "big") % 6:
        return False
    if len(head) >= 3 and int.from_bytes(head[:3], "big") > MAX_SETTINGS:
        return False
    if len(head) > 3 and head[3] != TYPE_SETTINGS:
        return False
    if len(head) > 4 and head[4] != 0:
        return False
    return head[5:] == b"\0\0\0\0"[: len(head[5:])]


def response_findings(s2c: bytes) -> dict[str, Any]:
    """``status`` from the server's first HEADERS frame ({} if not there or undecodable)."""
    return response_status(s2c)[1]


def response_status(s2c: bytes) -> tuple[bool, dict[str, Any]]:
    """(final, findings): final once the server's first header block is whole (findings then
    hold ``status`` if decodable) or once it cannot come (GOAWAY, RST_STREAM, bad framing)."""
    status, block = _header_block(s2c, 0)
    if status == "ok":
        code = decode_headers(block).get(":status", "")
        return True, ({"status": int(code)} if code.isdigit() and len(code) == 3 else {})
    return status == "invalid" or _stream_ended(s2c), {}


def _stream_ended(s2c: bytes) -> bool:
    """A GOAWAY or RST_STREAM among the server's whole frames (bounded walk)."""
    pos = 0
    for _ in range(MAX_FRAMES):
        if pos + FRAME_HEADER > len(s2c):
            return False
        if s2c[pos + 3] in (TYPE_GOAWAY, TYPE_RST_STREAM):
            return True
        pos += FRAME_HEADER + int.from_bytes(s2c[pos : pos + 3], "big")
    return False


class Http2(Plugin):
    name = "http2"
    ports = {80, 8080}

    def detect(self, flow: FlowView) -> Match | Detection:
        if "method" in flow.findings:
            # Matched already with the request: only the server's status is still to come.
            final, found = response_status(flow.s2c)
            return self.match("http2", complete=final, **found)
        data = flow.c2s
        if len(data) < len(PREFACE):
            if not PREFACE.startswith(data):
                return NO_MATCH
            # The server may send its SETTINGS first (nghttpd does); anything else first from
            # the server is not HTTP/2.
            return NEED_MORE if not flow.s2c or server_preface_ok(flow.s2c) else NO_MATCH
        if not data.startswith(PREFACE):
            return NO_MATCH
        status, block = _header_block(data, len(PREFACE))
        if status == "invalid":
            # A framing error: no request findings will come.
            return self.match("http2", **response_findings(flow.s2c))
        findings = request_findings(decode_headers(block)) if status == "ok" else {}
        final, found = response_status(flow.s2c)
        findings.update(found)
        # Findings are to come until both first header blocks are whole.
        return self.match("http2", complete=status == "ok" and final, **findings)
