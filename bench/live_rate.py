#!/usr/bin/env python3
"""Measure the packet rate `uinet-tap watch` sustains without kernel drops (run as root).

Topology: one network namespace holding a veth pair (feed0 <-> watch0), no addresses, IPv6
off, so the kernel there sends nothing of its own.  For each mode and each rate of a rising
ladder the script

* starts `uinet-tap watch watch0 --stats FILE ...` inside the namespace (a fresh process per
  step), waits until it is capturing,
* replays the workload into feed0 with `tcpreplay --intf1=feed0 --pps=N --limit=N*seconds`
  (looping the file if it is shorter),
* lets watch settle, stops it (SIGINT; `q` for the live view) and reads
  "capture": {"received", "kernel_drops", "interface_drops"} and "packets" from the stats.

Modes: `--no-tui` (status lines on stderr), the live view under tmux
(`tmux new-session -d -x 200 -y 50 "uinet-tap watch ..."`), and `--workers 2` when
`uinet-tap watch --help` offers it.  A mode stops climbing after --stop-after steps with drops.
The answer per mode is the highest rate with zero kernel drops.

With --topspeed there is no ladder: each mode gets one step, `tcpreplay --topspeed -K` sending
the whole file once as fast as it can (preloaded into memory), and the answer is what watch
received, dropped and counted at the rate tcpreplay reached. Each step also says the CPU time
watch's processes took from its ready line to the end of the settle (`watch_cpu_s`): a rate
two cores share with tcpreplay varies from run to run, the work per frame much less.

Workload: --pcap, else generated with ../shared/bench/make_bench.py --connections 2000 into
--workdir (cached).  Frames go out
as they are (watch captures promiscuously, so the MACs in the file do not matter).

    .venv/bin/python bench/live_rate.py
    .venv/bin/python bench/live_rate.py --rates 20000,40000,80000 --seconds 10 --json out.json
    .venv/bin/python bench/live_rate.py --topspeed --pcap bench.pcap --modes no-tui,workers2

Needs: iproute2, tcpreplay, tmux (Debian packages).  Exit 0, or 2 for bad arguments or a
missing tool.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))

from netnslib import NetnsSession, netns_available, wait_for_file  # noqa: E402

MAKE_BENCH = Path(__file__).resolve().parents[2] / "shared" / "bench" / "make_bench.py"
DEFAULT_RATES = [
    5_000,
    10_000,
    20_000,
    30_000,
    40_000,
    50_000,
    60_000,
    80_000,
    100_000,
    125_000,
    150_000,
    200_000,
    250_000,
    300_000,
]
FEED, WATCH = "feed0", "watch0"


def uinet_tap() -> str:
    exe = Path(sys.executable).parent / "uinet-tap"
    return str(exe) if exe.exists() else (shutil.which("uinet-tap") or "uinet-tap")


def has_workers() -> bool:
    r = subprocess.run([uinet_tap(), "watch", "--help"], capture_output=True, text=True)
    return "--workers" in r.stdout


def workload(args: argparse.Namespace) -> Path:
    if args.pcap:
        return args.pcap
    out = args.workdir / "bench-2000.pcap"
    if not out.is_file():
        args.workdir.mkdir(parents=True, exist_ok=True)
        part = out.with_suffix(".pcap.part")
        cmd = [
            sys.executable,
            str(MAKE_BENCH),
            "--connections",
            "2000",
            "--out",
            str(part),
            "--truth",
            str(args.workdir / "bench-2000.truth.json"),
        ]
        print(f"generating workload: {shlex.join(cmd)}", file=sys.stderr)
        subprocess.run(cmd, check=True)
        part.replace(out)
    return out


def count_packets(pcap: Path) -> int:
    r = subprocess.run(["capinfos", "-c", "-M", str(pcap)], capture_output=True, text=True)
    m = re.search(r"Number of packets:\s+(\d+)", r.stdout)
    if m:
        return int(m.group(1))
    # no capinfos: let tcpreplay count at top speed into a dummy? too slow; assume big
    return 1 << 40


class Bench:
    def __init__(
        self, s: NetnsSession, pcap: Path, npackets: int, args: argparse.Namespace, scratch: Path
    ) -> None:
        self.s, self.pcap, self.npackets, self.args, self.scratch = s, pcap, npackets, args, scratch
        self.ns = s.ns("lr", ipv6=False)
        # both ends in one quiet namespace; offloads left alone (nothing is forwarded), a
        # large MTU so that no frame of the file is too long to send
        subprocess.run(
            [
                "ip",
                "link",
                "add",
                FEED,
                "netns",
                self.ns,
                "type",
                "veth",
                "peer",
                "name",
                WATCH,
                "netns",
                self.ns,
            ],
            check=True,
        )
        for ifn in (FEED, WATCH):
            s.sh(self.ns, "ip", "link", "set", ifn, "mtu", "9000")
            s.sh(self.ns, "ip", "link", "set", ifn, "up")
        self.step = 0

    def watch_argv(self, mode: str, stats: Path) -> list[str]:
        argv = [uinet_tap(), "watch", WATCH, "--stats", str(stats), "-q"]
        if mode != "tui":
            argv += ["--no-tui", "--status-interval", "1"]
        if mode == "workers2":
            argv += ["--workers", "2"]
        argv += self.args.watch_args
        return argv

    def replay_argv(self, pps: int) -> list[str]:
        if self.args.topspeed:
            return ["tcpreplay", f"--intf1={FEED}", "--topspeed", "-K", str(self.pcap)]
        limit = int(pps * self.args.seconds)
        loops = 0 if limit > self.npackets else 1  # 0: loop until --limit
        return [
            "tcpreplay",
            f"--intf1={FEED}",
            f"--pps={pps}",
            f"--limit={limit}",
            f"--loop={loops}",
            str(self.pcap),
        ]

    @staticmethod
    def pane(sock: str) -> str:
        r = subprocess.run(
            ["tmux", "-L", sock, "capture-pane", "-p"], capture_output=True, text=True
        )
        return r.stdout if r.returncode == 0 else ""

    def run_step(self, mode: str, pps: int) -> dict:
        self.step += 1
        stats = self.scratch / f"stats-{mode}-{self.step}.json"
        argv = self.watch_argv(mode, stats)
        tmux_sock = f"uinet-live-rate-{os.getpid()}"
        proc = None
        if mode == "tui":
            cmd = shlex.join(self.s.cmd(self.ns, *argv))
            subprocess.run(
                ["tmux", "-L", tmux_sock, "new-session", "-d", "-x", "200", "-y", "50", cmd],
                check=True,
            )
            # no ready line in the live view: wait until it has drawn itself, then a little
            deadline = time.monotonic() + 30
            while WATCH not in self.pane(tmux_sock):
                if time.monotonic() > deadline:
                    subprocess.run(["tmux", "-L", tmux_sock, "kill-server"], check=False)
                    raise RuntimeError("the live view did not start under tmux")
                time.sleep(0.1)
            time.sleep(self.args.startup)
        else:
            errf = (self.scratch / f"err-{mode}-{self.step}.txt").open("wb")
            proc = self.s.popen(self.ns, *argv, stdout=subprocess.DEVNULL, stderr=errf)
            deadline = time.monotonic() + 30
            errp = Path(errf.name)
            while b": ready" not in errp.read_bytes():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"watch did not start: {errp.read_text()}")
                time.sleep(0.05)
        cpu_before = watch_cpu(str(stats))
        rep = subprocess.run(
            self.s.cmd(self.ns, *self.replay_argv(pps)), capture_output=True, text=True
        )
        time.sleep(self.args.settle)
        # what watch took for the traffic: from ready (start-up left out) to the end of the
        # settle (idle then); the end of capture, writing the open flows, left out too
        cpu = watch_cpu(str(stats)) - cpu_before
        screen = ""
        if mode == "tui":
            screen = self.pane(tmux_sock)
            subprocess.run(["tmux", "-L", tmux_sock, "send-keys", "q"], check=False)
            try:
                wait_for_file(stats, 30)
                try:
                    st = read_stats(stats, 120)  # before the server goes: watch writes it last
                except (OSError, ValueError) as e:
                    raise RuntimeError(f"no stats from watch: {e}\n{self.pane(tmux_sock)}") from e
            finally:
                subprocess.run(
                    ["tmux", "-L", tmux_sock, "kill-server"], check=False, capture_output=True
                )
        else:
            assert proc is not None
            code = NetnsSession.stop(proc, signal.SIGINT, timeout=60)
            self.s.procs.remove(proc)
            try:
                st = read_stats(stats, 120)
            except (OSError, ValueError) as e:  # say what watch said (the scratch goes)
                raise RuntimeError(
                    f"no stats from watch (exit status {code}): {e}\n{errp.read_text()[-3000:]}"
                ) from e
        cap = st["capture"]
        sent = re.search(r"Actual: (\d+) packets", rep.stdout)
        rated = re.search(r"Rated: [\d.]+ Bps, [\d.]+ Mbps, ([\d.]+) pps", rep.stdout)
        failed = re.search(r"Failed packets:\s+(\d+)", rep.stdout)
        row = {
            "mode": mode,
            "target_pps": pps,
            "sent": int(sent.group(1)) if sent else None,
            "achieved_pps": round(float(rated.group(1))) if rated else None,
            "send_failed": int(failed.group(1)) if failed else None,
            "received": cap["received"],
            "kernel_drops": cap["kernel_drops"],
            "interface_drops": cap["interface_drops"],
            "engine_packets": st["packets"],
            "watch_cpu_s": round(cpu, 2),
            "watch_cmd": (
                shlex.join(
                    [
                        "tmux",
                        "-L",
                        tmux_sock,
                        "new-session",
                        "-d",
                        "-x",
                        "200",
                        "-y",
                        "50",
                        shlex.join(self.s.cmd(self.ns, *argv)),
                    ]
                )
                if mode == "tui"
                else shlex.join(self.s.cmd(self.ns, *argv))
            ),
            "replay_cmd": shlex.join(self.s.cmd(self.ns, *self.replay_argv(pps))),
        }
        if mode == "tui":
            row["live_view_lines"] = sum(1 for x in screen.splitlines() if x.strip())
        if rep.returncode != 0:
            row["tcpreplay_error"] = rep.stderr.strip()[-300:]
        return row


def watch_cpu(marker: str) -> float:
    """CPU seconds (user and system) used so far by the processes whose command line holds
    ``marker`` (a step's stats path: watch and its capture workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() not in (entry / "cmdline").read_bytes():
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / tick


def read_stats(path: Path, timeout: float) -> dict:
    """The run summary once it is whole (watch writes it at the end, after draining the
    ring: with a large backlog that takes a while after `q`)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def print_table(rows: list[dict]) -> None:
    cols = [
        "mode",
        "target_pps",
        "achieved_pps",
        "sent",
        "received",
        "engine_packets",
        "kernel_drops",
        "interface_drops",
        "watch_cpu_s",
    ]
    print("  ".join(f"{c:>15}" for c in cols))
    for r in rows:
        print("  ".join(f"{'-' if r.get(c) is None else r[c]:>15}" for c in cols))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pcap", type=Path, help="workload (default: generated)")
    ap.add_argument("--workdir", type=Path, default=Path(".bench-cache"))
    ap.add_argument("--rates", help="comma-separated pps ladder")
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each step")
    ap.add_argument("--settle", type=float, default=2.0, help="wait after tcpreplay ends")
    ap.add_argument(
        "--startup", type=float, default=1.0, help="extra wait once the live view has drawn itself"
    )
    ap.add_argument(
        "--stop-after",
        type=int,
        default=2,
        help="stop a mode after this many steps with kernel drops",
    )
    ap.add_argument("--modes", default="no-tui,tui,workers2")
    ap.add_argument("--watch-args", default="", help="extra arguments for uinet-tap watch")
    ap.add_argument(
        "--topspeed",
        action="store_true",
        help="one step per mode: the whole file once, as fast as tcpreplay sends (-K)",
    )
    ap.add_argument("--json", type=Path, help="write rows and results here")
    args = ap.parse_args(argv)
    args.watch_args = shlex.split(args.watch_args)
    ok, why = netns_available()
    if not ok:
        print(f"error: {why}", file=sys.stderr)
        return 2
    for tool in ("tcpreplay", "tmux"):
        if shutil.which(tool) is None:
            print(f"error: {tool} not installed (apt-get install {tool})", file=sys.stderr)
            return 2
    rates = [int(x) for x in args.rates.split(",")] if args.rates else DEFAULT_RATES
    if args.topspeed:
        rates = [0]  # one step: the rate is tcpreplay's
    modes = [m for m in args.modes.split(",") if m]
    notes = []
    if "workers2" in modes and not has_workers():
        modes.remove("workers2")
        notes.append("`uinet-tap watch --help` has no --workers option: workers2 mode skipped")
    pcap = workload(args)
    npackets = count_packets(pcap)
    rows: list[dict[str, Any]] = []
    best: dict[str, int | None] = {}
    commands: dict[str, dict[str, str]] = {}
    with NetnsSession("lrate") as s, tempfile.TemporaryDirectory(prefix="live-rate-") as tmp:
        b = Bench(s, pcap, npackets, args, Path(tmp))
        for mode in modes:
            best[mode], bad = None, 0
            for pps in rates:
                row = b.run_step(mode, pps)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
                if row["kernel_drops"] == 0 and row.get("tcpreplay_error") is None:
                    best[mode] = pps
                    bad = 0
                else:
                    bad += 1
                    if bad >= args.stop_after:
                        break
    if args.topspeed:
        print(f"workload: {pcap} ({npackets} packets), sent once with tcpreplay --topspeed -K")
    else:
        print(f"workload: {pcap} ({npackets} packets), {args.seconds:g} s per step")
    print_table(rows)
    print()
    for mode in modes if not args.topspeed else ():
        b_ = best[mode]
        top = next((r for r in rows if r["mode"] == mode and r["target_pps"] == b_), None)
        first_bad = next((r for r in rows if r["mode"] == mode and r["kernel_drops"]), None)
        print(
            f"{mode:>9}: highest rate with zero kernel drops: "
            + (
                "none"
                if top is None
                else f"{b_} pps (tcpreplay achieved {top['achieved_pps']} pps)"
            )
        )
        if first_bad:
            print(
                f"           first drops at {first_bad['target_pps']} pps: "
                f"{first_bad['kernel_drops']} of {first_bad['sent']} packets"
            )
        elif top is not None:
            print("           no drops at any rate tried (the ladder ended first)")
        if row is not None:
            commands[mode] = {"watch": row["watch_cmd"], "replay": row["replay_cmd"]}
            print(f"           watch:  {row['watch_cmd']}")
            print(f"           replay: {row['replay_cmd']}")
    for r in rows if args.topspeed else ():
        lost = r["kernel_drops"] + r["interface_drops"]
        share = lost / r["sent"] if r["sent"] else 0.0
        print(
            f"{r['mode']:>9}: sent {r['sent']} at {r['achieved_pps']} pps; received "
            f"{r['received']}, dropped {lost} ({share:.1%}), counted {r['engine_packets']}; "
            f"watch used {r['watch_cpu_s']} s of CPU"
        )
        print(f"           watch:  {r['watch_cmd']}")
        print(f"           replay: {r['replay_cmd']}")
    for n in notes:
        print(f"note: {n}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "workload": str(pcap),
                    "packets": npackets,
                    "seconds": args.seconds,
                    "rows": rows,
                    "best": best,
                    "commands": commands,
                    "notes": notes,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
