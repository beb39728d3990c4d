"""DNS over TCP (RFC 1035 4.2.2, RFC 7766): a 2-byte message length, then a DNS query.

Checks: QR = 0 (query), opcode 0, Z and RCODE zero, QDCOUNT 1..8, no answers, at most one
authority record (IXFR carries the zone's SOA there) and a few additional records (EDNS OPT,
TSIG); then the question section, whose names are decoded with bounds checks, strictly
backward compression pointers and the 255-byte name limit.
Findings: queries, a list of "name TYPE" ("example.com A", "example.com HTTPS" for type
65, unknown types as "TYPE123").
"""

from __future__ import annotations

from ..api import NEED_MORE, NO_MATCH, Detection, FlowView, Match, Plugin

HEADER = 12
MIN_QUERY = HEADER + 1 + 4  # root name + type + class
TYPES = {
    1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 13: "HINFO", 15: "MX", 16: "TXT",
    28: "AAAA", 33: "SRV", 35: "NAPTR", 43: "DS", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY",
    52: "TLSA", 64: "SVCB", 65: "HTTPS", 99: "SPF", 251: "IXFR", 252: "AXFR", 255: "ANY",
    257: "CAA",
}  # fmt: skip
CLASSES = frozenset({1, 3, 4, 254, 255})  # IN, CH, HS, NONE, ANY
# A query is a few questions plus EDNS/TSIG/padding records: a few hundred bytes. Larger first
# messages are something else (this also refuses text such as "PING" = 20553 bytes).
MAX_QUERY = 1024
MAX_NAME = 255
MAX_POINTERS = 16  # strictly backward pointers end anyway; this bounds the work per name


def read_name(msg: bytes, pos: int) -> tuple[str, int]:
    """Decode the name at ``pos`` of ``msg`` (the whole message). Returns (text, position
    after the name in the original place). Raises ValueError on anything malformed."""
    labels: list[str] = []
    total = 0
    end_pos = -1  # where the name ends in place (set at the first pointer)
    jumps = 0
    floor = pos  # a pointer must point strictly before the name or label that holds it
    while True:
        if pos >= len(msg):
            raise ValueError("name runs past the message")
        n = msg[pos]
        if n == 0:
            if end_pos < 0:
                end_pos = pos + 1
            break
        kind = n & 0xC0
        if kind == 0xC0:
            if pos + 1 >= len(msg):
                raise ValueError("truncated pointer")
            target = ((n & 0x3F) << 8) | msg[pos + 1]
            if end_pos < 0:
                end_pos = pos + 2
            jumps += 1
            if target >= floor or target < HEADER or jumps > MAX_POINTERS:
                raise ValueError("bad compression pointer")  # forward pointers can loop
            pos = floor = target
            continue
        if kind:
            raise ValueError("reserved label type")
        label = msg[pos + 1 : pos + 1 + n]
        if len(label) < n:
            raise ValueError("label runs past the message")
        total += n + 1
        if total > MAX_NAME:
            raise ValueError("name too long")
        labels.append(_label_text(label))
        pos += 1 + n
    return (".".join(labels) if labels else "."), end_pos


def _label_text(label: bytes) -> str:
    # Presentation format: printable bytes as-is, "." and "\" escaped, others as \DDD.
    out = []
    for b in label:
        if b in (0x2E, 0x5C):
            out.append("\\" + chr(b))
        elif 0x21 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append(f"\\{b:03d}")
    return "".join(out)


def parse_query(msg: bytes) -> list[str]:
    """The questions of a complete DNS query message; ValueError if it is not one."""
    if len(msg) < MIN_QUERY:
        raise ValueError("too short")
    _check_header(msg)
    qd = int.from_bytes(msg[4:6], "big")
    ar_ns = int.from_bytes(msg[8:10], "big") + int.from_bytes(msg[10:12], "big")
    pos = HEADER
    queries = []
    for _ in range(qd):
        name, pos = read_name(msg, pos)
        if pos + 4 > len(msg):
            raise ValueError("question runs past the message")
        qtype = int.from_bytes(msg[pos : pos + 2], "big")
        qclass = int.from_bytes(msg[pos + 2 : pos + 4], "big")
        if qclass not in CLASSES:
            raise ValueError("bad class")
        pos += 4
        queries.append(f"{name} {TYPES.get(qtype, f'TYPE{qtype}')}")
    if ar_ns == 0 and pos != len(msg):
        raise ValueError("trailing bytes after the questions")
    if ar_ns and len(msg) - pos < 11:
        raise ValueError("no room for the records it announces")  # smallest RR is 11 bytes
    return queries


def _check_header(msg: bytes) -> None:
    """Header sanity over whatever part of the 12-byte header is present (so garbage is
    refused after 4 bytes rather than after a whole bogus "message")."""
    if len(msg) < 4:
        return
    flags = int.from_bytes(msg[2:4], "big")
    if flags & 0x8000:
        raise ValueError("a response, not a query")
    if (flags >> 11) & 0xF:
        raise ValueError("opcode is not QUERY")
    if flags & 0x0040 or flags & 0x000F:
        raise ValueError("Z or RCODE set in a query")
    if len(msg) < HEADER:
        head = msg[4:] + b"\x00" * (HEADER - len(msg))  # missing counts read as 0
        qd = int.from_bytes(head[0:2], "big") or (1 if len(msg) < 6 else 0)
        an, ns, ar = (int.from_bytes(head[i : i + 2], "big") for i in (2, 4, 6))
    else:
        qd, an, ns, ar = (int.from_bytes(msg[i : i + 2], "big") for i in (4, 6, 8, 10))
    if not 1 <= qd <= 8 or an or ns > 1 or ar > 4:
        raise ValueError("implausible section counts")


class Dns(Plugin):
    name = "dns"
    ports = {53}

    def detect(self, flow: FlowView) -> Match | Detection:
        c2s = flow.c2s
        if flow.first_speaker == "server":
            return NO_MATCH  # a DNS server answers, it never speaks first
        if not c2s:
            return NEED_MORE if not flow.s2c else NO_MATCH
        if len(c2s) < 2:
            return NEED_MORE
        length = int.from_bytes(c2s[:2], "big")
        if not MIN_QUERY <= length <= MAX_QUERY:
            return NO_MATCH
        msg = c2s[2 : 2 + length]
        if msg:
            try:
                _check_header(msg)  # reject garbage early, before the whole message is in
            except ValueError:
                return NO_MATCH
        if len(msg) < length:
            return NEED_MORE
        try:
            queries = parse_query(msg)
        except ValueError:
            return NO_MATCH
        return self.match("dns", queries=queries)
