"""A structured generator of hostile captures for the differential oracle.

``capture(rng)`` draws a whole capture from one random source: a ``random.Random`` (seeded
campaigns, the CI seed set) or hypothesis's ``st.randoms()`` (shrinkable). Every choice goes
through ``rng``, so a seed is an input.

A capture is a few interleaved connections, each a script drawn here: IPv4 or IPv6, VLAN
tags, a handshake (complete, missing halves, retransmitted, competing SYN-ACKs, simultaneous
open, data on the SYN, an injected RST), data both ways from a pool of protocol openings
(HTTP requests and TLS ClientHellos split at odd places, so the C detector sees every shape)
cut into segments and then perturbed (loss, duplicates, reordering, overlaps with other
bytes, ACKs of unseen data, keepalives, zero-window probes, urgent data, window and timestamp
options), and a close (FINs and RSTs in every position: before the stream start, in and out
of the window, with data, after both FINs). Tuples are reused, idle pauses cross the budgets
and timeouts, and the frames are written for Ethernet, raw IP, SLL, SLL2 or BSD loopback, or
as a pcapng whose interfaces differ. Finally some frames are mutated byte by byte.
"""

from __future__ import annotations

import contextlib
import random
import struct
from dataclasses import dataclass, field, replace
from typing import Any

from frames import (
    DLT_EN10MB,
    DLT_LINUX_SLL,
    DLT_LINUX_SLL2,
    DLT_LOOP,
    DLT_NULL,
    DLT_RAW,
    DLT_RAW_IPV4,
    DLT_RAW_IPV6,
    MOD,
    Conversation,
    Seg,
    encode,
    ethernet,
    opt_sack,
    opt_timestamps,
    pcap_bytes,
    pcapng_multi_bytes,
    qinq,
    udp_packet,
)
from test_detectors_web import (
    OPENSSL_CLIENT_HELLO,
    PY12_CLIENT_HELLO,
    PY12_SERVER_HELLO,
    PY13_CLIENT_HELLO,
    PY13_SERVER_HELLO,
    alpn_ext,
    build_client_hello,
    ext,
    refragment,
    sni_ext,
    u16_list_ext,
)

Rng = Any  # random.Random or hypothesis's HypothesisRandom: the same methods

# Link types a capture may use, and which address families each carries.
LINKTYPES = [DLT_EN10MB, DLT_RAW, DLT_LINUX_SLL, DLT_LINUX_SLL2, DLT_NULL, DLT_LOOP,
             DLT_RAW_IPV4, DLT_RAW_IPV6]  # fmt: skip
_V4_ONLY = {DLT_RAW_IPV4}
_V6_ONLY = {DLT_RAW_IPV6}

# Just past how far a segment or an ACK may be from its stream (tracker.MAX_SEQ_JUMP): an
# anomaly, not a gigabyte gap of zeros to hash (nearer jumps stay small: hashing is slow).
_FAR = (1 << 30) + 1

# Pauses that cross something: the C run's one-second expiry step, the inspection budget
# (5 s), the small timeouts of the oracle's option sets, and the default timeouts.
PAUSES = [0.3, 0.99, 1.0, 1.5, 2.5, 4.99, 5.0, 6.0, 11.0, 21.0, 61.0, 601.0]


@dataclass
class Capture:
    """What a capture file holds: interfaces (one for pcap) and packets
    ``(interface, ts, frame, wirelen)`` in file order."""

    linktypes: list[int]
    packets: list[tuple[int, float, bytes, int]] = field(default_factory=list)
    ng: bool = False

    def to_bytes(self) -> bytes:
        if self.ng:
            return pcapng_multi_bytes(
                [(i, (ts, fr, wl)) for i, ts, fr, wl in self.packets], self.linktypes
            )
        return pcap_bytes([(ts, fr, wl) for _, ts, fr, wl in self.packets], self.linktypes[0])

    @property
    def suffix(self) -> str:
        return ".pcapng" if self.ng else ".pcap"

    def with_packets(self, packets: list[tuple[int, float, bytes, int]]) -> Capture:
        return Capture(self.linktypes, packets, self.ng)


# -- payloads -------------------------------------------------------------------------------

_METHODS = [b"GET", b"POST", b"HEAD", b"PUT", b"OPTIONS", b"CONNECT", b"PROPFIND", b"FOO"]
_HOSTS = [b"www.example.com", b"a.example", b"", b"x" * 300, b"caf\xc3\xa9.example"]


def http_request(rng: Rng) -> bytes:
    eol = rng.choice([b"\r\n", b"\r\n", b"\n"])
    method = rng.choice(_METHODS)
    target = rng.choice([b"/", b"/index.html?q=1", b"*", b"/" + b"a" * rng.randrange(0, 9000),
                         b"/\x01", b""])  # fmt: skip
    version = rng.choice([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2"])
    lines = [method + b" " + target + b" " + version]
    for _ in range(rng.randrange(0, 5)):
        lines.append(rng.choice([
            b"Host: " + rng.choice(_HOSTS), b"hOsT :  b.example ", b"User-Agent: curl/8.5.0",
            b"USER-AGENT:\tMoz\xe9 1.0\t", b"Accept: */*", b"Content-Length: 3",
            b"not a header", b"X-" + bytes(rng.randrange(0, 40)),
        ]))  # fmt: skip
    head = eol.join(lines) + eol
    if rng.random() < 0.85:
        head += eol  # the blank line that ends the head
    return head + rng.choice([b"", b"", b"abc", b"\x00" * 10])


def http_response(rng: Rng) -> bytes:
    return rng.choice([
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"HTTP/1.0 404 Not Found\r\n\r\n",
        b"HTTP/1.1 2x0 Odd\r\n\r\n", b"HTTP/1.1 200\n\n", b"HTTP/1.", b"HTTP/1.1 101 S\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nhi",  # a digit to isdigit(), not int()
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ])  # fmt: skip


def client_hello(rng: Rng) -> bytes:
    k = rng.randrange(6)
    if k == 0:
        return OPENSSL_CLIENT_HELLO
    if k == 1:
        return PY13_CLIENT_HELLO
    if k == 2:
        return PY12_CLIENT_HELLO
    exts = []
    for _ in range(rng.randrange(0, 6)):
        exts.append(rng.choice([
            sni_ext(rng.choice([b"grease.example", b"x" * rng.randrange(1, 1600), b""])),
            alpn_ext(b"h2", b"http/1.1"), alpn_ext(), alpn_ext(b"\x00ab\xff"),
            ext(0x0010, b"\x00\x05\x02h2"), ext(0x0000, b"\x00\x03\x01\x00"),
            ext(0x002B, b"\x06\x3a\x3a\x03\x04\x03\x03"), ext(0x002B, b"\x02\x5a\x5a"),
            u16_list_ext(0x000A, [0x2A2A, 0x001D, 0x0017]), ext(0x000B, b"\x01\x00"),
            u16_list_ext(0x000D, [0x0403, 0x0804]), ext(0x1A1A, b""),
            ext(rng.randrange(65536), bytes(rng.randrange(0, 20))),
        ]))  # fmt: skip
    suites = [0x0A0A, 0x1301, 0x1302, 0xC02B, 0x002F]
    ciphers = [rng.choice(suites) for _ in range(rng.randrange(1, 6))]
    hello = build_client_hello(ciphers, exts, version=rng.choice([0x0303, 0x0301, 0x0303]))
    if rng.random() < 0.2:
        hello = refragment(hello, rng.randrange(5, 200))
    return hello


def server_hello(rng: Rng) -> bytes:
    return rng.choice([
        PY13_SERVER_HELLO, PY12_SERVER_HELLO,
        bytes.fromhex("160303002a020000260303") + bytes(32) + b"\x00\xc0\x2f\x00",
        bytes.fromhex("15030300020228"), b"\x16\x03\x03\x00\x05\x02\x00\x00",
        refragment(PY12_SERVER_HELLO, 10),
    ])  # fmt: skip


def other_payload(rng: Rng) -> bytes:
    return rng.choice([
        b"SSH-2.0-OpenSSH_9.6\r\n", b"220 mail.example ESMTP\r\n", b"*1\r\n$4\r\nPING\r\n",
        b"\x05\x01\x00", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"\x00",
        bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 64))),
        b"z" * rng.randrange(1, 5000),
    ])  # fmt: skip


def plain_request(rng: Rng) -> bytes:
    """A request head C names by itself (tests/test_fastpath.py's shapes)."""
    method = rng.choice([b"GET", b"POST", b"HEAD", b"OPTIONS", b"PUT"])
    host = rng.choice([b"www.example.com", b"a.example", b"10.0.0.2:8080"])
    return (method + b" /" + rng.choice([b"", b"index.html", b"a?b=c"]) + b" HTTP/1.1\r\nHost: "
            + host + b"\r\nUser-Agent: fuzz/1.0\r\nAccept: */*\r\n\r\n")  # fmt: skip


_JIGGLE = [b" ", b"\t", b"\r", b"\n", b"\r\n", b":", b"\x00", b"\x7f", b"\xc3\xa9", b"/", b"\x16",
           b"\x03", b"\xff"]  # fmt: skip


def jiggle(rng: Rng, data: bytes) -> bytes:
    """A few small edits: a separator inserted or removed, a length byte changed, a case
    changed, the tail cut."""
    b = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        if not b:
            break
        k = rng.randrange(7)
        pos = rng.randrange(len(b))
        if k == 0:
            b[pos:pos] = rng.choice(_JIGGLE)
        elif k == 1:
            del b[pos]
        elif k == 2:  # the length fields sit early in a TLS record and handshake
            i = rng.randrange(min(len(b), 48))
            b[i] = (b[i] + rng.choice([1, -1, 2, 0x80])) % 256
        elif k == 3:
            b[pos] = ord(bytes([b[pos]]).swapcase())
        elif k == 4:
            del b[pos + 1 :]
        elif k == 5:
            b[pos:pos] = b[pos : pos + rng.randrange(1, 40)]
        else:
            b[pos] ^= 1 << rng.randrange(8)
    return bytes(b)


def opening(rng: Rng, port: int) -> tuple[bytes, bytes]:
    """(client's first bytes, server's first bytes) of a connection to ``port``."""
    k = rng.random()
    if k < 0.4 or (port in (80, 8080) and k < 0.6):
        return http_request(rng), http_response(rng)
    if k < 0.75 or port == 443:
        return client_hello(rng), server_hello(rng)
    return other_payload(rng), other_payload(rng)


def cut(rng: Rng, data: bytes) -> list[bytes]:
    """Segment payloads: one piece, or cuts at odd places (inside a method, a header, a
    record header)."""
    if not data:
        return []
    if rng.random() < 0.45:
        return [data]
    pieces = []
    i = 0
    while i < len(data):
        n = rng.choice([1, 2, 3, 5, 7, 20, 100, 536, 1460, rng.randrange(1, 1500)])
        pieces.append(data[i : i + n])
        i += n
    return pieces


# -- one connection -------------------------------------------------------------------------


@dataclass
class Conn:
    """The segments of one connection (in send order) and how its frames are written."""

    segs: list[Seg]
    iface: int
    vlans: tuple[Any, ...] = ()
    s2c_vlans: tuple[Any, ...] | None = None  # another tag stack for the server's frames


_V4 = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "192.168.1.9"]
_V6 = ["2001:db8::1", "2001:db8::2", "fe80::1"]
_SERVER_PORTS = [80, 443, 8080, 22, 6379, 993, 5555, 12345, 40001]


def _isn(rng: Rng) -> int:
    if rng.random() < 0.25:
        return (MOD - rng.randrange(1, 3000)) % MOD  # wraps inside the stream
    return rng.getrandbits(32)


def _syn_kw(rng: Rng) -> dict[str, Any]:
    return {
        "mss": rng.choice([1460, 536, None, 9000]),
        "wscale": rng.choice([None, 0, 7, 14, 15]),
        "sack_ok": rng.random() < 0.5,
        "ts": (rng.getrandbits(32), 0) if rng.random() < 0.4 else None,
    }


class _Script:
    """Draws one connection's segments with a Conversation."""

    def __init__(self, rng: Rng, cv: Conversation, port: int, plain: bool = False) -> None:
        self.plain = plain  # what the C detector takes: a handshake, whole first bytes
        self.rng = rng
        self.cv = cv
        self.port = port
        self.segs: list[Seg] = []
        self.tsval = {"c": rng.getrandbits(32), "s": rng.getrandbits(32)}
        self.use_ts = rng.random() < 0.3

    def opts(self, side: str) -> bytes:
        """Options of a non-SYN segment: timestamps (sometimes going back), SACK blocks."""
        rng = self.rng
        out = b""
        if self.use_ts:
            self.tsval[side] = (self.tsval[side] + rng.choice([1, 1, 10, -5])) % MOD
            out += b"\x01\x01" + opt_timestamps(self.tsval[side], self.tsval[self.cv.peer(side)])
        if rng.random() < 0.05:
            base = self.cv.seq_of(self.cv.peer(side), rng.randrange(0, 5000))
            out += b"\x01\x01" + opt_sack([(base, base + rng.randrange(1, 3000))])
        return out if len(out) <= 40 else b""

    def add(self, seg: Seg) -> None:
        self.segs.append(seg)

    def handshake(self) -> None:
        cv, rng = self.cv, self.rng
        kw = _syn_kw(rng)
        kind = "full" if self.plain else rng.choices(
            ["full", "no_syn", "no_synack", "none", "syn_rtx", "competing", "simultaneous",
             "tfo", "unanswered", "rst_injected", "synack_first"],
            [40, 6, 6, 12, 4, 5, 4, 4, 3, 3, 2],
        )[0]  # fmt: skip
        if kind == "full":
            self.segs += cv.handshake(**kw)
        elif kind == "no_syn":
            self.add(cv.synack(**kw))
            self.add(cv.ack("c"))
        elif kind == "no_synack":
            self.add(cv.syn(**kw))
            self.add(cv.ack("c"))
        elif kind == "none":
            pass
        elif kind == "syn_rtx":
            syn = cv.syn(**kw)
            self.segs += [syn, syn, cv.synack(**kw), cv.ack("c")]
        elif kind == "competing":
            self.add(cv.syn(**kw))
            first = cv.isn["s"]
            a = cv.synack(**kw)
            cv.isn["s"] = rng.getrandbits(32)
            b = cv.synack(**kw)
            if rng.random() < 0.5:
                cv.isn["s"] = first  # the client confirms the first one
            self.segs += [a, b, cv.ack("c")]
        elif kind == "simultaneous":
            self.add(cv.syn(**kw))
            self.add(cv.syn(side="s", **kw))
            self.add(cv.synack(side="s", **kw))
            self.add(cv.synack(side="c", **kw))
        elif kind == "tfo":
            data, _ = opening(rng, self.port)
            self.segs += [cv.syn(data=data[:1000], **kw), cv.synack(**kw), cv.ack("c")]
        elif kind == "unanswered":
            self.add(cv.syn(**kw))
        elif kind == "rst_injected":
            self.add(cv.syn(**kw))
            self.add(cv.rst("s", flags=rng.choice(["R", "RA"]), ack=cv.seq_of("c", 0)))
            self.add(cv.seg("s", seq=cv.isn["s"], flags="FA"))
            self.segs += [cv.synack(**kw), cv.ack("c")]
        elif kind == "synack_first":
            synack = cv.synack(**kw)
            self.segs += [synack, cv.syn(**kw), cv.ack("c")]

    def data(self, side: str, payload: bytes, whole: bool = False) -> None:
        cv, rng = self.cv, self.rng
        peer = cv.peer(side)
        for piece in [payload] if whole else cut(rng, payload):
            odd = [] if self.plain else ["UA", "UPA", "PAE", "PAC"]
            flags = rng.choice(["PA"] * 6 + ["A"] * 4 + odd)
            urg = rng.randrange(0, 3000) if "U" in flags else 0
            win = rng.choice([None, None, None, 0, 1, 512])
            self.add(cv.data(side, piece, flags=flags, options=self.opts(side), win=win, urg=urg))
            if rng.random() < 0.5:
                self.add(cv.ack(peer, options=self.opts(peer)))
        if rng.random() < 0.7:
            self.add(cv.ack(peer, options=self.opts(peer)))

    def exchange(self) -> None:
        cv, rng = self.cv, self.rng
        first_c, first_s = opening(rng, self.port)
        rounds = rng.choice([0, 1, 1, 2, 2, 3, 4, 6])
        side = "c" if rng.random() < 0.85 else "s"
        if self.plain:
            side = "c"
            rounds = max(rounds, 2)
            if rng.random() < 0.5:
                first_c = plain_request(rng)
            elif first_c[:1] != b"\x16":
                first_c = client_hello(rng)
            # Near misses of what C names: its parse must agree with the Python detectors'
            # or hand the connection back.
            if rng.random() < 0.5:
                first_c = jiggle(rng, first_c)
            if rng.random() < 0.3:
                first_s = jiggle(rng, first_s)
        for r in range(rounds):
            if r == 0 and self.plain:
                self.data(side, first_c, whole=True)
                side = "s"
                continue
            if r == 0:
                payload = first_c if side == "c" else first_s
            elif r == 1:
                payload = first_s if side == "s" else http_request(rng)
            else:
                payload = other_payload(rng) if rng.random() < 0.5 else http_request(rng)
            self.data(side, payload)
            if rng.random() < 0.3:
                self.oddity()
            side = cv.peer(side) if rng.random() < 0.8 else side
        if rng.random() < 0.08:  # a bulk stretch: buffers and retained bytes fill up
            self.data("s", bytes(rng.getrandbits(8) for _ in range(64)) * rng.randrange(20, 300))

    def oddity(self) -> None:
        """Something odd in the middle: keepalives, zero windows, ACKs of unseen data,
        overlaps with other bytes, a gap the peer acknowledges, a RST that ends nothing."""
        cv, rng = self.cv, self.rng
        side = rng.choice("cs")
        peer = cv.peer(side)
        k = rng.randrange(10)
        if k == 0:
            self.add(cv.keepalive(side, payload=rng.choice([b"", b"\x00"])))
        elif k == 1:
            self.add(cv.zero_window(peer))
            self.add(cv.zero_window_probe(side, b"p"))
            self.add(cv.zero_window_probe(side, b"q"))
            self.add(cv.ack(peer))
        elif k == 2:
            ahead = rng.choice([1, 2, 1000, 70000, _FAR, 1 << 31])
            self.add(cv.ack(side, ack=cv.next_seq(peer) + ahead))
        elif k == 3 and cv.off[side] > 0:
            rel = rng.randrange(0, cv.off[side])
            n = rng.randrange(1, 200)
            self.add(cv.data(side, bytes(rng.getrandbits(8) for _ in range(n)), rel=rel,
                             advance=rng.random() < 0.5))  # fmt: skip
        elif k == 4:
            # bytes never captured, then later ones: a hole the peer ACKs
            cv.off[side] += rng.randrange(1, 3000)
            self.add(cv.data(side, b"after the hole"))
            self.add(cv.ack(peer))
        elif k == 5:
            self.add(cv.rst(side, seq=cv.next_seq(side) + rng.choice([1, 100, 70000, 1 << 31])))
        elif k == 6:
            self.add(cv.data(side, b"x", rel=cv.off[side] + rng.choice([1, 1000, 1 << 16, _FAR])))
        elif k == 7:
            self.add(cv.data(side, b"before", rel=-rng.randrange(1, 100), advance=False))
        elif k == 8:
            self.add(cv.ack(side, win=rng.choice([0, 1, 65535])))
        else:
            self.add(cv.seg(side, seq=cv.next_seq(side), flags=rng.choice(["", "F", "SF", "RF",
                            "SA", "FPU", "RA"]), ack=cv.next_seq(peer)))  # fmt: skip

    def close(self) -> None:
        cv, rng = self.cv, self.rng
        side = rng.choice("cs")
        peer = cv.peer(side)
        kind = rng.choices(
            ["fins", "fin_one", "rst", "rst_inexact", "rst_out", "rst_data", "fin_before",
             "fin_far", "fin_data", "data_after", "none", "rst_after_fins", "fin_rtx"],
            [30, 8, 10, 4, 4, 3, 4, 3, 4, 4, 12, 4, 4],
        )[0]  # fmt: skip
        if kind in ("fins", "rst_after_fins", "data_after", "fin_rtx"):
            fin = cv.fin(side)
            self.add(fin)
            if kind == "fin_rtx":
                self.add(fin)
            self.add(cv.fin(peer))
            self.add(cv.ack(side))
            if kind == "rst_after_fins":
                self.add(cv.rst(rng.choice("cs")))
            elif kind == "data_after":
                self.add(cv.data(rng.choice("cs"), b"late data"))
        elif kind == "fin_one":
            self.add(cv.fin(side))
            self.add(cv.ack(peer))
            if rng.random() < 0.5:
                self.add(cv.data(peer, b"still talking"))
        elif kind == "rst":
            self.add(cv.rst(side, flags=rng.choice(["R", "RA"])))
        elif kind == "rst_inexact":
            self.add(cv.rst(side, seq=cv.next_seq(side) + rng.randrange(1, 60000)))
        elif kind == "rst_out":
            self.add(cv.rst(side, seq=cv.next_seq(side) - rng.randrange(1, 1 << 31)))
        elif kind == "rst_data":
            self.add(cv.seg(side, seq=cv.next_seq(side), flags="RA", payload=b"diagnostic"))
        elif kind == "fin_before":
            self.add(cv.seg(side, seq=cv.seq_of(side, -rng.choice([1, 2, 3, 11, 5000])),
                            flags="FA"))  # fmt: skip
            self.add(cv.fin(peer))
            self.add(cv.ack(side))
        elif kind == "fin_far":
            self.add(cv.seg(side, seq=cv.next_seq(side) + rng.choice([1, 1000, 70000, 1 << 31]),
                            flags="FA"))  # fmt: skip
            self.add(cv.fin(peer))
        elif kind == "fin_data":
            self.add(cv.fin(side, payload=b"bye"))
            self.add(cv.fin(peer, payload=rng.choice([b"", b"ok"])))
            self.add(cv.ack(side))

    def conflicting(self, seg: Seg) -> Seg:
        """A copy of a data segment with other bytes, maybe reaching before or past it."""
        rng = self.rng
        before = rng.choice([0, 0, 1, 3])
        after = rng.choice([0, 0, 2, 10])
        body = bytearray(seg.payload)
        for _ in range(rng.randrange(1, 4)):
            body[rng.randrange(len(body))] ^= 0x20
        extra = bytes(rng.getrandbits(8) for _ in range(before + after))
        payload = extra[:before] + bytes(body) + extra[before:]
        return replace(seg, seq=(seg.seq - before) % MOD, payload=payload)

    def perturb(self) -> None:
        """Loss, duplicates, reordering (the capture's view, not the sender's)."""
        rng = self.rng
        segs = self.segs
        out: list[Seg] = []
        p_drop, p_dup, p_swap, p_conflict = (rng.choice([0, 0, 0.03, 0.1, 0.3]) for _ in range(4))
        for seg in segs:
            if rng.random() < p_drop:
                continue
            out.append(seg)
            if rng.random() < p_dup:
                out.append(seg)
            if seg.payload and rng.random() < p_conflict:
                out.append(self.conflicting(seg))
        for i in range(len(out) - 1):
            if rng.random() < p_swap:
                j = min(len(out) - 1, i + rng.randrange(1, 4))
                out[i], out[j] = out[j], out[i]
        self.segs = out


def connection(
    rng: Rng, key: tuple[str, int, str, int] | None, ifaces: list[int], busy: bool = False
) -> Conn:
    """One connection: on the 4-tuple ``key`` (a reused tuple) or a fresh one; ``busy``: a
    plain one (what C carries and names by itself)."""
    plain = busy or rng.random() < 0.45
    v6 = key is not None and ":" in key[0] or key is None and not plain and rng.random() < 0.3
    usable = [
        i for i, lt in enumerate(ifaces)
        if (lt not in _V4_ONLY or not v6) and (lt not in _V6_ONLY or v6)
    ]  # fmt: skip
    if not usable:  # no interface carries this family: take the other
        v6 = not v6
        key = None
        usable = list(range(len(ifaces)))
        usable = [i for i in usable if ifaces[i] not in (_V4_ONLY if v6 else _V6_ONLY)]
    if key is None:
        pool = _V6 if v6 else _V4
        client, server = rng.sample(pool, 2)
        sport = rng.choice(_SERVER_PORTS)
        cport = rng.choice([rng.randrange(1024, 65536)] * 6 + [40000, 40001, 80, 1023])
        key = (client, cport, server, sport)
    client, cport, server, sport = key
    cv = Conversation(client, cport, server, sport, _isn(rng), _isn(rng), dt=0.0)
    sc = _Script(rng, cv, sport, plain)
    sc.handshake()
    sc.exchange()
    if rng.random() < 0.2:
        sc.oddity()
    sc.close()
    if not plain or rng.random() < 0.3:
        sc.perturb()
    ethernet_ifaces = [i for i in usable if ifaces[i] == DLT_EN10MB]
    iface = rng.choice(ethernet_ifaces if plain and ethernet_ifaces else usable)
    vlans: tuple[Any, ...] = ()
    s2c: tuple[Any, ...] | None = None
    if ifaces[iface] == DLT_EN10MB and not (plain and rng.random() < 0.8):
        vlans = rng.choice([(), (), (), (100,), tuple(qinq(200, 100)), (4095,)])
        if vlans and rng.random() < 0.2:
            s2c = (101,)  # a tap whose directions carry different tags
    return Conn(sc.segs, iface, vlans, s2c)


# -- a capture ------------------------------------------------------------------------------


def _frame(seg: Seg, linktype: int, vlans: tuple[Any, ...]) -> list[bytes]:
    l3s = [seg.l3()]
    if seg.payload and len(seg.payload) > 16 and seg.flags != "S" and _coin(seg, 41):
        with contextlib.suppress(ValueError):
            l3s = seg.fragments(8 * (1 + len(seg.payload) // 24))
    if linktype == DLT_EN10MB:
        return [ethernet(l3, vlans) for l3 in l3s]
    return [encode(l3, linktype) for l3 in l3s]


def _coin(seg: Seg, modulus: int) -> bool:
    """A deterministic rare choice from the segment itself (keeps rng draws in step)."""
    return (seg.seq ^ seg.ack ^ len(seg.payload)) % modulus == 0


def capture(rng: Rng, max_conns: int = 6) -> Capture:
    # Busy: plain connections at once on one Ethernet link, their frames interleaved, so that
    # C's runs carry many connections between two frames it stops at (as on a real link).
    busy = rng.random() < 0.2
    ng = not busy and rng.random() < 0.3
    if ng:
        ifaces = [rng.choice(LINKTYPES) for _ in range(rng.randrange(1, 4))]
    else:
        ifaces = [DLT_EN10MB] if busy else [rng.choice([DLT_EN10MB] * 14 + LINKTYPES)]
    conns: list[tuple[Conn, bool]] = []  # and whether it reuses an earlier one's tuple
    keys: list[tuple[str, int, str, int]] = []
    for _ in range(rng.randrange(2 if busy else 1, max(max_conns, 2) + 1)):
        reuse = bool(keys) and not busy and rng.random() < 0.2
        conn = connection(rng, rng.choice(keys) if reuse else None, ifaces, busy)
        if conn.segs:
            s = conn.segs[0]
            keys.append((s.src, s.sport, s.dst, s.dport))
        conns.append((conn, reuse))
    # Times: each connection starts somewhere, its segments follow with small steps and now
    # and then a pause; a connection on a reused tuple mostly starts after the others ended
    # (overlapping, the old one's numbers read in the new one's space are far-off jumps).
    # (when in file order, order, iface, frame, wirelen, the time written)
    timed: list[tuple[float, int, int, bytes, int, float]] = []
    # Capture times: arbitrary, or just below a power of two, where a time plus one second
    # rounds (the C run's expiry step is computed as a sum, Python's as a difference).
    t_start = rng.choice([
        1_000_000.0 + rng.randrange(0, 1000), 1_700_000_000.5,
        2.0**20 - rng.choice([0.5, 1.0, 2.0]), 2.0**31 - rng.choice([0.5, 1.0]),
    ])  # fmt: skip
    t_end = t_start
    order = 0
    # Now and then a capture merged from taps whose clocks disagree: times step back often.
    p_back = rng.choice([0.01, 0.1, 0.3] if busy else [0.01] * 9 + [0.3])
    for ci, (conn, reuse) in enumerate(conns):
        if reuse and rng.random() < 0.8:
            t = t_end + rng.choice([0.001, 0.5, 2.0])
        else:
            steps = [0.0, 0.0001] if busy else [0.0, 0.0001, 0.01, 0.5, 3.0]
            t = t_start + rng.choice(steps) * ci
        for seg in conn.segs:
            t += rng.choice([0.0, 0.0001, 0.001, 0.01, 0.05])
            if rng.random() < (0.01 if busy else 0.04):
                t += rng.choice(PAUSES)
            ts = t
            if rng.random() < p_back:  # a clock that steps back (in file order)
                ts -= rng.choice([0.001, 0.2, 1.0, 100.0])
            lt = ifaces[conn.iface]
            vlans = conn.vlans
            if conn.s2c_vlans is not None and seg.src != conn.segs[0].src:
                vlans = conn.s2c_vlans
            for fr in _frame(seg, lt, vlans):
                timed.append((t, order, conn.iface, fr, len(fr), round(ts, 6)))
                order += 1
        t_end = max(t_end, t)
        t_start = max(t_start, t) if not busy and rng.random() < 0.3 else t_start
    timed.sort(key=lambda x: (x[0], x[1]))
    packets = [(i, ts, fr, wl) for _, _, i, fr, wl, ts in timed]
    packets = _extras(rng, packets, ifaces)
    if rng.random() < 0.35:
        packets = mutate_packets(rng, packets)
    return Capture(ifaces, packets, ng)


def _extras(rng: Rng, packets: list, ifaces: list[int]) -> list:
    """Frames that are not TCP, or not decodable at all, in between."""
    out = list(packets)
    for _ in range(rng.choice([0, 0, 1, 3])):
        i = rng.randrange(len(ifaces))
        lt = ifaces[i]
        v6 = lt in _V6_ONLY
        l3 = udp_packet("2001:db8::1" if v6 else "10.0.0.1", "2001:db8::2" if v6 else "10.0.0.2",
                        53, 53)  # fmt: skip
        arp = ethernet(b"\x00" * 28, ethertype=0x0806) if lt == DLT_EN10MB else b"\x45"
        fr = rng.choice([encode(l3, lt), b"", b"\x00" * rng.randrange(1, 60), arp])
        pos = rng.randrange(len(out) + 1)
        ts = out[pos - 1][1] if pos and out else 1_000_000.0
        out.insert(pos, (i, ts, fr, len(fr)))
    return out


# -- byte-level mutations -------------------------------------------------------------------

_INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x10, 0x11, 0x12, 0x14, 0x18, 0x19, 0x50, 0x45, 0x60]


def mutate_frame(rng: Rng, frame: bytes) -> bytes:
    b = bytearray(frame)
    k = rng.randrange(8)
    if not b:
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 80)))
    if k <= 1:  # bit flips, mostly in the headers
        for _ in range(rng.randrange(1, 4)):
            pos = rng.randrange(min(len(b), 80)) if rng.random() < 0.8 else rng.randrange(len(b))
            b[pos] ^= 1 << rng.randrange(8)
    elif k == 2:  # an interesting byte
        pos = rng.randrange(min(len(b), 80))
        b[pos] = rng.choice(_INTERESTING)
    elif k == 3:  # truncate
        del b[rng.randrange(len(b)) :]
    elif k == 4:  # append garbage (Ethernet padding, trailers)
        b += bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 64)))
    elif k == 5:  # a random 16-bit field: lengths, ports, windows
        pos = rng.randrange(max(1, min(len(b), 80) - 1))
        value = rng.choice([0, 1, 20, 40, 0xFFFF, rng.getrandbits(16)])
        b[pos : pos + 2] = struct.pack("!H", value)
    elif k == 6:  # a 32-bit field moved: sequence and acknowledgement numbers
        pos = rng.randrange(max(1, min(len(b), 80) - 3))
        old = int.from_bytes(b[pos : pos + 4].ljust(4, b"\0"), "big")
        new = old + rng.choice([1, -1, 2, 1460, -1460, 65536, _FAR, 1 << 31])
        b[pos : pos + 4] = (new % MOD).to_bytes(4, "big")
    else:  # cut out a piece
        a = rng.randrange(len(b))
        del b[a : a + rng.randrange(1, 30)]
    return bytes(b)


def mutate_packets(rng: Rng, packets: list) -> list:
    out = list(packets)
    if not out:
        return out
    for _ in range(rng.randrange(1, 6)):
        j = rng.randrange(len(out))
        i, ts, fr, wl = out[j]
        k = rng.randrange(6)
        if k <= 3:
            fr = mutate_frame(rng, fr)
            wl = len(fr)
        elif k == 4:  # the snap length cut it: the wire length is larger
            keep = rng.randrange(len(fr) + 1)
            fr, wl = fr[:keep], len(fr) + rng.choice([0, 1, 100])
        else:  # a duplicate somewhere later
            out.insert(rng.randrange(j, len(out) + 1), (i, ts, fr, wl))
            continue
        out[j] = (i, ts, fr, max(wl, len(fr)))
    return out


def seeded(seed: int, max_conns: int = 6) -> Capture:
    return capture(random.Random(seed), max_conns)
