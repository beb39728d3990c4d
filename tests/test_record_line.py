"""The record of a light flow that ended plain, written by C as its JSON line (stack/_record.c,
Engine.on_line), is byte for byte what orjson writes of records.py's object: on flows built
field by field (every key shape, time, option and number, and the cases C leaves to Python),
and through replay's writer on every shipped capture, the public corpus and first bytes of
every shape C detects."""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Iterable
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fastpath import _first_bytes_frames
from uinet_tap.plugins.registry import builtin_detectors
from uinet_tap.stack import fastpath
from uinet_tap.stack.events import CloseReason

from uinet_tap.api import _batches
from uinet_tap.cli import _RecordWriter
from uinet_tap.engine import Engine, Options
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
    return out


def _read(path: Path) -> Iterable[Batch]:
    return PcapFile(str(path)).batches()


def _replay(
    linktype: int, batches: Iterable[Batch], lines: bool, inspect: str | None
) -> tuple[bytes, int]:
    """What replay's writer writes of the input (``lines``: as the CLI wires it, records C
    writes go as they are), and how many records went as lines."""
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

        engine.on_line = line
    for batch in batches:
        engine.feed_batch(batch)
    engine.finish()
    return out.getvalue(), n


@pytest.mark.parametrize("inspect", [None, "plugins", "bypass"])
def test_replay_writes_the_same_records_with_c_lines(inspect):
    made = 0
    for name, linktype, batches in _inputs():
        want, none = _replay(linktype, batches(), False, inspect)
        got, n = _replay(linktype, batches(), True, inspect)
        assert none == 0
        assert got == want, name
        made += n
    assert made >= 20, made  # not vacuous: light flows' records went as lines


def test_a_record_orjson_refuses_is_converted_as_before(monkeypatch):
    """A value that is not JSON in what Python adds to C's line (a bug's): the record goes
    the object's way, converted by the writer as any record is, the same bytes either way."""
    name, linktype, batches = next(i for i in _inputs() if i[0] == "first-bytes")
    _, lines = _replay(linktype, batches(), True, "plugins")
    real = Engine._transactions

    def odd(follower, c2s: int, s2c: int) -> dict:
        out = real(follower, c2s, s2c)
        return {**out, "odd": {b"not a str key": 1}} if out else out

    monkeypatch.setattr(Engine, "_transactions", staticmethod(odd))
    want, _ = _replay(linktype, batches(), False, "plugins")
    got, fewer = _replay(linktype, batches(), True, "plugins")
    assert got == want and b'"odd":{"not a str key":1}' in got
    assert fewer < lines, (fewer, lines)  # those with transactions went the object's way
