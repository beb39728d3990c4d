"""Checks shared by the inline tests: seeded files, fetches, pcap reading (tags, TCP flags),
sockets settling after a transfer."""

from __future__ import annotations

import hashlib
import random
import shutil
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import dpkt
import pytest
from inlinelib import Topology

MB = 1 << 20


def need(*progs: str) -> None:
    missing = [p for p in progs if shutil.which(p) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")


def blob(path: Path, size: int, seed: int = 7) -> str:
    """Write size seeded-random bytes to path; return their sha256."""
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch(t: Topology, url: str, out: Path) -> None:
    t.client("curl", "-sS", "-g", "--fail", "--max-time", "60", "-o", str(out), url)


def frames(pcap: Path) -> Iterator[bytes]:
    with open(pcap, "rb") as f:
        for _ts, buf in dpkt.pcap.Reader(f):
            yield buf


def tag_stack(buf: bytes) -> tuple[list[tuple[int, int]], dpkt.ethernet.Ethernet]:
    """([(TPID, VID), ...] outermost first, parsed frame); dpkt decodes the tags (the
    TPID of each tag is the type field in front of it)."""
    eth = dpkt.ethernet.Ethernet(buf)
    tags = getattr(eth, "vlan_tags", [])
    tpids = [struct.unpack_from("!H", buf, 12)[0]] + [t.type for t in tags[:-1]]
    return [(tp, t.id) for tp, t in zip(tpids, tags, strict=True)], eth


def tcp_flags(pcap: Path) -> list[int]:
    """TCP flags of every TCP frame in pcap (IPv4 or IPv6)."""
    out = []
    for buf in frames(pcap):
        ip = dpkt.ethernet.Ethernet(buf).data
        if isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6) and isinstance(ip.data, dpkt.tcp.TCP):
            out.append(ip.data.flags)
    return out


def resets(pcap: Path, own_ip: str) -> list[str]:
    """The RSTs in an endpoint's capture that matter to it: every one it received, and one it
    sent before its connection had closed both ways (a RST its kernel sends after that answers
    a stray segment reaching a socket already CLOSED, as two kernels may do under loss, and
    no application sees it)."""
    own = socket.inet_pton(socket.AF_INET6 if ":" in own_ip else socket.AF_INET, own_ip)
    fins: dict[tuple[tuple[bytes, int], ...], set[bool]] = {}
    bad = []
    for n, buf in enumerate(frames(pcap), 1):
        ip = dpkt.ethernet.Ethernet(buf).data
        if not isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6) or not isinstance(ip.data, dpkt.tcp.TCP):
            continue
        tcp = ip.data
        mine = ip.src == own
        ends = ((ip.src, tcp.sport), (ip.dst, tcp.dport))
        conn = ends if mine else ends[::-1]
        if tcp.flags & dpkt.tcp.TH_FIN:
            fins.setdefault(conn, set()).add(mine)
        if tcp.flags & dpkt.tcp.TH_RST and not (mine and fins.get(conn) == {True, False}):
            bad.append(f"frame {n}: RST {'sent' if mine else 'received'}")
    return bad


def settled(t: Topology, side, timeout: float = 5.0) -> list:
    """TCP sockets on side other than TIME-WAIT, once they are gone (or after timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        left = [s for s in t.tcp_sockets(side) if s[0] != "TIME-WAIT"]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)
