#!/usr/bin/env python3
"""Hostile traffic against `uinet-tap replay`: floods and crafted captures that try to exhaust
its memory or inflate its work, run through the real command with default options, each as a
child process whose peak RSS and CPU time are measured (wait4).

Cases (sizes with --scale 1, the figures the README quotes):

* ``syn-flood``: 2,000,000 SYNs from distinct sources to one server, after 100 connections
  that completed their handshake and stay open; they send their last data and FIN after the
  flood. At the default 1,000,000-connection cap, half-open connections are evicted first: the
  100 must end with ``fin`` and their bytes intact.
* ``syn-synack-flood``: 1,000,000 SYNs each answered by a SYN-ACK (a server's SYN cookies).
* ``half-open``: 200,000 SYNs, nothing else: the cost of a half-open connection.
* ``tiny-segments``: one connection sending 400,000 one-byte segments with a hole before each
  (every other byte missing), then the rest: the piece and byte caps of one direction.
* ``ack-inflation``: one connection and 83 pure ACKs each acknowledging far more than was sent
  (the attack that once made a 21 GB gap).
* ``buffer-churn``: 50,000 connections each holding out-of-order bytes behind a hole, over a
  small --max-buffer: the stalest holders are forced, found without a scan.

Usage:

    .venv/bin/python bench/hostile_bench.py                 # everything, full size
    .venv/bin/python bench/hostile_bench.py --scale 0.1 --only syn-flood --json out.json

Exit status 0 when every case ran and met its check, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from replay_bench import timed_run  # noqa: E402

TOOL = [sys.executable, "-m", "uinet_tap"]

SERVER = bytes([192, 0, 2, 1])
_ETH = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"
_SYN_OPTS = (
    struct.pack("!BBH", 2, 4, 1460) + b"\x01\x03\x03\x07" + b"\x04\x02\x01\x01"
)  # MSS, window scale 7, SACK permitted


def frame(
    src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
    window: int = 65535, opts: bytes = b"", payload: bytes = b"",
) -> bytes:  # fmt: skip
    """Ethernet/IPv4/TCP, checksums left 0 (the tool does not verify them by default)."""
    tcp = struct.pack(
        "!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
        (5 + len(opts) // 4) << 4, flags, window, 0, 0,
    ) + opts  # fmt: skip
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 0, 0, 64, 6, 0, src,
                     dst)  # fmt: skip
    return _ETH + ip + tcp + payload


class PcapWriter:
    def __init__(self, path: Path) -> None:
        self.f = path.open("wb")
        self.f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        self.t = 1_700_000_000.0
        self.packets = 0

    def write(self, data: bytes, gap: float = 1e-6) -> None:
        self.t += gap
        sec = int(self.t)
        self.f.write(struct.pack("<IIII", sec, int((self.t - sec) * 1e6), len(data), len(data)))
        self.f.write(data)
        self.packets += 1

    def close(self) -> None:
        self.f.close()


def syn_burst(w: PcapWriter, n: int, synack: bool = False) -> None:
    """n SYNs from distinct sources (and the server's SYN-ACK to each): one frame built, then
    its address, port and sequence numbers patched per copy (the flood itself is cheap)."""
    syn = bytearray(frame(b"\0" * 4, SERVER, 0, 80, 0, 0, 0x02, opts=_SYN_OPTS))
    ack = bytearray(frame(SERVER, b"\0" * 4, 80, 0, 0, 0, 0x12, opts=_SYN_OPTS))
    for i in range(n):
        src, sport = source(i)
        syn[26:30] = src
        struct.pack_into("!HHI", syn, 34, sport, 80, i * 7919 & 0xFFFFFFFF)
        w.write(bytes(syn))
        if synack:
            ack[30:34] = src
            struct.pack_into("!HHII", ack, 34, 80, sport, i * 104729 & 0xFFFFFFFF,
                             (i * 7919 + 1) & 0xFFFFFFFF)  # fmt: skip
            w.write(bytes(ack))


def source(i: int) -> tuple[bytes, int]:
    """A distinct (address, port) per i."""
    return struct.pack("!I", 0x0A000000 + (i >> 14)), 1024 + (i & 0x3FFF)


# -- the cases ---------------------------------------------------------------------------------


def established(w: PcapWriter, n: int) -> list[tuple[bytes, int, int, int]]:
    """n connections through their handshake and a request: (src, sport, client isn, server
    isn) each, left open."""
    out = []
    for i in range(n):
        src, sport = bytes([198, 51, 100, 1 + i // 200]), 40000 + i
        c, s = 1000 + i, 5000 + i
        w.write(frame(src, SERVER, sport, 80, c, 0, 0x02, opts=_SYN_OPTS))
        w.write(frame(SERVER, src, 80, sport, s, c + 1, 0x12, opts=_SYN_OPTS))
        w.write(frame(src, SERVER, sport, 80, c + 1, s + 1, 0x10))
        w.write(frame(src, SERVER, sport, 80, c + 1, s + 1, 0x18, payload=b"GET / HTTP/1.1\r\n"))
        w.write(frame(SERVER, src, 80, sport, s + 1, c + 17, 0x10))
        out.append((src, sport, c, s))
    return out


def finish_established(w: PcapWriter, conns: list[tuple[bytes, int, int, int]]) -> None:
    for src, sport, c, s in conns:
        w.write(frame(src, SERVER, sport, 80, c + 17, s + 1, 0x18, payload=b"Host: x\r\n\r\n"))
        reply = b"HTTP/1.1 204 OK\r\n\r\n"
        w.write(frame(SERVER, src, 80, sport, s + 1, c + 28, 0x18, payload=reply))
        w.write(frame(src, SERVER, sport, 80, c + 28, s + 20, 0x11))
        w.write(frame(SERVER, src, 80, sport, s + 20, c + 29, 0x11))
        w.write(frame(src, SERVER, sport, 80, c + 29, s + 21, 0x10))


def make_syn_flood(path: Path, scale: float) -> dict:
    w = PcapWriter(path)
    keep = established(w, 100)
    n = int(2_000_000 * scale)
    syn_burst(w, n)
    finish_established(w, keep)
    w.close()
    return {"syns": n, "kept": len(keep), "concurrent": min(n + len(keep), 1_000_000)}


def make_syn_synack_flood(path: Path, scale: float) -> dict:
    w = PcapWriter(path)
    n = int(1_000_000 * scale)
    syn_burst(w, n, synack=True)
    w.close()
    return {"syns": n, "concurrent": n}


def make_half_open(path: Path, scale: float) -> dict:
    w = PcapWriter(path)
    n = int(200_000 * scale)
    syn_burst(w, n)
    w.close()
    return {"syns": n, "concurrent": n}


def make_tiny_segments(path: Path, scale: float) -> dict:
    w = PcapWriter(path)
    src, sport = bytes([198, 51, 100, 9]), 41000
    c, s = 1000, 5000
    w.write(frame(src, SERVER, sport, 80, c, 0, 0x02, opts=_SYN_OPTS))
    w.write(frame(SERVER, src, 80, sport, s, c + 1, 0x12, opts=_SYN_OPTS))
    w.write(frame(src, SERVER, sport, 80, c + 1, s + 1, 0x10))
    w.write(frame(SERVER, src, 80, sport, s + 1, c + 1, 0x10))  # a window of 65535 << 7
    n = int(400_000 * scale)
    # The server's window (scale 7: 8 MiB) covers every byte sent.
    for i in range(n):
        w.write(frame(src, SERVER, sport, 80, c + 2 + 2 * i, s + 1, 0x10, payload=b"x"))
    for i in range(n):
        w.write(frame(src, SERVER, sport, 80, c + 1 + 2 * i, s + 1, 0x10, payload=b"y"))
    w.close()
    return {"segments": 2 * n, "stream": 2 * n, "concurrent": 1}


def make_ack_inflation(path: Path, scale: float) -> dict:
    w = PcapWriter(path)
    src, sport = bytes([198, 51, 100, 10]), 41001
    c, s = 1000, 5000
    big = b"\x01\x03\x03\x0e" + struct.pack("!BBH", 2, 4, 1460) + b"\x01\x01\x04\x02"  # wscale 14
    w.write(frame(src, SERVER, sport, 80, c, 0, 0x02, opts=big))
    w.write(frame(SERVER, src, 80, sport, s, c + 1, 0x12, opts=big))
    w.write(frame(src, SERVER, sport, 80, c + 1, s + 1, 0x10))
    w.write(frame(SERVER, src, 80, sport, s + 1, c + 1, 0x18, payload=b"hello"))
    ack = s + 6
    for _ in range(83):
        ack += 258_000_000  # 83 of these once made a 21,474,836,319-byte gap
        w.write(frame(src, SERVER, sport, 80, c + 1, ack, 0x10))
    w.write(frame(src, SERVER, sport, 80, c + 1, s + 6, 0x11))
    w.write(frame(SERVER, src, 80, sport, s + 6, c + 2, 0x11))
    w.close()
    return {"acks": 83, "concurrent": 1}


def make_buffer_churn(path: Path, scale: float) -> dict:
    w = PcapWriter(path)
    n = int(50_000 * scale)
    for i in range(n):
        src, sport = source(i)
        c, s = i * 7919, i * 104729
        w.write(frame(src, SERVER, sport, 80, c, 0, 0x02, opts=_SYN_OPTS))
        w.write(frame(SERVER, src, 80, sport, s, c + 1, 0x12, opts=_SYN_OPTS))
        w.write(frame(src, SERVER, sport, 80, c + 1, s + 1, 0x10))
        w.write(frame(src, SERVER, sport, 80, c + 11, s + 1, 0x18, payload=b"z" * 1000))
    w.close()
    return {"connections": n, "concurrent": n}


@dataclass
class Case:
    name: str
    make: Callable[[Path, float], dict]
    args: tuple[str, ...] = ()


CASES = [
    Case("syn-flood", make_syn_flood),
    Case("syn-synack-flood", make_syn_synack_flood),
    Case("half-open", make_half_open),
    Case("tiny-segments", make_tiny_segments),
    Case("ack-inflation", make_ack_inflation),
    Case("buffer-churn", make_buffer_churn, ("--max-buffer", str(16 << 20))),
]


@dataclass
class Result:
    case: str
    packets: int
    flows: int
    peak_rss_mib: float
    rss_per_1000_flows_mib: float  # above the no-traffic baseline, per 1000 tracked at once
    cpu_s: float
    wall_s: float
    exit: int
    check: str
    ok: bool
    stats: dict


def run(cmd: list[str]) -> tuple[int, float, float, float]:
    """(exit status, peak RSS MiB, CPU seconds, wall seconds) of a child process, started
    from a small launcher (a child's maxrss also counts the address space it was forked
    from: see replay_bench.timed_run)."""
    r = timed_run(cmd)
    return r.returncode, r.peak_rss_kib / 1024, r.cpu, r.wall


def check(case: str, info: dict, stats: dict, flows_path: Path) -> str | None:
    """None when the case's own property holds, else what failed (the records are read one
    at a time: a flood's run writes millions)."""
    flows = (json.loads(line) for line in _lines(flows_path))
    if case == "syn-flood":
        kept = [r for r in flows if r["client"].startswith("198.51.100.")]
        bad = [r for r in kept if r["close"] != "fin" or r["c2s"]["bytes"] != 27]
        if len(kept) != info["kept"] or bad:
            return f"{len(bad)} of the established connections evicted or cut"
        if stats["connections"] != info["syns"] + info["kept"]:
            want = info["syns"] + info["kept"]
            return f"{stats['connections']} records for {want} connections"
    if case == "ack-inflation" and stats["gap_bytes"] > 1 << 31:
        return f"{stats['gap_bytes']} gap bytes from 83 ACKs"
    if case == "tiny-segments":
        rec = next(flows)
        if rec["c2s"]["bytes"] != info["stream"]:
            return f"stream {rec['c2s']['bytes']} bytes, expected {info['stream']}"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(dir=a.workdir) as tmp:
        # The interpreter, the tool and its plugins loaded: subtracted from the peaks for
        # the per-connection figure.
        empty = Path(tmp) / "empty.pcap"
        PcapWriter(empty).close()
        base = run([*TOOL, "replay", str(empty), "-q"])[1]
        print(f"baseline peak RSS (no traffic): {base:.1f} MiB", flush=True)
        for case in CASES:
            if a.only and case.name not in a.only:
                continue
            pcap = Path(tmp) / f"{case.name}.pcap"
            info = case.make(pcap, a.scale)
            flows_path = Path(tmp) / f"{case.name}.flows.jsonl"
            stats_path = Path(tmp) / f"{case.name}.stats.json"
            cmd = [*TOOL, "replay", str(pcap), "-q", "--flows", str(flows_path),
                   "--stats", str(stats_path), *case.args]  # fmt: skip
            code, rss, cpu, wall = run(cmd)
            stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
            problem = "exit status" if code else check(case.name, info, stats, flows_path)
            n = info["concurrent"]  # connections tracked at once at the peak
            results.append(Result(
                case.name, stats.get("packets", 0), stats.get("connections", 0), round(rss, 1),
                round((rss - base) * 1000 / n, 3), round(cpu, 2), round(wall, 2), code,
                problem or "ok", problem is None,
                {k: stats.get(k) for k in ("evicted", "buffer_forced", "limits", "gap_bytes",
                                           "anomalies")},
            ))  # fmt: skip
            for path in (pcap, flows_path):
                path.unlink(missing_ok=True)
            r = results[-1]
            print(f"{r.case:<18} {r.packets:>9} pkts {r.flows:>9} flows  peak {r.peak_rss_mib:>7} "
                  f"MiB ({r.rss_per_1000_flows_mib} MiB/1000 flows)  cpu {r.cpu_s:>6} s  "
                  f"{r.check}", flush=True)  # fmt: skip
    if a.json:
        a.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0 if all(r.ok for r in results) else 1


def _lines(path: Path) -> Iterator[str]:
    with path.open() as f:
        for line in f:
            if line.strip():
                yield line


if __name__ == "__main__":
    sys.exit(main())
