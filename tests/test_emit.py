"""stack/emit.py: frames built as an impersonated endpoint, and offloaded frames fixed up.

Every frame is parsed back with dpkt and its checksums are verified with a word-by-word
reference implementation of RFC 1071 written here, never with the code under test.
"""

from __future__ import annotations

import struct

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from uinet_tap.stack.decode import ACK, FIN, PSH, SYN
from uinet_tap.stack.emit import (
    PathTemplate,
    build,
    checksum,
    complete_checksums,
    encode_options,
    ones_sum,
    resegment,
)
from uinet_tap.stack.options import parse_options

CWR, ECE = 0x80, 0x40
MACS = bytes.fromhex("020000000002020000000001")
V4 = (bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
V6 = (bytes.fromhex("20010db8" + "00" * 11 + "01"), bytes.fromhex("20010db8" + "00" * 11 + "02"))
TAGS = {
    "untagged": b"",
    "dot1q": bytes.fromhex("81002064"),  # PCP 1, VID 100
    "qinq": bytes.fromhex("88a800c88100a064"),  # S-tag VID 200, C-tag PCP 5 VID 100
}


def ref_sum(data: bytes, start: int = 0) -> int:
    """RFC 1071 §4.1, literally: 16-bit words, end-around carry, folded (not inverted)."""
    if len(data) % 2:
        data += b"\0"
    s = start
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
        s = (s & 0xFFFF) + (s >> 16)
    return s


def pseudo(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!I3xB", length, proto)


def l4_ok(src: bytes, dst: bytes, proto: int, segment: bytes) -> bool:
    return ref_sum(pseudo(src, dst, proto, len(segment)) + segment) == 0xFFFF


def template(v6: bool = False, tags: bytes = b"", **kw: object) -> PathTemplate:
    src, dst = V6 if v6 else V4
    l2 = MACS + tags + (b"\x86\xdd" if v6 else b"\x08\x00")
    return PathTemplate(l2=l2, src=src, dst=dst, sport=40000, dport=443, **kw)  # type: ignore[arg-type]


def ip_of(frame: bytes, l2_len: int) -> dpkt.ip.IP | dpkt.ip6.IP6:
    """dpkt's view of the IP packet after an l2_len-byte Ethernet header."""
    if frame[l2_len - 2 : l2_len] == b"\x86\xdd":
        return dpkt.ip6.IP6(frame[l2_len:])
    return dpkt.ip.IP(frame[l2_len:])


def check_ip_and_tcp(frame: bytes, l2_len: int) -> tuple[dpkt.ip.IP | dpkt.ip6.IP6, dpkt.tcp.TCP]:
    ip = ip_of(frame, l2_len)
    raw = frame[l2_len:]
    if isinstance(ip, dpkt.ip.IP):
        assert len(raw) == ip.len
        assert ref_sum(raw[:20]) == 0xFFFF, "IPv4 header checksum"
        tcp_raw = raw[20 : ip.len]
    else:
        assert len(raw) == 40 + ip.plen
        tcp_raw = raw[40:]
    assert l4_ok(ip.src, ip.dst, 6, tcp_raw), "TCP checksum"
    tcp = ip.data
    assert isinstance(tcp, dpkt.tcp.TCP)
    return ip, tcp


# --------------------------------------------------------------------------- checksum


def test_checksum_rfc1071_example():
    # RFC 1071 §3's worked example: the words sum to 0xddf2
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF & ~0xDDF2


@settings(max_examples=500, derandomize=True)
@given(st.binary(max_size=3000), st.integers(0, 0xFFFF))
def test_checksum_matches_reference(data, initial):
    assert checksum(data) == ~ref_sum(data) & 0xFFFF
    assert checksum(data, initial) == ~ref_sum(data, initial) & 0xFFFF


@given(st.binary(max_size=200), st.binary(max_size=200))
def test_checksum_initial_chains_ones_sum(head, tail):
    head += b"\0" * (len(head) % 2)  # a pseudo-header is whole words
    assert checksum(tail, ones_sum(head)) == checksum(head + tail)


def test_checksum_edges():
    assert checksum(b"") == 0xFFFF
    assert checksum(b"\0" * 9) == 0xFFFF
    assert checksum(b"\xff\xff" * 3) == 0  # negative zero sums to 0xffff
    assert checksum(b"\x12") == ~0x1200 & 0xFFFF  # odd length: zero-padded


# --------------------------------------------------------------------------- build


@pytest.mark.parametrize("tags", TAGS.values(), ids=TAGS.keys())
@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_build_fields_and_checksums(v6, tags):
    t = template(v6, tags, ttl=57, tos=0x28, flow_label=0x12345, ip_id=4321, df=True)
    opts = encode_options(timestamps=(123456, 654321))
    frame = build(t, 2**32 + 17, 2**33 + 5, PSH | ACK, 502, opts, b"hello world")
    assert frame[: len(t.l2)] == t.l2  # MACs and the tag stack, byte for byte
    ip, tcp = check_ip_and_tcp(frame, len(t.l2))
    if v6:
        assert (ip.hlim, ip.fc, ip.flow, ip.nxt) == (57, 0x28, 0x12345, 6)
    else:
        assert (ip.ttl, ip.tos, ip.id, ip.df, ip.p) == (57, 0x28, 4321, 1, 6)
        assert t.ip_id == 4322
    assert (ip.src, ip.dst) == (t.src, t.dst)
    assert (tcp.sport, tcp.dport, tcp.seq, tcp.ack) == (40000, 443, 17, 5)
    assert (tcp.flags, tcp.win, tcp.opts, tcp.data) == (PSH | ACK, 502, opts, b"hello world")


def test_build_dpkt_parses_the_tag_stack():
    t = template(False, TAGS["qinq"])
    eth = dpkt.ethernet.Ethernet(build(t, 1, 2, ACK, 100))
    assert [tag.id for tag in eth.vlan_tags] == [200, 100]
    assert isinstance(eth.data, dpkt.ip.IP)


def test_build_ip_id_increments_and_wraps():
    t = template(ip_id=0xFFFE)
    ids = [dpkt.ip.IP(build(t, 0, 0, ACK, 0)[14:]).id for _ in range(3)]
    assert ids == [0xFFFE, 0xFFFF, 0]
    assert t.ip_id == 1


def test_build_df_off_and_ns_bit():
    t = template(df=False)
    ip, tcp = check_ip_and_tcp(build(t, 0, 0, 0x100 | ACK, 0), 14)
    assert isinstance(ip, dpkt.ip.IP)
    assert (ip.df, ip.mf, ip.offset) == (0, 0, 0)
    assert tcp._off_flags & 0x1FF == 0x100 | ACK  # AE/NS lives in the data-offset byte


def test_build_rejects_bad_options_and_mismatched_l2():
    with pytest.raises(ValueError):
        build(template(), 0, 0, ACK, 0, b"\x01\x01\x01")
    with pytest.raises(ValueError):
        build(template(), 0, 0, ACK, 0, b"\x01" * 44)
    t = template()
    t.l2 = MACS + b"\x86\xdd"  # IPv6 ethertype with IPv4 addresses
    with pytest.raises(ValueError):
        build(t, 0, 0, ACK, 0)


@settings(max_examples=200, derandomize=True)
@given(
    v6=st.booleans(),
    tags=st.sampled_from(list(TAGS.values())),
    seq=st.integers(0, 2**33),
    ack=st.integers(0, 2**33),
    flags=st.integers(0, 0x1FF),
    window=st.integers(0, 0xFFFF),
    ts=st.none() | st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    payload=st.binary(max_size=1500),
)
def test_build_property(v6, tags, seq, ack, flags, window, ts, payload):
    t = template(v6, tags)
    opts = encode_options(timestamps=ts)
    frame = build(t, seq, ack, flags, window, opts, payload)
    assert frame.startswith(t.l2)
    _ip, tcp = check_ip_and_tcp(frame, len(t.l2))
    assert (tcp.seq, tcp.ack) == (seq % 2**32, ack % 2**32)
    assert (tcp._off_flags & 0x1FF, tcp.win) == (flags, window)  # AE/NS: RFC 3540, 9293 §3.1
    assert (tcp.opts, tcp.data) == (opts, payload)


# --------------------------------------------------------------------------- options


def test_options_linux_layouts():
    syn = encode_options(mss=1460, wscale=7, sack_permitted=True, timestamps=(1, 0))
    assert syn.hex() == "020405b40402080a000000010000000001030307"
    assert encode_options(timestamps=(5, 6)).hex() == "0101080a0000000500000006"
    assert encode_options(mss=1460, sack_permitted=True, wscale=7).hex() == (
        "020405b40101040201030307"
    )
    assert encode_options(sack_blocks=[(1, 2)]).hex() == "0101050a0000000100000002"
    assert encode_options() == b""


def test_options_sack_blocks_capped():
    blocks = [(i * 100, i * 100 + 50) for i in range(6)]
    with_ts = dpkt.tcp.parse_opts(encode_options(timestamps=(1, 2), sack_blocks=blocks))
    without = dpkt.tcp.parse_opts(encode_options(sack_blocks=blocks))
    (sack_ts,) = [d for k, d in with_ts if k == dpkt.tcp.TCP_OPT_SACK]
    (sack,) = [d for k, d in without if k == dpkt.tcp.TCP_OPT_SACK]
    assert len(sack_ts) == 3 * 8 and len(sack) == 4 * 8
    assert struct.unpack("!6I", sack_ts) == (0, 50, 100, 150, 200, 250)  # the first ones kept


def test_options_reject_big_wscale():
    with pytest.raises(ValueError):
        encode_options(wscale=15)


@given(
    mss=st.none() | st.integers(0, 0xFFFF),
    wscale=st.none() | st.integers(0, 14),
    sack_permitted=st.booleans(),
    ts=st.none() | st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    blocks=st.lists(st.tuples(st.integers(0, 2**33), st.integers(0, 2**33)), max_size=5),
)
def test_options_round_trip(mss, wscale, sack_permitted, ts, blocks):
    raw = encode_options(
        mss=mss, wscale=wscale, sack_permitted=sack_permitted, timestamps=ts, sack_blocks=blocks
    )
    assert len(raw) % 4 == 0 and len(raw) <= 40
    parsed = parse_options(raw)
    assert not parsed.malformed
    assert (parsed.mss, parsed.wscale, parsed.sack_permitted) == (mss, wscale, sack_permitted)
    assert (parsed.tsval, parsed.tsecr) == (ts if ts else (None, None))
    sack = b"".join(d for k, d in dpkt.tcp.parse_opts(raw) if k == dpkt.tcp.TCP_OPT_SACK)
    got = list(zip(*[iter(struct.unpack(f"!{len(sack) // 4}I", sack))] * 2, strict=True))
    assert got == [(a % 2**32, b % 2**32) for a, b in blocks[: len(got)]]
    base = len(encode_options(mss=mss, wscale=wscale, sack_permitted=sack_permitted, timestamps=ts))
    assert len(got) == min(len(blocks), 4, max(0, (40 - base - 4) // 8))  # RFC 2018 §3


# --------------------------------------------------------------------------- complete_checksums


def _partial(frame: bytes, at: int, src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    """What a CHECKSUM_PARTIAL frame holds: the folded pseudo-header sum, not the checksum."""
    out = bytearray(frame)
    struct.pack_into("!H", out, at, ref_sum(pseudo(src, dst, proto, length)))
    return bytes(out)


@pytest.mark.parametrize("tags", TAGS.values(), ids=TAGS.keys())
@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_complete_checksums_fixes_partial_tcp(v6, tags):
    t = template(v6, tags)
    good = build(t, 1, 2, PSH | ACK, 1000, encode_options(timestamps=(3, 4)), b"x" * 999)
    l4 = len(t.l2) + (40 if v6 else 20)
    bad = _partial(good, l4 + 16, t.src, t.dst, 6, len(good) - l4)
    if not v6:
        bad = bad[: len(t.l2) + 10] + b"\xde\xad" + bad[len(t.l2) + 12 :]
    assert bad != good
    assert complete_checksums(bad) == good
    assert complete_checksums(good) == good


@settings(max_examples=100, derandomize=True)
@given(v6=st.booleans(), payload=st.binary(max_size=2000), pad=st.binary(max_size=20))
def test_complete_checksums_leaves_correct_frames_alone(v6, payload, pad):
    frame = build(template(v6, TAGS["qinq"]), 7, 8, ACK, 9, b"", payload) + pad
    assert complete_checksums(frame) == frame  # Ethernet padding is not checksummed either


def _udp_frame(v6: bool, ext: bytes = b"", first_nxt: int = 17, dst: bytes | None = None):
    src, final = V6 if v6 else V4
    body = b"dns?"
    udp = struct.pack("!HHHH", 5353, 53, 8 + len(body), 0) + body
    csum = ~ref_sum(pseudo(src, final, 17, len(udp)) + udp) & 0xFFFF or 0xFFFF
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    if v6:
        ip = struct.pack("!IHBB", 6 << 28, len(ext) + len(udp), first_nxt, 64)
        ip += src + (dst or final) + ext
        return MACS + b"\x86\xdd" + ip + udp
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, src, final)
    hdr = hdr[:10] + struct.pack("!H", ~ref_sum(hdr) & 0xFFFF) + hdr[12:]
    return MACS + b"\x08\x00" + hdr + udp


def _break_l4(frame: bytes, at: int) -> bytes:
    return frame[:at] + b"\x12\x34" + frame[at + 2 :]


def test_complete_checksums_udp_ipv4_and_ipv6():
    for v6 in (False, True):
        good = _udp_frame(v6)
        at = len(good) - 4 - 2
        assert complete_checksums(_break_l4(good, at)) == good


def test_complete_checksums_ipv4_udp_zero_means_none():
    frame = _udp_frame(False)
    none = frame[:-6] + b"\0\0" + frame[-4:]
    assert complete_checksums(none) == none


def test_complete_checksums_ipv6_extension_headers():
    # hop-by-hop (PadN), then destination options (PadN), then UDP
    hop = bytes([60, 0, 1, 4, 0, 0, 0, 0])
    dopt = bytes([17, 0, 1, 4, 0, 0, 0, 0])
    good = _udp_frame(True, hop + dopt, first_nxt=0)
    assert complete_checksums(_break_l4(good, len(good) - 6)) == good
    assert complete_checksums(good) == good


def test_complete_checksums_ipv6_routing_header_uses_final_destination():
    # RFC 8200 §8.1: with segments left, the pseudo-header has the routing header's final
    # address (type 0: the last one listed), not the header's current destination.
    hop_now = bytes.fromhex("20010db8" + "00" * 11 + "99")
    rh0 = bytes([17, 2, 0, 1, 0, 0, 0, 0]) + V6[1]
    good = _udp_frame(True, rh0, first_nxt=43, dst=hop_now)
    assert complete_checksums(_break_l4(good, len(good) - 6)) == good
    srh = bytes([17, 2, 4, 1, 0, 0, 0, 0]) + V6[1]  # segment routing: segment 0 is final
    good = _udp_frame(True, srh, first_nxt=43, dst=hop_now)
    assert complete_checksums(_break_l4(good, len(good) - 6)) == good


def test_complete_checksums_leaves_fragments_and_garbage_alone():
    frame = build(template(), 1, 2, ACK, 3, b"", b"abc")
    frag = bytearray(frame)
    frag[14 + 6] |= 0x20  # MF
    frag[14 + 10 : 14 + 12] = b"\0\0"
    assert complete_checksums(bytes(frag)) == bytes(frag)
    v6frag = _udp_frame(True, bytes([17, 0, 0, 1, 0, 0, 0, 9]), first_nxt=44)
    broken = _break_l4(v6frag, len(v6frag) - 6)
    assert complete_checksums(broken) == broken
    for junk in (b"", b"\x00" * 13, MACS + b"\x08\x06" + b"\0" * 28, frame[:30], MACS + b"\x81"):
        assert complete_checksums(junk) == junk


# --------------------------------------------------------------------------- resegment


def _super_frame(v6: bool, tags: bytes, payload: bytes, flags: int, seq: int = 2**32 - 3000):
    t = template(v6, tags, ip_id=0xFFF0)
    opts = encode_options(timestamps=(0xDEADBEEF, 0x01020304))
    return t, build(t, seq, 99, flags, 4000, opts, payload)


@pytest.mark.parametrize("tags", [TAGS["untagged"], TAGS["qinq"]], ids=["untagged", "qinq"])
@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_resegment_64k_super_frame(v6, tags):
    size = 65535 - (40 if v6 else 20) - 32  # the largest an IP length field can say
    payload = bytes(i * 7 % 251 for i in range(size))
    t, frame = _super_frame(v6, tags, payload, CWR | ECE | PSH | FIN | ACK)
    mtu = 1500
    pieces = resegment(frame, mtu)
    assert len(pieces) == -(-size // (mtu - (40 if v6 else 20) - 32))
    seq = 2**32 - 3000
    data = b""
    for i, piece in enumerate(pieces):
        assert piece.startswith(t.l2)
        ip, tcp = check_ip_and_tcp(piece, len(t.l2))
        assert len(piece) - len(t.l2) <= mtu
        assert tcp.seq == seq % 2**32
        assert tcp.opts == encode_options(timestamps=(0xDEADBEEF, 0x01020304))
        assert (tcp.ack, tcp.win, tcp.sport, tcp.dport) == (99, 4000, 40000, 443)
        first, last = i == 0, i == len(pieces) - 1
        want = ECE | ACK | (CWR if first else 0) | (PSH | FIN if last else 0)
        assert tcp.flags == want
        if not v6:
            assert ip.id == (0xFFF0 + i) & 0xFFFF and ip.df
        seq += len(tcp.data)
        data += tcp.data
    assert data == payload


@settings(max_examples=60, derandomize=True, deadline=None)
@given(
    v6=st.booleans(),
    size=st.integers(1, 9000),
    mtu=st.integers(200, 9000),
    flags=st.sampled_from([ACK, PSH | ACK, FIN | ACK, CWR | PSH | ACK]),
)
def test_resegment_property(v6, size, mtu, flags):
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    t, frame = _super_frame(v6, TAGS["dot1q"], payload, flags, seq=12345)
    pieces = resegment(frame, mtu)
    if len(frame) - len(t.l2) <= mtu:
        assert pieces == [frame] and pieces[0] is frame
        return
    seqs, data = [], b""
    for piece in pieces:
        _ip, tcp = check_ip_and_tcp(piece, len(t.l2))
        assert len(piece) - len(t.l2) <= mtu
        seqs.append(tcp.seq)
        data += tcp.data
    assert data == payload
    assert seqs == [12345 + sum(len(p) - len(t.l2) - (72 if v6 else 52) for p in pieces[:i])
                    for i in range(len(pieces))]  # fmt: skip


def test_resegment_leaves_what_it_cannot_cut():
    t, small = _super_frame(False, b"", b"x" * 100, ACK)
    assert resegment(small, 1500) == [small]
    big_udp = _udp_frame(False)  # not TCP: the caller counts it as too big
    assert resegment(big_udp, 20) == [big_udp]
    hop = bytes([6, 0, 1, 4, 0, 0, 0, 0])
    t6 = template(True)
    tcp6 = build(t6, 1, 2, ACK, 3, b"", b"y" * 3000)
    with_ext = bytearray(tcp6[:14] + tcp6[14:54] + hop + tcp6[54:])
    with_ext[14 + 6] = 0  # next header: hop-by-hop
    struct.pack_into("!H", with_ext, 14 + 4, len(with_ext) - 54)
    assert resegment(bytes(with_ext), 1500) == [bytes(with_ext)]
    assert resegment(b"junk", 1) == [b"junk"]


def test_resegment_syn_flags_untouched_on_fitting_frame():
    t, frame = _super_frame(False, b"", b"", SYN)
    assert resegment(frame, 1500) == [frame]
