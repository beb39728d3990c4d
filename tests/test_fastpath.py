"""The three paths (C fast path, its Python twin, general path only) give identical records
and stats on the same input: real captures, the public corpus, a bench-style mix of thousands
of interleaved connections, and many connections open at once (C table growth and slot reuse).

The rest of the suite can be run through one path with UINET_TAP_FASTPATH=c|python|off
(.ci/run does all three); this file compares them directly, frame for frame.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
from frames import Conversation, frames
from uinet_tap.stack import fastpath

from uinet_tap.api import reconstruct
from uinet_tap.engine import Engine, Options
from uinet_tap.pcapfile import PcapFile

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MODES = ["off", "python"] + (["c"] if fastpath.AVAILABLE else [])


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch):
    monkeypatch.delenv("UINET_TAP_FASTPATH", raising=False)


def replay(path: Path, mode: str, keep: bool = False, **options) -> tuple[list[dict], dict]:
    records: list[dict] = []
    source = PcapFile(str(path))
    engine = Engine(
        source.linktype, Options.from_kwargs(fastpath=mode, **options), records.append,
        keep_streams=keep,
    )  # fmt: skip
    for batch in source.batches():
        engine.feed_batch(batch)
    engine.finish()
    return sorted(records, key=lambda r: r["id"]), engine.stats()


def assert_same_everywhere(path: Path, keep: bool = False, **options) -> None:
    ref_records, ref_stats = replay(path, "off", keep, **options)
    assert ref_records, f"{path.name}: no connections"
    for mode in MODES[1:]:
        records, stats = replay(path, mode, keep, **options)
        assert stats == ref_stats, f"{path.name}: stats differ under {mode}"
        for a, b in zip(records, ref_records, strict=True):
            assert a == b, f"{path.name}: connection {b['id']} differs under {mode}"


CAPTURES = sorted((REPO / "captures").glob("*.pcap"))


@pytest.mark.parametrize("path", CAPTURES, ids=[p.stem for p in CAPTURES])
def test_paths_agree_on_real_captures(path):
    assert_same_everywhere(path)


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


def test_paths_agree_with_timeouts_and_evictions(bench_mix):
    assert_same_everywhere(bench_mix, timeout_established=0.5, max_flows=50)


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
