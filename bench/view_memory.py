"""Peak memory of the live view under a flood of short connections: what its list of ended
flows (--keep-ended) and their kept early bytes (--keep-bytes, 64 MiB for all) cost, with the
cap biting and not.

Each connection: handshake, an HTTP request with its own Host, a 1,200-byte response, FIN both
ways (8 frames); a new one every 10 ms of capture time. The view runs in a real terminal
(tmux, 160x40). Peak RSS from /usr/bin/time (the whole process).

Replay mode (the default): `uinet-tap replay FILE --tui`; the run ends when the header counts
every connection, then q; a first run without the view.

    .venv/bin/python bench/view_memory.py [--connections 100000] [--keep-ended N ...]

Watch mode (--watch; root, tcpreplay, tmux): two network namespaces joined by a veth, no
addresses; `uinet-tap watch IFACE --tui --stats FILE` on the receiving end and
`tcpreplay --pps N -K --limit 8*connections` sending the same capture into the other. Watch
goes by the wall clock: a connection ended by FIN leaves the engine after --timeout-closing
(3 s), so what grows is the view's list. The run ends when tcpreplay is done and the header
counts every connection as ended (or nothing has changed on it for --quiet seconds), then q.
Kernel drops and records written come from --stats; the peaks of RssAnon (the heap) and
RssFile (where the 128 MiB capture ring, mapped in, counts) are sampled from /proc every 0.2 s.
For each connection count a first run without the view (`--no-tui --keep-ended 0`: capture
and engine alone), then one per --keep-ended (--no-baseline: those only); one capture (the
largest count) serves them all.

    .venv/bin/python bench/view_memory.py --watch [--connections 50000 200000]
        [--keep-ended 5000 100000] [--pps 24000] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))
from hostile_bench import _SYN_OPTS, SERVER, PcapWriter, frame  # noqa: E402
from netnslib import NetnsSession, Tmux, netns_available  # noqa: E402

FRAMES = 8  # frames a connection of make_pcap
TX, RX = "vmtx0", "vmrx0"  # the veth: tcpreplay sends into TX, watch captures on RX


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


# the view's second header line: " flows A active · B closed · C ended (D dropped from the
# list) / T total  drops kernel K ..." (the middle parts only when non-zero)
_HEADER = re.compile(
    r"flows ([\d,]+) active(?: · ([\d,]+) closed)?(?: · ([\d,]+) ended)?"
    r"(?: \(([\d,]+) dropped from the list\))? / ([\d,]+) total"
)
# watch --no-tui's status line
_STATUS = re.compile(r"flows active=(\d+) total=(\d+)")


def _num(text: str | None) -> int:
    return int(text.replace(",", "")) if text else 0


def header_counts(screen: str) -> dict[str, int] | None:
    """The counts the screen shows last: the view's header, or --no-tui's status line."""
    m = _HEADER.search(screen)
    if m:
        active, closed, ended, dropped, total = (_num(g) for g in m.groups())
        return {"active": active + closed, "ended": ended + dropped, "listed": ended,
                "dropped_from_list": dropped, "total": total}  # fmt: skip
    found = _STATUS.findall(screen)
    if found:
        active, total = (int(x) for x in found[-1])
        return {"active": active, "ended": total - active, "total": total}
    return None


class RssSampler(threading.Thread):
    """Peaks of the tool process's /proc/PID/status Rss* lines, sampled every 0.2 s: what
    of its RSS is its own heap (RssAnon) and what the capture ring mapped in (RssFile,
    RssShmem), which /usr/bin/time's single figure does not tell apart."""

    KEYS = ("RssAnon", "RssFile", "RssShmem", "VmHWM")

    def __init__(self, marker: str) -> None:
        super().__init__(daemon=True)
        self.marker = marker.encode()
        self.peak_kib = dict.fromkeys(self.KEYS, 0)
        self.done = threading.Event()

    def _pid(self) -> int | None:
        # the interpreter, not /usr/bin/time or ip netns exec: the one whose argv[0] it is
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                if argv[0] == sys.executable.encode() and self.marker in argv:
                    return int(entry.name)
        return None

    def run(self) -> None:
        pid = None
        while not self.done.is_set():
            pid = pid or self._pid()
            if pid is not None:
                try:
                    text = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    return
                for line in text.splitlines():
                    key, _, value = line.partition(":")
                    if key in self.peak_kib:
                        self.peak_kib[key] = max(self.peak_kib[key], int(value.split()[0]))
            time.sleep(0.2)

    def peaks_mib(self) -> dict[str, float]:
        self.done.set()
        self.join(5)
        return {k: round(v / 1024, 1) for k, v in self.peak_kib.items()}


def close_tmux(term: Tmux) -> None:
    """Kill the server, then remove its socket file (tmux 3.3 leaves it behind)."""
    sock = term.tmux("display-message", "-p", "#{socket_path}").strip()
    term.close()
    if sock:
        Path(sock).unlink(missing_ok=True)


def wait_for(screen: Callable[[], str], pred: Callable[[str], bool], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while not pred(text := screen()):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out; the screen:\n{text}")
        time.sleep(0.2)
    return text


def watch_run(
    s: NetnsSession, rx_ns: str, tx_ns: str, pcap: Path, n: int, keep: int | None,
    args: argparse.Namespace, tmp: Path,
) -> dict:  # fmt: skip
    """One watch process (keep None: no view, no list) while tcpreplay sends n connections."""
    tag = f"{n}-{keep}"
    rss, stats = tmp / f"rss-{tag}", tmp / f"stats-{tag}.json"
    view = ["--no-tui", "--status-interval", "1", "--keep-ended", "0"] if keep is None else [
        "--tui", "--keep-ended", str(keep)]  # fmt: skip
    tool = ["/usr/bin/time", "-f", "%M", "-o", str(rss), "env", "-u", "COLUMNS", "-u", "LINES",
            sys.executable, "-m", "uinet_tap", "watch", RX, "--stats", str(stats), "-q",
            *view]  # fmt: skip
    replay = ["tcpreplay", f"--intf1={TX}", f"--pps={args.pps}", "-K",
              f"--limit={n * FRAMES}", str(pcap)]  # fmt: skip
    sampler = RssSampler(str(stats))
    sampler.start()
    with contextlib.ExitStack() as stack:
        stack.callback(sampler.done.set)
        # the view in a real terminal; without it, status lines to a file and SIGINT to end
        if keep is None:
            err = tmp / f"err-{tag}"
            with err.open("wb") as f:
                proc = s.popen(rx_ns, *tool, stdout=subprocess.DEVNULL, stderr=f)
            screen_of: Callable[[], str] = err.read_text
        else:
            term = Tmux("vmem")
            stack.callback(close_tmux, term)
            term.start(shlex.join(s.cmd(rx_ns, *tool)))
            screen_of = term.screen
        wait_for(screen_of, lambda t: ("ready" if keep is None else RX) in t, 30)
        time.sleep(1)  # the capture socket is open before the first draw; a margin all the same
        t0 = time.monotonic()
        sender = s.popen(tx_ns, *replay, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, _ = sender.communicate(timeout=n * FRAMES / args.pps * 3 + 120)
        s.procs.remove(sender)
        sent_s = time.monotonic() - t0
        report = out.decode(errors="replace")
        actual = re.search(r"Actual: (\d+) packets", report)
        rated = re.search(r"Rated: [\d.]+ Bps, [\d.]+ Mbps, ([\d.]+) pps", report)
        if sender.returncode != 0 or actual is None:
            raise SystemExit(f"tcpreplay failed ({sender.returncode}):\n{report}")
        # every connection ended and listed (or dropped from the list), else a quiet spell
        last, since = None, time.monotonic()
        while True:
            screen = screen_of()
            counts = header_counts(screen)
            if counts and counts["total"] >= n and counts["active"] == 0:
                break
            if counts != last:
                last, since = counts, time.monotonic()
            elif time.monotonic() - since > args.quiet:
                print(f"    quiet for {args.quiet:g} s short of {n:,} ended")
                break
            time.sleep(0.5)
        lines = [x for x in screen.splitlines() if _HEADER.search(x) or _STATUS.search(x)]
        print("   ", (lines[-1] if lines else "").strip()[:110])
        if keep is None:
            NetnsSession.stop(proc, signal.SIGINT, timeout=120)
            s.procs.remove(proc)
        else:
            term.keys("q")
            wait_for(term.screen, lambda t: "EXITED=" in t, 120)
    st = json.loads(stats.read_text())
    cap = st["capture"]
    return {
        "connections": n,
        "keep_ended": keep,
        "peak_rss_mib": round(int(rss.read_text().split()[-1]) / 1024, 1),
        "sampled_peaks_mib": sampler.peaks_mib(),
        "sent_packets": int(actual.group(1)),
        "sent_pps": round(float(rated.group(1))) if rated else None,
        "send_seconds": round(sent_s, 1),
        "received": cap["received"],
        "kernel_drops": cap["kernel_drops"],
        "interface_drops": cap["interface_drops"],
        "engine_packets": st["packets"],
        "records": st["connections"],
        "view": counts,
        "watch_cmd": shlex.join(s.cmd(rx_ns, *tool)),
        "replay_cmd": shlex.join(s.cmd(tx_ns, *replay)),
    }


def watch_main(args: argparse.Namespace) -> int:
    ok, why = netns_available()
    if not ok:
        print(f"error: {why}", file=sys.stderr)
        return 2
    for tool in ("tcpreplay", "tmux", "ethtool"):
        if shutil.which(tool) is None:
            print(f"error: {tool} not installed", file=sys.stderr)
            return 2
    counts = args.connections or [50_000, 200_000]
    keeps = [5_000, 100_000] if args.keep_ended is None else args.keep_ended
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp, NetnsSession("vmem") as s:
        pcap = Path(tmp) / "short.pcap"
        make_pcap(pcap, max(counts))
        print(
            f"{max(counts):,} connections, {pcap.stat().st_size / 2**20:.0f} MiB; "
            f"tcpreplay at {args.pps:,} frames/s ({args.pps / FRAMES:,.0f} connections/s)"
        )
        tx_ns, rx_ns = s.ns("tx", ipv6=False), s.ns("rx", ipv6=False)
        s.veth(tx_ns, TX, rx_ns, RX)
        for n in counts:
            for keep in [*([] if args.no_baseline else [None]), *keeps]:
                what = "no view" if keep is None else f"--tui --keep-ended {keep:,}"
                print(f"  {n:,} connections, watch {what}")
                rows.append(watch_run(s, rx_ns, tx_ns, pcap, n, keep, args, Path(tmp)))
                r = rows[-1]
                print(f"    {r['peak_rss_mib']:.0f} MiB; sent {r['sent_packets']:,} at "
                      f"{r['sent_pps'] or 0:,} frames/s, kernel drops {r['kernel_drops']:,}, "
                      f"records {r['records']:,}")  # fmt: skip
    print()
    cols = ("connections", "keep-ended", "peak RSS MiB", "RssAnon MiB", "kernel drops", "records")
    print("  ".join(f"{c:>13}" for c in cols))
    for r in rows:
        keep = "no view" if r["keep_ended"] is None else f"{r['keep_ended']:,}"
        cells = (f"{r['connections']:,}", keep, f"{r['peak_rss_mib']:.0f}",
                 f"{r['sampled_peaks_mib']['RssAnon']:.0f}", f"{r['kernel_drops']:,}",
                 f"{r['records']:,}")  # fmt: skip
        print("  ".join(f"{c:>13}" for c in cells))
    if args.json:
        args.json.write_text(json.dumps({"pps": args.pps, "rows": rows}, indent=1) + "\n")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--watch",
        action="store_true",
        help="watch on a veth fed by tcpreplay instead of replay (root)",
    )
    ap.add_argument(
        "--connections", type=int, nargs="+", help="replay: 100000; watch: 50000 200000"
    )
    ap.add_argument(
        "--keep-ended", type=int, nargs="*", help="replay: 100000 5000; watch: 5000 100000"
    )
    ap.add_argument("--pps", type=int, default=24_000, help="watch: tcpreplay's frames a second")
    ap.add_argument(
        "--quiet",
        type=float,
        default=15.0,
        help="watch: seconds the header may stand still before the run ends",
    )
    ap.add_argument("--no-baseline", action="store_true", help="watch: no run without the view")
    ap.add_argument("--json", type=Path, help="watch: write the rows here")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    if args.watch:
        return watch_main(args)
    keeps = [100_000, 5_000] if args.keep_ended is None else args.keep_ended
    for n in args.connections or [100_000]:
        with tempfile.TemporaryDirectory() as tmp:
            pcap = Path(tmp) / "short.pcap"
            make_pcap(pcap, n)
            print(f"{n:,} connections, {pcap.stat().st_size / 2**20:.0f} MiB")
            mib = peak_rss_mib(pcap, n, [], tui=False)
            print(f"  replay, no view: {mib:.0f} MiB")
            for keep in keeps:
                mib = peak_rss_mib(pcap, n, ["--keep-ended", str(keep)])
                print(f"  replay --tui --keep-ended {keep:,}: {mib:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
