"""`uinet-tap watch IFACE` against real kernel TCP stacks in network namespaces.

Topology: client namespace (c0, 10.77.0.1) <-> server namespace (s0, 10.77.0.2), one veth
pair, offloads off.  watch runs as a subprocess inside the client namespace on c0.  The
traffic comes from real programs (curl against python's http.server with an HTTP/1.1
keep-alive handler, socat both ways), and the expected bytes and sha256 of each direction
come only from what those programs sent and received (curl --trace, the files socat read
and wrote), never from reading anything with the tool under test.

Needs root, iproute2, ethtool, curl, socat, tcpreplay, setpriv (Debian packages).
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(ROOT / "captures"))

from make_captures import parse_curl_trace  # noqa: E402  (curl --trace -> bytes each way)
from netnslib import (  # noqa: E402
    NetnsSession,
    Tcpdump,
    child_pids,
    netns_available,
    process_identity,
    run,
    wait_for_file,
    wait_for_port,
)
from peers import content  # noqa: E402

PY = sys.executable
PEERS = str(ROOT / "captures" / "peers.py")
UINET_TAP = str(Path(sys.executable).parent / "uinet-tap")
C4, S4 = "10.77.0.1", "10.77.0.2"
HTTP_PORT = 8080

_ok, _why = netns_available()
needs_netns = pytest.mark.skipif(not _ok, reason=_why or "network namespaces unavailable")


def _need(*tools: str) -> pytest.MarkDecorator:
    missing = [t for t in tools if shutil.which(t) is None]
    return pytest.mark.skipif(bool(missing), reason=f"not installed: {', '.join(missing)}")


pytestmark = [pytest.mark.netns, needs_netns]


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# ---------------------------------------------------------------------------
# watch as a subprocess
# ---------------------------------------------------------------------------


class WatchProc:
    """`uinet-tap watch` inside a namespace; stderr read line by line (with arrival times)
    by a thread, so the pipe never fills and status lines can be timed."""

    def __init__(
        self,
        s: NetnsSession,
        ns: str,
        iface: str,
        work: Path,
        *extra: str,
        bypass: bool = True,  # the tool's default
        status_interval: float = 0.5,
    ) -> None:
        self.flows, self.stats = work / "flows.jsonl", work / "stats.json"
        self.iface = iface
        self.bypass = bypass
        argv = [
            UINET_TAP,
            "watch",
            iface,
            "--no-tui",
            "--flows",
            str(self.flows),
            "--stats",
            str(self.stats),
            "--status-interval",
            str(status_interval),
            "--bypass" if bypass else "--no-bypass",
            *extra,
        ]
        self.proc = s.popen(ns, *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: list[tuple[float, str]] = []
        self.ready = threading.Event()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append((time.monotonic(), line))
            if line.endswith(": ready") and "capturing on" in line:
                self.ready.set()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._t.join(2)
                raise AssertionError(
                    f"watch never got ready (rc={self.proc.poll()}):\n" + self.stderr()
                )
        self.ready_at = time.monotonic()

    def signal(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float = 30.0) -> int:
        rc = self.proc.wait(timeout)
        self._t.join(10)
        return rc

    def stderr(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def records(self) -> list[dict]:
        return [json.loads(x) for x in self.flows.read_text().splitlines() if x.strip()]

    def status_lines(self) -> list[tuple[float, str]]:
        pat = re.compile(rf"^uinet-tap watch {re.escape(self.iface)}: \d+s packets=\d+ ")
        return [(t, line) for t, line in self.lines if pat.match(line)]


# ---------------------------------------------------------------------------
# topology and traffic
# ---------------------------------------------------------------------------


class Net:
    def __init__(self, s: NetnsSession, work: Path) -> None:
        self.s, self.work = s, work
        self.c = s.ns("c", ipv6=False)
        self.sv = s.ns("s", ipv6=False)
        s.veth(self.c, "c0", self.sv, "s0")
        s.addr(self.c, "c0", f"{C4}/24")
        s.addr(self.sv, "s0", f"{S4}/24")
        self.http_srv: subprocess.Popen | None = None

    def start_http(self) -> dict[str, bytes]:
        www = self.work / "www"
        www.mkdir()
        files = {
            "big.bin": content("watch", "file", 0, 300 * 1000),
            "small.bin": content("watch", "file", 1, 40 * 1000 + 17),
        }
        for name, data in files.items():
            (www / name).write_bytes(data)
        ready = self.work / "http.ready"
        self.http_srv = self.s.popen(
            self.sv,
            PY,
            PEERS,
            "http-server",
            "--bind",
            S4,
            "--port",
            str(HTTP_PORT),
            "--dir",
            str(www),
            "--ready",
            str(ready),
        )
        wait_for_file(ready, 10, self.http_srv)
        wait_for_port(self.s, self.sv, HTTP_PORT)
        self.files = files
        return files

    def curl(self, local_port: int = 41000) -> dict:
        """Two URLs over one keep-alive connection; the expected connection record."""
        trace = self.work / f"curl-{local_port}.trace"
        outs = [self.work / f"got-{local_port}-{n}" for n in self.files]
        argv = [
            "curl",
            "-sS",
            "--fail",
            "--http1.1",
            "--trace",
            str(trace),
            "--local-port",
            str(local_port),
        ]
        for o, n in zip(outs, self.files, strict=True):
            argv += ["-o", str(o), f"http://{S4}:{HTTP_PORT}/{n}"]
        r = subprocess.run(self.s.cmd(self.c, *argv), capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"curl failed: {r.stderr}"
        for o, (n, data) in zip(outs, self.files.items(), strict=True):
            assert o.read_bytes() == data, n
        c2s, s2c, connects = parse_curl_trace(trace.read_text())
        assert connects == 1, f"curl opened {connects} connections"
        assert c2s.count(b"GET /") == len(self.files)
        return {
            "client": f"{C4}:{local_port}",
            "server": f"{S4}:{HTTP_PORT}",
            "c2s": (len(c2s), sha(c2s)),
            "s2c": (len(s2c), sha(s2c)),
            "http": True,
        }

    def socat(self, port: int, local_port: int, n_c2s: int, n_s2c: int) -> dict:
        """One socat connection carrying seeded files both ways at once."""
        w = self.work
        up, down = w / f"c2s-{port}.bin", w / f"s2c-{port}.bin"
        up.write_bytes(content("watch-socat", "c2s", port, n_c2s))
        down.write_bytes(content("watch-socat", "s2c", port, n_s2c))
        srv_got, cli_got = w / f"srv-got-{port}.bin", w / f"cli-got-{port}.bin"
        srv = self.s.popen(
            self.sv,
            "socat",
            "-t",
            "10",
            f"TCP-LISTEN:{port},reuseaddr",
            f"OPEN:{down},rdonly!!CREATE:{srv_got}",
            stderr=subprocess.PIPE,
        )
        wait_for_port(self.s, self.sv, port)
        r = subprocess.run(
            self.s.cmd(
                self.c,
                "socat",
                "-t",
                "10",
                f"OPEN:{up},rdonly!!CREATE:{cli_got}",
                f"TCP:{S4}:{port},sourceport={local_port},reuseaddr",
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, f"socat client failed: {r.stderr}"
        assert srv.wait(30) == 0, f"socat server failed: {srv.stderr.read()!r}"
        sent_up, got_up = up.read_bytes(), srv_got.read_bytes()
        sent_down, got_down = down.read_bytes(), cli_got.read_bytes()
        assert got_up == sent_up and got_down == sent_down, "socat did not deliver the files"
        return {
            "client": f"{C4}:{local_port}",
            "server": f"{S4}:{port}",
            "c2s": (len(sent_up), sha(sent_up)),
            "s2c": (len(sent_down), sha(sent_down)),
            "http": False,
        }

    def stop_http(self) -> None:
        if self.http_srv is not None:
            NetnsSession.stop(self.http_srv)


@pytest.fixture
def net(tmp_path):
    with NetnsSession("wt") as s:
        yield Net(s, tmp_path)


def _by_client(records: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for r in records:
        assert r["client"] not in out, f"two records for {r['client']}"
        out[r["client"]] = r
    return out


def check_direction(r: dict, d: str, n: int, digest: str) -> None:
    """One direction of a record is the ``n`` bytes a program sent, with digest ``digest``."""
    ctx = f"{r['client']} {d}: {json.dumps(r)}"  # whole: a failure here must say everything
    assert r[d]["gaps"] == [], ctx
    assert r[d]["bytes"] == n, ctx  # reassembled or not: what the program sent
    if r["bypassed"]:
        # Reassembly stopped at the verdict; the hash covers what came before it, so it is
        # given only when that was all (payload_bytes is checked against the wire by the
        # caller: retransmissions are no longer told apart).
        if r[d]["hashed_bytes"] == n:
            assert r[d]["sha256"] == digest, ctx
        else:
            assert r[d]["sha256"] is None and r[d]["hashed_bytes"] < n, ctx
        return
    # payload_bytes counts every payload byte seen, retransmissions included (real stacks on
    # a veth do retransmit: window-full probes when curl is slow to read)
    assert r[d]["payload_bytes"] - r[d]["retransmitted_bytes"] == n, ctx
    assert r[d]["sha256"] == digest, ctx


def check_records(records: list[dict], expected: list[dict], bypassed: bool = True) -> None:
    """The records are the connections made, byte for byte. ``bypassed``: watch ran with
    --bypass (its default), so a flow passed once inspected (http here) stops being
    reassembled: its sizes are still what the programs sent."""
    got = _by_client(records)
    assert sorted(got) == sorted(e["client"] for e in expected), (
        f"connections in the records {sorted(got)} != the ones made "
        f"{sorted(e['client'] for e in expected)}"
    )
    for e in expected:
        r = got[e["client"]]
        ctx = f"{e['client']}: {json.dumps(r)[:600]}"
        assert r["server"] == e["server"], ctx
        assert r["close"] == "fin", ctx
        assert r["handshake"] is True and r["midstream"] is False, ctx
        if e["http"]:
            assert r["protocol"] == "http", ctx
        for d in ("c2s", "s2c"):
            check_direction(r, d, *e[d])
        if bypassed and e["http"]:
            assert r["verdict"] == "pass" and r["bypassed"] is True, ctx
        elif not bypassed:
            assert r["bypassed"] is False, ctx


def check_status_lines(w: WatchProc, interval: float, until: float) -> None:
    st = w.status_lines()
    span = until - w.ready_at
    expect = int(span / interval)
    assert len(st) >= max(2, expect - 2), (
        f"{len(st)} status lines in {span:.1f}s at {interval}s:\n{w.stderr()}"
    )
    gaps = [b[0] - a[0] for a, b in zip(st, st[1:], strict=False)]
    assert all(interval * 0.5 <= g <= interval * 2 + 0.5 for g in gaps), gaps
    assert all("drops kernel=0 " in line for _, line in st), w.stderr()
    last = max(int(re.search(r"packets=(\d+)", line).group(1)) for _, line in st)
    assert last > 0, w.stderr()


def check_exit(w: WatchProc, rc: int, n_conns: int) -> dict:
    err = w.stderr()
    assert rc == 0, err
    assert "Traceback" not in err and "error:" not in err, err
    stats = json.loads(w.stats.read_text())
    assert stats["capture"]["kernel_drops"] == 0, stats["capture"]
    assert stats["capture"]["received"] > 0, stats["capture"]
    assert stats["connections"] == n_conns, stats
    return stats


# ---------------------------------------------------------------------------
# real traffic
# ---------------------------------------------------------------------------


@_need("curl", "socat", "ethtool")
@pytest.mark.parametrize("ending", ["SIGINT", "SIGTERM", "duration"])
def test_watch_sees_real_connections(net: Net, ending: str):
    interval = 0.5
    extra = ("--duration", "8") if ending == "duration" else ()
    net.start_http()
    w = WatchProc(net.s, net.c, "c0", net.work, *extra, status_interval=interval)
    w.wait_ready()
    started = time.monotonic()
    expected = [
        net.curl(41000),
        net.socat(5001, 42001, 250_000, 180_001),
        net.socat(5002, 42002, 1_000, 400_000),
        net.curl(41001),
    ]
    time.sleep(0.5)  # let the http server see curl's FIN and close its side
    net.stop_http()
    time.sleep(1.5)  # a few more status lines
    if ending == "duration":
        assert time.monotonic() - started < 7, "traffic took too long for --duration 8"
        rc = w.wait(30)
        until = time.monotonic()
        assert until - w.ready_at >= 7.5
    else:
        assert w.proc.poll() is None, w.stderr()
        stop_at = until = time.monotonic()
        w.signal(getattr(signal, ending))
        rc = w.wait(30)
        assert time.monotonic() - stop_at < 10
    check_exit(w, rc, len(expected))
    check_records(w.records(), expected)
    check_status_lines(w, interval, until - 0.5)


def wire_payload(pcap: Path, client_port: int) -> dict[str, tuple[int, int]]:
    """Per direction of the TCP connection from client_port: (payload bytes in all frames,
    distinct sequence-space bytes) from a tcpdump pcap (Ethernet, IPv4)."""
    data = pcap.read_bytes()
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    off, total, seen = 24, {"c2s": 0, "s2c": 0}, {"c2s": set(), "s2c": set()}
    base: dict[str, int] = {}
    while off + 16 <= len(data):
        incl = struct.unpack_from(endian + "I", data, off + 8)[0]
        f = data[off + 16 : off + 16 + incl]
        off += 16 + incl
        if len(f) < 54 or f[12:14] != b"\x08\x00" or f[23] != 6:
            continue
        ihl = (f[14] & 0xF) * 4
        tot = struct.unpack_from("!H", f, 16)[0]
        t = 14 + ihl
        sport, dport, seq = struct.unpack_from("!HHI", f, t)
        doff = (f[t + 12] >> 4) * 4
        n = tot - ihl - doff
        d = "c2s" if sport == client_port else "s2c" if dport == client_port else None
        if d is None:
            continue
        if f[t + 13] & 0x02:  # SYN: data starts at seq + 1
            base[d] = (seq + 1) & 0xFFFFFFFF
        if n <= 0:
            continue
        total[d] += n
        rel = (seq - base[d]) & 0xFFFFFFFF
        seen[d].update(range(rel, rel + n))
    return {d: (total[d], len(seen[d])) for d in total}


@_need("curl", "ethtool", "tcpdump")
def test_watch_bypass_counts_payload(net: Net):
    """Default --bypass: the http flow is passed and bypassed, and its payload_bytes still
    count every payload byte: what curl and the server sent, plus whatever the kernels
    retransmitted (counted independently from a tcpdump capture of the same interface)."""
    net.start_http()
    td = Tcpdump(net.s, net.c, "c0", net.work / "wire.pcap").start()
    w = WatchProc(net.s, net.c, "c0", net.work, bypass=True)
    w.wait_ready()
    expected = [net.curl(41000)]
    time.sleep(0.5)
    net.stop_http()
    time.sleep(0.3)
    w.signal(signal.SIGINT)
    rc = w.wait(30)
    td.stop()
    stats = check_exit(w, rc, 1)
    assert stats["bypassed"] == 1, stats
    check_records(w.records(), expected)
    rec = w.records()[0]
    wire = wire_payload(net.work / "wire.pcap", 41000)
    for d in ("c2s", "s2c"):
        on_wire, distinct = wire[d]
        assert distinct == expected[0][d][0], (d, wire, expected[0][d])  # capture is whole
        assert rec[d]["payload_bytes"] == on_wire, (d, rec[d], wire[d])


# ---------------------------------------------------------------------------
# never transmits
# ---------------------------------------------------------------------------


def _tx(s: NetnsSession, ns: str, ifn: str) -> int:
    return int(s.sh(ns, "cat", f"/sys/class/net/{ifn}/statistics/tx_packets").stdout)


@_need("tcpreplay", "ethtool")
def test_watch_never_transmits(tmp_path):
    """A quiet namespace (no addresses, IPv6 off) holding one end of a veth: real TCP frames
    are replayed into the other end while watch captures; the watched interface's TX
    counter does not move."""
    with NetnsSession("wq") as s:
        quiet = s.ns("q", ipv6=False)
        feed = s.ns("f", ipv6=False)
        s.veth(quiet, "q0", feed, "f0")
        time.sleep(0.3)
        before = _tx(s, quiet, "q0")
        w = WatchProc(s, quiet, "q0", tmp_path, "--status-interval", "0.2")
        w.wait_ready()
        time.sleep(0.5)
        pcap = ROOT / "captures" / "http-keepalive.pcap"
        s.sh(feed, "tcpreplay", "-q", "--intf1=f0", "--pps=2000", str(pcap))
        time.sleep(0.7)
        during = _tx(s, quiet, "q0")
        w.signal(signal.SIGINT)
        rc = w.wait(30)
        after = _tx(s, quiet, "q0")
        assert rc == 0, w.stderr()
        assert before == during == after, (before, during, after)
        recs = w.records()
        assert [r["client"] for r in recs] == ["10.99.0.1:41000"], recs
        assert recs[0]["protocol"] == "http" and recs[0]["close"] == "fin"
        stats = json.loads(w.stats.read_text())
        assert stats["capture"]["kernel_drops"] == 0


@_need("tcpreplay", "ethtool")
def test_watch_workers_contain_a_failing_plugin_and_report_it_once(tmp_path):
    """A plugin that raises SystemExit on every flow, in two capture workers: each flow gets
    the default verdict and its record, the failures are counted across the workers, and
    the warning is one line for the whole run."""
    plugin = tmp_path / "hostile.py"
    plugin.write_text(
        "from uinet_tap.plugins import Plugin\n"
        "class Hostile(Plugin):\n    name = 'hostile'\n    ports = {7000}\n"
        "    def detect(self, flow):\n        raise SystemExit(3)\n"
    )
    with NetnsSession("wp") as s:
        quiet = s.ns("q", ipv6=False)
        feed = s.ns("f", ipv6=False)
        s.veth(quiet, "q0", feed, "f0")
        w = WatchProc(s, quiet, "q0", tmp_path, "--workers", "2", "--plugin-file", str(plugin))
        w.wait_ready()
        time.sleep(0.5)
        pcap = ROOT / "captures" / "many-short.pcap"
        s.sh(feed, "tcpreplay", "-q", "--intf1=f0", "--pps=2000", str(pcap))
        time.sleep(1.0)
        w.signal(signal.SIGINT)
        rc = w.wait(60)
        err = w.stderr()
        assert rc == 0 and "Traceback" not in err, err
        warnings = [line for line in err.splitlines() if "plugin 'hostile' failed" in line]
        assert len(warnings) == 1 and "SystemExit: 3" in warnings[0], err
        recs = w.records()
        assert len(recs) == 40, err
        assert all(r["plugin_errors"] == ["hostile"] and r["verdict"] == "pass" for r in recs)
        stats = json.loads(w.stats.read_text())
        assert stats["workers"] == 2 and stats["plugin_errors"] == {"hostile": 40}, stats


@_need("tcpreplay", "ethtool")
@pytest.mark.parametrize("workers", [1, 2])
def test_watch_ends_whole_on_a_signal_amid_traffic(tmp_path, workers: int):
    """Ctrl-C reaches every process of watch's group (with --workers, the parent and each
    worker) while frames pour in: watch ends within seconds every time, exit 0, with its
    stats and whole records. A stop raised as KeyboardInterrupt in the middle of a read of the
    workers' queue left half a message in the pipe, and watch then hung for good (seen in
    two runs of ten of bench/live_rate.py --topspeed). Eight stops, at varying moments."""
    pcap = ROOT / "captures" / "many-short.pcap"
    with NetnsSession("ws") as s:
        quiet = s.ns("q", ipv6=False)
        feed = s.ns("f", ipv6=False)
        s.veth(quiet, "q0", feed, "f0")
        for k in range(8):
            work = tmp_path / f"run{k}"
            work.mkdir()
            w = WatchProc(s, quiet, "q0", work, "-q", "--workers", str(workers))
            w.wait_ready()
            quietly = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
            flood = s.popen(
                feed, "tcpreplay", "-q", "--intf1=f0", "--topspeed", "--loop=0", str(pcap),
                **quietly,
            )  # fmt: skip
            time.sleep(0.3 + 0.1 * k)
            w.signal(signal.SIGINT)
            try:
                rc = w.wait(20)
            except subprocess.TimeoutExpired:
                pytest.fail(f"stop {k}: watch did not end in 20 s after SIGINT:\n{w.stderr()}")
            finally:
                NetnsSession.stop(flood)
            assert rc == 0 and "Traceback" not in w.stderr(), (k, w.stderr())
            stats = json.loads(w.stats.read_text())
            assert stats["connections"] > 0, (k, stats)
            assert len(w.records()) == stats["connections"], k


# ---------------------------------------------------------------------------
# --user: root only for the set-up
# ---------------------------------------------------------------------------


def _nobody() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user named nobody here")


def root_only(tmp: Path) -> Path:
    """A directory only root can enter: what is written there was opened as root."""
    d = tmp / "root-only"
    d.mkdir(mode=0o700)
    return d


def assert_runs_as(pid: int, user: pwd.struct_passwd) -> None:
    """Real, effective, saved and filesystem ids are the user's, its groups only, no
    permitted, effective or ambient capability, and no way back through a set-user-ID
    program."""
    ident = process_identity(pid)
    uid, gid = str(user.pw_uid), str(user.pw_gid)
    assert ident["Uid"] == [uid] * 4 and ident["Gid"] == [gid] * 4, (pid, ident)
    assert set(ident["Groups"]) == {str(g) for g in os.getgrouplist(user.pw_name, user.pw_gid)}
    for caps in ("CapPrm", "CapEff", "CapAmb"):  # inheritable ones grant nothing under NNP
        assert int(ident[caps][0], 16) == 0, (pid, caps, ident)
    assert ident["NoNewPrivs"] == ["1"], ident


@_need("curl", "ethtool")
@pytest.mark.parametrize("workers", [1, 2])
def test_watch_drops_to_the_user_once_capture_and_outputs_are_open(net: Net, workers: int):
    """`--user nobody`: the capture handles and the --flows/--stats files are opened as root
    (in a directory nobody cannot enter), then every process of the run, each capture
    worker too, is nobody for good; the records and the summary still arrive in those files."""
    nobody = _nobody()
    net.start_http()
    out = root_only(net.work)
    w = WatchProc(net.s, net.c, "c0", out, "--user", "nobody", "--workers", str(workers))
    w.wait_ready()
    workers_seen = child_pids(w.proc.pid)
    assert len(workers_seen) == (workers if workers > 1 else 0), workers_seen
    for pid in (w.proc.pid, *workers_seen):
        assert_runs_as(pid, nobody)
    expected = [net.curl(41000)]
    time.sleep(0.5)
    net.stop_http()
    time.sleep(0.3)
    w.signal(signal.SIGINT)
    rc = w.wait(30)
    check_exit(w, rc, 1)
    check_records(w.records(), expected)


WRITE_AS_ROOT = """
from uinet_tap.plugins import NO_MATCH, Plugin

class WriteAsRoot(Plugin):
    name = "write-as-root"
    ports = {{8080}}  # asked before the built-in HTTP detector, which would end detection

    def detect(self, flow):
        with open({target!r}, "w") as f:
            f.write("a plugin wrote here")
        return NO_MATCH
"""


@_need("curl", "ethtool")
@pytest.mark.parametrize("user", [None, "nobody"], ids=["root", "nobody"])
def test_a_plugin_cannot_write_where_only_root_may_under_user(net: Net, user: str | None):
    """A plugin that writes into a root-only directory while detecting: as root it can (the
    danger --user is for); under --user nobody the write fails inside the plugin, which is
    contained like any plugin error, and the run goes on to a clean end."""
    if user:
        _nobody()
    net.start_http()
    out = root_only(net.work)
    target = out / "written-by-plugin"
    # The plugin file is readable by anyone: it is loaded after the drop.
    with tempfile.TemporaryDirectory(prefix="uinet-tap-plugin-") as d:
        os.chmod(d, 0o755)
        plugin = Path(d) / "write_as_root.py"
        plugin.write_text(WRITE_AS_ROOT.format(target=str(target)))
        plugin.chmod(0o644)
        extra = ("--plugin-file", str(plugin)) + (("--user", user) if user else ())
        w = WatchProc(net.s, net.c, "c0", out, *extra)
        w.wait_ready()
        expected = [net.curl(41000)]
        time.sleep(0.5)
        net.stop_http()
        time.sleep(0.3)
        w.signal(signal.SIGINT)
        rc = w.wait(30)
    stats = check_exit(w, rc, 1)
    # A failing plugin ends inspection for its flow (the default verdict), so only as root
    # does detection go on to name HTTP; the streams are rebuilt either way.
    expected[0]["http"] = user is None
    check_records(w.records(), expected)
    (rec,) = w.records()
    if user is None:
        assert target.read_text() == "a plugin wrote here"
        assert not rec.get("plugin_errors") and not stats.get("plugin_errors"), (rec, stats)
    else:
        assert not target.exists()
        assert rec["plugin_errors"] == ["write-as-root"], rec
        assert stats["plugin_errors"] == {"write-as-root": 1}, stats
        err = w.stderr()
        assert "warning: plugin 'write-as-root' failed in " in err, err
        assert ": PermissionError" in err, err


# ---------------------------------------------------------------------------
# errors: one line, exit 2, no traceback
# ---------------------------------------------------------------------------


def _one_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_error_unknown_interface():
    with NetnsSession("we") as s:
        ns = s.ns("x", ipv6=False)
        s.veth(ns, "e0", s.ns("y", ipv6=False), "e1", offloads=True)
        r = s.sh(ns, UINET_TAP, "watch", "nosuch0", "--no-tui", check=False)
        line = _one_error(r)
        assert "nosuch0" in line
        listed = s.sh(ns, "ls", "/sys/class/net").stdout.split()
        assert sorted(listed) == ["e0", "lo"]
        assert all(n in line for n in listed), line


def test_error_interface_down():
    with NetnsSession("we") as s:
        ns = s.ns("x", ipv6=False)
        other = s.ns("y", ipv6=False)
        run(
            [
                "ip",
                "link",
                "add",
                "d0",
                "netns",
                ns,
                "type",
                "veth",
                "peer",
                "name",
                "d1",
                "netns",
                other,
            ]
        )  # never set up
        r = s.sh(ns, UINET_TAP, "watch", "d0", "--no-tui", check=False)
        line = _one_error(r)
        assert "d0" in line and "down" in line, line


def test_error_bad_bpf():
    with NetnsSession("we") as s:
        ns = s.ns("x", ipv6=False)
        r = s.sh(
            ns, UINET_TAP, "watch", "lo", "--no-tui", "--bpf", "tcp prot 80 and (", check=False
        )
        line = _one_error(r)
        assert "bpf" in line.lower() or "filter" in line.lower(), line


@_need("setpriv")
def test_error_not_root(tmp_path):
    with NetnsSession("we") as s:
        ns = s.ns("x", ipv6=False)
        r = run(
            s.cmd(
                ns,
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                UINET_TAP,
                "watch",
                "lo",
                "--no-tui",
            ),
            check=False,
            cwd="/",
        )
        line = _one_error(r)
        assert "root" in line and "CAP_NET_RAW" in line and "CAP_NET_ADMIN" in line, line


def test_error_unknown_user_or_group_and_user_without_root():
    with NetnsSession("we") as s:
        ns = s.ns("x", ipv6=False)
        line = _one_error(s.sh(ns, UINET_TAP, "watch", "lo", "--no-tui", "--user",
                               "no-such-user-here", check=False))  # fmt: skip
        assert line == "error: unknown user: no-such-user-here", line
        line = _one_error(s.sh(ns, UINET_TAP, "watch", "lo", "--no-tui", "--user", "nobody",
                               "--group", "no-such-group-here", check=False))  # fmt: skip
        assert line == "error: unknown group: no-such-group-here", line
        line = _one_error(s.sh(ns, UINET_TAP, "watch", "lo", "--no-tui", "--user", "root",
                               check=False))  # fmt: skip
        assert "root (uid 0)" in line, line
        if shutil.which("setpriv"):
            r = run(s.cmd(ns, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                          UINET_TAP, "watch", "lo", "--no-tui", "--user", "nobody"),
                    check=False, cwd="/")  # fmt: skip
            assert "needs the tool to start as root" in _one_error(r)
