"""watch and inline write a closed connection's record within seconds of its last packet
(--timeout-closing 5) and remember its tuple for a minute, so a straggler after the record is
counted, never a second record; replay keeps capture-time semantics (60 s closing, stragglers
join the connection while it is tracked). First on the engine with a driven clock, then live:
`uinet-tap watch` on a veth between namespaces, real sockets, tcpdump of the same interface
as the truth about when the last packet was (needs root, iproute2, ethtool, tcpdump)."""

from __future__ import annotations

import json
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "captures"))

from frames import Conversation, frames  # noqa: E402
from netnslib import NetnsSession, Tcpdump, wait_for_file, wait_for_port  # noqa: E402
from peers import content  # noqa: E402
from test_watch import (  # noqa: E402  (the live watch tests' topology and helpers)
    C4,
    PY,
    S4,
    Net,
    WatchProc,
    _by_client,
    _need,
    check_direction,
    check_records,
    needs_netns,
    sha,
)
from uinet_tap.stack import fastpath  # noqa: E402

from uinet_tap.api import _batches  # noqa: E402
from uinet_tap.engine import Engine, Options  # noqa: E402

MODES = ["off", "c"] if fastpath.AVAILABLE else ["off"]


def run(mode: str, live: bool) -> tuple[list[tuple[float, dict]], dict]:
    """A download closed by FIN/FIN/ACK at t=1000.x, a retransmitted data segment of it 8 s
    later, and 20 s of another connection's traffic; the clock drives expiry as watch's does.
    Returns (capture time each record was written at, record) and the stats."""
    cv = Conversation(t0=1000.0)
    segs = cv.handshake()
    segs += [cv.c(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"), cv.ack("s")]
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    segs += [cv.s(reply), cv.ack("c"), cv.fin("s"), cv.fin("c"), cv.ack("s")]
    last = segs[-1].ts
    late = cv.data("s", b"hello", rel=len(reply) - 5, advance=False, at=last + 8)
    other = Conversation(cport=41000, t0=last + 0.5)
    busy = other.handshake()
    for k in range(40):
        busy.append(other.c(b"x", at=last + 0.5 + k * 0.5))
    opts = {"timeout_closing": 3.0, "closed_memory": 60.0} if live else {}  # watch's
    written: list[tuple[float, dict]] = []
    now = [0.0]
    engine = Engine(1, Options(fastpath=mode, **opts), lambda r: written.append((now[0], r)))
    for seg in sorted([*segs, late, *busy], key=lambda s: s.ts):
        now[0] = seg.ts
        for batch in _batches(frames([seg]), 1):
            engine.feed_batch(batch)
        engine.expire(seg.ts)
    engine.finish()
    return written, engine.stats()


@pytest.mark.parametrize("mode", MODES)
def test_live_record_within_seconds_and_the_straggler_counted(mode: str):
    written, stats = run(mode, live=True)
    first = [(t, r) for t, r in written if r["client"].endswith(":40000")]
    assert len(first) == 1, [r["close"] for _, r in first]  # no second record
    at, rec = first[0]
    # 3 s of quiet, then the next expiry pass (this clock ticks every 0.5 s)
    assert rec["close"] == "fin" and at - rec["end"] <= 3.5, (at, rec["end"])
    assert stats["stragglers"] == 1


@pytest.mark.parametrize("mode", MODES)
def test_replay_keeps_capture_time_semantics(mode: str):
    written, stats = run(mode, live=False)
    first = [r for _, r in written if r["client"].endswith(":40000")]
    assert len(first) == 1 and stats["stragglers"] == 0
    assert first[0]["s2c"]["retransmitted_bytes"] == 5  # the straggler joined it


class _BehindCapture:
    """A capture read seconds behind its traffic (a loaded machine): each frame comes in a
    batch of its own, and the clock is 10 s past the frames read so far."""

    iface = "behind0"
    linktype = 1

    def __init__(self, fr: list) -> None:
        self._batches = [b for f in fr for b in _batches([f], 1)]
        self._last = fr[0][0]

    def poll(self, timeout: float) -> object:
        if not self._batches:
            return None
        batch = self._batches.pop(0)
        self._last = batch.times[-1]
        return batch

    def clock(self) -> float:
        return self._last + 10.0

    def stats(self) -> tuple[int, int, int]:
        return (0, 0, 0)

    def close(self) -> None:
        pass


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bypass", [False, True])
def test_a_capture_read_behind_its_traffic_ends_no_connection_early(mode: str, bypass: bool):
    """watch's clock times idle connections out only when the capture has nothing more to
    give: read behind, the clock is ahead of the frames still queued, and would end their
    connection before them (the server's FIN came first: the closing timeout). The records
    are the frames' own, as replay makes them with watch's settings."""
    from uinet_tap.plugins.registry import builtin_detectors

    from uinet_tap.watch import SingleBackend

    cv = Conversation(t0=1000.0, dt=0.01)
    request = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    segs = [*cv.handshake(), cv.c(request)]
    segs += [cv.s(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), cv.fin("s")]
    segs += [cv.c(b"x" * 700), cv.c(b"y" * 700), cv.ack("s"), cv.fin("c"), cv.ack("s")]
    fr = frames(segs)
    opts = Options(fastpath=mode, timeout_closing=3.0, closed_memory=60.0)
    got: list[list[dict]] = []
    for behind in (False, True):
        records: list[dict] = []
        engine = Engine(1, opts, records.append, plugins=builtin_detectors(), bypass=bypass)
        if behind:
            backend = SingleBackend(_BehindCapture(fr), engine)  # type: ignore[arg-type]
            for _ in range(len(fr) + 2):
                backend._last_expiry = float("-inf")  # its once-a-second pass, at every step
                backend.step()
        else:
            for batch in _batches(fr, 1):
                engine.feed_batch(batch)
        engine.finish()
        got.append(records)
    assert got[1] == got[0]
    (rec,) = got[0]
    assert rec["close"] == "fin" and rec["c2s"]["bytes"] == len(request) + 1400, rec


# ---------------------------------------------------------------------------
# live: `uinet-tap watch` on real kernel TCP stacks in two namespaces
# ---------------------------------------------------------------------------

# The closing timeout watch uses unless told otherwise (the behaviour under test).
CLOSING = 3.0
# A record is written at the first expiry pass after CLOSING of quiet, and watch runs those
# once a second of the clock (SingleBackend.step); what is written reaches the file at the
# next flush, also once a second (Watch._loop); this test polls every 50 ms. So up to
# 3 + 1 + 1 + 0.05 s by design: the 5 s the tool promises, and a second more for a loaded
# runner.
SLACK = 3.0

# A socket peer. "fin": the client sends its file and shuts down its side, the server reads
# to the end, sends its file and closes, the client reads to the end and closes (FIN, FIN,
# ACK). "rst": each reads exactly what the other sends (EXPECT bytes), then the client
# closes with SO_LINGER 0, which makes its kernel send a RST.
PEER = r"""
import socket, struct, sys
role, mode, host, port, send, got, expect, extra = sys.argv[1:9]
data, expect = open(send, "rb").read(), int(expect)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.settimeout(30)
if role == "server":
    s.bind((host, int(port)))
    s.listen(1)
    open(extra, "w").close()  # ready
    s, _ = s.accept()
    s.settimeout(30)
else:
    s.bind((extra.split(":")[0], int(extra.split(":")[1])))
    s.connect((host, int(port)))

def recv(n=None):
    buf = bytearray()
    while n is None or len(buf) < n:
        b = s.recv(65536 if n is None else min(65536, n - len(buf)))
        if not b:
            break
        buf += b
    return bytes(buf)

if role == "client":
    s.sendall(data)
    if mode == "fin":
        s.shutdown(socket.SHUT_WR)
    received = recv(None if mode == "fin" else expect)
    if mode == "rst":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
else:
    received = recv(None if mode == "fin" else expect)
    s.sendall(data)
    if mode == "rst":
        try:
            left = s.recv(1)  # the client's RST
        except ConnectionResetError:
            left = b""
        assert left == b"", left
s.close()
open(got, "wb").write(received)
"""


def exchange(net: Net, mode: str, port: int, cport: int, n_c2s: int, n_s2c: int) -> dict:
    """One connection between real sockets; the expected record (test_watch's form) from the
    files the programs sent, each checked against what the other program received."""
    w = net.work
    up, down = w / f"{mode}-c2s.bin", w / f"{mode}-s2c.bin"
    up.write_bytes(content("prompt", "c2s", port, n_c2s))
    down.write_bytes(content("prompt", "s2c", port, n_s2c))
    srv_got, cli_got, ready = w / f"{mode}-srv-got", w / f"{mode}-cli-got", w / f"{mode}.ready"
    srv = net.s.popen(net.sv, PY, "-c", PEER, "server", mode, S4, str(port), str(down),
                      str(srv_got), str(n_c2s), str(ready), stderr=subprocess.PIPE)  # fmt: skip
    wait_for_file(ready, 10, srv)
    wait_for_port(net.s, net.sv, port)
    r = subprocess.run(
        net.s.cmd(net.c, PY, "-c", PEER, "client", mode, S4, str(port), str(up), str(cli_got),
                  str(n_s2c), f"{C4}:{cport}"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, f"{mode} client failed: {r.stderr}"
    assert srv.wait(30) == 0, f"{mode} server failed: {srv.stderr.read()!r}"  # type: ignore[union-attr]
    assert srv_got.read_bytes() == up.read_bytes(), f"{mode}: the server did not get the file"
    assert cli_got.read_bytes() == down.read_bytes(), f"{mode}: the client did not get the file"
    return {
        "client": f"{C4}:{cport}",
        "server": f"{S4}:{port}",
        "c2s": (n_c2s, sha(up.read_bytes())),
        "s2c": (n_s2c, sha(down.read_bytes())),
        "http": False,
    }


def tcp_frames(pcap: Path, cport: int) -> list[tuple[float, int, bytes]]:
    """(time, TCP flags, whole frame) of every frame of the connection from client port
    cport in a tcpdump pcap (Ethernet, IPv4, microseconds) that may still be written to."""
    data = pcap.read_bytes()
    endian = "<" if data[:4] == b"\xd4\xc3\xb2\xa1" else ">"
    out, off = [], 24
    while off + 16 <= len(data):
        sec, usec, incl = struct.unpack_from(endian + "III", data, off)
        f = data[off + 16 : off + 16 + incl]
        off += 16 + incl
        if len(f) < incl:  # the record tcpdump is writing now
            break
        if len(f) < 54 or f[12:14] != b"\x08\x00" or f[23] != 6:
            continue
        t = 14 + (f[14] & 0xF) * 4
        sport, dport = struct.unpack_from("!HH", f, t)
        if cport in (sport, dport):
            out.append((sec + usec / 1e6, f[t + 13], f))
    return out


def status_packets(w: WatchProc, before: float | None = None) -> int:
    """The largest packets= count in watch's status lines (those printed before `before`)."""
    counts = [int(line.split("packets=")[1].split()[0]) for t, line in w.status_lines()
              if before is None or t < before]  # fmt: skip
    return max(counts, default=0)


T = TypeVar("T")


def poll(what: str, cond: Callable[[], T], timeout: float, w: WatchProc) -> T:
    """cond() once it is true, asked every 50 ms while watch runs."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert w.proc.poll() is None, f"watch exited while waiting for {what}:\n{w.stderr()}"
        assert time.monotonic() < deadline, f"no {what} in {timeout}s:\n{w.stderr()}"
        time.sleep(0.05)


FIN_PORT, FIN_CPORT, RST_PORT, RST_CPORT = 5101, 43001, 5102, 43002
FIN = 0x01


@pytest.mark.netns
@needs_netns
@_need("ethtool", "tcpdump", "ss")
@pytest.mark.parametrize("mode", MODES)
def test_watch_writes_closed_records_within_seconds_live(
    mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """watch on the client's veth (default --timeout-closing) while real sockets make a
    connection closed by FIN/FIN/ACK and one ended by the client's RST (SO_LINGER 0): each
    record is in the --flows file within 5 s (and SLACK) of the connection's last packet as a
    tcpdump of the same interface saw it, watch still running. Then the server's FIN is put
    on the wire again (its captured frame, sent from the server's side on a packet socket):
    the client's kernel, in TIME_WAIT, acknowledges it once more; neither makes a second
    record, and they are counted as stragglers. The bytes and digests are what the programs
    sent and the other received."""
    monkeypatch.setenv("UINET_TAP_FASTPATH", mode)  # watch inherits it
    with NetnsSession("pr") as s:
        net = Net(s, tmp_path)
        wire = tmp_path / "wire.pcap"
        td = Tcpdump(s, net.c, "c0", wire).start()
        w = WatchProc(s, net.c, "c0", tmp_path, status_interval=0.5)
        w.wait_ready()
        fin = exchange(net, "fin", FIN_PORT, FIN_CPORT, 70_000, 200_001)
        rst = exchange(net, "rst", RST_PORT, RST_CPORT, 30_000, 120_017)

        # Poll the file while watch runs: when each record first appears.
        seen_at: dict[str, float] = {}

        def both_written() -> bool:
            if w.flows.exists():
                for line in w.flows.read_text().splitlines():
                    if line.endswith("}"):  # a whole line
                        seen_at.setdefault(json.loads(line)["client"], time.time())
            return len(seen_at) >= 2

        poll("records of both connections", both_written, CLOSING + SLACK + 10, w)
        for e, cport, close in ((fin, FIN_CPORT, "fin"), (rst, RST_CPORT, "rst")):
            frames = tcp_frames(wire, cport)
            assert frames, f"tcpdump saw nothing of port {cport}"
            last = frames[-1][0]
            lag = seen_at[e["client"]] - last
            assert 0 < lag <= CLOSING + SLACK, (close, lag)
            (rec,) = [r for r in w.records() if r["client"] == e["client"]]
            assert rec["close"] == close, rec
            assert abs(rec["end"] - last) < 0.05, (rec["end"], last)  # the same last packet

        # A straggler: the server's FIN again, as captured, from the server's side.
        fin_frame = next(f for _, flags, f in tcp_frames(wire, FIN_CPORT)
                         if flags & FIN and f[26:30] == socket.inet_aton(S4))  # fmt: skip
        quiet = status_packets(w, time.monotonic())
        injected = time.time()
        s.sh(net.sv, PY, "-c", "import socket, sys; p = socket.socket(socket.AF_PACKET, "
             "socket.SOCK_RAW); p.bind(('s0', 0)); p.send(bytes.fromhex(sys.argv[1]))",
             fin_frame.hex())  # fmt: skip

        def on_wire() -> bool:
            return any(t >= injected for t, _, _ in tcp_frames(wire, FIN_CPORT))

        poll("the injected frame on the wire", on_wire, 10, w)
        poll("watch reading the injected frame", lambda: status_packets(w) > quiet, 10, w)
        assert sorted(r["client"] for r in w.records()) == sorted(seen_at), w.records()

        w.signal(signal.SIGINT)
        rc = w.wait(30)
        td.stop()
        err = w.stderr()
        assert rc == 0 and "Traceback" not in err, err

    late = [f for f in tcp_frames(wire, FIN_CPORT) + tcp_frames(wire, RST_CPORT)
            if f[0] >= injected]  # fmt: skip
    stats = json.loads(w.stats.read_text())
    assert stats["capture"]["kernel_drops"] == 0, stats["capture"]
    assert stats["connections"] == 2, stats
    # The injected frame at least; at most every frame of the two tuples after their records.
    assert 1 <= stats["stragglers"] <= len(late), (stats["stragglers"], len(late))
    records = w.records()
    assert len(_by_client(records)) == 2  # no second record for either tuple
    check_records([r for r in records if r["client"] == fin["client"]], [fin])
    (r,) = [r for r in records if r["client"] == rst["client"]]
    assert r["close"] == "rst" and r["handshake"] is True and r["midstream"] is False, r
    for d in ("c2s", "s2c"):
        check_direction(r, d, *rst[d])


@pytest.mark.netns
@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", MODES)
def test_inline_writes_closed_records_within_seconds_live(
    mode: str, topology, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """inline between the client and the server (tests/inlinelib.py), curl through it: the
    download's record is in the --flows file, inline still running, within 5 s (and SLACK)
    of the connection's last packet as a tcpdump at the client saw it. (Its records once
    reached the file only when the buffer filled or the run ended.)"""
    monkeypatch.setenv("UINET_TAP_FASTPATH", mode)  # inline inherits it
    t = topology(offloads=False)
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "f.bin").write_bytes(content("prompt", "s2c", 8080, 300_000))
    url = t.http_server(tmp_path / "www")
    flows = tmp_path / "flows.jsonl"
    proc = t.start_tool([PY, "-m", "uinet_tap", "inline", t.if_a, t.if_b, "-q",
                         "--flows", str(flows)])  # fmt: skip
    with t.capture("client", "tcp port 8080") as wire:
        t.client("curl", "-sS", "--fail", "-o", str(tmp_path / "got.bin"), f"{url}/f.bin")
        deadline = time.monotonic() + CLOSING + SLACK + 10
        while not flows.read_bytes().endswith(b"}\n"):
            assert proc.poll() is None, t.tool_stderr(proc)
            assert time.monotonic() < deadline, f"no record:\n{t.tool_stderr(proc)}"
            time.sleep(0.05)
        seen_at = time.time()
        (rec,) = [json.loads(line) for line in flows.read_text().splitlines()]
        frames = tcp_frames(wire, int(rec["client"].rsplit(":", 1)[1]))
    rc, err = t.stop_tool(proc)
    assert rc == 0 and "Traceback" not in err, err
    assert (tmp_path / "got.bin").read_bytes() == (tmp_path / "www" / "f.bin").read_bytes()
    assert rec["close"] == "fin" and rec["s2c"]["bytes"] > 300_000, rec
    last = frames[-1][0]
    assert 0 < seen_at - last <= CLOSING + SLACK, seen_at - last
    assert abs(rec["end"] - last) < 0.05, (rec["end"], last)  # the same last packet
