"""Peak memory of `uinet-tap replay --tui` under a flood of short connections: what the live
view's list of ended flows (--keep-ended) and their kept early bytes (--keep-bytes, 64 MiB for
all) cost, with the cap biting and not.

Each connection: handshake, an HTTP request with its own Host, a 1,200-byte response, FIN both
ways (8 frames); a new one every 10 ms of capture time. The view runs in a real terminal
(tmux, 160x40); the run ends when the header counts every connection, then q. Peak RSS from
/usr/bin/time (the whole process).

    .venv/bin/python bench/view_memory.py [--connections 100000] [--keep-ended N ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from hostile_bench import _SYN_OPTS, SERVER, PcapWriter, frame  # noqa: E402


def make_pcap(path: Path, n: int) -> None:
    w = PcapWriter(path)
    body = bytes(range(256)) * 4 + bytes(176)  # 1,200 bytes
    for i in range(n):
        src, sport = bytes([198, 18, (i >> 8) & 0xFF, i & 0xFF]), 10000 + (i >> 16)
        c, s = 1000 + i, 7000 + i
        req = f"GET / HTTP/1.1\r\nHost: h{i}.example.com\r\n\r\n".encode()
        resp = b"HTTP/1.1 200 OK\r\nContent-Length: 1200\r\n\r\n" + body
        # 100 new connections a second of capture time: the tracker's closing timeout (60 s)
        # holds some 6,000 at a time, so the flood's cost is the view's list, not the engine's
        w.write(frame(src, SERVER, sport, 80, c, 0, 0x02, opts=_SYN_OPTS), gap=0.01)
        w.write(frame(SERVER, src, 80, sport, s, c + 1, 0x12, opts=_SYN_OPTS))
        w.write(frame(src, SERVER, sport, 80, c + 1, s + 1, 0x10))
        w.write(frame(src, SERVER, sport, 80, c + 1, s + 1, 0x18, payload=req))
        c2 = c + 1 + len(req)
        w.write(frame(SERVER, src, 80, sport, s + 1, c2, 0x18, payload=resp))
        s2 = s + 1 + len(resp)
        w.write(frame(src, SERVER, sport, 80, c2, s2, 0x11))
        w.write(frame(SERVER, src, 80, sport, s2, c2 + 1, 0x11))
        w.write(frame(src, SERVER, sport, 80, c2 + 1, s2 + 1, 0x10))
    w.close()


def tmux(sock: str, *args: str) -> str:
    return subprocess.run(["tmux", "-L", sock, *args], capture_output=True, text=True,
                          timeout=10).stdout  # fmt: skip


def peak_rss_mib(pcap: Path, n: int, extra: list[str], tui: bool = True) -> float:
    with tempfile.NamedTemporaryFile("r") as rss:
        cmd = ["/usr/bin/time", "-f", "%M", "-o", rss.name, "env", "-u", "COLUMNS", "-u",
               "LINES", sys.executable, "-m", "uinet_tap", "replay", str(pcap), "-q",
               *extra]  # fmt: skip
        if not tui:
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            return int(rss.read().split()[-1]) / 1024
        sock = f"ut-viewmem-{uuid.uuid4().hex[:8]}"
        tmux(sock, "-f", "/dev/null", "new-session", "-d", "-x", "160", "-y", "40", "-s", "w",
             " ".join([*cmd, "--tui"]) + "; sleep 60")  # fmt: skip
        try:
            deadline = time.monotonic() + 1800
            while time.monotonic() < deadline:
                screen = tmux(sock, "capture-pane", "-p", "-t", "w")
                if f"/ {n:,} total" in screen and " 0 active" in screen:
                    break
                time.sleep(1)
            else:
                raise SystemExit(f"the view never counted {n} flows:\n{screen}")
            header = next(x for x in screen.splitlines() if "active" in x)
            print("   ", header.strip()[:100])
            tmux(sock, "send-keys", "-t", "w", "q")
            while not rss.read().strip():
                time.sleep(0.5)
                rss.seek(0)
            rss.seek(0)
            return int(rss.read().split()[-1]) / 1024
        finally:
            tmux(sock, "kill-server")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=100_000)
    ap.add_argument("--keep-ended", type=int, nargs="*", default=[100_000, 5_000])
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    with tempfile.TemporaryDirectory() as tmp:
        pcap = Path(tmp) / "short.pcap"
        make_pcap(pcap, args.connections)
        print(f"{args.connections:,} connections, {pcap.stat().st_size / 2**20:.0f} MiB")
        mib = peak_rss_mib(pcap, args.connections, [], tui=False)
        print(f"  replay, no view: {mib:.0f} MiB")
        for keep in args.keep_ended:
            mib = peak_rss_mib(pcap, args.connections, ["--keep-ended", str(keep)])
            print(f"  replay --tui --keep-ended {keep:,}: {mib:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
