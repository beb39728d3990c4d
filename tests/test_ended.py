"""The live view's bounded list of ended flows (uinet_tap/ended.py): the row cap and the early
bytes' budget bite oldest first, and say how often; the snapshot maker fills it from a real
capture with the bytes each flow carried."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from uinet_tap.plugins.registry import builtin_detectors

from uinet_tap.ended import EndedFlows
from uinet_tap.engine import Engine, Options
from uinet_tap.inputs import Capture
from uinet_tap.live_view_data import SnapshotMaker
from uinet_tap.snapshot import FlowRow

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tui_driver import base_flows  # noqa: E402

ROW = replace(base_flows()[1], c2s_head=b"", s2c_head=b"")


def row(fid: int, c2s: bytes = b"", s2c: bytes = b"") -> FlowRow:
    return replace(ROW, id=fid, c2s_head=c2s, s2c_head=s2c)


def test_under_the_cap_everything_stays_in_order() -> None:
    ended = EndedFlows(keep=10)
    for i in range(10):
        ended.add(row(i))
    assert [r.id for r in ended.rows()] == list(range(10))
    assert ended.dropped == 0 and len(ended) == 10


def test_the_cap_drops_the_oldest_and_counts_them() -> None:
    ended = EndedFlows(keep=3)
    for i in range(8):
        ended.add(row(i))
    assert [r.id for r in ended.rows()] == [5, 6, 7]
    assert ended.dropped == 5


def test_keep_zero_lists_nothing_but_counts() -> None:
    ended = EndedFlows(keep=0)
    ended.add(row(1))
    assert ended.rows() == () and ended.dropped == 1


def test_the_byte_budget_releases_the_oldest_flows_bytes_first() -> None:
    ended = EndedFlows(keep=100, budget=250)
    for i in range(4):
        ended.add(row(i, bytes([65 + i]) * 60, bytes([97 + i]) * 40))
    rows = {r.id: r for r in ended.rows()}
    assert len(rows) == 4  # every row stays listed
    assert rows[0].c2s_head == b"" and rows[1].c2s_head == b""  # the two oldest released
    assert rows[2].c2s_head == b"C" * 60 and rows[3].s2c_head == b"d" * 40
    assert ended.released == 2 and ended.head_bytes == 200


def test_a_flow_bigger_than_the_budget_keeps_its_row_not_its_bytes() -> None:
    ended = EndedFlows(keep=5, budget=10)
    ended.add(row(1, b"x" * 11))
    (r,) = ended.rows()
    assert r.id == 1 and r.c2s_head == b"" and ended.released == 1 and ended.head_bytes == 0


def test_dropping_a_row_returns_its_bytes_to_the_budget() -> None:
    ended = EndedFlows(keep=2, budget=1000)
    for i in range(5):
        ended.add(row(i, b"y" * 100))
    assert ended.head_bytes == 200 and ended.dropped == 3 and ended.released == 0


def test_rows_is_shared_until_something_is_added() -> None:
    ended = EndedFlows(keep=5)
    ended.add(row(1))
    first = ended.rows()
    assert ended.rows() is first
    ended.add(row(2))
    assert ended.rows() is not first and len(ended.rows()) == 2


CAPTURES = Path(__file__).resolve().parents[1] / "captures"


@pytest.mark.parametrize("mode", ["off", "c"])
def test_the_view_keeps_ended_flows_with_the_bytes_they_carried(mode: str) -> None:
    """many-short.pcap (40 connections) through the engine with the built-in detectors and a
    list capped at 25: the 15 oldest are dropped and counted; each kept row holds the first
    bytes of its streams, as the programs that made the capture sent them (regenerated here
    from their seed, checked against the expected file's SHA-256)."""
    expected = json.loads((CAPTURES / "many-short.expected.json").read_text())["connections"]
    truth = {c["client"]: c for c in expected}
    source = Capture((str(CAPTURES / "many-short.pcap"),), None)
    engine = Engine(source.linktype, Options(fastpath=mode), plugins=builtin_detectors())
    maker = SnapshotMaker(engine, keep_ended=25, keep_bytes=4096)
    engine.on_record = maker.closed_record
    for batch in source.batches():
        engine.feed_batch(batch)
    engine.finish()
    snap = maker.snapshot()
    assert len(snap.closed) == 25 and snap.closed_dropped == 15 and snap.flows_total == 40
    kept = 0
    for row in snap.closed:
        want = truth[row.client]
        idx = int(row.client.rpartition(":")[2]) - 42000
        # what inspection read before its verdict: both sides send at once here, and a
        # client's bytes that come after the verdict on the server's are not read
        assert row.state == "FIN" and (row.c2s_head or row.s2c_head)
        assert row.tcp["handshake"] is True
        for head, side in ((row.c2s_head, "c2s"), (row.s2c_head, "s2c")):
            stream = peer_content("many-short", side, idx, want[side]["bytes"])
            assert hashlib.sha256(stream).hexdigest() == want[side]["sha256"]
            assert len(head) <= 4096 and stream.startswith(head), (row.id, side)
            kept += len(head) > 0
    assert kept >= 25


def peer_content(label: str, direction: str, idx: int, size: int) -> bytes:
    """The bytes captures/peers.py sent (its content(), SHAKE-256 of a label)."""
    return hashlib.shake_256(f"uinet-tap/{label}/{direction}/{idx}".encode()).digest(size)


def test_keep_bytes_cuts_the_heads() -> None:
    source = Capture((str(CAPTURES / "app" / "smtp.pcap"),), None)
    engine = Engine(source.linktype, Options(), plugins=builtin_detectors())
    maker = SnapshotMaker(engine, keep_bytes=16)
    engine.on_record = maker.closed_record
    for batch in source.batches():
        engine.feed_batch(batch)
    engine.finish()
    (row,) = maker.snapshot().closed
    assert row.s2c_head == b"220 localhost Py"  # aiosmtpd 1.4.6's greeting
    assert len(row.c2s_head) == 16 and row.c2s_head.startswith(b"EHLO client.test")


def test_workers_send_what_ended_since_and_the_parent_keeps_one_list() -> None:
    """watch --workers: each worker's snapshot carries only the flows ended since its last
    one (SnapshotMaker incremental); the parent renumbers them apart, as the active flows,
    and keeps them in one bounded list."""
    from uinet_tap.watch import WorkerPool

    source = Capture((str(CAPTURES / "many-short.pcap"),), None)
    engine = Engine(source.linktype, Options(), plugins=builtin_detectors())
    maker = SnapshotMaker(engine, keep_ended=100, incremental=True)
    engine.on_record = maker.closed_record
    for batch in source.batches():
        engine.feed_batch(batch)
    engine.finish()
    first = maker.snapshot()
    assert len(first.closed) == 40 and maker.snapshot().closed == ()  # sent once
    pool = WorkerPool.__new__(WorkerPool)  # the merge alone, without capture processes
    pool.procs = [None, None]  # type: ignore[list-item]
    pool.snapshots = {}
    pool.ended = EndedFlows(keep=50)
    pool._handle("snapshot", 0, first)
    pool._handle("snapshot", 1, first)  # the same ids from another worker: kept apart
    merged = pool.snapshot()
    assert len(merged.closed) == 50 and merged.closed_dropped == 30
    ids = [r.id for r in merged.closed]
    assert sorted(i for i in ids if i % 2) == list(range(1, 80, 2))  # worker 1's: 2 x id + 1
    assert len([i for i in ids if i % 2 == 0]) == 10  # worker 0's 10 last; its oldest dropped
    assert merged.flows_total == 80
