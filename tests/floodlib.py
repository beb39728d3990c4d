"""Floods through the inline topology (tests/inlinelib.py): frames built here, written to a
pcap, sent by ``tcpreplay`` from the client namespace onto the client's veth, so they cross
the tool like the client's own traffic.

The sources are spoofed outside the topology's subnet (10.99.0.0/16): the server's kernel has
no route back to them, so it answers none of them (no SYN-ACK, no RST) and every SYN stays a
half-open connection for the tool; checksums are right, so the server's kernel takes each
frame as a real one (and drops it for want of a route or a listener, not as corrupt).
"""

from __future__ import annotations

import json
import random
import re
import signal
import socket
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from inlinelib import Side, Topology
from netnslib import NetnsSession

Kind = Literal["syn", "flows"]
SPOOF_NET = 0x0A630000  # 10.99.0.0/16: outside the topology's 10.77.0.0/24
PORTS = 65536 - 1024  # source ports 1024..65535
REQUEST = b"GET /flood HTTP/1.1\r\nHost: flood\r\n\r\n"
_SYN_OPTS = struct.pack("!BBH", 2, 4, 1460) + b"\x01\x03\x03\x07" + b"\x04\x02\x01\x01"
SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def tcp_frame(eth: bytes, src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int,
              flags: int, opts: bytes = b"", payload: bytes = b"") -> bytes:  # fmt: skip
    """Ethernet/IPv4/TCP with both checksums right."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, (5 + len(opts) // 4) << 4, flags,
                      64240, 0, 0) + opts + payload  # fmt: skip
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", _csum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    return eth + ip + tcp


def sources(n: int, seed: int) -> list[tuple[str, int]]:
    """n distinct spoofed (address, port), in a seeded random order."""
    out = []
    for i in random.Random(seed).sample(range(65536 * PORTS), n):
        addr = socket.inet_ntoa(struct.pack("!I", SPOOF_NET + i // PORTS))
        out.append((addr, 1024 + i % PORTS))
    return out


def write_flood(path: Path, kind: Kind, n: int, *, src_mac: str, dst_mac: str, dst_ip: str,
                dport: int, seed: int = 1) -> list[tuple[str, int]]:  # fmt: skip
    """A pcap of n new connections from distinct spoofed sources to dst_ip:dport: ``syn``
    one SYN each; ``flows`` SYN, a request (ACK|PSH) and FIN|ACK each, a short connection as
    its client sends it. Returns the sources, in the order sent."""
    eth = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", ""))
    eth += b"\x08\x00"
    dst = socket.inet_aton(dst_ip)
    srcs = sources(n, seed)
    with path.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, (addr, sport) in enumerate(srcs):
            src = socket.inet_aton(addr)
            isn = (i * 2654435761) & 0xFFFFFFFF
            frames = [tcp_frame(eth, src, dst, sport, dport, isn, 0, SYN, _SYN_OPTS)]
            if kind == "flows":
                seq, ack = (isn + 1) & 0xFFFFFFFF, (i * 40503 + 1) & 0xFFFFFFFF
                frames.append(tcp_frame(eth, src, dst, sport, dport, seq, ack, ACK | PSH,
                                        payload=REQUEST))  # fmt: skip
                seq = (seq + len(REQUEST)) & 0xFFFFFFFF
                frames.append(tcp_frame(eth, src, dst, sport, dport, seq, ack, FIN | ACK))
            for fr in frames:  # timestamps do not matter: tcpreplay paces by --pps
                f.write(struct.pack("<IIII", 1_700_000_000, i % 1_000_000, len(fr), len(fr)))
                f.write(fr)
    return srcs


def mac(t: Topology, side: Side, ifname: str) -> str:
    out = t.exec(side, "ip", "-j", "link", "show", "dev", ifname).stdout
    return str(json.loads(out)[0]["address"])


def link_counters(t: Topology, side: Side, ifname: str) -> dict[str, int]:
    """The kernel's own counters of an interface: rx/tx packets and drops."""
    out = t.exec(side, "ip", "-j", "-s", "link", "show", "dev", ifname).stdout
    st = json.loads(out)[0]["stats64"]
    return {
        "rx_packets": st["rx"]["packets"],
        "rx_dropped": st["rx"]["dropped"],
        "tx_packets": st["tx"]["packets"],
        "tx_dropped": st["tx"]["dropped"],
    }


@dataclass
class Replay:
    """tcpreplay sending a pcap out of the client's veth, paced at ``pps``."""

    proc: subprocess.Popen
    out: Path

    @classmethod
    def start(cls, t: Topology, pcap: Path, pps: int, *, loop: int = 1,
              duration: int | None = None) -> Replay:  # fmt: skip
        """``loop`` 0: until ``duration`` seconds (or stop()). Frames preloaded (-K), so
        the pace is not the disk's. tcpreplay's default timer spins: a whole core at any rate
        (2,000 or 20,000 frames a second alike, measured here), a core the tool needs on a
        2-core machine; with nanosleep (--timer=nano) between ticks of several frames
        (--pps-multi) it holds the same pace at a few percent of one."""
        out = pcap.with_suffix(".tcpreplay.log")
        argv = ["tcpreplay", f"--intf1={t.client_if}", f"--pps={pps}", "-K", f"--loop={loop}",
                f"--pps-multi={max(1, pps // 1000)}", "--timer=nano",
                "--no-flow-stats"]  # fmt: skip
        if duration is not None:
            argv.append(f"--duration={duration}")
        with out.open("wb") as f:
            p = t.popen("client", *argv, str(pcap), stdout=f, stderr=subprocess.STDOUT)
        return cls(p, out)

    def wait(self, timeout: float) -> int:
        """Frames tcpreplay says it sent; raises if it failed or failed to send any."""
        rc = self.proc.wait(timeout)
        text = self.out.read_text(errors="replace")
        if rc != 0:
            raise RuntimeError(f"tcpreplay exited {rc}:\n{text}")
        return self.sent(text)

    def stop(self) -> int:
        NetnsSession.stop(self.proc, signal.SIGINT)
        return self.sent(self.out.read_text(errors="replace"))

    @staticmethod
    def sent(text: str) -> int:
        m = re.search(r"Actual: (\d+) packets", text)
        failed = re.search(r"Failed packets:\s+(\d+)", text)
        if m is None or failed is None:
            raise RuntimeError(f"no totals in tcpreplay's output:\n{text}")
        if int(failed[1]):
            raise RuntimeError(f"tcpreplay failed to send frames:\n{text}")
        return int(m[1])
