#!/usr/bin/env python3
"""Regenerate the ground-truth captures in captures/ from REAL kernel TCP stacks talking
between network namespaces (run as root).

    sudo .venv/bin/python captures/make_captures.py                 # all, into captures/
    sudo .venv/bin/python captures/make_captures.py --only ipv6 --out /tmp/x
    sudo .venv/bin/python captures/make_captures.py --small ...     # reduced sizes (CI)

For every scenario NAME it writes NAME.pcap and NAME.expected.json (schema: README.md).
Application content is seeded (peers.content), so it is the same on every run; packet
timing, ISNs, segmentation and impairment outcomes vary.  The expected values come only
from what the applications sent and received (peer reports, curl --trace, the bridge's
own log of what it left out of its tap copy), never from reading the capture with the
tool under test.

Needs: iproute2, ethtool, tcpdump, socat, curl (Debian packages).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from netnslib import NetnsSession, Tcpdump, netns_available, wait_for_file, wait_for_port  # noqa: E402
from peers import content  # noqa: E402

PY = sys.executable
PEERS = str(HERE / "peers.py")
BRIDGE = str(HERE / "bridge.py")
C4, S4 = "10.99.0.1", "10.99.0.2"
C6, S6 = "fd00:99::1", "fd00:99::2"


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


class Ctx:
    def __init__(self, session: NetnsSession, work: Path, small: bool):
        self.s, self.work, self.small = session, work, small

    # -- topologies ------------------------------------------------------
    def direct(self, offloads: bool = False, v6: bool = False):
        """client ns (c0) <-> server ns (s0), one veth pair."""
        c = self.s.ns("c", ipv6=v6)
        sv = self.s.ns("s", ipv6=v6)
        self.s.veth(c, "c0", sv, "s0", offloads=offloads)
        self._addrs(c, sv, v6)
        return c, sv

    def _addrs(self, c, sv, v6):
        if v6:
            self.s.addr(c, "c0", C6 + "/64")
            self.s.addr(sv, "s0", S6 + "/64")
        else:
            self.s.addr(c, "c0", C4 + "/24")
            self.s.addr(sv, "s0", S4 + "/24")

    def bridged(self, seed: int, *, loss=0.0, dup=0.0, reorder=0.0, extra=()):
        """client (c0) <-> [bc  bridge ns  bs] <-> (s0) server; offloads off everywhere."""
        c = self.s.ns("c", ipv6=False)
        b = self.s.ns("b", ipv6=False)
        sv = self.s.ns("s", ipv6=False)
        self.s.veth(c, "c0", b, "bc")
        self.s.veth(b, "bs", sv, "s0")
        self._addrs(c, sv, False)
        self.start_bridge(
            b, "bc", "bs", seed, "bridge", loss=loss, dup=dup, reorder=reorder, extra=extra
        )
        return c, b, sv

    def start_bridge(self, ns, a, b, seed, tag, *, loss=0.0, dup=0.0, reorder=0.0, extra=()):
        ready = self.work / f"{tag}.ready"
        argv = [
            PY,
            BRIDGE,
            "--a",
            a,
            "--b",
            b,
            "--seed",
            str(seed),
            "--loss",
            str(loss),
            "--dup",
            str(dup),
            "--reorder",
            str(reorder),
            "--ready",
            str(ready),
            "--stats",
            str(self.work / f"{tag}.stats.json"),
            *extra,
        ]
        p = self.s.popen(ns, *argv)
        wait_for_file(ready, 10, p)
        self.bridges = getattr(self, "bridges", []) + [(tag, p)]
        return p

    def stop_bridges(self) -> dict:
        out = {}
        for tag, p in getattr(self, "bridges", []):
            rc = NetnsSession.stop(p)
            if rc != 0:
                raise RuntimeError(f"bridge {tag} exited {rc}")
            out[tag] = json.loads((self.work / f"{tag}.stats.json").read_text())
        self.bridges = []
        return out

    # -- traffic ---------------------------------------------------------
    def exchange(
        self,
        c,
        sv,
        label,
        *,
        src,
        dst,
        port,
        base_port,
        count,
        c2s,
        s2c,
        c2s_step=0,
        s2c_step=0,
        close="fin",
        vlan=(),
    ):
        """Run peers.py exchange-server/-client; return expected connection list."""
        common = [
            "--label",
            label,
            "--port",
            str(port),
            "--base-port",
            str(base_port),
            "--count",
            str(count),
            "--c2s",
            str(c2s),
            "--s2c",
            str(s2c),
            "--c2s-step",
            str(c2s_step),
            "--s2c-step",
            str(s2c_step),
        ]
        srep, crep, ready = (self.work / f"{label}.{x}" for x in ("srv.json", "cli.json", "ready"))
        srv = self.s.popen(
            sv,
            PY,
            PEERS,
            "exchange-server",
            *common,
            "--bind",
            dst,
            "--report",
            str(srep),
            "--ready",
            str(ready),
        )
        wait_for_file(ready, 10, srv)
        wait_for_port(self.s, sv, port)
        cli = self.s.popen(
            c,
            PY,
            PEERS,
            "exchange-client",
            *common,
            "--src",
            src,
            "--connect",
            dst,
            "--report",
            str(crep),
        )
        if cli.wait(120) != 0:
            raise RuntimeError(f"client failed: {crep.read_text() if crep.exists() else ''}")
        if srv.wait(60) != 0:
            raise RuntimeError(f"server failed: {srep.read_text() if srep.exists() else ''}")
        creps = json.loads(crep.read_text())
        sreps = {r["idx"]: r for r in json.loads(srep.read_text())}
        conns = []
        for r in creps:
            sr = sreps[r["idx"]]
            # what the client sent is what the server read, and vice versa
            assert (r["sent_sha256"], r["recv_sha256"]) == (sr["recv_sha256"], sr["sent_sha256"]), r
            assert sr["peer"] == r["client"]
            conns.append(
                {
                    "client": r["client"],
                    "server": r["server"],
                    "vlan": list(vlan),
                    "midstream": False,
                    "close": close,
                    "c2s": {"bytes": r["sent_bytes"], "sha256": r["sent_sha256"], "gaps": []},
                    "s2c": {"bytes": r["recv_bytes"], "sha256": r["recv_sha256"], "gaps": []},
                }
            )
        return conns

    def size(self, full: int, small: int) -> int:
        return small if self.small else full


# ---------------------------------------------------------------------------
# scenarios: each returns (pcap path in work dir, expected dict without "capture")
# ---------------------------------------------------------------------------


def sc_bulk_both_ways(x: Ctx):
    c, sv = x.direct()
    n1, n2 = x.size(1 << 20, 64 << 10), x.size((1 << 20) + 4099, (64 << 10) + 99)
    pcap = x.work / "cap.pcap"
    td = Tcpdump(x.s, sv, "s0", pcap).start()
    conns = x.exchange(
        c, sv, "bulk-both-ways", src=C4, dst=S4, port=5000, base_port=40000, count=1, c2s=n1, s2c=n2
    )
    td.stop()
    how = (
        f"python socket peers (captures/peers.py exchange-*) in two netns over one veth "
        f"(offloads off), both directions sent at once ({n1} B c2s, {n2} B s2c, seeded "
        f"SHAKE-256 content), shutdown(WR)+close => FIN both ways; tcpdump 'tcp' on the "
        f"server veth"
    )
    return pcap, {"how": how, "connections": conns}


def parse_curl_trace(text: str) -> tuple[bytes, bytes, int]:
    """(bytes sent, bytes received, number of 'Connected to' lines) from curl --trace."""
    c2s, s2c = bytearray(), bytearray()
    connects = len(re.findall(r"^== Info: +Connected to ", text, re.M))
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(=>|<=) (Send|Recv) (header|data), (\d+) bytes", lines[i])
        i += 1
        if not m:
            continue
        n = int(m.group(4))
        buf = bytearray()
        while len(buf) < n:
            hm = re.match(r"^([0-9a-f]{4,}): (.*)$", lines[i])
            if not hm:
                raise ValueError(f"bad trace line {lines[i]!r}")
            take = min(16, n - len(buf))
            toks = hm.group(2).split(" ")[:take]
            buf += bytes(int(t, 16) for t in toks)
            i += 1
        (c2s if m.group(1) == "=>" else s2c).extend(buf)
    return bytes(c2s), bytes(s2c), connects


def sc_http_keepalive(x: Ctx):
    c, sv = x.direct()
    www = x.work / "www"
    www.mkdir()
    files = {
        "a.bin": content("http-keepalive", "file", 0, x.size(50000, 5000)),
        "b.txt": ("".join(f"line {i} of a seeded text file\n" for i in range(120))).encode(),
        "c.bin": content("http-keepalive", "file", 2, x.size(200000, 20000)),
    }
    for name, data in files.items():
        (www / name).write_bytes(data)
    ready = x.work / "http.ready"
    srv = x.s.popen(
        sv,
        PY,
        PEERS,
        "http-server",
        "--bind",
        S4,
        "--port",
        "8080",
        "--dir",
        str(www),
        "--ready",
        str(ready),
    )
    wait_for_file(ready, 10, srv)
    wait_for_port(x.s, sv, 8080)
    pcap, trace = x.work / "cap.pcap", x.work / "trace.txt"
    td = Tcpdump(x.s, c, "c0", pcap).start()
    outs = [x.work / f"got-{n}" for n in files]
    argv = ["curl", "-sS", "--fail", "--trace", str(trace), "--local-port", "41000"]
    for o, n in zip(outs, files, strict=False):
        argv += ["-o", str(o), f"http://{S4}:8080/{n}"]
    r = subprocess.run(x.s.cmd(c, *argv), capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"curl failed: {r.stderr}")
    time.sleep(0.5)  # let the server close its side (FIN)
    td.stop()
    NetnsSession.stop(srv)
    for o, (n, data) in zip(outs, files.items(), strict=False):
        assert o.read_bytes() == data, n
    c2s, s2c, connects = parse_curl_trace(trace.read_text())
    assert connects == 1, f"curl opened {connects} connections"
    assert c2s.count(b"GET /") == 3 and all(d in s2c for d in files.values())
    how = (
        "curl 7.x fetching 3 URLs (-o each) over ONE keep-alive connection from a Python "
        "ThreadingHTTPServer with SimpleHTTPRequestHandler.protocol_version='HTTP/1.1' "
        "(captures/peers.py http-server), two netns over one veth (offloads off); "
        "c2s/s2c ground truth parsed from `curl --trace`; curl closes => FIN, server "
        "closes on EOF => FIN; tcpdump 'tcp' on the client veth"
    )
    conn = {
        "client": f"{C4}:41000",
        "server": f"{S4}:8080",
        "vlan": [],
        "midstream": False,
        "close": "fin",
        "c2s": {"bytes": len(c2s), "sha256": sha(c2s), "gaps": []},
        "s2c": {"bytes": len(s2c), "sha256": sha(s2c), "gaps": []},
    }
    return pcap, {"how": how, "connections": [conn]}


def sc_many_short(x: Ctx):
    c, sv = x.direct()
    count = x.size(40, 8)
    pcap = x.work / "cap.pcap"
    td = Tcpdump(x.s, sv, "s0", pcap).start()
    conns = x.exchange(
        c,
        sv,
        "many-short",
        src=C4,
        dst=S4,
        port=7000,
        base_port=42000,
        count=count,
        c2s=300,
        s2c=1000,
        c2s_step=97,
        s2c_step=531,
    )
    td.stop()
    how = (
        f"{count} parallel python socket connections (client ports 42000+i, captures/peers.py), "
        f"c2s 300+97*i B and s2c 1000+531*i B of distinct seeded content each, both sent at "
        f"once, FIN close; two netns over one veth (offloads off); tcpdump 'tcp' on the "
        f"server veth"
    )
    return pcap, {"how": how, "connections": conns}


def sc_ipv6(x: Ctx):
    c, sv = x.direct(v6=True)
    n1, n2 = x.size(256 << 10, 32 << 10), x.size((128 << 10) + 17, (16 << 10) + 17)
    pcap = x.work / "cap.pcap"
    td = Tcpdump(x.s, sv, "s0", pcap).start()
    conns = x.exchange(
        c, sv, "ipv6", src=C6, dst=S6, port=5006, base_port=44000, count=1, c2s=n1, s2c=n2
    )
    td.stop()
    how = (
        f"python socket peers over IPv6 ({C6} -> {S6}, /64, nodad) between two netns on one "
        f"veth (offloads off), {n1} B c2s and {n2} B s2c at once, FIN close; tcpdump 'tcp' "
        f"on the server veth"
    )
    return pcap, {"how": how, "connections": conns}


def sc_reset_midtransfer(x: Ctx):
    c, sv = x.direct()
    total, head_n = 2 << 20, 100000
    label_key = "uinet-tap/reset-midtransfer/c2s/0"
    data = content("reset-midtransfer", "c2s", 0, total)
    src = x.work / "send.bin"
    src.write_bytes(data)
    got = x.work / "got.bin"
    pcap = x.work / "cap.pcap"
    td = Tcpdump(x.s, sv, "s0", pcap).start()
    srv = x.s.popen_shell(
        sv,
        f"socat -u TCP-LISTEN:5005,reuseaddr,rcvbuf=65536 STDOUT | head -c {head_n} > {got}",
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(x.s, sv, 5005)
    cli = x.s.popen(
        c,
        "socat",
        "-u",
        f"OPEN:{src}",
        f"TCP:{S4}:5005,sourceport=43000,sndbuf=65536",
        stderr=subprocess.PIPE,
    )
    cli.wait(60)
    err = cli.stderr.read().decode()
    srv.wait(30)
    td.stop()
    if cli.returncode == 0 or not ("reset" in err.lower() or "broken pipe" in err.lower()):
        raise RuntimeError(f"expected the sender to see a reset (rc={cli.returncode}): {err}")
    if not count_rst(pcap, sport=5005):
        raise RuntimeError("no RST from the server in the capture")
    assert got.read_bytes() == data[:head_n]
    variant = rst_variant(pcap, f"{S4}:5005")
    how = (
        f"socat -u OPEN:file TCP:...,sndbuf=65536 sends {total} B of seeded content; "
        f"the server is "
        f"`socat -u TCP-LISTEN:5005,rcvbuf=65536 STDOUT | head -c {head_n}`: head exits, "
        f"socat gets EPIPE, shuts down (FIN) and closes with unread data => the kernel "
        f"sends RST (on close, or answering client data that reaches the closed socket) "
        f"right after that FIN while the client is still sending (its write fails); two "
        f"netns over one veth (offloads off); tcpdump 'tcp' on the server veth. "
        f"c2s must be a gap-free prefix of the sent content, at least {head_n} B. "
        f"This run: {variant}"
    )
    conn = {
        "client": f"{C4}:43000",
        "server": f"{S4}:5005",
        "vlan": [],
        "midstream": False,
        "close": "rst",
        "c2s": {
            "prefix_of": {
                "bytes": total,
                "sha256": sha(data),
                "generator": {"kind": "shake256", "key": label_key},
            },
            "min_bytes": head_n,
            "gaps": [],
        },
        "s2c": {"bytes": 0, "sha256": sha(b""), "gaps": []},
    }
    return pcap, {"how": how, "connections": [conn]}


def sc_impaired_bridge(x: Ctx):
    seed = 6
    c, b, sv = x.bridged(seed, loss=0.02, dup=0.02, reorder=0.02)
    n1, n2 = x.size(512 << 10, 96 << 10), x.size((512 << 10) + 1234, (64 << 10) + 1234)
    pcap = x.work / "cap.pcap"
    td = Tcpdump(x.s, c, "c0", pcap).start()
    conns = x.exchange(
        c,
        sv,
        "impaired-bridge",
        src=C4,
        dst=S4,
        port=5000,
        base_port=45000,
        count=1,
        c2s=n1,
        s2c=n2,
    )
    td.stop()
    st = x.stop_bridges()["bridge"]
    for d in ("ab", "ba"):
        if not x.small and min(st[d]["lost"], st[d]["dup"], st[d]["reordered"]) == 0:
            raise RuntimeError(f"bridge did not impair {d}: {st[d]}")
    how = (
        f"client netns -veth- middle netns (no IPs, IPv6 off) running captures/bridge.py "
        f"(AF_PACKET, seed {seed}, per TCP frame and direction: 2% loss, 2% duplication, "
        f"2% reordering (held back one frame)) -veth- server netns; offloads off on all 4 "
        f"veths; python socket peers, {n1} B c2s and {n2} B s2c at once, FIN close; tcpdump "
        f"'tcp' on the CLIENT veth (sees c2s before and s2c after the impairment). "
        f"bridge counters: {json.dumps(st, sort_keys=True)}"
    )
    return pcap, {"how": how, "connections": conns}


def merge_ranges(rs):
    out = []
    for o, n in sorted(rs):
        if out and o <= out[-1][0] + out[-1][1]:
            end = max(out[-1][0] + out[-1][1], o + n)
            out[-1][1] = end - out[-1][0]
        else:
            out.append([o, n])
    return out


def sc_tap_loss(x: Ctx):
    seed = 7
    n1, n2 = x.size(256 << 10, 64 << 10), x.size(200 << 10, 48 << 10)
    pcap = x.work / "cap.pcap"
    tlog = x.work / "tap.json"
    lo, hi = 8192, min(n1, n2) - 8192
    c, b, sv = x.bridged(
        seed,
        extra=[
            "--pcap",
            str(pcap),
            "--tap-drop",
            "0.04",
            "--tap-drop-range",
            f"{lo}:{hi}",
            "--tap-log",
            str(tlog),
        ],
    )
    conns = x.exchange(
        c, sv, "tap-loss", src=C4, dst=S4, port=5000, base_port=46000, count=1, c2s=n1, s2c=n2
    )
    st = x.stop_bridges()["bridge"]
    log = json.loads(tlog.read_text())
    conn = conns[0]
    cport = int(conn["client"].rsplit(":", 1)[1])
    omitted = {}
    for dname, data in (
        ("c2s", content("tap-loss", "c2s", 0, n1)),
        ("s2c", content("tap-loss", "s2c", 0, n2)),
    ):
        mine = [e for e in log if (e["sport"] == cport) == (dname == "c2s")]
        written = merge_ranges([(e["offset"], e["length"]) for e in mine if not e["omitted"]])
        om = [(e["offset"], e["length"]) for e in mine if e["omitted"]]
        # gaps = bytes of [0, len) never written to the tap copy
        gaps, pos = [], 0
        for o, n in written:
            if o > pos:
                gaps.append([pos, o - pos])
            pos = max(pos, o + n)
        assert pos == len(data), (dname, pos, len(data))
        if not x.small:
            assert gaps, f"no tap omissions in {dname}: rerun or change the seed"
        buf = bytearray(data)
        for o, n in gaps:
            buf[o : o + n] = bytes(n)
        assert conn[dname]["sha256"] == sha(data)
        conn[dname] = {"bytes": len(data), "sha256": sha(bytes(buf)), "gaps": gaps}
        omitted[dname] = om
    how = (
        f"client netns -veth- middle netns running captures/bridge.py (no impairment: the "
        f"endpoints got every frame) -veth- server netns, offloads off; the bridge itself "
        f"writes the pcap of the TCP frames it forwarded, but leaves out of the PCAP ONLY "
        f"data frames chosen by a seeded RNG (seed {seed}, p=0.04, payload inside "
        f"[{lo},{hi}) rel. to ISN+1); python socket peers {n1} B c2s / {n2} B s2c, FIN "
        f"close. Expected gaps = byte ranges never written to the pcap (merged), sha256 of "
        f"the content with those bytes zeroed. omitted (offset,len): {json.dumps(omitted)}; "
        f"bridge counters: {json.dumps(st, sort_keys=True)}"
    )
    return pcap, {"how": how, "connections": [conn]}


def _tagged(x: Ctx, label: str, tags: list[tuple[int, int]], bpf: str):
    """client -veth- B1 (push) =tagged veth (MTU 1600)= B2 (pop) -veth- server."""
    c = x.s.ns("c", ipv6=False)
    b1 = x.s.ns("b1", ipv6=False)
    b2 = x.s.ns("b2", ipv6=False)
    sv = x.s.ns("s", ipv6=False)
    x.s.veth(c, "c0", b1, "b1a")
    x.s.veth(b1, "b1t", b2, "b2t", mtu=1600)
    x.s.veth(b2, "b2a", sv, "s0")
    x._addrs(c, sv, False)
    spec = ",".join(f"0x{t:04x}:{v}" for t, v in tags)
    x.start_bridge(b1, "b1a", "b1t", 81, "push", extra=["--tag-b", spec])
    x.start_bridge(b2, "b2a", "b2t", 82, "pop", extra=["--tag-b", spec])
    n1, n2 = x.size(128 << 10, 16 << 10), x.size((96 << 10) + 5, (12 << 10) + 5)
    pcap = x.work / "cap.pcap"
    td = Tcpdump(x.s, b1, "b1t", pcap, bpf=bpf).start()
    vids = [v for _, v in tags]
    conns = x.exchange(
        c, sv, label, src=C4, dst=S4, port=5000, base_port=47000, count=1, c2s=n1, s2c=n2, vlan=vids
    )
    td.stop()
    st = x.stop_bridges()
    for tag in st.values():
        for d in ("ab", "ba"):
            assert tag[d]["tag_mismatch"] == 0 and tag[d]["send_errors"] == 0, st
    # the capture must really carry the tag stack inline on every frame
    check_tags(pcap, tags)
    how = (
        f"client netns -veth- netns B1 running captures/bridge.py --tag-b {spec} (pushes the "
        f"tag stack toward B2, pops it from B2) =veth MTU 1600= netns B2 running the same "
        f"bridge (pops toward the server, pushes toward B1) -veth- server netns; offloads off, "
        f"endpoints MTU 1500; python socket peers {n1} B c2s / {n2} B s2c, FIN close; tcpdump "
        f"'{bpf}' on the tagged veth in B1 (libpcap re-inserts the kernel-stripped outer tag)"
    )
    return pcap, {"how": how, "connections": conns}


def read_pcap(path: Path):
    import dpkt

    with open(path, "rb") as f:
        yield from dpkt.pcap.Reader(f)


def tcp_frames(pcap: Path):
    """(endpoint a, endpoint b, flags) of each TCP frame, endpoints as the tool prints them."""
    import ipaddress

    import dpkt

    for _ts, buf in read_pcap(pcap):
        ip = dpkt.ethernet.Ethernet(buf).data
        tcp = getattr(ip, "data", None)
        if not isinstance(tcp, dpkt.tcp.TCP):
            continue
        src, dst = ipaddress.ip_address(ip.src), ipaddress.ip_address(ip.dst)
        f = "[{}]:{}" if src.version == 6 else "{}:{}"
        yield f.format(src, tcp.sport), f.format(dst, tcp.dport), tcp


def note_late_rsts(pcap: Path, exp: dict) -> None:
    """A connection expected to close with "fin" may still carry RSTs at the very end (a kernel
    answering a duplicate ACK for a socket that is already fully closed).  Require that every
    such RST comes after both FINs, and say so in "how"; anything else is a broken scenario."""
    import dpkt

    notes = []
    for c in exp["connections"]:
        if c.get("close") != "fin":
            continue
        fin_end: dict[str, int] = {}  # side -> sequence number just after its FIN
        acked: set[str] = set()  # sides whose FIN the other side ACKed
        rsts = 0
        for a, b, tcp in tcp_frames(pcap):
            if {a, b} != {c["client"], c["server"]}:
                continue
            if tcp.flags & dpkt.tcp.TH_FIN:
                fin_end[a] = (tcp.seq + len(tcp.data) + 1) & 0xFFFFFFFF
            if (
                tcp.flags & dpkt.tcp.TH_ACK
                and b in fin_end
                and (tcp.ack - fin_end[b]) & 0xFFFFFFFF < 1 << 31
            ):
                acked.add(b)
            if tcp.flags & dpkt.tcp.TH_RST:
                if len(acked) < 2:
                    raise RuntimeError(
                        f"RST before both FINs were ACKed in "
                        f"{c['client']}->{c['server']}: close would not be 'fin'"
                    )
                rsts += 1
        if len(acked) < 2:
            raise RuntimeError(f"FIN or its ACK missing in {c['client']}->{c['server']}")
        if rsts:
            notes.append(f"{c['client']}->{c['server']} ({rsts} RST)")
    if notes:
        exp["how"] += (
            ". NOTE: after both FINs (and their ACKs) were exchanged, a kernel answered "
            "a late duplicate ACK with a RST for the already-closed socket in: "
            + ", ".join(notes)
            + "; the connection still closed with FIN"
        )


def rst_variant(pcap: Path, server: str) -> str:
    """Describe how the server's RST(s) relate to its FIN, in relative sequence numbers."""
    import dpkt

    isn, fin, rsts, c2s_fin_acked = None, None, [], False
    for a, _b, tcp in tcp_frames(pcap):
        if a == server:
            rel = (tcp.seq - isn - 1) & 0xFFFFFFFF if isn is not None else None
            if tcp.flags & dpkt.tcp.TH_SYN:
                isn = tcp.seq
            elif tcp.flags & dpkt.tcp.TH_FIN:
                fin = rel
            elif tcp.flags & dpkt.tcp.TH_RST:
                rsts.append(
                    (
                        rel,
                        "R." if tcp.flags & dpkt.tcp.TH_ACK else "R",
                        "client had ACKed the FIN"
                        if c2s_fin_acked
                        else "FIN not yet ACKed by the client",
                    )
                )
        elif (
            fin is not None
            and isn is not None
            and tcp.flags & dpkt.tcp.TH_ACK
            and (tcp.ack - isn - 1) & 0xFFFFFFFF == fin + 1
        ):
            c2s_fin_acked = True
    first = rsts[0] if rsts else None
    return (
        f"server FIN at relative seq {fin}, then {len(rsts)} RST(s); the first: "
        f"[{first[1]}] seq {first[0]} ({'=' if first[0] == fin + 1 else '!='} FIN seq + 1, "
        f"the server's SND.NXT after its FIN), {first[2]}"
        if fin is not None and first
        else f"no server FIN; {len(rsts)} RST(s), the first [{first[1]}] at seq {first[0]}"
        if first
        else "no RST"
    )


def count_rst(pcap: Path, sport: int) -> int:
    import dpkt

    return sum(
        1
        for a, _b, tcp in tcp_frames(pcap)
        if a.endswith(f":{sport}") and tcp.flags & dpkt.tcp.TH_RST
    )


def check_tags(pcap: Path, tags):
    n = 0
    for _ts, buf in read_pcap(pcap):
        off = 12
        for tpid, vid in tags:
            t, tci = struct.unpack_from("!HH", buf, off)
            assert (t, tci & 0xFFF) == (tpid, vid), (hex(t), tci)
            off += 4
        assert struct.unpack_from("!H", buf, off)[0] == 0x0800
        n += 1
    assert n > 10, n


def sc_vlan(x: Ctx):
    return _tagged(x, "vlan", [(0x8100, 100)], "vlan 100 and tcp")


def sc_qinq(x: Ctx):
    return _tagged(x, "qinq", [(0x88A8, 300), (0x8100, 400)], "vlan 300 and vlan 400 and tcp")


def sc_offload_supersegments(x: Ctx):
    c, sv = x.direct(offloads=True)
    for ns, ifn in ((c, "c0"), (sv, "s0")):
        x.s.sh(ns, "ethtool", "-K", ifn, "tso", "on", "gso", "on", "tx", "on", "sg", "on")
    n1, n2 = x.size(2 << 20, 256 << 10), x.size(64 << 10, 8 << 10)
    pcap = x.work / "cap.pcap"
    td = Tcpdump(x.s, c, "c0", pcap).start()
    conns = x.exchange(
        c,
        sv,
        "offload-supersegments",
        src=C4,
        dst=S4,
        port=5000,
        base_port=48000,
        count=1,
        c2s=n1,
        s2c=n2,
    )
    td.stop()
    big = max(len(buf) for _ts, buf in read_pcap(pcap))
    if big <= 1514:
        raise RuntimeError(f"no super-segment in the capture (largest frame {big} B)")
    how = (
        f"two netns over one veth with TSO/GSO/tx-checksum/SG offloads ON; python socket "
        f"peers {n1} B c2s / {n2} B s2c at once, FIN close; tcpdump 'tcp' on the SENDING "
        f"(client) veth, so the capture holds super-segments (largest frame {big} B) with "
        f"partial TCP checksums"
    )
    return pcap, {"how": how, "connections": conns}


SCENARIOS = {
    "bulk-both-ways": sc_bulk_both_ways,
    "http-keepalive": sc_http_keepalive,
    "many-short": sc_many_short,
    "ipv6": sc_ipv6,
    "reset-midtransfer": sc_reset_midtransfer,
    "impaired-bridge": sc_impaired_bridge,
    "tap-loss": sc_tap_loss,
    "vlan": sc_vlan,
    "qinq": sc_qinq,
    "offload-supersegments": sc_offload_supersegments,
}


def make(name: str, out: Path, small: bool = False) -> Path:
    """Generate one scenario into out/NAME.pcap + out/NAME.expected.json."""
    work = Path(tempfile.mkdtemp(prefix=f"ut-cap-{name}-"))
    try:
        with NetnsSession("cap") as session:
            pcap, exp = SCENARIOS[name](Ctx(session, work, small))
        note_late_rsts(pcap, exp)
        out.mkdir(parents=True, exist_ok=True)
        dst = out / f"{name}.pcap"
        shutil.copyfile(pcap, dst)
        exp = {
            "capture": dst.name,
            "how": exp["how"],
            "replay_args": exp.get("replay_args", []),
            "connections": sorted(exp["connections"], key=lambda c: (c["client"], c["server"])),
        }
        (out / f"{name}.expected.json").write_text(json.dumps(exp, indent=1) + "\n")
        return dst
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--only",
        action="append",
        choices=sorted(SCENARIOS),
        help="scenario to generate (repeatable; default all)",
    )
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--small", action="store_true", help="reduced sizes (quick CI check)")
    a = ap.parse_args()
    ok, why = netns_available()
    if not ok:
        print(f"error: {why}", file=sys.stderr)
        return 2
    for name in a.only or list(SCENARIOS):
        t0 = time.monotonic()
        dst = make(name, a.out, a.small)
        print(f"{name}: {dst} ({dst.stat().st_size} B, {time.monotonic() - t0:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
