#!/usr/bin/env python3
"""Seeded userspace layer-2 bridge between two interfaces (AF_PACKET raw sockets).

Run it in a middle network namespace whose two veths have no IP addresses and where IPv6
is disabled, so the kernel there sends nothing of its own.  Offloads must be off on every
veth it touches (frames are forwarded exactly as read).

Per direction ("ab" = read on --a, sent on --b; "ba" the reverse), every TCP frame draws
three numbers from its own seeded RNG (random.Random(f"{seed}/{dir}")), always in the same
order, and is
  * dropped          with probability --loss,
  * sent twice       with probability --dup,
  * held back        with probability --reorder, and released after the next frame of the
                     same direction (or after --reorder-ms if none comes) => reordering.
Non-TCP frames (ARP, ...) are forwarded untouched.

VLAN: --tag-b "TPID:VID,TPID:VID" (outermost first) pushes that tag stack on every frame
sent out of --b and pops it from every frame read on --b (frames with a different stack are
dropped and counted).  The receiving kernel strips the outer tag into skb metadata; it is
read back from PACKET_AUXDATA and put back before popping.

Tap copy: --pcap FILE writes every TCP frame the bridge forwards (as sent, with timestamps)
to a pcap.  With --tap-drop P a seeded RNG (random.Random(f"{seed}/tap/{dir}")) leaves
some TCP data frames (payload, no SYN/FIN/RST, whose payload lies inside --tap-drop-range
LO:HI relative to ISN+1) out of the pcap only -- they are still forwarded.  --tap-log FILE
then gets a JSON record of every payload range written to and omitted from the pcap.

Stops on SIGTERM/SIGINT, flushing the pcap and writing --stats FILE (JSON counters).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
AUX = struct.Struct("IIIHHHH")
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)


def open_port(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    with contextlib.suppress(OSError):
        s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    s.bind((ifname, ETH_P_ALL))
    s.setblocking(False)
    return s


def read_frame(s: socket.socket) -> bytes | None:
    """One received frame with any kernel-stripped VLAN tag put back; None for our own
    outgoing frames."""
    data, anc, _flags, addr = s.recvmsg(65600, socket.CMSG_SPACE(AUX.size))
    if addr[2] == PACKET_OUTGOING:
        return None
    for level, typ, cdata in anc:
        if level == SOL_PACKET and typ == PACKET_AUXDATA and len(cdata) >= AUX.size:
            status, _len, _snap, _mac, _net, tci, tpid = AUX.unpack_from(cdata)
            if status & TP_STATUS_VLAN_VALID or tci:
                if not status & TP_STATUS_VLAN_TPID_VALID:
                    tpid = 0x8100
                data = data[:12] + struct.pack("!HH", tpid, tci) + data[12:]
    return data


def split_tags(frame: bytes) -> tuple[list[tuple[int, int]], int]:
    """([(tpid, tci), ...], offset of the real ethertype)."""
    tags, off = [], 12
    while len(frame) >= off + 4:
        tpid, tci = struct.unpack_from("!HH", frame, off)
        if tpid not in VLAN_TPIDS:
            break
        tags.append((tpid, tci))
        off += 4
    return tags, off


def tcp_info(frame: bytes):
    """(src, sport, dst, dport, seq, flags, payload_len) for an IPv4/IPv6 TCP frame, else None."""
    _tags, off = split_tags(frame)
    if len(frame) < off + 2:
        return None
    etype = struct.unpack_from("!H", frame, off)[0]
    p = off + 2
    if etype == 0x0800 and len(frame) >= p + 20:
        ihl = (frame[p] & 0x0F) * 4
        if frame[p + 9] != 6:
            return None
        total = struct.unpack_from("!H", frame, p + 2)[0]
        src, dst = frame[p + 12 : p + 16], frame[p + 16 : p + 20]
        t = p + ihl
        end = p + total
    elif etype == 0x86DD and len(frame) >= p + 40:
        if frame[p + 6] != 6:
            return None
        plen = struct.unpack_from("!H", frame, p + 4)[0]
        src, dst = frame[p + 8 : p + 24], frame[p + 24 : p + 40]
        t = p + 40
        end = t + plen
    else:
        return None
    if len(frame) < t + 20:
        return None
    sport, dport, seq = struct.unpack_from("!HHI", frame, t)
    doff = (frame[t + 12] >> 4) * 4
    flags = frame[t + 13]
    return src, sport, dst, dport, seq, flags, max(0, end - (t + doff))


class Pcap:
    def __init__(self, path: str):
        self.f = open(path, "wb")  # noqa: SIM115 (closed in close())
        self.f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))

    def write(self, frame: bytes, ts: float) -> None:
        sec = int(ts)
        usec = int(round((ts - sec) * 1e6))
        if usec >= 1000000:
            sec, usec = sec + 1, usec - 1000000
        self.f.write(struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame)

    def close(self) -> None:
        self.f.close()


def parse_tags(spec: str) -> list[tuple[int, int]]:
    out = []
    for part in filter(None, spec.split(",")):
        tpid, vid = part.split(":")
        out.append((int(tpid, 0), int(vid, 0)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--a", required=True)
    ap.add_argument("--b", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--loss", type=float, default=0.0)
    ap.add_argument("--dup", type=float, default=0.0)
    ap.add_argument("--reorder", type=float, default=0.0)
    ap.add_argument("--reorder-ms", type=float, default=20.0)
    ap.add_argument("--tag-b", default="")
    ap.add_argument("--pcap")
    ap.add_argument("--tap-drop", type=float, default=0.0)
    ap.add_argument("--tap-drop-range", default="0:4294967295")
    ap.add_argument("--tap-log")
    ap.add_argument("--stats")
    ap.add_argument("--ready")
    args = ap.parse_args()

    tags_b = parse_tags(args.tag_b)
    tag_bytes = b"".join(struct.pack("!HH", tpid, vid) for tpid, vid in tags_b)
    lo, hi = (int(x) for x in args.tap_drop_range.split(":"))
    sa, sb = open_port(args.a), open_port(args.b)
    out_of = {sa: sb, sb: sa}
    dname = {sa: "ab", sb: "ba"}
    rng = {d: random.Random(f"{args.seed}/{d}") for d in ("ab", "ba")}
    tap_rng = {d: random.Random(f"{args.seed}/tap/{d}") for d in ("ab", "ba")}
    held: dict[str, tuple[float, bytes] | None] = {"ab": None, "ba": None}
    stats = {
        d: {
            "read": 0,
            "sent": 0,
            "tcp": 0,
            "lost": 0,
            "dup": 0,
            "reordered": 0,
            "tag_mismatch": 0,
            "send_errors": 0,
            "tap_omitted": 0,
            "tap_written": 0,
        }
        for d in ("ab", "ba")
    }
    isn: dict[tuple, int] = {}
    tap_log: list[dict] = []
    pcap = Pcap(args.pcap) if args.pcap else None

    stop = False

    def on_sig(_s, _f):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_sig)
    signal.signal(signal.SIGINT, on_sig)

    def tap(d: str, frame: bytes) -> None:
        info = tcp_info(frame)
        if pcap is None or info is None:
            return
        src, sport, dst, dport, seq, flags, plen = info
        key = (src, sport, dst, dport)
        if flags & 0x02:  # SYN
            isn[key] = seq
        omit = False
        rel = None
        if key in isn and plen:
            rel = (seq - isn[key] - 1) & 0xFFFFFFFF
            if args.tap_drop and not flags & 0x07:
                r = tap_rng[d].random()
                if r < args.tap_drop and rel >= lo and rel + plen <= hi:
                    omit = True
        if rel is not None:
            tap_log.append(
                {
                    "dir": d,
                    "src": socket.inet_ntop(
                        socket.AF_INET if len(src) == 4 else socket.AF_INET6, src
                    ),
                    "sport": sport,
                    "dst": socket.inet_ntop(
                        socket.AF_INET if len(dst) == 4 else socket.AF_INET6, dst
                    ),
                    "dport": dport,
                    "offset": rel,
                    "length": plen,
                    "omitted": omit,
                }
            )
        if omit:
            stats[d]["tap_omitted"] += 1
            return
        stats[d]["tap_written"] += 1
        pcap.write(frame, time.time())

    def send(d: str, s_out: socket.socket, frame: bytes) -> None:
        try:
            s_out.send(frame)
            stats[d]["sent"] += 1
            tap(d, frame)
        except OSError as e:
            stats[d]["send_errors"] += 1
            print(f"bridge: send {d} {len(frame)}B: {e}", file=sys.stderr)

    if args.ready:
        with open(args.ready, "w") as f:
            f.write(str(os.getpid()))

    while not stop:
        now = time.monotonic()
        timeout = 0.05
        for h in held.values():
            if h is not None:
                timeout = min(timeout, max(0.0, h[0] - now))
        try:
            ready, _, _ = select.select([sa, sb], [], [], timeout)
        except InterruptedError:
            continue
        now = time.monotonic()
        for d, h in list(held.items()):
            if h is not None and h[0] <= now:
                held[d] = None
                send(d, sb if d == "ab" else sa, h[1])
        for s_in in ready:
            d = dname[s_in]
            s_out = out_of[s_in]
            for _ in range(64):
                try:
                    frame = read_frame(s_in)
                except BlockingIOError:
                    break
                if frame is None:
                    continue
                st = stats[d]
                st["read"] += 1
                if tags_b:
                    if d == "ab":
                        frame = frame[:12] + tag_bytes + frame[12:]
                    else:
                        got, off = split_tags(frame)
                        if [(t, c & 0x0FFF) for t, c in got] != tags_b:
                            st["tag_mismatch"] += 1
                            continue
                        frame = frame[:12] + frame[off:]
                if tcp_info(frame) is None:
                    send(d, s_out, frame)
                    continue
                st["tcp"] += 1
                r = rng[d]
                r_loss, r_dup, r_reo = r.random(), r.random(), r.random()
                if r_loss < args.loss:
                    st["lost"] += 1
                    continue
                if r_reo < args.reorder and held[d] is None:
                    st["reordered"] += 1
                    held[d] = (time.monotonic() + args.reorder_ms / 1000.0, frame)
                    continue
                send(d, s_out, frame)
                if r_dup < args.dup:
                    st["dup"] += 1
                    send(d, s_out, frame)
                h = held[d]
                if h is not None:
                    held[d] = None
                    send(d, s_out, h[1])

    for d, h in held.items():
        if h is not None:
            send(d, sb if d == "ab" else sa, h[1])
    if pcap:
        pcap.close()
    if args.tap_log:
        with open(args.tap_log, "w") as f:
            json.dump(tap_log, f)
    if args.stats:
        with open(args.stats, "w") as f:
            json.dump(stats, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
