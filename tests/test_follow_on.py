"""Merging an owned flow's frames as a receive offload would (stack/_offload.c ut_follow_on,
through uinet_tap/ports.py RxBatch.follow_on), and taking the last of a run of pure ACKs
(ut_ack_run, RxBatch.ack_run): runs of segments built by stack/emit.py, whose bytes are
known, merge back into the data they were cut from; every field that makes Linux's GRO stop a
run stops it here too, and every ACK that tells its sender something a later one does not
ends an ACK run; on generated and mutated runs C gives the answer of a reference that reads
the same rules off dpkt's parse of each frame."""

from __future__ import annotations

import random

import dpkt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from uinet_tap.stack import fastpath
from uinet_tap.stack.emit import PathTemplate, build, encode_options
from uinet_tap.stack.fastpath import ffi

from uinet_tap.ports import RxBatch

pytestmark = pytest.mark.skipif(fastpath.lib is None, reason="the C data plane is not built")

ACK, PSH, FIN = 0x10, 0x08, 0x01
MACS = b"\x02" * 6 + b"\x04" * 6
SRC4, DST4 = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
SRC6, DST6 = bytes(range(16)), bytes(range(16, 32))


def template(v6: bool = False, tags: tuple[int, ...] = ()) -> PathTemplate:
    l2 = MACS + b"".join(tpid.to_bytes(2, "big") + b"\x00\x07" for tpid in tags)
    l2 += b"\x86\xdd" if v6 else b"\x08\x00"
    src, dst = (SRC6, DST6) if v6 else (SRC4, DST4)
    return PathTemplate(l2, src, dst, 80, 40000, ttl=61)


def load(frames: list[bytes], flags: list[int] | None = None) -> RxBatch:
    """A batch holding ``frames`` (its own buffer, as recvmmsg fills it)."""
    batch = RxBatch()
    at = 0
    for i, f in enumerate(frames):
        ffi.memmove(batch.buf + at, f, len(f))
        batch.offsets[i], batch.lengths[i] = at, len(f)
        batch.flags[i] = flags[i] if flags else 0
        at += len(f) + 64
    batch.count = len(frames)
    return batch


def segments(t: PathTemplate, data: bytes, mss: int, options: bytes = b"", seq: int = 1000,
             flags: int = ACK) -> list[bytes]:  # fmt: skip
    return [build(t, seq + o, 77, flags, 501, options, data[o : o + mss])
            for o in range(0, len(data), mss)]  # fmt: skip


@pytest.mark.parametrize("v6,tags", [(False, ()), (True, ()), (False, (0x88A8, 0x8100))])
def test_a_run_of_segments_merges_back_into_its_data(v6: bool, tags: tuple[int, ...]) -> None:
    t = template(v6, tags)
    data = random.Random(1).randbytes(1448 * 6 + 500)
    ts = encode_options(timestamps=(123456, 654321))
    frames = segments(t, data, 1448, ts)
    batch = load(frames)
    more, k, size, last = batch.follow_on(0, 65_000)
    assert k == len(frames) - 1 and last == ACK
    assert data[:1448] + more == data
    assert size == sum(map(len, frames[1:]))


def test_a_run_stops_where_gro_would() -> None:
    t = template()
    data = bytes(range(250)) * 40
    base = segments(t, data, 1000)  # ten frames

    def run(frames: list[bytes], flags: list[int] | None = None, first: int = 0) -> int:
        return load(frames, flags).follow_on(first, 65_000)[1]

    assert run(base) == 9
    # PSH ends the run, its frame included; so does a shorter frame
    pushed = base[:3] + [build(t, 1000 + 3000, 77, ACK | PSH, 501, b"", data[3000:4000])]
    assert run(pushed + base[4:]) == 3
    short = base[:2] + [build(t, 3000, 77, ACK, 501, b"", data[2000:2500])]
    assert run(short + base[3:]) == 2
    # anything else different ends it before the frame
    for differs in (
        build(t, 1000 + 2001, 77, ACK, 501, b"", data[2000:3000]),  # not the next byte
        build(t, 3000, 78, ACK, 501, b"", data[2000:3000]),  # another ACK
        build(t, 3000, 77, ACK, 502, b"", data[2000:3000]),  # a window update
        build(t, 3000, 77, ACK | FIN, 501, b"", data[2000:3000]),  # a FIN
        build(t, 3000, 77, ACK, 501, encode_options(timestamps=(1, 2)), data[2000:3000]),
        build(template(tags=(0x8100,)), 3000, 77, ACK, 501, b"", data[2000:3000]),
        build(
            PathTemplate(t.l2, t.src, t.dst, 80, 40000, ttl=60),
            3000,
            77,
            ACK,
            501,
            b"",
            data[2000:3000],
        ),  # fmt: skip
        build(t, 3000, 77, ACK, 501, b"", data[2000:3100]),  # longer than the first
    ):
        assert run([*base[:2], differs, *base[3:]]) == 1
    assert run(base, [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]) == 2  # a partial checksum
    assert run([*base[:4], base[4] + b"\x00" * 4, *base[5:]]) == 3  # bytes past the IP length
    assert run(base, first=6) == 3
    assert load(base).follow_on(0, 4500)[1] == 3  # 4,000 bytes of payload fit, not 5,000
    # the first must be plain: ACK alone, with data
    assert run([build(t, 1000, 77, ACK | PSH, 501, b"", data[:1000]), *base[1:]]) == 0
    assert run([build(t, 1000, 77, ACK, 501), *base[1:]]) == 0


# -- against a reference that parses with dpkt ----------------------------------------------


def parse(frame: bytes, empty: bool = False):  # type: ignore[no-untyped-def]
    """(layer-2 header, IP packet, TCP segment) of a frame a run may hold, else None: at
    most two tags, IPv4 without options or IPv6 without extension headers, not a fragment,
    nothing past the IP length, TCP with no AE or reserved bit, and data (none: ``empty``)."""
    off = 12
    while frame[off : off + 2] in (b"\x81\x00", b"\x88\xa8", b"\x91\x00"):
        off += 4
    l3 = off + 2
    if off > 20 or len(frame) < l3:
        return None
    try:
        if frame[off:l3] == b"\x08\x00":
            ip = dpkt.ip.IP(frame[l3:])
            if (
                ip.v != 4
                or ip.hl != 5
                or ip.mf
                or ip.offset
                or ip.p != 6
                or ip.len != len(frame) - l3
            ):
                return None
        elif frame[off:l3] == b"\x86\xdd":
            ip = dpkt.ip6.IP6(frame[l3:])
            if ip.v != 6 or ip.nxt != 6 or ip.plen + 40 != len(frame) - l3:
                return None
        else:
            return None
    except (dpkt.UnpackError, dpkt.NeedData):
        return None
    tcp = ip.data
    if not isinstance(tcp, dpkt.tcp.TCP) or bool(tcp.data) == empty or bytes(tcp)[12] & 0x0F:
        return None
    return frame[:off], ip, tcp


def reference(frames: list[bytes], flags: list[int], max_bytes: int) -> int:
    first = parse(frames[0])
    if flags[0] or first is None or first[2].flags != ACK:
        return 0
    l2, ip0, tcp0 = first
    size = total = len(tcp0.data)
    seq = (tcp0.seq + size) & 0xFFFFFFFF
    same_ip = (("tos", "rf", "df", "ttl", "src", "dst") if isinstance(ip0, dpkt.ip.IP)
               else ("fc", "flow", "hlim", "src", "dst"))  # fmt: skip
    k = 0
    for frame, flag in zip(frames[1:], flags[1:], strict=True):
        got = parse(frame)
        if flag or got is None or got[0] != l2 or type(got[1]) is not type(ip0):
            break
        _, ip, tcp = got
        if any(getattr(ip, name) != getattr(ip0, name) for name in same_ip):
            break
        if (
            (tcp.sport, tcp.dport, tcp.ack, tcp.win, tcp.opts, tcp.off)
            != (tcp0.sport, tcp0.dport, tcp0.ack, tcp0.win, tcp0.opts, tcp0.off)
            or tcp.seq != seq
            or tcp.flags not in (ACK, ACK | PSH)
        ):
            break
        n = len(tcp.data)
        if n > size or total + n > max_bytes:
            break
        k += 1
        total += n
        seq = (seq + n) & 0xFFFFFFFF
        if tcp.flags != ACK or n < size:
            break  # PSH, or a shorter one: the last of the run
    return k


@st.composite
def runs(draw: st.DrawFn) -> tuple[list[bytes], list[int]]:
    """A run of one flow's segments, then a few of them mutated: a byte changed, cut,
    lengthened, or the frame swapped for another; now and then a frame flagged."""
    v6 = draw(st.booleans())
    tags = tuple(draw(st.lists(st.sampled_from([0x8100, 0x88A8]), max_size=2)))
    if draw(st.integers(0, 9)) == 0:
        tags += (0x8100,)  # one tag too many
    t = template(v6, tags)
    options = draw(st.sampled_from([b"", encode_options(timestamps=(5, 6)), b"\x01" * 4]))
    mss = draw(st.integers(1, 1460))
    length = mss * draw(st.integers(1, 30)) + draw(st.integers(0, mss))
    data = (draw(st.binary(min_size=1, max_size=64)) * length)[:length]
    frames = segments(t, data, mss, options, seq=draw(st.integers(0, 2**32 - 1)))[:40]
    flags = [0] * len(frames)
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(frames) - 1))
        f = bytearray(frames[i])
        how = draw(st.sampled_from(["byte", "cut", "grow", "flag"]))
        if how == "byte":
            at = draw(st.integers(0, len(f) - 1))
            f[at] = draw(st.integers(0, 255))
        elif how == "cut":
            del f[draw(st.integers(1, len(f))) :]
        elif how == "grow":
            f += draw(st.binary(min_size=1, max_size=8))
        else:
            flags[i] = draw(st.sampled_from([1, 2, 4]))
        frames[i] = bytes(f)
    return frames, flags


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs(), st.one_of(st.just(65_000), st.integers(1, 70_000)))
def test_c_merges_what_the_reference_merges(run: tuple[list[bytes], list[int]], cap: int) -> None:
    frames, flags = run
    more, k, _size, _last = load(frames, flags).follow_on(0, cap)
    assert k == reference(frames, flags, cap)
    if k:
        payloads = [parse(f)[2].data for f in frames[1 : 1 + k]]  # type: ignore[index]
        assert more == b"".join(payloads)


# -- runs of pure ACKs ------------------------------------------------------------------------


def acks(t: PathTemplate, numbers: list[int], windows: list[int] | None = None,
         options: list[bytes] | None = None) -> list[bytes]:  # fmt: skip
    return [build(t, 5000, a, ACK, (windows or [501] * len(numbers))[k],
                  (options or [encode_options(timestamps=(100 + k, 7))] * len(numbers))[k])
            for k, a in enumerate(numbers)]  # fmt: skip


def test_a_run_of_acks_is_its_last():
    t = template(tags=(0x8100,))
    run = acks(t, [1000, 2448, 3896, 5344], [501, 501, 600, 502],
               [encode_options(timestamps=(100 + k, 7)) for k in range(4)])  # fmt: skip
    k, ack, window, options = load(run).ack_run(0)
    assert (k, ack, window, options) == (3, 5344, 502, encode_options(timestamps=(103, 7)))
    nop_ts = b"\x01\x01" + encode_options(timestamps=(9, 9))[2:]
    assert load(acks(t, [1, 2], options=[nop_ts, nop_ts])).ack_run(0)[0] == 1

    def length(frames: list[bytes], first: int = 0) -> int:
        return load(frames).ack_run(first)[0]

    for ends in (
        acks(t, [3896])[0],  # no news: a duplicate ACK (fast retransmit counts those)
        acks(t, [3000])[0],  # an older one
        build(t, 5001, 9000, ACK, 501),  # another sequence number
        build(t, 5000, 9000, ACK, 501, b"", b"data"),  # data
        build(t, 5000, 9000, ACK | FIN, 501),  # a FIN
        build(t, 5000, 9000, ACK, 501, encode_options(sack_blocks=[(1, 2)])),  # SACK blocks
        build(template(), 5000, 9000, ACK, 501),  # another tag stack
    ):
        assert length([*run[:3], ends, *run[3:]]) == 2
    assert length(run, first=2) == 1
    sack = build(t, 5000, 999, ACK, 501, encode_options(sack_blocks=[(1, 2)]))
    assert length([sack, *run]) == 0  # the first must be plain too
    assert load(run, [0, 0, 1, 0]).ack_run(0)[0] == 1  # a flagged frame ends it


def plain_options(opts: bytes) -> bool:
    i = 0
    while i < len(opts):
        if opts[i] == 0:
            return True
        if opts[i] == 1:
            i += 1
        elif opts[i] == 8 and opts[i + 1 : i + 2] == b"\x0a" and i + 10 <= len(opts):
            i += 10
        else:
            return False
    return True


def ack_reference(frames: list[bytes], flags: list[int]) -> tuple[int, int, int]:
    first = parse(frames[0], empty=True)
    if flags[0] or first is None or first[2].flags != ACK or not plain_options(first[2].opts):
        return 0, 0, 0
    l2, ip0, tcp0 = first
    same_ip = (("tos", "rf", "df", "ttl", "src", "dst") if isinstance(ip0, dpkt.ip.IP)
               else ("fc", "flow", "hlim", "src", "dst"))  # fmt: skip
    k, ack, window = 0, tcp0.ack, 0
    for frame, flag in zip(frames[1:], flags[1:], strict=True):
        got = parse(frame, empty=True)
        if flag or got is None or got[0] != l2 or type(got[1]) is not type(ip0):
            break
        _, ip, tcp = got
        if any(getattr(ip, name) != getattr(ip0, name) for name in same_ip):
            break
        if ((tcp.sport, tcp.dport, tcp.seq, tcp.off) != (tcp0.sport, tcp0.dport, tcp0.seq, tcp0.off)
                or tcp.flags != ACK or not 0 < (tcp.ack - ack) % 2**32 < 2**31
                or not plain_options(tcp.opts)):  # fmt: skip
            break
        k, ack, window = k + 1, tcp.ack, tcp.win
    return k, (ack if k else 0), window


@st.composite
def ack_runs(draw: st.DrawFn) -> tuple[list[bytes], list[int]]:
    """Pure ACKs of one connection, mostly moving on, with duplicates, SACK blocks, data,
    other flags now and then; then a few mutated as runs() mutates segments."""
    t = template(draw(st.booleans()), tuple(draw(st.lists(st.sampled_from([0x8100, 0x88A8]),
                                                          max_size=2))))  # fmt: skip
    ack = draw(st.integers(0, 2**32 - 1))
    frames = []
    for k in range(draw(st.integers(2, 30))):
        ack = (ack + draw(st.sampled_from([1448, 2896, 2896, 2896, 0, 100, -50]))) % 2**32
        kind = draw(st.sampled_from(["plain"] * 12 + ["sack", "data", "fin", "nop"]))
        opts = encode_options(timestamps=(k, 3))
        if kind == "sack":
            opts = encode_options(timestamps=(k, 3), sack_blocks=[(ack + 10, ack + 20)])
        elif kind == "nop":
            opts = b"\x01\x01\x01\x01"
        frames.append(build(t, 5000, ack, ACK | (FIN if kind == "fin" else 0),
                            draw(st.integers(0, 65535)), opts,
                            b"x" if kind == "data" else b""))  # fmt: skip
    flags = [0] * len(frames)
    for _ in range(draw(st.integers(0, 2))):
        i = draw(st.integers(0, len(frames) - 1))
        f = bytearray(frames[i])
        if draw(st.booleans()):
            f[draw(st.integers(0, len(f) - 1))] = draw(st.integers(0, 255))
        else:
            flags[i] = draw(st.sampled_from([1, 2, 4]))
        frames[i] = bytes(f)
    return frames, flags


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ack_runs())
def test_c_takes_the_acks_the_reference_takes(run: tuple[list[bytes], list[int]]) -> None:
    frames, flags = run
    k, ack, window, options = load(frames, flags).ack_run(0)
    assert (k, ack, window) == ack_reference(frames, flags)
    if k:
        assert options == parse(frames[k], empty=True)[2].opts  # type: ignore[index]
