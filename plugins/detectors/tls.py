"""TLS detector: ClientHello (SNI, ALPN, offered versions, JA3, JA4) and ServerHello.

What is recognised
    c2s starts with one or more handshake records (``16 03 0x len``) carrying a ClientHello
    (handshake type 1). The hello may span records and segments: NEED_MORE until the whole
    handshake message is there. If the early-bytes budget (8 KiB) runs out first, the flow
    still matches with what the complete part of the hello gives (``sni``/``alpn``/
    ``client_versions`` when their extensions were wholly inside the budget) but without
    ``ja3``/``ja4``, which need every field.
    An SSLv2-compatible CLIENT-HELLO (``80 xx 01 03 0x``, RFC 5246 appendix E.2) matches
    "tls" with ``client_versions`` only: it has no extensions, so no SNI/ALPN/fingerprint.
    s2c's ServerHello (handshake type 2) adds ``tls_version`` (the supported_versions
    extension wins over legacy_version) and ``cipher``. When the ServerHello is not there
    yet (or only part of it) the flow matches from the client side alone with
    ``complete=False``; the inspector then calls detect() again as data arrives, with the
    client-side findings in ``flow.findings``: the ClientHello is then not parsed again (nor
    ja3/ja4 recomputed), only s2c is read, until the whole ServerHello gives ``tls_version``
    and ``cipher`` (complete). A server answering with something else (an alert) completes
    the match without them; a server that never answers is ended by the inspection budget.

Fingerprints (GREASE values, RFC 8701, are removed everywhere)
    ja3  MD5 of "version,ciphers,extensions,groups,point_formats": decimal values joined by
         "-", version = ClientHello.legacy_version, extensions in wire order (classic JA3,
         salesforce/ja3).
    ja4  FoxIO JA4 (TLS client), "a_b_c":
         a = "t" (TCP) + version ("13", "12", "11", "10", "s3", "00"; the highest of
             supported_versions, else legacy_version) + "d" if SNI present else "i"
             + 2-digit cipher count + 2-digit extension count (both capped at 99)
             + first and last character of the first ALPN value ("00" if none; if either
             is not ASCII alphanumeric, the first and last hex digits of the value);
         b = first 12 hex of sha256 of the sorted ciphers, 4-digit lowercase hex, comma-joined
             ("000000000000" if none);
         c = first 12 hex of sha256 of the sorted extensions without SNI (0000) and ALPN
             (0010), comma-joined, then "_" and the signature algorithms in wire order (the
             "_" part is omitted when there are none; "000000000000" if no extensions).
"""

from __future__ import annotations

import hashlib
import struct
import sys
from array import array
from dataclasses import dataclass, field

from ..api import NEED_MORE, NO_MATCH, Detection, FlowView, Match, Plugin

BUDGET = 8192  # the inspector's default early-bytes budget per direction
MAX_RECORD = 16384 + 2048  # TLSCiphertext bound (RFC 8446 5.2); plaintext is 2^14
MAX_HELLO = 0x10000  # no real ClientHello comes near 64 KiB: longer means not TLS
MIN_CLIENT_HELLO = 41  # version, random, sid len, 1 cipher, 1 compression method

EXT_SNI = 0x0000
EXT_GROUPS = 0x000A
EXT_POINT_FORMATS = 0x000B
EXT_SIG_ALGS = 0x000D
EXT_ALPN = 0x0010
EXT_SUPPORTED_VERSIONS = 0x002B
_PARSED_EXTENSIONS = frozenset(
    (EXT_SNI, EXT_GROUPS, EXT_POINT_FORMATS, EXT_SIG_ALGS, EXT_ALPN, EXT_SUPPORTED_VERSIONS)
)

VERSION_NAMES = {
    0x0002: "SSL 2.0",
    0x0300: "SSL 3.0",
    0x0301: "TLS 1.0",
    0x0302: "TLS 1.1",
    0x0303: "TLS 1.2",
    0x0304: "TLS 1.3",
}
JA4_VERSIONS = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3"}

CIPHER_NAMES = {
    0x1301: "TLS_AES_128_GCM_SHA256",
    0x1302: "TLS_AES_256_GCM_SHA384",
    0x1303: "TLS_CHACHA20_POLY1305_SHA256",
    0x1304: "TLS_AES_128_CCM_SHA256",
    0x1305: "TLS_AES_128_CCM_8_SHA256",
    0xC02B: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    0xC02C: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    0xC02F: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    0xC030: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    0xCCA8: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    0xCCA9: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    0xCCAA: "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    0xC009: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    0xC00A: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    0xC013: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    0xC014: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    0xC023: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    0xC024: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
    0xC027: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    0xC028: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
    0x009C: "TLS_RSA_WITH_AES_128_GCM_SHA256",
    0x009D: "TLS_RSA_WITH_AES_256_GCM_SHA384",
    0x009E: "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
    0x009F: "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
    0x002F: "TLS_RSA_WITH_AES_128_CBC_SHA",
    0x0035: "TLS_RSA_WITH_AES_256_CBC_SHA",
    0x003C: "TLS_RSA_WITH_AES_128_CBC_SHA256",
    0x003D: "TLS_RSA_WITH_AES_256_CBC_SHA256",
    0x0033: "TLS_DHE_RSA_WITH_AES_128_CBC_SHA",
    0x0039: "TLS_DHE_RSA_WITH_AES_256_CBC_SHA",
    0x0067: "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256",
    0x006B: "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256",
    0x000A: "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
}

# Outcomes of parsing a possibly truncated message.
OK, PARTIAL, INVALID = "ok", "partial", "invalid"


# RFC 8701 GREASE code points: 0x0a0a, 0x1a1a, ... 0xfafa (a set: tested per list item).
GREASE = frozenset(0x0A0A + 0x1010 * i for i in range(16))


def is_grease(value: int) -> bool:
    return value in GREASE


def version_name(value: int) -> str:
    return VERSION_NAMES.get(value, f"0x{value:04x}")


def cipher_name(value: int) -> str:
    return CIPHER_NAMES.get(value, f"0x{value:04x}")


def _text(raw: bytes) -> str:
    # Host names and ALPN ids are ASCII on the wire; escape anything else visibly.
    return raw.decode("ascii", "backslashreplace")


class _Reader:
    """Bounds-checked cursor. ``short`` is set when a read ran past the available bytes."""

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else min(end, len(data))
        self.short = False

    def take(self, n: int) -> bytes | None:
        if self.pos + n > self.end:
            self.short = True
            return None
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int | None:
        raw = self.take(1)
        return None if raw is None else raw[0]

    def u16(self) -> int | None:
        raw = self.take(2)
        return None if raw is None else int.from_bytes(raw, "big")


def _u16_list(raw: bytes) -> list[int]:
    a = array("H", raw[: len(raw) & ~1])
    if sys.byteorder == "little":
        a.byteswap()  # network order
    return a.tolist()


def _vector(raw: bytes, len_bytes: int) -> bytes | None:
    """A length-prefixed vector filling ``raw`` exactly (extension bodies)."""
    if len(raw) < len_bytes:
        return None
    n = int.from_bytes(raw[:len_bytes], "big")
    return raw[len_bytes:] if n == len(raw) - len_bytes else None


@dataclass
class ClientHello:
    legacy_version: int = 0
    ciphers: list[int] = field(default_factory=list)
    extensions: list[int] = field(default_factory=list)
    sni: str | None = None
    alpn: list[str] | None = None
    groups: list[int] = field(default_factory=list)
    point_formats: list[int] = field(default_factory=list)
    sig_algs: list[int] = field(default_factory=list)
    versions: list[int] | None = None  # supported_versions, GREASE removed
    alpn_first_raw: bytes = b""  # JA4 uses the raw bytes of the first ALPN value

    def client_versions(self) -> list[str]:
        if self.versions:
            return [version_name(v) for v in self.versions]
        return [version_name(self.legacy_version)]


# --- record layer ---------------------------------------------------------------------------


def _record_header_ok(data: bytes, pos: int) -> bool | None:
    """Is a handshake record header at ``pos`` valid (None: not enough bytes to tell)?"""
    head = data[pos : pos + 5]
    if head[:1] and head[0] != 0x16:
        return False
    if len(head) > 1 and head[1] != 0x03:
        return False
    if len(head) > 2 and head[2] > 0x04:
        return False
    if len(head) < 5:
        return None
    length = int.from_bytes(head[3:5], "big")
    return 0 < length <= MAX_RECORD


def handshake_bytes(data: bytes, max_len: int = MAX_HELLO) -> tuple[str, bytes]:
    """Concatenate handshake-record fragments until one whole handshake message is there.

    Returns (OK, message) with the 4-byte header, (PARTIAL, prefix) or (INVALID, b"").
    """
    out = bytearray()
    pos = 0
    while True:
        if len(out) >= 4:
            need = 4 + int.from_bytes(out[1:4], "big")
            if need - 4 > max_len:
                return INVALID, b""
            if len(out) >= need:
                return OK, bytes(out[:need])
        ok = _record_header_ok(data, pos)
        if ok is False:
            return INVALID, b""
        if ok is None:
            return PARTIAL, bytes(out)
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        out += data[pos + 5 : pos + 5 + length]
        if pos + 5 + length > len(data):
            return PARTIAL, bytes(out)
        pos += 5 + length


# --- ClientHello ----------------------------------------------------------------------------


def _apply_extension(hello: ClientHello, ext_type: int, body: bytes) -> None:
    """Record what one extension says; a malformed body is ignored, not fatal (lenient)."""
    if ext_type == EXT_SNI:
        hello.sni = _parse_sni(body)
    elif ext_type == EXT_ALPN:
        hello.alpn = _parse_alpn(body)
    elif ext_type == EXT_GROUPS:
        vec = _vector(body, 2)
        hello.groups = [g for g in _u16_list(vec or b"") if g not in GREASE]
    elif ext_type == EXT_POINT_FORMATS:
        vec = _vector(body, 1)
        hello.point_formats = list(vec or b"")
    elif ext_type == EXT_SIG_ALGS:
        vec = _vector(body, 2)
        hello.sig_algs = [s for s in _u16_list(vec or b"") if s not in GREASE]
    elif ext_type == EXT_SUPPORTED_VERSIONS:
        vec = _vector(body, 1)
        hello.versions = [v for v in _u16_list(vec or b"") if v not in GREASE]


def _parse_sni(body: bytes) -> str | None:
    vec = _vector(body, 2)
    if vec is None:
        return None
    r = _Reader(vec)
    while r.pos < r.end:
        name_type, length = r.u8(), r.u16()
        if name_type is None or length is None:
            return None
        name = r.take(length)
        if name is None:
            return None
        if name_type == 0:  # host_name
            return _text(name)
    return None


def _first_alpn_raw(body: bytes) -> bytes:
    if len(body) < 3:
        return b""
    return body[3 : 3 + body[2]]


def _parse_alpn(body: bytes) -> list[str] | None:
    vec = _vector(body, 2)
    if vec is None:
        return None
    r = _Reader(vec)
    out: list[str] = []
    while r.pos < r.end:
        length = r.u8()
        proto = None if length is None else r.take(length)
        if proto is None:
            return None
        out.append(_text(proto))
    return out


_HH = struct.Struct(">HH")


def _parse_extensions(r: _Reader, hello: ClientHello, declared: int) -> str:
    total = r.u16()
    if total is None:
        return PARTIAL
    pos = r.pos
    end = pos + total
    if end != declared:
        return INVALID  # the extensions block must fill the rest of the hello exactly
    data = r.data
    avail = min(len(data), r.end)
    extensions = hello.extensions
    # Direct indexing rather than the reader: this loop runs for every TLS connection.
    while pos < end:
        if pos + 4 > end:
            return INVALID
        if pos + 4 > avail:
            return PARTIAL
        ext_type, length = _HH.unpack_from(data, pos)
        pos += 4
        if pos + length > end:
            return INVALID  # an extension running past the block is a framing error
        if pos + length > avail:
            return PARTIAL
        body = data[pos : pos + length]
        pos += length
        extensions.append(ext_type)
        if ext_type == EXT_ALPN:
            hello.alpn_first_raw = _first_alpn_raw(body)
        if ext_type in _PARSED_EXTENSIONS:
            _apply_extension(hello, ext_type, body)
    r.pos = pos
    return OK


def parse_client_hello(body: bytes, declared: int) -> tuple[str, ClientHello]:
    """Parse a ClientHello body (after the 4-byte handshake header), maybe truncated.

    PARTIAL means every field read so far is consistent but bytes are missing; the fields
    parsed (including whole extensions) are kept in the returned hello.
    """
    hello = ClientHello()
    r = _Reader(body, 0, declared)
    truncated = len(body) < declared

    def short() -> str:
        return PARTIAL if truncated else INVALID

    version = r.u16()
    if version is None:
        return short(), hello
    if version >> 8 != 0x03:
        return INVALID, hello
    hello.legacy_version = version
    if r.take(32) is None:
        return short(), hello
    sid_len = r.u8()
    if sid_len is None:
        return short(), hello
    if sid_len > 32 or r.take(sid_len) is None:
        return (INVALID if sid_len > 32 else short()), hello
    cs_len = r.u16()
    if cs_len is None:
        return short(), hello
    if cs_len < 2 or cs_len % 2:
        return INVALID, hello
    suites = r.take(cs_len)
    if suites is None:
        return short(), hello
    hello.ciphers = [c for c in _u16_list(suites) if c not in GREASE]
    comp_len = r.u8()
    if comp_len is None:
        return short(), hello
    if comp_len < 1 or r.take(comp_len) is None:
        return (INVALID if comp_len < 1 else short()), hello
    if r.pos == declared:
        return OK, hello  # no extensions at all (old clients)
    status = _parse_extensions(r, hello, declared)
    return (short() if status == PARTIAL else status), hello


# --- fingerprints ---------------------------------------------------------------------------


def ja3_string(hello: ClientHello) -> str:
    exts = [e for e in hello.extensions if e not in GREASE]
    fields = [
        str(hello.legacy_version),
        "-".join(str(c) for c in hello.ciphers),
        "-".join(str(e) for e in exts),
        "-".join(str(g) for g in hello.groups),
        "-".join(str(p) for p in hello.point_formats),
    ]
    return ",".join(fields)


def ja3(hello: ClientHello) -> str:
    return hashlib.md5(ja3_string(hello).encode(), usedforsecurity=False).hexdigest()


def _sha12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12] if text else "000000000000"


def _ja4_alpn(first: bytes) -> str:
    if not first:
        return "00"
    ends = chr(first[0]) + chr(first[-1])
    if all(c.isascii() and c.isalnum() for c in ends):
        return ends
    hexed = first.hex()
    return hexed[0] + hexed[-1]


def ja4(hello: ClientHello) -> str:
    exts = [e for e in hello.extensions if e not in GREASE]
    top = max(hello.versions) if hello.versions else hello.legacy_version
    part_a = "t{}{}{:02d}{:02d}{}".format(
        JA4_VERSIONS.get(top, "00"),
        "d" if EXT_SNI in exts else "i",
        min(len(hello.ciphers), 99),
        min(len(exts), 99),
        _ja4_alpn(hello.alpn_first_raw),
    )
    part_b = _sha12(",".join(f"{c:04x}" for c in sorted(hello.ciphers)))
    rest = sorted(e for e in exts if e not in (EXT_SNI, EXT_ALPN))
    text_c = ",".join(f"{e:04x}" for e in rest)
    if text_c and hello.sig_algs:
        text_c += "_" + ",".join(f"{s:04x}" for s in hello.sig_algs)
    return f"{part_a}_{part_b}_{_sha12(text_c)}"


def client_hello_findings(hello: ClientHello, complete: bool) -> dict[str, object]:
    found: dict[str, object] = {"sni": hello.sni, "alpn": hello.alpn}
    if hello.legacy_version:
        found["client_versions"] = hello.client_versions()
    if complete:
        found["ja3"] = ja3(hello)
        found["ja4"] = ja4(hello)
    return {k: v for k, v in found.items() if v is not None}


# --- ServerHello ----------------------------------------------------------------------------


def _server_selected_version(r: _Reader) -> int | None:
    """Walk the ServerHello extensions for supported_versions (a single u16)."""
    total = r.u16()
    if total is None:
        return None
    end = r.pos + total
    while r.pos + 4 <= end:
        ext_type, length = r.u16(), r.u16()
        if ext_type is None or length is None:
            return None
        body = r.take(length)
        if body is None:
            return None
        if ext_type == EXT_SUPPORTED_VERSIONS and len(body) == 2:
            return int.from_bytes(body, "big")
    return None


def server_hello(s2c: bytes) -> tuple[str, dict[str, object]]:
    """(OK, {tls_version, cipher}) for a complete ServerHello at the start of s2c; (PARTIAL,
    {}) while it is still arriving (or s2c is empty); (INVALID, {}) if s2c is not one (an
    alert, garbage): then it will never come."""
    if not s2c:
        return PARTIAL, {}
    status, msg = handshake_bytes(s2c)
    if status == INVALID or (msg and msg[0] != 0x02):
        return INVALID, {}
    if status == PARTIAL:
        return PARTIAL, {}
    r = _Reader(msg, 4)
    legacy = r.u16()
    if legacy is None or r.take(32) is None:
        return INVALID, {}
    sid_len = r.u8()
    if sid_len is None or sid_len > 32 or r.take(sid_len) is None:
        return INVALID, {}
    suite, comp = r.u16(), r.u8()
    if suite is None or comp is None:
        return INVALID, {}
    selected = _server_selected_version(r) if r.pos < r.end else None
    return OK, {"tls_version": version_name(selected or legacy), "cipher": cipher_name(suite)}


def server_hello_findings(s2c: bytes) -> dict[str, object]:
    """``tls_version`` and ``cipher`` from a complete ServerHello at the start of s2c.

    Returns {} while the ServerHello is incomplete or if s2c is not one.
    """
    return server_hello(s2c)[1]


# --- SSLv2-compatible CLIENT-HELLO ----------------------------------------------------------


def sslv2_hello_status(data: bytes) -> tuple[str, int]:
    """(status, offered version) for an SSLv2-format CLIENT-HELLO (2-byte header form)."""
    if not data or not data[0] & 0x80:
        return INVALID, 0
    head = data[:11]
    if len(head) > 2 and head[2] != 0x01:  # MSG-CLIENT-HELLO
        return INVALID, 0
    if len(head) > 3 and head[3] not in (0x00, 0x03):
        return INVALID, 0
    if len(head) < 11:
        return PARTIAL, 0
    version = int.from_bytes(head[3:5], "big")
    specs, sid, challenge = (int.from_bytes(head[i : i + 2], "big") for i in (5, 7, 9))
    length = ((head[0] & 0x7F) << 8) | head[1]
    sane = (
        version in VERSION_NAMES
        and specs and specs % 3 == 0
        and sid in (0, 16)
        and 16 <= challenge <= 32
        and length == 9 + specs + sid + challenge
    )  # fmt: skip
    return (OK, version) if sane else (INVALID, 0)


# --- the plugin -----------------------------------------------------------------------------


def _budget_spent(flow: FlowView) -> bool:
    return len(flow.c2s) >= BUDGET or flow.c2s_bytes > len(flow.c2s)


class Tls(Plugin):
    name = "tls"
    ports = {443, 8443, 993, 995, 465, 636, 853, 5061}

    def detect(self, flow: FlowView) -> Match | Detection:
        if "ja3" in flow.findings or "client_versions" in flow.findings:
            # Already matched on the ClientHello (the inspector asks again while incomplete):
            # only the ServerHello is still to come; do not parse the ClientHello again.
            status, found = server_hello(flow.s2c)
            return self.match("tls", complete=status != PARTIAL, **found)
        data = flow.c2s
        if not data:
            # The client always speaks first in TLS.
            return NO_MATCH if flow.s2c else NEED_MORE
        if data[0] & 0x80:
            return self._detect_sslv2(data)
        status, msg = handshake_bytes(data)
        if status == INVALID or (msg and msg[0] != 0x01):
            return NO_MATCH
        if len(msg) < 4:
            return NEED_MORE
        declared = int.from_bytes(msg[1:4], "big")
        if declared < MIN_CLIENT_HELLO:
            return NO_MATCH
        parsed, hello = parse_client_hello(msg[4:], declared)
        if parsed == INVALID:
            return NO_MATCH
        if parsed == PARTIAL:
            # A valid prefix: wait, unless the budget can never hold the whole hello.
            if not _budget_spent(flow):
                return NEED_MORE
            findings = client_hello_findings(hello, complete=False)
        else:
            findings = client_hello_findings(hello, complete=True)
        status, found = server_hello(flow.s2c)
        findings.update(found)
        return self.match("tls", complete=status != PARTIAL, **findings)

    def _detect_sslv2(self, data: bytes) -> Match | Detection:
        status, version = sslv2_hello_status(data)
        if status == PARTIAL:
            return NEED_MORE
        if status == INVALID:
            return NO_MATCH
        return self.match("tls", client_versions=[version_name(version)])
