"""The inline frame loop without a network: synthetic frames in, fake ports record what the
tool sends. Checks the exact frames of a block and of a cut-in (sequence numbers, MACs, tags,
TTL, timestamps) and that forwarding is byte-for-byte."""

from __future__ import annotations

import asyncio
import struct
import sys
import time
from pathlib import Path

import dpkt
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from frames import Conversation, ethernet, opt_timestamps, qinq  # noqa: E402
from uinet_tap.plugins.policy import parse_policy  # noqa: E402
from uinet_tap.plugins.registry import builtin_detectors  # noqa: E402
from uinet_tap.stack import fastpath  # noqa: E402
from uinet_tap.stack.bridge import FlowMode  # noqa: E402
from uinet_tap.stack.cutin import l2_header  # noqa: E402
from uinet_tap.stack.fastpath import lib  # noqa: E402

from uinet_tap.engine import Options  # noqa: E402
from uinet_tap.inline import Inline  # noqa: E402
from uinet_tap.ports import RxBatch  # noqa: E402

CLIENT_MAC = bytes.fromhex("02aa00000001")
SERVER_MAC = bytes.fromhex("02bb00000002")
TAGS = qinq(200, 100)


class FakePort:
    def __init__(self, name: str) -> None:
        self.name = name
        self.mtu = 1500
        self.sent: list[bytes] = []
        self.received = 0
        self.send_errors: dict[str, int] = {}
        self.inbox: list[bytes] = []  # what recv() hands out
        self.sent_in_c = 0
        self.batch_bytes = 0
        self.ring_cut = 0
        self.in_ring = False
        self.lagging = False  # what behind() says

    def behind(self) -> bool:
        return self.lagging

    def waiting(self) -> bool:
        return bool(self.inbox)

    def send(self, frame: bytes) -> bool:
        self.sent.append(frame)
        return True

    def send_frames(self, frames: list[bytes]) -> int:
        self.sent += frames
        return len(frames)

    def drops(self) -> int:
        return 0

    def recv(self, limit: int) -> list[tuple[bytes, bool]]:
        batch, self.inbox = self.inbox[:limit], self.inbox[limit:]
        return [(f, False) for f in batch]

    # Where C is built, inline reads batches into C's buffer (ports.py RxBatch) and C sends
    # the frames of passed flows from there: the same frames, through the C path.
    def recv_batch(self, batch: RxBatch, max_l3: int) -> int:
        frames, self.inbox = self.inbox[: lib.UT_RX_MAX], self.inbox[lib.UT_RX_MAX :]
        for k, f in enumerate(frames):
            off = k * lib.UT_RX_SLOT
            batch.data[off : off + len(f)] = f
            batch.offsets[k], batch.lengths[k], batch.times[k] = off, len(f), time.time()
            batch.flags[k] = lib.UT_RX_BIG if len(l2_header(f)) + max_l3 < len(f) else 0
        batch.count = len(frames)
        self.received += len(frames)
        return len(frames)

    def use_ring(self) -> bool:
        return False  # the frames are put in the batch's own buffer

    def release_batch(self) -> None:
        pass

    def send_batch(self, batch: RxBatch, start: int, stop: int) -> int:
        """As ut_tx sends: a super-frame cut to the MTU by C (stack/_offload.c), a frame C
        shed left out."""
        self.batch_cut = self.batch_whole = 0
        for i in range(start, stop):
            if batch.flags[i] & lib.UT_RX_DROP:
                continue
            frame = batch.frame(i)[0]
            pieces = [frame]
            if batch.flags[i] & lib.UT_RX_BIG:
                pieces = fastpath.resegment(frame, self.mtu)
                self.batch_cut += len(pieces) > 1
                self.batch_whole += len(pieces) == 1
            self.sent += pieces
            self.sent_in_c += len(pieces)
        self.batch_bytes = sum(
            batch.lengths[i] for i in range(start, stop) if not batch.flags[i] & lib.UT_RX_DROP
        )
        return stop - start


def make(policy: str = "", **kw) -> tuple[Inline, FakePort, FakePort, list[dict]]:  # type: ignore[no-untyped-def]
    a, b = FakePort("a"), FakePort("b")
    records: list[dict] = []
    inline = Inline(
        (a, b),  # type: ignore[arg-type]
        builtin_detectors(),
        parse_policy(policy) if policy else None,
        Options(),
        records.append,
        lambda name, msg: None,
        **kw,
    )
    return inline, a, b, records


def wire(seg, from_client: bool, ttl: int | None = None) -> bytes:  # type: ignore[no-untyped-def]
    if ttl is not None:
        seg.ttl = ttl
    src, dst = (CLIENT_MAC, SERVER_MAC) if from_client else (SERVER_MAC, CLIENT_MAC)
    return ethernet(seg.l3(), TAGS, src_mac=src, dst_mac=dst)


def feed(inline: Inline, seg, from_client: bool, ttl: int | None = None) -> bytes:  # type: ignore[no-untyped-def]
    frame = wire(seg, from_client, ttl)
    inline.frame(0 if from_client else 1, frame, False)
    return frame


def parse(frame: bytes) -> tuple[dpkt.ethernet.Ethernet, dpkt.ip.IP, dpkt.tcp.TCP]:
    eth = dpkt.ethernet.Ethernet(frame)
    return eth, eth.data, eth.data.data


def test_passed_flow_is_forwarded_byte_for_byte_and_forgotten_when_it_ends() -> None:
    inline, a, b, records = make()
    conv = Conversation()
    sent_c, sent_s = [], []
    for seg in conv.handshake():
        (sent_c if seg.sport == 40000 else sent_s).append(feed(inline, seg, seg.sport == 40000))
    sent_c.append(feed(inline, conv.c(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), True))
    sent_s.append(feed(inline, conv.s(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), False))
    # decided: pass, forwarded first from now on
    assert inline.bridge.count(FlowMode.PASSED) == 1
    sent_c.append(feed(inline, conv.fin("c"), True))
    sent_s.append(feed(inline, conv.fin("s"), False))
    sent_c.append(feed(inline, conv.ack("c"), True))
    assert b.sent == sent_c and a.sent == sent_s  # every frame, unchanged, other port
    inline.finish()
    assert [r["verdict"] for r in records] == ["pass"] and records[0]["close"] == "fin"
    assert len(inline.bridge) == 0 and not inline.bridge.by_key


@pytest.mark.parametrize("fastpath_mode", ["off", "c"])
def test_the_clock_ends_no_connection_whose_frames_wait_to_be_read(fastpath_mode, monkeypatch):  # type: ignore[no-untyped-def]
    """Inline's ticker expires flows on the clock. Read behind its traffic, the clock is ahead
    of the frames still queued: the connection's closing frames wait in the port, and the
    tick (an hour and more on) must leave it to them, as watch does."""
    monkeypatch.setenv("UINET_TAP_FASTPATH", fastpath_mode)
    inline, a, b, records = make()
    conv = Conversation()
    for seg in conv.handshake():
        feed(inline, seg, seg.sport == 40000)
    feed(inline, conv.c(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), True)
    feed(inline, conv.s(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), False)
    feed(inline, conv.fin("s"), False)
    a.inbox += [wire(conv.fin("c"), True), wire(conv.ack("c"), True)]  # not read yet
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 7200)
    inline.tick()
    monkeypatch.setattr(time, "time", real)
    inline.on_readable(0)
    inline.finish()
    assert [(r["close"], r["c2s"]["packets"]) for r in records] == [("fin", 5)], records


# Frame layouts for the passed-flow tests: what C parses (up to two tags, IPv4 or IPv6)
# and a tag stack it leaves to Python.
THREE_TAGS = [(0x88A8, 300), (0x8100, 200), (0x8100, 100)]
LAYOUTS = {"v4": (False, []), "v4-qinq": (False, TAGS), "v6": (True, []),
           "v6-qinq": (True, TAGS), "v4-three-tags": (False, THREE_TAGS)}  # fmt: skip


def _passed_download(
    fastpath: str, monkeypatch, piece: int = 1448, layout: str = "v4"
) -> tuple[Inline, FakePort, FakePort, list, list, list[dict]]:  # type: ignore[no-untyped-def]
    """A download (untagged IPv4 unless ``layout`` says), passed after its first exchange,
    read by on_readable in batches as the ports give them (the frames of both sides
    interleaved as on a wire). ``piece``: the body's bytes a frame (over 1448: GSO
    super-frames, longer than the MTU)."""
    monkeypatch.setenv("UINET_TAP_FASTPATH", fastpath)
    inline, a, b, records = make()
    v6, tags = LAYOUTS[layout]
    conv = Conversation(client="fd00::1", server="fd00::2") if v6 else Conversation()
    if v6:
        piece -= 20  # IPv6's longer header: the same frames, within the MTU
    segs = conv.handshake()
    segs += [conv.c(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), conv.ack("s")]
    body = bytes(range(256)) * 400
    segs += [conv.s(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))]
    for at in range(0, len(body), piece):
        segs += [conv.s(body[at : at + piece]), conv.ack("c")]
    segs += [conv.fin("s"), conv.fin("c"), conv.ack("s")]
    sent_c, sent_s = [], []
    for seg in segs:
        side = 0 if seg.sport == 40000 else 1
        src, dst = (CLIENT_MAC, SERVER_MAC) if side == 0 else (SERVER_MAC, CLIENT_MAC)
        frame = ethernet(seg.l3(), tags, src_mac=src, dst_mac=dst)
        (sent_c if side == 0 else sent_s).append(frame)
        (a if side == 0 else b).inbox.append(frame)
        # a few frames of one side at a time, as each port's batch reads them
        if len(a.inbox) + len(b.inbox) >= 7:
            inline.on_readable(0)
            inline.on_readable(1)
    inline.on_readable(0)
    inline.on_readable(1)
    return inline, a, b, sent_c, sent_s, records


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_c_forwards_a_passed_flow_as_python_does(layout, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Once a flow is passed, C counts its frames and sends them on from its own buffer
    (where it parses them: up to two VLAN tags, IPv4 or IPv6): every frame, unchanged, in
    order, out of the other port; the record is the general path's."""
    if lib is None:
        return
    ref = _passed_download("off", monkeypatch, layout=layout)
    got = _passed_download("c", monkeypatch, layout=layout)
    for _inline, a, b, sent_c, sent_s, _ in (ref, got):
        assert b.sent == sent_c and a.sent == sent_s
    assert ref[1].sent_in_c + ref[2].sent_in_c == 0
    c_frames = got[1].sent_in_c + got[2].sent_in_c
    if layout == "v4-three-tags":  # deeper than C parses: Python forwards every frame
        assert c_frames == 0
        return
    assert c_frames >= 100, c_frames  # most of the download's 145 frames
    assert got[0].stats.forwarded_in_c == c_frames
    ref_stats, got_stats = ref[0].finish(), got[0].finish()
    assert ref_stats["inline"]["forwarded"] == got_stats["inline"]["forwarded"]
    untimed = [[{k: v for k, v in r.items() if k not in ("timestamp", "start", "end")}
                for r in recs] for recs in (ref[5], got[5])]  # fmt: skip
    assert untimed[0] == untimed[1] and [r["verdict"] for r in ref[5]] == ["pass"]
    assert ref[5][0]["close"] == "fin" and ref[5][0]["s2c"]["packets"] > 70


def test_c_cuts_a_passed_flows_super_frames_as_python_does(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """GSO super-frames of a passed flow (four MSS each, longer than the MTU) are cut in C
    as the general path cuts them: the same frames out, the same counts, the same record."""
    if lib is None:
        return
    ref = _passed_download("off", monkeypatch, piece=4 * 1448)
    got = _passed_download("c", monkeypatch, piece=4 * 1448)
    assert got[1].sent == ref[1].sent and got[2].sent == ref[2].sent
    assert got[0].stats.forwarded_in_c > 10  # the super-frames among them
    body = b"".join(dpkt.ethernet.Ethernet(f).data.data.data for f in got[1].sent)
    assert body.endswith(bytes(range(256)) * 400)  # the pieces carry the body whole, in order
    assert all(len(f) <= 14 + 1500 for f in got[1].sent)
    ref_stats, got_stats = ref[0].finish(), got[0].finish()
    for key in ("forwarded", "resegmented", "too_big"):
        assert ref_stats["inline"][key] == got_stats["inline"][key], key
    assert got_stats["inline"]["resegmented"] >= 17  # 102,400 bytes in 5,792-byte frames
    untimed = [[{k: v for k, v in r.items() if k not in ("timestamp", "start", "end")}
                for r in recs] for recs in (ref[5], got[5])]  # fmt: skip
    assert untimed[0] == untimed[1]


def _not_tcp_frames() -> list[bytes]:
    """Frames that are not TCP, or may not be: plainly not (ARP, UDP over IPv4 and IPv6,
    ICMPv6, tagged or not) and ones the decoder must look into (an IPv4 fragment, IPv6 with an
    extension header, a GRE tunnel, a malformed IPv4 header, a tag stack past the layer
    limit), interleaved, some longer than the MTU."""
    udp = struct.pack("!HHHH", 5353, 53, 16, 0) + b"12345678"
    v4 = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 44, 1, 0, 64, 17, 0, bytes(4), bytes(4)) + udp
    frag = bytearray(v4)
    frag[6] = 0x20  # more fragments
    gre = bytearray(v4)
    gre[9] = 47
    bad = bytearray(v4)
    bad[0] = 0x44  # an IHL of 16 bytes
    big = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 2028, 2, 0, 64, 17, 0, bytes(4), bytes(4))
    big += bytes(2008)
    v6 = struct.pack("!IHBB", 6 << 28, len(udp), 17, 64) + bytes(32) + udp
    icmp6 = struct.pack("!IHBB", 6 << 28, 8, 58, 255) + bytes(32) + bytes(8)
    hop = struct.pack("!IHBB", 6 << 28, 8 + len(udp), 0, 64) + bytes(32)
    hop += bytes([17, 0]) + bytes(6) + udp
    arp = b"\x00\x01\x08\x00\x06\x04\x00\x01" + bytes(20)
    deep = ethernet(v4, list(range(1, 17)))  # 16 tags: too many layers
    return [
        ethernet(arp, ethertype=0x0806), ethernet(v4), ethernet(v6, qinq(7, 8)),
        ethernet(icmp6), ethernet(bytes(frag)), ethernet(arp, [5], ethertype=0x0806),
        ethernet(hop), ethernet(bytes(gre)), ethernet(v4, [9]), ethernet(bytes(bad)), deep,
        ethernet(big), ethernet(v4),
    ]  # fmt: skip


@pytest.mark.parametrize("mode", ["off", "c"])
def test_frames_not_tcp_are_forwarded_and_counted_alike(mode: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """C forwards what is plainly not TCP without Python, the rest goes to the decoder: the
    same frames out, in order, and the same counts by reason as the general path."""
    if mode == "c" and lib is None:
        return
    got = []
    for path in ("off", mode):
        monkeypatch.setenv("UINET_TAP_FASTPATH", path)
        inline, a, b, _ = make()
        a.mtu = 1500
        frames = _not_tcp_frames()
        a.inbox += frames
        inline.on_readable(0)
        stats = inline.finish()
        assert b.sent[:11] == frames[:11] and b.sent[-1] == frames[-1]  # untouched, in order
        got.append((b.sent, stats["undecodable"], stats["inline"]["forwarded"],
                    stats["inline"]["too_big"], inline.stats.forwarded_in_c))  # fmt: skip
    ref, c = got
    assert c[:4] == ref[:4]
    assert ref[1]["non_tcp"] >= 5 and ref[1]["unsupported_ethertype"] == 2, ref[1]
    if mode == "c":
        assert c[4] == 8  # ARP twice, UDP and ICMPv6 plainly, the long UDP frame


def test_non_tcp_frames_are_forwarded_unchanged() -> None:
    inline, a, b, _ = make()
    arp = ethernet(b"\x00\x01\x08\x00\x06\x04\x00\x01" + bytes(20), ethertype=0x0806)
    inline.frame(1, arp, False)
    assert a.sent == [arp] and b.sent == []


def test_block_at_the_syn_answers_the_client_and_drops_the_syn() -> None:
    inline, a, b, records = make('[[rule]]\nport = 80\naction = "block"\n')
    conv = Conversation()
    syn = conv.syn()
    feed(inline, syn, True, ttl=61)
    assert b.sent == []  # the SYN never reaches the server
    (rst,) = a.sent
    eth, ip, tcp = parse(rst)
    assert eth.src == SERVER_MAC and eth.dst == CLIENT_MAC
    assert rst[12:20] == wire(syn, True)[12:20]  # the same QinQ tag stack
    assert tcp.flags == dpkt.tcp.TH_RST | dpkt.tcp.TH_ACK and tcp.ack == conv.isn["c"] + 1
    assert (tcp.sport, tcp.dport) == (80, 40000)
    inline.finish()
    assert records[0]["verdict"] == "block" and records[0]["close"] == "rst"


def test_block_after_detection_resets_both_ends_at_the_numbers_they_expect() -> None:
    inline, a, b, records = make('[[rule]]\nprotocol = "http"\naction = "block"\n')
    conv = Conversation()
    for seg in conv.handshake():
        feed(inline, seg, seg.sport == 40000, ttl=64 if seg.sport == 40000 else 57)
    a.sent.clear()
    b.sent.clear()
    request = conv.c(b"GET / HTTP/1.1\r\nHost: blocked.example\r\n\r\n")
    feed(inline, request, True)
    (to_client,) = a.sent
    (to_server,) = b.sent
    _, ip_c, rst_c = parse(to_client)
    _, ip_s, rst_s = parse(to_server)
    assert rst_c.flags & dpkt.tcp.TH_RST and rst_c.seq == conv.seq_of("s", 0)  # client's ACK
    assert ip_c.ttl == 57  # as the server's own frames
    assert rst_s.flags & dpkt.tcp.TH_RST and rst_s.seq == conv.seq_of("c", 0)  # not forwarded
    assert request.payload not in to_server
    # a retransmission of the request is dropped and answered again
    a.sent.clear()
    feed(inline, conv.c(b"GET / HTTP/1.1\r\nHost: blocked.example\r\n\r\n", rel=0), True)
    assert len(a.sent) == 1 and b.sent == [to_server]
    inline.finish()
    assert records[0]["verdict"] == "block" and records[0]["close"] == "rst"


def test_cut_in_continues_both_sides_numbers_macs_tags_ttl_and_timestamps() -> None:
    """INTERCEPT by a port rule (at the SYN, so armed until the handshake is done): the
    client's request is not forwarded; the relay hands it to the tool's client-side endpoint,
    which sends it to the server as the client would have."""

    async def run() -> None:
        inline, a, b, records = make('[[rule]]\nport = 80\naction = "intercept"\n')
        conv = Conversation()
        hs = conv.handshake(wscale=7, ts=(1000, 0))
        feed(inline, hs[0], True, ttl=63)
        hs1 = conv.synack(wscale=7, ts=(9000, 1000))
        feed(inline, hs1, False, ttl=58)
        ack = conv.ack("c", options=opt_timestamps(1001, 9000))
        feed(inline, ack, True, ttl=63)
        assert len(b.sent) == 2 and len(a.sent) == 1  # the handshake went through
        request = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
        feed(inline, conv.c(request, options=opt_timestamps(1002, 9000)), True, ttl=63)
        assert inline.sessions, "cut in at the first data after the handshake"
        await asyncio.sleep(0.05)
        ours = b.sent[2:]
        assert ours, "the relay sent the request on"
        eth, ip, tcp = parse(ours[0])
        assert tcp.data == request and tcp.seq == conv.seq_of("c", 0)
        assert tcp.ack == conv.seq_of("s", 0)
        assert eth.src == CLIENT_MAC and eth.dst == SERVER_MAC and ip.ttl == 63
        assert ours[0][12:20] == wire(ack, True)[12:20]  # the QinQ stack as the client's
        opts = dict(dpkt.tcp.parse_opts(tcp.opts))
        tsval = int.from_bytes(opts[dpkt.tcp.TCP_OPT_TIMESTAMP][:4], "big")
        tsecr = int.from_bytes(opts[dpkt.tcp.TCP_OPT_TIMESTAMP][4:], "big")
        assert tsval >= 1002 and tsecr == 9000
        # towards the client, the tool (as the server) acknowledged the request
        acks = [parse(f)[2] for f in a.sent[1:]]
        assert acks and acks[-1].ack == conv.seq_of("c", len(request))
        assert all(parse(f)[0].src == SERVER_MAC for f in a.sent[1:])
        assert all(parse(f)[1].ttl == 58 for f in a.sent[1:])
        inline.shutdown()
        inline.finish()
        assert records[0]["verdict"] == "intercept"
        assert records[0]["intercept"]["result"] == "aborted at exit"

    asyncio.run(run())


def test_an_armed_cut_in_drops_the_frame_that_would_open_a_hole() -> None:
    """Armed (the client has acknowledged nothing yet), a segment past everything the client
    was seen sending means the bytes before it were lost on the way: forwarded, it would
    leave a hole the tool cannot resend, which under steady loss keeps the cut-in waiting
    for good. It is dropped and counted; the client resends, and the tool takes over."""

    async def run() -> None:
        inline, a, b, records = make('[[rule]]\nport = 80\naction = "intercept"\n')
        conv = Conversation()
        feed(inline, conv.syn(), True)
        feed(inline, conv.synack(), False)
        late = conv.c(b"y" * 100, rel=100)
        feed(inline, late, True)
        assert len(b.sent) == 1 and inline.stats.cut_in_held == 1  # only the SYN went on
        assert not inline.sessions
        feed(inline, conv.c(b"x" * 100, rel=0), True)  # in order: forwarded, still armed
        assert len(b.sent) == 2 and inline.stats.cut_in_held == 1 and not inline.sessions
        feed(inline, late, True)  # resent: now it is the cut-in's frame
        assert inline.sessions and len(b.sent) == 2
        await asyncio.sleep(0.02)
        inline.shutdown()
        inline.finish()
        assert records[0]["verdict"] == "intercept" and "intercept" in records[0]

    asyncio.run(run())


def test_a_frame_that_raises_is_counted_once_and_the_batch_goes_on(capsys) -> None:  # type: ignore[no-untyped-def]
    """A bug met on one frame must neither stop the bridge nor lose the frames after it."""
    inline, a, b, _ = make()
    # a UDP fragment: the decoder's to look at (C forwards only what is plainly not TCP)
    frag = ethernet(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 1, 0x2000, 64, 17, 0, bytes(4),
                               bytes(4)) + bytes(8))  # fmt: skip
    poison = frag[:-1] + b"\xff"
    decode = inline.decoder.decode

    def flaky(ts, frame, *rest):  # type: ignore[no-untyped-def]
        if frame == poison:
            raise ValueError("boom")
        return decode(ts, frame, *rest)

    inline.decoder.decode = flaky  # type: ignore[method-assign]
    a.inbox = [frag, poison, frag, poison, frag]
    inline.on_readable(0)
    assert b.sent == [frag, frag, frag]
    assert inline.stats.internal_errors == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "warning: internal error: ValueError: boom (the bridge goes on; later ones are "
        "counted in the stats)"
    ]
    assert inline.finish()["inline"]["internal_errors"] == 2


def rig(monkeypatch, mode: str, tags: list, policy: str = ""):  # type: ignore[no-untyped-def]
    """An Inline read in batches (through C where ``mode`` is "c"): it, its ports, its
    records, the frames Python handled, a wire(seg, from_client) for ``tags``, and
    send(port, side, frames)."""
    monkeypatch.setenv("UINET_TAP_FASTPATH", mode)
    inline, a, b, records = make(policy)
    in_python: list[bytes] = []
    frame = inline.frame
    monkeypatch.setattr(
        inline, "frame", lambda side, f, p: (in_python.append(f), frame(side, f, p))
    )

    def w(seg, from_client: bool) -> bytes:  # type: ignore[no-untyped-def]
        src, dst = (CLIENT_MAC, SERVER_MAC) if from_client else (SERVER_MAC, CLIENT_MAC)
        return ethernet(seg.l3(), tags, src_mac=src, dst_mac=dst)

    def send(port: FakePort, side: int, frames: list[bytes]) -> None:
        port.inbox += frames
        inline.on_readable(side)

    return inline, a, b, records, in_python, w, send


@pytest.mark.parametrize("mode", ["off", "c"])
@pytest.mark.parametrize("tags", [[], TAGS, THREE_TAGS], ids=["untagged", "qinq", "three-tags"])
def test_behind_the_syns_of_new_connections_are_shed_and_counted(mode, tags, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """While frames pile up unread, a bare SYN on a tuple no one tracks is dropped and
    counted (in C where it parses the frame, up to two tags; in Python otherwise); every
    other frame goes on in order: the tracked connection's data, its retransmitted SYN. Once
    caught up, a new connection's SYN is forwarded and tracked again."""
    if mode == "c" and lib is None:
        return
    inline, a, b, records, in_python, w, send = rig(monkeypatch, mode, tags)

    cv = Conversation(cport=40000)
    for seg in cv.handshake():
        client = seg.sport == 40000
        send(a if client else b, 0 if client else 1, [w(seg, client)])
    # Behind: a flood of SYNs from new tuples around the connection's own frames.
    a.lagging = True
    ours = [w(cv.c(b"x" * 100), True), w(cv.syn(), True), w(cv.c(b"y" * 100), True)]
    flood = [w(Conversation(client=f"10.7.0.{k + 1}", cport=2000 + k).syn(), True)
             for k in range(40)]  # fmt: skip
    batch = flood[:20] + ours[:2] + flood[20:] + ours[2:]
    before, python_before = len(b.sent), len(in_python)
    send(a, 0, batch)
    assert b.sent[before:] == ours
    assert inline.stats.shed_new == 40
    if mode == "c" and len(tags) <= 2:  # C shed the flood itself: none of it reached Python
        assert not any(f in flood for f in in_python[python_before:])
    # Caught up: a new connection opens as usual.
    a.lagging = False
    late = w(Conversation(client="10.7.1.1", cport=3000).syn(), True)
    send(a, 0, [late])
    assert b.sent[-1] == late
    stats = inline.finish()
    assert stats["inline"]["shed_new"] == 40
    assert stats["inline"]["forwarded"] == len(b.sent) + len(a.sent)
    assert sorted(r["client"].split(":")[0] for r in records) == ["10.0.0.1", "10.7.1.1"]


@pytest.mark.parametrize("mode", ["off", "c"])
def test_new_connections_beyond_the_rate_are_shed(mode, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """--max-new-flows: of 30 new connections' SYNs at once, the first 10 (the bucket's
    worth) are tracked and forwarded, the rest dropped and counted; with the limit off
    (0), every one is tracked."""
    if mode == "c" and lib is None:
        return
    monkeypatch.setenv("UINET_TAP_FASTPATH", mode)
    for rate, tracked in ((10.0, 10), (0.0, 30)):
        inline, a, b, records = make(new_flow_rate=rate)
        syns = [ethernet(Conversation(client=f"10.8.0.{k + 1}", cport=4000 + k).syn().l3(),
                         src_mac=CLIENT_MAC, dst_mac=SERVER_MAC) for k in range(30)]  # fmt: skip
        a.inbox += syns
        inline.on_readable(0)
        assert b.sent == syns[:tracked]
        stats = inline.finish()
        assert stats["inline"]["shed_new"] == 30 - tracked
        assert len(records) == tracked


@pytest.mark.parametrize("mode", ["off", "c"])
@pytest.mark.parametrize("tags", [[], TAGS, THREE_TAGS], ids=["untagged", "qinq", "three-tags"])
def test_a_blocked_flows_frames_past_its_answers_are_dropped_and_counted(
    mode, tags, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """A blocked flow's sender that goes on sending gets a RST for each of its next frames, up
    to BLOCK_ANSWERS; its frames after that are dropped and counted, in C where C parses the
    frame (up to two tags: none reaches Python), in Python otherwise; nothing of it reaches
    the server, and another connection's frames among them go on in order."""
    from uinet_tap.stack.bridge import BLOCK_ANSWERS

    if mode == "c" and lib is None:
        return
    block = '[[rule]]\nprotocol = "http"\naction = "block"\n'
    inline, a, b, records, in_python, w, send = rig(monkeypatch, mode, tags, block)

    cv, other = Conversation(cport=40000), Conversation(client="10.0.0.9", cport=41000, sport=22)
    for conv in (cv, other):
        for seg in conv.handshake():
            client = seg.dport == conv.port["s"]
            send(a if client else b, 0 if client else 1, [w(seg, client)])
    request = b"GET / HTTP/1.1\r\nHost: blocked.example\r\n\r\n"
    send(a, 0, [w(cv.c(request), True)])
    assert [r["verdict"] for r in records] == ["block"]
    to_server = len(b.sent)
    answers = len(a.sent)
    again = [w(cv.c(request, rel=0), True) for _ in range(BLOCK_ANSWERS)]
    send(a, 0, again)
    assert len(a.sent) == answers + BLOCK_ANSWERS  # a RST each
    python_before = len(in_python)
    later = [w(cv.c(request, rel=0), True) for _ in range(30)]
    theirs = [w(other.c(b"ssh-%d" % k), True) for k in range(3)]
    send(a, 0, later[:10] + theirs[:2] + later[10:] + theirs[2:])
    assert b.sent[to_server:] == theirs  # only the other connection's, in order
    assert len(a.sent) == answers + BLOCK_ANSWERS  # no more answers
    assert inline.stats.blocked_frames == 1 + BLOCK_ANSWERS + 30
    if mode == "c" and len(tags) <= 2:
        assert not any(f in later for f in in_python[python_before:])
    stats = inline.finish()
    assert stats["inline"]["blocked_frames"] == 1 + BLOCK_ANSWERS + 30
    assert stats["inline"]["forwarded"] == len(b.sent) + len(a.sent) - stats["inline"]["rst_sent"]
