"""The two paths (the C data plane where it takes a frame, the general path only) give
identical records and stats on the same input: real captures, the public corpus, a
bench-style mix of thousands of interleaved connections, and many connections open at once
(C table growth and slot reuse).

The rest of the suite can be run through one path with UINET_TAP_FASTPATH=c|off
(.ci/run does both); this file compares them directly, frame for frame.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import pytest
from frames import Conversation, frames, opt_timestamps
from frames import Conversation as _Conversation
from hypothesis import given, settings
from hypothesis import strategies as st
from uinet_tap.plugins.policy import Budget, Policy
from uinet_tap.plugins.registry import builtin_detectors
from uinet_tap.stack import fastpath
from uinet_tap.stack.tracker import Tracker

from uinet_tap.api import _batches, reconstruct
from uinet_tap.engine import Engine, Options
from uinet_tap.native import NativeGlue
from uinet_tap.pcapfile import Batch, PcapFile

Inspect = Literal["plugins", "bypass"] | None

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MODES = ["off"] + (["c"] if fastpath.AVAILABLE else [])


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch):
    monkeypatch.delenv("UINET_TAP_FASTPATH", raising=False)


def replay(
    path: Path, mode: str, keep: bool = False, inspect: Inspect = None, **options
) -> tuple[list[dict], dict]:
    source = PcapFile(str(path))
    return run(source.batches(), source.linktype, mode, keep, inspect, **options)


def run(
    batches: Iterable[Batch], linktype: int, mode: str, keep: bool = False,
    inspect: Inspect = None, policy: Policy | None = None, **options,
) -> tuple[list[dict], dict]:  # fmt: skip
    """``inspect``: None (no plugins), "plugins" (the built-in detectors) or "bypass" (and
    --bypass): with plugins, the C path also names HTTP and TLS itself (uinet_tap/native.py)
    unless a ``policy`` with rules or another budget keeps it to the Python inspector."""
    records: list[dict] = []
    engine = Engine(
        linktype, Options.from_kwargs(fastpath=mode, **options), records.append,
        keep_streams=keep, plugins=builtin_detectors() if inspect else None,
        policy=policy, bypass=inspect == "bypass",
    )  # fmt: skip
    for batch in batches:
        engine.feed_batch(batch)
    engine.finish()
    if mode == "c" and inspect and not keep and policy is None:
        assert isinstance(engine.inspection, NativeGlue)
    return records, engine.stats()  # in the order written: the paths must agree on it too


def assert_same_everywhere(
    path: Path, keep: bool = False, inspect: Inspect = None, **options
) -> None:
    ref_records, ref_stats = replay(path, "off", keep, inspect, **options)
    assert ref_records, f"{path.name}: no connections"
    for mode in MODES[1:]:
        records, stats = replay(path, mode, keep, inspect, **options)
        assert stats == ref_stats, f"{path.name}: stats differ under {mode}"
        for a, b in zip(records, ref_records, strict=True):
            assert a == b, f"{path.name}: connection {b['id']} differs under {mode}"


CAPTURES = sorted((REPO / "captures").glob("*.pcap"))


@pytest.mark.parametrize("path", CAPTURES, ids=[p.stem for p in CAPTURES])
def test_paths_agree_on_real_captures(path):
    assert_same_everywhere(path)


APP_CAPTURES = sorted((REPO / "captures" / "app").glob("*.pcap"))


@pytest.mark.parametrize("inspect", ["plugins", "bypass"])
@pytest.mark.parametrize(
    "path", CAPTURES + APP_CAPTURES, ids=[p.stem for p in CAPTURES + APP_CAPTURES]
)
def test_paths_agree_with_inspection(path, inspect):
    # Protocol, findings, verdict, decided_by, verdict_offset and bypassed too: the C path
    # names HTTP and TLS itself and hands everything else to the Python inspector.
    assert_same_everywhere(path, inspect=inspect)


@pytest.mark.parametrize("path", CAPTURES[:3], ids=[p.stem for p in CAPTURES[:3]])
def test_paths_agree_when_sinks_keep_bytes(path):
    # Kept bytes (and --export) stop C from hashing in place: payload comes back to Python.
    assert_same_everywhere(path, keep=True)


def test_paths_agree_on_the_corpus():
    corpus = SHARED / "corpus"
    if not corpus.is_dir():
        pytest.skip(f"{corpus} absent")
    for path in sorted(corpus.glob("*.pcap*")):
        assert_same_everywhere(path)
        assert_same_everywhere(path, inspect="bypass")


@pytest.fixture(scope="module")
def bench_mix(tmp_path_factory) -> Path:
    make = SHARED / "bench" / "make_bench.py"
    if not make.exists():
        pytest.skip(f"{make} absent")
    out = tmp_path_factory.mktemp("bench") / "mix.pcap"
    subprocess.run(
        [sys.executable, str(make), "--connections", "400", "--seed", "7", "--out", str(out)],
        check=True, capture_output=True,
    )  # fmt: skip
    return out


def test_paths_agree_on_a_bench_mix(bench_mix):
    # Interleaved HTTP/TLS/bulk connections with retransmissions, reordering, RST closes:
    # every hand-over between C and Python happens here, many times.
    assert_same_everywhere(bench_mix)


@pytest.mark.parametrize("inspect", ["plugins", "bypass"])
def test_paths_agree_on_a_bench_mix_with_inspection(bench_mix, inspect):
    assert_same_everywhere(bench_mix, inspect=inspect)


@pytest.mark.parametrize("inspect", [None, "bypass"])
def test_paths_agree_with_timeouts_and_evictions(bench_mix, inspect):
    assert_same_everywhere(bench_mix, inspect=inspect, timeout_established=0.5, max_flows=50)


def test_many_connections_open_at_once():
    """3,000 connections established before any closes: the C table grows past its first
    size while holding them, then reuses slots for a second wave."""
    rng = random.Random(3)
    items = []
    for wave in range(2):
        convs = [
            Conversation(cport=10000 + i, cisn=rng.randrange(2**32), sisn=rng.randrange(2**32),
                         t0=1000.0 + wave * 10)
            for i in range(3000)
        ]  # fmt: skip
        for cv in convs:
            items += cv.handshake()
        for cv in convs:
            items += [cv.c(b"GET / HTTP/1.1\r\n\r\n"), cv.s(b"HTTP/1.1 200 OK\r\n\r\nhello")]
            items += [cv.ack("c")]
        for cv in convs:
            items += [cv.fin("c"), cv.fin("s"), cv.ack("c")]
    items.sort(key=lambda s: s.ts)
    fr = frames(items)
    results = {mode: reconstruct(fr, fastpath=mode) for mode in MODES}
    ref = results["off"]
    assert len(ref.records) == 6000
    assert all(r["close"] == "fin" for r in ref.records)
    for mode, res in results.items():
        assert res.records == ref.records, mode
        assert res.stats == ref.stats, mode


# -- first-bytes detection in C: every shape it takes, and the ones it hands back -----------

from test_detectors_web import (  # noqa: E402  (after the path tests: shared TLS builders)
    OPENSSL_CLIENT_HELLO,
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

GREASE_HELLO = build_client_hello(
    [0x0A0A, 0x1301, 0x1302, 0xC02B],
    [ext(0x1A1A, b""), sni_ext(b"grease.example"), alpn_ext(b"h2", b"http/1.1"),
     u16_list_ext(0x000A, [0x2A2A, 0x001D, 0x0017]), ext(0x000B, b"\x01\x00"),
     u16_list_ext(0x000D, [0x0403, 0x0804]),
     ext(0x002B, b"\x06\x3a\x3a\x03\x04\x03\x03"), ext(0x4A4A, b"\x00")],
)  # fmt: skip
ODD_HELLOS = [
    build_client_hello([0x1301], []),  # no extensions at all
    build_client_hello([0x1301], [alpn_ext(b"\x00ab\xff")]),  # ALPN ends not alphanumeric
    build_client_hello([0x1301], [alpn_ext()]),  # an empty ALPN list
    build_client_hello([0x1301], [ext(0x0010, b"\x00\x05\x02h2")]),  # a broken ALPN vector
    build_client_hello([0x1301], [sni_ext(b"a.example"), sni_ext(b"b.example")]),
    build_client_hello([0x1301], [ext(0x0000, b"\x00\x03\x01\x00")]),  # a broken SNI
    build_client_hello([0x1301], [sni_ext(b"caf\xc3\xa9.example")]),  # not ASCII
    build_client_hello([0x1301], [ext(0x002B, b"\x02\x5a\x5a")]),  # only GREASE versions
    build_client_hello([0x1301], [sni_ext(b"x" * 1500)]),  # more than C keeps: handed back
    build_client_hello([0x1301], [sni_ext(b"\xff" * 300)]),  # escaped beyond 1,024: cut
    build_client_hello([0x1301], [ext(0x000D, b"\x00\x02\x0a\x0a")], version=0x0301),
    build_client_hello([0x0A0A], [ext(0x000A, b"\x00\x03\x00\x1d\x00")]),  # odd group list
    build_client_hello([0x1301], [alpn_ext(*[b"h2"] * 1500)]),  # hostile: cut in the record
]
TLS12_SERVER = bytes.fromhex("160303002a020000260303") + bytes(32) + b"\x00\xc0\x2f\x00"
ALERT = bytes.fromhex("15030300020228")
HTTP_GET = (b"GET /index.html?q=1 HTTP/1.1\r\nHost: www.example.com\r\n"
            b"User-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n")  # fmt: skip
HTTP_ODD = [
    b"POST /form HTTP/1.0\r\nhOsT :  a.example \r\nHost: b.example\r\n"
    b"USER-AGENT:\tMoz\xe9 1.0\t\r\nContent-Length: 3\r\n\r\nabc",
    b"GET / HTTP/1.1\nHost: lf.example\n\n",
    b"HEAD /x HTTP/1.1\r\nHost: c.example\r\nnot a header\r\nUser-Agent: late\r\n\r\n",
    b"PROPFIND /dav HTTP/1.1\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: d\r\n\r\n",
    b"GET /\x01 HTTP/1.1\r\n\r\n",  # a control byte in the target: not a request line
    b"GET / HTTP/1.2\r\n\r\n",
    b"FOO / HTTP/1.1\r\n\r\n",
    b"GET /long/" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",  # beyond the budget
    b"GET /" + b"p" * 2000 + b" HTTP/1.1\r\nHost: e\r\n\r\n",  # a path cut in the record
]
RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.0 404 Not Found\r\n\r\n",
    b"HTTP/1.1 2x0 Odd\r\n\r\n",
    b"SSH-2.0-OpenSSH_9.6\r\n",
    b"HTTP/1.1 200\n\n",
]


def _scenarios() -> list[tuple[int, list[tuple[str, bytes, float]]]]:
    """(server port, [(side, payload, seconds after the last)]) per connection."""
    out: list[tuple[int, list[tuple[str, bytes, float]]]] = []
    for resp in RESPONSES:
        out.append((80, [("c", HTTP_GET, 0.01), ("s", resp, 0.01), ("s", b"body", 0.01)]))
        out.append((80, [("c", HTTP_GET, 0.01), ("s", resp[:4], 0.01), ("s", resp[4:], 0.01)]))
    for req in HTTP_ODD:
        out.append((8080, [("c", req, 0.01), ("s", RESPONSES[0], 0.01)]))
    out += [
        (80, [("c", HTTP_GET[:20], 0.01), ("c", HTTP_GET[20:], 0.01), ("s", RESPONSES[1], 0.01)]),
        (80, [("c", HTTP_GET[:-2], 0.01), ("c", b"\r\n", 0.01), ("s", RESPONSES[0], 0.01)]),
        (80, [("s", b"HTTP/1.1 200 OK\r\n\r\n", 0.01), ("c", HTTP_GET, 0.01)]),
        (80, [("c", HTTP_GET, 0.01)] + [("c", b"x" * 100, 0.01)] * 25),  # packets budget
        (80, [("c", HTTP_GET, 0.01), ("c", b"more", 6.0), ("s", RESPONSES[0], 0.01)]),  # time
        (80, [("c", HTTP_GET, 0.01), ("c", b"y" * 9000, 0.01), ("s", RESPONSES[0], 0.01)]),
        (80, [("c", HTTP_GET, 0.01), ("s", b"HTTP/1.", 0.01)] + [("s", b"z", 0.01)] * 25),
        (6379, [("c", HTTP_GET, 0.01), ("s", RESPONSES[0], 0.01)]),  # redis asked first
        (443, [("c", HTTP_GET, 0.01), ("s", RESPONSES[0], 0.01)]),
        (80, [("c", OPENSSL_CLIENT_HELLO, 0.01), ("s", PY13_SERVER_HELLO, 0.01)]),  # http2 first
        (12345, [("c", HTTP_GET, 0.01), ("s", RESPONSES[0], 0.01)]),
    ]
    hellos = [OPENSSL_CLIENT_HELLO, PY13_CLIENT_HELLO, GREASE_HELLO, *ODD_HELLOS]
    for i, hello in enumerate(hellos):
        server = [PY13_SERVER_HELLO, PY12_SERVER_HELLO, TLS12_SERVER, ALERT][i % 4]
        out.append((443, [("c", hello, 0.01), ("s", server, 0.01), ("c", b"\x17" * 50, 0.01)]))
    out += [
        (443, [("c", refragment(GREASE_HELLO, 40), 0.01), ("s", PY13_SERVER_HELLO, 0.01)]),
        (443, [("c", GREASE_HELLO[:30], 0.01), ("c", GREASE_HELLO[30:], 0.01),
               ("s", PY12_SERVER_HELLO, 0.01)]),
        (443, [("c", GREASE_HELLO, 0.01), ("s", PY13_SERVER_HELLO[:7], 0.01),
               ("s", PY13_SERVER_HELLO[7:50], 0.01), ("s", PY13_SERVER_HELLO[50:], 0.01)]),
        (443, [("c", GREASE_HELLO, 0.01), ("s", refragment(PY12_SERVER_HELLO, 10), 0.01)]),
        (443, [("c", GREASE_HELLO, 0.01), ("s", b"\x16\x03\x03\x00\x05\x02\x00\x00", 0.01)]),
        (443, [("c", GREASE_HELLO, 0.01), ("s", b"HTTP/1.1 400 Bad\r\n\r\n", 0.01)]),
        (443, [("c", b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00", 0.01), ("s", ALERT, 0.01)]),
        (443, [("c", GREASE_HELLO, 0.01)]),  # the server never answers
        (993, [("c", GREASE_HELLO, 0.01), ("s", PY13_SERVER_HELLO, 0.01)]),  # imap hinted too
        (5555, [("c", GREASE_HELLO, 0.01), ("s", PY13_SERVER_HELLO, 0.01)]),
    ]  # fmt: skip
    return out


def _first_bytes_frames(seed: int) -> list:
    """Every scenario as one connection (handshake, its data each acknowledged, FINs), the
    connections interleaved by a seeded shuffle of their start times."""
    rng = random.Random(seed)
    segs = []
    for i, (port, steps) in enumerate(_scenarios()):
        cv = Conversation(cport=20000 + i, sport=port, cisn=rng.randrange(2**32),
                          sisn=rng.randrange(2**32), t0=100.0 + rng.random())  # fmt: skip
        segs += cv.handshake()
        for side, payload, dt in steps:
            cv.t += dt
            segs += [cv.data(side, payload), cv.ack("s" if side == "c" else "c")]
        segs += [cv.fin("c"), cv.fin("s"), cv.ack("c")]
    segs.sort(key=lambda s: s.ts)
    return frames(segs)


@pytest.mark.parametrize("inspect", ["plugins", "bypass"])
def test_first_bytes_detection_in_c_agrees(inspect):
    """HTTP requests and TLS hellos of every shape C takes (GREASE, several records, odd
    extensions, bare LF, header case and spacing) and of the shapes it hands back (split
    heads and hellos, server first, budgets, other detectors first): identical records."""
    fr = _first_bytes_frames(11)
    ref = run(_batches(fr, 1), 1, "off", inspect=inspect)
    assert {r["protocol"] for r in ref[0]} >= {"http", "tls"}
    cut = [r for r in ref[0] if r.get("findings_truncated")]  # 1,500 ALPN names, long path...
    assert len(cut) >= 3 and ref[1]["findings_truncated"] == len(cut)
    for mode in MODES[1:]:
        got = run(_batches(fr, 1), 1, mode, inspect=inspect)
        assert got[1] == ref[1], mode
        for a, b in zip(got[0], ref[0], strict=True):
            assert a == b, (mode, b["server"], b["findings"])


def test_first_bytes_detection_happens_in_c():
    """Not vacuous: most of those connections are decided in C, some handed back."""
    if not fastpath.AVAILABLE:
        pytest.skip("the C fast path is not built")
    engine = Engine(1, Options(fastpath="c"), lambda rec: None,
                    plugins=builtin_detectors(), bypass=True)  # fmt: skip
    for batch in _batches(_first_bytes_frames(11), 1):
        engine.feed_batch(batch)
    engine.finish()
    glue = engine.inspection
    assert isinstance(glue, NativeGlue)
    assert glue.decided_in_c >= 25 and glue.handed_back >= 3, (glue.decided_in_c, glue.handed_back)


def test_live_view_shows_what_c_found():
    """The live view reads a flow C decided as it reads one the Python inspector decided."""
    if not fastpath.AVAILABLE:
        pytest.skip("the C fast path is not built")
    from uinet_tap.live_view_data import SnapshotMaker

    rows = {}
    for mode in ("c", "off"):
        engine = Engine(1, Options(fastpath=mode), lambda rec: None,
                        plugins=builtin_detectors(), bypass=True)  # fmt: skip
        maker = SnapshotMaker(engine)
        for batch in _batches(_first_bytes_frames(11), 1):
            engine.feed_batch(batch)
        rows[mode] = {row.id: row for row in maker.snapshot().flows}  # before any flow ends
    assert rows["c"].keys() == rows["off"].keys()
    shown = 0
    for flow_id, ref in rows["off"].items():
        row = rows["c"][flow_id]
        if row.verdict is not None:  # decided (C or Python): everything as the Python path
            shown += row.protocol in ("http", "tls")
            for key in ("protocol", "confidence", "info", "verdict", "decided_by", "findings",
                        "c2s_head", "s2c_head", "bypassed"):  # fmt: skip
                assert getattr(row, key) == getattr(ref, key), (flow_id, key)
    assert shown >= 25


# -- hostile traffic: disagreements found by probing, each held here ------------------------


def test_paths_agree_on_a_pcapng_with_mixed_link_types(tmp_path):
    """A raw-IP interface first, then an Ethernet one: the Ethernet batches the fast paths
    take are decoded as Ethernet, not with the file's first link type."""
    from frames import DLT_EN10MB, DLT_RAW, pcapng_multi_bytes

    a = Conversation(cport=1111)
    b = Conversation(cport=2222, t0=1000.0005)
    sa = a.handshake() + [a.c(b"hello"), a.ack("s"), a.fin("c"), a.fin("s"), a.ack("c")]
    sb = b.handshake() + [b.c(b"world"), b.ack("s"), b.s(b"x" * 10), b.ack("c")]
    sb += [b.fin("c"), b.fin("s"), b.ack("c")]
    items = [(0, fr) for fr in frames(sa, DLT_RAW)] + [(1, fr) for fr in frames(sb, DLT_EN10MB)]
    items.sort(key=lambda item: item[1][0])
    path = tmp_path / "mixed.pcapng"
    path.write_bytes(pcapng_multi_bytes(items, [DLT_RAW, DLT_EN10MB]))
    records, stats = replay(path, "off")
    assert [(r["client"], r["close"]) for r in records] == [
        ("10.0.0.1:1111", "fin"), ("10.0.0.1:2222", "fin")
    ]  # fmt: skip
    assert stats["undecodable"] == {}
    assert_same_everywhere(path)


@pytest.mark.parametrize("keep", [False, True])
def test_paths_agree_on_a_short_time_budget(keep):
    """A budget of 0.15 s: under C the inspector used to get a run's payloads after the run,
    all at the time of the connection's last frame in it, and so found the budget unspent
    where the other paths had spent it (and decided at another offset)."""
    cv = Conversation(cport=3333, dt=0.1)
    segs = cv.handshake() + [cv.c(b"GET / HTTP/1.1\r\n"), cv.ack("s"), cv.c(b"Host: x\r\n\r\n")]
    segs += [cv.ack("s"), cv.s(b"HTTP/1.1 200 OK\r\n\r\n"), cv.ack("c")]
    segs += [cv.fin("c"), cv.fin("s"), cv.ack("c")]
    fr = frames(segs)
    policy = Policy(budget=Budget(seconds=0.15))
    ref = run(_batches(fr, 1), 1, "off", keep, "plugins", policy)
    # Spent at the request's second segment, 0.2 s after its first: before the response.
    assert ref[0][0]["verdict_offset"] == {"c2s": 27, "s2c": 0}
    for mode in MODES[1:]:
        assert run(_batches(fr, 1), 1, mode, keep, "plugins", policy) == ref, mode


@pytest.mark.parametrize("before", [1, 2, 11])
def test_paths_agree_on_a_fin_before_the_stream_start(before):
    """A FIN whose sequence number lies before the stream's first byte has a negative offset;
    in C that offset is no FIN at all only if it is C's "no FIN" marker, which it must not be.
    The receiver has read past it, so it closes nothing (RFC 9293 3.10.7.4: not acceptable)."""
    cv = Conversation(cport=4444)
    segs = cv.handshake() + [cv.c(b"hello"), cv.ack("s")]
    segs.append(cv.seg("c", seq=cv.seq_of("c", -before), flags="FA"))
    segs += [cv.s(b"world"), cv.ack("c"), cv.fin("s"), cv.ack("c")]
    fr = frames(segs)
    ref = reconstruct(fr, fastpath="off")
    assert [r["close"] for r in ref.records] == ["eof"]
    assert ref.stats["anomalies"] == {"fin_out_of_range": 1}
    for mode in MODES[1:]:
        got = reconstruct(fr, fastpath=mode)
        assert (got.records, got.stats) == (ref.records, ref.stats), mode


@pytest.mark.parametrize("payload", [b"again", b""])
def test_paths_agree_when_a_connection_resumes_after_its_timeout(payload):
    """The frame after a long pause first times the idle connection out (as segment() does)
    and only then finds its own connection: the Python fast path used to find the connection
    first and crash moving it in a timeout list it had just left."""
    cv = Conversation(cport=5555)
    segs = cv.handshake() + [cv.c(b"hello"), cv.ack("s")]
    cv.t += 10
    segs += [cv.c(payload) if payload else cv.ack("c"), cv.ack("s"), cv.fin("c"), cv.fin("s")]
    fr = frames(segs)
    ref = reconstruct(fr, fastpath="off", timeout_established=5)
    assert ref.records[0]["close"] == "timeout"
    for mode in MODES[1:]:
        got = reconstruct(fr, fastpath=mode, timeout_established=5)
        assert (got.records, got.stats) == (ref.records, ref.stats), mode


def _synack_cases() -> dict[str, list]:
    """Handshakes whose SYN-ACK C takes (TCP options of every kind the record reports) or
    must hand back (anything but a bare SYN-ACK that acknowledges the SYN exactly)."""

    def rest(cv: Conversation) -> list:
        return [cv.ack("c"), cv.c(b"GET / HTTP/1.0\r\n\r\n"), cv.ack("s"),
                cv.s(b"HTTP/1.0 200 OK\r\n\r\nhi"), cv.ack("c"), cv.fin("c"), cv.fin("s"),
                cv.ack("c")]  # fmt: skip

    cases: dict[str, list] = {}
    for port, (name, syn, sa) in enumerate([
        ("all options", {"wscale": 7, "ts": (100, 0)}, {"wscale": 9, "ts": (900, 100)}),
        ("no options", {"mss": None, "sack_ok": False}, {"mss": None, "sack_ok": False}),
        ("scale one side", {"wscale": 7}, {}),
        ("scale over 14", {"wscale": 15}, {"wscale": 30}),
        ("timestamps one side", {"ts": (5, 0)}, {}),
        ("timestamps server only", {}, {"ts": (5, 0)}),
    ], start=6000):  # fmt: skip
        cv = Conversation(cport=port)
        cases[name] = [cv.syn(**syn), cv.synack(**sa), *rest(cv)]
    # The server's scale where the client has none: not in force, so its small window bites.
    cv = Conversation(cport=6100)
    cases["scale server only"] = [
        cv.syn(), cv.synack(wscale=9), cv.ack("c"), cv.ack("s", win=100), cv.c(b"x" * 100),
        cv.c(b"y" * 400), cv.ack("s", ack=cv.seq_of("c", 100), win=100),
    ]  # fmt: skip

    def ts_opening(cv: Conversation) -> list:
        """A handshake with timestamps, the client's "first" and the server's ACK of it (the
        server's TS.Recent for the client: 102)."""
        return [
            cv.syn(ts=(100, 0)), cv.synack(ts=(900, 100)),
            cv.ack("c", options=opt_timestamps(101, 900)),
            cv.c(b"first", options=opt_timestamps(102, 900)),
            cv.ack("s", options=opt_timestamps(901, 102)),
        ]  # fmt: skip

    # Timestamps in force: a stale TSval after the handshake is dropped (PAWS).
    cv = Conversation(cport=6101)
    cases["paws after handshake"] = [
        *ts_opening(cv),
        cv.c(b"stale", options=opt_timestamps(50, 901)),
        cv.ack("s", options=opt_timestamps(902, 102)),
    ]  # fmt: skip
    # Stale by PAWS where the capture is, taken by the receiver (its ACK covers it): held
    # tentatively, then in the stream; then a stale FIN, taken the same way.
    cv = Conversation(cport=6102)
    cases["paws stale, then acknowledged"] = [
        *ts_opening(cv),
        cv.data("c", b"again", rel=5, options=opt_timestamps(150, 901)),
        cv.data("c", b"later", rel=10, options=opt_timestamps(103, 901)),
        cv.ack("s", options=opt_timestamps(902, 103)),
        cv.fin("c", options=opt_timestamps(104, 902)),
        cv.ack("s", options=opt_timestamps(903, 104)),
    ]  # fmt: skip
    cv = Conversation(cport=6200)
    cut = cv.seg("s", seq=cv.isn["s"], flags="SA", options=b"\x02\x04\x05")  # cut short
    cases["malformed options"] = [cv.syn(), cut, *rest(cv)]
    cv = Conversation(cport=6201)
    wrong = cv.seg("s", seq=cv.isn["s"], flags="SA", ack=cv.isn["c"] + 7)
    cases["wrong ack"] = [cv.syn(), wrong, cv.synack(), *rest(cv)]
    cv = Conversation(cport=6202)
    cases["retransmitted"] = [cv.syn(), cv.synack(), cv.synack(), *rest(cv)]
    cv = Conversation(cport=6203)
    other = Conversation(cport=6203, sisn=777)
    other.syn()
    cases["competing"] = [cv.syn(), other.synack(), cv.synack(), *rest(cv)]
    cv = Conversation(cport=6204)
    cases["with data"] = [cv.syn(), cv.synack(data=b"early"), *rest(cv)]
    cv = Conversation(cport=6205)
    cases["syn again first"] = [cv.syn(), cv.syn(), cv.synack(), *rest(cv)]
    cv = Conversation(cport=6206)
    cases["syn-ack with psh"] = [cv.syn(), cv.synack(), *rest(cv)]
    cases["syn-ack with psh"][1].flags = "SAP"
    return cases


# SYN-ACKs the general path gets in each case (C takes every other): those C hands back (a
# wrong ACK, data, options cut short, another flag), and any after the first (after a wrong
# one the server has been seen: the connection stays with Python).
IN_PYTHON = {"malformed options": 1, "wrong ack": 2, "with data": 1, "syn-ack with psh": 1,
             "retransmitted": 1, "competing": 1}  # fmt: skip


@pytest.mark.parametrize("name", list(_synack_cases()))
def test_paths_agree_on_every_synack(name, monkeypatch):
    """C takes the server's SYN-ACK of a connection it carries from its SYN; what the record
    says of the handshake (mss, scaling, timestamps, SACK) and everything after must be what
    the general path says, for SYN-ACKs it takes and those it hands back."""
    fr = frames(_synack_cases()[name])
    ref = reconstruct(fr, fastpath="off")
    assert ref.records
    in_python: list[int] = []
    segment = Tracker.segment

    def counting(self, ts, seg):  # the SYN-ACKs that reach the general path
        if seg.flags & 0x12 == 0x12:
            in_python.append(seg.seq)
        return segment(self, ts, seg)

    monkeypatch.setattr(Tracker, "segment", counting)
    for mode in MODES[1:]:
        got = reconstruct(fr, fastpath=mode)
        assert (got.records, got.stats) == (ref.records, ref.stats), mode
        # The first SYN-ACK is C's unless it is one C must hand back; a second one is
        # Python's (a retransmission, or a competing one with another ISN).
        assert len(in_python) == IN_PYTHON.get(name, 0), in_python
        in_python.clear()


def _reorder_cases() -> dict[str, tuple[list, dict]]:
    """Segments past a hole, which C holds (one per direction, where the sink only hashes),
    and everything that must hand such a flow back to Python: an ACK past the hole, a FIN,
    data reaching into the piece, a second piece, the caps."""

    def start(port: int) -> Conversation:
        return Conversation(cport=port)

    def close(cv: Conversation) -> list:
        return [cv.ack("s"), cv.fin("c"), cv.fin("s"), cv.ack("c")]

    cases: dict[str, tuple[list, dict]] = {}
    cv = start(7000)
    hs = cv.handshake()
    a, b, c = cv.c(b"a" * 700), cv.c(b"b" * 700), cv.c(b"c" * 700)
    cases["swapped"] = ([*hs, a, c, cv.ack("s", ack=cv.seq_of("c", 700)), b,
                         *close(cv)], {})  # fmt: skip
    cv = start(7001)
    hs = cv.handshake()
    segs = [cv.c(bytes([65 + k]) * 500) for k in range(6)]
    cases["two holes, one at a time"] = (
        [*hs, segs[0], segs[2], segs[1], segs[4], segs[3], segs[5], *close(cv)],
        {},
    )
    cases["still held at the end"] = ([*hs, segs[0], segs[2], cv.ack("s")], {})
    cv = start(7002)
    hs = cv.handshake()
    a, b, c = cv.c(b"a" * 700), cv.c(b"b" * 700), cv.c(b"c" * 700)
    past = cv.ack("s", ack=cv.seq_of("c", 2100))
    cases["ack past the hole"] = ([*hs, a, c, past, past, past, past, b,
                                   *close(cv)], {})  # fmt: skip
    cv = start(7003)
    hs = cv.handshake()
    a, b = cv.c(b"a" * 700), cv.c(b"b" * 700)
    cases["fin past the hole"] = ([*hs, a, cv.fin("c"), b, cv.fin("s"),
                                   cv.ack("c")], {})  # fmt: skip
    cv = start(7004)
    hs = cv.handshake()
    a, b, c = cv.c(b"a" * 700), cv.c(b"b" * 700), cv.c(b"c" * 700)
    into = cv.c(b"B" * 1000, rel=700, advance=False)
    cases["filler reaches into the piece"] = ([*hs, a, c, into, b, *close(cv)], {})
    cv = start(7005)
    hs = cv.handshake()
    a, b, c, d = (cv.c(bytes([97 + k]) * 400) for k in range(4))
    cases["a second piece"] = ([*hs, a, c, d, b, *close(cv)], {})
    cv = start(7006)
    hs = cv.handshake()
    a, b, c = cv.c(b"a" * 700), cv.c(b"b" * 700), cv.c(b"c" * 700)
    cases["retransmission while held"] = ([*hs, a, c, a, b, *close(cv)], {})
    cv = start(7007)
    hs = cv.handshake()
    a, b, c = cv.c(b"a" * 700), cv.c(b"b" * 700), cv.c(b"c" * 700)
    cases["rst while held"] = ([*hs, a, c, cv.rst("c")], {})
    cv = start(7008)
    hs = cv.handshake()
    a, b, c = cv.c(b"a" * 700), cv.c(b"b" * 700), cv.c(b"c" * 700)
    cases["piece over the per-direction cap"] = (
        [*hs, a, c, b, *close(cv)],
        {"max_flow_buffer": 512},
    )
    # Many connections, each holding a piece, under a global cap that forces the stalest:
    # which ones are forced (their holes made gaps) must not depend on who held the piece.
    mix: list = []
    for k in range(8):
        cv = start(7100 + k)
        hs = cv.handshake()
        a, b, c = cv.c(b"a" * 600), cv.c(b"b" * 600), cv.c(b"c" * 600)
        cv2 = start(7200 + k)
        hs2 = cv2.handshake()
        x, y, z = cv2.s(b"x" * 300), cv2.s(b"y" * 300), cv2.s(b"z" * 300)
        mix += [*hs, *hs2, a, c, cv2.ack("c"), x, z]
        if k % 3 == 0:
            mix += [b, y]
    cases["global cap forces the stalest"] = (mix, {"max_buffer": 3000})
    cases["global cap, pieces everywhere"] = (mix, {"max_buffer": 8000})
    return cases


@pytest.mark.parametrize("name", list(_reorder_cases()))
def test_paths_agree_when_segments_come_past_a_hole(name):
    segs, options = _reorder_cases()[name]
    fr = frames(segs)
    ref = reconstruct(fr, fastpath="off", **options)
    assert ref.records
    for mode in MODES[1:]:
        got = reconstruct(fr, fastpath=mode, **options)
        assert (got.records, got.stats) == (ref.records, ref.stats), mode


@pytest.mark.skipif(not fastpath.AVAILABLE, reason="the C data plane is not built")
def test_c_holds_a_segment_past_a_hole(monkeypatch):
    """The reordered segment and the one that fills the hole are C's: Python sees only the
    handshake's SYN (and nothing of a capture's usual reordering)."""
    segs, _ = _reorder_cases()["swapped"]
    seen: list[int] = []
    segment = Tracker.segment

    def counting(self, ts, seg):
        seen.append(seg.flags)
        return segment(self, ts, seg)

    monkeypatch.setattr(Tracker, "segment", counting)
    got = reconstruct(frames(segs), fastpath="c")
    assert got.records[0]["c2s"]["bytes"] == 2100 and got.records[0]["c2s"]["gap_count"] == 0
    assert seen == [0x02], seen


@pytest.mark.parametrize("layout", ["nop nop first", "timestamp first"])
def test_the_last_of_two_timestamp_options_is_the_one_paws_reads(layout):
    """Linux's tcp_parse_options keeps the last timestamp option of a segment. Both paths read
    the same one whatever the layout (C used to take the first, and the general path the
    first only when the list began NOP NOP): here the last is stale, so PAWS drops it."""
    new, old = opt_timestamps(103, 901), opt_timestamps(50, 901)
    twice = new + b"\x01\x01" + old if layout == "nop nop first" else new + old + b"\x01" * 4
    cv = Conversation(cport=7300)
    segs = [cv.syn(ts=(100, 0)), cv.synack(ts=(900, 100)),
            cv.ack("c", options=opt_timestamps(101, 900)),
            cv.c(b"first", options=opt_timestamps(102, 900)),
            cv.ack("s", options=opt_timestamps(901, 102)),
            cv.c(b"twice", options=twice),
            cv.ack("s", options=opt_timestamps(902, 102))]  # fmt: skip
    fr = frames(segs)
    ref = reconstruct(fr, fastpath="off")
    assert ref.records[0]["anomalies"]["paws_rejected"] == 1
    for mode in MODES[1:]:
        got = reconstruct(fr, fastpath=mode)
        assert (got.records, got.stats) == (ref.records, ref.stats), mode


# -- flows C opens itself at the client's SYN -----------------------------------------------


def _born_cases(v6: bool = False) -> dict[str, tuple[list, dict]]:
    """SYNs C opens a flow at (bare, ECN, every option), those it leaves to Python (data on
    the SYN, options cut short, a SYN on a tuple Python tracks: retransmitted, reused, the
    peer's own), and the caps: a SYN flood beside real connections where the flow cap evicts
    and the half-open deferral bites, and the memory cap. ``v6``: the same over IPv6."""

    def Conversation(client: str = "10.0.0.1", **kw) -> _Conversation:  # noqa: N802
        if v6:  # the IPv4 address as the last 32 bits of an IPv6 one
            return _Conversation(client=f"fd00::{client}", server="fd00::10.0.0.2", **kw)
        return _Conversation(client=client, **kw)

    def rest(cv: Conversation) -> list:
        return [cv.synack(), cv.ack("c"), cv.c(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n"),
                cv.ack("s"), cv.s(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"),
                cv.ack("c"), cv.fin("c"), cv.fin("s"), cv.ack("c")]  # fmt: skip

    cases: dict[str, tuple[list, dict]] = {}
    # The first TCP frame of a run is always Python's (it starts the timeout clock): a
    # stray ACK of no connection goes first in each case.
    stray = Conversation(cport=7999, t0=999.5).ack("c")
    cv = Conversation(cport=8000)
    cases["plain"] = ([cv.syn(), *rest(cv)], {})
    cv = Conversation(cport=8001)
    ecn = cv.syn()
    ecn.flags = "SEC"
    cases["ecn"] = ([ecn, *rest(cv)], {})
    cv = Conversation(cport=8002)
    cases["options"] = ([cv.syn(wscale=15, ts=(100, 0)), cv.synack(wscale=7, ts=(9, 100)),
                         cv.ack("c"), cv.c(b"x" * 300), cv.ack("s"), cv.fin("c"),
                         cv.fin("s"), cv.ack("c")], {})  # fmt: skip
    cv = Conversation(cport=8003)
    cut = cv.seg("c", seq=cv.isn["c"], flags="S", options=b"\x02\x04\x05")
    cases["options cut short"] = ([cut, *rest(cv)], {})
    cv = Conversation(cport=8004)
    cases["data on the syn"] = ([cv.syn(data=b"tfo"), *rest(cv)], {})
    cv = Conversation(cport=8005)
    cases["retransmitted"] = ([cv.syn(), cv.syn(), *rest(cv)], {})
    # Python tracks the tuple (and C does not carry it): a bare SYN on it is Python's.
    cv = Conversation(cport=8010)
    tfo = cv.syn(data=b"tfo")
    cases["again without its data"] = ([tfo, cv.syn(), *rest(cv)], {})
    cv = Conversation(cport=8011)
    late = Conversation(cport=8011, cisn=31337)
    cases["after a mid-stream pickup"] = ([cv.c(b"no handshake seen"), late.syn(),
                                           *rest(late)], {})  # fmt: skip
    cv = Conversation(cport=8006)
    other = Conversation(cport=8006, cisn=99999)
    cases["another isn first"] = ([cv.syn(), other.syn(), *rest(other)], {})
    cv = Conversation(cport=8007)
    cases["simultaneous open"] = ([cv.syn(), cv.syn(side="s"), *rest(cv)], {})
    cv = Conversation(cport=8008)
    cases["refused"] = ([cv.syn(), cv.rst("s", seq=0, ack=cv.seq_of("c", 0))], {})
    reuse: list = []
    for k in range(3):  # the tuple again after each record, inside the closed memory
        cv = Conversation(cport=8009, cisn=1000 + 7919 * k, t0=1000.0 + 2 * k)
        reuse += [cv.syn(), *rest(cv), cv.ack("s", at=cv.t + 1.2)]  # and a straggler
    cases["reused after close"] = (reuse, {"timeout_closing": 0.5, "closed_memory": 60.0})
    rng = random.Random(11)
    flood: list = []
    for k in range(60):
        cv = Conversation(cport=20000 + k, t0=1000.0 + k * 0.05)
        flood += [cv.syn(), *rest(cv)]
    for k in range(3000):
        cv = Conversation(client=f"10.9.{k // 250}.{k % 250 + 1}", cport=1024 + k,
                          cisn=rng.randrange(2**32), t0=1000.0 + rng.random() * 3)  # fmt: skip
        flood.append(cv.syn())
    flood.sort(key=lambda s: s.ts)
    cases["syn flood, flow cap"] = (flood, {"max_flows": 400})
    cases["syn flood, memory cap"] = (flood, {"max_flow_memory": 2**20})
    cases["syn flood, no caps biting"] = (flood, {})
    return {name: ([stray, *segs], options) for name, (segs, options) in cases.items()}


def _run_counting(fr: list, mode: str, inspect: Inspect, **options) -> tuple[list, dict, int]:
    records: list[dict] = []
    engine = Engine(
        1, Options.from_kwargs(fastpath=mode, **options), records.append,
        plugins=builtin_detectors() if inspect else None, bypass=inspect == "bypass",
    )  # fmt: skip
    for batch in _batches(fr, 1):
        engine.feed_batch(batch)
    engine.finish()
    fast = engine.tracker.fast
    return sorted(records, key=lambda r: r["id"]), engine.stats(), fast.opened if fast else 0


# Flows C opens in each case (with no inspection; with the detectors, the first SYN to a
# server port is Python's, which learns the port's detector order then). A tuple remembered
# closed is claimed (Tracker.light_on): C opens no flow on it, so a reused one is Python's.
OPENED_IN_C = {"plain": 1, "ecn": 1, "options": 1, "options cut short": 0,
               "data on the syn": 0, "retransmitted": 1, "again without its data": 0,
               "after a mid-stream pickup": 0, "another isn first": 1,
               "simultaneous open": 1, "refused": 1, "reused after close": 1}  # fmt: skip


# Frame layouts C parses itself (_fast.c parse_frame): untagged, one tag (its priority bits
# set: not part of the key), QinQ; IPv4 and IPv6. Three tags are Python's alone.
LAYOUTS = {
    "v4": (False, []),
    "v4-dot1q": (False, [300]),
    "v4-qinq": (False, [(0x88A8, 200), (0x8100, 100)]),
    "v6": (True, []),
    "v6-qinq": (True, [(0x88A8, 7), (0x8100, 4095)]),
    "v4-three-tags": (False, [10, 20, 30]),
}


def _layout_frames(segs: list, layout: str) -> list:
    fr = frames(segs, vlans=LAYOUTS[layout][1])
    if layout == "v4-dot1q":  # priority 7 in the tag's top bits: C keys the 12-bit ID only
        fr = [(ts, f[:14] + bytes((f[14] | 0xE0,)) + f[15:]) for ts, f in fr]
    return fr


@pytest.mark.parametrize(
    ("name", "layout", "inspect"),
    [
        (name, layout, inspect)
        for name in _born_cases()
        for layout in LAYOUTS
        for inspect in (None, "plugins", "bypass")
        # the flood cases with inspection once (they are long)
        if layout == "v4" or inspect is None or not name.startswith("syn flood")
    ],
)
def test_paths_agree_on_flows_c_opens(name, layout, inspect):
    """Every record, id and count the same whether C or Python opened the flow, and C
    opens exactly the flows it may, whatever the tags and address family C parses."""
    if not fastpath.AVAILABLE:
        pytest.skip("the C fast path is not built")
    segs, options = _born_cases(LAYOUTS[layout][0])[name]
    fr = _layout_frames(segs, layout)
    ref, ref_stats, _ = _run_counting(fr, "off", inspect, **options)
    got, stats, opened = _run_counting(fr, "c", inspect, **options)
    assert stats == ref_stats
    assert got == ref
    if name in OPENED_IN_C and inspect is None:
        assert opened == (0 if layout == "v4-three-tags" else OPENED_IN_C[name])
    if name == "reused after close":
        # After the first close the tuple is Python's (its closed memory) until it forgets.
        assert ref_stats["stragglers"] == 3 and len(ref) == 3
    if name.startswith("syn flood"):
        # The deferral of half-open entries (and the caps) stop C opening more: some SYNs
        # are Python's, and with a cap every eviction is counted alike on both paths.
        assert ref_stats["connections"] == 3060
        assert (0 < opened < 3060) if layout != "v4-three-tags" else opened == 0, opened
        if "cap" in name and "no caps" not in name:
            assert ref_stats["evicted"] > 0


def _rst_cases() -> dict[str, tuple[list, bool]]:
    """RSTs on a connection C carries, each after a handshake and an exchange: (segments,
    whether C takes the RST itself). C takes a RST-ACK without data at exactly RCV.NXT or
    SND.NXT (RFC 5961 §3.2) before both FINs, and any on a bypassed connection; every other
    one (in the window, outside it, after both FINs, with data, without ACK, or anything
    after the reset) is Python's, which counts its anomaly."""
    mod = 2**32

    def opened(cport: int) -> tuple[_Conversation, list]:
        cv = Conversation(cport=cport)
        return cv, [
            cv.syn(), cv.synack(), cv.ack("c"), cv.c(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n"),
            cv.ack("s"), cv.s(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"), cv.ack("c"),
        ]  # fmt: skip

    cases: dict[str, tuple[list, bool]] = {}
    cv, segs = opened(8100)
    cases["client's at its SND.NXT"] = ([*segs, cv.rst("c")], True)
    cv, segs = opened(8101)
    cases["server's at its SND.NXT"] = ([*segs, cv.rst("s")], True)
    cv, segs = opened(8102)
    acked = cv.next_seq("s")  # the client's RCV.NXT: it does not ACK what follows
    cases["server's at RCV.NXT, behind its SND.NXT"] = (
        [*segs, cv.s(b"more"), cv.rst("s", seq=acked)], True
    )  # fmt: skip
    cv, segs = opened(8103)
    cases["after its own FIN"] = ([*segs, cv.fin("c"), cv.ack("s"), cv.rst("c")], True)
    cv = Conversation(cport=8104)
    cases["in SYN-RECEIVED"] = ([cv.syn(), cv.synack(), cv.rst("c")], True)
    cv, segs = opened(8105)
    cases["in the window, inexact"] = ([*segs, cv.rst("s", seq=cv.next_seq("s") + 100)], False)
    cv, segs = opened(8106)
    far = (cv.next_seq("s") + 2**31) % mod
    cases["outside the window"] = ([*segs, cv.rst("s", seq=far)], False)
    cv, segs = opened(8107)
    cases["after both FINs"] = (
        [*segs, cv.fin("c"), cv.fin("s"), cv.ack("c"), cv.rst("c")], False
    )  # fmt: skip
    cv, segs = opened(8108)
    cases["with data"] = ([*segs, cv.rst("c", payload=b"diagnostic")], False)
    cv, segs = opened(8109)
    cases["without ACK"] = ([*segs, cv.rst("c", flags="R")], False)
    cv, segs = opened(8110)
    cases["then more"] = ([*segs, cv.rst("c"), cv.ack("s"), cv.s(b"late"), cv.rst("c")], False)
    stray = Conversation(cport=7999, t0=999.5).ack("c")  # the run's first frame is Python's
    return {name: ([stray, *segs], taken) for name, (segs, taken) in cases.items()}


@pytest.mark.skipif(not fastpath.AVAILABLE, reason="the C data plane is not built")
@pytest.mark.parametrize("inspect", [None, "plugins", "bypass"])
@pytest.mark.parametrize("name", list(_rst_cases()))
def test_paths_agree_on_rsts(name, inspect, monkeypatch):
    """Every record and count the same whether C or Python took the RST; and C takes the
    ones it may (no RST reaches Python's Tracker.segment in those cases)."""
    segs, taken = _rst_cases()[name]
    fr = frames(segs)
    ref, ref_stats, _ = _run_counting(fr, "off", inspect)
    python_flags: list[int] = []
    segment = Tracker.segment

    def counted(self, ts, seg):  # the frames Python handles
        python_flags.append(seg.flags)
        return segment(self, ts, seg)

    monkeypatch.setattr(Tracker, "segment", counted)
    got, stats, _ = _run_counting(fr, "c", inspect)
    assert stats == ref_stats
    assert got == ref
    rsts = sum(1 for f in python_flags if f & 0x04)
    if taken or (inspect == "bypass" and name not in ("with data", "without ACK")):
        assert rsts == 0, (name, rsts)
    else:
        assert rsts > 0, name  # Python's, and the anomaly it counts is on both paths


@pytest.mark.parametrize("layout", ["v4-qinq", "v6-qinq"])
def test_paths_agree_on_tagged_flows_with_ignore_vlan(layout):
    """--ignore-vlan: the tracker's keys hold no tags, so C takes no tagged frame (its key
    would hold them) and opens no flow; records and counts are the general path's, the tags
    reported."""
    if not fastpath.AVAILABLE:
        pytest.skip("the C fast path is not built")
    segs, _ = _born_cases(LAYOUTS[layout][0])["plain"]
    fr = _layout_frames(segs, layout)
    ref, ref_stats, _ = _run_counting(fr, "off", None, ignore_vlan=True)
    got, stats, opened = _run_counting(fr, "c", None, ignore_vlan=True)
    assert (got, stats) == (ref, ref_stats)
    assert opened == 0 and ref[-1]["vlan"] == [vid for _, vid in LAYOUTS[layout][1]]


@st.composite
def _mutated_layouts(draw):  # type: ignore[no-untyped-def]
    """A short connection in one of the layouts C parses, some of its frames' headers
    mutated where parse_frame reads (tags and their TPIDs, the ethertype, the IP version,
    header length, protocol, lengths, fragment bits, addresses, the TCP header length) or
    cut short: whatever C makes of them must be what the decoder makes."""
    layout = draw(st.sampled_from(sorted(LAYOUTS)))
    segs, _ = _born_cases(LAYOUTS[layout][0])["plain"]
    fr = _layout_frames(segs, layout)
    v6, tags = LAYOUTS[layout]
    l3 = 14 + 4 * len(tags)
    tcp = l3 + (40 if v6 else 20)
    # the bytes parse_frame reads: TPIDs and tags, the ethertype, the IP header's version,
    # lengths, fragment bits, protocol or next header, the TCP header's length
    fields = [*range(12, l3), l3, *(range(l3 + 4, l3 + 8) if v6 else range(l3 + 2, l3 + 10)),
              tcp + 12]  # fmt: skip
    for _ in range(draw(st.integers(1, 6))):
        k = draw(st.integers(1, len(fr) - 1))  # the stray first frame stays whole
        ts, f = fr[k]
        how = draw(st.sampled_from(["bit", "byte", "cut"]))
        if how == "cut":
            f = f[: draw(st.integers(14, len(f)))]
        else:
            at = draw(st.sampled_from([a for a in fields if a < len(f)]))
            value = (
                f[at] ^ (1 << draw(st.integers(0, 7)))
                if how == "bit"
                else draw(st.integers(0, 255))
            )
            f = f[:at] + bytes((value,)) + f[at + 1 :]
        fr[k] = (ts, f)
    return fr


@settings(max_examples=300)
@given(_mutated_layouts())
def test_paths_agree_on_mutated_headers_of_every_layout(fr):
    if not fastpath.AVAILABLE:
        pytest.skip("the C fast path is not built")
    ref = _run_counting(fr, "off", None)[:2]
    assert _run_counting(fr, "c", None)[:2] == ref


def _c_hashes(path: Path) -> list[tuple[str, str]]:
    records, _ = replay(path, "c")
    return [(r["c2s"]["sha256"], r["s2c"]["sha256"]) for r in records]


def test_hashing_thread_survives_fork(tmp_path):
    """C hashes the streams on a second thread (_hashq.c). A process that forks after using
    it (watch --workers forks its workers) gets a child that hashes alike, and the parent
    goes on hashing: every digest the general path's."""
    if not fastpath.AVAILABLE:
        pytest.skip("the C fast path is not built")
    import os

    path = CAPTURES[0]
    ref = [(r["c2s"]["sha256"], r["s2c"]["sha256"]) for r in replay(path, "off")[0]]
    assert _c_hashes(path) == ref  # the worker runs in this process now
    pid = os.fork()
    if pid == 0:  # the child: hashes, then says whether they were right
        ok = _c_hashes(path) == ref
        os._exit(0 if ok else 1)
    again = _c_hashes(path)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0 and os.WIFEXITED(status)
    assert again == ref


ENDPOINT_FIELDS = ("isn", "base", "syn", "fin_off", "seen_end", "mss", "wscale",
                   "sack_permitted", "ts_enabled", "mac", "last_ack", "packets",
                   "payload_bytes", "ttl", "window", "edge", "max_wnd", "ts_recent")  # fmt: skip
STREAM_FIELDS = ("nxt", "acked", "delivered", "retransmitted", "gap_count", "gap_bytes")


def _ended(
    batches: Iterable[Batch], linktype: int, mode: str, look: bool, inspect: Inspect,
    early: bool = False,
):  # fmt: skip
    """Run the batches; ``look``: read each connection's endpoints as it ends (the live
    view's on_closing does), which makes them for one C carried without them; ``early``:
    read those of every connection open after each batch (so they are made while C still
    carries it). Returns the records, what was read, and how many connections C ended
    plain and had their sinks made."""
    records: list[dict] = []
    engine = Engine(
        linktype, Options(fastpath=mode), records.append,
        plugins=builtin_detectors() if inspect else None, bypass=inspect == "bypass",
    )  # fmt: skip
    seen: dict[int, tuple] = {}

    def closing(conn) -> None:
        seen[conn.id] = tuple(
            (*(getattr(ep, f) for f in ENDPOINT_FIELDS),
             *(getattr(ep.stream, f) for f in STREAM_FIELDS))
            for ep in (conn.c, conn.s)
        )  # fmt: skip

    if look:
        engine.on_closing = closing
    if early:
        engine.list_connections()  # no light flows: each has its connection from its SYN
    for batch in batches:
        engine.feed_batch(batch)
        if early:
            for conn, _from_client in list(engine.tracker.table.values()):
                assert conn.c.packets >= 0 and conn.s.packets >= 0
                if engine.inspection is not None and not engine.inspection.reads(conn):
                    # Decided (by C, maybe before its sinks were made): they hand the
                    # inspection nothing more, or C would hand back every later payload.
                    assert all(sink.inspect is None for sink in conn.sinks())
    engine.finish()
    fast = engine.tracker.fast
    counts = (fast.ended_plain, fast.sinks_built, fast.light_ended) if fast else (0, 0, 0)
    return records, seen, counts


@pytest.mark.skipif(not fastpath.AVAILABLE, reason="the C data plane is not built")
@pytest.mark.parametrize("traffic", ["many-short.pcap", "first-bytes", "first-bytes-bypass"])
def test_connections_c_carried_to_their_end_are_recorded_from_its_numbers(traffic):
    """A connection C opened and carried to its end unsurprised gets no endpoint objects:
    its record is made from C's numbers (not vacuous: most of these end so). Its record is
    the general path's; and where something reads its endpoints as it ends (the live view),
    they are made then, from the same numbers, as the general path leaves them."""
    if traffic.endswith(".pcap"):
        source = PcapFile(str(REPO / "captures" / traffic))
        linktype, inspect = source.linktype, None

        def batches() -> Iterable[Batch]:
            return PcapFile(str(REPO / "captures" / traffic)).batches()
    else:
        fr = _first_bytes_frames(11)
        linktype, inspect = 1, "bypass" if traffic.endswith("bypass") else "plugins"

        def batches() -> Iterable[Batch]:
            return _batches(fr, 1)

    ref, ref_seen, _ = _ended(batches(), linktype, "off", True, inspect)
    plain, _, (ended_plain, built, light) = _ended(batches(), linktype, "c", False, inspect)
    looked, seen, _ = _ended(batches(), linktype, "c", True, inspect)
    early, early_seen, (none_plain, _, none_light) = _ended(
        batches(), linktype, "c", True, inspect, early=True
    )  # fmt: skip
    assert ended_plain >= len(ref) // 2 > 0, (ended_plain, len(ref))
    # Most never had a connection before their end (light flows: Tracker.light_on), and
    # their records come in the same order as the general path's.
    assert light >= len(ref) // 2 and none_light == 0, (light, none_light, len(ref))
    # Nor sinks: only a connection something asked them of (none that ended plain here).
    assert built <= len(ref) - ended_plain, (built, ended_plain, len(ref))
    assert plain == ref and looked == ref and early == ref
    assert seen == ref_seen and early_seen == ref_seen
    assert none_plain == 0  # made early, they end the general way


def test_a_connection_c_opened_has_no_other_attribute_made_on_demand():
    """Only c and s are made when asked for: any other missing attribute is an error, as on
    any object (no recursion, no endpoints made for it)."""
    tracker = Tracker()
    syn = fastpath.SynFacts(1000, 7, 1460, True, True, bytes(6))
    conn = tracker.open_born(1.0, (bytes(12), bytes(12)), syn)
    with pytest.raises(AttributeError):
        _ = conn.no_such_attribute  # type: ignore[attr-defined]
    assert conn.born is not None and not hasattr(conn, "nor_this")
    assert conn.syn_facts() == (1460, None, False) and not conn.has_gaps
    assert conn.c.isn == 1000 and conn.c.wscale == 7 and conn.c.packets == 1
    assert conn.born is None and conn.s.isn is None and conn.s.packets == 0


def test_batch_bytes_are_hashed_before_the_batch_after_next(tmp_path):
    """The hashing thread may still read a batch's bytes after the engine is done with it
    (CFastPath.unload): a batch is good only until the reader is asked for the batch after
    next (pcapfile.Batch), and that is when the bytes must be hashed. Here each batch lies in
    a buffer of its own that is scribbled over as soon as the batch after it was fed: every
    digest is still the general path's."""
    rng = random.Random(5)
    segs = []
    for i in range(12):
        cv = Conversation(cport=41000 + i, t0=1000.0 + i * 1e-4, dt=1e-6)
        segs += cv.handshake()
        for _ in range(40):
            segs += [cv.s(rng.randbytes(1400)), cv.ack("c")]
        segs += [cv.fin("c"), cv.fin("s"), cv.ack("c")]
    segs.sort(key=lambda s: s.ts)
    fr = frames(segs)
    ref = run(_batches(fr, 1, 64), 1, "off")[0]
    records: list[dict] = []
    engine = Engine(1, Options(fastpath="c"), records.append)
    buffers: list[bytearray] = []
    for batch in _batches(fr, 1, 64):
        buf = bytearray(batch.data)
        buffers.append(buf)
        engine.feed_batch(Batch(memoryview(buf), batch.times, batch.offsets, batch.lengths, 1))
        if len(buffers) >= 2:
            buffers[-2][:] = bytes(len(buffers[-2]))  # the reader's next read lands here
    engine.finish()
    assert [r["s2c"]["sha256"] for r in records] == [r["s2c"]["sha256"] for r in ref]
    assert len(ref) == 12 and all(r["s2c"]["bytes"] == 56000 for r in ref)
