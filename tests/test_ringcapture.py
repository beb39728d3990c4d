"""watch's capture ring (uinet_tap/ringcapture.py) on a real veth pair in network namespaces:
frames sent with AF_PACKET from the peer (and from the capture's own side) must come out of
the ring exactly as they went in, and as libpcap hands them over; a batch stays whole until
the one after next; full rings count their drops; a fanout group keeps each flow whole.

Needs root and iproute2; runs the capture side in tests/ring_probe.py inside the namespace."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

from evasionlib import in_netns  # noqa: E402
from frames import Seg, ethernet, qinq  # noqa: E402
from netnslib import NetnsSession, netns_available  # noqa: E402
from uinet_tap.stack import fastpath  # noqa: E402

from uinet_tap.ringcapture import live_capture, ring_serves  # noqa: E402

_ok, _why = netns_available()
pytestmark = [
    pytest.mark.skipif(not _ok, reason=_why or "network namespaces unavailable"),
    pytest.mark.skipif(not fastpath.AVAILABLE, reason="the ring is read by the C data plane"),
]
PROBE = str(TESTS / "ring_probe.py")
PEER_MAC = b"\x02\x00\x00\x00\x00\x0a"
CAP_MAC = b"\x02\x00\x00\x00\x00\x0b"


@pytest.fixture
def pair():
    """(session, the capture's namespace) with a veth cap0 there <-> peer0 in another."""
    with NetnsSession("ring") as s:
        cap, peer = s.ns("c", ipv6=False), s.ns("p", ipv6=False)
        s.veth(cap, "cap0", peer, "peer0", offloads=True)
        yield s, cap, peer


def send(ns: str, ifname: str, frames: list[bytes]) -> None:
    with in_netns(ns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        sock.bind((ifname, 0))
        for f in frames:
            sock.send(f)
    finally:
        sock.close()


def start_probe(s: NetnsSession, ns: str, *args: str, iface: str = "cap0") -> subprocess.Popen:
    p = s.popen(ns, sys.executable, PROBE, iface, *args, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert p.stdout is not None
    line = p.stdout.readline()
    assert line == b"ready\n", line + (p.stderr.read() if p.stderr else b"")
    return p


def finish_probe(p: subprocess.Popen, tell: bool = False) -> dict:
    if tell:  # the "full" mode reads only once told
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        p.stdin.flush()
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err.decode()
    return json.loads(out.splitlines()[-1])  # type: ignore[no-any-return]


def tcp_frame(n: int, size: int = 200, vlans=(), src=PEER_MAC, dst=CAP_MAC, sport=None) -> bytes:
    seg = Seg("10.9.0.1", "10.9.0.2", sport or 40000 + n % 16, 80, seq=1000 + n, flags="PA",
              payload=bytes([n % 251]) * size)  # fmt: skip
    return ethernet(seg.l3(), vlans=vlans, src_mac=src, dst_mac=dst)


@pytest.mark.parametrize("snaplen", [262144, 100])
def test_the_ring_gives_the_frames_libpcap_gives(pair, snaplen: int):
    s, cap, peer = pair
    sent = [
        tcp_frame(0),
        tcp_frame(1, size=1446),  # 1,500 bytes of IP: a full frame
        tcp_frame(2, size=0),  # 54 bytes: shorter than Ethernet's minimum, as a raw send can
        tcp_frame(3, vlans=[100]),  # 802.1Q: the kernel takes the tag off, both put it back
        tcp_frame(4, vlans=qinq(200, 100)),  # QinQ: the outer 802.1ad tag likewise
        tcp_frame(5, vlans=[(0x8100, 7), (0x8100, 8)]),
        ethernet(b"\x00\x01\x08\x00\x06\x04\x00\x01" + bytes(20), ethertype=0x0806),  # ARP
    ]
    outgoing = [tcp_frame(6, src=CAP_MAC, dst=PEER_MAC)]  # sent by the capture's own side
    p = start_probe(s, cap, "same", str(len(sent) + len(outgoing)), "--snaplen", str(snaplen))
    send(peer, "peer0", sent)
    send(cap, "cap0", outgoing)
    got = finish_probe(p)
    ring = [bytes.fromhex(f) for f in got["ring"]]
    assert ring == [f[:snaplen] for f in sent + outgoing]
    assert got["ring"] == got["pcap"]
    # the kernel's time of each frame (each socket takes its own), in whole microseconds as
    # libpcap gives it: what a file's pcap record would hold
    for t, lt in zip(got["ring_times"], got["pcap_times"], strict=True):
        sec, usec = int(t), round((t - int(t)) * 1e6)
        assert sec + usec / 1e6 == t and abs(t - lt) < 0.01, (t, lt)
    n = len(sent) + len(outgoing)
    # received and dropped by the ring; the interface's own drops (the tagged frames no VLAN
    # device takes) counted as libpcap counts them
    assert got["ring_stats"][:2] == [n, 0] and got["ring_stats"] == got["pcap_stats"], got


def test_on_loopback_each_frame_is_seen_once_as_libpcap_sees_it(pair):
    """On lo a frame goes out and comes in: the ring keeps the second only, as libpcap."""
    s, cap, _peer = pair
    p = start_probe(s, cap, "same", "2", "--wait", "1.5", iface="lo")
    with in_netns(cap):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # no port unreachable back
    try:
        sink.bind(("127.0.0.1", 0))
        udp.sendto(b"once-on-loopback", sink.getsockname())
    finally:
        udp.close()
        sink.close()
    got = finish_probe(p)
    assert len(got["ring"]) == 1 and got["ring"] == got["pcap"], got
    assert b"once-on-loopback" in bytes.fromhex(got["ring"][0])


def test_a_batch_stays_whole_until_the_batch_after_next(pair):
    """Forty bursts, each handed over in a block of its own (the ring's timeout), through a
    ring of four blocks: with no block given back, it would be full after four."""
    s, cap, peer = pair
    bursts, per = 40, 50
    p = start_probe(s, cap, "lifetime", str(bursts * per))
    for b in range(bursts):
        send(peer, "peer0", [tcp_frame(b * per + i, size=300) for i in range(per)])
        time.sleep(0.15)
    got = finish_probe(p)
    assert got["count"] == bursts * per, got
    assert got["stats"][1] == 0, got
    assert got["checks"] >= bursts - 1 and got["damaged"] == 0 and got["released"] == 0, got


def test_a_full_ring_counts_what_it_drops(pair):
    s, cap, peer = pair
    n = 20_000  # 20 MB of frames into a ring of 4 MiB that is not read meanwhile
    p = start_probe(s, cap, "full", str(n))
    send(peer, "peer0", [tcp_frame(i, size=960) for i in range(n)])
    got = finish_probe(p, tell=True)
    received, dropped, _ = got["stats"]
    assert received == n, got
    assert dropped > 0 and got["count"] + dropped == n, got
    assert got["behind"] == [True, False], got  # behind before the reading, not after


def test_a_fanout_group_keeps_each_flow_whole(pair):
    s, cap, peer = pair
    flows = 24
    sent = []
    for k in range(flows):
        there = Seg("10.9.0.1", "10.9.1.2", 30000 + k, 443, seq=k, flags="A", payload=b"q")
        back = Seg("10.9.1.2", "10.9.0.1", 443, 30000 + k, seq=k, flags="A", payload=b"r")
        sent += [ethernet(there.l3(), src_mac=PEER_MAC, dst_mac=CAP_MAC),
                 ethernet(back.l3(), src_mac=PEER_MAC, dst_mac=CAP_MAC)] * 3  # fmt: skip
    p = start_probe(s, cap, "fanout", str(len(sent)))
    send(peer, "peer0", sent)
    members = [[bytes.fromhex(f) for f in m] for m in finish_probe(p)["members"]]
    assert sorted(members[0] + members[1]) == sorted(sent)
    owner: dict[int, set[int]] = {}
    for i, member in enumerate(members):
        for f in member:
            ports = sorted((int.from_bytes(f[34:36], "big"), int.from_bytes(f[36:38], "big")))
            owner.setdefault(ports[1], set()).add(i)
    assert len(owner) == flows and all(len(o) == 1 for o in owner.values()), owner
    assert all(members), "the hash put every flow on one member"


def test_watch_reads_through_the_ring_only_where_it_serves(monkeypatch):
    assert ring_serves("lo", None)
    assert not ring_serves("lo", "tcp port 80")  # libpcap compiles filters with its VLAN care
    assert not ring_serves("any", None)
    monkeypatch.setenv("UINET_TAP_RX_RING", "off")
    assert not ring_serves("lo", None)
    capture = live_capture("lo")
    try:
        assert type(capture).__name__ == "LiveCapture"
    finally:
        capture.close()


UINET_TAP = str(Path(sys.executable).parent / "uinet-tap")
CAPTURES = sorted((TESTS.parent / "captures").glob("*.pcap"))
TIMES = ("timestamp", "start", "end")  # the capture's clock: the file's, or the replay's


def _records(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        r = json.loads(line)
        for k in TIMES:
            r.pop(k, None)
        out.append(r)
    return out


@pytest.mark.parametrize("pcap", CAPTURES, ids=[p.stem for p in CAPTURES])
def test_watch_live_records_what_it_records_from_the_file(pair, tmp_path, pcap: Path):
    """Each shipped capture replayed into the veth (tcpreplay, at its own pace; super-frames
    and tags as recorded: the link's MTU lets them through): watch on the interface writes
    the records `watch -` writes reading the file, but for the clock."""
    s, cap, peer = pair
    for ns, ifname in ((cap, "cap0"), (peer, "peer0")):
        s.sh(ns, "ip", "link", "set", ifname, "mtu", "65535")
    flows, err = tmp_path / "flows.jsonl", tmp_path / "err.txt"
    with err.open("wb") as e:
        w = s.popen(cap, UINET_TAP, "watch", "cap0", "--no-tui", "-q", "--flows", str(flows),
                    stdout=subprocess.DEVNULL, stderr=e)  # fmt: skip
    deadline = time.monotonic() + 30
    while b": ready" not in err.read_bytes():
        assert w.poll() is None and time.monotonic() < deadline, err.read_text()
        time.sleep(0.05)
    s.sh(peer, "tcpreplay", "-q", "--intf1=peer0", str(pcap))
    time.sleep(0.5)  # a ring block is handed over within 0.1 s
    NetnsSession.stop(w, signal.SIGINT, timeout=30)
    assert w.returncode == 0, err.read_text()
    with pcap.open("rb") as f:
        from_file = subprocess.run([UINET_TAP, "watch", "-", "--no-tui", "-q", "--flows", "-"],
                                   stdin=f, capture_output=True, check=True)  # fmt: skip
    want = _records(from_file.stdout.decode())
    assert want, "the capture gave no record"
    assert _records(flows.read_text()) == want


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_an_idle_watch_sleeps(pair, tmp_path):
    """Held blocks keep a TPACKET_V3 socket readable for select: a watch that waited on it
    with the last batch's blocks still held spun at full speed once its traffic stopped. Idle,
    the blocks go back (the engine holding none) and watch sleeps: under a tenth of a second
    of CPU in two idle seconds."""
    s, cap, peer = pair
    err = tmp_path / "err.txt"
    with err.open("wb") as e:
        w = s.popen(cap, UINET_TAP, "watch", "cap0", "--no-tui", "-q", "--status-interval",
                    "0.5", stdout=subprocess.DEVNULL, stderr=e)  # fmt: skip
    deadline = time.monotonic() + 30
    while b": ready" not in err.read_bytes():
        assert w.poll() is None and time.monotonic() < deadline, err.read_text()
        time.sleep(0.05)
    send(peer, "peer0", [tcp_frame(i, size=500) for i in range(3000)])
    time.sleep(1.0)  # the frames read, the last block handed over and read
    before = _cpu(w.pid)
    time.sleep(2.0)
    idle = _cpu(w.pid) - before
    NetnsSession.stop(w, signal.SIGINT, timeout=30)
    assert w.returncode == 0, err.read_text()
    assert "packets=3000 " in err.read_text(), err.read_text()
    assert idle < 0.1, f"{idle:.2f} s of CPU in 2 s idle"
