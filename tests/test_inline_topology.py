"""The inline-tool test topology (tests/inlinelib.py) works, proven with a stand-in tool:
captures/bridge.py without impairment, run in the tool namespace between if_a and if_b,
exactly where ``uinet-tap inline IF_A IF_B`` will run.  Nothing here tests the tool."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import dpkt
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inlinecheck import blob, fetch, frames, need, settled, sha, tag_stack, tcp_flags  # noqa: E402
from inlinelib import (  # noqa: E402
    ENDPOINT_MTU,
    HEADERS,
    NS_TAG,
    TAGGED_MTU,
    build_topology,
    leftover_namespaces,
    sweep_stale_namespaces,
    teardown,
)
from netnslib import NetnsSession, netns_available, wait_for_port  # noqa: E402

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

MB = 1 << 20


# -- the topology itself ------------------------------------------------------------


def test_straight_topology_offloads_on_and_tool_ns_silent(topology):
    t = topology()  # defaults: IPv4, no stages, offloads left on
    assert not t.stages and t.offloads
    for side in ("client", "server"):
        k = t.offload_state(side)
        for feat in ("tcp-segmentation-offload", "generic-segmentation-offload", "tx-checksumming"):
            assert k[feat], (side, feat, k)
    # tool ns: no addresses, IPv6 off, and it forwards nothing by itself
    addrs = t.exec("tool", "ip", "-o", "addr", "show").stdout
    assert "10.77." not in addrs and "inet6" not in addrs, addrs
    for ifn in (t.if_a, t.if_b):
        v = t.exec("tool", "sysctl", "-n", f"net.ipv6.conf.{ifn}.disable_ipv6").stdout
        assert v.strip() == "1"
    assert not t.path_works(0.5), "frames cross the tool ns without a tool"


def test_offloads_off_and_mtus(topology):
    t = topology(offloads=False)
    for side, ifn in (("client", None), ("server", None), ("tool", "ta"), ("tool", "tb")):
        k = t.offload_state(side, ifn)
        assert not k["tcp-segmentation-offload"] and not k["generic-receive-offload"], k
    mtu = t.exec("client", "cat", f"/sys/class/net/{t.client_if}/mtu").stdout
    assert int(mtu) == ENDPOINT_MTU


@pytest.mark.parametrize("ipv6", [False, True], ids=["v4", "v6"])
def test_http_5mb_byte_exact_through_standin(topology, tmp_path: Path, ipv6: bool):
    need("curl")
    t = topology(ipv6=ipv6, offloads=False)
    www = tmp_path / "www"
    www.mkdir()
    want = blob(www / "big.bin", 5 * MB)
    standin, stats = t.start_standin()
    url = t.http_server(www)
    assert url.startswith("http://[fd77::2]" if ipv6 else "http://10.77.0.2")
    got = tmp_path / "got.bin"
    with t.capture("client", "tcp", snaplen=HEADERS) as pcap:
        fetch(t, f"{url}/big.bin", got)
    assert sha(got) == want
    flags = tcp_flags(pcap)
    assert len(flags) > 1000 and not [f for f in flags if f & dpkt.tcp.TH_RST]
    assert settled(t, "client") == [] and settled(t, "server") == []
    rc, err = t.stop_tool(standin)
    assert rc == 0, err
    assert '"send_errors": 0' in stats.read_text()


def test_keepalive_two_urls_one_connection(topology, tmp_path: Path):
    need("curl")
    t = topology(offloads=False)
    www = tmp_path / "www"
    www.mkdir()
    a, b = blob(www / "a.bin", 200_000, 1), blob(www / "b.bin", 300_000, 2)
    t.start_standin()
    url = t.http_server(www)
    oa, ob = tmp_path / "a.out", tmp_path / "b.out"
    r = t.client(
        "curl", "-sS", "--fail", "-w", "%{num_connects}\n",
        "-o", str(oa), "-o", str(ob), f"{url}/a.bin", f"{url}/b.bin",
    )  # fmt: skip
    assert r.stdout.split() == ["1", "0"], r.stdout
    assert (sha(oa), sha(ob)) == (a, b)
    log = t.http_log()
    assert [line[2].split()[1] for line in log] == ["/a.bin", "/b.bin"]
    assert log[0][1] == log[1][1], f"two connections: {log}"


@pytest.mark.parametrize("ipv6", [False, True], ids=["v4", "v6"])
def test_socat_bulk_client_to_server(topology, tmp_path: Path, ipv6: bool):
    need("socat")
    t = topology(ipv6=ipv6, offloads=False)
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    want = blob(src, 8 * MB, 3)
    t.start_standin()
    fam = "TCP6" if ipv6 else "TCP4"
    host = f"[{t.server_ip}]" if ipv6 else t.server_ip
    srv = t.popen(
        "server", "socat", "-u", f"{fam}-LISTEN:9000,reuseaddr,bind={host}",
        f"OPEN:{dst},creat,trunc",
    )  # fmt: skip
    wait_for_port(t.session, t.server_ns, 9000)
    t.client("socat", "-u", f"OPEN:{src}", f"{fam}:{host}:9000")
    assert srv.wait(30) == 0
    assert sha(dst) == want


@pytest.mark.parametrize("tags", ["vlan", "qinq"])
def test_tool_sees_tagged_frames_and_standin_keeps_them(topology, tmp_path: Path, tags: str):
    need("curl")
    t = topology(tags=tags, seed=5)
    want_stack = [(0x8100, 100)] if tags == "vlan" else [(0x88A8, 200), (0x8100, 100)]
    assert t.tags == want_stack and not t.offloads
    assert int(t.exec("tool", "cat", f"/sys/class/net/{t.if_a}/mtu").stdout) == TAGGED_MTU
    www = tmp_path / "www"
    www.mkdir()
    want = blob(www / "f.bin", MB)
    standin, stats = t.start_standin()
    url = t.http_server(www)
    got = tmp_path / "got.bin"
    with t.capture("a") as pa, t.capture("b") as pb:
        fetch(t, f"{url}/f.bin", got)
    assert sha(got) == want
    for pcap in (pa, pb):
        n_tcp, dirs, longest = 0, set(), 0
        for buf in frames(pcap):
            stack, eth = tag_stack(buf)
            assert stack == want_stack, f"{pcap.name}: frame with tags {stack}"
            longest = max(longest, len(buf))
            ip = eth.data
            if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.tcp.TCP):
                n_tcp += 1
                dirs.add(ip.data.dport == 8080)
        assert n_tcp > 100 and dirs == {True, False}, (pcap.name, n_tcp, dirs)
        assert longest == 1514 + 4 * len(want_stack), longest  # full-size segments, tagged
    rc, err = t.stop_tool(standin)
    assert rc == 0, err
    for name, st in t.stop_stages().items():
        for d in ("ab", "ba"):
            assert st[d]["tag_mismatch"] == 0 and st[d]["send_errors"] == 0, (name, st)


@pytest.mark.parametrize(
    "kw",
    [
        dict(loss=0.02, reorder=0.02),
        dict(loss=0.02, reorder=0.02, dup=0.02, tags="qinq", ipv6=True),
    ],
    ids=["v4-loss-reorder", "v6-qinq-loss-reorder-dup"],
)
def test_impaired_2mb_byte_exact(topology, tmp_path: Path, kw: dict):
    need("curl")
    t = topology(seed=11, **kw)
    www = tmp_path / "www"
    www.mkdir()
    want = blob(www / "f.bin", 2 * MB)
    standin, _ = t.start_standin()
    url = t.http_server(www)
    got = tmp_path / "got.bin"
    fetch(t, f"{url}/f.bin", got)
    assert sha(got) == want  # the kernels retransmitted what the stages dropped
    assert t.stop_tool(standin)[0] == 0
    st = t.stop_stages()
    for what in ("lost", "reordered", "dup", "tag_mismatch", "send_errors"):
        n = sum(s[d][what] for s in st.values() for d in ("ab", "ba"))
        expected = {"lost": True, "reordered": True, "dup": "dup" in kw}.get(what, False)
        assert (n > 0) == expected, (what, st)


# -- the library's own guarantees -----------------------------------------------------


def test_start_tool_ready_line_and_stop(topology):
    t = topology(offloads=False)
    script = "echo out; echo starting >&2; sleep 0.2; echo 'inline: ready' >&2; exec sleep 30"
    p = t.start_tool(["sh", "-c", script], ready_timeout=5)
    assert p.poll() is None
    rc, err = t.stop_tool(p, signal.SIGTERM, timeout=5)
    assert rc == -signal.SIGTERM and "starting" in err and "inline: ready" in err
    assert t.tool_stdout(p) == "out\n"
    with pytest.raises(RuntimeError, match=r"exited \(3\)[\s\S]*boom"):
        t.start_tool(["sh", "-c", "echo boom >&2; exit 3"], ready_timeout=5)
    with pytest.raises(RuntimeError, match="not 'ready' after"):
        t.start_tool(["sh", "-c", "echo waiting >&2; exec sleep 30"], ready_timeout=0.5)


def test_teardown_removes_namespaces_and_processes(tmp_path: Path):
    ok, why = netns_available()
    if not ok:
        pytest.skip(why)
    with NetnsSession(f"{NS_TAG}9") as s:
        t = build_topology(s, tags="vlan", loss=0.01, workdir=tmp_path)
        standin, _ = t.start_standin()
        t.http_server(tmp_path)
        procs = [standin, *(st.proc for st in t.stages), *s.procs]
        assert len(t.session.namespaces) == 5
    assert all(p.poll() is not None for p in procs)
    assert leftover_namespaces(s) == []


def test_failed_build_leaves_nothing(tmp_path: Path):
    ok, why = netns_available()
    if not ok:
        pytest.skip(why)

    class Failing(NetnsSession):
        def veth(self, *a, **kw):
            if len(self.namespaces) >= 5:  # all five namespaces exist by now
                raise RuntimeError("injected failure")
            return super().veth(*a, **kw)

    s = Failing(f"{NS_TAG}8")
    with pytest.raises(RuntimeError, match="injected"):
        build_topology(s, tags="qinq", workdir=tmp_path)
    assert s.namespaces == [] and leftover_namespaces(s) == []


def test_teardown_kills_escaped_children(tmp_path: Path):
    """A tool that leaves a child behind in another process group/session: teardown still
    kills it (by PID, found with `ip netns pids`)."""
    ok, why = netns_available()
    if not ok:
        pytest.skip(why)
    pidfile = tmp_path / "child.pid"
    s = NetnsSession(f"{NS_TAG}8")
    try:
        t = build_topology(s, offloads=False, workdir=tmp_path)
        script = f"setsid sleep 60 & echo $! > {pidfile}; echo ready >&2; exec sleep 60"
        t.start_tool(["sh", "-c", script], ready_timeout=5)
        child = int(pidfile.read_text())
    finally:
        assert teardown(s) == []
    deadline = time.monotonic() + 5
    while True:  # gone, or a zombie waiting for init to reap it
        try:
            if Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
                break
        except (FileNotFoundError, ProcessLookupError):
            break
        assert time.monotonic() < deadline, "escaped child still running"
        time.sleep(0.02)


def test_sweep_removes_namespaces_of_dead_runs():
    ok, why = netns_available()
    if not ok:
        pytest.skip(why)
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"ut-{NS_TAG}0-{dead.pid}-stale"
    subprocess.run(["ip", "netns", "add", name], check=True)
    orphan = subprocess.Popen(["ip", "netns", "exec", name, "sleep", "60"])
    try:
        deadline = time.monotonic() + 5
        while not subprocess.run(["ip", "netns", "pids", name], capture_output=True).stdout:
            assert time.monotonic() < deadline, "sleep never entered the namespace"
            time.sleep(0.02)
        assert name in sweep_stale_namespaces()
        assert orphan.wait(5) == -signal.SIGKILL
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert name not in out
    finally:
        if orphan.poll() is None:
            orphan.kill()
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
