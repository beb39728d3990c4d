"""Behaviour tests: one per reconstruction edge case, from small synthetic segments.

Every test goes through ``uinet_tap.api.reconstruct(frames, linktype=..., keep_streams=True,
**options)`` and asserts exact stream bytes, gaps, close reason, orientation, counters and
anomaly kinds (docs/CONTRACT.md).  Frames come from tests/frames.py.

Where CONTRACT.md does not pin a detail, the test follows what Suricata/Zeek do; those
choices are marked "ASSUMPTION" in a comment next to the assertion.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from frames import (  # noqa: E402
    DLT_EN10MB,
    DLT_LINUX_SLL,
    DLT_LINUX_SLL2,
    DLT_LOOP,
    DLT_NULL,
    DLT_RAW,
    DLT_RAW_IPV4,
    DLT_RAW_IPV6,
    DSTOPTS,
    ETH_ARP,
    HOPOPTS,
    ROUTING,
    Conversation,
    Seg,
    encode,
    endpoint,
    ethernet,
    ipv4_header,
    opt_timestamps,
    qinq,
    snap,
    udp_packet,
)

C = "10.0.0.1:40000"
S = "10.0.0.2:80"
C6 = "[2001:db8::1]:40000"
S6 = "[2001:db8::2]:80"


# --------------------------------------------------------------------------- helpers


def pattern(n: int, salt: int = 0) -> bytes:
    """n bytes that differ at every offset within a 251-byte period (no accidental matches)."""
    return bytes((i * 7 + salt) % 251 for i in range(n))


def to_frames(items, linktype: int = DLT_EN10MB, vlans=()):
    """Segments (or ready frames) -> frames, in list order.

    Timestamps are made non-decreasing in list order (a segment built earlier but emitted
    later is stamped just after its predecessor), like a real capture.
    """
    out = []
    prev = None
    for x in items:
        if isinstance(x, Seg):
            ts = x.ts if prev is None else max(x.ts, prev + 0.0001)
            out.append((ts, encode(x.l3(), linktype, vlans)))
        else:
            ts = x[0] if prev is None else max(x[0], prev)
            out.append((ts, *x[1:]))
        prev = out[-1][0]
    return out


def recon(items, linktype: int = DLT_EN10MB, vlans=(), **options):
    frames = to_frames(items, linktype, vlans)
    from uinet_tap.api import reconstruct

    return reconstruct(frames, linktype=linktype, keep_streams=True, **options)


def only(result) -> dict:
    recs = result.records
    assert len(recs) == 1, [(r["client"], r["server"], r["vlan"], r["close"]) for r in recs]
    return recs[0]


def anoms(rec_or_stats) -> dict:
    """Non-zero anomaly counts."""
    return {k: v for k, v in rec_or_stats["anomalies"].items() if v}


def gaps(d: dict) -> list[list[int]]:
    return [list(g) for g in d["gaps"]]


def check_dir(d: dict, data: bytes, gap_list=(), packets: int | None = None) -> None:
    """Exact stream, length, digest and gaps of one direction."""
    assert d["data"] == data
    assert d["bytes"] == len(data)
    assert d["sha256"] == hashlib.sha256(data).hexdigest()
    assert gaps(d) == [list(g) for g in gap_list]
    if packets is not None:
        assert d["packets"] == packets


def zeros(n: int) -> bytes:
    return b"\x00" * n


# --------------------------------------------------------------------------- baseline


def test_basic_connection_record_schema_and_fin_close():
    cv = Conversation()
    segs = cv.handshake(wscale=7, ts=(100, 0))
    req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    segs += [cv.c(req), cv.s(resp), cv.fin("c"), cv.fin("s"), cv.ack("c")]
    frames = to_frames(segs)
    from uinet_tap.api import reconstruct

    res = reconstruct(frames, linktype=1, keep_streams=True)
    rec = only(res)
    assert isinstance(rec["id"], int)
    assert rec["client"] == C and rec["server"] == S
    assert rec["midstream"] is False
    assert rec["vlan"] == []
    assert rec["start"] == pytest.approx(frames[0][0])
    assert rec["end"] == pytest.approx(frames[-1][0])
    assert rec["close"] == "fin"
    # client sent SYN, ACK, data, FIN, ACK; server SYN-ACK, data, FIN
    check_dir(rec["c2s"], req, packets=5)
    check_dir(rec["s2c"], resp, packets=3)
    for d in ("c2s", "s2c"):
        assert rec[d]["retransmitted_bytes"] == 0
        assert rec[d]["overlap_conflicts"] == 0
    assert anoms(rec) == {}
    st = res.stats
    assert st["packets"] == len(frames)
    assert st["tcp_packets"] == len(frames)
    assert st["connections"] == 1
    assert st["gaps"] == 0 and st["gap_bytes"] == 0
    assert st["evicted"] == 0
    assert st["truncated_file"] is False
    assert anoms(st) == {}


# --------------------------------------------------------------------------- ordering


def test_out_of_order_segments_are_reordered():
    cv = Conversation()
    segs = cv.handshake()
    a, b, c = cv.c(b"AAAA"), cv.c(b"BBBB"), cv.c(b"CCCC")
    x, y = cv.s(b"xx"), cv.s(b"yyy")
    segs += [c, a, y, b, x, cv.ack("s"), cv.ack("c")]
    rec = only(recon(segs))
    check_dir(rec["c2s"], b"AAAABBBBCCCC")
    check_dir(rec["s2c"], b"xxyyy")
    assert rec["c2s"]["retransmitted_bytes"] == 0
    assert rec["c2s"]["overlap_conflicts"] == 0
    assert anoms(rec) == {}


def test_retransmission_counted_without_conflict():
    cv = Conversation()
    p = pattern(20)
    segs = cv.handshake()
    a = cv.c(p[:10], rel=0)
    b = cv.c(p[10:], rel=10)
    segs += [
        a,
        b,
        cv.c(p[:10], rel=0),  # exact retransmission: 10 bytes
        cv.c(p[5:15], rel=5),  # repacketised retransmission, same bytes: 10 bytes
        cv.ack("s"),
    ]
    rec = only(recon(segs))
    check_dir(rec["c2s"], p)
    assert rec["c2s"]["retransmitted_bytes"] == 20
    assert rec["c2s"]["overlap_conflicts"] == 0
    assert "overlap_conflict" not in anoms(rec)


# Five overlap shapes, each an original segment followed by a conflicting new copy, all held
# out of order above a hole at [0, 8) that is filled last (so an OS-style policy applies):
#   A  new starts before the original        orig OOOO@10  new NNNN@8
#   B  same start, new extends beyond         orig oo@20    new nnnn@20
#   C  new starts inside the original         orig PPPP@30  new QQQQ@32
#   D  same start, same length                orig ss@40    new tt@40
#   E  new covers the original on both sides  orig uu@51    new vvvv@50
OVERLAP_EXPECTED = {
    #           [8,14)      [20,24)  [30,36)     [40,42)  [50,54)
    "first": (b"NNOOOO", b"oonn", b"PPPPQQ", b"ss", b"vuuv"),
    # Snort 3 resolves Windows overlaps as BSD (tcp_overlap_resolver: left overlap keeps the
    # first, right overlaps truncate the existing segment unless both start together).
    "windows": (b"NNNNOO", b"oonn", b"PPPPQQ", b"ss", b"vvvv"),
    "last": (b"NNNNOO", b"nnnn", b"PPQQQQ", b"tt", b"vvvv"),
    "bsd": (b"NNNNOO", b"oonn", b"PPPPQQ", b"ss", b"vvvv"),
    "linux": (b"NNNNOO", b"nnnn", b"PPPPQQ", b"ss", b"vvvv"),
}


def overlap_segments(cv: Conversation) -> list:
    segs = cv.handshake()
    segs += [
        cv.c(b"OOOO", rel=10), cv.c(b"NNNN", rel=8),
        cv.c(b"oo", rel=20), cv.c(b"nnnn", rel=20),
        cv.c(b"PPPP", rel=30), cv.c(b"QQQQ", rel=32),
        cv.c(b"ss", rel=40), cv.c(b"tt", rel=40),
        cv.c(b"uu", rel=51), cv.c(b"vvvv", rel=50),
        # fillers (no overlap), the leading hole last
        cv.c(b"f" * 6, rel=14), cv.c(b"g" * 6, rel=24), cv.c(b"h" * 4, rel=36),
        cv.c(b"i" * 8, rel=42), cv.c(b"j" * 6, rel=54), cv.c(b"e" * 8, rel=0),
        cv.ack("s"),
    ]  # fmt: skip
    return segs


def overlap_expected(policy: str) -> bytes:
    a, b, c, d, e = OVERLAP_EXPECTED[policy]
    return b"e" * 8 + a + b"f" * 6 + b + b"g" * 6 + c + b"h" * 4 + d + b"i" * 8 + e + b"j" * 6


@pytest.mark.parametrize("policy", ["first", "last", "bsd", "linux", "windows"])
def test_overlap_conflicting_data_resolved_by_policy(policy):
    rec = only(recon(overlap_segments(Conversation()), overlap_policy=policy))
    check_dir(rec["c2s"], overlap_expected(policy))
    # ASSUMPTION: one conflict per new segment whose overlapping bytes differ (5 here),
    # whichever copy wins; overlapping bytes count as retransmitted (2 per shape).
    assert rec["c2s"]["overlap_conflicts"] == 5
    assert rec["anomalies"]["overlap_conflict"] == 5
    assert rec["c2s"]["retransmitted_bytes"] == 10
    assert rec["s2c"]["overlap_conflicts"] == 0


def test_overlap_default_policy_is_linux():
    res = recon(overlap_segments(Conversation()))
    rec = only(res)
    check_dir(rec["c2s"], overlap_expected("linux"))
    assert rec["c2s"]["overlap_conflicts"] == 5
    assert res.stats["anomalies"]["overlap_conflict"] == 5


@pytest.mark.parametrize(
    "policy,expected", [("first", b"GOOD"), ("last", b"EVIL"), (None, b"GOOD")]
)
def test_overlap_same_seq_in_order_good_then_evil(policy, expected):
    # suricata-verify eve-overlap-payload-01 shape: same seq, GOOD then EVIL, before any ACK.
    cv = Conversation()
    segs = cv.handshake() + [cv.c(b"GOOD", rel=0), cv.c(b"EVIL", rel=0), cv.c(b"DATA"), cv.ack("s")]
    opts = {} if policy is None else {"overlap_policy": policy}
    rec = only(recon(segs, **opts))
    check_dir(rec["c2s"], expected + b"DATA")
    assert rec["c2s"]["overlap_conflicts"] == 1
    assert rec["anomalies"]["overlap_conflict"] == 1


# --------------------------------------------------------------------------- sequence space


def test_sequence_wraparound_across_2_32():
    # client data starts at 2**32-4 and crosses the wrap inside its first segment;
    # server data starts exactly at 0 after the wrap.
    cv = Conversation(cisn=2**32 - 5, sisn=2**32 - 1)
    p = pattern(40)
    segs = cv.handshake()
    s0, s1, s2, s3 = (cv.c(p[i : i + 10]) for i in range(0, 40, 10))
    assert s0.seq == 2**32 - 4 and s1.seq == 6
    r = cv.s(b"response-after-wrap!")
    assert r.seq == 0
    segs += [s2, s0, s3, s1, r, cv.ack("c"), cv.fin("c"), cv.fin("s"), cv.ack("c")]
    rec = only(recon(segs))
    check_dir(rec["c2s"], p)
    check_dir(rec["s2c"], b"response-after-wrap!")
    assert rec["close"] == "fin"
    assert rec["c2s"]["retransmitted_bytes"] == 0


def test_isn_at_2_32_minus_1_wraps_to_zero():
    cv = Conversation(cisn=2**32 - 1, sisn=0xFFFFFFF0)
    segs = cv.handshake()
    d = cv.c(b"0123456789")
    assert d.seq == 0
    segs += [d, cv.s(pattern(64)), cv.ack("c")]
    rec = only(recon(segs))
    check_dir(rec["c2s"], b"0123456789")
    check_dir(rec["s2c"], pattern(64))


@pytest.mark.parametrize(
    "client_ws,server_ws,expected",
    [(7, 7, "rst_inexact"), (None, None, "rst_out_of_window"), (7, None, "rst_out_of_window")],
)
def test_rst_judged_against_scaled_window(client_ws, server_ws, expected):
    # server advertises a window field of 1000: 128,000 bytes with wscale 7 (scaling is only
    # in effect when both SYNs carry the option), 1,000 bytes without.
    cv = Conversation()
    segs = [cv.syn(wscale=client_ws), cv.synack(wscale=server_ws), cv.ack("c")]
    segs += [cv.c(b"hello"), cv.ack("s", win=1000)]
    segs += [cv.rst("c", rel=5 + 100_000)]  # inside 128,000, outside 1,000 (and 65,535)
    segs += [cv.c(b"world"), cv.ack("s", win=1000)]
    rec = only(recon(segs))
    assert anoms(rec) == {expected: 1}
    assert rec["close"] == "eof"
    check_dir(rec["c2s"], b"helloworld")


# --------------------------------------------------------------------------- probes


def test_keepalives_add_no_data_no_conflict_no_gap():
    cv = Conversation()
    segs = cv.handshake() + [cv.c(b"abcdef"), cv.ack("s")]
    segs += [cv.keepalive("c", b"\x00"), cv.ack("s"), cv.keepalive("c", b""), cv.ack("s")]
    segs += [cv.keepalive("s", b""), cv.ack("c")]
    segs += [cv.c(b"ghi"), cv.ack("s")]
    rec = only(recon(segs))
    check_dir(rec["c2s"], b"abcdefghi")
    check_dir(rec["s2c"], b"")
    assert rec["c2s"]["overlap_conflicts"] == 0
    # ASSUMPTION: one "keepalive" anomaly per keepalive segment (3), both directions.
    assert anoms(rec) == {"keepalive": 3}


def test_zero_window_probes_add_no_data_no_conflict_no_gap():
    cv = Conversation()
    segs = cv.handshake() + [cv.c(b"abc"), cv.zero_window("s")]
    segs += [cv.zero_window_probe("c", b"d"), cv.zero_window("s")]
    segs += [cv.zero_window_probe("c", b"d"), cv.zero_window("s")]
    segs += [cv.ack("s"), cv.c(b"defg"), cv.ack("s")]  # window opens, real data
    rec = only(recon(segs))
    check_dir(rec["c2s"], b"abcdefg")
    assert rec["c2s"]["overlap_conflicts"] == 0
    # ASSUMPTION: one "zero_window_probe" anomaly per probe segment.
    assert anoms(rec) == {"zero_window_probe": 2}


def test_zero_window_probe_byte_alone_is_not_added():
    cv = Conversation()
    segs = cv.handshake() + [cv.c(b"abc"), cv.zero_window("s")]
    segs += [cv.zero_window_probe("c", b"d"), cv.zero_window("s")]
    rec = only(recon(segs))  # capture ends while the window is still closed
    check_dir(rec["c2s"], b"abc")
    assert anoms(rec) == {"zero_window_probe": 1}


# --------------------------------------------------------------------------- handshakes


def test_syn_with_data_tfo_is_first_bytes_of_c2s():
    cv = Conversation()
    segs = [cv.syn(data=b"GET /tfo"), cv.synack(), cv.ack("c")]
    assert segs[1].ack == (1000 + 1 + 8)
    segs += [cv.c(b" HTTP/1.1\r\n\r\n"), cv.s(b"HTTP/1.1 204\r\n\r\n"), cv.ack("c")]
    rec = only(recon(segs))
    assert rec["client"] == C and rec["midstream"] is False
    check_dir(rec["c2s"], b"GET /tfo HTTP/1.1\r\n\r\n")
    check_dir(rec["s2c"], b"HTTP/1.1 204\r\n\r\n")
    assert anoms(rec) == {"syn_data": 1}


def test_synack_with_data_is_first_bytes_of_s2c():
    cv = Conversation()
    segs = [cv.syn(), cv.synack(data=b"220 hi\r\n"), cv.ack("c"), cv.c(b"EHLO\r\n"), cv.ack("s")]
    rec = only(recon(segs))
    check_dir(rec["s2c"], b"220 hi\r\n")
    check_dir(rec["c2s"], b"EHLO\r\n")
    assert anoms(rec) == {"syn_data": 1}


@pytest.mark.parametrize("server_first", [False, True])
def test_a_syn_ack_the_capture_missed_is_inferred_from_the_clients_ack(server_first):
    # The client's third-handshake ACK says it took a SYN-ACK: the server's stream is
    # followed from where that ACK puts it (once, every server segment before the SYN-ACK
    # was dropped as invalid in the handshake, and the stream was one long gap).
    cv = Conversation()
    syn, _synack, ack = cv.handshake()
    segs = [syn, ack]
    if server_first:
        segs += [cv.s(b"220 ready\r\n"), cv.ack("c")]
    segs += [cv.c(b"GET / HTTP/1.1\r\n\r\n"), cv.s(b"HTTP/1.1 200 OK\r\n\r\nbody"), cv.ack("c")]
    segs += [cv.fin("c"), cv.fin("s"), cv.ack("c")]
    rec = only(recon(segs))
    check_dir(rec["c2s"], b"GET / HTTP/1.1\r\n\r\n")
    banner = b"220 ready\r\n" if server_first else b""
    check_dir(rec["s2c"], banner + b"HTTP/1.1 200 OK\r\n\r\nbody")
    assert rec["close"] == "fin" and rec["handshake"] is False
    assert anoms(rec) == {"synack_unseen": 1}


def test_simultaneous_open_is_one_connection():
    cv = Conversation()
    segs = [
        cv.syn(side="c"),  # bare SYNs cross
        cv.syn(side="s"),
        cv.synack(side="c"),
        cv.synack(side="s"),
        cv.c(b"from-a"),
        cv.s(b"from-b"),
        cv.ack("c"),
        cv.ack("s"),
    ]
    rec = only(recon(segs))
    # ASSUMPTION: the sender of the first SYN seen is the client.
    assert rec["client"] == C and rec["server"] == S
    assert rec["midstream"] is False
    check_dir(rec["c2s"], b"from-a")
    check_dir(rec["s2c"], b"from-b")
    assert anoms(rec) == {"simultaneous_open": 1}


def test_midstream_pickup_guesses_client_by_ephemeral_port():
    cv = Conversation()  # no handshake in the capture; the server speaks first
    segs = [cv.s(b"welcome "), cv.c(b"hello"), cv.s(b"more"), cv.ack("c"), cv.ack("s")]
    rec = only(recon(segs))
    assert rec["midstream"] is True
    # ASSUMPTION: without a SYN the side on the higher (ephemeral) port is the client.
    assert rec["client"] == C and rec["server"] == S
    check_dir(rec["c2s"], b"hello")
    check_dir(rec["s2c"], b"welcome more")
    assert rec["close"] == "eof"


def test_midstream_pickup_client_first_low_port_server():
    cv = Conversation(client="192.168.1.20", cport=51515, server="192.168.1.1", sport=443)
    segs = [cv.c(b"\x16\x03\x01abc"), cv.s(b"\x16\x03\x03xyz"), cv.ack("c")]
    rec = only(recon(segs))
    assert rec["midstream"] is True
    assert rec["client"] == "192.168.1.20:51515" and rec["server"] == "192.168.1.1:443"
    check_dir(rec["c2s"], b"\x16\x03\x01abc")
    check_dir(rec["s2c"], b"\x16\x03\x03xyz")


# --------------------------------------------------------------------------- RST


def test_rst_outside_window_is_ignored_rfc5961():
    cv = Conversation()
    segs = cv.handshake() + [cv.c(b"part1-"), cv.ack("s")]
    segs += [cv.rst("c", rel=6 + 10_000_000)]  # far beyond the 65,535 window
    segs += [cv.rst("s", rel=-5000)]  # before the client's RCV.NXT: old
    segs += [cv.c(b"part2"), cv.s(b"resp"), cv.ack("c"), cv.ack("s")]
    rec = only(recon(segs))
    assert rec["close"] == "eof"
    check_dir(rec["c2s"], b"part1-part2")
    check_dir(rec["s2c"], b"resp")
    assert anoms(rec) == {"rst_out_of_window": 2}


def test_rst_in_window_but_not_exact_does_not_close():
    cv = Conversation()
    segs = cv.handshake() + [cv.c(b"abc"), cv.ack("s")]
    segs += [cv.rst("c", rel=3 + 100)]  # in window, not at RCV.NXT: challenge-ACK case
    segs += [cv.c(b"def"), cv.ack("s")]
    rec = only(recon(segs))
    assert rec["close"] == "eof"
    check_dir(rec["c2s"], b"abcdef")
    assert anoms(rec) == {"rst_inexact": 1}


def test_exact_rst_closes_flow_with_rst():
    cv = Conversation()
    segs = cv.handshake() + [cv.c(b"request"), cv.s(b"partial-resp"), cv.ack("c")]
    segs += [cv.rst("s")]  # seq = server SND.NXT = client's RCV.NXT
    frames = to_frames(segs)
    from uinet_tap.api import reconstruct

    rec = only(reconstruct(frames, linktype=1, keep_streams=True))
    assert rec["close"] == "rst"
    assert rec["end"] == pytest.approx(frames[-1][0])
    check_dir(rec["c2s"], b"request")
    check_dir(rec["s2c"], b"partial-resp")
    assert anoms(rec) == {}


def test_exact_rst_without_ack_flag_closes_flow():
    cv = Conversation()
    segs = cv.handshake() + [cv.c(b"abc"), cv.ack("s"), cv.rst("c", flags="R")]
    rec = only(recon(segs))
    assert rec["close"] == "rst"
    check_dir(rec["c2s"], b"abc")


def test_rst_with_old_timestamp_still_resets():
    # Timestamps negotiated; an exact-seq RST whose TSval is older than the last one seen from
    # that side: PAWS does not apply to a RST (RFC 7323 §5.3 R1; Linux tcp_validate_incoming
    # "Reset is accepted even if it did not pass PAWS"). Nothing after it reaches the server.
    cv = Conversation()
    segs = [
        cv.syn(ts=(5000, 0)),
        cv.synack(ts=(9000, 5000)),
        cv.ack("c", options=opt_timestamps(5001, 9000)),
    ]
    segs += [cv.c(b"before-", options=opt_timestamps(5002, 9000))]
    segs += [cv.ack("s", options=opt_timestamps(9001, 5002))]
    segs += [cv.rst("c", options=opt_timestamps(100, 9001))]  # exact seq, TSval from the past
    segs += [cv.c(b"after", options=opt_timestamps(5003, 9001))]
    segs += [cv.ack("s", options=opt_timestamps(9002, 5003))]
    rec = only(recon(segs))
    assert rec["close"] == "rst"
    check_dir(rec["c2s"], b"before-")
    assert anoms(rec) == {"data_after_rst": 1}


def ts_opening(cv: Conversation) -> list:
    """A handshake with timestamps, the client's "first-" and the server's ACK of it: the
    server's TS.Recent for the client is 5002."""
    return [
        cv.syn(ts=(5000, 0)),
        cv.synack(ts=(9000, 5000)),
        cv.ack("c", options=opt_timestamps(5001, 9000)),
        cv.c(b"first-", options=opt_timestamps(5002, 9000)),
        cv.ack("s", options=opt_timestamps(9001, 5002)),
    ]


def test_data_with_old_timestamp_is_dropped_paws():
    # RFC 7323 §5.3 R1: a data segment whose TSval is older than TS.Recent is not acceptable;
    # the copy that follows with a current TSval is what the server reads.
    cv = Conversation()
    segs = ts_opening(cv)
    segs += [cv.data("c", b"EVIL", options=opt_timestamps(4000, 9001), advance=False)]
    segs += [cv.c(b"GOOD", options=opt_timestamps(5003, 9001))]
    segs += [cv.ack("s", options=opt_timestamps(9002, 5003))]
    rec = only(recon(segs))
    check_dir(rec["c2s"], b"first-GOOD")
    assert anoms(rec) == {"paws_rejected": 1}


def test_stale_data_the_receiver_acknowledges_is_what_it_read():
    # PAWS judged at the capture point, not at the receiver: the tap saw the retransmission
    # of "AAAA" (TSval 5050; its first copy was lost before the tap) before "BBBB" (TSval
    # 5003, held back on the way), so "BBBB" looked stale here. Reordered after the tap, the
    # server got "BBBB" first, while its TS.Recent was still 5002, and took it out of order,
    # then "AAAA". Its ACK says so: the bytes are in the stream, no gap.
    cv = Conversation()
    segs = ts_opening(cv)
    segs += [cv.data("c", b"AAAA", rel=6, options=opt_timestamps(5050, 9001))]
    segs += [cv.data("c", b"BBBB", rel=10, options=opt_timestamps(5003, 9001))]
    segs += [cv.ack("s", options=opt_timestamps(9002, 5003))]
    rec = only(recon(segs))
    check_dir(rec["c2s"], b"first-AAAABBBB")
    assert rec["c2s"]["gaps"] == []
    assert anoms(rec) == {"paws_rejected": 1}
    # Not acknowledged, the same stale bytes stay out (the receiver dropped them), counted as
    # bytes held that no ACK took.
    cv = Conversation()
    segs = ts_opening(cv) + [
        cv.data("c", b"AAAA", rel=6, options=opt_timestamps(5050, 9001)),
        cv.data("c", b"BBBB", rel=10, options=opt_timestamps(5003, 9001), advance=False),
        cv.ack("s", ack=cv.seq_of("c", 10), options=opt_timestamps(9002, 5050)),
    ]
    rec = only(recon(segs))
    check_dir(rec["c2s"], b"first-AAAA")
    assert anoms(rec) == {"paws_rejected": 1, "data_not_acknowledged": 1}


def test_a_stale_fin_the_receiver_acknowledges_closes():
    # The same at the close: the FIN came stale by PAWS where the capture is, and the
    # server's ACK covers it, so the server took it and the connection closes as FIN.
    cv = Conversation()
    segs = ts_opening(cv) + [
        cv.data("c", b"AAAA", rel=6, options=opt_timestamps(5050, 9001)),
        cv.fin("c", options=opt_timestamps(5003, 9001)),
        cv.ack("s", options=opt_timestamps(9002, 5003)),
        cv.fin("s", options=opt_timestamps(9003, 5003)),
        cv.ack("c", options=opt_timestamps(5051, 9003)),
    ]
    rec = only(recon(segs))
    check_dir(rec["c2s"], b"first-AAAA")
    assert rec["close"] == "fin"
    assert anoms(rec) == {"paws_rejected": 1}


def test_data_after_rst_is_flagged():
    cv = Conversation()
    segs = cv.handshake() + [cv.c(b"abc"), cv.ack("s"), cv.rst("c")]
    segs += [cv.c(b"zombie")]  # same tuple, no SYN, right after the RST
    res = recon(segs)
    recs = res.records
    assert recs[0]["close"] == "rst"
    # The late segment is attributed to the reset connection (one record) and flagged, as
    # Zeek's data_after_reset weird does; the server's application never reads it.
    assert recs[0]["c2s"]["data"] == b"abc"
    assert len(recs) == 1
    assert recs[0]["anomalies"]["data_after_rst"] == 1


# --------------------------------------------------------------------------- FIN


def test_half_close_data_after_one_fin_is_reconstructed():
    cv = Conversation()
    segs = cv.handshake() + [cv.c(b"GET /big"), cv.fin("c"), cv.ack("s")]
    segs += [cv.s(b"chunk1,"), cv.s(b"chunk2,"), cv.ack("c"), cv.s(b"chunk3"), cv.ack("c")]
    segs += [cv.fin("s"), cv.ack("c")]
    rec = only(recon(segs))
    assert rec["close"] == "fin"
    check_dir(rec["c2s"], b"GET /big")
    check_dir(rec["s2c"], b"chunk1,chunk2,chunk3")
    assert anoms(rec) == {}


def test_single_fin_does_not_close_flow():
    cv = Conversation()
    segs = cv.handshake() + [cv.c(b"q"), cv.fin("c"), cv.ack("s"), cv.s(b"still talking")]
    rec = only(recon(segs))
    # ASSUMPTION: only one side FIN'd before the capture ended -> "eof", not "fin".
    assert rec["close"] == "eof"
    check_dir(rec["s2c"], b"still talking")


def test_fin_carrying_data():
    cv = Conversation()
    segs = cv.handshake() + [cv.fin("c", payload=b"last-words"), cv.fin("s"), cv.ack("c")]
    rec = only(recon(segs))
    assert rec["close"] == "fin"
    check_dir(rec["c2s"], b"last-words")


# --------------------------------------------------------------------------- tuple reuse


def test_tuple_reuse_new_isn_starts_second_record():
    a = Conversation(cisn=1000, sisn=5000, t0=1000.0)
    segs = a.handshake() + [a.c(b"first"), a.s(b"one"), a.fin("c"), a.fin("s"), a.ack("c")]
    b = Conversation(cisn=900_000_000, sisn=3_000_000_000, t0=1001.0)  # same 4-tuple
    segs += b.handshake() + [b.c(b"second"), b.s(b"two"), b.ack("c")]
    res = recon(segs)
    assert len(res.records) == 2
    r1, r2 = res.records
    assert r1["id"] < r2["id"]
    assert (r1["client"], r1["server"]) == (C, S) == (r2["client"], r2["server"])
    assert r1["close"] == "fin" and r2["close"] == "eof"
    check_dir(r1["c2s"], b"first")
    check_dir(r1["s2c"], b"one")
    check_dir(r2["c2s"], b"second")
    check_dir(r2["s2c"], b"two")
    assert r2["midstream"] is False
    assert res.stats["connections"] == 2
    assert res.stats["anomalies"]["tuple_reuse"] == 1


def test_retransmitted_syn_same_isn_is_not_a_new_connection():
    cv = Conversation()
    syn = cv.syn()
    segs = [syn, replace(syn, ts=syn.ts + 1.0), cv.synack(at=syn.ts + 1.01), cv.ack("c")]
    segs += [cv.c(b"data"), cv.ack("s")]
    res = recon(segs)
    rec = only(res)
    check_dir(rec["c2s"], b"data")
    assert "tuple_reuse" not in anoms(res.stats)


def test_late_duplicate_syn_after_close_is_not_tuple_reuse():
    cv = Conversation()
    syn = cv.syn()
    segs = [syn, cv.synack(), cv.ack("c"), cv.c(b"data"), cv.fin("c"), cv.fin("s"), cv.ack("c")]
    segs += [replace(syn, ts=cv.t + 0.01)]  # the original SYN again, same ISN
    res = recon(segs)
    rec = only(res)
    assert rec["close"] == "fin"
    check_dir(rec["c2s"], b"data")
    assert "tuple_reuse" not in anoms(res.stats)


# --------------------------------------------------------------------------- loss


def test_acked_unseen_bytes_become_gap_at_exact_offset():
    cv = Conversation()
    segs = cv.handshake()
    a = cv.c(b"a" * 100)
    _lost = cv.c(b"b" * 100)  # never captured
    c = cv.c(b"c" * 100)
    segs += [a, c, cv.ack("s")]  # server ACKs all 300 bytes
    segs += [cv.c(b"dddd"), cv.ack("s")]  # data after the hole continues
    res = recon(segs)
    rec = only(res)
    check_dir(rec["c2s"], b"a" * 100 + zeros(100) + b"c" * 100 + b"dddd", [(100, 100)])
    # ASSUMPTION: one ack_unseen anomaly per hole.
    assert anoms(rec) == {"ack_unseen": 1}
    assert res.stats["gaps"] == 1 and res.stats["gap_bytes"] == 100


def test_acked_unseen_tail_becomes_gap():
    cv = Conversation()
    segs = cv.handshake() + [cv.c(b"x" * 100)]
    cv.off["c"] += 60  # 60 more bytes sent, never captured
    segs += [cv.ack("s")]  # ACK 160
    rec = only(recon(segs))
    # ASSUMPTION (Zeek content_gap / Suricata ACK-driven gap): an ACK past the last
    # captured byte extends the stream with a trailing gap.
    check_dir(rec["c2s"], b"x" * 100 + zeros(60), [(100, 60)])
    assert anoms(rec) == {"ack_unseen": 1}


def test_leading_gap_after_handshake():
    cv = Conversation()
    segs = cv.handshake()
    _lost = cv.c(b"VERY")
    segs += [cv.c(b"DATA"), cv.ack("s")]
    rec = only(recon(segs))
    check_dir(rec["c2s"], zeros(4) + b"DATA", [(0, 4)])


# --------------------------------------------------------------------------- offload


def test_tso_super_segment_20000_bytes():
    cv = Conversation()
    segs = cv.handshake()
    big = pattern(20_000, 3)
    seg = cv.c(big)
    assert len(seg.l3()) == 20_040
    segs += [seg, cv.ack("s"), cv.s(b"ok"), cv.ack("c")]
    rec = only(recon(segs))
    check_dir(rec["c2s"], big)
    check_dir(rec["s2c"], b"ok")


def test_ipv4_total_length_zero_uses_captured_length():
    cv = Conversation()
    segs = cv.handshake()
    big = pattern(9000, 5)
    seg = cv.c(big, csum="partial")
    seg.ipv4_total_length = 0
    assert seg.l3()[2:4] == b"\x00\x00"
    segs += [seg, cv.ack("s"), cv.c(b"next"), cv.ack("s")]
    rec = only(recon(segs))
    check_dir(rec["c2s"], big + b"next")


# --------------------------------------------------------------------------- checksums


def test_bad_and_partial_checksums_accepted_by_default():
    cv = Conversation()
    segs = cv.handshake()
    segs += [cv.c(b"one,", csum="bad"), cv.c(b"two,", csum="partial"), cv.c(b"three", csum="zero")]
    segs += [cv.ack("s")]
    res = recon(segs)
    rec = only(res)
    check_dir(rec["c2s"], b"one,two,three")
    assert "bad_checksum" not in anoms(res.stats)


@pytest.mark.parametrize("verify", [False, True])
def test_bad_checksum_dropped_with_verify_checksums(verify):
    cv = Conversation()
    segs = cv.handshake()
    segs += [cv.c(b"EVIL", rel=0, csum="bad"), cv.c(b"GOOD", rel=0), cv.ack("s")]
    res = recon(segs, verify_checksums=verify)
    rec = only(res)
    if verify:
        check_dir(rec["c2s"], b"GOOD")
        assert rec["c2s"]["overlap_conflicts"] == 0
        assert res.stats["anomalies"]["bad_checksum"] == 1
    else:
        check_dir(rec["c2s"], b"EVIL")  # accepted, first copy wins
        assert rec["c2s"]["overlap_conflicts"] == 1
        assert "bad_checksum" not in anoms(res.stats)


def test_bad_checksum_ipv6_dropped_with_verify_checksums():
    cv = Conversation(client="2001:db8::1", server="2001:db8::2")
    segs = cv.handshake() + [cv.c(b"X", rel=0, csum="bad"), cv.c(b"Y", rel=0), cv.ack("s")]
    res = recon(segs, verify_checksums=True)
    check_dir(only(res)["c2s"], b"Y")
    assert res.stats["anomalies"]["bad_checksum"] == 1


# --------------------------------------------------------------------------- fragments


def _frag_frames(seg: Seg, frags: list[bytes], linktype=DLT_EN10MB, vlans=()):
    return [(seg.ts + i * 1e-5, encode(f, linktype, vlans)) for i, f in enumerate(frags)]


def test_ipv4_fragments_reassembled_out_of_order():
    cv = Conversation()
    segs = cv.handshake()
    body = pattern(300, 9)
    seg = cv.c(body)
    frags = seg.fragments(64, order=[3, 0, 4, 2, 1])  # 320-byte TCP segment -> 5 fragments
    assert len(frags) == 5
    items = segs + _frag_frames(seg, frags) + [cv.c(b"after"), cv.ack("s")]
    res = recon(items)
    check_dir(only(res)["c2s"], body + b"after")
    # ASSUMPTION: fragments_reassembled counts reassembled datagrams.
    assert res.stats["fragments_reassembled"] == 1


def test_ipv4_fragments_reassembled_in_order_tiny_first_fragment():
    cv = Conversation()
    segs = cv.handshake()
    seg = cv.c(b"fragmented-hello")
    frags = seg.fragments([(0, 8), (8, 16), (24, 12)])  # TCP header split over two fragments
    items = segs + _frag_frames(seg, frags) + [cv.ack("s")]
    res = recon(items)
    check_dir(only(res)["c2s"], b"fragmented-hello")
    assert res.stats["fragments_reassembled"] == 1


def test_ipv6_fragments_reassembled_out_of_order():
    cv = Conversation(client="2001:db8::1", server="2001:db8::2")
    cv.exts = [HOPOPTS, DSTOPTS]
    segs = cv.handshake()
    body = pattern(200, 11)
    seg = cv.c(body)
    # hop-by-hop stays before the fragment header; dst options + TCP are fragmented
    frags = seg.fragments(48, order=[4, 2, 0, 3, 1], unfragmentable=1)
    assert len(frags) == 5
    items = segs + _frag_frames(seg, frags) + [cv.ack("s")]
    res = recon(items)
    rec = only(res)
    assert rec["client"] == C6 and rec["server"] == S6
    check_dir(rec["c2s"], body)
    assert res.stats["fragments_reassembled"] == 1


@pytest.mark.parametrize("v6", [False, True])
def test_overlapping_fragments_counted_and_do_not_crash(v6):
    cv = Conversation(client="2001:db8::1", server="2001:db8::2") if v6 else Conversation()
    segs = cv.handshake()
    body = pattern(120, 13)
    seg = cv.c(body)
    t = seg.tcp()  # 140 bytes: header + payload
    # the second fragment re-sends [48,64) with different bytes, then carries [64,112) alone
    evil = b"\xee" * 16
    pieces = [(0, 64), (48, 64, evil + t[64:112]), (112, len(t) - 112)]
    frags = seg.fragments(pieces, order=[1, 0, 2])
    items = segs + _frag_frames(seg, frags) + [cv.c(b"later-data"), cv.ack("s")]
    res = recon(items)
    rec = only(res)
    # The overlap is counted in stats["fragment_overlaps"]; one copy is kept (bsd policy, as
    # Snort frag3 and Suricata defrag). What lands in [0,120) is not pinned, but nothing is
    # invented: either one of the two copies or a gap.
    assert res.stats["fragment_overlaps"] >= 1
    c2s = rec["c2s"]
    assert c2s["bytes"] == 130
    assert c2s["data"][120:] == b"later-data"
    head = c2s["data"][:120]
    if gaps(c2s):  # datagram dropped: the ACKed hole is a gap
        assert gaps(c2s) == [[0, 120]] and head == zeros(120)
    else:  # reassembled: payload [28,44) was in both copies, the rest must be exact
        assert head[:28] == body[:28] and head[44:] == body[44:]
        assert head[28:44] in (body[28:44], evil)


# --------------------------------------------------------------------------- truncation


def test_snaplen_cut_payload_is_a_gap_never_invented():
    cv = Conversation()
    segs = cv.handshake()
    body = pattern(1000, 17)
    seg = cv.c(body)
    cut = snap((seg.ts, encode(seg.l3())), 200)  # 14 + 20 + 20 header bytes + 146 payload
    assert len(cut[1]) == 200 and cut[2] == 1054
    items = segs + [cut, cv.c(b"tail"), cv.ack("s")]
    res = recon(items)
    rec = only(res)
    check_dir(rec["c2s"], body[:146] + zeros(854) + b"tail", [(146, 854)])
    assert rec["anomalies"]["truncated_segment"] == 1
    assert res.stats["gap_bytes"] == 854


def test_snaplen_cut_at_end_of_stream():
    cv = Conversation()
    segs = cv.handshake()
    seg = cv.s(pattern(500, 19))
    cut = snap((seg.ts, encode(seg.l3())), 54 + 10)  # 10 payload bytes captured
    rec = only(recon(segs + [cut]))
    check_dir(rec["s2c"], pattern(500, 19)[:10] + zeros(490), [(10, 490)])
    assert rec["anomalies"]["truncated_segment"] == 1


# --------------------------------------------------------------------------- VLAN


def _simple(cv: Conversation, c_data=b"req", s_data=b"resp"):
    return cv.handshake() + [cv.c(c_data), cv.s(s_data), cv.ack("c")]


def test_vlan_8021q_id_in_record():
    rec = only(recon(_simple(Conversation()), vlans=[100]))
    assert rec["vlan"] == [100]
    check_dir(rec["c2s"], b"req")
    check_dir(rec["s2c"], b"resp")


def test_qinq_stack_listed_outermost_first():
    rec = only(recon(_simple(Conversation()), vlans=qinq(200, 100)))
    assert rec["vlan"] == [200, 100]
    check_dir(rec["c2s"], b"req")


def test_triple_8021q_stack():
    rec = only(recon(_simple(Conversation()), vlans=[(0x88A8, 7), (0x8100, 8), (0x8100, 9)]))
    assert rec["vlan"] == [7, 8, 9]
    check_dir(rec["s2c"], b"resp")


def test_same_tuple_on_two_vlans_is_two_connections():
    a = _simple(Conversation(), b"vlan-ten", b"A")
    b = _simple(Conversation(), b"vlan-twenty", b"B")
    items = []
    for sa, sb in zip(a, b, strict=True):  # interleaved, same 4-tuple and ISNs
        items.append((sa.ts, ethernet(sa.l3(), [10])))
        items.append((sb.ts, ethernet(sb.l3(), [20])))
    res = recon(items)
    assert len(res.records) == 2
    by_vlan = {tuple(r["vlan"]): r for r in res.records}
    assert set(by_vlan) == {(10,), (20,)}
    check_dir(by_vlan[(10,)]["c2s"], b"vlan-ten")
    check_dir(by_vlan[(20,)]["c2s"], b"vlan-twenty")
    check_dir(by_vlan[(20,)]["s2c"], b"B")


@pytest.mark.parametrize("ignore", [False, True])
def test_ignore_vlan_merges_directions_with_different_tags(ignore):
    cv = Conversation()
    segs = _simple(cv)
    items = [(s.ts, ethernet(s.l3(), [10] if s.src == cv.addr["c"] else [20])) for s in segs]
    res = recon(items, ignore_vlan=ignore)
    if ignore:
        rec = only(res)
        assert rec["client"] == C and rec["midstream"] is False
        check_dir(rec["c2s"], b"req")
        check_dir(rec["s2c"], b"resp")
    else:
        assert len(res.records) == 2


# --------------------------------------------------------------------------- link types


@pytest.mark.parametrize(
    "linktype,v6",
    [
        (DLT_LINUX_SLL, False),
        (DLT_LINUX_SLL, True),
        (DLT_LINUX_SLL2, False),
        (DLT_LINUX_SLL2, True),
        (DLT_RAW, False),
        (DLT_RAW, True),
        (DLT_RAW_IPV4, False),
        (DLT_RAW_IPV6, True),
        (DLT_NULL, False),
        (DLT_NULL, True),
        (DLT_LOOP, False),
        (DLT_LOOP, True),
    ],
)
def test_link_types_decoded(linktype, v6):
    cv = Conversation(client="2001:db8::1", server="2001:db8::2") if v6 else Conversation()
    segs = _simple(cv, b"over-" + str(linktype).encode(), b"back")
    segs += [cv.fin("c"), cv.fin("s"), cv.ack("c")]
    rec = only(recon(segs, linktype=linktype))
    assert (rec["client"], rec["server"]) == ((C6, S6) if v6 else (C, S))
    assert rec["vlan"] == []
    assert rec["close"] == "fin"
    check_dir(rec["c2s"], b"over-" + str(linktype).encode())
    check_dir(rec["s2c"], b"back")


def test_ipv6_extension_headers_before_tcp():
    cv = Conversation(client="2001:db8::1", server="2001:db8::2")
    cv.exts = [HOPOPTS, ROUTING, DSTOPTS]
    segs = _simple(cv, b"through-ext-headers", b"ok") + [cv.fin("c"), cv.fin("s"), cv.ack("c")]
    l3 = segs[0].l3()
    assert l3[6] == 0  # next header = hop-by-hop
    rec = only(recon(segs))
    assert rec["client"] == C6
    assert rec["close"] == "fin"
    check_dir(rec["c2s"], b"through-ext-headers")
    check_dir(rec["s2c"], b"ok")


# --------------------------------------------------------------------------- one direction


def test_one_direction_capture_server_side_only():
    cv = Conversation()
    syn = cv.syn()  # not captured
    segs = [cv.synack(), cv.s(b"part-1|"), cv.s(b"part-2|"), cv.s(b"part-3"), cv.fin("s")]
    assert syn.flags == "S"
    rec = only(recon(segs))
    # the SYN-ACK sender is the server
    assert rec["client"] == C and rec["server"] == S
    check_dir(rec["s2c"], b"part-1|part-2|part-3")
    check_dir(rec["c2s"], b"")
    assert rec["c2s"]["packets"] == 0
    assert rec["close"] == "eof"  # only one FIN


def test_one_direction_capture_without_handshake():
    cv = Conversation()
    segs = [cv.s(b"x" * 700), cv.s(b"y" * 700), cv.s(b"z" * 10)]
    # out of order after the first segment (data before the first captured segment of a
    # mid-stream pickup is not prepended: Suricata/Zeek take the first seen seq as the start)
    segs = [segs[0], segs[2], segs[1]]
    rec = only(recon(segs))
    assert rec["midstream"] is True
    assert rec["client"] == C and rec["server"] == S
    check_dir(rec["s2c"], b"x" * 700 + b"y" * 700 + b"z" * 10)


# --------------------------------------------------------------------------- limits


def test_max_flows_evicts_stalest_flow():
    a = Conversation(cport=40001, t0=1.0)
    b = Conversation(cport=40002, t0=2.0)
    c = Conversation(cport=40003, t0=4.0)
    items = _simple(a, b"A1")  # t=1.00x
    items += _simple(b, b"B1")  # t=2.00x
    items += [a.c(b"A2", at=3.0), a.ack("s")]  # a is fresher than b now
    items += _simple(c, b"C1")  # t=4.00x: third flow, b is the stalest
    items += [c.c(b"C2"), c.ack("s")]
    res = recon(items, max_flows=2)
    recs = res.records
    assert len(recs) == 3
    by_port = {r["client"]: r for r in recs}
    ra, rb, rc = by_port["10.0.0.1:40001"], by_port["10.0.0.1:40002"], by_port["10.0.0.1:40003"]
    assert [r["id"] for r in recs] == sorted(r["id"] for r in recs)
    assert ra["id"] < rb["id"] < rc["id"]
    assert rb["close"] == "evicted"
    assert ra["close"] == "eof" and rc["close"] == "eof"
    check_dir(rb["c2s"], b"B1")
    check_dir(ra["c2s"], b"A1A2")
    check_dir(rc["c2s"], b"C1C2")
    assert res.stats["evicted"] == 1
    assert res.stats["connections"] == 3


def test_max_flow_buffer_forces_hole_to_gap():
    cv = Conversation()
    segs = cv.handshake() + [cv.c(b"h" * 100)]
    body = pattern(3000, 23)
    # [100, 200) is never captured; 3,000 out-of-order bytes pile up above it, no ACKs
    segs += [cv.c(body[i : i + 500], rel=200 + i) for i in range(0, 3000, 500)]
    segs += [cv.c(b"tail")]  # in order after the forced advance
    rec = only(recon(segs, max_flow_buffer=1000))
    check_dir(rec["c2s"], b"h" * 100 + zeros(100) + body + b"tail", [(100, 100)])


def test_max_flow_buffer_many_holes_does_not_crash():
    cv = Conversation()
    segs = cv.handshake()
    # every other 100-byte block missing, 40 blocks, cap 512 bytes
    segs += [cv.c(pattern(100, i), rel=i * 200 + 100) for i in range(40)]
    rec = only(recon(segs, max_flow_buffer=512))
    c2s = rec["c2s"]
    assert c2s["bytes"] == 40 * 200
    assert len(c2s["data"]) == c2s["bytes"]
    for i in range(40):
        assert c2s["data"][i * 200 + 100 : i * 200 + 200] == pattern(100, i)
    assert sum(g[1] for g in gaps(c2s)) == 40 * 100
    assert all(c2s["data"][o : o + n] == zeros(n) for o, n in gaps(c2s))


def test_idle_established_flow_closes_with_timeout():
    a = Conversation(cport=40001, t0=1000.0)
    b = Conversation(cport=40002, t0=1100.0)  # 100 s later: past a 10 s timeout
    a_segs = _simple(a, b"idle")
    items = a_segs + _simple(b, b"active")
    res = recon(items, timeout_established=10)
    recs = {r["client"]: r for r in res.records}
    ra, rb = recs["10.0.0.1:40001"], recs["10.0.0.1:40002"]
    assert ra["close"] == "timeout"
    assert ra["end"] == pytest.approx(a_segs[-1].ts)
    check_dir(ra["c2s"], b"idle")
    assert rb["close"] == "eof"
    check_dir(rb["c2s"], b"active")


def test_half_open_flow_times_out_with_half_open_timeout():
    a = Conversation(cport=40001, t0=1000.0)
    b = Conversation(cport=40002, t0=1010.0)
    items = [a.syn()] + _simple(b, b"x")
    res = recon(items, timeout_half_open=5, timeout_established=600)
    recs = {r["client"]: r for r in res.records}
    assert recs["10.0.0.1:40001"]["close"] == "timeout"
    assert recs["10.0.0.1:40002"]["close"] == "eof"


def test_flow_not_timed_out_before_deadline():
    a = Conversation(cport=40001, t0=1000.0)
    b = Conversation(cport=40002, t0=1005.0)
    res = recon(_simple(a) + _simple(b), timeout_established=10)
    assert {r["close"] for r in res.records} == {"eof"}


# --------------------------------------------------------------------------- undecodable


def test_undecodable_frames_are_counted_not_fatal():
    cv = Conversation()
    good = _simple(cv)
    arp = ethernet(b"\x00\x01\x08\x00\x06\x04\x00\x01" + b"\x00" * 20, ethertype=ETH_ARP)
    udp = ethernet(udp_packet("10.0.0.1", "10.0.0.2", 5353, 53, b"dns?"))
    bad_ihl = bytearray(ipv4_header("10.0.0.1", "10.0.0.2", 6, 20) + b"\x00" * 20)
    bad_ihl[0] = 0x43  # IHL 3 (< 5)
    tcp_bad_off = bytearray(good[1].l3())
    tcp_bad_off[20 + 12] = 0x20  # TCP data offset 2 (< 5)
    items = [
        (good[0].ts - 0.5, b"\x01\x02\x03"),
        (good[0].ts - 0.4, arp),
        (good[0].ts - 0.3, udp),
        (good[0].ts - 0.2, ethernet(bytes(bad_ihl))),
        (good[0].ts - 0.1, ethernet(bytes(tcp_bad_off))),
    ] + good
    res = recon(items)
    rec = only(res)
    check_dir(rec["c2s"], b"req")
    und = {k: v for k, v in res.stats["undecodable"].items() if v}
    assert und == {
        "short_frame": 1,
        "unsupported_ethertype": 1,
        "non_tcp": 1,
        "bad_ip_header": 1,
        "bad_tcp_header": 1,
    }
    assert res.stats["packets"] == len(items)


def test_endpoint_spelling_helper():
    # guards the helper the other tests rely on
    assert endpoint("2001:db8:0:0::1", 80) == "[2001:db8::1]:80"
    assert endpoint("10.0.0.1", 40000) == C


def test_keep_streams_false_has_no_data_key():
    from uinet_tap.api import reconstruct

    cv = Conversation()
    res = reconstruct(to_frames(_simple(cv)), linktype=1)
    rec = only(res)
    assert "data" not in rec["c2s"] and "data" not in rec["s2c"]
    assert rec["c2s"]["sha256"] == hashlib.sha256(b"req").hexdigest()
    assert rec["s2c"]["bytes"] == 4


def test_ipv6_fragments_over_vlan():
    # suricata-verify bug-6887 shape: fragmented IPv6/TCP behind an 802.1Q tag
    cv = Conversation(client="2001:db8::1", server="2001:db8::2")
    segs = cv.handshake()
    body = pattern(150, 29)
    seg = cv.c(body)
    frags = seg.fragments(64, order=[1, 2, 0])
    items = segs + _frag_frames(seg, frags, vlans=[42]) + [cv.ack("s")]
    res = recon(items, vlans=[42])
    rec = only(res)
    assert rec["vlan"] == [42]
    check_dir(rec["c2s"], body)
    assert res.stats["fragments_reassembled"] == 1


def test_gap_across_sequence_wraparound():
    cv = Conversation(cisn=2**32 - 51, sisn=7)  # client data starts at 2**32 - 50
    segs = cv.handshake() + [cv.c(b"a" * 40)]
    lost = cv.c(b"b" * 20)  # covers the wrap: 2**32 - 10 .. 10, never captured
    assert lost.seq == 2**32 - 10
    segs += [cv.c(b"c" * 30), cv.ack("s")]
    rec = only(recon(segs))
    check_dir(rec["c2s"], b"a" * 40 + zeros(20) + b"c" * 30, [(40, 20)])


def test_rst_refusing_syn_closes_with_rst():
    cv = Conversation()
    syn = cv.syn()
    refuse = cv.rst("s", seq=0, flags="RA")  # RFC 9293: RST to a SYN, ACK = ISN + 1
    assert refuse.ack == (1000 + 1)
    rec = only(recon([syn, refuse]))
    assert rec["close"] == "rst"
    assert rec["client"] == C and rec["midstream"] is False
    check_dir(rec["c2s"], b"")
    check_dir(rec["s2c"], b"")


@pytest.mark.parametrize("established,expected", [(600, "eof"), (50, "timeout")])
def test_half_closed_flow_uses_established_timeout(established, expected):
    a = Conversation(cport=40001, t0=1000.0)
    b = Conversation(cport=40002, t0=1100.0)
    items = _simple(a, b"bye") + [a.fin("c"), a.ack("s")] + _simple(b, b"x")
    res = recon(items, timeout_closing=10, timeout_established=established)
    recs = {r["client"]: r for r in res.records}
    # ASSUMPTION (Suricata: FIN_WAIT/CLOSE_WAIT keep the "established" flow timeout; only
    # LAST_ACK/TIME_WAIT/CLOSED use "closed"): a half-closed flow can stream for a long time,
    # so it is judged by timeout_established, not timeout_closing.
    assert recs["10.0.0.1:40001"]["close"] == expected
    check_dir(recs["10.0.0.1:40001"]["c2s"], b"bye")
    assert recs["10.0.0.1:40002"]["close"] == "eof"


def test_max_buffer_total_cap_forces_holes_without_losing_data():
    convs = [Conversation(cport=40001 + i) for i in range(3)]
    items = []
    for cv in convs:
        items += cv.handshake()
    for cv in convs:  # each flow: hole [0,100), then 600 out-of-order bytes
        items += [cv.c(pattern(300, cv.port["c"]), rel=100), cv.c(pattern(300, 1), rel=400)]
    res = recon(items, max_buffer=1000, max_flow_buffer=1 << 20)
    assert len(res.records) == 3
    for r in res.records:
        port = int(r["client"].rsplit(":", 1)[1])
        c2s = r["c2s"]
        check_dir(c2s, zeros(100) + pattern(300, port) + pattern(300, 1), [(0, 100)])


def test_rst_after_both_fins_keeps_close_fin():
    # Both FINs exchanged and ACKed; then a kernel answers a late duplicate ACK with a RST
    # (seen in real captures). The connection ended cleanly: close stays "fin".
    cv = Conversation()
    segs = cv.handshake() + [cv.c(b"req"), cv.s(b"resp")]
    segs += [cv.fin("c"), cv.fin("s"), cv.ack("c")]
    segs += [cv.rst("s")]
    rec = only(recon(segs))
    assert rec["close"] == "fin"
    assert anoms(rec) == {"rst_after_fin": 1}
    check_dir(rec["c2s"], b"req")
    check_dir(rec["s2c"], b"resp")
