#!/usr/bin/env python3
"""Inline throughput: a bulk HTTP download through ``uinet-tap inline`` passed through, and the
same download cut into after its first megabyte (the rest relayed by the tool's own TCP), in
one run on this machine; plus the stall at the takeover, seen from the client's own capture.

    .venv/bin/python bench/inline_bench.py [--size-mb 100] [--runs 3] [--offloads] [--json F]

Needs root (network namespaces; tests/inlinelib.py builds client -- tool -- server). For
scale, the same download through captures/bridge.py (a plain AF_PACKET forwarder in Python,
nothing else) is measured too: the floor of any Python bump in the wire here.

With ``--iperf3`` it measures instead what the kernel's own bridge moves between the same two
interfaces (``ip link add br0 type bridge``), ``inline`` with every flow passed (its ports
read from receive rings, and again with ``UINET_TAP_RX_RING=off``: recvmmsg), and ``inline``
with a rule that cuts in on every iperf3 connection (``handler = "relay"``), each for
``--seconds`` of ``iperf3 -R``, rounds alternating, and prints the ratios:

    .venv/bin/python bench/inline_bench.py --iperf3 [--runs 2] [--seconds 5] [--offloads]
        [--ipv6]

With ``--flood`` it measures one passed flow (``iperf3 -R``) through ``inline`` while a flood
crosses the bump from the client's side (tests/floodlib.py: a pcap of new connections from
spoofed sources to the server, sent by ``tcpreplay --pps R --loop`` out of the client's veth):
none, a SYN flood, a flood of short new flows (SYN, request, FIN); with the tool's peak RSS, its
connection cap and evictions, kernel drops per port, frames forwarded and frames of new
connections shed (``--max-new-flows R`` and ``--no-shed`` pass those options on, to compare):

    .venv/bin/python bench/inline_bench.py --flood [--runs 1] [--seconds 8]
        [--pps 2000,5000,20000] [--max-flows 20000] [--max-new-flows R] [--no-shed]

The default rates suit a 2-core machine where the tool takes 8,000 to 10,000 new connections a
second: well under that, near it, and beyond it (without shedding, the kernel then drops at
the tool's socket).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dpkt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from floodlib import Replay, link_counters, mac, write_flood  # noqa: E402
from inlinelib import build_topology, teardown  # noqa: E402
from netnslib import NetnsSession  # noqa: E402

CUT = """
from uinet_tap.plugins import Plugin, Verdict

class CutAfterFirstMegabyte(Plugin):
    name = "cut-after-1mb"

    def decide(self, flow):
        return Verdict.INTERCEPT if flow.s2c_bytes >= 1_000_000 else Verdict.NEED_MORE
"""


def download(t, url: str, out: Path) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    t.client("curl", "-sS", "--fail", "-o", str(out), url, timeout=600)
    return time.perf_counter() - t0


def data_gaps(pcap: Path, server_port: int) -> list[tuple[float, int]]:
    """(time since the previous s2c data frame, stream offset) of every s2c data frame."""
    out: list[tuple[float, int]] = []
    prev = None
    isn = None
    with open(pcap, "rb") as f:
        for ts, buf in dpkt.pcap.Reader(f):
            ip = dpkt.ethernet.Ethernet(buf).data
            tcp = getattr(ip, "data", None)
            if not isinstance(tcp, dpkt.tcp.TCP) or tcp.sport != server_port:
                continue
            if tcp.flags & dpkt.tcp.TH_SYN:
                isn = tcp.seq
                continue
            if not tcp.data or isn is None:
                continue
            if prev is not None:
                out.append((ts - prev, (tcp.seq - isn - 1) & 0xFFFFFFFF))
            prev = ts
    return out


RELAY_POLICY = """
[[rule]]
port = 5201
action = "intercept"
handler = "relay"
"""


def iperf3(t, seconds: int) -> float:  # type: ignore[no-untyped-def]
    """MB/s the client received from the server (iperf3 -R) over ``seconds``."""
    r = t.client("iperf3", "-c", t.server_ip, "-R", "-t", str(seconds), "-J", timeout=seconds + 60)
    end = json.loads(r.stdout)["end"]["sum_received"]
    return float(end["bytes"]) / float(end["seconds"]) / 1e6


def iperf3_main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="inline-bench-"))
    (work / "relay.toml").write_text(RELAY_POLICY)
    tool = [sys.executable, "-m", "uinet_tap", "inline"]
    # "recvmmsg": passed again, the ports read without their receive rings (what the ring buys)
    modes = (
        "kernel bridge",
        "inline, passed",
        "inline, passed (recvmmsg)",
        "inline, cut in (relay)",
    )
    results: dict[str, list[float]] = {m: [] for m in modes}
    counts: dict[str, list[dict]] = {m: [] for m in modes[1:]}
    session = NetnsSession("inlbench")
    try:
        t = build_topology(session, ipv6=args.ipv6, offloads=args.offloads, workdir=work / "topo")
        t.popen("server", "iperf3", "-s", "--bind", t.server_ip)
        time.sleep(1.0)
        for run in range(args.runs):
            for mode in modes:
                if mode == "kernel bridge":
                    ns = t.tool_ns
                    session.sh(ns, "ip", "link", "add", "br0", "type", "bridge")
                    for ifn in (t.if_a, t.if_b):
                        session.sh(ns, "ip", "link", "set", ifn, "master", "br0")
                    session.sh(ns, "ip", "link", "set", "br0", "up")
                    try:
                        t.wait_path(20)
                        results[mode].append(iperf3(t, args.seconds))
                    finally:
                        session.sh(ns, "ip", "link", "del", "br0")
                    continue
                extra = ["--policy", str(work / "relay.toml")] if "cut in" in mode else []
                env = ["env", "UINET_TAP_RX_RING=off"] if "recvmmsg" in mode else []
                stats = work / f"stats-{run}-{modes.index(mode)}.json"
                proc = t.start_tool([*env, *tool, t.if_a, t.if_b, "-q", "--flows", "/dev/null",
                                     "--stats", str(stats), *extra])  # fmt: skip
                t.wait_path(20, proc=proc)
                results[mode].append(iperf3(t, args.seconds))
                time.sleep(0.5)
                rc, err = t.stop_tool(proc)
                assert rc == 0, err
                inline = json.loads(stats.read_text())["inline"]
                counts[mode].append({
                    "forwarded": inline["forwarded"],
                    "forwarded_in_c": inline["forwarded_in_c"],
                    "owned_frames_in": inline["owned_frames_in"],
                    "merged": inline.get("merged", 0),
                    "intercepts": inline["intercepts"],
                    "kernel_drops": sum(p["kernel_drops"] for p in inline["ports"].values()),
                    "ring_cut": sum(p.get("ring_cut", 0) for p in inline["ports"].values()),
                })  # fmt: skip
    finally:
        teardown(session)
    med = {m: statistics.median(v) for m, v in results.items()}
    bridge, passed = med["kernel bridge"], med["inline, passed"]
    report = {
        "seconds": args.seconds,
        "offloads": args.offloads,
        "ipv6": args.ipv6,
        "runs": args.runs,
        "MB_per_s": {m: [round(v, 1) for v in vs] for m, vs in results.items()},
        "median_MB_per_s": {m: round(v, 1) for m, v in med.items()},
        "pass_over_bridge": round(passed / bridge, 3),
        "cut_in_over_pass": round(med["inline, cut in (relay)"] / passed, 3),
        "ring_over_recvmmsg": round(passed / med["inline, passed (recvmmsg)"], 3),
        "tool": counts,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


def peak_rss_mib(pid: int) -> float:
    """VmHWM of a process still running: its resident set's high-water mark."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for {pid}")


def connected(t, port: int, n: int, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    """Wait until the client has n established connections to the server's port."""
    deadline = time.monotonic() + timeout
    while True:
        est = [s for s in t.tcp_sockets("client") if s[0] == "ESTAB" and s[2].endswith(f":{port}")]
        if len(est) >= n:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(est)} of {n} connections to {port} after {timeout}s")
        time.sleep(0.02)


def flood_main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="inline-bench-"))
    tool = [sys.executable, "-m", "uinet_tap", "inline"]
    rates = [int(r) for r in args.pps.split(",")]
    kinds = args.kinds.split(",")
    modes = [("none", 0)] + [(kind, pps) for pps in rates for kind in kinds]
    results: dict[str, list[dict]] = {}
    secs = str(args.seconds + 1)
    cap = ["--max-flows", str(args.max_flows)] if args.max_flows else []  # 0: the default
    if args.max_new_flows is not None:
        cap += ["--max-new-flows", str(args.max_new_flows)]
    if args.no_shed:
        cap += ["--no-shed"]
    session = NetnsSession("inlbench")
    try:
        t = build_topology(session, offloads=args.offloads, workdir=work / "topo")
        t.popen("server", "iperf3", "-s", "--bind", t.server_ip, stdout=subprocess.DEVNULL)
        time.sleep(1.0)
        # Each knows the other's MAC for good: a flood the tool cannot keep up with has the
        # kernel drop ARP at its socket too, and the measured flow would stall on that.
        for side, ifname, peer_ip, peer, peer_if in (
            ("client", t.client_if, t.server_ip, "server", t.server_if),
            ("server", t.server_if, t.client_ip, "client", t.client_if),
        ):
            t.exec(side, "ip", "neigh", "replace", peer_ip, "lladdr", mac(t, peer, peer_if),
                   "dev", ifname, "nud", "permanent")  # fmt: skip
        src_mac, dst_mac = mac(t, "client", t.client_if), mac(t, "server", t.server_if)
        pcaps = {}
        for kind, port, n in (("syn", 9, args.tuples), ("flows", 80, args.tuples // 3)):
            if kind not in kinds:
                continue
            # nothing listens on 9 or 80, and the server has no route back to the spoofed
            # sources: its kernel takes the frames and answers none
            pcaps[kind] = work / f"{kind}.pcap"
            write_flood(pcaps[kind], kind, n, src_mac=src_mac, dst_mac=dst_mac,  # type: ignore[arg-type]
                        dst_ip=t.server_ip, dport=port)  # fmt: skip
        for _run in range(args.runs):
            for kind, pps in modes:
                name = f"{kind} {pps}" if pps else kind
                stats = work / "stats.json"
                before = link_counters(t, "client", t.client_if)
                proc = t.start_tool([*tool, t.if_a, t.if_b, "-q", "--flows", "/dev/null",
                                     "--stats", str(stats), *cap])  # fmt: skip
                t.wait_path(20, proc=proc)
                # -O 1: the first second (slow start, the flood starting) is left out
                ip = t.popen("client", "iperf3", "-c", t.server_ip, "-R", "-t", secs, "-O", "1",
                             "-J", stdout=subprocess.PIPE)  # fmt: skip
                connected(t, 5201, 2)  # control and data: the flood hits a running flow
                replay = None
                if pps:
                    replay = Replay.start(t, pcaps[kind], pps, loop=0, duration=args.seconds + 4)
                out, _ = ip.communicate(timeout=args.seconds + 60)
                assert ip.returncode == 0, out
                sent = replay.stop() if replay is not None else 0
                rss = peak_rss_mib(proc.pid)
                time.sleep(0.5)
                rc, err = t.stop_tool(proc)
                assert rc == 0 and "Traceback" not in err, err
                after = link_counters(t, "client", t.client_if)
                got = json.loads(out)["end"]["sum_received"]
                st = json.loads(stats.read_text())
                inline = st["inline"]
                ports = inline["ports"]
                results.setdefault(name, []).append({
                    "MB_per_s": round(got["bytes"] / got["seconds"] / 1e6, 1),
                    "flood_frames_sent": sent,
                    "peak_rss_mib": round(rss, 1),
                    "connections": st["connections"],
                    "evicted": st["evicted"],
                    "limits": st["limits"],
                    "kernel_drops": {n: p["kernel_drops"] for n, p in ports.items()},
                    "forwarded": inline["forwarded"],
                    "forwarded_in_c": inline["forwarded_in_c"],
                    "shed_new": inline["shed_new"],
                    # What left the client's veth while the tool ran, against what the tool
                    # read on that side plus what the kernel dropped at its socket; and what
                    # it read there but did not send out of the other side.
                    "client_tx": after["tx_packets"] - before["tx_packets"],
                    "read_or_dropped": ports[t.if_a]["received"] + ports[t.if_a]["kernel_drops"],
                    "not_forwarded": ports[t.if_a]["received"] - ports[t.if_b]["sent"],
                })  # fmt: skip
                print(name, json.dumps(results[name][-1]), flush=True)
    finally:
        teardown(session)
    med = {m: statistics.median(r["MB_per_s"] for r in rs) for m, rs in results.items()}
    report = {
        "seconds": args.seconds,
        "offloads": args.offloads,
        "runs": args.runs,
        "max_flows": args.max_flows,
        "tuples": args.tuples,
        "median_MB_per_s": med,
        "over_no_flood": {m: round(v / med["none"], 3) for m, v in med.items()},
        "runs_detail": results,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--offloads", action="store_true", help="leave endpoint offloads on")
    ap.add_argument("--iperf3", action="store_true", help="iperf3 -R against the kernel bridge")
    ap.add_argument("--seconds", type=int, default=5, help="of each iperf3 run")
    ap.add_argument("--ipv6", action="store_true", help="iperf3 over IPv6 (--iperf3)")
    ap.add_argument("--flood", action="store_true", help="iperf3 -R under a flood of new flows")
    ap.add_argument("--pps", default="2000,5000,20000", help="flood rates, comma-separated")
    ap.add_argument("--tuples", type=int, default=100_000, help="distinct sources of a flood")
    ap.add_argument(
        "--max-new-flows",
        type=float,
        default=None,
        help="the tool's --max-new-flows (default: its own)",
    )
    ap.add_argument("--no-shed", action="store_true", help="the tool with --no-shed")
    ap.add_argument("--max-flows", type=int, default=20_000, help="the tool's; 0: its default")
    ap.add_argument("--kinds", default="syn,flows", help="floods: syn, flows (comma-separated)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.iperf3:
        iperf3_main(args)
        return
    if args.flood:
        flood_main(args)
        return
    size = args.size_mb << 20
    work = Path(tempfile.mkdtemp(prefix="inline-bench-"))
    (work / "www").mkdir()
    blob = work / "www" / "f.bin"
    with open("/dev/urandom", "rb") as r:
        blob.write_bytes(r.read(size))
    (work / "cut.py").write_text(CUT)
    tool = [sys.executable, "-m", "uinet_tap", "inline"]
    results: dict[str, list[float]] = {"bridge.py": [], "pass": [], "cut-in": []}
    stalls: list[dict] = []
    drops: dict[str, list[int]] = {"pass": [], "cut-in": []}
    session = NetnsSession("inlbench")
    try:
        t = build_topology(session, offloads=args.offloads, workdir=work / "topo")
        url = t.http_server(work / "www") + "/f.bin"
        for run in range(args.runs):
            for mode in ("bridge.py", "pass", "cut-in"):
                if mode == "bridge.py":
                    if args.offloads:
                        continue  # it forwards frames as read: no super-frames
                    proc, _ = t.start_standin()
                else:
                    extra = ["--plugin-file", str(work / "cut.py")] if mode == "cut-in" else []
                    flows = work / f"flows-{mode}-{run}.jsonl"
                    stats = work / f"stats-{mode}-{run}.json"
                    proc = t.start_tool([*tool, t.if_a, t.if_b, "-q", "--flows", str(flows),
                                         "--stats", str(stats), *extra])  # fmt: skip
                out = work / "got.bin"
                if mode == "cut-in":
                    with t.capture("client", "tcp port 8080") as pcap:
                        secs = download(t, url, out)
                else:
                    secs = download(t, url, out)
                assert out.read_bytes() == blob.read_bytes(), f"{mode}: wrong bytes"
                time.sleep(0.5)  # the record is written once both sides reach TIME-WAIT
                rc, err = t.stop_tool(proc)
                assert rc == 0, err
                results[mode].append(size / secs / 1e6)
                if mode != "bridge.py":
                    ports = json.loads(stats.read_text())["inline"]["ports"].values()
                    drops[mode].append(sum(p["kernel_drops"] for p in ports))
                if mode == "cut-in":
                    rec = json.loads(flows.read_text().splitlines()[0])
                    assert rec["intercept"]["result"] == "closed", rec
                    at = rec["verdict_offset"]["s2c"]
                    gaps = data_gaps(pcap, 8080)
                    around = max(g for g, off in gaps if at - 65536 <= off <= at + 65536)
                    stalls.append(
                        {
                            "takeover_ms": rec["intercept"]["takeover_ms"],
                            "largest_gap_at_takeover_ms": round(around * 1000, 3),
                            "median_gap_ms": round(statistics.median(g for g, _ in gaps) * 1000, 4),
                            "p99_gap_ms": round(
                                sorted(g for g, _ in gaps)[int(len(gaps) * 0.99)] * 1000, 3
                            ),
                            "largest_gap_ms": round(max(g for g, _ in gaps) * 1000, 3),
                        }
                    )
    finally:
        teardown(session)
    report = {
        "size_mb": args.size_mb,
        "offloads": args.offloads,
        "runs": args.runs,
        "MB_per_s": {m: [round(v, 1) for v in vs] for m, vs in results.items() if vs},
        "median_MB_per_s": {m: round(statistics.median(vs), 1) for m, vs in results.items() if vs},
        "cut_in_over_pass": round(
            statistics.median(results["cut-in"]) / statistics.median(results["pass"]), 3
        ),
        "takeover": stalls,
        "kernel_drops_at_the_tool": drops,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
