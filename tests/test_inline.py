"""``uinet-tap inline`` between real kernels: client ns -- tool ns -- server ns
(tests/inlinelib.py), with seeded loss, reordering and VLAN/QinQ tags from userspace
stages where asked.

Ground truth is what the programs sent and received (curl, python's HTTP server, socat) and
what each endpoint's own capture shows (no RST reached it), not what the tool reports.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import sys
import tempfile
import time
from pathlib import Path

import dpkt
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inlinecheck import MB, blob, frames, need, resets, settled, sha, tag_stack, tcp_flags  # noqa: E402
from inlinelib import HEADERS, Topology  # noqa: E402
from netnslib import process_identity, wait_for_port  # noqa: E402
from uinet_tap.stack import fastpath  # noqa: E402

# Inline reads batches in C, from a receive ring where the kernel gives one, on the C path.
C_PATH = fastpath.AVAILABLE and os.environ.get("UINET_TAP_FASTPATH") != "off"

pytestmark = [pytest.mark.netns, pytest.mark.timeout(240)]

RST = 0x04

CUT_AFTER_FIRST_MB = """
from uinet_tap.plugins import Plugin, Verdict

class CutAfterFirstMegabyte(Plugin):
    name = "cut-after-1mb"

    def decide(self, flow):
        if flow.s2c_bytes >= 1_000_000:
            return Verdict.INTERCEPT
        return Verdict.NEED_MORE
"""

REWRITE_SECOND_RESPONSE = """
from uinet_tap.plugins import Plugin, Verdict
from uinet_tap.plugins.handlers import make_handler

class SecondRequest(Plugin):
    name = "second-request"

    def decide(self, flow):
        if flow.c2s.count(b"GET ") >= 2:
            return Verdict.INTERCEPT
        return Verdict.NEED_MORE

    async def intercept(self, conn):
        await make_handler("rewrite", {"direction": "s2c", "pattern": "Hello",
                                       "replace": "HELLO"})(conn)
"""

BROKEN_HANDLER = """
from uinet_tap.plugins import Plugin, Verdict

class Broken(Plugin):
    name = "broken-handler"

    def decide(self, flow):
        return Verdict.INTERCEPT if flow.c2s else None

    async def intercept(self, conn):
        await conn.client.read()
        raise RuntimeError("boom")
"""


class Tool:
    """One ``uinet-tap inline`` run in the tool namespace."""

    def __init__(self, t: Topology, tmp: Path, *extra: str) -> None:
        self.t = t
        self.flows = tmp / "flows.jsonl"
        self.stats_path = tmp / "stats.json"
        argv = [sys.executable, "-m", "uinet_tap", "inline", t.if_a, t.if_b, "-q",
                "--flows", str(self.flows), "--stats", str(self.stats_path), *extra]  # fmt: skip
        self.proc = t.start_tool(argv)
        self.records: list[dict] = []
        self.stats: dict = {}
        self.stderr = ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        rc, self.stderr = self.t.stop_tool(self.proc, sig)
        assert rc == 0, self.stderr
        assert "Traceback" not in self.stderr and "error" not in self.stderr, self.stderr
        self.records = [json.loads(line) for line in self.flows.read_text().splitlines()]
        self.stats = json.loads(self.stats_path.read_text())

    def record(self, port: int = 8080) -> dict:
        (rec,) = [r for r in self.records if r["server"].endswith(f":{port}")]
        return rec


def plugin_file(tmp: Path, text: str) -> str:
    path = tmp / "plugin.py"
    path.write_text(text)
    return str(path)


def www(tmp: Path) -> Path:
    d = tmp / "www"
    d.mkdir(exist_ok=True)
    return d


def curl(t: Topology, url: str, out: Path, *extra: str, check: bool = True):  # type: ignore[no-untyped-def]
    return t.client("curl", "-sS", "-g", "--max-time", "120", "-o", str(out), *extra, url,
                    check=check, timeout=150)  # fmt: skip


def no_rst(t: Topology, client: Path | None = None, server: Path | None = None) -> None:
    for pcap, ip in ((client, t.client_ip), (server, t.server_ip)):
        if pcap is None:
            continue
        assert tcp_flags(pcap), f"{pcap.name}: no TCP frames captured"
        assert not (bad := resets(pcap, ip)), f"{pcap.name}: {bad}"


def closed_cleanly(t: Topology) -> None:
    """Neither kernel keeps the connection (TIME-WAIT aside): no half-open socket."""
    for side in ("client", "server"):
        assert settled(t, side, timeout=10) == [], t.ss(side)


# -- pass-through ---------------------------------------------------------------------------


@pytest.mark.parametrize("ipv6", [False, True], ids=["v4", "v6"])
def test_pass_through_curl_and_socat_both_ways_offloads_on(topology, tmp_path: Path, ipv6):
    """Offloads on at the endpoints: the tool reads GSO super-frames and partial checksums
    and must cut and complete them; every byte still arrives."""
    need("curl", "socat")
    t = topology(ipv6=ipv6)
    want = blob(www(tmp_path) / "f.bin", 20 * MB)
    url = t.http_server(www(tmp_path))
    tool = Tool(t, tmp_path)
    got = tmp_path / "got.bin"
    curl(t, f"{url}/f.bin", got)
    assert sha(got) == want
    fam = "TCP6" if ipv6 else "TCP4"
    host = f"[{t.server_ip}]" if ipv6 else t.server_ip
    for port, upload in ((9000, True), (9001, False)):
        src = tmp_path / f"src{port}"
        dst = tmp_path / f"dst{port}"
        want_socat = blob(src, 8 * MB, port)
        if upload:  # client -> server
            srv = t.popen("server", "socat", "-u", f"{fam}-LISTEN:{port},reuseaddr",
                          f"OPEN:{dst},creat,trunc")  # fmt: skip
            wait_for_port(t.session, t.server_ns, port)
            t.client("socat", "-u", f"OPEN:{src}", f"{fam}:{host}:{port}")
        else:  # server -> client
            srv = t.popen("server", "socat", "-u", f"OPEN:{src}",
                          f"{fam}-LISTEN:{port},reuseaddr")  # fmt: skip
            wait_for_port(t.session, t.server_ns, port)
            t.client("socat", "-u", f"{fam}:{host}:{port}", f"OPEN:{dst},creat,trunc")
        assert srv.wait(60) == 0
        assert sha(dst) == want_socat
    tool.stop()
    assert {r["verdict"] for r in tool.records} == {"pass"}
    assert all(r["bypassed"] for r in tool.records)
    inline = tool.stats["inline"]
    assert inline["resegmented"] > 0 and inline["checksums_completed"] > 0, inline
    assert inline["rst_sent"] == 0 and inline["intercepts"] == 0
    for port in inline["ports"].values():
        assert port["send_errors"] == {}, inline
        # A super-frame does not fit a receive ring's MTU-sized frame: those read from the
        # ring are lost (counted; TCP sends them again) and the port reads with recvmmsg
        # once the ring is drained.
        assert not (port["ring"] and port["ring_cut"]), inline


def test_pass_through_forwards_every_frame_and_nothing_else(topology, tmp_path: Path):
    """Offloads off: what one port received, the other sent, frame for frame; UDP and ICMP
    (the path probe) and ARP pass too."""
    need("curl")
    t = topology(offloads=False)
    want = blob(www(tmp_path) / "f.bin", 2 * MB)
    url = t.http_server(www(tmp_path))
    tool = Tool(t, tmp_path, "--status-interval", "0.3")
    got = tmp_path / "got.bin"
    with t.capture("client", snaplen=HEADERS) as pc:
        curl(t, f"{url}/f.bin", got)
        assert t.path_works(5)  # UDP out, ICMP port unreachable back
    assert sha(got) == want
    tool.stop()
    status = [line for line in tool.stderr.splitlines() if "forwarded=" in line]
    assert status and "cut-ins=0" in status[-1], tool.stderr
    ports = tool.stats["inline"]["ports"]
    assert ports[t.if_a]["received"] == ports[t.if_b]["sent"] > 300  # ACKs, request
    assert ports[t.if_b]["received"] == ports[t.if_a]["sent"] > 1400  # 2 MB of data
    for port in ports.values():  # frames of the MTU fit a receive ring's: none was cut
        assert port["ring"] is C_PATH and port["ring_cut"] == 0, ports
    no_rst(t, pc)


# -- cut-in ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw,size",
    [
        (dict(), 50 * MB),
        (dict(ipv6=True, tags="vlan"), 20 * MB),
        (dict(tags="qinq", loss=0.02, reorder=0.02, seed=3), 8 * MB),
        (dict(ipv6=True, tags="qinq", loss=0.02, reorder=0.02, seed=4), 8 * MB),
    ],
    ids=["v4-offloads-on", "v6-vlan", "v4-qinq-loss", "v6-qinq-loss"],
)
def test_cut_in_mid_stream_bulk_download(topology, tmp_path: Path, kw: dict, size: int):
    """A plugin waits for the first megabyte, then the tool takes both halves over and
    relays the rest: curl's file is exact, no endpoint sees a RST, both sockets close."""
    need("curl")
    t = topology(**kw)
    hops = {"client": 55, "server": 77}  # unusual, so the impersonation shows
    for side, hop in hops.items():
        ifname = t.client_if if side == "client" else t.server_if
        t.exec(side, "sysctl", "-qw", f"net.ipv4.ip_default_ttl={hop}",
               f"net.ipv6.conf.{ifname}.hop_limit={hop}")  # fmt: skip
    want = blob(www(tmp_path) / "f.bin", size)
    url = t.http_server(www(tmp_path))
    tool = Tool(t, tmp_path, "--plugin-file", plugin_file(tmp_path, CUT_AFTER_FIRST_MB))
    got, headers = tmp_path / "got.bin", tmp_path / "headers"
    caps = ("client", "server", "a", "b") if t.tags else ("client", "server")
    with contextlib.ExitStack() as stack:
        # headers are all these captures are read for
        pcaps = {side: stack.enter_context(t.capture(side, snaplen=HEADERS)) for side in caps}
        curl(t, f"{url}/f.bin", got, "-D", str(headers))  # the headers as curl read them
        closed_cleanly(t)
    assert sha(got) == want
    no_rst(t, pcaps["client"], pcaps["server"])
    assert len(t.http_log()) == 1
    tool.stop()
    rec = tool.record()
    assert rec["verdict"] == "intercept" and rec["decided_by"] == "cut-after-1mb", rec
    assert rec["verdict_offset"]["s2c"] >= 1_000_000
    assert rec["intercept"]["result"] == "closed", rec["intercept"]
    relayed = rec["intercept"]["to_server"]["bytes_in"]
    # The tracker followed the response up to the takeover, the tool's own TCP relayed the
    # rest: no byte in both, none in neither (the bytes in flight then were the tracker's, and
    # the frame the takeover starts at is the tool's), so together they are the file and its
    # headers. Under loss the takeover waits until no bytes are missing in flight.
    followed = rec["s2c"]["bytes"]
    assert followed >= rec["verdict_offset"]["s2c"] and relayed > 0
    # (the message names what a failure needs: pytest cuts a long record short)
    why = {k: rec[k] for k in ("anomalies", "limits", "verdict_offset")}
    assert rec["s2c"]["gaps"] == [] and rec["c2s"]["gaps"] == [], why
    assert followed + relayed == size + len(headers.read_bytes()), (followed, relayed)
    if C_PATH and not t.offloads:
        # Frames of the relayed flow reached the tool's TCP merged, as a receive offload
        # merges them (tests/test_follow_on.py holds the rules); the file is exact regardless.
        assert tool.stats["inline"]["merged"] > 0, tool.stats["inline"]
    if t.tags:
        # every frame on the tool's wires, ours included, carries the tag stack
        for pcap in (pcaps["a"], pcaps["b"]):
            assert all(tag_stack(buf)[0] == t.tags for buf in frames(pcap)), pcap.name
        for name, st in t.stop_stages().items():
            for d in ("ab", "ba"):
                # send_errors: a frame of ours past the endpoints' 1500-byte MTU
                assert st[d]["tag_mismatch"] == st[d]["send_errors"] == 0, (name, st)
    if kw.get("loss"):  # the stages dropped frames the tool's own TCP had to resend
        assert rec["intercept"]["to_client"]["retransmits"] > 0, rec["intercept"]
    # What each endpoint received from "the other side", before and after the takeover, has
    # that side's MAC, TTL and an unbroken timestamp clock (the peer's PAWS check).
    for pcap, sender, sender_if in (
        (pcaps["client"], "server", t.server_if),
        (pcaps["server"], "client", t.client_if),
    ):
        mac = t.exec(sender, "cat", f"/sys/class/net/{sender_if}/address").stdout.strip()
        seen = impersonated(pcap, 8080 if sender == "server" else None)
        assert seen["macs"] == {bytes.fromhex(mac.replace(":", ""))}, (sender, seen["macs"])
        assert seen["ttls"] == {hops[sender]}, (sender, seen["ttls"])
        assert seen["frames"] > 100
        if not kw.get("reorder"):
            assert seen["ts_backwards"] == 0, sender
        assert 500 <= seen["ts_rate"] <= 2000, seen["ts_rate"]  # Linux: 1000 Hz


def impersonated(pcap: Path, sport: int | None) -> dict:
    """Facts about the TCP frames in an endpoint's capture sent by the other side (source
    port ``sport``, or destination port 8080 when None)."""
    macs, ttls = set(), set()
    n = backwards = 0
    first = last = None
    prev = None
    with open(pcap, "rb") as f:
        for ts, buf in dpkt.pcap.Reader(f):
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            tcp = getattr(ip, "data", None)
            if not isinstance(tcp, dpkt.tcp.TCP):
                continue
            if (tcp.sport != sport) if sport is not None else (tcp.dport != 8080):
                continue
            n += 1
            macs.add(eth.src)
            ttls.add(ip.ttl if isinstance(ip, dpkt.ip.IP) else ip.hlim)
            for kind, data in dpkt.tcp.parse_opts(tcp.opts):
                if kind == dpkt.tcp.TCP_OPT_TIMESTAMP:
                    tsval = int.from_bytes(data[:4], "big")
                    if prev is not None and (tsval - prev) & 0xFFFFFFFF >= 1 << 31:
                        backwards += 1
                    prev = tsval
                    first = first or (ts, tsval)
                    last = (ts, tsval)
    rate = 0.0
    if first and last and last[0] > first[0]:
        rate = ((last[1] - first[1]) & 0xFFFFFFFF) / (last[0] - first[0])
    return {"frames": n, "macs": macs, "ttls": ttls, "ts_backwards": backwards, "ts_rate": rate}


CUT_AFTER_FIRST_MB_UP = """
from uinet_tap.plugins import Plugin, Verdict

class CutAfterFirstMegabyteUp(Plugin):
    name = "cut-after-1mb-up"

    def decide(self, flow):
        return Verdict.INTERCEPT if flow.c2s_bytes >= 1_000_000 else Verdict.NEED_MORE
"""

# Sends a file and reads the echo at the same time: both directions busy at the cut-in.
ECHO_CLIENT = """
import hashlib, socket, sys, threading
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
data = open(path, "rb").read()
s = socket.create_connection((host, port))
def send():
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=send).start()
got = bytearray()
while chunk := s.recv(1 << 16):
    got += chunk
s.close()
print(hashlib.sha256(got).hexdigest(), len(got))
"""


@pytest.mark.parametrize("kw", [dict(), dict(ipv6=True, tags="vlan", loss=0.01, reorder=0.01)],
                         ids=["v4", "v6-vlan-loss"])  # fmt: skip
def test_cut_in_while_both_directions_are_busy(topology, tmp_path: Path, kw: dict):
    """An echo server (socat running cat) and a client sending 6 MB while reading the echo:
    the cut-in after the first uploaded megabyte finds bytes in flight both ways."""
    need("socat")
    t = topology(**kw)
    src = tmp_path / "src.bin"
    want = blob(src, 6 * MB, 5)
    host = f"[{t.server_ip}]" if t.ipv6 else t.server_ip
    fam = "TCP6" if t.ipv6 else "TCP4"
    t.popen("server", "socat", f"{fam}-LISTEN:9002,reuseaddr", "EXEC:cat")
    wait_for_port(t.session, t.server_ns, 9002)
    client = tmp_path / "echo_client.py"
    client.write_text(ECHO_CLIENT)
    tool = Tool(t, tmp_path, "--plugin-file", plugin_file(tmp_path, CUT_AFTER_FIRST_MB_UP))
    with t.capture("client", snaplen=HEADERS) as pc, t.capture("server", snaplen=HEADERS) as ps:
        r = t.client(sys.executable, str(client), host.strip("[]"), "9002", str(src),
                     timeout=180)  # fmt: skip
        closed_cleanly(t)
    assert r.stdout.split() == [want, str(6 * MB)]
    no_rst(t, pc, ps)
    tool.stop()
    rec = tool.record(9002)
    assert rec["verdict"] == "intercept" and rec["intercept"]["result"] == "closed", rec
    assert rec["verdict_offset"]["c2s"] >= 1_000_000
    if t.tags:  # each frame of ours fitted the endpoints' 1500-byte links, SACK blocks and all
        for name, st in t.stop_stages().items():
            assert st["ab"]["send_errors"] == st["ba"]["send_errors"] == 0, (name, st)


def test_cut_in_towards_a_slow_reader(topology, tmp_path: Path):
    """curl reads at 400 KB/s: the tool's side towards it meets a full (or zero) window and
    must wait and probe rather than overrun it."""
    need("curl")
    t = topology()
    want = blob(www(tmp_path) / "f.bin", 3 * MB)
    url = t.http_server(www(tmp_path))
    tool = Tool(t, tmp_path, "--plugin-file", plugin_file(tmp_path, CUT_AFTER_FIRST_MB))
    got = tmp_path / "got.bin"
    with t.capture("client", snaplen=HEADERS) as pc:
        curl(t, f"{url}/f.bin", got, "--limit-rate", "400K")
        closed_cleanly(t)
    assert sha(got) == want
    no_rst(t, pc)
    tool.stop()
    rec = tool.record()
    assert rec["intercept"]["result"] == "closed", rec


CUT_BY_PATH = """
from uinet_tap.plugins import Plugin, Verdict

class CutByPath(Plugin):
    name = "cut-by-path"

    def decide(self, flow):
        if flow.findings.get("path", "").startswith("/cut"):
            return Verdict.INTERCEPT if flow.s2c_bytes >= 200_000 else Verdict.NEED_MORE
        return Verdict.PASS if flow.protocol else None
"""


def test_many_connections_at_once_half_cut_in_half_passed(topology, tmp_path: Path):
    """Twelve downloads at the same time: those whose path starts with /cut are taken over
    after 200 kB, the others passed; every file is exact and every record says which."""
    need("curl")
    t = topology()
    sums = {}
    for i in range(12):
        name = f"{'cut' if i % 2 else 'pass'}{i}.bin"
        sums[name] = blob(www(tmp_path) / name, 2 * MB, i)
    url = t.http_server(www(tmp_path))
    tool = Tool(t, tmp_path, "--plugin-file", plugin_file(tmp_path, CUT_BY_PATH))
    procs = {
        name: t.popen(
            "client", "curl", "-sS", "--fail", "-o", str(tmp_path / f"got-{name}"), f"{url}/{name}"
        )  # fmt: skip
        for name in sums
    }
    for name, p in procs.items():
        assert p.wait(120) == 0, name
    closed_cleanly(t)
    for name, want in sums.items():
        assert sha(tmp_path / f"got-{name}") == want, name
    tool.stop()
    verdicts = {r["findings"]["path"].lstrip("/"): r for r in tool.records}
    assert set(verdicts) == set(sums)
    for name, rec in verdicts.items():
        if name.startswith("cut"):
            assert rec["verdict"] == "intercept", rec
            assert rec["intercept"]["result"] == "closed", rec["intercept"]
        else:
            assert rec["verdict"] == "pass" and "intercept" not in rec, rec


def test_a_flow_picked_up_mid_stream_is_passed_not_cut(topology, tmp_path: Path):
    """The tool starts while a connection is already open: without its handshake there is no
    window scale to continue with, so the intercept verdict falls back to pass (the record
    says why) and the bytes go through untouched."""
    need("socat")
    t = topology(offloads=False)  # the stand-in forwards frames as read
    dst = tmp_path / "dst"
    t.popen("server", "socat", "-u", "TCP4-LISTEN:9003,reuseaddr", f"OPEN:{dst},creat,trunc")
    wait_for_port(t.session, t.server_ns, 9003)
    src = tmp_path / "src"
    want = blob(src, 4 * MB, 9)
    # The client connects through a stand-in forwarder, then the stand-in is replaced by the
    # tool while the client still waits to send.
    standin, _ = t.start_standin()
    sender = t.popen("client", "sh", "-c",
                     f"(sleep 3; cat {src}) | socat -u - TCP4:{t.server_ip}:9003")  # fmt: skip
    time.sleep(1)  # connected through the stand-in
    t.stop_tool(standin)
    policy = tmp_path / "rules.toml"
    policy.write_text('[[rule]]\nport = 9003\naction = "intercept"\n')
    tool = Tool(t, tmp_path, "--policy", str(policy))
    assert sender.wait(60) == 0
    closed_cleanly(t)
    assert sha(dst) == want
    tool.stop()
    rec = tool.record(9003)
    assert rec["midstream"] and rec["verdict"] == "intercept"
    assert rec["intercept_failed"].startswith("handshake not seen"), rec
    assert tool.stats["inline"]["intercepts"] == 0


def test_cut_in_at_the_second_request_rewrites_only_the_second_response(topology, tmp_path):
    """curl fetches two URLs over one keep-alive connection; the cut-in happens at the second
    request: the first response passes untouched, the second is rewritten."""
    need("curl")
    t = topology()
    page = b"<html><body>Hello, world. Hello again.</body></html>\n" * 200
    (www(tmp_path) / "a.html").write_bytes(page)
    (www(tmp_path) / "b.html").write_bytes(page)
    url = t.http_server(www(tmp_path))
    tool = Tool(t, tmp_path, "--plugin-file", plugin_file(tmp_path, REWRITE_SECOND_RESPONSE))
    oa, ob = tmp_path / "a.out", tmp_path / "b.out"
    with t.capture("client", snaplen=HEADERS) as pc, t.capture("server", snaplen=HEADERS) as ps:
        r = t.client("curl", "-sS", "--fail", "-w", "%{num_connects}\n", "-o", str(oa),
                     "-o", str(ob), f"{url}/a.html", f"{url}/b.html")  # fmt: skip
        closed_cleanly(t)
    assert r.stdout.split() == ["1", "0"]  # one connection
    assert oa.read_bytes() == page
    assert ob.read_bytes() == page.replace(b"Hello", b"HELLO")
    log = t.http_log()
    assert [line[2].split()[1] for line in log] == ["/a.html", "/b.html"]
    assert log[0][1] == log[1][1]  # the server saw both requests on one connection
    no_rst(t, pc, ps)
    tool.stop()
    rec = tool.record()
    assert rec["verdict"] == "intercept" and rec["intercept"]["result"] == "closed", rec
    assert rec["verdict_offset"]["s2c"] >= len(page)  # after the first response


def test_respond_answers_the_client_and_closes_both_sides(topology, tmp_path: Path):
    need("curl")
    t = topology()
    (www(tmp_path) / "index.html").write_text("the real page")
    url = t.http_server(www(tmp_path))
    policy = tmp_path / "rules.toml"
    policy.write_text(
        '[[rule]]\nport = 8080\naction = "intercept"\nhandler = "respond"\n'
        'options = { data = "HTTP/1.1 403 Forbidden\\r\\nContent-Length: 9\\r\\n'
        'Connection: close\\r\\n\\r\\nforbidden" }\n'
    )
    tool = Tool(t, tmp_path, "--policy", str(policy))
    out = tmp_path / "out"
    with t.capture("client", snaplen=HEADERS) as pc, t.capture("server", snaplen=HEADERS) as ps:
        r = curl(t, f"{url}/index.html", out, "-w", "%{http_code}")
        closed_cleanly(t)
    assert r.stdout == "403" and out.read_bytes() == b"forbidden"
    assert t.http_log() == []  # the request never reached the server
    no_rst(t, pc, ps)
    tool.stop()
    rec = tool.record()
    assert rec["verdict"] == "intercept" and rec["decided_by"].startswith("rule")
    assert rec["intercept"]["handler"] == "respond"
    assert rec["intercept"]["result"] == "closed", rec["intercept"]


NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
    log_format pp '$proxy_protocol_addr $proxy_protocol_port $request';
    access_log {d}/access.log pp;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:8081 proxy_protocol;
        location / {{ return 200 "nginx answers $proxy_protocol_addr:$proxy_protocol_port\\n"; }}
    }}
}}
"""


def test_forward_hands_the_connection_to_nginx_with_the_client_address(topology, tmp_path: Path):
    """handler = "forward": after the takeover the connection goes to a real nginx listening
    with proxy_protocol in the bump's namespace. The client gets nginx's answer, nginx logs
    the original client address and port (PROXY v2), the server's half is closed cleanly."""
    need("curl", "nginx")
    t = topology()
    (www(tmp_path) / "index.html").write_text("the real page")
    url = t.http_server(www(tmp_path))
    nginx_dir = tmp_path / "nginx"
    nginx_dir.mkdir()
    conf = nginx_dir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(d=nginx_dir))
    t.popen("tool", "nginx", "-c", str(conf), "-p", str(nginx_dir))
    wait_for_port(t.session, t.tool_ns, 8081)
    policy = tmp_path / "rules.toml"
    policy.write_text(
        '[[rule]]\nport = 8080\naction = "intercept"\nhandler = "forward"\n'
        'options = { to = "127.0.0.1:8081" }\n'
    )
    tool = Tool(t, tmp_path, "--policy", str(policy))
    out = tmp_path / "out"
    with t.capture("client", snaplen=HEADERS) as pc, t.capture("server", snaplen=HEADERS) as ps:
        r = curl(t, f"{url}/index.html", out, "-w", "%{http_code} %{local_port}")
        closed_cleanly(t)
    code, port = r.stdout.split()
    assert code == "200"
    assert out.read_text() == f"nginx answers {t.client_ip}:{port}\n"
    assert t.http_log() == []  # the request never reached the server
    (line,) = (nginx_dir / "access.log").read_text().splitlines()
    assert line == f"{t.client_ip} {port} GET /index.html HTTP/1.1"
    no_rst(t, pc, ps)
    tool.stop()
    rec = tool.record()
    assert rec["verdict"] == "intercept" and rec["intercept"]["handler"] == "forward"
    assert rec["intercept"]["result"] == "closed", rec["intercept"]


def test_filter_leaves_unselected_connections_untouched_and_untracked(topology, tmp_path: Path):
    """--filter: a rule blocks port 8080, but the filter selects only port 9999, so the 8080
    download goes through untouched, with no record; a bad expression is one error line."""
    need("curl")
    t = topology()
    want = blob(www(tmp_path) / "f.bin", 1 * MB)
    url = t.http_server(www(tmp_path))
    policy = tmp_path / "rules.toml"
    policy.write_text('[[rule]]\nport = 8080\naction = "block"\n')
    tool = Tool(t, tmp_path, "--policy", str(policy), "--filter", "tcp port 9999")
    got = tmp_path / "got.bin"
    curl(t, f"{url}/f.bin", got)
    assert sha(got) == want
    tool.stop()
    assert tool.records == []
    # every frame of the download, each way (1 MB in at least ~20 super-frames)
    assert tool.stats["inline"]["not_selected"] >= 20
    assert tool.stats["inline"]["rst_sent"] == 0
    bad = t.session.sh(t.tool_ns, sys.executable, "-m", "uinet_tap", "inline", t.if_a, t.if_b,
                       "--no-tui", "--filter", "tcp portt 1", check=False)  # fmt: skip
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr and "--filter" in bad.stderr


def test_tee_relays_and_writes_both_directions(topology, tmp_path: Path):
    """A port rule intercepts at the SYN (armed until the handshake is done) with `tee`: the
    download is exact and the two files hold exactly what each side sent."""
    need("curl")
    t = topology()
    want = blob(www(tmp_path) / "f.bin", 3 * MB)
    url = t.http_server(www(tmp_path))
    tee_dir = tmp_path / "tee"
    policy = tmp_path / "rules.toml"
    policy.write_text(
        f'[[rule]]\nport = 8080\naction = "intercept"\nhandler = "tee"\n'
        f'options = {{ dir = "{tee_dir}" }}\n'
    )
    tool = Tool(t, tmp_path, "--policy", str(policy))
    got = tmp_path / "got.bin"
    curl(t, f"{url}/f.bin", got)
    closed_cleanly(t)
    assert sha(got) == want
    tool.stop()
    rec = tool.record()
    assert rec["intercept"]["handler"] == "tee" and rec["intercept"]["result"] == "closed"
    c2s = (tee_dir / f"{rec['id']}-c2s.bin").read_bytes()
    s2c = (tee_dir / f"{rec['id']}-s2c.bin").read_bytes()
    assert c2s.startswith(b"GET /f.bin HTTP/1.1\r\n") and c2s.endswith(b"\r\n\r\n")
    head, _, body = s2c.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and body == got.read_bytes()


def test_block_resets_both_ends(topology, tmp_path: Path):
    """After detection (the Host is known), both kernels get a RST they accept."""
    need("curl")
    t = topology()
    (www(tmp_path) / "x").write_text("x" * 100)
    url = t.http_server(www(tmp_path))
    policy = tmp_path / "rules.toml"
    policy.write_text('[[rule]]\nprotocol = "http"\naction = "block"\n')
    tool = Tool(t, tmp_path, "--policy", str(policy))
    with t.capture("client", snaplen=HEADERS) as pc, t.capture("server", snaplen=HEADERS) as ps:
        r = curl(t, f"{url}/x", tmp_path / "out", check=False)
        for side in ("client", "server"):
            assert settled(t, side, timeout=10) == [], t.ss(side)
    assert r.returncode == 56, r.stderr  # "Recv failure: Connection reset by peer"
    assert any(f & RST for f in tcp_flags(pc)) and any(f & RST for f in tcp_flags(ps))
    tool.stop()
    rec = tool.record()
    assert rec["verdict"] == "block" and rec["close"] == "rst"
    assert tool.stats["inline"]["rst_sent"] >= 2


def test_block_by_port_refuses_at_the_syn(topology, tmp_path: Path):
    need("curl")
    t = topology()
    (www(tmp_path) / "x").write_text("x")
    url = t.http_server(www(tmp_path))
    policy = tmp_path / "rules.toml"
    policy.write_text('[[rule]]\nport = 8080\naction = "block"\n')
    tool = Tool(t, tmp_path, "--policy", str(policy))
    r = curl(t, f"{url}/x", tmp_path / "out", check=False)
    assert r.returncode == 7, r.stderr  # "Failed to connect ... Connection refused"
    assert t.http_log() == []
    tool.stop(signal.SIGINT)  # Ctrl-C ends it as cleanly as SIGTERM
    assert tool.record()["verdict"] == "block"


def test_a_crashing_handler_resets_both_sides_and_is_reported(topology, tmp_path: Path):
    need("curl")
    t = topology()
    (www(tmp_path) / "x").write_text("x")
    url = t.http_server(www(tmp_path))
    tool = Tool(t, tmp_path, "--plugin-file", plugin_file(tmp_path, BROKEN_HANDLER))
    r = curl(t, f"{url}/x", tmp_path / "out", check=False)
    assert r.returncode == 56, r.stderr
    closed_cleanly(t)
    rc, stderr = t.stop_tool(tool.proc)
    assert rc == 0 and "Traceback" not in stderr
    assert "plugin 'broken-handler' failed in intercept (" in stderr
    assert ": RuntimeError: boom (its flows" in stderr
    rec = json.loads(tool.flows.read_text().splitlines()[0])
    assert rec["intercept"]["result"] == "handler error: RuntimeError: boom"


# -- --user: root only for the set-up ----------------------------------------------------

CUT_ONLY_CUT_BIN = """
from uinet_tap.plugins import Plugin, Verdict

class CutOnlyCutBin(Plugin):
    name = "cut-only-cut-bin"

    def decide(self, flow):
        if b"GET /cut.bin" in flow.c2s:
            return Verdict.INTERCEPT if flow.s2c_bytes >= 500_000 else Verdict.NEED_MORE
        return Verdict.PASS if flow.c2s else None
"""


def test_inline_drops_to_the_user_once_its_ports_and_outputs_are_open(topology, tmp_path: Path):
    """`--user nobody`: the packet sockets, the offload change and the --flows/--stats files
    (in a directory nobody cannot enter) are done as root, then the process is nobody for
    good, and still bridges: a download passed through and one cut into (the handler runs
    as nobody) arrive whole, and both records reach the file opened before the drop."""
    need("curl")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user named nobody here")
    t = topology()
    want = {name: blob(www(tmp_path) / name, 3 * MB, seed=n)
            for n, name in enumerate(("pass.bin", "cut.bin"))}  # fmt: skip
    url = t.http_server(www(tmp_path))
    out = tmp_path / "root-only"
    out.mkdir(mode=0o700)
    # The plugin is loaded after the drop, so it sits where anyone can read it.
    with tempfile.TemporaryDirectory(prefix="uinet-tap-plugin-") as d:
        os.chmod(d, 0o755)
        plugin = Path(d) / "cut_only_cut_bin.py"
        plugin.write_text(CUT_ONLY_CUT_BIN)
        tool = Tool(t, out, "--user", "nobody", "--plugin-file", str(plugin))
    ident = process_identity(tool.proc.pid)
    uid, gid = str(nobody.pw_uid), str(nobody.pw_gid)
    assert ident["Uid"] == [uid] * 4 and ident["Gid"] == [gid] * 4, ident
    assert set(ident["Groups"]) == {str(g) for g in os.getgrouplist("nobody", nobody.pw_gid)}
    assert all(int(ident[c][0], 16) == 0 for c in ("CapPrm", "CapEff", "CapAmb"))
    assert ident["NoNewPrivs"] == ["1"], ident
    for name, digest in want.items():
        got = tmp_path / f"got-{name}"
        curl(t, f"{url}/{name}", got)
        assert sha(got) == digest, name
    closed_cleanly(t)
    tool.stop()
    by_verdict = {r["verdict"]: r for r in tool.records}
    assert sorted(by_verdict) == ["intercept", "pass"], tool.records
    assert by_verdict["intercept"]["intercept"]["result"] == "closed"
    assert tool.stats["inline"]["intercepts"] == 1


def test_ethtool_comes_from_the_system_directories_never_from_path(topology, tmp_path: Path):
    """A PATH with a fake `ethtool` first: the tool still runs the system's (GRO really goes
    off on its interfaces) and never the fake (it would leave a mark)."""
    t = topology(offloads=False)
    for ifname in (t.if_a, t.if_b):
        t.exec("tool", "ethtool", "-K", ifname, "gro", "on")
        assert t.offload_state("tool", ifname)["generic-receive-offload"], ifname
    fake = tmp_path / "fakebin"
    fake.mkdir()
    mark = tmp_path / "fake-ethtool-ran"
    (fake / "ethtool").write_text(f'#!/bin/sh\necho "$@" >> {mark}\nexit 0\n')
    (fake / "ethtool").chmod(0o755)
    poisoned = f"PATH={fake}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    argv = ["env", poisoned, sys.executable, "-m", "uinet_tap", "inline", t.if_a, t.if_b,
            "-q", "--duration", "0.5"]  # fmt: skip
    proc = t.start_tool(argv)
    rc, stderr = t.stop_tool(proc)
    assert rc == 0, stderr
    assert not mark.exists(), mark.read_text()
    for ifname in (t.if_a, t.if_b):
        assert f"GRO and LRO off on {ifname}" in stderr, stderr
        assert not t.offload_state("tool", ifname)["generic-receive-offload"], ifname


# -- errors: one line, exit 2 ---------------------------------------------------------------


def one_error(r) -> str:  # type: ignore[no-untyped-def]
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_errors_unknown_same_and_down_interfaces(topology):
    t = topology(offloads=False)
    tool = [sys.executable, "-m", "uinet_tap", "inline"]
    line = one_error(t.exec("tool", *tool, "nosuch0", t.if_b, check=False))
    assert "no such interface: nosuch0" in line and t.if_a in line and t.if_b in line
    line = one_error(t.exec("tool", *tool, t.if_a, t.if_a, check=False))
    assert "must differ" in line
    t.exec("tool", "ip", "link", "set", t.if_b, "down")
    line = one_error(t.exec("tool", *tool, t.if_a, t.if_b, check=False))
    assert f"{t.if_b} is down" in line


def test_error_without_privileges(topology):
    need("setpriv")
    t = topology(offloads=False)
    r = t.exec("tool", "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
               sys.executable, "-m", "uinet_tap", "inline", t.if_a, t.if_b, check=False,
               cwd="/")  # fmt: skip
    line = one_error(r)
    assert "root" in line and "CAP_NET_RAW" in line, line


def test_error_unknown_user(topology):
    t = topology(offloads=False)
    tool = [sys.executable, "-m", "uinet_tap", "inline", t.if_a, t.if_b]
    line = one_error(t.exec("tool", *tool, "--user", "no-such-user-here", check=False))
    assert line == "error: unknown user: no-such-user-here", line
