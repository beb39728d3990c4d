"""stack/bridge.py, the inline bump's flow modes, without I/O: every transition, what each
mode makes of a frame, and the sequence numbers of the RSTs (RFC 5961 §3.2: a RST is taken
only at exactly the sequence number its receiver expects next)."""

from __future__ import annotations

from dataclasses import dataclass

from uinet_tap.stack.bridge import (
    BLOCK_ANSWERS,
    TOMBSTONE,
    Act,
    Bridge,
    FlowMode,
    Reset,
    block_resets,
    reset_to_sender,
)
from uinet_tap.stack.decode import ACK, FIN, RST, SYN, Segment

C, S = b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02"


def seg(flags: int, seq: int = 1000, ack: int = 0, payload: bytes = b"") -> Segment:
    return Segment((), False, C, S, 40000, 80, seq, ack, flags, 65535, b"", payload, 0, 64, None)


@dataclass
class Conn:  # what the bridge reads of the tracker's Connection
    id: int = 7
    keys: tuple[bytes, bytes] = (b"ckey", b"skey")
    handshake: bool = True
    close: str | None = None


def test_a_tracked_flow_is_inspected_until_a_verdict():
    b = Bridge()
    flow = b.track(Conn())
    assert flow.mode is FlowMode.INSPECTING and b.track(Conn()) is flow
    assert b.by_key[b"ckey"] is b.by_key[b"skey"] is flow
    assert b.frame(flow, seg(ACK), 0.0).act is Act.INSPECT
    b.arm(flow)
    assert flow.mode is FlowMode.ARMED and b.frame(flow, seg(ACK), 0.0).act is Act.INSPECT


def test_passed_is_forwarded_and_forgotten_with_its_record():
    b = Bridge()
    flow = b.track(Conn())
    b.watch(flow)
    b.pass_(flow)
    assert flow.mode is FlowMode.PASSED and flow.watch is None
    assert b.frame(flow, seg(ACK, payload=b"x"), 0.0).act is Act.FORWARD
    b.ended(7)
    assert len(b) == 0 and not b.by_key


def test_the_rst_to_a_sender_is_at_what_its_ack_names_or_acknowledges_its_syn():
    assert reset_to_sender(seg(ACK, seq=5, ack=900)) == Reset(True, 900, None)
    # a SYN (no ACK): RST|ACK acknowledging the SYN and any data on it
    assert reset_to_sender(seg(SYN, seq=0xFFFFFFFF)) == Reset(True, 0, 0)
    assert reset_to_sender(seg(SYN, seq=10, payload=b"abc")) == Reset(True, 0, 14)


def test_blocking_resets_both_ends_at_the_numbers_they_expect():
    data = seg(ACK, seq=5000, ack=900, payload=b"GET")
    # the peer expects the sender's next sequence number, as the watch followed it
    assert block_resets(data, 5003, True) == (Reset(True, 900), Reset(False, 5003))
    # not followed: the frame's own sequence number, the best guess
    assert block_resets(data, None, True) == (Reset(True, 900), Reset(False, 5000))
    # no handshake seen (picked up mid-stream): the peer's numbers are unknown
    assert block_resets(data, 5003, False) == (Reset(True, 900),)
    assert block_resets(seg(SYN), None, True) == (Reset(True, 0, 1001),)


def test_a_blocked_flow_answers_later_frames_boundedly_and_lets_a_new_connection_in():
    b = Bridge()
    flow = b.track(Conn())
    watch = b.watch(flow)
    watch.sides[0].nxt = 5003
    resets = b.block(flow, seg(ACK, seq=5000, ack=900, payload=b"GET"), True, True, 100.0)
    assert resets == (Reset(True, 900), Reset(False, 5003))
    assert flow.mode is FlowMode.BLOCKED and flow.until == 100.0 + TOMBSTONE
    b.ended(7)  # its record is written at the block; the tuple stays blocked
    assert b.by_key[b"ckey"] is flow
    cmd = b.frame(flow, seg(ACK, seq=5003, ack=950), 101.0)
    assert (cmd.act, cmd.reason, cmd.resets) == (Act.RESET, "blocked", (Reset(True, 950),))
    assert b.frame(flow, seg(RST | ACK), 101.0).act is Act.DROP  # a RST is never answered
    for _ in range(BLOCK_ANSWERS - 1):
        assert b.frame(flow, seg(ACK | FIN), 101.0).act is Act.RESET
    assert b.frame(flow, seg(ACK), 101.0).act is Act.DROP  # answers are bounded
    # a bare SYN at once is the old connection's (answered no more), later a new one's
    assert b.frame(flow, seg(SYN), 101.0).act is Act.DROP
    assert b.frame(flow, seg(SYN), 103.0).act is Act.UNKNOWN
    assert len(b) == 0 and not b.by_key


def test_blocked_and_closed_tuples_are_let_go_when_their_time_is_up():
    b = Bridge()
    blocked = b.track(Conn())
    b.block(blocked, seg(ACK, ack=1), True, True, 0.0)
    closed = b.track(Conn(id=8, keys=(b"c2", b"s2")))
    b.own(closed, object())
    b.owner_gone(closed, 10.0)
    b.expire(TOMBSTONE + 1)
    assert set(b.by_id) == {8}
    b.expire(TOMBSTONE + 11)
    assert len(b) == 0 and not b.by_key


def test_an_owned_flow_goes_to_its_session_then_its_tuple_swallows_stragglers():
    b = Bridge()
    flow = b.track(Conn())
    session = object()
    b.own(flow, session)
    assert flow.mode is FlowMode.OWNED and flow.owner is session
    assert b.frame(flow, seg(ACK, payload=b"x"), 0.0).act is Act.HAND_UP
    b.ended(7)  # the record waits for the session: the flow stays owned
    assert b.frame(flow, seg(ACK), 1.0).act is Act.HAND_UP
    b.owner_gone(flow, 2.0)
    cmd = b.frame(flow, seg(ACK | FIN), 3.0)
    assert (flow.mode, cmd.act, cmd.reason) == (FlowMode.CLOSED, Act.DROP, "tombstone")
    assert b.frame(flow, seg(SYN), 4.0).act is Act.UNKNOWN  # a new connection
    assert len(b) == 0


def test_a_closed_tuple_past_its_time_is_unknown_again():
    b = Bridge()
    flow = b.track(Conn())
    b.own(flow, object())
    b.owner_gone(flow, 0.0)
    assert b.frame(flow, seg(ACK), TOMBSTONE + 1).act is Act.UNKNOWN
    assert len(b) == 0
