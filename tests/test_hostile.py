"""Hostile traffic: what an attacker on the wire can do to the tracker's memory, its work and
its view of the sequence space, and what the tool does about each (README "Hostile traffic").

Sizes here are small enough for CI; bench/hostile_bench.py runs the same attacks at full size
through the real command and measures peak RSS.
"""

from __future__ import annotations

import hashlib
import random
import tracemalloc

import pytest
from frames import Conversation, opt_timestamps
from uinet_tap.reassembly.stream import MAX_PIECES
from uinet_tap.stack.decode import Decoder
from uinet_tap.stack.tracker import Tracker, TrackerConfig

from uinet_tap.api import reconstruct
from uinet_tap.engine import Engine, Options


def recon(segs, **opts):
    return reconstruct(Conversation().frames(segs), keep_streams=True, **opts)


def only(res):
    assert len(res.records) == 1, res.records
    return res.records[0]


def syn_frames(n: int, synack: bool = False, t0: float = 1000.0) -> list:
    """n handshakes from distinct clients: a SYN each, and the server's SYN-ACK if asked."""
    segs = []
    for i in range(n):
        cv = Conversation(client=f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
                          cport=1024 + i % 60000, cisn=i * 7919, sisn=i * 104729,
                          t0=t0 + i * 1e-4)  # fmt: skip
        segs.append(cv.syn(wscale=7))
        if synack:
            segs.append(cv.synack(wscale=7))
    return Conversation().frames(segs)


# -- memory: half-open connections -------------------------------------------------------------


@pytest.mark.parametrize("synack", [False, True], ids=["syn", "syn+synack"])
def test_a_half_open_connection_costs_under_a_kilobyte(synack):
    # Measured, not estimated: the tracker's allocations for N half-open connections (their
    # table entries included), divided by N. A full connection costs about 4 KB.
    frames = syn_frames(2000, synack)
    dec = Decoder(1)
    segs = [(ts, dec.decode(ts, f)) for ts, f in frames]
    tracker = Tracker(TrackerConfig(eager_half_open=0))
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for ts, seg in segs:
        tracker.segment(ts, seg)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert tracker.half_open == 2000 and tracker.active == 0
    assert grown / 2000 < 1024, f"{grown / 2000:.0f} bytes per half-open connection"
    # and the estimate the memory cap counts is no lower than what was measured
    assert tracker.flow_memory >= grown, (tracker.flow_memory, grown)


@pytest.mark.parametrize("inspect", [False, True])
def test_the_full_connection_estimate_covers_what_one_costs(inspect):
    from uinet_tap.plugins.registry import builtin_detectors
    from uinet_tap.stack.tracker import FULL_COST

    from uinet_tap.api import _batches

    segs = []
    for i in range(1000):
        cv = Conversation(client=f"10.1.{i >> 8}.{i & 255}", cport=2000 + i, t0=1 + i * 1e-3)
        segs += cv.handshake() + [cv.c(b"GET / HTTP/1.1\r\n"), cv.ack("s")]
    engine = Engine(1, Options(fastpath="off"), lambda r: None,
                    plugins=builtin_detectors() if inspect else None)  # fmt: skip
    batches = list(_batches(Conversation().frames(segs), 1))
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for batch in batches:
        engine.feed_batch(batch)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert engine.tracker.active == 1000
    # Python's heap; the SHA-256 contexts (OpenSSL's, about 250 bytes each) and the C
    # fast path's table entry (under 1 KB with its buffers) come on top
    assert grown / 1000 + 2 * 256 + 1024 <= FULL_COST, f"{grown / 1000:.0f} bytes per connection"


def test_the_connection_memory_cap_evicts_like_the_count_cap():
    # 3,000 connections over a 1 MiB estimate (about 170 full ones): the stalest go, counted
    # under the cap that bit, and every one still has its record.
    segs = []
    for i in range(3000):
        cv = Conversation(client=f"10.2.{i >> 8}.{i & 255}", cport=3000 + i, t0=1 + i * 1e-3)
        segs += cv.handshake() + [cv.c(b"x"), cv.ack("s")]
    res = reconstruct(Conversation().frames(segs), max_flow_memory=1 << 20)
    assert len(res.records) == 3000
    assert res.stats["limits"]["max_flow_memory"] == res.stats["evicted"] > 2500


def test_half_open_connections_are_records_like_any_other():
    # Deferred, not forgotten: each gets its record (same id order, times, packets, options)
    # as a connection tracked from its first packet would.
    res = reconstruct(syn_frames(50, synack=True), fastpath="off", eager_half_open=0)
    assert len(res.records) == 50
    assert [r["id"] for r in res.records] == list(range(50))
    for r in res.records:
        assert r["handshake"] and r["close"] == "eof"
        assert r["c2s"]["packets"] == 1 and r["s2c"]["packets"] == 1
        assert r["tcp"]["window_scaling"] is True
    assert res.stats["connections"] == 50


CAPTURE_DIR = __import__("pathlib").Path(__file__).resolve().parents[1] / "captures"


@pytest.mark.parametrize("fastpath", ["off", "c"])
def test_compact_half_open_connections_give_the_same_records(fastpath):
    # Whether handshakes wait in the compact table (a flood) or are tracked in full from the
    # first SYN (everyday traffic), every record and stat is the same: shipped captures, the
    # evasion cases, a handshake flood with competing SYN-ACKs and SYN data.
    from uinet_tap.pcapfile import PcapFile

    inputs = []
    paths = sorted(CAPTURE_DIR.glob("*.pcap")) + sorted((CAPTURE_DIR / "evasion").glob("*.pcap"))
    for path in paths[:45]:
        frames = []
        for b in PcapFile(str(path)).batches():
            frames += [(t, b.data[o : o + n])
                       for t, o, n in zip(b.times, b.offsets, b.lengths, strict=True)]  # fmt: skip
        inputs.append((path.name, frames))
    flood = syn_frames(300, synack=True)
    cv = Conversation(cport=777)
    extra = [cv.syn(data=b"hello"), cv.synack()]
    cv.isn["s"] = 4242
    extra += [cv.synack(), cv.ack("c"), cv.c(b" world"), cv.s(b"ok"), cv.ack("c")]
    inputs.append(("flood", flood + Conversation().frames(extra)))
    for name, frames in inputs:
        eager = reconstruct(frames, fastpath=fastpath, eager_half_open=1 << 30)
        compact = reconstruct(frames, fastpath=fastpath, eager_half_open=0)
        assert compact.stats == eager.stats, name
        assert compact.records == eager.records, name


def test_a_syn_flood_evicts_half_open_connections_before_established_ones():
    # Ten established connections, a flood of SYNs at a cap of 500 connections, then the ten
    # finish: none of them was evicted; the flood's half-open connections were, oldest
    # first, each with its record and counted.
    cvs = [Conversation(client="192.0.2.9", cport=50000 + i, t0=1.0 + i) for i in range(10)]
    early, late = [], []
    for cv in cvs:
        early += cv.handshake() + [cv.c(b"GET / HTTP/1.1\r\n"), cv.ack("s")]
        late += [cv.c(b"\r\n"), cv.s(b"HTTP/1.1 204\r\n\r\n"), cv.fin("c"), cv.fin("s"),
                 cv.ack("c")]  # fmt: skip
    frames = Conversation().frames(early)
    frames += syn_frames(3000, t0=20.0)
    frames += Conversation().frames([s.__class__(**{**s.__dict__, "ts": 30.0}) for s in late])
    res = reconstruct(frames, max_flows=500)
    kept = [r for r in res.records if r["client"].startswith("192.0.2.9")]
    assert len(kept) == 10
    for r in kept:
        assert r["close"] == "fin" and r["c2s"]["bytes"] == 18, r
    assert len(res.records) == 3010
    assert res.stats["evicted"] == 3010 - 500
    assert res.stats["limits"] == {"max_flows_half_open": 3010 - 500}
    evicted = [r for r in res.records if r["close"] == "evicted"]
    assert len(evicted) == 2510 and all(not r["c2s"]["packets"] > 1 for r in evicted)


# -- the sequence space: competing SYN-ACKs, inflated ACKs ------------------------------------


@pytest.mark.parametrize("confirmed", ["first", "second"])
def test_competing_syn_acks_follow_the_one_the_client_acknowledged(confirmed):
    # Two SYN-ACKs with different ISNs (one injected): the client's ACK names the one it
    # took; the server's data follows that ISN. Following the other made a 1.18 GB gap.
    cv = Conversation(sisn=5000)
    segs = [cv.syn()]
    real, fake = 5000, 900_000_000
    first = cv.synack()
    cv.isn["s"] = fake
    second = cv.synack()
    segs += [first, second]
    cv.isn["s"] = real if confirmed == "first" else fake
    segs += [cv.ack("c"), cv.c(b"GET / HTTP/1.1\r\n\r\n"), cv.s(b"HTTP/1.1 200 OK\r\n\r\nhi"),
             cv.ack("c"), cv.fin("s"), cv.fin("c"), cv.ack("s")]  # fmt: skip
    for fastpath in ("off", "c"):
        rec = only(recon(segs, fastpath=fastpath))
        assert rec["s2c"]["data"] == b"HTTP/1.1 200 OK\r\n\r\nhi"
        assert rec["s2c"]["gaps"] == [] and rec["close"] == "fin"
        assert ("synack_switched" in rec["anomalies"]) == (confirmed == "second")


def test_a_syn_ack_that_does_not_acknowledge_the_syn_is_ignored():
    cv = Conversation()
    syn = cv.syn()
    bogus = cv.synack(ack=12345)
    segs = [syn, bogus, cv.synack(), cv.ack("c"), cv.c(b"abc"), cv.ack("s")]
    rec = only(recon(segs))
    assert rec["anomalies"]["synack_bad_ack"] == 1
    assert rec["c2s"]["data"] == b"abc" and rec["handshake"]


def test_pure_acks_cannot_inflate_a_stream():
    # The attack: 83 pure ACKs, each acknowledging far more than the server sent.
    # An ACK may infer lost data only within one advertised window of what was seen.
    cv = Conversation()
    segs = cv.handshake() + [cv.s(b"hello")]
    base = cv.seq_of("s", 5)
    for i in range(1, 84):
        segs.append(cv.ack("c", ack=base + i * 258_000_000))
    segs += [cv.fin("s"), cv.fin("c"), cv.ack("s")]
    rec = only(recon(segs))
    assert rec["s2c"]["data"] == b"hello" and rec["s2c"]["bytes"] == 5
    assert rec["s2c"]["gaps"] == []
    # Those that land ahead in sequence space are counted; the rest read as old ACKs.
    ahead = sum(1 for i in range(1, 84) if 0 < (i * 258_000_000) % 2**32 < 2**31)
    assert rec["anomalies"]["ack_out_of_range"] == ahead


def test_an_ack_may_still_infer_capture_loss_within_the_window():
    # The server sent 3000 bytes; the capture holds the first 1000; the client's ACKs cover
    # all of it: 2000 bytes lost in capture, a gap (ack_unseen), as before.
    cv = Conversation()
    segs = cv.handshake() + [cv.s(b"a" * 1000)]
    cv.off["s"] = 3000  # sent, not captured
    segs += [cv.ack("c"), cv.ack("c"), cv.ack("c"), cv.ack("c"), cv.fin("s"), cv.fin("c"),
             cv.ack("s")]  # fmt: skip
    rec = only(recon(segs))
    assert rec["s2c"]["bytes"] == 3000 and rec["s2c"]["gaps"] == [[1000, 2000]]
    assert rec["anomalies"]["ack_unseen"] == 1


def test_data_riding_an_ack_of_lost_data_is_confirmed_by_the_peer():
    # The client's data ACKs server bytes the capture lost; the server's next segments show
    # it sent them: the client's data was acceptable all along.
    cv = Conversation()
    segs = cv.handshake() + [cv.s(b"x" * 100)]
    cv.off["s"] = 200  # 100 more sent, lost in capture
    segs += [cv.c(b"REQUEST"), cv.s(b"y" * 50), cv.ack("c"), cv.ack("s"), cv.fin("c"),
             cv.fin("s"), cv.ack("c")]  # fmt: skip
    rec = only(recon(segs))
    assert rec["c2s"]["data"] == b"REQUEST"
    assert rec["s2c"]["gaps"] == [[100, 100]]


# -- memory and work: tiny segments, the global buffer -----------------------------------------


def test_tiny_out_of_order_segments_are_capped_in_pieces_and_counted():
    # 6000 one-byte segments, each behind a hole: more pieces than a direction may hold. The
    # oldest holes become gaps (counted in the record and the stats); the bytes sent later
    # into those holes are retransmissions of what is already committed, never lost twice.
    cv = Conversation()
    segs = cv.handshake()
    n = 6000
    segs += [cv.c(bytes([65 + i % 26]), rel=2 * i + 1) for i in range(n)]
    segs += [cv.c(b"-", rel=2 * i) for i in range(n)]
    segs += [cv.ack("s"), cv.fin("c"), cv.fin("s"), cv.ack("c")]
    res = recon(segs)
    rec = only(res)
    assert rec["c2s"]["bytes"] == 2 * n
    assert rec["limits"]["max_pieces"] >= 1
    assert res.stats["limits"]["max_pieces"] == rec["limits"]["max_pieces"]
    data = rec["c2s"]["data"]
    assert all(data[2 * i + 1] == 65 + i % 26 for i in range(n))
    # the holes filled before the cap bit are exact; the rest were committed as gaps, more
    # than a record lists (counted, and all in gap_count and gap_bytes)
    assert rec["c2s"]["gap_bytes"] + data.count(b"-") == n
    assert rec["c2s"]["gap_count"] == rec["c2s"]["gap_bytes"] > len(rec["c2s"]["gaps"]) == 1024
    assert rec["limits"]["max_gaps_listed"] == rec["c2s"]["gap_count"] - 1024
    assert n > MAX_PIECES


def test_the_global_buffer_is_enforced_on_the_stalest_holders_without_a_scan():
    # 400 connections each holding 1000 bytes behind a hole, under a 100 kB global cap: the
    # stalest holders are forced first, each once; connections holding nothing are never
    # touched (the budget keeps only holders, in order).
    segs = []
    for i in range(400):
        cv = Conversation(client=f"10.1.{i // 250}.{i % 250 + 1}", cport=2000 + i, t0=1 + i)
        segs += cv.handshake() + [cv.c(b"z" * 1000, rel=10)]
    segs += [Conversation(client="10.9.9.9", t0=1000).syn()]
    engine = Engine(1, Options(max_buffer=100_000, fastpath="off"))
    forced: list[int] = []
    from uinet_tap.reassembly import stream as stream_mod

    orig = stream_mod.ByteStream.release

    def release(self, reason):
        forced.append(id(self))
        orig(self, reason)

    stream_mod.ByteStream.release = release  # type: ignore[method-assign]
    try:
        from uinet_tap.api import _batches

        for batch in _batches(Conversation().frames(segs), 1):
            engine.feed_batch(batch)
        budget = engine.tracker.budget
        assert budget.used <= 100_000
        assert all(s.cost > 0 for s in budget.holders)
        assert len(forced) == len(set(forced))  # each forced once, never scanned again
        assert engine.tracker.buffer_forced == len(forced) >= 300
    finally:
        stream_mod.ByteStream.release = orig  # type: ignore[method-assign]
    engine.finish()


# -- what reaches the receiver's application ---------------------------------------------------


def test_data_after_an_accepted_rst_never_reaches_either_application():
    cv = Conversation()
    segs = cv.handshake() + [cv.c(b"GET /a"), cv.ack("s"), cv.rst("c")]
    segs += [cv.c(b"EVIL"), cv.s(b"LATE"), cv.ack("c")]
    rec = only(recon(segs))
    assert rec["c2s"]["data"] == b"GET /a" and rec["s2c"]["data"] == b""
    assert rec["anomalies"]["data_after_rst"] == 2 and rec["close"] == "rst"


def test_syn_data_the_syn_ack_does_not_take_is_dropped():
    cv = Conversation()
    syn = cv.syn(data=b"EVIL!!")
    cv.off["c"] = 0  # the server takes only the SYN
    segs = [syn, cv.synack(), cv.ack("c"), cv.c(b"GOOD!!"), cv.ack("s")]
    rec = only(recon(segs))
    assert rec["c2s"]["data"] == b"GOOD!!"
    assert rec["anomalies"]["syn_data_rejected"] == 1


def test_a_segment_beyond_the_advertised_window_is_held_and_dropped_unless_acknowledged():
    cv = Conversation(win=1000)
    segs = cv.handshake() + [cv.c(b"a" * 1000), cv.ack("s", win=0)]
    segs += [cv.c(b"EVIL", rel=1008, advance=False)]  # beyond ack 1000 + window 0
    segs += [cv.ack("s", win=1000), cv.c(b"b" * 8), cv.c(b"GOOD"), cv.ack("s")]
    rec = only(recon(segs))
    assert rec["c2s"]["data"] == b"a" * 1000 + b"b" * 8 + b"GOOD"


@pytest.mark.parametrize("fastpath", ["off", "c"])
def test_forged_fins_far_ahead_make_no_gap(fastpath):
    # Two FINs about 120 bytes in all, 2 GiB and 1 GiB ahead: once they made streams of
    # those lengths, one long gap each, and seconds of hashing zeros. No receiver takes a FIN
    # beyond its window; the connection goes on and ends with its real FINs.
    cv = Conversation()
    segs = cv.handshake() + [cv.c(b"hello"), cv.ack("s")]
    segs += [cv.seg("c", seq=cv.seq_of("c", 2**31 - 10), flags="FA"),
             cv.seg("c", seq=cv.seq_of("c", 2**30), flags="FA")]  # fmt: skip
    segs += [cv.s(b"world"), cv.ack("c"), cv.fin("c"), cv.fin("s"), cv.ack("c")]
    rec = only(recon(segs, fastpath=fastpath))
    assert rec["c2s"]["data"] == b"hello" and rec["c2s"]["gaps"] == []
    assert rec["close"] == "fin" and rec["anomalies"]["fin_out_of_range"] == 2


def test_a_fin_beyond_the_window_stands_once_the_receiver_acknowledges_it():
    # The window update that let the FIN in was lost in capture; the receiver's ACK of the
    # FIN says it took it.
    cv = Conversation(win=1000)
    segs = cv.handshake() + [cv.c(b"a" * 1000), cv.ack("s", win=0)]
    segs += [cv.fin("c", b"bye"), cv.ack("s"), cv.fin("s"), cv.ack("c")]
    rec = only(recon(segs))
    assert rec["c2s"]["data"] == b"a" * 1000 + b"bye" and rec["close"] == "fin"
    assert "fin_not_acknowledged" not in rec["anomalies"]


def test_a_fin_beyond_the_window_that_no_ack_covers_closes_nothing():
    cv = Conversation(win=1000)
    segs = cv.handshake() + [cv.c(b"a" * 1000), cv.ack("s", win=0)]
    segs += [cv.seg("c", seq=cv.seq_of("c", 1010), flags="FA")]  # 10 bytes past a shut window
    segs += [cv.s(b"reply"), cv.ack("c")]
    rec = only(recon(segs))
    assert rec["close"] == "eof" and rec["c2s"]["bytes"] == 1000
    assert rec["anomalies"]["fin_not_acknowledged"] == 1


def test_urgent_byte_is_read_out_of_band_by_a_receiver_and_in_band_by_an_observer():
    cv = Conversation()
    segs = cv.handshake() + [cv.c(b"GET /adXmin", flags="PAU", urg=8), cv.ack("s")]
    assert only(recon(segs))["c2s"]["data"] == b"GET /admin"
    assert only(recon(segs, overlap_policy="first"))["c2s"]["data"] == b"GET /adXmin"


def test_data_with_an_old_timestamp_is_dropped_by_every_path():
    cv = Conversation()
    segs = [cv.syn(ts=(5000, 0)), cv.synack(ts=(9000, 5000)),
            cv.ack("c", options=opt_timestamps(5001, 9000))]  # fmt: skip
    segs += [cv.c(b"first-", options=opt_timestamps(5002, 9000))]
    segs += [cv.ack("s", options=opt_timestamps(9001, 5002))]
    segs += [cv.data("c", b"EVIL", options=opt_timestamps(4000, 9001), advance=False)]
    segs += [cv.c(b"GOOD", options=opt_timestamps(5003, 9001))]
    segs += [cv.ack("s", options=opt_timestamps(9002, 5003))]
    for fastpath in ("off", "c"):
        rec = only(recon(segs, fastpath=fastpath))
        assert rec["c2s"]["data"] == b"first-GOOD", fastpath


def test_random_overlap_floods_never_hold_more_than_the_caps():
    # Thousands of random overlapping segments with random bytes into one direction, under a
    # small per-direction cap: the held bytes (and their per-piece cost) never pass the cap,
    # and the record comes out.
    rng = random.Random(7)
    cv = Conversation()
    segs = cv.handshake()
    for _ in range(5000):
        off = rng.randrange(1, 200_000)
        segs.append(cv.c(rng.randbytes(rng.randrange(1, 40)), rel=off, advance=False))
    segs += [cv.c(b"x", rel=0), cv.ack("s")]
    engine = Engine(1, Options(max_flow_buffer=64 << 10, fastpath="off"))
    from uinet_tap.api import _batches

    peak = 0
    for batch in _batches(Conversation().frames(segs), 1, size=1):
        engine.feed_batch(batch)
        peak = max(peak, engine.tracker.budget.used)
    engine.finish()
    assert peak <= 64 << 10
    assert engine.tracker.limits["max_flow_buffer"] + engine.tracker.limits["max_pieces"] >= 1


# -- per-host receiver policies ------------------------------------------------------------------


def test_target_os_prefixes_choose_each_directions_receiver(tmp_path):
    # The same overlap (a longer copy at the same start, out of order) read two ways: the
    # server at 10.0.0.2 is named windows in the policy file, the client linux by default.
    from uinet_tap.plugins.policy import parse_policy
    from uinet_tap.plugins.registry import builtin_detectors

    policy = parse_policy('[target-os]\nwindows = ["10.0.0.0/30"]\nlinux = "10.0.0.1/32"\n')
    cv = Conversation()
    segs = cv.handshake()
    segs += [cv.c(b"AAAA", rel=8), cv.c(b"BBBBBBBB", rel=8), cv.c(b"01234567", rel=0)]
    segs += [cv.s(b"aaaa", rel=8), cv.s(b"bbbbbbbb", rel=8), cv.s(b"01234567", rel=0)]
    segs += [cv.ack("s"), cv.ack("c")]
    records: list[dict] = []
    engine = Engine(1, Options(fastpath="off"), records.append, keep_streams=True,
                    plugins=builtin_detectors(), policy=policy)  # fmt: skip
    from uinet_tap.api import _batches

    for batch in _batches(Conversation().frames(segs), 1):
        engine.feed_batch(batch)
    engine.finish()
    (rec,) = records
    assert rec["c2s"]["data"] == b"01234567AAAABBBB"  # windows: the queued copy keeps its bytes
    assert rec["s2c"]["data"] == b"01234567bbbbbbbb"  # linux: same start, longer replaces


@pytest.mark.parametrize(
    "text, message",
    [
        ("[target-os]\nsolaris = ['10.0.0.0/8']", "unknown key 'solaris'"),
        ("[target-os]\nbsd = []", "empty list"),
        ("[target-os]\nbsd = '10.0.0.0/8'\nlinux = ['10.0.0.0/8']", "given to both bsd and linux"),
        ("[target-os]\ndefault = 'macos'", "default must be"),
        ("[target-os]\nwindows = 'not-an-address'", "is not an address or CIDR"),
        ("target-os = 3", "must be a table"),
    ],
)
def test_target_os_section_errors_are_one_line_with_the_line_number(text, message):
    from uinet_tap.plugins.policy import PolicyError, parse_policy

    with pytest.raises(PolicyError) as err:
        parse_policy(text, "rules.toml")
    assert message in str(err.value) and str(err.value).startswith("rules.toml:")
    assert "\n" not in str(err.value)


def test_a_dropped_segment_cannot_move_ts_recent():
    # A segment the receiver drops (here: its ACK acknowledges data the server never sent)
    # carries a TSval far ahead. Had it become TS.Recent, the real data that follows, with an
    # ordinary TSval, would look old (PAWS) and be lost. It does not: Linux stores TS.Recent
    # only for segments it takes.
    cv = Conversation()
    segs = [cv.syn(ts=(5000, 0)), cv.synack(ts=(9000, 5000)),
            cv.ack("c", options=opt_timestamps(5001, 9000))]  # fmt: skip
    segs += [cv.c(b"a" * 1000, options=opt_timestamps(5002, 9000))]
    segs += [cv.ack("s", options=opt_timestamps(9001, 5002))]
    segs += [cv.data("c", b"EVIL", advance=False, ack=cv.seq_of("s", 5000),
                     options=opt_timestamps(5002 + (1 << 30), 9001))]  # fmt: skip
    segs += [cv.c(b"GOOD", options=opt_timestamps(5003, 9001))]
    segs += [cv.ack("s", options=opt_timestamps(9002, 5003))]
    for fastpath in ("off", "c"):
        rec = only(recon(segs, fastpath=fastpath))
        assert rec["c2s"]["data"] == b"a" * 1000 + b"GOOD", fastpath
        assert "paws_rejected" not in rec["anomalies"]


def test_gaps_past_the_hashing_cap_give_up_the_hash_not_the_record():
    # A one-sided capture knows no window: a FIN up to 1 GiB ahead still stands there, and
    # its gap would be a gigabyte of zeros to hash. Past 64 MiB of gaps the hash is given up.
    from uinet_tap.reassembly.stream import MAX_HASHED_GAP

    cv = Conversation()
    segs = [cv.c(b"hello"), cv.seg("c", seq=cv.seq_of("c", MAX_HASHED_GAP + 100), flags="FA")]
    for fastpath in ("off", "c"):
        res = reconstruct(Conversation().frames(segs), fastpath=fastpath)
        rec = only(res)
        assert rec["c2s"]["sha256"] is None and rec["c2s"]["gap_bytes"] == MAX_HASHED_GAP + 95
        assert rec["limits"] == {"gap_not_hashed": 1}
        assert res.stats["limits"]["gap_not_hashed"] == 1
    cv = Conversation()
    segs = [cv.c(b"hello"), cv.seg("c", seq=cv.seq_of("c", MAX_HASHED_GAP), flags="FA")]
    rec = only(reconstruct(Conversation().frames(segs)))
    assert rec["c2s"]["sha256"] == hashlib.sha256(b"hello" + bytes(MAX_HASHED_GAP - 5)).hexdigest()
    assert rec["limits"] == {}
