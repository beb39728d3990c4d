"""The record of a light flow that ended plain, written by C as its JSON line (stack/_record.c,
Engine.on_line), is byte for byte what orjson writes of records.py's object: on flows built
field by field (every key shape, time, option and number, and the cases C leaves to Python),
and through replay's writer on every shipped capture, the public corpus, first bytes of
every shape C detects and HTTP exchanges of every framing. The HTTP transactions C writes
from a light flow's logged header blocks (stack/_record.c ut_transactions_record) are held
to what plugins/http_transactions.py makes of the same blocks, the same way."""

from __future__ import annotations

import functools
import io
import math
import random
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest
from frames import Conversation, frames
from hypothesis import given, settings
from hypothesis import strategies as st
from test_detectors_web import alpn_ext, build_client_hello, sni_ext
from test_fastpath import _first_bytes_frames
from test_http_framing_c import _connection
from uinet_tap.plugins.detectors.tls import CIPHER_NAMES, VERSION_NAMES
from uinet_tap.plugins.http_transactions import HttpTransactions
from uinet_tap.plugins.registry import builtin_detectors
from uinet_tap.stack import fastpath
from uinet_tap.stack.events import CloseReason
from uinet_tap.stack.tracker import Tracker

from uinet_tap.api import _batches
from uinet_tap.cli import _RecordWriter
from uinet_tap.engine import Engine, Options
from uinet_tap.native import NativeGlue, _findings
from uinet_tap.pcapfile import Batch, PcapFile
from uinet_tap.records import ended_record

pytestmark = pytest.mark.skipif(not fastpath.AVAILABLE, reason="the C data plane is not built")

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"

# Times: a capture's usual microseconds and nanoseconds near now, whole seconds, the edges C
# writes up to (0, 1e-4, 2**32, 1e11) and past them, where Python writes the record.
_NOW = 1_748_858_400
times = st.one_of(
    st.integers(0, 10**6 - 1).map(lambda us: _NOW + us / 1e6),
    st.integers(0, 10**9 - 1).map(lambda ns: _NOW + ns / 1e9),
    st.integers(0, 2**33).map(float),
    st.floats(0.0, 2e11, allow_nan=False),
    st.sampled_from([0.0, 1e-5, 1e-4, 0.5, 2.0**32 - 1e-6, 2.0**32, 2.0**32 + 0.25, 1e11 - 1,
                     1e11, 99999999999.99998, 5e-324]),
)  # fmt: skip
address = st.one_of(st.binary(min_size=4, max_size=4), st.binary(min_size=16, max_size=16))
u32 = st.integers(0, 2**32 - 1)
count = st.integers(0, 2**40)


def _key(tags: list[int], src: bytes, dst: bytes, sport: int, dport: int) -> bytes:
    """A key as C holds it (fastpath.py py_key reads it): its length, then the tracker's key."""
    prefix = bytes([len(tags)]) + b"".join(t.to_bytes(2, "big") for t in tags) if tags else b""
    key = prefix + src + dst + sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
    return (bytes([len(key)]) + key).ljust(fastpath.KEY_BYTES, b"\0")


@st.composite
def ended_flows(draw: st.DrawFn) -> bytes:
    e = fastpath.ffi.new("ut_ended *")
    f = e.flow
    v6 = draw(st.booleans())
    n = 16 if v6 else 4
    src = draw(st.binary(min_size=n, max_size=n))
    dst = draw(st.one_of(st.just(src), st.binary(min_size=n, max_size=n)))
    sport, dport = draw(st.integers(0, 65535)), draw(st.integers(0, 65535))
    tags = draw(st.lists(st.integers(0, 4095), max_size=fastpath.KEY_TAGS))
    f.key[0] = _key(tags, src, dst, sport, dport)
    f.key[1] = _key(tags, dst, src, dport, sport)
    f.id = draw(st.integers(0, 2**62))
    f.start, f.last_seen = draw(times), draw(times)
    f.syn_sent = draw(st.booleans())
    f.bypass = draw(st.booleans())
    f.c_mss, f.s_mss = draw(st.integers(-1, 65535)), draw(st.integers(-1, 65535))
    f.c_sack, f.s_sack = draw(st.integers(0, 1)), draw(st.integers(0, 1))
    f.c_ts, f.s_ts = draw(st.integers(0, 1)), draw(st.integers(0, 1))
    f.c_wscale, f.s_wscale = draw(st.integers(-1, 14)), draw(st.integers(-1, 14))
    for d in f.d:
        d.base = draw(u32)
        d.nxt = draw(count)
        d.seen_end = draw(st.one_of(st.just(d.nxt), count))
        d.last_ack = draw(st.one_of(u32, st.just((d.base + d.seen_end) & 0xFFFFFFFF)))
        d.has_last_ack = draw(st.booleans())
        d.packets, d.payload_bytes, d.retransmitted = draw(count), draw(count), draw(count)
    e.digested = [draw(st.sampled_from([0, 1, 1, 1])) for _ in range(2)]
    e.digest = draw(st.binary(min_size=64, max_size=64))
    return bytes(fastpath.ffi.buffer(e))


def _in_c_range(t: float) -> bool:
    return t == 0.0 or 1e-4 <= t < 1e11


@settings(max_examples=3000, deadline=None)
@given(ended_flows(), st.sampled_from(list(CloseReason)), st.integers(0, 65535))
def test_a_record_c_writes_is_records_py_text(ended, close, seed):
    fast = fastpath.CFastPath(0)
    made = fast.ended_line(ended, seed, close.value)
    try:
        want = orjson.dumps(ended_record(fastpath.ended_facts(ended), close, seed))
    except MemoryError:  # a whole stream without a digest: records.py refuses it, as C does
        assert made is None
        return
    if made is None:  # C leaves only times it does not write to Python
        facts = fastpath.ended_facts(ended)
        assert not (_in_c_range(facts.start) and _in_c_range(facts.last_seen)), want
        return
    head, c2s, s2c = made
    assert head + b"}" == want
    rec = orjson.loads(want)
    assert (c2s, s2c) == (rec["c2s"]["bytes"], rec["s2c"]["bytes"])


def test_times_c_leaves_to_python_are_only_those_outside_its_range():
    """Not vacuous: the common times are written in C; the edges fall back."""
    fast = fastpath.CFastPath(0)
    e = fastpath.ffi.new("ut_ended *")
    e.flow.key[0] = _key([], b"\1\2\3\4", b"\5\6\7\10", 1, 2)
    e.digested = [1, 1]
    for t, in_c in [(_NOW + 0.026635, True), (0.0, True), (1e-4, True), (1e11 - 1, True),
                    (1e-5, False), (1e11, False), (math.inf, False), (-1.0, False)]:  # fmt: skip
        e.flow.start = e.flow.last_seen = t
        made = fast.ended_line(bytes(fastpath.ffi.buffer(e)), 0, "fin")
        assert (made is not None) == in_c, t


def _inputs() -> list[tuple[str, int, Callable[[], Iterable[Batch]]]]:
    """Every shipped capture and the corpus's, and the first bytes of every shape C detects
    (tests/test_fastpath.py): (name, link type, its batches)."""
    shipped = sorted(REPO.glob("captures/**/*.pcap")) + sorted(REPO.glob("captures/**/*.pcapng"))
    corpus = sorted(CORPUS.glob("*.pcap*")) if CORPUS.is_dir() else []
    out: list[tuple[str, int, Callable[[], Iterable[Batch]]]] = [
        (p.name, PcapFile(str(p)).linktype, functools.partial(_read, p)) for p in shipped + corpus
    ]
    fr = _first_bytes_frames(11)
    out.append(("first-bytes", 1, lambda: _batches(fr, 1)))
    # HTTP exchanges of every framing, hostile ones among them (tests/test_http_framing_c.py):
    # pipelined, keep-alive, HEAD, 204 and 304, chunked and to-the-close bodies, bare LF.
    rng = random.Random(3)
    http = frames([s for i in range(60) for s in _connection(rng, 31000 + i)])
    out.append(("http-framing", 1, lambda: _batches(http, 1)))
    return out


def _read(path: Path) -> Iterable[Batch]:
    return PcapFile(str(path)).batches()


def _replay(
    linktype: int,
    batches: Iterable[Batch],
    lines: bool,
    inspect: str | None,
    whole: bool = True,
    many: bool = False,
    stats: list[dict] | None = None,
) -> tuple[bytes, int]:
    """What replay's writer writes of the input (``lines``: records C writes go as they are;
    ``whole``: C ends light flows with their whole lines where it can, else each goes through
    Engine._ended; ``many``: those whole lines go to the writer in batches, as the CLI wires
    it, else one by one), and how many records went as lines; the run's stats into ``stats``."""
    out = io.BytesIO()
    writer = _RecordWriter([out])
    engine = Engine(
        linktype, Options(fastpath="c"), writer,
        plugins=builtin_detectors() if inspect else None, bypass=inspect == "bypass",
    )  # fmt: skip
    n = 0
    if lines:

        def line(text: bytes, close: str) -> None:
            nonlocal n
            n += 1
            writer.line(text, close)

        def lines_of(text: bytes, closes: dict[str, int]) -> None:
            nonlocal n
            n += sum(closes.values())
            assert text.count(b"\n") == sum(closes.values())
            writer.lines(text, closes)

        engine.on_line = line
        if many:
            engine.on_lines = lines_of
        if not whole:
            engine.tracker.on_lines = None
    for batch in batches:
        engine.feed_batch(batch)
    engine.finish()
    fast = engine.tracker.fast
    assert fast is not None and fastpath.lib.ut_hlog_total(fast.table) == 0  # every log let go
    if stats is not None:
        stats.append(engine.stats())
    return out.getvalue(), n


@pytest.mark.parametrize("inspect", [None, "plugins", "bypass"])
def test_replay_writes_the_same_records_with_c_lines(inspect):
    """Records as objects, as lines C writes whole (in batches, as the CLI takes them, or
    one by one), and as lines Engine._ended joins: the same bytes, and the same summary
    (the counts of protocols and verdicts, in their order, and the largest connections)."""
    made = {True: 0, False: 0}
    for name, linktype, batches in _inputs():
        stats: list[dict] = []
        want, none = _replay(linktype, batches(), False, inspect, stats=stats)
        assert none == 0
        for whole, many in ((True, True), (True, False), (False, False)):
            got, n = _replay(linktype, batches(), True, inspect, whole, many, stats)
            assert got == want, (name, whole, many)
            assert orjson.dumps(stats[-1]) == orjson.dumps(stats[0]), (name, whole, many)
            made[whole] += n
    # not vacuous: light flows' records went as lines
    assert made[True] >= 40 and made[False] >= 20, made


@pytest.mark.parametrize("cap", [200, 600])
def test_header_block_logs_past_their_cap_go_to_python_as_before(monkeypatch, cap):
    """A light flow whose log is full has its later blocks handed over at once: Python's
    follower reads what was logged first, then those, then what C logs again after; the
    records stay the same."""
    monkeypatch.setattr(fastpath, "HLOG_FLOW_CAP", cap)
    for name, linktype, batches in _inputs():
        if name in ("first-bytes", "http-framing", "http-keepalive.pcap"):
            want, _ = _replay(linktype, batches(), False, "plugins")
            got, n = _replay(linktype, batches(), True, "plugins")
            assert got == want, name


def test_a_record_orjson_refuses_is_converted_as_before(monkeypatch):
    """A value that is not JSON in what Python adds to C's line (a bug's): the record goes
    the object's way, converted by the writer as any record is, the same bytes either way
    (the transactions C wrote included)."""
    name, linktype, batches = next(i for i in _inputs() if i[0] == "first-bytes")
    _, lines = _replay(linktype, batches(), True, "plugins", whole=False)
    real = NativeGlue.finish_decided

    def odd(self: NativeGlue, user: Any, bypassed: bool, text: bool = False) -> dict:
        out = real(self, user, bypassed, text)
        return {**out, "odd": {b"not a str key": 1}} if out["protocol"] == "http" else out

    monkeypatch.setattr(NativeGlue, "finish_decided", odd)
    want, _ = _replay(linktype, batches(), False, "plugins")
    got, fewer = _replay(linktype, batches(), True, "plugins", whole=False)
    assert got == want and b'"odd":{"not a str key":1},"transactions":[' in got
    assert fewer < lines, (fewer, lines)  # the HTTP ones went the object's way


# -- transactions written from a header block log ---------------------------------------------

_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"]
_text = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
_PATHS = st.sampled_from([b"", b'a?b="c"\\', b"x"] * 3 + [b"p" * 1100])
_VISIBLE = st.binary(max_size=8).map(lambda b: bytes(c % 94 + 33 for c in b))  # 0x21-0x7E


@st.composite
def exchanges(draw: st.DrawFn) -> tuple[bytes, int, int]:
    """A header block log (ut_hlog entries, as _follow.c logs them) of keep-alive or pipelined
    exchanges, and where each stream ended (at its end, or cut inside the last body)."""
    pipelined = draw(st.booleans())
    # a few, or past the 64 a record lists; C follows 63 requests waiting at most
    n = draw(st.one_of(st.integers(1, 6), st.integers(60, 63 if pipelined else 70)))
    log = bytearray()
    nxt = [0, 0]
    # (direction, exchange index), each response after its request
    order = (
        [(0, i) for i in range(n)] + [(1, i) for i in range(n)]
        if pipelined
        else [(d, i) for i in range(n) for d in (0, 1)]
    )
    answered = draw(st.integers(max(0, n - 63), n))  # the last ones may get no response
    methods = []
    for d, i in order:
        if d == 1 and i >= answered:
            continue
        head = fastpath.ffi.new("ut_head *")
        for name in ("method", "path", "proto", "host", "ua"):
            setattr(head, name, [0, -1])
        if d == 0:
            method = draw(st.sampled_from(_METHODS))
            methods.append(method)
            path = b"/" + draw(_PATHS) + draw(_VISIBLE)
            proto = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]))
            line = method.encode() + b" " + path + b" " + proto + b"\r\n"
            block = bytearray(line)
            head.method = [0, len(method)]
            head.path = [len(method) + 1, len(path)]
            head.proto = [len(method) + 2 + len(path), len(proto)]
            for name, field in (("host", b"Host: "), ("ua", b"User-Agent: ")):
                value = draw(st.one_of(st.none(), _text, _text, _text, st.just(b"u" * 1500)))
                if value is not None:
                    setattr(head, name, [len(block) + len(field), len(value)])
                    block += field + value + b"\r\n"
            head.status = -1
        else:
            status = draw(st.sampled_from([200, 201, 204, 304, 404, 500]))
            block = bytearray(b"HTTP/1.1 %d X\r\n" % status)
            head.status = status
        body = draw(st.sampled_from([None, 0, 5, 3000]))
        if d == 1 and body is None and methods[i] != "HEAD" and status not in (204, 304):
            body = 0  # a response body to the close: C does not follow it (nor log it)
        if body is not None:
            block += b"Content-Length: %d\r\n" % body
        block += b"\r\n"
        head.length = -1 if body is None else body
        if d == 1 and (methods[i] == "HEAD" or status in (204, 304)):
            body = 0  # no body follows whatever the length says (RFC 9112 §6.3)
        entry = fastpath.ffi.new("ut_hlog *")
        entry.at, entry.dir, entry.size, entry.head = nxt[d], d, len(block), head[0]
        raw = bytes(fastpath.ffi.buffer(entry)) + bytes(block)
        log += raw + bytes(-len(raw) % 8)
        nxt[d] += len(block) + (body or 0)
    cut = [max(0, x - draw(st.sampled_from([0, 0, 1, 2999]))) for x in nxt]
    return bytes(log), cut[0], cut[1]


@settings(max_examples=300, deadline=None)
@given(exchanges())
def test_transactions_c_writes_are_the_followers(case):
    log, c2s, s2c = case
    fast = fastpath.CFastPath(0)
    got = fast.transactions_line(fastpath.HeadLog(log), c2s, s2c)
    follower = fastpath.HeadLog(log).replayed(HttpTransactions())
    want = Engine._transactions(follower, c2s, s2c)
    assert follower.unexpected == 0
    if got is None:  # past the text's room: Python writes them
        assert len(orjson.dumps(want)) - 2 > fastpath._TX_CAP
        return
    assert (orjson.loads(b"{" + got + b"}") if got else {}) == want
    if want:
        assert got == orjson.dumps(want)[1:-1]


# -- an HTTP request's findings, written in C ---------------------------------------------


@st.composite
def http_natives(draw: st.DrawFn) -> tuple[Any, Any]:
    """A ut_native of an HTTP request C named (its early bytes, any byte in them, and the
    fields' places; host and user agent may be absent, a status may be there)."""
    early = draw(st.binary(min_size=1, max_size=1500))
    nat = fastpath.ffi.new("ut_native *")
    buf = fastpath.ffi.new("uint8_t[]", early)
    nat.proto = fastpath.NATIVE_HTTP
    nat.early[0] = buf
    nat.early_len[0] = len(early)

    def span(absent: bool) -> list[int]:
        if absent and draw(st.booleans()):
            return [0, -1]
        at = draw(st.integers(0, len(early)))
        return [at, draw(st.integers(0, min(len(early) - at, 1100)))]

    nat.method, nat.path = span(False), span(False)
    nat.host, nat.ua = span(True), span(True)
    nat.status = draw(st.sampled_from([-1, 200, 404]))
    nat.verdict_off = [draw(st.integers(0, 2000)), draw(st.integers(0, 2000))]
    return nat, buf  # buf: kept alive with nat


def _writing() -> fastpath.CFastPath:
    """A C data plane that writes findings, at the findings' limits (plugins/findings.py)."""
    fast = fastpath.CFastPath(0)
    fast.write_records(True, 1024, 256, (VERSION_NAMES, CIPHER_NAMES))
    return fast


def _both(nat: Any) -> tuple[bytes | None, str, dict, bool]:
    """The findings C writes of ``nat`` (None: none), and Python's: protocol, dict, plain."""
    written = _writing()._native_report(nat, False).findings_json
    return (written, *_findings(fastpath._native_report(nat, False)))


@settings(max_examples=500, deadline=None)
@given(http_natives())
def test_http_findings_c_writes_are_pythons(case):
    nat, _buf = case
    written, _proto, want, plain = _both(nat)
    if written is None:  # a string past the limit: Python cuts it
        assert not plain
        return
    assert plain and written == orjson.dumps(want)
    assert _writing()._native_report(nat, False).verdict_offsets == tuple(nat.verdict_off)


def test_http_findings_past_the_string_limit_are_pythons():
    nat = fastpath.ffi.new("ut_native *")
    buf = fastpath.ffi.new("uint8_t[]", b"GET /" + b"p" * 1100)
    nat.proto, nat.early[0], nat.early_len[0] = fastpath.NATIVE_HTTP, buf, 1105
    nat.method, nat.path, nat.host, nat.ua, nat.status = [0, 3], [4, 1025], [0, -1], [0, -1], -1
    fast = _writing()
    assert fast._native_report(nat, False).findings_json is None
    nat.path = [4, 1024]
    assert fast._native_report(nat, False).findings_json is not None


@st.composite
def tls_natives(draw: st.DrawFn) -> tuple[Any, Any]:
    """A ut_native of a TLS hello C named: the SNI and ALPN bytes (any byte), the offered
    versions (named or not, GREASE among them), JA3 and JA4, the server's choice or none."""
    nat = fastpath.ffi.new("ut_native *")
    nat.proto = fastpath.NATIVE_TLS
    fbuf = bytearray()
    nat.sni = [0, -1]
    nat.alpn = [0, -1]
    if draw(st.booleans()):
        sni = draw(st.one_of(st.binary(max_size=60), st.just(b"h" * 300)))
        nat.sni = [len(fbuf), len(sni)]
        fbuf += sni
    if draw(st.booleans()):
        names = draw(st.lists(st.binary(max_size=12), max_size=300))
        vec = b"".join(bytes([len(n)]) + n for n in names)[: 1024 - len(fbuf)]
        nat.alpn = [len(fbuf), len(vec)]
        fbuf += vec
    nat.fbuf[0 : len(fbuf)] = bytes(fbuf)
    nat.flen = len(fbuf)
    codes = st.one_of(st.sampled_from(sorted(VERSION_NAMES)), st.integers(0, 0xFFFF))
    versions = draw(st.lists(codes, max_size=16))
    nat.nversions = len(versions)
    nat.versions[0 : len(versions)] = versions
    nat.legacy = draw(codes)
    for field, size in (("ja3", 40), ("ja4", 48)):
        text = draw(
            st.sampled_from([b"771,4865-4866,0-23,29,0", b"t13d1516h2_8daaf6152771_e5627efa2ab1"])
        )
        setattr(nat, field, text[: size - 1])
    nat.tls_version = draw(st.one_of(st.just(-1), codes))
    nat.cipher = draw(st.one_of(st.sampled_from(sorted(CIPHER_NAMES)), st.integers(0, 0xFFFF)))
    nat.verdict_off = [draw(st.integers(0, 2000)), draw(st.integers(0, 2000))]
    return nat, None


@settings(max_examples=500, deadline=None)
@given(tls_natives())
def test_tls_findings_c_writes_are_pythons(case):
    nat, _ = case
    written, proto, want, plain = _both(nat)
    assert proto == "tls"
    if written is not None:  # else Python makes them (past a limit, odd places)
        assert plain and written == orjson.dumps(want)


def test_tls_findings_past_the_limits_are_pythons():
    """What Python would cut C does not write: 257 ALPN names, an SNI of 1,028 characters
    once escaped (257 bytes from 0x80 are four characters each); just within, it does."""
    fast = _writing()
    for alpn, sni, written in [(256, b"\x80" * 256, True), (257, b"", False),
                               (1, b"\x80" * 257, False)]:  # fmt: skip
        nat = fastpath.ffi.new("ut_native *")
        nat.proto, nat.tls_version, nat.legacy = fastpath.NATIVE_TLS, -1, 0x0303
        vec = bytes(alpn)  # empty names
        nat.fbuf[0 : len(sni) + len(vec)] = sni + vec
        nat.flen = len(sni) + len(vec)
        nat.sni, nat.alpn = [0, len(sni)], [len(sni), len(vec)]
        report = fast._native_report(nat, False)
        assert (report.findings_json is not None) == written, (alpn, len(sni))
        if written:
            assert report.findings_json == orjson.dumps(
                _findings(fastpath._native_report(nat, False))[1]
            )


# -- light flows ended in C, lines and all (ut_end_lights), and decisions C holds -------------


def _held_cases() -> list:
    """Light flows whose decisions C holds (HTTP and TLS), most ending plain (C ends them
    and writes their whole lines), and three whose ends are not all C's: a request with two
    holes after the verdict (C holds one piece out of order, the second is Python's: the
    connection made then takes the decision C held), a response whose end the capture
    missed but the client ACKed (no plain end: the connection is made at its end), and an
    exchange past the year 5138 (C ends it, but leaves its record to Python: C writes no
    such time)."""
    req = b"GET /held HTTP/1.1\r\nHost: h.example\r\nUser-Agent: t\r\n\r\n"
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789"
    hello = build_client_hello([0x1301, 0xC02F], [sni_ext(b"held.example"), alpn_ext(b"h2")])
    segs: list = []

    def exchange(cv: Conversation, first: bytes, answer: Callable[[], list]) -> list:
        head = [*cv.handshake(), cv.c(first), cv.ack("s")]
        return [*head, *answer(), cv.ack("c"), cv.fin("c"), cv.fin("s"), cv.ack("c")]

    for i in range(4):
        cv = Conversation(cport=41000 + i, sport=80, t0=100.0 + i / 10)
        segs += exchange(cv, req, lambda cv=cv: [cv.s(resp)])
        cv = Conversation(cport=42000 + i, sport=443, t0=100.05 + i / 10)
        segs += exchange(cv, hello, lambda cv=cv: [cv.s(b"\x16\x03\x03\x00\x04\x0e\x00\x00\x00")])
    cv = Conversation(cport=43000, sport=80, t0=100.7)
    n = len(req)  # decided at the response; the next request comes in three pieces, the
    # last first (held in C), then the second (a second hole: Python's)

    def again() -> list:
        first = [cv.s(resp), cv.ack("c"), cv.data("c", req[30:], rel=n + 30)]
        pieces = [cv.data("c", req[20:30], rel=n + 20), cv.data("c", req[:20], rel=n)]
        return [*first, *pieces, cv.ack("s"), cv.s(resp)]

    segs += exchange(cv, req, again)

    def cut() -> list:
        seg = cv.data("s", resp[:20])
        cv.off["s"] = len(resp)  # the rest never captured, but ACKed
        return [seg]

    cv = Conversation(cport=43001, sport=80, t0=100.8)
    segs += exchange(cv, req, cut)
    for k in range(2):  # the first one's SYN runs the timeouts, Python's: the second is C's
        late = Conversation(cport=43002 + k, sport=80, t0=2e11 + k / 10)
        segs += exchange(late, req, lambda late=late: [late.s(resp)])
    segs.sort(key=lambda s: s.ts)
    return frames(segs)


@pytest.mark.parametrize("inspect", [None, "plugins", "bypass"])
def test_light_flows_c_ends_with_their_lines(monkeypatch, inspect):
    """The records of light flows C ends and writes whole (ut_end_lights), whose decisions C
    held (ut_hold_config), are the general path's, with the same summary; and each way a
    held decision goes back to Python was taken: a connection made before the end, one made
    at it, a record C ends but Python writes."""
    fr = _held_cases()
    made: Counter[str] = Counter()
    light_user, ended_light = fastpath.CFastPath._light_user, fastpath.CFastPath.ended_light

    def user(self: fastpath.CFastPath, slot: int, f: Any) -> Any:
        held = f.dec_proto != 0
        got = light_user(self, slot, f)
        made["from held" if held else "python's"] += got is not None
        return got

    def ended(self: fastpath.CFastPath, slot: int) -> Any:
        made["ended, python writes"] += 1
        return ended_light(self, slot)

    monkeypatch.setattr(fastpath.CFastPath, "_light_user", user)
    monkeypatch.setattr(fastpath.CFastPath, "ended_light", ended)
    general = _replay_general(fr, inspect)
    stats: list[dict] = []
    got, n = _replay(1, _batches(fr, 1), True, inspect, many=True, stats=stats)
    assert got == general[0]
    assert orjson.dumps(stats[0]) == orjson.dumps(general[1])
    # 12 records: each first connection's SYN at 100 s and 2e11 s goes Python's way (its
    # frame runs the timeouts), with inspection the first to port 443 too (C opens flows to
    # a port once Python named its detectors: NativeGlue._allow). Then three are as above,
    # but with --bypass, where C keeps no byte after the verdict: nothing out of order (that
    # one ends in C, its line whole) and no trailing gap (that one ends plain, its line
    # joined in Python: C handed its follower the cut header block).
    lines, held = {None: (7, 0), "plugins": (6, 3), "bypass": (8, 2)}[inspect]
    assert n == lines and got.count(b"\n") == 12
    assert made["from held"] == held and made["python's"] == 0, made
    if inspect is not None:
        assert stats[0]["protocols"] == {"http": 8, "tls": 4}
    assert made["ended, python writes"] == 1, made


def _replay_general(fr: list, inspect: str | None) -> tuple[bytes, dict]:
    """What replay writes of frames ``fr`` through the general path (the reference)."""
    out = io.BytesIO()
    engine = Engine(1, Options(fastpath="off"), _RecordWriter([out]),
                    plugins=builtin_detectors() if inspect else None,
                    bypass=inspect == "bypass")  # fmt: skip
    for batch in _batches(fr, 1):
        engine.feed_batch(batch)
    engine.finish()
    return out.getvalue(), engine.stats()


@pytest.mark.parametrize("inspect", [None, "plugins"])
def test_light_flows_holding_pieces_at_the_buffer_cap(monkeypatch, inspect):
    """Light flows stay light while C holds a piece of theirs out of order; when the global
    buffer cap makes Python take every held piece back (CFastPath.release_held), their
    connections are made in their places on the timeout lists (Tracker._adopt_holders): the
    records, their order and the summary are the general path's."""
    req = b"GET /piece HTTP/1.1\r\nHost: p.example\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n"
    body = bytes(range(65, 105))
    segs: list = []
    convs = [Conversation(cport=44000 + i, sport=80, t0=100.0 + i / 100) for i in range(8)]
    for cv in convs:
        segs += [*cv.handshake(), cv.c(req), cv.ack("s"), cv.s(head), cv.ack("c")]
    n = len(head)
    for i, cv in enumerate(convs):  # each response body's tail first: held (C skips bodies)
        segs.append(cv.data("s", body[12:], rel=n + 12, at=101.0 + i / 100))
    # the holes of the last four filled, in another order; the first four end with theirs
    # at the end of input, in the order of their lists
    for i, cv in enumerate(reversed(convs[4:])):
        segs += [cv.data("s", body[:12], rel=n, at=102.0 + i / 100), cv.ack("c")]
        segs += [cv.fin("c"), cv.fin("s"), cv.ack("c")]
    segs.sort(key=lambda s: s.ts)
    fr = frames(segs)
    cap = 3 * (len(body) - 12 + fastpath.PIECE_COST)  # the fourth piece held passes it
    made: list[int] = []
    adopt_holders = Tracker._adopt_holders

    def holders(self: Tracker, slots: list[int]) -> None:
        made.extend(slots)
        adopt_holders(self, slots)

    monkeypatch.setattr(Tracker, "_adopt_holders", holders)
    outs = []
    for mode in ("off", "c"):
        out = io.BytesIO()
        writer = _RecordWriter([out])
        engine = Engine(1, Options(fastpath=mode, max_buffer=cap), writer,
                        plugins=builtin_detectors() if inspect else None)  # fmt: skip
        engine.on_line, engine.on_lines = writer.line, writer.lines
        for batch in _batches(fr, 1):
            engine.feed_batch(batch)
        engine.finish()
        outs.append((out.getvalue(), orjson.dumps(engine.stats())))
    assert outs[1] == outs[0]
    assert b'"buffer_forced":0' not in outs[0][1]  # not vacuous: the cap bit
    # the first connection is Python's (the first frame runs the timeouts); two light flows
    # hold pieces in C when the third's would pass the cap: their connections are made then
    assert len(made) == 2, made


def _closing_traffic() -> list:
    """Connections that end closed (both FINs, or a RST), and one left open, then the
    stragglers of each within the minute watch remembers closed tuples, a SYN on a
    remembered tuple, and late data on one forgotten (past the minute, or at the cap)."""
    req = b"GET /c HTTP/1.1\r\nHost: c.example\r\n\r\n"
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    segs: list = []
    convs = [Conversation(cport=45000 + i, sport=80, t0=100.0 + i / 10) for i in range(12)]
    for i, cv in enumerate(convs):
        segs += [*cv.handshake(), cv.c(req), cv.s(resp), cv.ack("c")]
        if i % 3 == 0:
            segs += [cv.fin("c"), cv.fin("s"), cv.ack("c")]
        elif i % 3 == 1:
            segs.append(cv.rst("c"))
    for i, cv in enumerate(convs):  # their closing ran out (3 s): each record is written
        if i % 3 != 2:
            segs.append(cv.ack("c", at=104.0 + i / 100))  # a straggler, swallowed
    # New connections on closed tuples, of a light flow C ended (6) and of a connection
    # Python made (0), after the first straggler ran the timeouts: C would open them, were
    # the tuples not claimed.
    for i in (6, 0):
        again = Conversation(cport=45000 + i, cisn=77_000, sisn=99_000, t0=104.2 + i / 100)
        segs += [*again.handshake(), again.c(req), again.s(resp), again.ack("c")]
        segs += [again.fin("s"), again.fin("c"), again.ack("s")]
    segs.append(convs[3].c(b"late", at=200.0))  # the minute is over: a new connection
    segs.sort(key=lambda s: s.ts)
    return frames(segs)


def _counted(lines: list[int], writer: _RecordWriter, text: bytes, closes: dict[str, int]) -> None:
    lines.append(sum(closes.values()))
    writer.lines(text, closes)


@pytest.mark.parametrize("cap", [1 << 16, 6])
@pytest.mark.parametrize("inspect", [None, "plugins", "bypass"])
def test_light_flows_remember_closed_tuples_as_the_general_path(monkeypatch, inspect, cap):
    """watch's settings (closed tuples remembered for a minute, closing connections ended
    after 3 s): light flows that end closed, in C with their lines or in Python, leave their
    tuples remembered, in the order and until the time the general path does, and claimed
    in C meanwhile (a SYN on one is the tracker's); forgetting one, past its minute or at
    the memory's cap, lets it go. Records, summary and the memory itself are the general
    path's."""
    from uinet_tap.stack import tracker as tracker_module

    monkeypatch.setattr(tracker_module, "CLOSED_MEMORY_CAP", cap)
    fr = _closing_traffic()
    got = []
    for mode in ("off", "c", "c-objects"):
        out = io.BytesIO()
        writer = _RecordWriter([out])
        engine = Engine(
            1, Options(fastpath=mode.split("-")[0], closed_memory=60.0, timeout_closing=3.0),
            writer, plugins=builtin_detectors() if inspect else None, bypass=inspect == "bypass",
        )  # fmt: skip
        lines: list[int] = []
        if mode == "c":
            engine.on_line = writer.line
            engine.on_lines = functools.partial(_counted, lines, writer)
        memory = []  # as it stands after each batch of eight frames
        for batch in _batches(fr, 1, 8):
            engine.feed_batch(batch)
            memory.append(list(engine.tracker.closed.items()))
        engine.finish()
        stats = engine.stats()
        got.append((out.getvalue(), orjson.dumps(stats), memory))
        fast = engine.tracker.fast
        if mode == "c":
            assert fast is not None and fast.light and fast.keep_closed
            assert fast.light_ended >= 8 and sum(lines) >= 4, (fast.light_ended, lines)
        if fast is not None:  # every key C holds claimed is one remembered: none left behind
            assert fastpath.lib.ut_claims_live(fast.table) == len(engine.tracker.closed) > 0
    assert got[1] == got[0] and got[2] == got[0]
    stats = orjson.loads(got[0][1])
    # not vacuous: the memory swallowed the stragglers of all eight, or of the last three
    # closed (six tuples at the cap)
    assert stats["stragglers"] == (3 if cap == 6 else 7), stats
    assert stats["limits"].get("closed_memory", 0) == (8 if cap == 6 else 0), stats
