"""Run an evasion case (tests/evasion_cases.py) against a real Linux receiver and return
what was on the wire and what the receiving application read.

Topology (one per run, reused by every case): client netns ``c`` --veth c0|s0-- server
netns ``s``, offloads off, IPv6 off.  The server side has SERVER_IP on s0 and a permanent
neighbour entry for CLIENT_IP (the MAC of c0); CLIENT_IP is configured nowhere, so the
client-side kernel never answers anything (no RST for the server's segments).  The client
is an AF_PACKET socket on c0 that sends frames built byte by byte (tests/frames.py) and
reads the server's SYN-ACK and ACKs to learn its ISN, window, options and progress.  A
second AF_PACKET socket on s0 captures both directions as the server's interface saw them;
that capture is the case's pcap.  It reads through a TPACKET_V2 ring (copied at once, as
tcpdump does), not recv(): a plain packet socket keeps a clone of every frame until it is
read, and Linux does not coalesce cloned skbs in its out-of-order queue, which changes
which copy wins some overlaps (three-segment shapes) - the capture must not change the
receiver it observes.  The application is tests/evasion_server.py, one process
per case, which reads only when told to (see Drain in evasion_cases.py), so what it reads
never depends on scheduling.

This process keeps itself on one CPU while a case runs: veth delivers each frame on the
sending CPU's backlog, so pinning keeps the frames in the order they were sent.

Needs root, iproute2 and ethtool.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import mmap
import os
import platform
import select
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from evasion_cases import Case, Drain, Send, WaitWindow  # noqa: E402
from frames import Seg, ethernet, opt_timestamps, pad_options, syn_options  # noqa: E402
from netnslib import NetnsSession  # noqa: E402

CLIENT_IP, SERVER_IP = "10.77.0.1", "10.77.0.2"
SERVER_PORT = 8000
SERVER_APP = str(TESTS / "evasion_server.py")
ETH_P_ALL, ETH_P_IP = 0x0003, 0x0800
PACKET_OUTGOING = 4
SOL_PACKET, PACKET_RX_RING, PACKET_STATISTICS, PACKET_VERSION = 263, 5, 6, 10
TPACKET_V2, TP_STATUS_USER = 1, 1
TPACKET2_HDR = struct.Struct("IIIHHIIHH4x")  # status len snaplen mac net sec nsec vlan*2
CLONE_NEWNET = 0x40000000
MOD = 2**32
CLIENT_WINDOW = 65535
TS_START = 1000  # the client's timestamp clock starts here and ticks once per segment
WAIT = 2.0  # seconds a wait for the server may take before it is noted as missed
FINISH_IDLE = 1.0  # the application gives up after this long without progress


class CaseError(RuntimeError):
    """The case could not be run (no SYN-ACK, the application failed...)."""


_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the block in network namespace ``name`` (this thread only); sockets made
    there stay there."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
        try:
            yield
        finally:
            if _libc.setns(home, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(home)
        os.close(target)


def mac_of(session: NetnsSession, ns: str, ifname: str) -> str:
    out = session.sh(ns, "cat", f"/sys/class/net/{ifname}/address").stdout
    return out.strip()


# --------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class Parsed:
    """A TCP segment read off the wire (IPv4 over Ethernet)."""

    src: str
    dst: str
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    win: int
    urg: int
    options: dict
    payload: bytes


FLAG_NAMES = "FSRPAUEC"


def flag_str(bits: int) -> str:
    return "".join(ch for i, ch in enumerate(FLAG_NAMES) if bits >> i & 1)


def parse_options(raw: bytes) -> dict:
    opts: dict = {}
    i = 0
    while i < len(raw):
        kind = raw[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(raw) or raw[i + 1] < 2:
            break
        body = raw[i + 2 : i + raw[i + 1]]
        if kind == 2 and len(body) == 2:
            opts["mss"] = struct.unpack("!H", body)[0]
        elif kind == 3 and len(body) == 1:
            opts["wscale"] = body[0]
        elif kind == 4:
            opts["sack_ok"] = True
        elif kind == 5:
            opts["sack"] = [struct.unpack_from("!II", body, k) for k in range(0, len(body), 8)]
        elif kind == 8 and len(body) == 8:
            opts["ts"] = struct.unpack("!II", body)
        i += raw[i + 1]
    return opts


def parse_frame(frame: bytes) -> Parsed | None:
    if len(frame) < 54 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    if ip[0] >> 4 != 4 or ip[9] != 6:
        return None
    total = struct.unpack("!H", ip[2:4])[0]
    tcp = ip[ihl:total]
    sport, dport, seq, ack, off, flags, win, _c, urg = struct.unpack("!HHIIBBHHH", tcp[:20])
    doff = (off >> 4) * 4
    return Parsed(
        socket.inet_ntoa(ip[12:16]),
        socket.inet_ntoa(ip[16:20]),
        sport,
        dport,
        seq,
        ack,
        flags,
        win,
        urg,
        parse_options(tcp[20:doff]),
        bytes(tcp[doff:]),
    )


# --------------------------------------------------------------------------- topology


class Topology:
    """The two namespaces, the veth, the client and capture sockets (see module doc)."""

    def __init__(self, session: NetnsSession) -> None:
        self.session = session
        self.cns = session.ns("c", ipv6=False)
        self.sns = session.ns("s", ipv6=False)
        session.veth(self.cns, "c0", self.sns, "s0")
        session.addr(self.sns, "s0", f"{SERVER_IP}/24")
        self.cmac, self.smac = mac_of(session, self.cns, "c0"), mac_of(session, self.sns, "s0")
        session.sh(
            self.sns,
            "ip",
            "neigh",
            "replace",
            CLIENT_IP,
            "lladdr",
            self.cmac,
            "dev",
            "s0",
            "nud",
            "permanent",
        )
        with in_netns(self.cns):
            self.client = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
            self.client.bind(("c0", ETH_P_IP))
        with in_netns(self.sns):
            self.cap = Ring("s0")
            self.sysctls = {
                k: read_sysctl(k)
                for k in (
                    "tcp_stdurg",
                    "tcp_fastopen",
                    "tcp_timestamps",
                    "tcp_sack",
                    "tcp_rfc1337",
                    "tcp_invalid_ratelimit",
                )
            }
        self.client.setblocking(False)

    def close(self) -> None:
        self.client.close()
        self.cap.close()

    def flush(self) -> None:
        """Forget frames of earlier cases (late FINs of closed connections...)."""
        with contextlib.suppress(BlockingIOError):
            while True:
                self.client.recv(65536)
        self.cap.read()

    def captured(self, cport: int) -> list[tuple[float, bytes]]:
        """The frames of the connection from port ``cport`` seen on s0 so far, in order."""
        out = []
        for ts, data in self.cap.read():
            p = parse_frame(data)
            if p is not None and {p.sport, p.dport} == {cport, SERVER_PORT}:
                out.append((ts, data))
        return out


class Ring:
    """An AF_PACKET ETH_P_ALL socket on ``ifname`` (this namespace) with a TPACKET_V2
    receive ring: the kernel copies each frame into the ring and keeps no reference."""

    FRAME, BLOCK, BLOCKS = 2048, 1 << 16, 64  # 2048 frames of up to 2 KiB

    def __init__(self, ifname: str) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
        self.count = self.BLOCK // self.FRAME * self.BLOCKS
        req = struct.pack("IIII", self.BLOCK, self.BLOCKS, self.FRAME, self.count)
        self.sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        self.ring = mmap.mmap(self.sock.fileno(), self.BLOCK * self.BLOCKS)
        self.sock.bind((ifname, ETH_P_ALL))
        self.next = 0

    def read(self) -> list[tuple[float, bytes]]:
        """Every frame the ring holds, oldest first, handed back to the kernel."""
        out = []
        while True:
            off = self.next * self.FRAME
            status, _len, snap, mac, _net, sec, nsec, _t, _p = TPACKET2_HDR.unpack_from(
                self.ring, off
            )
            if not status & TP_STATUS_USER:
                break
            out.append((sec + nsec / 1e9, self.ring[off + mac : off + mac + snap]))
            struct.pack_into("I", self.ring, off, 0)  # TP_STATUS_KERNEL: the slot is free
            self.next = (self.next + 1) % self.count
        # tpacket_stats (packets, drops), reset by every read: a drop means a partial pcap
        drops = struct.unpack("II", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))[1]
        if drops:
            raise CaseError(f"the capture ring dropped {drops} frames")
        return out

    def close(self) -> None:
        self.ring.close()
        self.sock.close()


def read_sysctl(name: str) -> str:
    return Path(f"/proc/sys/net/ipv4/{name}").read_text().strip()


# --------------------------------------------------------------------------- the application


class App:
    """tests/evasion_server.py in the server namespace, driven over stdin/stdout."""

    def __init__(self, topo: Topology, rcvbuf: int) -> None:
        argv = [sys.executable, SERVER_APP, "--bind", SERVER_IP, "--port", str(SERVER_PORT)]
        if rcvbuf:
            argv += ["--rcvbuf", str(rcvbuf)]
        self.proc = topo.session.popen(
            topo.sns, *argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.reply(10.0)  # {"listening": port}

    def reply(self, timeout: float) -> dict:
        assert self.proc.stdout is not None
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if r else b""
        if not line:
            self.proc.kill()
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise CaseError(f"the server application did not answer: {err[-1000:]}")
        return json.loads(line)

    def command(self, cmd: str, timeout: float) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd.encode() + b"\n")
        self.proc.stdin.flush()
        return self.reply(timeout)

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.write(b"exit\n")
            self.proc.stdin.close()
        NetnsSession.stop(self.proc, timeout=5)
        self.proc.wait(5)
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()


# --------------------------------------------------------------------------- the client


@dataclass
class Client:
    """The raw client of one case: sends segments, tracks what the server said."""

    topo: Topology
    cport: int
    cisn: int
    clock: int = TS_START
    srv_isn: int = 0
    srv_ack: int = 0  # highest ACK number from the server
    srv_win: int = 0  # window of the server's latest segment, in bytes (scaled)
    srv_wscale: int = 0  # the server's shift, when both sides offered window scaling
    srv_tsval: int = 0
    replies: list[Parsed] = field(default_factory=list)

    def rel(self, seq: int) -> int:
        return (seq - self.cisn - 1) % MOD

    def send(
        self,
        seq: int,
        flags: str,
        payload: bytes = b"",
        ack: int | None = None,
        urg: int = 0,
        options: bytes = b"",
    ) -> None:
        seg = Seg(
            CLIENT_IP,
            SERVER_IP,
            self.cport,
            SERVER_PORT,
            seq % MOD,
            ack=(ack or 0) % MOD,
            flags=flags,
            win=CLIENT_WINDOW,
            options=options,
            payload=payload,
            urg=urg,
        )
        frame = ethernet(
            seg.l3(),
            src_mac=bytes.fromhex(self.topo.cmac.replace(":", "")),
            dst_mac=bytes.fromhex(self.topo.smac.replace(":", "")),
        )
        self.topo.client.send(frame)

    def ts_option(self, tsval: int | None) -> bytes:
        if tsval is None:
            tsval, self.clock = self.clock, self.clock + 1
        return pad_options(opt_timestamps(tsval, self.srv_tsval))

    def pump(self, timeout: float) -> int:
        """Read the server's segments for this connection for up to ``timeout`` seconds
        (returns at the first one); how many arrived."""
        n = 0
        end = time.monotonic() + timeout
        while True:
            try:
                data, addr = self.topo.client.recvfrom(65536)
            except BlockingIOError:
                if n:
                    return n
                left = end - time.monotonic()
                if left <= 0:
                    return n
                select.select([self.topo.client], [], [], left)
                continue
            if addr[2] == PACKET_OUTGOING:
                continue
            p = parse_frame(data)
            if p is None or (p.sport, p.dport) != (SERVER_PORT, self.cport):
                continue
            n += 1
            self.replies.append(p)
            if p.flags & 0x10:
                if not self.srv_ack or ((p.ack - self.srv_ack) % MOD) < 2**31:
                    self.srv_ack = p.ack
                # RFC 7323: the window field of a SYN is never scaled
                self.srv_win = p.win if p.flags & 0x02 else p.win << self.srv_wscale
            if "ts" in p.options:
                self.srv_tsval = p.options["ts"][0]

    def wait(self, cond: Callable[[], bool], timeout: float = WAIT) -> bool:
        end = time.monotonic() + timeout
        while not cond():
            left = end - time.monotonic()
            if left <= 0:
                return False
            self.pump(left)
        return True

    def acked_rel(self) -> int:
        return self.rel(self.srv_ack)

    def window_edge_rel(self) -> int:
        return self.acked_rel() + self.srv_win

    def wait_window(self, rel_end: int) -> bool:
        return self.wait(lambda: self.window_edge_rel() >= rel_end)


def reply_str(c: Client, p: Parsed) -> str:
    """A server segment, numbers relative: the server's own seq from its ISN+1, the ACK
    as the client's stream offset."""
    rseq = (p.seq - c.srv_isn - 1) % MOD
    s = f"{flag_str(p.flags)} seq={rseq - MOD if rseq >= 2**31 else rseq}"
    if p.flags & 0x10:
        s += f" ack={c.rel(p.ack)}"
    s += f" win={p.win}"
    if p.payload:
        s += f" len={len(p.payload)}"
    if "sack" in p.options:
        s += " sack=" + ",".join(f"{c.rel(a)}-{c.rel(b)}" for a, b in p.options["sack"])
    return s


def ascii_of(b: bytes) -> str:
    return "".join(chr(x) if 32 <= x < 127 else "." for x in b)


# --------------------------------------------------------------------------- one case


def case_isn(name: str) -> int:
    """A fixed client ISN per case name, so reruns put the same numbers on the wire."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big")


def run_case(topo: Topology, case: Case, cport: int) -> tuple[list[tuple[float, bytes]], dict]:
    """Run ``case`` from client port ``cport``: (captured frames, truth record)."""
    cpu = min(os.sched_getaffinity(0))
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        topo.flush()
        app = App(topo, case.rcvbuf)
        try:
            c = Client(topo, cport, case_isn(case.name))
            sent, notes, hs = _play(c, app, case)
            c.pump(0.05)  # let the last answers come in (the application has not read yet)
            report = app.command(f"finish {FINISH_IDLE}", FINISH_IDLE + 10)
            frames = topo.captured(cport)
        finally:
            app.close()
    finally:
        os.sched_setaffinity(0, saved)
    data = bytes.fromhex(report["data"])
    truth = {
        "case": case.name,
        "family": case.family,
        "description": case.description,
        "kernel": platform.release(),
        "sysctls": topo.sysctls,
        "client": f"{CLIENT_IP}:{cport}",
        "server": f"{SERVER_IP}:{SERVER_PORT}",
        "server_app": {
            "rcvbuf_set": case.rcvbuf or None,
            "rcvbuf": report["rcvbuf"],
            "reads": "only at drain steps and after the last segment",
        },
        "handshake": hs,
        "sent": sent,
        "server_replies": [reply_str(c, p) for p in c.replies],
        "notes": notes,
        "c2s": {"bytes": len(data), "hex": data.hex(), "ascii": ascii_of(data)},
        "s2c": {"bytes": 0, "hex": "", "ascii": ""},
        "oob": report["oob"],
        "marks": report["marks"],
        "end": report["end"],
    }
    if case.params:
        truth["params"] = case.params
    return frames, truth


def _play(c: Client, app: App, case: Case) -> tuple[list[dict], list[str], dict]:
    notes: list[str] = []
    opts = syn_options(1460, case.wscale, True, (c.clock, 0) if case.timestamps else None)
    c.clock += 1
    c.send(c.cisn, "S", case.syn_data, options=opts)
    if not c.wait(lambda: any(p.flags & 0x12 == 0x12 for p in c.replies), 5.0):
        raise CaseError(f"{case.name}: no SYN-ACK")
    synack = next(p for p in c.replies if p.flags & 0x12 == 0x12)
    c.srv_isn = synack.seq
    if case.wscale is not None and "wscale" in synack.options:
        c.srv_wscale = synack.options["wscale"]
    client_opts: dict = {"mss": 1460, "sack_ok": True, "timestamps": case.timestamps}
    if case.wscale is not None:
        client_opts["wscale"] = case.wscale
    hs = {
        "client_isn": c.cisn,
        "server_isn": synack.seq,
        "synack_ack_rel": c.rel(synack.ack),
        "client_options": client_opts,
        "server_window": synack.win,
        "server_options": {
            k: v for k, v in synack.options.items() if k in ("mss", "wscale", "sack_ok")
        },
        "timestamps": "ts" in synack.options,
        "window_scaling": bool(case.wscale is not None and "wscale" in synack.options),
        "syn_data_hex": case.syn_data.hex(),
    }
    if case.timestamps and "ts" not in synack.options:
        raise CaseError(f"{case.name}: the server did not agree to timestamps")
    ts_on = "ts" in synack.options
    c.send(c.cisn + 1, "A", ack=c.srv_isn + 1, options=c.ts_option(None) if ts_on else b"")
    sent: list[dict] = []
    for i, step in enumerate(case.script(synack.win)):
        if isinstance(step, Drain):
            n = app.command("drain", 10)["drained"]
            sent.append({"step": i, "kind": "drain", "read": n, "note": step.note})
        elif isinstance(step, WaitWindow):
            ok = c.wait_window(step.rel_end)
            sent.append(
                {
                    "step": i,
                    "kind": "wait-window",
                    "rel_end": step.rel_end,
                    "seen": c.window_edge_rel(),
                }
            )
            if not ok:
                notes.append(f"step {i}: the window never reached {step.rel_end}")
        else:
            sent.append(_send_step(c, i, step, ts_on, notes))
    return sent, notes, hs


def _send_step(c: Client, i: int, step: Send, ts_on: bool, notes: list[str]) -> dict:
    rel = step.rel + (c.window_edge_rel() if step.anchor == "window" else 0)
    seq = c.cisn + 1 + rel
    ack = c.srv_isn + 1 + step.ack if "A" in step.flags else 0
    tsval = None
    options = b""
    if ts_on and step.ts:
        tsval = step.tsval if step.tsval is not None else c.clock
        options = c.ts_option(step.tsval)
    before = len(c.replies)
    c.send(seq, step.flags, step.data, ack=ack, urg=step.urg, options=options)
    rec = {
        "step": i,
        "kind": "segment",
        "rel": rel,
        "len": len(step.data),
        "flags": step.flags,
        "ascii": ascii_of(step.data),
    }
    if step.ack:
        rec["ack_offset"] = step.ack
    if step.urg:
        rec["urg"] = step.urg
    if tsval is not None:
        rec["tsval"] = tsval
    elif ts_on:
        rec["tsval"] = None
    if step.note:
        rec["note"] = step.note
    if step.wait == "ack":
        end = rel + len(step.data) + ("F" in step.flags)
        if not c.wait(lambda: c.acked_rel() >= end and c.acked_rel() < 2**31):
            notes.append(f"step {i}: no ACK of offset {end} (last ACK {c.acked_rel()})")
    elif step.wait == "reply" and not c.wait(lambda: len(c.replies) > before):
        notes.append(f"step {i}: no reply")
    return rec
