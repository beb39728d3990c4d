"""The C that finishes what senders' offloads left undone in frames inline forwards
(stack/_offload.c: partial checksums completed, GSO super-frames cut), and that builds the
cut-in's own frames, against its Python twin (stack/emit.py), byte for byte, on generated
frames (every tag stack, IPv4 and IPv6 with extension headers, TCP, UDP and others, every
flag) and on mutated ones: the C path and the reference must give the same frames for the
same input, whatever the input."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from uinet_tap.stack import emit, fastpath
from uinet_tap.stack.decode import checksum

pytestmark = pytest.mark.skipif(fastpath.lib is None, reason="the C data plane is not built")

SRC4, DST4 = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
SRC6, DST6 = bytes(range(16)), bytes(range(16, 32))


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """An Ethernet frame: 0-4 tags, IPv4 (options, maybe a fragment, maybe TSO's zero total
    length) or IPv6 (maybe hop-by-hop, routing with segments left, destination options,
    fragment headers), then TCP (options, any flags), UDP (maybe no checksum) or other."""
    tags = draw(st.lists(st.sampled_from([0x8100, 0x88A8, 0x9100, 0x9200]), max_size=4))
    l2 = b"\x02" * 6 + b"\x04" * 6
    for tpid in tags:
        l2 += struct.pack("!H", tpid) + draw(st.binary(min_size=2, max_size=2))
    proto = draw(st.sampled_from([6, 6, 6, 17, 17, 1]))
    payload = draw(st.binary(max_size=64)) * draw(st.integers(1, 400))
    if proto == 6:
        opts = draw(st.binary(max_size=40))
        opts += b"\x00" * (-len(opts) % 4)
        l4 = bytearray(struct.pack("!HHIIBBHHH", 40000, 80, draw(st.integers(0, 2**32 - 1)),
                                   draw(st.integers(0, 2**32 - 1)), (5 + len(opts) // 4) << 4,
                                   draw(st.integers(0, 255)), 65535, 0x1234, 0))  # fmt: skip
        l4 += opts + payload
    elif proto == 17:
        csum = draw(st.sampled_from([0, 0x4321]))
        l4 = bytearray(struct.pack("!HHHH", 5353, 53, 8 + len(payload), csum)) + payload
    else:
        l4 = bytearray(payload)
    if draw(st.booleans()):
        ihl = 5 + draw(st.integers(0, 2))
        frag = draw(st.sampled_from([0x4000, 0x4000, 0x2000, 0x0010]))
        total = 0 if draw(st.integers(0, 9)) == 0 else ihl * 4 + len(l4)
        if total > 65535:
            total = 0
        ip = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total, draw(st.integers(0, 65535)),
                         frag, 64, proto, 0xBEEF, SRC4, DST4)  # fmt: skip
        ip += b"\x01" * (ihl * 4 - 20)
        return l2 + b"\x08\x00" + ip + l4
    ext = b""
    nxt = proto
    for kind in reversed(draw(st.lists(st.sampled_from([0, 43, 60, 44]), max_size=2))):
        if kind == 43:
            segs = draw(st.integers(0, 2))
            body = bytes([nxt, 2, draw(st.sampled_from([0, 2, 4, 7])), segs]) + b"\0" * 4
            body += bytes(range(100, 116)) + bytes(range(200, 216))
            body = bytes([body[0], len(body) // 8 - 1]) + body[2:]
        elif kind == 44:
            body = bytes([nxt, 0]) + b"\0" * 6
        else:
            body = bytes([nxt, 0]) + b"\x01\x04" + b"\0" * 4
        ext = body + ext
        nxt = kind
    plen = len(ext) + len(l4)
    if plen > 65535 or draw(st.integers(0, 9)) == 0:
        plen = 0
    ip = struct.pack("!IHBB", 6 << 28, plen, nxt, 64) + SRC6 + DST6
    return l2 + b"\x86\xdd" + ip + ext + l4


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames(), st.integers(68, 9000))
def test_c_completes_and_cuts_as_python_does(frame: bytes, mtu: int) -> None:
    assert fastpath.complete_checksums(frame) == emit.complete_checksums(frame)
    assert fastpath.resegment(frame, mtu) == emit.resegment(frame, mtu)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames(), st.integers(68, 9000), st.data())
def test_mutated_frames_get_the_same_answer(frame: bytes, mtu: int, data: st.DataObject) -> None:
    """Any byte changed, the frame cut short or padded: C reads nothing past the frame (the
    answers would differ, or the process fall over) and still agrees with Python."""
    raw = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 6))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw) + 8))
    mutated = bytes(raw[:cut]) + b"\0" * max(0, cut - len(raw))
    try:
        want = emit.complete_checksums(mutated)
    except struct.error:  # a length Python cannot pack (an IPv4 TSO frame over 64 KiB)
        want = None
    if want is not None:
        assert fastpath.complete_checksums(mutated) == want
    assert fastpath.resegment(mutated, mtu) == emit.resegment(mutated, mtu)


def test_a_cut_super_frame_checks_out_on_the_wire() -> None:
    """Ground truth that is neither twin: each piece's IPv4 and TCP checksums verify over
    the pseudo-header, and the pieces' payloads put together are the super-frame's."""
    payload = bytes(range(256)) * 200  # 51,200 bytes
    tcp = struct.pack("!HHIIBBHHH", 40000, 80, 2**32 - 1000, 7, 5 << 4, 0x18 | 0x80 | 0x01,
                      501, 0, 0) + payload  # fmt: skip
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 65530, 0x4000, 64, 6, 0, SRC4,
                     DST4)  # fmt: skip
    frame = b"\x02" * 6 + b"\x04" * 6 + b"\x81\x00\x00\x07\x08\x00" + ip + tcp
    pieces = fastpath.resegment(frame, 1500)
    assert len(pieces) == -(-len(payload) // 1460)
    got = b""
    for i, p in enumerate(pieces):
        iph, seg = p[18:38], p[38:]
        assert checksum(iph) == 0
        assert struct.unpack("!H", iph[2:4])[0] == 20 + len(seg) and len(p) - 18 <= 1500
        assert struct.unpack("!H", iph[4:6])[0] == (65530 + i) & 0xFFFF
        pseudo = SRC4 + DST4 + struct.pack("!BBH", 0, 6, len(seg))
        assert checksum(pseudo + seg) == 0
        assert struct.unpack("!I", seg[4:8])[0] == (2**32 - 1000 + i * 1460) & 0xFFFFFFFF
        flags = seg[13]
        assert bool(flags & 0x80) == (i == 0)  # CWR on the first
        assert bool(flags & 0x09) == (i == len(pieces) - 1)  # FIN, PSH on the last
        got += seg[20:]
    assert got == payload


@st.composite
def templates(draw: st.DrawFn) -> emit.PathTemplate:
    v6 = draw(st.booleans())
    tpids = draw(st.lists(st.sampled_from([0x8100, 0x88A8]), max_size=3))
    tags = b"".join(struct.pack("!HH", tpid, draw(st.integers(0, 0xFFFF))) for tpid in tpids)
    l2 = b"\x02" * 6 + b"\x04" * 6 + tags + (b"\x86\xdd" if v6 else b"\x08\x00")
    n = 16 if v6 else 4
    return emit.PathTemplate(
        l2, draw(st.binary(min_size=n, max_size=n)), draw(st.binary(min_size=n, max_size=n)),
        draw(st.integers(0, 65535)), draw(st.integers(0, 65535)), draw(st.integers(0, 255)),
        draw(st.integers(0, 255)), draw(st.integers(0, 0xFFFFF)), draw(st.integers(0, 65535)),
        draw(st.booleans()),
    )  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(templates(), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 0x1FF),
       st.integers(0, 65535), st.integers(0, 10), st.binary(max_size=3000))  # fmt: skip
def test_c_builds_the_cut_ins_frames_as_python_does(
    t: emit.PathTemplate, seq: int, ack: int, flags: int, window: int, words: int, payload: bytes
) -> None:
    """The frames the tool's own TCP sends (stack/emit.py build): C's are Python's, and the
    IPv4 ID moves on alike."""
    options = bytes(range(words * 4))
    twin = emit.PathTemplate(t.l2, t.src, t.dst, t.sport, t.dport, t.ttl, t.tos, t.flow_label,
                             t.ip_id, t.df)  # fmt: skip
    assert fastpath.build(t, seq, ack, flags, window, options, payload) == emit.build(
        twin, seq, ack, flags, window, options, payload
    )
    assert t.ip_id == twin.ip_id


def test_a_tiny_mtu_cuts_into_more_pieces_than_one_room_holds() -> None:
    """At IPv6's 68-byte minimum link MTU a 9 KB super-frame is 1,125 pieces of 8 bytes, more
    than C's room for one batch of pieces (UT_TX_PIECES): C goes on a room at a time and the
    pieces are Python's, every one (hypothesis found the first version giving up there)."""
    tcp = struct.pack("!HHIIBBHHH", 40000, 80, 1, 2, 5 << 4, 0x10, 100, 0, 0) + bytes(9000)
    ip = struct.pack("!IHBB", 6 << 28, len(tcp), 6, 64) + SRC6 + DST6
    frame = b"\x02" * 6 + b"\x04" * 6 + b"\x86\xdd" + ip + tcp
    pieces = fastpath.resegment(frame, 68)
    assert len(pieces) == 9000 // 8 > fastpath.lib.UT_TX_PIECES
    assert pieces == emit.resegment(frame, 68)
