"""Runs inside a network namespace for tests/test_ringcapture.py: opens watch's captures on an
interface, says "ready" on stdout, reads, and prints what it read as one JSON line.

    ring_probe.py IFACE same N [--snaplen S] [--wait T]   ring and libpcap side by side
    ring_probe.py IFACE lifetime N             a batch checked whole until the one after next
    ring_probe.py IFACE fanout N               two rings in one fanout group
    ring_probe.py IFACE full N                 read nothing until the test says, then all
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from uinet_tap.live import LiveCapture
from uinet_tap.ringcapture import BLOCK, RingCapture

SMALL = 4 << 20  # four ring blocks
TP_STATUS_USER = 1  # a ring block's status (struct tpacket_hdr_v1, 8 bytes into the block)


def frames(batch) -> list[bytes]:
    return [bytes(batch.data[o : o + n]) for o, n in zip(batch.offsets, batch.lengths, strict=True)]


def read(capture, want: int, timeout: float = 8.0, times: list | None = None) -> list[bytes]:
    """Up to ``want`` frames; their capture times appended to ``times`` if given."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        batch = capture.poll(0.05)
        if batch is not None:
            got.extend(frames(batch))
            if times is not None:
                times.extend(batch.times)
    return got


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("iface")
    ap.add_argument("mode", choices=["same", "lifetime", "fanout", "full"])
    ap.add_argument("count", type=int)
    ap.add_argument("--snaplen", type=int, default=262144)
    ap.add_argument("--wait", type=float, default=8.0, help="same: seconds to read at most")
    a = ap.parse_args()
    out: dict = {}
    if a.mode == "same":
        ring = RingCapture(a.iface, snaplen=a.snaplen)
        pcap = LiveCapture(a.iface, snaplen=a.snaplen)
        print("ready", flush=True)
        out["ring_times"], out["pcap_times"] = [], []
        out["ring"] = [f.hex() for f in read(ring, a.count, a.wait, out["ring_times"])]
        out["pcap"] = [f.hex() for f in read(pcap, a.count, a.wait, out["pcap_times"])]
        out["ring_stats"], out["pcap_stats"] = ring.stats(), pcap.stats()
    elif a.mode == "lifetime":
        ring = RingCapture(a.iface, buffer_size=SMALL)
        print("ready", flush=True)
        kept: list[tuple[object, list[bytes]]] = []  # the last two batches and their copies
        count = damaged = checks = released = 0
        deadline = time.monotonic() + 20
        while count < a.count and time.monotonic() < deadline:
            batch = ring.poll(0.05)
            if batch is None:
                continue
            # The batch before this one must still read as it did (the contract of
            # pcapfile.Batch: good until the reader is asked for the batch after next).
            if kept:
                before, copies = kept[-1]
                checks += 1
                damaged += frames(before) != copies
                # and every block it lies in is still this process's, not the kernel's
                for off in before.offsets:
                    status = int.from_bytes(batch.data[off - off % BLOCK + 8 :][:4], "little")
                    released += not status & TP_STATUS_USER
            copies = frames(batch)
            count += len(copies)
            kept = [*kept[-1:], (batch, copies)]
        out.update(count=count, damaged=damaged, released=released, checks=checks,
                   stats=ring.stats())  # fmt: skip
    elif a.mode == "fanout":
        members = [RingCapture(a.iface, fanout_group=4242) for _ in range(2)]
        print("ready", flush=True)
        got: list[list[bytes]] = [[], []]
        deadline = time.monotonic() + 8
        while sum(map(len, got)) < a.count and time.monotonic() < deadline:
            for i, m in enumerate(members):
                batch = m.poll(0.02)
                if batch is not None:
                    got[i].extend(frames(batch))
        out["members"] = [[f.hex() for f in g] for g in got]
    else:
        ring = RingCapture(a.iface, buffer_size=SMALL)
        print("ready", flush=True)
        sys.stdin.readline()  # the test has sent everything
        behind = ring.behind()  # the ring full, nothing read yet
        got_all = read(ring, a.count, timeout=2.0)
        out.update(count=len(got_all), stats=ring.stats(), behind=[behind, ring.behind()])
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
