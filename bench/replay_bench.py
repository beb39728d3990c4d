#!/usr/bin/env python3
"""Benchmark `uinet-tap replay` on the standard workload and check every stream.

The workload is made by ../shared/bench/make_bench.py (seeded, deterministic: 20,000
connections, about 1,000,000 packets, 841 MB by default) and cached in --workdir.  The script

* runs `uinet-tap replay PCAP --flows OUT -q --no-inspect` (full reconstruction, no plugins), then
  the same with every built-in plugin and the default policy, and with `--bypass` (unless
  --no-plugins), each as a child process, and measures its wall time and
  peak RSS (through GNU time or a small fork launcher), giving packets/s, MB/s (10^6 bytes of
  file per second) and MiB;
* checks every flow record against the generator's truth manifest (per connection the 4-tuple and,
  per direction, length and sha256 of the in-order payload);
* times the same file through Suricata 7 (`--runmode single`, bench/suricata-minimal.yaml: flow
  and stream tracking, full reassembly, HTTP and TLS parsers, EVE flow records, no rules) and
  `tcpflow -o DIR` (DIR on tmpfs) where they are installed, and a Python floor (pcapy-ng
  `next_batch(4096)`, nothing else), alternating with uinet-tap's runs, and prints the time
  ratios (of the medians, and the median of paired runs);
* with --prefix-check, also runs uinet-tap on the first half of the capture and compares peak RSS,
  to show that memory does not grow with capture length.

Exit status: 0 when every direction matches, 1 when a stream is wrong or a run failed, 2 for bad
arguments.  Examples:

    .venv/bin/python bench/replay_bench.py                      # default workload, cached
    .venv/bin/python bench/replay_bench.py --connections 2000 --runs 3
    .venv/bin/python bench/replay_bench.py --pcap bench.pcap --truth bench.truth.json \\
        --prefix-check --json out.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MAKE_BENCH = REPO.parent / "shared" / "bench" / "make_bench.py"
DEFAULT_CONNECTIONS = 20000
FLOOR_CODE = """\
import sys
import pcapy
r = pcapy.open_offline(sys.argv[1])
n = 0
while True:
    b, m = r.next_batch(4096)
    if not len(m):
        break
    n += len(m)
print(n)
"""
MAX_LISTED = 10


# --------------------------------------------------------------------------------------------
# running and measuring one child process


@dataclass
class Run:
    """One timed child process."""

    wall: float
    peak_rss_kib: int
    returncode: int
    stderr_tail: str
    cpu: float = 0.0  # user + system seconds of the child (0 where not measured)


@dataclass
class ToolResult:
    """All runs of one tool on one capture."""

    name: str
    command: list[str]
    runs: list[Run] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.runs) and all(r.returncode == 0 for r in self.runs)

    @property
    def wall(self) -> float:
        return statistics.median(r.wall for r in self.runs)

    @property
    def peak_rss_mib(self) -> float:
        return max(r.peak_rss_kib for r in self.runs) / 1024


# A child's ru_maxrss also counts the address space it was forked from: at exec, Linux folds
# the old mm's high-water mark into the process's maxrss.  Spawned straight from this script
# (which holds the truth manifest), every tool would appear to use at least this script's RSS,
# so each tool is started from a small intermediary instead: GNU time, else this launcher, which
# forks and reports its child's own usage (its floor is a bare interpreter, about 10 MiB).
LAUNCHER = """\
import os, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    except OSError as e:
        print(f"cannot run {sys.argv[2]}: {e}", file=sys.stderr)
    os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(f"{usage.ru_maxrss} {time.perf_counter() - t0} {usage.ru_utime + usage.ru_stime}")
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def timed_run(cmd: Sequence[str]) -> Run:
    """Run cmd with stdout discarded; return its wall time, its CPU time (user + system, from
    wait4: on a shared or virtual machine it moves far less than the wall time) and its own
    peak RSS."""
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as rss:
        wrapped = [sys.executable, "-c", LAUNCHER, rss.name, *cmd]
        t0 = time.perf_counter()
        returncode = subprocess.call(wrapped, stdout=subprocess.DEVNULL, stderr=err)
        wall = time.perf_counter() - t0
        err.seek(0)
        tail = err.read()[-2000:].decode("utf-8", "replace")
        fields = rss.read().split()
    # the launcher's own wall time leaves out its start-up
    if len(fields) == 3:
        return Run(float(fields[1]), int(fields[0]), returncode, tail, float(fields[2]))
    return Run(wall, 0, returncode, tail)


# --------------------------------------------------------------------------------------------
# the workload


def warm_cache(path: Path) -> None:
    """Read the file once so every tool starts from the page cache."""
    with path.open("rb", buffering=0) as f:
        while f.read(1 << 22):
            pass


def workload_ready(pcap: Path, truth: Path, connections: int) -> bool:
    """True if pcap and truth exist and agree with each other and with `connections`."""
    if not (pcap.is_file() and truth.is_file()):
        return False
    try:
        manifest = json.loads(truth.read_text())
        size = manifest["stats"]["file_bytes"]
        return bool(manifest["connections"] == connections and pcap.stat().st_size == size)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def make_workload(workdir: Path, connections: int, make_bench: Path) -> tuple[Path, Path]:
    """Return (pcap, truth) in workdir, generating them unless an intact pair is there."""
    stem = "bench" if connections == DEFAULT_CONNECTIONS else f"bench-{connections}"
    pcap, truth = workdir / f"{stem}.pcap", workdir / f"{stem}.truth.json"
    if workload_ready(pcap, truth, connections):
        print(f"using cached workload {pcap}", file=sys.stderr)
        return pcap, truth
    if not make_bench.is_file():
        sys.exit(f"error: {make_bench} not found (give --make-bench or --pcap/--truth)")
    workdir.mkdir(parents=True, exist_ok=True)
    # write under temporary names and rename, so an interrupted run never leaves a pair
    # that looks complete
    tmp_pcap, tmp_truth = pcap.with_suffix(".pcap.part"), truth.with_suffix(".json.part")
    cmd = [
        sys.executable,
        str(make_bench),
        "--out",
        str(tmp_pcap),
        "--truth",
        str(tmp_truth),
        "--connections",
        str(connections),
    ]
    print(f"generating workload: {shlex.join(cmd)}", file=sys.stderr)
    subprocess.run(cmd, check=True)
    tmp_pcap.replace(pcap)
    tmp_truth.replace(truth)
    return pcap, truth


# --------------------------------------------------------------------------------------------
# a small classic-pcap reader (for counting packets and cutting a prefix without editcap)

_MAGIC = {
    b"\xd4\xc3\xb2\xa1": "<",
    b"\xa1\xb2\xc3\xd4": ">",  # microsecond timestamps
    b"\x4d\x3c\xb2\xa1": "<",
    b"\xa1\xb2\x3c\x4d": ">",  # nanosecond timestamps
}


def pcap_records(path: Path) -> Iterator[tuple[bytes, bytes]]:
    """Yield (record header, frame) of a classic pcap file; the file header is skipped."""
    with path.open("rb") as f:
        header = f.read(24)
        order = _MAGIC.get(header[:4])
        if order is None:
            raise ValueError(f"{path}: not a classic pcap file")
        rec = struct.Struct(order + "IIII")
        while True:
            hdr = f.read(16)
            if len(hdr) < 16:
                return
            caplen = rec.unpack(hdr)[2]
            data = f.read(caplen)
            if len(data) < caplen:
                return
            yield hdr, data


def count_packets(path: Path) -> int:
    return sum(1 for _ in pcap_records(path))


def write_prefix(src: Path, dst: Path, packets: int) -> None:
    """Write the first `packets` records of src to dst (editcap -r if present)."""
    tmp = dst.with_suffix(".part")
    editcap = shutil.which("editcap")
    if editcap:
        subprocess.run(
            [editcap, "-F", "pcap", "-r", str(src), str(tmp), f"1-{packets}"], check=True
        )
    else:
        with src.open("rb") as f:
            header = f.read(24)
        with tmp.open("wb") as out:
            out.write(header)
            for i, (hdr, data) in enumerate(pcap_records(src)):
                if i == packets:
                    break
                out.write(hdr)
                out.write(data)
    tmp.replace(dst)


# --------------------------------------------------------------------------------------------
# checking flow records against the truth manifest


@dataclass
class Verification:
    directions: int = 0
    matched: int = 0
    missing_connections: int = 0
    extra_records: int = 0
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.directions > 0 and self.matched == self.directions


def verify_flows(flows_path: Path, truth_path: Path) -> Verification:
    """Compare every direction of every truth connection with the tool's flow record."""
    truth = json.loads(truth_path.read_text())["flows"]
    v = Verification()
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    try:
        with flows_path.open() as f:
            for line in f:
                if line.strip():
                    rec = json.loads(line)
                    by_key.setdefault((rec.get("client"), rec.get("server")), []).append(rec)
    except (OSError, ValueError, AttributeError) as e:
        v.mismatches.append(f"unreadable flow records: {e}")
    used: set[tuple[str, str]] = set()
    for conn in truth:
        client = "{}:{}".format(*conn["client"])
        server = "{}:{}".format(*conn["server"])
        key = (client, server)
        v.directions += 2
        recs = by_key.get(key)
        label = f"conn {conn['id']} {client} -> {server}"
        if not recs:
            v.missing_connections += 1
            if (server, client) in by_key:
                used.add((server, client))
                v.mismatches.append(f"{label}: client and server swapped")
            else:
                v.mismatches.append(f"{label}: no flow record")
            continue
        used.add(key)
        if len(recs) > 1:
            v.mismatches.append(f"{label}: split into {len(recs)} records")
            continue
        rec = recs[0]
        for d in ("c2s", "s2c"):
            want, got = conn[d], rec.get(d) or {}
            if (
                got.get("bytes") == want["len"]
                and got.get("sha256") == want["sha256"]
                and not got.get("gaps")
            ):
                v.matched += 1
            else:
                v.mismatches.append(
                    f"{label} {d}: tool bytes={got.get('bytes')} gaps={got.get('gaps')} "
                    f"sha256={str(got.get('sha256'))[:12]}, truth bytes={want['len']} "
                    f"sha256={want['sha256'][:12]}"
                )
    v.extra_records = sum(len(r) for k, r in by_key.items() if k not in used)
    return v


# --------------------------------------------------------------------------------------------
# the benchmark


def tool_command(tool_cmd: str | None) -> list[str]:
    """The uinet-tap command: --tool-cmd, else the console script beside this interpreter."""
    if tool_cmd:
        return shlex.split(tool_cmd)
    script = Path(sys.executable).parent / "uinet-tap"
    if script.exists():
        return [str(script)]
    found = shutil.which("uinet-tap")
    if not found:
        sys.exit("error: uinet-tap not found beside the interpreter or on PATH (see --tool-cmd)")
    return [found]


def scratch_root() -> Path:
    """tmpfs where there is one, so output files cost no disk time for any tool."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


NO_INSPECT = ("--no-inspect",)
INSPECT = ()
BYPASS = ("--bypass",)
NO_TX = ("--no-transactions",)  # detectors, without following every HTTP transaction


def run_uinet(
    base: list[str], pcap: Path, scratch: Path, keep: Path | None, extra: Sequence[str] = NO_INSPECT
) -> Run:
    """One timed uinet-tap run; its flows are left at `keep` when given, else deleted."""
    out = keep or scratch / "uinet-flows.jsonl"
    cmd = [*base, "replay", str(pcap), "--flows", str(out), "-q", *extra]
    try:
        return timed_run(cmd)
    finally:
        if keep is None:
            out.unlink(missing_ok=True)


def run_tcpflow(exe: str, pcap: Path, scratch: Path) -> Run:
    out = scratch / "tcpflow-out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    try:
        return timed_run([exe, "-o", str(out), "-r", str(pcap)])
    finally:
        shutil.rmtree(out, ignore_errors=True)


SURICATA_CONF = REPO / "bench" / "suricata-minimal.yaml"


def run_suricata(exe: str, pcap: Path, scratch: Path) -> tuple[Run, Counter[str]]:
    """One timed Suricata run and the app_proto of each EVE flow record it wrote."""
    out = scratch / "suricata-out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    cmd = [exe, "--runmode", "single", "-c", str(SURICATA_CONF), "-k", "none", "-S", "/dev/null",
           "-r", str(pcap), "-l", str(out)]  # fmt: skip
    try:
        run = timed_run(cmd)
        protos: Counter[str] = Counter()
        eve = out / "eve.json"
        if eve.is_file():
            with eve.open() as f:
                for line in f:
                    rec = json.loads(line)
                    if rec.get("event_type") == "flow" and rec.get("proto") == "TCP":
                        protos[rec.get("app_proto", "none")] += 1
        return run, protos
    finally:
        shutil.rmtree(out, ignore_errors=True)


def floor_available() -> bool:
    probe = subprocess.run([sys.executable, "-c", "import pcapy"], capture_output=True)
    return probe.returncode == 0


def rate_row(res: ToolResult, packets: int, file_bytes: int) -> dict[str, Any]:
    wall = res.wall
    return {
        "tool": res.name,
        "command": shlex.join(res.command),
        "ok": res.ok,
        "walls": [round(r.wall, 4) for r in res.runs],
        "cpus": [round(r.cpu, 4) for r in res.runs],
        "median_wall_s": round(wall, 4),
        "packets_per_s": round(packets / wall) if wall else None,
        "mb_per_s": round(file_bytes / 1e6 / wall, 1) if wall else None,
        "peak_rss_mib": round(res.peak_rss_mib, 1),
    }


def human(n: float) -> str:
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n:.0f}"


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'tool':<26}{'wall s':>9}{'packets/s':>12}{'MB/s':>9}{'peak RSS MiB':>14}  status")
    for r in rows:
        status = "ok" if r["ok"] else "FAILED"
        print(
            f"{r['tool']:<26}{r['median_wall_s']:>9.3f}{human(r['packets_per_s']):>12}"
            f"{r['mb_per_s']:>9.1f}{r['peak_rss_mib']:>14.1f}  {status}"
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Time `uinet-tap replay` on the standard workload and check every stream."
    )
    ap.add_argument(
        "--workdir",
        type=Path,
        default=Path(".bench-cache"),
        help="cache for the generated workload and the prefix (default ./.bench-cache)",
    )
    ap.add_argument(
        "--connections",
        type=int,
        default=DEFAULT_CONNECTIONS,
        help="connections in a generated workload (default 20000)",
    )
    ap.add_argument(
        "--make-bench",
        type=Path,
        default=DEFAULT_MAKE_BENCH,
        help=f"the workload generator (default {DEFAULT_MAKE_BENCH})",
    )
    ap.add_argument("--pcap", type=Path, help="use this capture instead of generating one")
    ap.add_argument("--truth", type=Path, help="truth manifest of --pcap (without it: no check)")
    ap.add_argument(
        "--runs",
        type=int,
        default=1,
        help="runs per tool: the median wall time and the largest peak RSS are reported",
    )
    ap.add_argument("--tool-cmd", help="command to run instead of uinet-tap, e.g. 'python stub.py'")
    ap.add_argument(
        "--no-peers", action="store_true", help="skip Suricata, tcpflow and the pcapy floor"
    )
    ap.add_argument(
        "--prefix-check",
        action="store_true",
        help="also run on the first half of the capture and compare peak RSS",
    )
    ap.add_argument("--json", type=Path, help="write the figures here as JSON")
    ap.add_argument(
        "--no-plugins",
        dest="plugins",
        action="store_false",
        help="skip the runs with protocol plugins (default and --bypass)",
    )
    a = ap.parse_args(argv)
    if a.runs < 1 or a.connections < 1:
        ap.error("--runs and --connections must be positive")
    if a.truth and not a.pcap:
        ap.error("--truth needs --pcap")
    if a.pcap and not a.pcap.is_file():
        ap.error(f"--pcap {a.pcap}: no such file")
    if a.truth and not a.truth.is_file():
        ap.error(f"--truth {a.truth}: no such file")
    return a


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # keep stdout and stderr lines in order
    if a.pcap:
        pcap, truth = a.pcap, a.truth
    else:
        pcap, truth = make_workload(a.workdir, a.connections, a.make_bench)
    base = tool_command(a.tool_cmd)
    manifest_stats = json.loads(truth.read_text())["stats"] if truth else None
    packets = manifest_stats["packets"] if manifest_stats else count_packets(pcap)
    file_bytes = pcap.stat().st_size
    print(f"{pcap}: {packets:,} packets, {file_bytes / 1e6:.1f} MB, runs={a.runs}")
    warm_cache(pcap)

    tcpflow = None if a.no_peers else shutil.which("tcpflow")
    suricata = None if a.no_peers else shutil.which("suricata")
    suri = ToolResult("suricata --runmode single", [str(suricata), "--runmode", "single", "-c",
                      str(SURICATA_CONF), "-k", "none", "-r", str(pcap)])  # fmt: skip
    suri_protos: Counter[str] = Counter()
    with_floor = not a.no_peers and floor_available()
    uinet = ToolResult(
        "uinet-tap replay --no-inspect",
        [*base, "replay", str(pcap), "--flows", "OUT", "-q", *NO_INSPECT],
    )
    inspect = ToolResult("uinet-tap replay (plugins)", [*uinet.command[:-1], *INSPECT])
    bypass = ToolResult("uinet-tap replay --bypass", [*uinet.command[:-1], *BYPASS])
    notx = ToolResult("uinet-tap replay --no-transactions", [*uinet.command[:-1], *NO_TX])
    tf = ToolResult("tcpflow -o tmpfs", [str(tcpflow), "-o", "DIR", "-r", str(pcap)])
    floor = ToolResult("pcapy-ng floor", [sys.executable, "-c", "<next_batch loop>", str(pcap)])
    verification: Verification | None = None
    inspect_verification: Verification | None = None
    with tempfile.TemporaryDirectory(prefix="uinet-bench-", dir=scratch_root()) as tmp:
        scratch = Path(tmp)
        checked_flows = scratch / "checked-flows.jsonl"
        # alternate the tools in each round so that background noise is shared out evenly
        for i in range(a.runs):
            run = run_uinet(base, pcap, scratch, checked_flows if i == 0 else None)
            uinet.runs.append(run)
            if i == 0:
                if run.returncode == 0 and truth:
                    verification = verify_flows(checked_flows, truth)
                checked_flows.unlink(missing_ok=True)
            if a.plugins:
                # Full reconstruction with every built-in detector and the default policy (its
                # hashes are checked too), then the same with --bypass.
                inspect.runs.append(run_uinet(base, pcap, scratch, checked_flows, INSPECT))
                if i == 0 and inspect.runs[-1].returncode == 0 and truth:
                    inspect_verification = verify_flows(checked_flows, truth)
                checked_flows.unlink(missing_ok=True)
                bypass.runs.append(run_uinet(base, pcap, scratch, None, BYPASS))
                notx.runs.append(run_uinet(base, pcap, scratch, None, NO_TX))
            if suricata:
                run, suri_protos = run_suricata(suricata, pcap, scratch)
                suri.runs.append(run)
            if tcpflow:
                tf.runs.append(run_tcpflow(tcpflow, pcap, scratch))
            if with_floor:
                floor.runs.append(timed_run([sys.executable, "-c", FLOOR_CODE, str(pcap)]))

        prefix: dict[str, Any] | None = None
        half_res = ToolResult("uinet-tap, first half", uinet.command[:])
        if a.prefix_check:
            half_packets = packets // 2
            a.workdir.mkdir(parents=True, exist_ok=True)
            half = a.workdir / f"{pcap.stem}.first{half_packets}.pcap"
            if not half.is_file() or half.stat().st_mtime < pcap.stat().st_mtime:
                print(f"writing the first {half_packets:,} packets to {half}", file=sys.stderr)
                write_prefix(pcap, half, half_packets)
            warm_cache(half)
            for _ in range(a.runs):
                half_res.runs.append(run_uinet(base, half, scratch, None))
            prefix = {
                "pcap": str(half),
                "packets": half_packets,
                "file_bytes": half.stat().st_size,
                "ok": half_res.ok,
                "median_wall_s": round(half_res.wall, 4),
                "peak_rss_mib_half": round(half_res.peak_rss_mib, 1),
                "peak_rss_mib_full": round(uinet.peak_rss_mib, 1),
                "rss_ratio_full_over_half": round(uinet.peak_rss_mib / half_res.peak_rss_mib, 3),
            }

    rows = [rate_row(uinet, packets, file_bytes)]
    ratios: dict[str, float] = {}
    for mode, key in ((inspect, "plugins_over_no_inspect"), (bypass, "bypass_over_no_inspect"),
                      (notx, "notx_over_no_inspect")):  # fmt: skip
        if mode.runs:
            rows.append(rate_row(mode, packets, file_bytes))
            ratios[key] = round(mode.wall / uinet.wall, 3)
            if a.runs > 1:  # paired: each run against the no-plugins run next to it
                pairs = list(zip(mode.runs, uinet.runs, strict=True))
                walls = [m.wall / u.wall for m, u in pairs]
                cpus = [m.cpu / u.cpu for m, u in pairs]
                ratios[key + "_paired"] = round(statistics.median(walls), 3)
                ratios[key + "_cpu"] = round(statistics.median(cpus), 3)
    for peer in (suri, tf, floor):
        if peer.runs:
            rows.append(rate_row(peer, packets, file_bytes))
    # (ours, peer, key): the yardsticks are replay with its default inspection against
    # Suricata, and --bypass against the bare read.
    versus = (
        (inspect, suri, "plugins_over_suricata"),
        (notx, suri, "notx_over_suricata"),
        (uinet, suri, "no_inspect_over_suricata"),
        (uinet, tf, "uinet_over_tcpflow"),
        (uinet, floor, "uinet_over_floor"),
        (bypass, floor, "bypass_over_floor"),
    )
    for ours, peer, key in versus:
        if ours.runs and peer.runs:
            ratios[key] = round(ours.wall / peer.wall, 3)
            if a.runs > 1:  # median of paired ratios: robust against drifting load
                paired = [u.wall / p.wall for u, p in zip(ours.runs, peer.runs, strict=True)]
                ratios[key + "_paired"] = round(statistics.median(paired), 3)

    print()
    print_table(rows)
    for name, exe in (("suricata", suricata), ("tcpflow", tcpflow)):
        if not exe and not a.no_peers:
            print(f"{name}: not installed, skipped")
    if suri_protos:
        print("suricata flows by app_proto: " + ", ".join(
            f"{k} {v:,}" for k, v in suri_protos.most_common()))  # fmt: skip
    labels = {
        "plugins_over_suricata": "uinet-tap replay (plugins) / suricata single",
        "notx_over_suricata": "uinet-tap replay --no-transactions / suricata single",
        "no_inspect_over_suricata": "uinet-tap replay --no-inspect / suricata single",
        "uinet_over_tcpflow": "uinet-tap replay --no-inspect / tcpflow",
        "uinet_over_floor": "uinet-tap replay --no-inspect / pcapy-ng floor",
        "bypass_over_floor": "uinet-tap replay --bypass / pcapy-ng floor",
    }
    for key, label in labels.items():
        if key in ratios:
            pr = ratios.get(key + "_paired")
            print(
                f"time ratio {label}: {ratios[key]:.2f}x"
                + (f" (median of paired runs {pr:.2f}x)" if pr else "")
            )
    for label, key in (("with plugins", "plugins_over_no_inspect"),
                       ("with plugins and --bypass", "bypass_over_no_inspect")):  # fmt: skip
        if key in ratios:
            extra = ""
            if key + "_paired" in ratios:
                extra = (f" (median of paired runs {ratios[key + '_paired']:.2f}x; CPU time "
                         f"{ratios[key + '_cpu']:.2f}x)")  # fmt: skip
            print(f"time ratio uinet-tap {label} / without plugins: {ratios[key]:.2f}x{extra}")
    if inspect_verification:
        v = inspect_verification
        print(f"streams with plugins: {v.matched:,} of {v.directions:,} directions match")
    if prefix:
        print(
            f"memory growth: peak RSS {prefix['peak_rss_mib_half']:.1f} MiB on the first half "
            f"({prefix['packets']:,} packets) vs {prefix['peak_rss_mib_full']:.1f} MiB on the "
            f"whole capture (x{prefix['rss_ratio_full_over_half']:.2f})"
            + ("" if prefix["ok"] else "  [half run FAILED]")
            + ("" if uinet.ok else "  [whole run FAILED]")
        )
    for res in (uinet, inspect, bypass, suri, tf, floor, half_res):
        for n, bad in enumerate(res.runs, 1):
            if bad.returncode:
                tail = bad.stderr_tail.strip()[-500:]
                print(f"{res.name}, run {n}, exited {bad.returncode}: {tail}")
    if verification:
        v = verification
        print(
            f"streams: {v.matched:,} of {v.directions:,} directions match the truth manifest"
            f" ({v.missing_connections} connections without a record, "
            f"{v.extra_records} extra records)"
        )
        for line in v.mismatches[:MAX_LISTED]:
            print(f"  mismatch: {line}")
        if len(v.mismatches) > MAX_LISTED:
            print(f"  ... and {len(v.mismatches) - MAX_LISTED} more")
    elif uinet.ok:
        print("streams: not checked (no truth manifest)")

    if a.json:
        report = {
            "pcap": str(pcap),
            "truth": str(truth) if truth else None,
            "packets": packets,
            "file_bytes": file_bytes,
            "runs": a.runs,
            "tools": rows,
            "ratios": ratios,
            "prefix_check": prefix,
            "verification": (
                {**asdict(verification), "ok": verification.ok} if verification else None
            ),
            "uinet_runs": [asdict(r) for r in uinet.runs],
        }
        a.json.write_text(json.dumps(report, indent=1) + "\n")
    ok = (
        uinet.ok
        and (verification is None or verification.ok)
        and (inspect_verification is None or inspect_verification.ok)
        and (prefix is None or prefix["ok"])
        and all(r.returncode == 0 for r in (*inspect.runs, *bypass.runs))
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
