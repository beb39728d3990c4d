"""The live view's bounded list of ended flows (uinet_tap/ended.py): the row cap and the early
bytes' budget bite oldest first, and say how often."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from uinet_tap.ended import EndedFlows
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
