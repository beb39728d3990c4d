"""The active TCP endpoint (stack/active.py), sans-I/O with a fake clock, one RFC behaviour per
test, and properties: two endpoints over a seeded lossy, reordering link move exact bytes; the
out-of-order store (stack/outoforder.py) delivers what a bytearray model does."""

from __future__ import annotations

import gc
import random
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from uinet_tap.stack.active import (
    ACK,
    DELACK,
    FIN,
    PSH,
    RST,
    RTO_INITIAL,
    SYN,
    Incoming,
    Outgoing,
    Takeover,
    Tcb,
    TcbState,
    TsClock,
    parse_incoming,
)
from uinet_tap.stack.emit import encode_options
from uinet_tap.stack.outoforder import MAX_PIECES

pytestmark = pytest.mark.timeout(300)  # a livelock in the endpoint must fail, not hang CI

MSS = 1000
TS_OPTION = 12  # NOP NOP TS: what every segment of a pair() carries in options
ISS_US, ISS_PEER = 1_000_000, 4_000_000_000  # the peer's numbers wrap around 2**32


def takeover(**kw: object) -> Takeover:
    base = dict(
        snd_una=ISS_US,
        snd_nxt=ISS_US,
        unacked=b"",
        rcv_nxt=ISS_PEER,
        peer_window=65535,
        peer_wscale=0,
        our_wscale=0,
        rcv_edge=ISS_PEER + 65535,
        peer_mss=MSS,
        sack=True,
        clock=None,
        ts_recent=0,
    )
    base.update(kw)
    return Takeover(**base)  # type: ignore[arg-type]


def take(tcb: Tcb) -> list[Outgoing]:
    out, tcb.out = tcb.out, []
    return out


def seg(seq: int, ack: int, flags: int = ACK, window: int = 65535, payload: bytes = b"",
        **kw: object) -> Incoming:  # fmt: skip
    return Incoming(seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags, window, payload, **kw)  # type: ignore[arg-type]


def test_bytes_in_flight_at_takeover_are_resent_on_timeout_with_backoff() -> None:
    """RFC 6298 (5.4)-(5.6): the held bytes go again after the RTO, which doubles."""
    t = Tcb(takeover(snd_nxt=ISS_US + 2500, unacked=b"x" * 2500), now=0.0)
    assert t.deadline() == RTO_INITIAL
    t.on_timer(RTO_INITIAL)
    out = take(t)
    assert [(o.seq, len(o.payload)) for o in out] == [(ISS_US, MSS)]
    assert t.deadline() == RTO_INITIAL + 2 * RTO_INITIAL
    t.on_timer(3 * RTO_INITIAL)
    assert [o.seq for o in take(t)] == [ISS_US]
    assert t.deadline() == 3 * RTO_INITIAL + 4 * RTO_INITIAL
    # the peer acknowledges everything: no timer, nothing held
    t.on_segment(seg(ISS_PEER, ISS_US + 2500), 7.5)
    assert t.queued == 0 and t.rto_at is None


def test_acknowledged_in_flight_bytes_are_never_resent() -> None:
    t = Tcb(takeover(snd_nxt=ISS_US + 2000, unacked=b"y" * 2000), now=0.0)
    t.on_segment(seg(ISS_PEER, ISS_US + 2000), 0.01)
    t.on_timer(5.0)
    assert take(t) == []


def test_fast_retransmit_on_the_third_duplicate_ack() -> None:
    """RFC 5681 §3.2: three duplicate ACKs resend the first unacknowledged segment at once."""
    t = Tcb(takeover(sack=False), now=0.0)
    t.send(b"a" * 8000, 0.0)
    sent = take(t)
    assert len(sent) == 8 and all(len(o.payload) == MSS for o in sent)
    t.on_segment(seg(ISS_PEER, ISS_US + 1000), 0.01)
    take(t)
    for i in range(2):
        t.on_segment(seg(ISS_PEER, ISS_US + 1000), 0.011 + i / 1000)
        assert not [o for o in take(t) if o.payload]
    t.on_segment(seg(ISS_PEER, ISS_US + 1000), 0.02)
    resent = [o for o in take(t) if o.payload]
    assert resent and resent[0].seq == ISS_US + 1000
    assert t.stats.fast_retransmits == 1
    # a partial ACK resends the next hole (RFC 6582 §3.2)
    t.on_segment(seg(ISS_PEER, ISS_US + 3000), 0.03)
    assert [o.seq for o in take(t) if o.payload][0] == ISS_US + 3000


def test_sacked_ranges_are_not_resent() -> None:
    """RFC 2018: what the peer's SACK blocks hold is skipped when resending."""
    t = Tcb(takeover(), now=0.0)
    t.send(b"s" * 6000, 0.0)
    take(t)
    holes = ((ISS_US + 2000, ISS_US + 6000),)
    for i in range(3):
        t.on_segment(seg(ISS_PEER, ISS_US + 1000, sack=holes), 0.01 + i / 1000)
    resent = [o for o in take(t) if o.payload]
    assert [(o.seq, len(o.payload)) for o in resent] == [(ISS_US + 1000, 1000)]
    t.on_timer(t.deadline() or 0)  # a timeout forgets SACK info (RFC 2018 §8) and resends
    assert [o.seq for o in take(t) if o.payload] == [ISS_US + 1000]


def test_a_segment_carrying_sack_blocks_carries_that_much_less_data() -> None:
    """RFC 9293 §3.7.1: the MSS counts data only, so the SACK blocks a segment carries come
    off it, new data and resent alike; a full MSS on top of them would exceed the path MTU."""
    t = Tcb(takeover(), now=0.0)
    t.on_segment(seg(ISS_PEER + 1000, ISS_US, payload=b"2" * 500), 0.0)  # a hole: one block
    take(t)
    t.send(b"s" * 3000, 0.0)
    sent = [o for o in take(t) if o.payload]
    assert [len(o.options) for o in sent] == [12] * 4  # NOP NOP SACK, one block of 8
    assert [len(o.payload) for o in sent] == [988, 988, 988, 36]
    t.on_timer(t.deadline() or 0)
    (resent,) = [o for o in take(t) if o.payload]
    assert (resent.seq, len(resent.payload), len(resent.options)) == (ISS_US, 988, 12)
    t.on_segment(seg(ISS_PEER, ISS_US + 3000, payload=b"1" * 1000), 5.0)  # the hole fills
    take(t)
    t.send(b"x" * 2000, 5.0)
    assert [(len(o.payload), o.options) for o in take(t) if o.payload] == [(1000, b"")] * 2


def test_sending_stops_at_the_peers_window_and_resumes_when_it_opens() -> None:
    """RFC 9293 §3.8.6: never past SND.UNA + SND.WND; window scale applies (RFC 7323 §2.3)."""
    t = Tcb(takeover(peer_window=750, peer_wscale=2), now=0.0)  # 3000 bytes
    t.send(b"w" * 10000, 0.0)
    assert sum(len(o.payload) for o in take(t)) == 3000
    t.on_segment(seg(ISS_PEER, ISS_US + 3000, window=1000), 0.01)  # 4000 more
    assert sum(len(o.payload) for o in take(t)) == 4000


def test_zero_window_probe_and_reopening() -> None:
    """RFC 9293 §3.8.6.1: with a zero window and data to send, probe until it opens."""
    t = Tcb(takeover(peer_window=0), now=0.0)
    t.send(b"z" * 3000, 0.0)
    assert take(t) == []
    at = t.deadline()
    assert at is not None
    t.on_timer(at)
    probe = take(t)
    assert len(probe) == 1 and probe[0].seq == ISS_US - 1 and probe[0].payload == b""
    later = t.deadline()
    assert later is not None and later - at > at  # backed off
    t.on_segment(seg(ISS_PEER, ISS_US, window=65535), at + 0.01)
    assert sum(len(o.payload) for o in take(t)) == 3000


def test_delayed_ack_every_second_segment_or_after_the_timer() -> None:
    """RFC 5681 §4.2."""
    t = Tcb(takeover(), now=0.0)
    t.on_segment(seg(ISS_PEER, ISS_US, payload=b"d" * MSS), 0.0)
    assert take(t) == [] and t.deadline() == DELACK
    t.on_timer(DELACK)
    (ack,) = take(t)
    assert ack.ack == (ISS_PEER + MSS) & 0xFFFFFFFF and ack.flags == ACK
    t.on_segment(seg(ISS_PEER + MSS, ISS_US, payload=b"d" * MSS), 1.0)
    t.on_segment(seg(ISS_PEER + 2 * MSS, ISS_US, payload=b"d" * MSS), 1.001)
    assert [o.ack for o in take(t)] == [(ISS_PEER + 3 * MSS) & 0xFFFFFFFF]
    assert t.read(1 << 20, 1.002) == b"d" * 3 * MSS


def test_out_of_order_data_is_acked_at_once_with_sack_and_delivered_in_order() -> None:
    t = Tcb(takeover(), now=0.0)
    t.on_segment(seg(ISS_PEER + 1000, ISS_US, payload=b"2" * 1000), 0.0)
    (dup,) = take(t)
    assert dup.ack == ISS_PEER
    assert parse_incoming(0, 0, 0, 0, dup.options, b"").sack == (
        (ISS_PEER + 1000, (ISS_PEER + 2000) & 0xFFFFFFFF),
    )
    assert t.readable == 0
    t.on_segment(seg(ISS_PEER, ISS_US, payload=b"1" * 1000), 0.01)
    assert t.read(5000, 0.02) == b"1" * 1000 + b"2" * 1000
    assert t.rcv_nxt == (ISS_PEER + 2000) & 0xFFFFFFFF


def test_a_held_fin_is_inside_its_sack_block() -> None:
    """A data+FIN segment past a hole is SACKed up to and including the FIN, as Linux does:
    otherwise the sender retransmits it, the copy crosses our ACK of the FIN, our TIME-WAIT
    answer reaches its closed socket and it sends a RST."""
    t = Tcb(takeover(), now=0.0)
    t.on_segment(seg(ISS_PEER + 1000, ISS_US, flags=ACK | FIN, payload=b"2" * 500), 0.0)
    (dup,) = take(t)
    assert dup.ack == ISS_PEER
    assert parse_incoming(0, 0, 0, 0, dup.options, b"").sack == (
        (ISS_PEER + 1000, (ISS_PEER + 1501) & 0xFFFFFFFF),
    )
    t.on_segment(seg(ISS_PEER, ISS_US, payload=b"1" * 1000), 0.01)
    assert [o.ack for o in take(t)][-1] == (ISS_PEER + 1501) & 0xFFFFFFFF
    assert t.fin_received and t.read(5000, 0.02) == b"1" * 1000 + b"2" * 500


def test_data_with_fin_gets_one_ack_and_no_window_update_follows() -> None:
    """Linux answers a data+FIN segment with one ACK and sends no window update once the
    peer's FIN is in: a second ACK may cross the peer's move to CLOSED (reordered by the
    network, or after its last ACK) and draw a RST."""
    t = Tcb(takeover(), now=0.0)
    t.send(b"x" * 100, 0.0)
    t.close(0.0)
    take(t)
    t.on_segment(seg(ISS_PEER, ISS_US + 101, flags=ACK | FIN | PSH, payload=b"e" * 76), 0.0)
    assert [(o.ack - ISS_PEER) & 0xFFFFFFFF for o in take(t)] == [77]
    assert t.state is TcbState.TIME_WAIT
    assert t.read(100, 0.001) == b"e" * 76 and take(t) == []
    # the peer, CLOSED by that ACK, answers a stray one with a RST: the wait ends, no reset
    t.on_segment(seg(ISS_PEER + 77, 0, flags=RST), 0.002)
    assert t.state is TcbState.CLOSED and not t.reset
    # the same in CLOSE-WAIT, where the window is tight
    t = Tcb(takeover(rcv_edge=ISS_PEER + 1000), now=0.0)
    t.on_segment(seg(ISS_PEER, ISS_US, flags=ACK | FIN | PSH, payload=b"f" * 1000), 0.0)
    assert [(o.ack - ISS_PEER) & 0xFFFFFFFF for o in take(t)] == [1001]
    assert t.read(1000, 0.001) == b"f" * 1000 and take(t) == []


def test_active_close_fin_wait_to_time_wait_to_closed() -> None:
    """RFC 9293 §3.3.2: ESTABLISHED -> FIN-WAIT-1 -> FIN-WAIT-2 -> TIME-WAIT -> CLOSED."""
    t = Tcb(takeover(), now=0.0)
    t.send(b"bye", 0.0)
    t.close(0.0)
    out = take(t)
    assert out[-1].flags & FIN and out[-1].seq + len(out[-1].payload) == ISS_US + 3
    assert t.state is TcbState.FIN_WAIT_1
    t.on_segment(seg(ISS_PEER, ISS_US + 4), 0.01)
    assert t.state is TcbState.FIN_WAIT_2
    t.on_segment(seg(ISS_PEER, ISS_US + 4, flags=ACK | FIN), 0.02)
    assert t.state is TcbState.TIME_WAIT and t.eof
    assert take(t)[-1].ack == (ISS_PEER + 1) & 0xFFFFFFFF
    # the peer's FIN again (our ACK was lost): acknowledged again
    t.on_segment(seg(ISS_PEER, ISS_US + 4, flags=ACK | FIN), 0.5)
    assert take(t)[-1].ack == (ISS_PEER + 1) & 0xFFFFFFFF
    t.on_timer(t.deadline() or 0)
    assert t.state is TcbState.CLOSED and not t.reset


def test_passive_close_close_wait_to_last_ack_to_closed() -> None:
    t = Tcb(takeover(), now=0.0)
    t.on_segment(seg(ISS_PEER, ISS_US, flags=ACK | FIN | PSH, payload=b"end"), 0.0)
    assert t.state is TcbState.CLOSE_WAIT
    assert t.read(10, 0.0) == b"end" and t.eof
    t.close(0.01)
    assert t.state is TcbState.LAST_ACK and take(t)[-1].flags & FIN
    t.on_segment(seg(ISS_PEER + 4, ISS_US + 1), 0.02)
    assert t.state is TcbState.CLOSED and not t.reset


def test_simultaneous_close_goes_through_closing() -> None:
    t = Tcb(takeover(), now=0.0)
    t.close(0.0)
    take(t)
    t.on_segment(seg(ISS_PEER, ISS_US, flags=ACK | FIN), 0.01)  # FIN crossing ours
    assert t.state is TcbState.CLOSING
    t.on_segment(seg(ISS_PEER + 1, ISS_US + 1), 0.02)
    assert t.state is TcbState.TIME_WAIT


def test_unacknowledged_fin_is_resent() -> None:
    t = Tcb(takeover(), now=0.0)
    t.close(0.0)
    take(t)
    t.on_timer(t.deadline() or 0)
    assert take(t)[-1].flags & FIN


def test_paws_drops_an_old_duplicate() -> None:
    """RFC 7323 §5.3: a segment whose TSval is older than TS.Recent is dropped and ACKed."""
    clock = TsClock(base=500, at=0.0, rate=1000.0)
    t = Tcb(takeover(clock=clock, ts_recent=9000), now=0.0)
    t.on_segment(seg(ISS_PEER, ISS_US, payload=b"old", tsval=8000, tsecr=400), 0.0)
    (ack,) = take(t)
    assert t.readable == 0 and t.stats.paws_dropped == 1
    opts = parse_incoming(0, 0, 0, 0, ack.options, b"")
    assert opts.tsecr == 9000 and opts.tsval == 500
    t.on_segment(seg(ISS_PEER, ISS_US, payload=b"new", tsval=9001, tsecr=400), 0.25)
    assert t.read(10, 0.25) == b"new" and t.ts_recent == 9001


def test_tsval_continues_at_the_impersonated_clock_rate() -> None:
    clock = TsClock(base=0xFFFFFFF0, at=10.0, rate=1000.0)
    t = Tcb(takeover(clock=clock, ts_recent=77), now=10.0)
    t.send(b"t", 10.5)
    (out,) = take(t)
    opts = parse_incoming(0, 0, 0, 0, out.options, b"")
    assert opts.tsval == (0xFFFFFFF0 + 500) & 0xFFFFFFFF and opts.tsecr == 77


def test_rst_exact_resets_in_window_challenges_outside_ignored() -> None:
    """RFC 5961 §3.2."""
    t = Tcb(takeover(), now=0.0)
    t.on_segment(seg(ISS_PEER + 100, ISS_US, flags=RST), 0.0)
    (challenge,) = take(t)
    assert challenge.flags == ACK and challenge.ack == ISS_PEER and t.state is TcbState.ESTABLISHED
    t.on_segment(seg(ISS_PEER + 10_000_000, ISS_US, flags=RST), 0.0)
    assert take(t) == [] and t.state is TcbState.ESTABLISHED
    t.on_segment(seg(ISS_PEER, ISS_US, flags=RST), 0.0)
    assert t.state is TcbState.CLOSED and t.reset


def test_syn_in_a_synchronized_state_gets_a_challenge_ack() -> None:
    """RFC 5961 §4."""
    t = Tcb(takeover(), now=0.0)
    t.on_segment(seg(ISS_PEER, ISS_US, flags=SYN), 0.0)
    (out,) = take(t)
    assert out.flags == ACK and t.state is TcbState.ESTABLISHED


def test_abort_sends_rst_at_snd_nxt() -> None:
    t = Tcb(takeover(snd_nxt=ISS_US + 10, unacked=b"0123456789"), now=0.0)
    t.abort(0.0)
    (rst,) = take(t)
    assert rst.flags & RST and rst.seq == ISS_US + 10 and t.state is TcbState.CLOSED


def test_our_window_never_retreats_the_advertised_edge() -> None:
    """RFC 9293 §3.8.6.2.2: the right edge the impersonated endpoint advertised stays."""
    t = Tcb(takeover(our_wscale=7, rcv_edge=ISS_PEER + (500 << 7)), now=0.0)
    t.on_segment(seg(ISS_PEER, ISS_US, payload=b"q" * 10), 0.0)
    t.on_timer(DELACK)
    (ack,) = take(t)
    assert ((ack.ack + (ack.window << 7)) - (ISS_PEER + (500 << 7))) & 0xFFFFFFFF < 1 << 31


def test_timestamp_and_sack_options_encode() -> None:
    raw = encode_options(timestamps=(1, 2), sack_blocks=((10, 20),))
    p = parse_incoming(0, 0, 0, 0, raw, b"")
    assert p.tsval == 1 and p.tsecr == 2 and p.sack == ((10, 20),)


# -- two endpoints over a seeded bad link ------------------------------------------------------


class Link:
    """Delivers segments after a delay; drops, duplicates and reorders from a seeded RNG."""

    def __init__(self, rng: random.Random, loss: float, reorder: float) -> None:
        self.rng = rng
        self.loss = loss
        self.reorder = reorder
        self.queue: list[tuple[float, int, int, Outgoing]] = []
        self.n = 0

    def put(self, now: float, dest: int, out: Outgoing) -> None:
        if self.rng.random() < self.loss:
            return
        delay = 0.001 + (0.01 * self.rng.random() if self.rng.random() < self.reorder else 0)
        self.n += 1
        self.queue.append((now + delay, self.n, dest, out))

    def next_time(self) -> float | None:
        return min(q[0] for q in self.queue) if self.queue else None

    def pop(self) -> tuple[float, int, Outgoing]:
        self.queue.sort()
        at, _n, dest, out = self.queue.pop(0)
        return at, dest, out


def pair(rate: float = 1000.0) -> tuple[Tcb, Tcb]:
    """A and B mid-connection: A's numbers from ISS_US, B's from ISS_PEER (wrapping)."""
    a = Tcb(takeover(clock=TsClock(1, 0.0, rate), ts_recent=5, peer_wscale=3, our_wscale=3,
                     peer_window=8000, rcv_edge=ISS_PEER + (8000 << 3)), 0.0)  # fmt: skip
    b = Tcb(
        Takeover(
            snd_una=ISS_PEER, snd_nxt=ISS_PEER, unacked=b"", rcv_nxt=ISS_US, peer_window=8000,
            peer_wscale=3, our_wscale=3, rcv_edge=ISS_US + (8000 << 3), peer_mss=MSS, sack=True,
            clock=TsClock(5, 0.0, rate), ts_recent=1,
        ),
        0.0,
    )  # fmt: skip
    return a, b


def run(a: Tcb, b: Tcb, link: Link, data_a: bytes, data_b: bytes) -> tuple[bytes, bytes]:
    """A sends data_a then closes; B the same; returns what each received."""
    got = [bytearray(), bytearray()]
    tcbs = (a, b)
    now = 0.0
    a.send(data_a, now)
    b.send(data_b, now)
    a.close(now)
    b.close(now)
    for _ in range(200_000):
        for i, t in enumerate(tcbs):
            for o in take(t):
                # The MSS counts data only: with the options, a segment fits what the MSS
                # and the timestamps both endpoints send would make (RFC 9293 §3.7.1).
                assert len(o.payload) + len(o.options) <= MSS + TS_OPTION, o.options
                link.put(now, 1 - i, o)
            got[i] += t.read(1 << 20, now)
        if all(t.state in (TcbState.TIME_WAIT, TcbState.CLOSED) for t in tcbs) and not link.queue:
            break
        times = [x for x in [link.next_time(), *(t.deadline() for t in tcbs)] if x is not None]
        assert times, "stuck: nothing scheduled"
        now = max(now, min(times))
        if link.next_time() == now:
            at, dest, o = link.pop()
            tcbs[dest].on_segment(
                parse_incoming(o.seq, o.ack, o.flags, o.window, o.options, o.payload), now
            )
        else:
            for t in tcbs:
                d = t.deadline()
                if d is not None and d <= now:
                    t.on_timer(now)
    return bytes(got[0]), bytes(got[1])


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    size_a=st.integers(0, 300_000),
    size_b=st.integers(0, 50_000),
    loss=st.sampled_from([0.0, 0.02, 0.1]),
    reorder=st.sampled_from([0.0, 0.05, 0.3]),
)
def test_two_endpoints_over_a_bad_link_move_exact_bytes(
    seed: int, size_a: int, size_b: int, loss: float, reorder: float
) -> None:
    rng = random.Random(seed)
    data_a = rng.randbytes(size_a)
    data_b = rng.randbytes(size_b)
    a, b = pair()
    got_by_a, got_by_b = run(a, b, Link(random.Random(seed + 1), loss, reorder), data_a, data_b)
    assert got_by_b == data_a
    assert got_by_a == data_b
    assert not a.reset and not b.reset
    assert a.eof and b.eof


def test_paws_lets_a_reordered_pure_ack_through() -> None:
    """A duplicate ACK overtaken by a newer one has an older TSval but is no stale data."""
    clock = TsClock(base=500, at=0.0, rate=1000.0)
    t = Tcb(takeover(clock=clock, ts_recent=9000), now=0.0)
    t.send(b"p" * 3000, 0.0)
    take(t)
    sack = ((ISS_US + 1000, ISS_US + 2000),)
    t.on_segment(seg(ISS_PEER, ISS_US, sack=sack, tsval=8999, tsecr=500), 0.01)
    assert t.stats.paws_dropped == 0 and t.sacked == [(1000, 2000)]


def test_after_a_timeout_a_fin_behind_sacked_data_is_resent_once() -> None:
    """RTO recovery resends the flight under the congestion window, skipping what the peer
    SACKs; when only the FIN is left it goes once (a loop here once sent it forever)."""
    t = Tcb(takeover(), now=0.0)
    t.send(b"f" * 3000, 0.0)
    t.close(0.0)
    take(t)
    t.on_timer(t.deadline() or 0)  # RTO: resend from snd_una
    take(t)
    t.on_segment(seg(ISS_PEER, ISS_US + 1000, sack=((ISS_US + 2000, ISS_US + 3000),)), 1.1)
    out = take(t)
    assert [(o.seq, len(o.payload)) for o in out if o.payload] == [(ISS_US + 1000, 1000)]
    assert sum(1 for o in out if o.flags & FIN) == 1


# -- the out-of-order store under hostile input -------------------------------------------------


def opcodes(fn: Callable[[], object]) -> int:
    """Bytecode instructions executed by ``fn``: a deterministic measure of work (no clock)."""
    count = 0

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        frame.f_trace_opcodes = True
        if event == "opcode":
            count += 1
        return tracer

    previous = sys.gettrace()  # a coverage tool's, say: put back afterwards
    # No collection while counting: a gc callback in Python (hypothesis times collections
    # with one, once imported) would add its instructions to whichever call it fell in.
    was_enabled = gc.isenabled()
    gc.disable()
    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(previous)
        if was_enabled:
            gc.enable()
    return count


def test_a_flood_of_copies_of_one_out_of_order_segment_is_held_once_at_a_constant_cost() -> None:
    """25,000 copies of one 1,400-byte segment past a hole (35 MB): one range of 1,400 bytes
    is held, each copy is counted, and the last copies cost exactly the instructions the
    early ones did, so the flood's work grows linearly (the list it replaces re-sorted and
    re-summed every copy: quadratic, 357 s for this flood)."""
    t = Tcb(takeover(rcv_edge=ISS_PEER + (1 << 20), our_wscale=5), now=0.0)
    copy = seg(ISS_PEER + 1400, ISS_US, payload=b"x" * 1400)
    batch = 50

    def flood() -> None:
        for _ in range(batch):
            t.on_segment(copy, 0.0)
            t.out.clear()

    flood()  # the first copy is held; the rest of the batch brings the endpoint to its pace
    early = opcodes(flood)
    for _ in range(25_000 // batch - 3):
        flood()
    late = opcodes(flood)
    assert t.stats.segments_in == 25_000
    assert late == early
    # About 1,250 instructions a copy, most of them the duplicate ACK it earns (window,
    # options, SACK blocks): 25,000 copies are some 30 million, a fraction of a CPU second.
    assert early < batch * 2000
    assert t.ooo.ranges() == [(1400, 2800)] and t.ooo.held == 1400
    assert t.stats.ooo_duplicates == 25_000 - 1
    t.on_segment(seg(ISS_PEER, ISS_US, payload=b"y" * 1400), 0.0)
    assert t.read(1 << 20, 0.0) == b"y" * 1400 + b"x" * 1400


def test_disjoint_pieces_stop_at_the_cap_and_the_newest_is_dropped_and_counted() -> None:
    """One byte at every other position opens a range each: past the cap each newcomer is
    dropped (what is held was SACKed and stays, RFC 2018 §8) and costs what the first did."""
    cap = 64
    t = Tcb(takeover(rcv_edge=ISS_PEER + (1 << 20), our_wscale=5), now=0.0, ooo_pieces=cap)

    def one(k: int) -> Callable[[], None]:
        return lambda: t.on_segment(seg(ISS_PEER + 2 * k + 1, ISS_US, payload=b"p"), 0.0)

    for k in range(cap + 500):
        one(k)()
    assert len(t.ooo) == cap and t.ooo.held == cap
    assert t.stats.ooo_dropped == 500
    assert opcodes(one(cap + 500)) == opcodes(one(cap + 501))
    for k in range(cap + 1):  # the holes, one byte each
        t.on_segment(seg(ISS_PEER + 2 * k, ISS_US, payload=b"f"), 0.0)
    assert t.read(1 << 20, 0.0) == b"fp" * cap + b"f"
    assert len(t.ooo) == 0 and t.ooo.held == 0


def test_overlapping_out_of_order_segments_are_merged_and_held_once() -> None:
    t = Tcb(takeover(), now=0.0)
    data = bytes(range(200))
    t.on_segment(seg(ISS_PEER + 100, ISS_US, payload=data[100:150]), 0.0)
    t.on_segment(seg(ISS_PEER + 120, ISS_US, payload=data[120:180]), 0.0)  # 30 bytes again
    t.on_segment(seg(ISS_PEER + 60, ISS_US, payload=data[60:110]), 0.0)  # 10 bytes again
    assert t.ooo.ranges() == [(60, 180)] and t.ooo.held == 120
    assert t.stats.ooo_overlap_bytes == 40
    take(t)
    t.on_segment(seg(ISS_PEER, ISS_US, payload=data[:70]), 0.0)  # 10 held bytes under it
    assert t.stats.ooo_overlap_bytes == 50
    assert t.read(1 << 20, 0.0) == data[:180]
    assert t.ooo.held == 0


def test_sack_blocks_lead_with_the_latest_segment_then_earlier_ones() -> None:
    """RFC 2018 §4: the first block holds the segment that triggered the ACK, the next ones
    repeat the most recently reported blocks."""
    t = Tcb(takeover(), now=0.0)

    def blocks_after(off: int) -> list[tuple[int, int]]:
        t.on_segment(seg(ISS_PEER + off, ISS_US, payload=b"s" * 100), 0.0)
        (ack,) = take(t)
        sack = parse_incoming(0, 0, 0, 0, ack.options, b"").sack
        return [((lo - ISS_PEER) & 0xFFFFFFFF, (hi - ISS_PEER) & 0xFFFFFFFF) for lo, hi in sack]

    assert blocks_after(1000) == [(1000, 1100)]
    assert blocks_after(3000) == [(3000, 3100), (1000, 1100)]
    assert blocks_after(5000) == [(5000, 5100), (3000, 3100), (1000, 1100)]
    assert blocks_after(3000) == [(3000, 3100), (5000, 5100), (1000, 1100)]  # a copy
    assert blocks_after(1100) == [(1000, 1200), (3000, 3100), (5000, 5100)]  # merged
    assert blocks_after(7000) == [(7000, 7100), (1000, 1200), (3000, 3100), (5000, 5100)]
    assert blocks_after(9000)[:4] == [(9000, 9100), (7000, 7100), (1000, 1200), (3000, 3100)]


def test_out_of_order_bytes_past_the_window_are_not_held() -> None:
    """The byte cap is the advertised window: what lies past its right edge is cut off."""
    t = Tcb(takeover(rcv_edge=ISS_PEER + 3000), now=0.0)
    t.on_segment(seg(ISS_PEER + 2000, ISS_US, payload=b"w" * 2000), 0.0)
    assert t.ooo.ranges() == [(2000, 3000)] and t.ooo.held == 1000


class ReceiverModel:
    """An obviously correct receiver over a byte mask: holds bytes past a hole, keeps the first
    copy, delivers the contiguous front, and drops a segment that would leave more than
    ``cap`` runs of held bytes."""

    def __init__(self, stream: bytes, cap: int) -> None:
        self.stream = stream
        self.cap = cap
        self.nxt = 0
        self.held = bytearray(len(stream))  # 1 where a byte is held past nxt

    def runs(self, mask: bytearray) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for i in range(self.nxt, len(mask)):
            if mask[i] and (i == self.nxt or not mask[i - 1] or not out):
                out.append((i, i + 1))
            elif mask[i]:
                out[-1] = (out[-1][0], i + 1)
        return out

    def receive(self, lo: int, hi: int) -> None:
        lo = max(lo, self.nxt)
        if lo >= hi:
            return
        if lo == self.nxt:
            self.nxt = hi
            while self.nxt < len(self.stream) and self.held[self.nxt]:
                self.nxt += 1
            return
        if all(self.held[lo:hi]):
            return
        mask = bytearray(self.held)
        mask[lo:hi] = b"\1" * (hi - lo)
        if len(self.runs(mask)) <= self.cap:
            self.held = mask


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(1, 6000),
    cap=st.sampled_from([1, 2, 4, MAX_PIECES]),
    cuts=st.lists(st.tuples(st.integers(0, 5999), st.integers(1, 1500)), max_size=60),
    copies=st.integers(1, 3),
    seed=st.integers(0, 2**32),
)
def test_out_of_order_store_delivers_what_a_bytearray_model_does(
    size: int, cap: int, cuts: list[tuple[int, int]], copies: int, seed: int
) -> None:
    """Random in-window segments in any order, each sent up to three times, over a sequence
    wrap: after each one the bytes read, the held ranges and the SACK blocks are the model's;
    then the sender retransmits everything and the whole stream arrives."""
    rng = random.Random(seed)
    stream = rng.randbytes(size)
    base = (1 << 32) - 3000
    t = Tcb(takeover(rcv_nxt=base, rcv_edge=base + 65535), now=0.0, ooo_pieces=cap)
    model = ReceiverModel(stream, cap)
    segments = [(lo % size, min(lo % size + n, size)) for lo, n in cuts] * copies
    rng.shuffle(segments)
    got = bytearray()
    for lo, hi in segments + [(i, min(i + MSS, size)) for i in range(0, size, MSS)]:
        t.on_segment(seg(base + lo, ISS_US, payload=stream[lo:hi]), 0.0)
        model.receive(lo, hi)
        got += t.read(1 << 20, 0.0)
        assert got == stream[: model.nxt]
        runs = model.runs(model.held)
        assert len(t.ooo) <= cap
        assert [(model.nxt + a, model.nxt + b) for a, b in t.ooo.ranges()] == runs
        assert t.ooo.held == sum(b - a for a, b in runs)
        acks = [o for o in take(t) if o.flags & ACK]
        if acks and runs:
            sack = parse_incoming(0, 0, 0, 0, acks[-1].options, b"").sack
            blocks = [((a - base) & 0xFFFFFFFF, (b - base) & 0xFFFFFFFF) for a, b in sack]
            assert len(blocks) == min(4, len(runs)) and set(blocks) <= set(runs)
            if any(a <= max(lo, model.nxt) < b for a, b in runs):
                assert blocks[0][0] <= max(lo, model.nxt) < blocks[0][1]
    assert bytes(got) == stream
    assert len(t.ooo) == 0 and t.ooo.held == 0


def on_wire(tcb: Tcb, tmpl: Any, build: Callable[..., bytes], cut: Any) -> tuple[list[bytes], int]:
    """The frames of what ``tcb`` queued, bursts cut (uinet_tap/intercept.py cut_bursts), and
    how many bursts there were."""
    from uinet_tap.intercept import cut_bursts

    out = take(tcb)
    made = [build(tmpl, o.seq, o.ack, o.flags, o.window, o.options, o.payload) for o in out]
    bursts = sum(1 for o in out if o.size and len(o.payload) > o.size)
    return (cut_bursts(cut, tmpl, out, made) if tcb.burst else made), bursts


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_a_burst_cut_as_tso_cuts_it_is_what_segments_one_at_a_time_are(v6: bool) -> None:
    """Tcb(burst=...) sends new data in bursts of whole segments, which the frame layer cuts
    as a NIC's TSO cuts a super-segment (with stack/emit.py's resegment and its C twin): on
    the wire, frame for frame and byte for byte, that is what the same endpoint sends a
    segment at a time, through windows that open, close partly (a runt held back, RFC 9293
    §3.8.6.2.1) and the FIN."""
    from uinet_tap.stack import emit, fastpath

    v4 = (b"\x0a\0\0\x01", b"\x0a\0\0\x02")
    src, dst = (bytes(range(16)), bytes(range(16, 32))) if v6 else v4
    l2 = b"\x02" * 6 + b"\x04" * 6 + b"\x81\x00\x00\x07" + (b"\x86\xdd" if v6 else b"\x08\x00")
    data = random.Random(5).randbytes(300_000)
    makers = [(emit.build, emit.resegment)]
    if fastpath.lib is not None:
        makers.append((fastpath.build, fastpath.resegment))
    for build, cut in makers:
        wires, bursts = [], 0
        for burst in (0, 60_000):
            t = Tcb(takeover(clock=TsClock(500, 0.0, 1000.0), ts_recent=77, peer_wscale=5),
                    now=0.0, burst=burst)  # fmt: skip
            tmpl = emit.PathTemplate(l2, src, dst, 80, 40000, ip_id=65530)
            frames: list[bytes] = []
            t.send(data[:200_000], 0.0)
            steps = [(ISS_US + upto, window) for upto, window in
                     ((30_000, 4000), (61_000, 1000), (90_500, 300))]  # fmt: skip
            for k in range(len(steps) + 41):
                got, n = on_wire(t, tmpl, build, cut)
                frames += got
                bursts += n
                if k < len(steps):
                    acked, window = steps[k]
                else:
                    if k == len(steps):
                        t.send(data[200_000:], 0.05)
                        t.close(0.05)
                    acked, window = t.snd_max, 8000
                t.on_segment(seg(ISS_PEER, acked, window=window), 0.01 * (k + 1))
            wires.append(frames)
        assert len(wires[0]) > 100 and bursts > 10 and wires[0] == wires[1]
        assert sum(1 for f in wires[0] if f.endswith(data[-100:])) == 1  # the tail, once
