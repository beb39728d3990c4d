"""``uinet-tap inline`` under a SYN flood, between real kernels (tests/inlinelib.py): a
download through the bump stays exact and in order, the connection cap holds with every
eviction counted, and every frame that left the client is accounted for.

Ground truth is what the programs and the kernels say, not the tool: curl's file, the
endpoints' own captures (the order the server sent its frames in, the order the client got
them), the flood as tcpreplay sent it, and the interfaces' kernel counters.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dpkt
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from floodlib import Replay, link_counters, mac, write_flood  # noqa: E402
from inlinecheck import MB, blob, need, sha  # noqa: E402
from inlinelib import Side, Topology  # noqa: E402

pytestmark = [pytest.mark.netns, pytest.mark.timeout(240)]

CAP = 2000  # the tool's --max-flows
FLOOD_PORT = 9  # nothing listens there
SIZE = 12 * MB  # at 2 MB/s: 6 s, longer than either flood
# What the tool may grow by over a flood, as the kernel counts it: here ~20 MB with the cap (the
# closed tuples it remembers, bounded too, grow with the flood), ~200 MB without it (the same
# floods with --max-flows 1000000)
MEMORY_BOUND_KIB = 64 << 10


Frame = tuple[bool, int, int, int, int, int]


def tcp_frames(pcap: Path, t: Topology, port: int) -> list[tuple[float, Frame]]:
    """(capture time, (sent by the server, IP id, sequence number, payload length, flags, the
    client's port)) of the frames between the client and the server's ``port``, in capture
    order (a flood frame from a spoofed source may have that port too)."""
    ends = {socket.inet_aton(t.client_ip), socket.inet_aton(t.server_ip)}
    out = []
    with open(pcap, "rb") as f:
        for ts, buf in dpkt.pcap.Reader(f):
            ip = dpkt.ethernet.Ethernet(buf).data
            if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.tcp.TCP):
                tcp = ip.data
                if {ip.src, ip.dst} == ends and port in (tcp.sport, tcp.dport):
                    server = tcp.sport == port
                    cport = tcp.dport if server else tcp.sport
                    out.append((ts, (server, ip.id, tcp.seq, len(tcp.data), tcp.flags, cport)))
    return out


AT_ONCE = 10e-6


def moved(read: list[tuple[float, Frame]], got: list[Frame]) -> str | None:
    """None when ``got`` is ``read`` with frames left out (lost) and none moved, else the
    first one moved. ``read``: frames as tcpdump on the tool's interface saw them arrive.
    Two frames that arrived within AT_ONCE of each other may come out swapped: the kernel
    delivers frames that arrive at once on two CPUs to each packet socket on its own, so the
    tool's socket and tcpdump's may get such a pair in opposite orders (every swap seen here
    was of such a pair, though under 2 % of the pairs were)."""
    at: dict[Frame, list[int]] = {}
    for i, (_, frame) in enumerate(read):
        at.setdefault(frame, []).append(i)
    idx: list[int] = []
    for g in got:  # copies of one frame (a SYN-ACK sent again, IP id 0) are interchangeable
        later = [i for i in at[g] if not idx or i > idx[-1]]
        idx.append((later or at[g])[0])
        at[g].remove(idx[-1])
    k = 0
    while k < len(idx):
        i = idx[k]
        if k + 1 < len(idx) and idx[k + 1] == i - 1 and read[i][0] - read[i - 1][0] <= AT_ONCE:
            idx[k], idx[k + 1] = i - 1, i  # a pair that arrived at once
            k += 1
        k += 1
    for k in range(1, len(idx)):
        if idx[k] <= idx[k - 1]:
            return f"{got[k]} after {got[k - 1]}, read {idx[k - 1] - idx[k]} frames before it"
    return None


def flood_frames(pcap: Path, port: int) -> list[tuple[float, str]]:
    """(capture time, "source address:port") of each frame to ``port`` in a capture."""
    out = []
    with open(pcap, "rb") as f:
        for ts, buf in dpkt.pcap.Reader(f):
            ip = dpkt.ethernet.Ethernet(buf).data
            tcp = getattr(ip, "data", None)
            if isinstance(tcp, dpkt.tcp.TCP) and tcp.dport == port:
                out.append((ts, f"{dpkt.utils.inet_to_str(ip.src)}:{tcp.sport}"))
    return out


def counters(t: Topology) -> dict[str, dict[str, int]]:
    return {
        "client": link_counters(t, "client", t.client_if),
        "server": link_counters(t, "server", t.server_if),
    }


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """The kernel's count of a process's resident memory (VmHWM: its high-water mark)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def wait_for(
    what: str, cond: Callable[[], bool], timeout: float, proc: subprocess.Popen, t: Topology
) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, t.tool_stderr(proc)
        assert time.monotonic() < deadline, f"no {what} after {timeout}s"
        time.sleep(0.02)


@pytest.mark.parametrize(
    "pps,tuples",
    [(5000, 25_000), (25_000, 100_000)],
    ids=["5k-pps", "25k-pps"],
)
def test_syn_flood_through_the_bump_cap_held_download_exact_every_frame_counted(
    topology, tmp_path: Path, pps: int, tuples: int
):
    """SYNs from distinct spoofed sources, 12.5 and 50 times the cap of 2,000 connections,
    cross the bump for 5 and 4 seconds in the middle of a download through it (curl held to
    2 MB/s, so that it outlasts the flood whatever the machine): at 5,000 a second, within
    what the tool takes here (8,000 to 10,000 new connections a second); at 25,000, more (the
    kernel drops what its socket cannot take, the download's frames with the flood's)."""
    need("curl", "tcpreplay")
    t = topology(offloads=False)  # frames as sent: the captures compare them one for one
    # curl's pace is the download's on the wire: a receive buffer that cannot hold the file
    t.exec("client", "sysctl", "-qw", "net.ipv4.tcp_rmem=4096 131072 262144")
    for side in ("client", "server"):
        # IPv4 only: no router solicitation or MLD report crossing on its own, so the kernel
        # counters below hold the test's frames and nothing else
        t.exec(side, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
    # Each knows the other's MAC for good: when the flood is more than the tool reads, the
    # kernel drops what its socket cannot take, ARP as well, and the download would stall on
    # a lost ARP reply (the flood's effect on TCP is what is measured here).
    ends: tuple[tuple[Side, str, str, Side, str], ...] = (
        ("client", t.client_if, t.server_ip, "server", t.server_if),
        ("server", t.server_if, t.client_ip, "client", t.client_if),
    )
    for side, ifname, peer_ip, peer, peer_if in ends:
        t.exec(side, "ip", "neigh", "replace", peer_ip, "lladdr", mac(t, peer, peer_if),
               "dev", ifname, "nud", "permanent")  # fmt: skip
    www = tmp_path / "www"
    www.mkdir()
    want = blob(www / "f.bin", SIZE)
    url = t.http_server(www)
    pcap = tmp_path / "flood.pcap"
    sent = write_flood(
        pcap, "syn", tuples, src_mac=mac(t, "client", t.client_if),
        dst_mac=mac(t, "server", t.server_if), dst_ip=t.server_ip, dport=FLOOD_PORT,
    )  # fmt: skip
    flows, stats_path = tmp_path / "flows.jsonl", tmp_path / "stats.json"
    before = counters(t)
    proc = t.start_tool([
        sys.executable, "-m", "uinet_tap", "inline", t.if_a, t.if_b, "-q", "--flows",
        str(flows), "--stats", str(stats_path), "--max-flows", str(CAP),
        "--timeout-closing", "1",
    ])  # fmt: skip
    got = tmp_path / "got.bin"
    with contextlib.ExitStack() as stack:
        # what each end received, and the frames in the order the tool read them
        at_client = stack.enter_context(t.capture("client", "tcp port 8080"))
        at_server = stack.enter_context(
            t.capture("server", f"tcp port 8080 or tcp dst port {FLOOD_PORT}")
        )
        tool_in = {side: stack.enter_context(t.capture(side, "tcp port 8080")) for side in "ab"}
        curl = t.popen("client", "curl", "-sS", "--fail", "--max-time", "120", "--limit-rate",
                       "2M", "-o", str(got), f"{url}/f.bin")  # fmt: skip
        # The download under way (its first bytes in curl's file) before the flood starts:
        # the flood hits a passed, established flow
        wait_for("download", lambda: got.exists() and got.stat().st_size > 0, 20, proc, t)
        rss_before = rss_kib(proc.pid)
        replay = Replay.start(t, pcap, pps)
        flood_sent = replay.wait(60)
        assert curl.wait(150) == 0
    # The download's record is written once its connection has closed and been quiet for
    # --timeout-closing, 1 s (the only one that ends by FIN): by then every frame has been read.
    deadline = time.monotonic() + 60
    while b'"close":"fin"' not in flows.read_bytes():
        assert proc.poll() is None and time.monotonic() < deadline, t.tool_stderr(proc)
        time.sleep(0.2)
    rss_peak = rss_kib(proc.pid, "VmHWM")  # the flood's backlog read too
    rc, stderr = t.stop_tool(proc)
    after = counters(t)
    assert rc == 0, stderr
    assert "Traceback" not in stderr and "error" not in stderr, stderr
    assert sha(got) == want

    # The premise: the download was still going when the flood ended, as both ends saw it
    # (their kernels' capture clocks are the same clock).
    flood_at_server = [ts for ts, _ in flood_frames(at_server, FLOOD_PORT)]
    data_at_client = [ts for ts, f in tcp_frames(at_client, t, 8080) if f[0] and f[3]]
    assert data_at_client[0] < flood_at_server[0] and flood_at_server[-1] < data_at_client[-1]

    # Never reordered by the tool: each end got the other's frames in the order the tool
    # read them. (Not against the sender's own capture: a sender's kernel sends from more
    # than one CPU, the veth queues each CPU's frames apart, and under load they reach the
    # tool's side already out of order, before the tool, as seen on this machine.)
    client_view = [f for _, f in tcp_frames(at_client, t, 8080)]
    server_view = [f for _, f in tcp_frames(at_server, t, 8080)]
    for server, read, far_end in ((True, "b", client_view), (False, "a", server_view)):
        arrived = [f for f in far_end if f[0] is server]
        assert len(arrived) > (SIZE // 1448 if server else 100), len(arrived)
        order = [(ts, f) for ts, f in tcp_frames(tool_in[read], t, 8080) if f[0] is server]
        assert (bad := moved(order, arrived)) is None, f"read on {read}: {bad}"

    stats = json.loads(stats_path.read_text())
    inline = stats["inline"]
    ta, tb = inline["ports"][t.if_a], inline["ports"][t.if_b]
    records = [json.loads(line) for line in flows.read_text().splitlines()]

    # Every frame accounted for. What left the client's veth, the tool read or the kernel
    # dropped at its socket (counted); what it read on one side it sent out of the other;
    # and what it sent, the server's kernel received. The same the other way.
    assert flood_sent == tuples
    d = {s: {k: after[s][k] - before[s][k] for k in after[s]} for s in after}
    assert d["client"]["tx_packets"] == ta["received"] + ta["kernel_drops"], (d, inline)
    # What it read and did not send: the SYNs of new connections it shed while behind
    shed = inline["shed_new"]
    assert ta["received"] == tb["sent"] + shed and tb["received"] == ta["sent"], inline
    assert d["server"]["rx_packets"] + d["server"]["rx_dropped"] == tb["sent"], (d, inline)
    assert d["server"]["tx_packets"] == tb["received"] + tb["kernel_drops"], (d, inline)
    assert d["client"]["rx_packets"] + d["client"]["rx_dropped"] == ta["sent"], (d, inline)
    for port in (ta, tb):
        assert port["send_errors"] == {} and port["ring_cut"] == 0, inline
    for reason in ("blocked_frames", "tombstone_dropped", "cut_in_held", "owned_frames_in",
                   "too_big", "internal_errors"):  # fmt: skip
        assert inline[reason] == 0, (reason, inline)
    assert inline["forwarded"] == ta["sent"] + tb["sent"], inline

    # The flood frame by frame: each one the tool read and did not shed opened one
    # connection, is in the records once and reached the server; the others are among the
    # kernel's drops or the shed.
    flood_end = f"{t.server_ip}:{FLOOD_PORT}"
    flood = [r for r in records if r["server"] == flood_end]
    others = [r for r in records if r["server"] != flood_end]
    spoofed = {f"{a}:{p}" for a, p in sent}
    assert all(r["client"] in spoofed for r in flood)
    seen = {r["client"] for r in flood}
    assert len(seen) == len(flood)
    at_server_flood = [src for _, src in flood_frames(at_server, FLOOD_PORT)]
    assert len(at_server_flood) == len(flood)
    assert set(at_server_flood) == seen
    assert tuples - len(flood) <= ta["kernel_drops"] + shed, (len(flood), inline)
    assert stats["connections"] == len(records), stats

    # The cap: the flood's half-open connections were evicted, stalest first, counted; the
    # ones left at the end (closed as the run ended) are the last the tool saw, no more than
    # the cap.
    evicted = [r for r in flood if r["close"] == "evicted"]
    assert len(evicted) >= len(flood) - CAP > 0
    all_evicted = sum(r["close"] == "evicted" for r in records)
    assert stats["evicted"] == all_evicted == stats["limits"]["max_flows_half_open"], stats
    assert stats["limits"].get("max_flows", 0) == 0, stats  # no established one pushed out
    left = [r for r in flood if r["close"] != "evicted"]
    assert {r["close"] for r in left} <= {"eof"}, {r["close"] for r in left}
    sent_seen = [f"{a}:{p}" for a, p in sent if f"{a}:{p}" in seen]
    assert {r["client"] for r in left} == set(sent_seen[len(sent_seen) - len(left) :])
    # And memory, as the kernel counts it: the tool's peak over the flood against its size
    # before it.
    grown = rss_peak - rss_before
    assert grown < MEMORY_BOUND_KIB, (grown, len(flood))

    # The download: one connection, passed, every byte, closed by its own FINs.
    (curl_port,) = {f[5] for f in client_view}  # one connection: curl's
    (download,) = others
    assert download["client"] == f"{t.client_ip}:{curl_port}", download
    assert download["server"] == f"{t.server_ip}:8080", download
    assert download["close"] == "fin" and download["verdict"] == "pass", download
    assert download["s2c"]["bytes"] > SIZE, download
