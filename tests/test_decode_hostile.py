"""Hostile traffic: no packet stops the sensor.

* the nested GRE bomb (hundreds of IPv4/GRE levels, 12 kB) as one frame and as nine ordinary
  1,514-byte IPv4 fragments: counted as ``too_many_layers``, and the run goes on, through
  ``uinet_tap.api.reconstruct`` and through the CLI;
* every encapsulation the decoder takes (PPP, PPPoE, MPLS over Ethernet/802.1Q/QinQ and in GRE,
  an Ethernet pseudowire, IP-in-IP and IPv6-in-IP both ways, GRE, ERSPAN I/II/III) yields the
  right connection with the right bytes, and each frame decodes to what tshark reads in it;
* the layer cap: stacks of exactly ``MAX_LAYERS`` headers decode, one more is counted;
* hypothesis: ``Decoder.decode`` on arbitrary bytes and on mangled stacks of real headers, for
  every link type, never raises and has exactly one outcome;
* the defragmenter's bounds each bite, are counted, and reach the stats and the summary;
* pcapng blocks of every type cut anywhere in their fixed fields are a ``PcapngError`` and one
  line from the CLI; so are corrupt classic pcap headers.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

from frames import (  # noqa: E402
    DLT_EN10MB,
    DLT_LINUX_SLL,
    DLT_PPP,
    DLT_PPP_SERIAL,
    DLT_RAW,
    ETH_MPLS,
    ETH_PPPOE_DISCOVERY,
    ETH_PPPOE_SESSION,
    ETH_TEB,
    HOPOPTS,
    PPP_LCP,
    PROTO_GRE,
    Conversation,
    Ext,
    Seg,
    encode,
    endpoint,
    erspan,
    ethernet,
    fragment_ipv4,
    gre,
    ip_tunnel,
    ipv4_header,
    mpls,
    pcap_bytes,
    ppp,
    pppoe,
    qinq,
    sll,
    write_pcap,
)
from uinet_tap.stack.decode import (  # noqa: E402
    MAX_IP6_EXTENSIONS,
    MAX_LAYERS,
    SUPPORTED_LINKTYPES,
    Decoder,
)
from uinet_tap.stack.defrag import Defragmenter  # noqa: E402

from uinet_tap.api import reconstruct  # noqa: E402
from uinet_tap.pcapng import FIXED, PcapngError, read_packets  # noqa: E402

EXE = Path(sys.executable).parent / "uinet-tap"
TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")

REQ = b"GET /hostile HTTP/1.1\r\nHost: example\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def conversation(cv: Conversation) -> list[Seg]:
    return cv.handshake() + [
        cv.c(REQ), cv.s(RESP), cv.ack("c"), cv.fin("c"), cv.fin("s"), cv.ack("c"),
    ]  # fmt: skip


def check_exact(rec: dict, cv: Conversation) -> None:
    assert rec["client"] == endpoint(cv.addr["c"], cv.port["c"])
    assert rec["server"] == endpoint(cv.addr["s"], cv.port["s"])
    assert rec["close"] == "fin"
    assert rec["c2s"]["data"] == REQ and rec["c2s"]["gaps"] == []
    assert rec["s2c"]["data"] == RESP and rec["s2c"]["gaps"] == []


def cli(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), "replay", *map(str, args)], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip


def assert_no_traceback(p: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout, p.stderr


# --------------------------------------------------------------------------- the GRE bomb

BOMB_LEVELS = 500


def gre_bomb(inner: bytes, levels: int = BOMB_LEVELS) -> bytes:
    """``inner`` in ``levels`` nested IPv4/GRE headers (24 bytes a level)."""
    pkt = inner
    for _ in range(levels):
        pkt = ip_tunnel(gre(pkt, 0x0800), proto=PROTO_GRE)
    return pkt


def bomb_inner() -> bytes:
    return Conversation(client="10.9.9.1", server="10.9.9.2", sport=443).c(b"boom").l3()


def test_gre_bomb_builder_is_the_issue_s_datagram():
    bomb = gre_bomb(bomb_inner())
    assert 12_000 <= len(bomb) <= 12_200
    frags = fragment_ipv4(bomb)
    assert len(frags) == 9
    assert all(len(ethernet(f)) <= 1514 for f in frags)


def test_gre_bomb_in_one_frame_is_counted_and_the_run_goes_on():
    cv = Conversation(t0=1001.0)
    frames = [(1000.0, gre_bomb(bomb_inner()))] + [(s.ts, s.l3()) for s in conversation(cv)]
    res = reconstruct(frames, linktype=DLT_RAW, keep_streams=True)
    assert res.stats["undecodable"] == {"too_many_layers": 1}
    (rec,) = res.records
    check_exact(rec, cv)


def test_gre_bomb_in_ipv4_fragments_is_reassembled_counted_and_the_run_goes_on():
    cv = Conversation(t0=1001.0)
    frags = fragment_ipv4(gre_bomb(bomb_inner()))
    frames = [(1000.0 + i / 1000, ethernet(f)) for i, f in enumerate(frags)]
    frames += [(s.ts, ethernet(s.l3())) for s in conversation(cv)]
    res = reconstruct(frames, keep_streams=True)
    assert res.stats["fragments_reassembled"] == 1
    assert res.stats["undecodable"] == {"too_many_layers": 1}
    (rec,) = res.records
    check_exact(rec, cv)


@pytest.mark.parametrize("form", ["one raw-IP frame", "nine Ethernet fragments"])
def test_gre_bomb_through_the_cli_reads_the_rest_of_the_file(tmp_path, form):
    before, after = Conversation(cport=40001, t0=999.0), Conversation(cport=40002, t0=1001.0)
    bomb = gre_bomb(bomb_inner())
    if form == "one raw-IP frame":
        linktype, wrap, bombs = DLT_RAW, (lambda b: b), [bomb]
    else:
        linktype, wrap, bombs = DLT_EN10MB, ethernet, fragment_ipv4(bomb)
    frames = [(s.ts, wrap(s.l3())) for s in conversation(before)]
    frames += [(1000.0 + i / 1000, wrap(b)) for i, b in enumerate(bombs)]
    frames += [(s.ts, wrap(s.l3())) for s in conversation(after)]
    path = tmp_path / "bomb.pcap"
    write_pcap(path, frames, linktype=linktype)
    flows = tmp_path / "flows.jsonl"
    p = cli(path, "-q", "--stats", "-", "--flows", flows)
    assert_no_traceback(p)
    assert p.returncode == 0, p.stderr
    stats = json.loads(p.stdout)
    assert stats["packets"] == len(frames)
    assert stats["undecodable"] == {"too_many_layers": 1}
    recs = [json.loads(line) for line in flows.read_text().splitlines()]
    assert sorted(r["client"] for r in recs) == ["10.0.0.1:40001", "10.0.0.1:40002"]
    for r in recs:
        assert r["close"] == "fin"
        assert (r["c2s"]["sha256"], r["s2c"]["sha256"]) == (sha(REQ), sha(RESP))


# --------------------------------------------------------------------------- encapsulations

V4 = ("10.0.0.1", "10.0.0.2")
V6 = ("2001:db8::1", "2001:db8::2")


def _mpls_eth(labels: list[int], vlans=()) -> Callable[[bytes], bytes]:
    return lambda l3: ethernet(mpls(l3, labels), vlans, ethertype=ETH_MPLS)


def _in_gre(inner: Callable[[bytes], bytes], proto: int, outer=("192.0.2.1", "192.0.2.2"),
            **kw) -> Callable[[bytes], bytes]:  # fmt: skip
    return lambda l3: ethernet(ip_tunnel(gre(inner(l3), proto, **kw), *outer, proto=PROTO_GRE))


# name: (link type, addresses, frame from an IP packet, the flow's VLAN stack, tshark options)
ENCAPSULATIONS: dict[str, tuple[int, tuple[str, str], Callable[[bytes], bytes], list[int],
                                tuple[str, ...]]] = {  # fmt: skip
    "ppp-hdlc": (DLT_PPP, V4, ppp, [], ()),
    "ppp-without-address-and-control": (DLT_PPP, V4, lambda p: ppp(p, hdlc=False), [], ()),
    "ppp-compressed-protocol": (DLT_PPP, V4, lambda p: ppp(p, compress=True), [], ()),
    "ppp-ipv6": (DLT_PPP, V6, ppp, [], ()),
    "ppp-serial": (DLT_PPP_SERIAL, V4, ppp, [], ()),
    "pppoe": (DLT_EN10MB, V4, lambda p: ethernet(pppoe(p), ethertype=ETH_PPPOE_SESSION), [], ()),
    "pppoe-ipv6-in-802.1q": (DLT_EN10MB, V6, lambda p: ethernet(
        pppoe(p), [5], ethertype=ETH_PPPOE_SESSION), [5], ()),
    "mpls-1-label": (DLT_EN10MB, V4, _mpls_eth([100]), [], ()),
    "mpls-2-labels": (DLT_EN10MB, V4, _mpls_eth([100, 200]), [], ()),
    "mpls-3-labels": (DLT_EN10MB, V4, _mpls_eth([100, 200, 300]), [], ()),
    "mpls-ipv6": (DLT_EN10MB, V6, _mpls_eth([100, 200]), [], ()),
    "mpls-explicit-null": (DLT_EN10MB, V4, _mpls_eth([0]), [], ()),
    "mpls-1-label-in-802.1q": (DLT_EN10MB, V4, _mpls_eth([100], [12]), [12], ()),
    "mpls-2-labels-in-802.1q": (DLT_EN10MB, V4, _mpls_eth([100, 200], [12]), [12], ()),
    "mpls-3-labels-in-802.1q": (DLT_EN10MB, V4, _mpls_eth([100, 200, 300], [12]), [12], ()),
    "mpls-1-label-in-qinq": (DLT_EN10MB, V4, _mpls_eth([100], qinq(10, 20)), [10, 20], ()),
    "mpls-2-labels-in-qinq": (DLT_EN10MB, V4, _mpls_eth([100, 200], qinq(10, 20)), [10, 20], ()),
    "mpls-3-labels-in-qinq": (DLT_EN10MB, V6, _mpls_eth([1, 2, 3], qinq(10, 20)), [10, 20], ()),
    "mpls-ethernet-pseudowire": (DLT_EN10MB, V4, lambda p: ethernet(
        mpls(ethernet(p, [30]), [16, 17], control_word=True), ethertype=ETH_MPLS), [30],
        ("-d", "mpls.label==17,pwethcw")),
    "ip-in-ip": (DLT_RAW, V4, ip_tunnel, [], ()),
    "ipv6-in-ipv4": (DLT_RAW, V6, ip_tunnel, [], ()),
    "ipv4-in-ipv6": (DLT_RAW, V4, lambda p: ip_tunnel(p, "2001:db8:ff::1", "2001:db8:ff::2"),
                     [], ()),
    "ipv6-in-ipv6": (DLT_EN10MB, V6, lambda p: ethernet(
        ip_tunnel(p, "2001:db8:ff::1", "2001:db8:ff::2")), [], ()),
    "ip-in-ip-in-802.1q": (DLT_EN10MB, V4, lambda p: ethernet(ip_tunnel(p), [44]), [44], ()),
    "ip-in-ip-linux-cooked": (DLT_LINUX_SLL, V6, lambda p: sll(ip_tunnel(p)), [], ()),
    "gre-ip-key-sequence-checksum": (DLT_EN10MB, V4, _in_gre(
        lambda p: p, 0x0800, key=5, seq=9, checksum=True), [], ()),
    "gre-ipv6-over-ipv6": (DLT_EN10MB, V6, _in_gre(
        lambda p: p, 0x86DD, ("2001:db8:ff::1", "2001:db8:ff::2")), [], ()),
    "gre-ethernet-tags-outer-then-inner": (DLT_EN10MB, V4, lambda p: ethernet(ip_tunnel(
        gre(ethernet(p, [30]), ETH_TEB), proto=PROTO_GRE), [7]), [7, 30], ()),
    "gre-mpls": (DLT_EN10MB, V4, _in_gre(lambda p: mpls(p, [77]), ETH_MPLS), [], ()),
    "erspan-i": (DLT_EN10MB, V4, lambda p: ethernet(ip_tunnel(
        erspan(ethernet(p, [30]), 1), proto=PROTO_GRE)), [30], ()),
    "erspan-ii": (DLT_EN10MB, V4, lambda p: ethernet(ip_tunnel(
        erspan(ethernet(p, [30]), 2), proto=PROTO_GRE)), [30], ()),
    "erspan-iii": (DLT_EN10MB, V4, lambda p: ethernet(ip_tunnel(
        erspan(ethernet(p), 3), proto=PROTO_GRE)), [], ()),
    "erspan-iii-platform-subheader": (DLT_EN10MB, V6, lambda p: ethernet(ip_tunnel(
        erspan(ethernet(p, [30]), 3, subheader=True), proto=PROTO_GRE)), [30], ()),
}  # fmt: skip

_TSHARK_FIELDS = ("ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "ieee8021ad.id", "vlan.id",
                  "tcp.srcport", "tcp.dstport", "tcp.seq_raw", "tcp.ack_raw", "tcp.flags",
                  "tcp.urgent_pointer", "tcp.payload")  # fmt: skip


def tshark_fields(path: Path, options: tuple[str, ...]) -> list[dict[str, list[str]]]:
    """Per frame, every occurrence of each field (outermost first), as tshark decodes it."""
    assert TSHARK is not None
    cmd = [TSHARK, "-n", "-r", str(path), *options, "-T", "fields", "-E", "occurrence=a",
           "-E", "separator=/t", "-E", "aggregator=,"]  # fmt: skip
    for f in _TSHARK_FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    rows = []
    for line in out.splitlines():
        cols = line.split("\t") + [""] * len(_TSHARK_FIELDS)  # tshark may leave off empties
        pairs = zip(_TSHARK_FIELDS, cols, strict=False)
        rows.append({f: c.split(",") if c else [] for f, c in pairs})
    return rows


def _encapsulated(name: str) -> tuple[int, Conversation, list, list]:
    linktype, (client, server), wrap, _vlans, _opts = ENCAPSULATIONS[name]
    cv = Conversation(client=client, server=server)
    segs = conversation(cv)
    urgent = cv.c(b"!", flags="PAU", urg=1, advance=False)  # for the per-frame check only
    frames = [(s.ts, wrap(s.l3())) for s in segs]
    return linktype, cv, frames, frames + [(urgent.ts, wrap(urgent.l3()))]


@pytest.mark.parametrize("name", ENCAPSULATIONS)
def test_encapsulation_yields_the_connection(name):
    linktype, cv, frames, _ = _encapsulated(name)
    vlans = ENCAPSULATIONS[name][3]
    res = reconstruct(frames, linktype=linktype, keep_streams=True)
    assert res.stats["undecodable"] == {}
    (rec,) = res.records
    check_exact(rec, cv)
    assert rec["vlan"] == vlans


@needs_tshark
@pytest.mark.parametrize("name", ENCAPSULATIONS)
def test_encapsulated_frames_decode_as_tshark_reads_them(tmp_path, name):
    linktype, _cv, _, frames = _encapsulated(name)
    path = tmp_path / f"{name}.pcap"
    write_pcap(path, frames, linktype=linktype)
    rows = tshark_fields(path, ENCAPSULATIONS[name][4])
    assert len(rows) == len(frames)
    decoder = Decoder(linktype)
    for (ts, frame), want in zip(frames, rows, strict=True):
        seg = decoder.decode(ts, frame)
        assert seg is not None, (name, want)
        family = "ipv6" if seg.v6 else "ip"
        assert want[f"{family}.src"] and want["tcp.srcport"], (name, want)  # tshark got there
        assert ipaddress.ip_address(seg.src) == ipaddress.ip_address(want[f"{family}.src"][-1])
        assert ipaddress.ip_address(seg.dst) == ipaddress.ip_address(want[f"{family}.dst"][-1])
        assert (seg.sport, seg.dport) == (int(want["tcp.srcport"][0]), int(want["tcp.dstport"][0]))
        assert (seg.seq, seg.ack) == (int(want["tcp.seq_raw"][0]), int(want["tcp.ack_raw"][0]))
        assert seg.flags == int(want["tcp.flags"][0], 16) & 0xFF
        assert seg.urg == int(want["tcp.urgent_pointer"][0])
        assert seg.payload.hex() == "".join(want["tcp.payload"])
        # the builders put 802.1ad tags outside 802.1Q ones, so this is outermost first
        assert list(seg.vlans) == [int(v) for v in want["ieee8021ad.id"] + want["vlan.id"]]


# What is not TCP, or not taken, is counted under its reason.
NOT_TAKEN = {
    "pppoe-discovery": (DLT_EN10MB, ethernet(b"\x11\x09" + bytes(24),
                                             ethertype=ETH_PPPOE_DISCOVERY),
                        "unsupported_ethertype"),
    "ppp-lcp": (DLT_PPP, ppp(b"\x01\x01\x00\x04", proto=PPP_LCP), "unsupported_ppp"),
    "pppoe-bad-version": (DLT_EN10MB, ethernet(b"\x21" + pppoe(bytes(40))[1:],
                                               ethertype=ETH_PPPOE_SESSION), "bad_pppoe_header"),
    "mpls-unknown-payload": (DLT_EN10MB, ethernet(mpls(b"\x10" + bytes(40), [100]),
                                                  ethertype=ETH_MPLS), "unsupported_mpls"),
    "mpls-without-bottom-of-stack": (DLT_EN10MB, ethernet(mpls(b"", [1, 2])[:4],
                                                          ethertype=ETH_MPLS), "short_frame"),
    "gre-version-1": (DLT_RAW, ip_tunnel(gre(bytes(40), 0x880B, version=1), proto=PROTO_GRE),
                      "unsupported_gre"),
    "gre-routing-rfc1701": (DLT_RAW, ip_tunnel(gre(bytes(40), 0x0800, flags=0x40),
                                               proto=PROTO_GRE), "unsupported_gre"),
    "gre-short": (DLT_RAW, ip_tunnel(b"\x00\x00", proto=PROTO_GRE), "bad_gre_header"),
    "erspan-iii-not-ethernet": (DLT_RAW, ip_tunnel(erspan(bytes(40), 3, frame_type=2),
                                                   proto=PROTO_GRE), "unsupported_gre"),
    "ip-in-ip-udp": (DLT_RAW, ip_tunnel(ipv4_header("10.0.0.1", "10.0.0.2", 17, 8) + bytes(8)),
                     "non_tcp"),
}  # fmt: skip


@pytest.mark.parametrize("name", NOT_TAKEN)
def test_what_is_not_taken_is_counted_once(name):
    linktype, frame, reason = NOT_TAKEN[name]
    decoder = Decoder(linktype)
    assert decoder.decode(1.0, frame) is None
    assert dict(decoder.undecodable) == {reason: 1}


# --------------------------------------------------------------------------- the layer cap

L3 = Conversation().c(b"deep").l3()


def _nest_gre(pkt: bytes, n: int) -> bytes:
    for _ in range(n):
        pkt = ip_tunnel(gre(pkt, 0x0800), proto=PROTO_GRE)
    return pkt


# Each builds a frame of MAX_LAYERS + extra headers below TCP (the counts in the comments;
# the test checks them: the frame decodes at extra 0 and is counted at extra 1).
DEPTHS: dict[str, tuple[int, Callable[[int], bytes]]] = {
    # Ethernet + 14 tags + IPv4
    "802.1q-tags": (DLT_EN10MB, lambda x: ethernet(L3, list(range(1, 15 + x)))),
    # Ethernet + 14 labels + IPv4
    "mpls-labels": (DLT_EN10MB, lambda x: ethernet(mpls(L3, list(range(14 + x))),
                                                   ethertype=ETH_MPLS)),
    # IPv4 + 7 x (GRE + IPv4) + IPv4-in-IPv4
    "gre-and-ip-in-ip": (DLT_RAW, lambda x: ip_tunnel(_nest_gre(L3, 7 + x))),
    # PPP + IPv4 + GRE + Ethernet + (2 + x) tags + PPPoE + PPP + 3 labels + IPv6 + IPv4 + GRE
    # + IPv4
    "ppp-pppoe-mpls-6in4-gre": (DLT_PPP, lambda x: ppp(ip_tunnel(gre(ethernet(pppoe(
        mpls(ip_tunnel(ip_tunnel(_nest_gre(L3, 1), "2001:db8::a", "2001:db8::b")),
             [1, 2, 3]), proto=0x0281), list(range(1, 3 + x)), ethertype=ETH_PPPOE_SESSION),
        ETH_TEB), proto=PROTO_GRE))),
    # Linux cooked + IPv4 + GRE (with ERSPAN II) + Ethernet + (11 + x) tags + IPv4
    "sll-erspan-tags": (DLT_LINUX_SLL, lambda x: sll(ip_tunnel(erspan(
        ethernet(L3, list(range(1, 12 + x)))), proto=PROTO_GRE))),
}  # fmt: skip


@pytest.mark.parametrize("name", DEPTHS)
def test_stacks_of_max_layers_decode_and_one_more_is_counted(name):
    linktype, build = DEPTHS[name]
    decoder = Decoder(linktype)
    seg = decoder.decode(1.0, build(0))
    assert seg is not None and seg.payload == b"deep", dict(decoder.undecodable)
    assert decoder.decode(1.0, build(1)) is None
    assert dict(decoder.undecodable) == {"too_many_layers": 1}


def test_ipv6_extension_headers_are_walked_up_to_the_cap():
    def frame(n: int) -> bytes:
        cv = Conversation(client="2001:db8::1", server="2001:db8::2")
        cv.exts = [Ext(60) for _ in range(n)]
        return cv.c(b"ext").l3()

    decoder = Decoder(DLT_RAW)
    seg = decoder.decode(1.0, frame(MAX_IP6_EXTENSIONS))
    assert seg is not None and seg.payload == b"ext"
    assert decoder.decode(1.0, frame(MAX_IP6_EXTENSIONS + 1)) is None
    assert dict(decoder.undecodable) == {"too_many_extension_headers": 1}


# --------------------------------------------------------------------------- never raises

_PROPS = settings(max_examples=300, derandomize=True, database=None, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow])  # fmt: skip


def _one_outcome(decoder: Decoder, frame: bytes, linktype: int) -> None:
    """A frame is a Segment, or exactly one undecodable reason, or a fragment the
    defragmenter kept (it counts those); never two of these, never an exception."""
    before = sum(decoder.undecodable.values())
    frags, done = decoder.defrag.fragments, decoder.defrag.reassembled
    seg = decoder.decode(0.0, frame, None, linktype)
    counted = sum(decoder.undecodable.values()) - before
    held = decoder.defrag.fragments > frags and decoder.defrag.reassembled == done
    assert counted in (0, 1)
    assert (seg is not None) + counted + held == 1, (seg, counted, held)


@_PROPS
@given(linktype=st.sampled_from(sorted(SUPPORTED_LINKTYPES)), data=st.binary(max_size=256))
def test_arbitrary_bytes_never_raise(linktype, data):
    _one_outcome(Decoder(linktype), data, linktype)


def _v(p: bytes) -> int:  # the ethertype of an IP packet
    return 0x86DD if p and p[0] >> 4 == 6 else 0x0800


def _fragment(p: bytes) -> bytes:  # the first fragment of an IP-in-IP datagram (held)
    return ip_tunnel(p[:16])[:6] + b"\x20\x00" + ip_tunnel(p[:16])[8:]


# Header builders by what they take and what they make: an IP packet, an Ethernet frame, an
# MPLS label stack with its payload, a PPP frame.
_WRAPPERS: dict[str, list[tuple[str, Callable[[bytes], bytes]]]] = {
    "ip": [
        ("eth", lambda p: ethernet(p)),
        ("eth", lambda p: ethernet(p, [(0x88A8, 3), 4])),
        ("eth", lambda p: ethernet(pppoe(p), [9], ethertype=ETH_PPPOE_SESSION)),
        ("ip", lambda p: ip_tunnel(p)),
        ("ip", lambda p: ip_tunnel(p, "2001:db8::1", "2001:db8::2")),
        ("ip", lambda p: ip_tunnel(gre(p, _v(p), key=1, seq=2), proto=PROTO_GRE)),
        ("ip", _fragment),
        ("mpls", lambda p: mpls(p, [5, 6])),
        ("ppp", lambda p: ppp(p)),
        ("ppp", lambda p: ppp(p, hdlc=False, compress=True)),
    ],
    "eth": [
        ("ip", lambda p: ip_tunnel(gre(p, ETH_TEB), proto=PROTO_GRE)),
        ("ip", lambda p: ip_tunnel(erspan(p, 1), proto=PROTO_GRE)),
        ("ip", lambda p: ip_tunnel(erspan(p, 2), "2001:db8::1", "2001:db8::2", proto=PROTO_GRE)),
        ("ip", lambda p: ip_tunnel(erspan(p, 3, subheader=True), proto=PROTO_GRE)),
        ("mpls", lambda p: mpls(p, [7], control_word=True)),
    ],
    "mpls": [
        ("eth", lambda p: ethernet(p, [8], ethertype=ETH_MPLS)),
        ("ip", lambda p: ip_tunnel(gre(p, ETH_MPLS), proto=PROTO_GRE)),
        ("ppp", lambda p: ppp(p, proto=0x0281)),
    ],
}
_LINKS = {
    "ip": [DLT_RAW, 12, 14, 228, 229, DLT_LINUX_SLL, 276, 0, 108],
    "eth": [DLT_EN10MB],
    "ppp": [DLT_PPP, DLT_PPP_SERIAL],
}


@st.composite
def mangled_stacks(draw) -> tuple[int, bytes]:
    """Real headers stacked at random as they may nest (or at random if they cannot), under
    the link type that carries the outermost, then cut and bytes overwritten."""
    v6 = draw(st.booleans())
    cv = Conversation(*(("2001:db8::1", 1, "2001:db8::2") if v6 else ()))
    if v6 and draw(st.booleans()):
        cv.exts = [HOPOPTS]
    pkt = cv.c(draw(st.binary(max_size=64))).l3()
    kind = "ip"
    for _ in range(draw(st.integers(0, MAX_LAYERS))):
        if kind == "ppp":
            break
        kind, wrap = draw(st.sampled_from(_WRAPPERS[kind]))
        pkt = wrap(pkt)
    if kind == "mpls":
        kind, pkt = "eth", ethernet(pkt, ethertype=ETH_MPLS)
    linktype = draw(st.sampled_from(_LINKS[kind]))
    if draw(st.integers(0, 9)) == 0:  # now and then, the wrong link type
        linktype = draw(st.sampled_from(sorted(SUPPORTED_LINKTYPES)))
    if linktype in (DLT_LINUX_SLL, 276, 0, 108):
        pkt = encode(pkt, linktype)
    if draw(st.booleans()):
        pkt = pkt[: draw(st.integers(0, len(pkt)))]
    buf = bytearray(pkt)
    for pos, value in draw(st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)),
                                    max_size=4)):  # fmt: skip
        if pos < len(buf):
            buf[pos] = value
    return linktype, bytes(buf)


@_PROPS
@given(case=mangled_stacks())
def test_mangled_header_stacks_never_raise(case):
    linktype, frame = case
    _one_outcome(Decoder(linktype), frame, linktype)


@settings(max_examples=50, derandomize=True, database=None, deadline=None)
@given(frames=st.lists(mangled_stacks(), min_size=2, max_size=30))
def test_one_decoder_over_many_mangled_frames_never_raises(frames):
    decoder = Decoder(DLT_EN10MB)
    for linktype, frame in frames:
        _one_outcome(decoder, frame, linktype)


# --------------------------------------------------------------------------- defragmentation


def test_defrag_evicts_the_oldest_at_the_datagram_cap():
    d = Defragmenter(max_datagrams=2)
    for key in "abc":
        assert d.add(1.0, key, 0, True, b"x" * 8, 6) is None
    assert (d.evicted, d.pending()) == (1, 2)
    assert d.add(1.0, "a", 8, False, b"y" * 8) is None  # its first half is gone
    assert d.add(1.0, "c", 8, False, b"y" * 8) == (b"x" * 8 + b"y" * 8, 6)


def test_defrag_memcap_evicts_the_oldest_until_a_fragment_fits():
    d = Defragmenter(memcap=2000)
    assert d.add(1.0, "a", 0, True, b"a" * 800, 6) is None
    assert d.add(1.0, "b", 0, True, b"b" * 800, 6) is None
    assert d.add(1.0, "c", 0, True, b"c" * 800, 6) is None  # 2,400 > 2,000: "a" goes
    assert (d.memcap_evicted, d.pending(), d.held) == (1, 2, 1600)
    assert d.add(1.0, "b", 800, False, b"B" * 8) == (b"b" * 800 + b"B" * 8, 6)
    assert d.held == 800
    assert d.add(1.0, "d", 0, True, b"d" * 4000, 6) is None  # larger than the whole cap
    assert (d.memcap_evicted, d.pending(), d.held) == (3, 0, 0)


def test_defrag_times_out_unfinished_datagrams():
    d = Defragmenter(timeout=30.0)
    d.add(100.0, "a", 0, True, b"x" * 8, 6)
    d.add(129.0, "b", 0, True, b"x" * 8, 6)
    assert d.timed_out == 0
    d.add(130.5, "c", 0, True, b"x" * 8, 6)
    assert (d.timed_out, d.pending()) == (1, 2)
    assert d.add(130.5, "a", 8, False, b"y") is None


def test_defrag_drops_oversize_datagrams():
    d = Defragmenter()
    d.add(1.0, "a", 0, True, b"x" * 8, 6)
    assert d.add(1.0, "a", 65528, False, b"y" * 16) is None  # ends at 65,544 > 65,535
    assert (d.oversize, d.pending(), d.held) == (1, 0, 0)


def test_defrag_drops_datagrams_of_too_many_fragments():
    d = Defragmenter(max_fragments=4)
    for i in range(4):
        assert d.add(1.0, "a", 8 * i, True, b"x" * 8, 6) is None
    assert d.add(1.0, "a", 32, True, b"x" * 8) is None
    assert (d.too_many, d.pending(), d.held) == (1, 0, 0)


def test_defrag_pieces_past_the_last_fragment_s_end_are_cut():
    d = Defragmenter()
    assert d.add(1.0, "a", 0, True, b"a" * 16, 6) is None
    assert d.add(1.0, "a", 24, True, b"c" * 24) is None
    assert d.add(1.0, "a", 16, False, b"b" * 16) == (b"a" * 16 + b"b" * 16, 6)


@_PROPS
@given(data=st.data(), size=st.integers(1, 600))
def test_defrag_completes_exactly_when_covered(data, size):
    """Against a bitmap: fragments (8-byte aligned, duplicates with the same bytes) in any
    order give the datagram exactly once, at the fragment that covers the last hole."""
    payload = bytes((i * 13 + size) % 251 for i in range(size))
    cuts = sorted(set(data.draw(st.lists(st.integers(1, (size - 1) // 8), max_size=12)))) \
        if size > 8 else []  # fmt: skip
    bounds = [0, *(8 * c for c in cuts), size]
    pieces = [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if a < b]
    pieces += data.draw(st.lists(st.sampled_from(pieces), max_size=5))  # duplicates
    pieces = data.draw(st.permutations(pieces))
    d = Defragmenter()
    covered = bytearray(size)
    results = []
    for a, b in pieces:
        out = d.add(1.0, "k", a, b < size, payload[a:b], 6)
        covered[a:b] = b"\x01" * (b - a)
        complete = all(covered)
        if out is not None:
            results.append(out)
            assert complete
            covered = bytearray(size)  # a later duplicate starts a new datagram
        else:
            assert not complete
    assert results[0] == (payload, 6)


def _frag_frames(ident: int, pieces: list[tuple[int, bytes, bool]], ts: float) -> list:
    return [(ts, ethernet(ipv4_header("10.1.0.1", "10.1.0.2", 6, len(p), ident=ident, df=False,
                                      mf=more, frag_offset=off) + p))
            for off, p, more in pieces]  # fmt: skip


def test_defrag_limits_reach_the_stats_and_the_summary(tmp_path):
    frames = []
    frames += _frag_frames(1, [(0, bytes(8), True)], 1.0)  # never finished: times out
    frames += _frag_frames(2, [(65528, bytes(16), False)], 2.0)  # past 65,535
    frames += _frag_frames(3, [(8 * i, bytes(8), True) for i in range(129)], 3.0)  # 129
    # 4,097 partial datagrams: the 4,096-datagram cap evicts one
    for ident in range(100, 100 + 4097):
        frames += _frag_frames(ident, [(0, bytes(8), True)], 40.0)
    res = reconstruct(frames)
    got = {k: v for k, v in res.stats.items() if k.startswith("fragment")}
    assert got == {"fragments_reassembled": 0, "fragment_overlaps": 0, "fragment_evictions": 1,
                   "fragment_memcap_evictions": 0, "fragment_timeouts": 1,
                   "fragment_oversize": 1, "fragment_too_many": 1}  # fmt: skip
    path = tmp_path / "frags.pcap"
    write_pcap(path, frames)
    p = cli(path, "--stats", tmp_path / "stats.json")
    assert_no_traceback(p)
    assert p.returncode == 0, p.stderr
    summary = " ".join(p.stderr.split())  # the table wraps to the terminal's width
    assert ("fragments dropped 1 evicted (over 4,096 datagrams), 1 timed out (30 s), "
            "1 over 65,535 bytes, 1 over 128 fragments") in summary, p.stderr  # fmt: skip
    assert json.loads((tmp_path / "stats.json").read_text())["fragment_evictions"] == 1


# --------------------------------------------------------------------------- pcapng


def _block(btype: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    return struct.pack("<II", btype, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))


SHB_BLOCK = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
IDB_BLOCK = _block(1, struct.pack("<HHI", DLT_EN10MB, 0, 65535))
PACKET = ethernet(Conversation().c(b"ng").l3())
EPB_BLOCK = _block(6, struct.pack("<IIIII", 0, 0, 1_000_000, len(PACKET), len(PACKET)) + PACKET)
PB_BLOCK = _block(2, struct.pack("<HHIIII", 0, 0, 0, 2_000_000, len(PACKET), len(PACKET))
                  + PACKET)  # fmt: skip
SPB_BLOCK = _block(3, struct.pack("<I", len(PACKET)) + PACKET)
BLOCKS = {"SHB": (0x0A0D0D0A, SHB_BLOCK), "IDB": (1, IDB_BLOCK), "EPB": (6, EPB_BLOCK),
          "PB": (2, PB_BLOCK), "SPB": (3, SPB_BLOCK)}  # fmt: skip
GOOD = SHB_BLOCK + IDB_BLOCK + EPB_BLOCK  # one packet, then the block under test


def _short(name: str, length: int) -> bytes:
    """The block under test with its length fields saying ``length`` (< its fixed fields)
    and that many bytes."""
    btype, block = BLOCKS[name]
    return struct.pack("<II", btype, length) + block[8 : length - 4] + struct.pack("<I", length)


def _cuts(name: str) -> list[int]:
    return list(range(1, 12 + FIXED[BLOCKS[name][0]]))


def _read_all(data: bytes) -> tuple[int, Exception | None]:
    n = 0
    try:
        for _ in read_packets(io.BytesIO(data)):
            n += 1
    except Exception as exc:  # noqa: BLE001 (the test asserts which)
        return n, exc
    return n, None


@pytest.mark.parametrize("name", BLOCKS)
def test_pcapng_block_cut_in_its_fixed_fields_is_a_pcapng_error(name):
    block = BLOCKS[name][1]
    for cut in _cuts(name):
        n, exc = _read_all(GOOD + block[:cut])  # the file ends inside the block
        assert isinstance(exc, PcapngError) and n == 1, (cut, exc)
    for length in range(12, 12 + FIXED[BLOCKS[name][0]], 4):  # the block says it is short
        n, exc = _read_all(GOOD + _short(name, length))
        assert isinstance(exc, PcapngError) and n == 1, (length, exc)


@pytest.mark.parametrize("corrupt", ["option overruns", "option header cut", "tsresol length",
                                     "tsoffset length", "lengths disagree", "caplen overruns",
                                     "unknown interface", "spb before idb", "bad magic",
                                     "version 2", "length not a multiple of 4"])  # fmt: skip
def test_pcapng_corrupt_blocks_are_pcapng_errors(corrupt):
    idb_opts = {
        "option overruns": struct.pack("<HH", 2, 40) + b"eth0",
        "option header cut": struct.pack("<HH", 2, 4) + b"eth0" + b"\x09\x00",
        "tsresol length": struct.pack("<HH", 9, 2) + b"\x06\x00",
        "tsoffset length": struct.pack("<HH", 14, 4) + b"\x00" * 4,
    }
    tail = EPB_BLOCK
    head = SHB_BLOCK + IDB_BLOCK
    if corrupt in idb_opts:
        head = SHB_BLOCK + _block(1, struct.pack("<HHI", DLT_EN10MB, 0, 65535)
                                  + idb_opts[corrupt])  # fmt: skip
    elif corrupt == "lengths disagree":
        tail = EPB_BLOCK[:-4] + struct.pack("<I", len(EPB_BLOCK) + 4)
    elif corrupt == "caplen overruns":
        tail = EPB_BLOCK[:20] + struct.pack("<I", len(PACKET) + 4) + EPB_BLOCK[24:]
    elif corrupt == "unknown interface":
        tail = EPB_BLOCK[:8] + struct.pack("<I", 1) + EPB_BLOCK[12:]
    elif corrupt == "spb before idb":
        head = SHB_BLOCK
        tail = SPB_BLOCK
    elif corrupt == "bad magic":
        head = SHB_BLOCK[:8] + b"\x00\x00\x00\x00" + SHB_BLOCK[12:]
    elif corrupt == "version 2":
        head = SHB_BLOCK[:12] + struct.pack("<H", 2) + SHB_BLOCK[14:] + IDB_BLOCK
    else:
        tail = EPB_BLOCK[:4] + struct.pack("<I", len(EPB_BLOCK) - 2) + EPB_BLOCK[8:]
    n, exc = _read_all(head + tail)
    assert isinstance(exc, PcapngError) and n == 0, exc


def _one_warning(p: subprocess.CompletedProcess) -> None:
    assert_no_traceback(p)
    assert p.returncode == 0, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning:") and "truncated" in lines[0], lines


def _one_error(p: subprocess.CompletedProcess) -> None:
    assert_no_traceback(p)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    assert p.stdout == ""


@pytest.mark.parametrize("name", BLOCKS)
def test_pcapng_short_block_after_a_packet_is_one_warning_line(tmp_path, name):
    for length in range(12, 12 + FIXED[BLOCKS[name][0]], 4):
        path = tmp_path / f"{name}-{length}.pcapng"
        path.write_bytes(GOOD + _short(name, length))
        p = cli(path, "-q", "--stats", "-")
        _one_warning(p)
        stats = json.loads(p.stdout)
        assert stats["packets"] == 1 and stats["truncated_file"] is True


@pytest.mark.parametrize("name", BLOCKS)
def test_pcapng_cut_block_before_any_packet_is_one_error_line(tmp_path, name):
    # the block under test right after the section header (for IDB/SHB: the first ones)
    head = b"" if name == "SHB" else SHB_BLOCK + (b"" if name == "IDB" else IDB_BLOCK)
    block = BLOCKS[name][1]
    for cut in sorted({4, 8, 11 + FIXED[BLOCKS[name][0]]}):
        path = tmp_path / f"{name}-{cut}.pcapng"
        path.write_bytes(head + block[:cut])
        _one_error(cli(path, "-q"))


# --------------------------------------------------------------------------- classic pcap


def _pcap() -> tuple[bytes, int]:
    cv = Conversation()
    frames = [(s.ts, ethernet(s.l3())) for s in conversation(cv)]
    return pcap_bytes(frames), len(frames[0][1])


@pytest.mark.parametrize("cut", [1, 4, 12, 23])
def test_pcap_file_header_cut_is_one_error_line(tmp_path, cut):
    path = tmp_path / "cut.pcap"
    path.write_bytes(_pcap()[0][:cut])
    _one_error(cli(path, "-q"))


@pytest.mark.parametrize("where", ["version", "first caplen", "first record cut"])
def test_pcap_corrupt_before_any_packet_is_one_error_line(tmp_path, where):
    raw = bytearray(_pcap()[0])
    if where == "version":
        raw[4:6] = struct.pack("<H", 9)
    elif where == "first caplen":
        raw[32:36] = struct.pack("<I", 0xFFFFFFF0)
    else:
        raw = raw[: 24 + 16 + 10]
    path = tmp_path / "corrupt.pcap"
    path.write_bytes(bytes(raw))
    _one_error(cli(path, "-q"))


def test_pcap_corrupt_record_after_packets_is_one_warning_line(tmp_path):
    raw, first = _pcap()
    raw = bytearray(raw)
    second = 24 + 16 + first
    raw[second + 8 : second + 12] = struct.pack("<I", 0x7FFFFFF0)
    path = tmp_path / "corrupt.pcap"
    path.write_bytes(bytes(raw))
    p = cli(path, "-q", "--stats", "-")
    _one_warning(p)
    assert json.loads(p.stdout)["packets"] == 1
