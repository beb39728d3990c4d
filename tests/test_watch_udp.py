"""`watch udp:ADDR:PORT`: mirrored traffic over UDP (uinet_tap/live.py UdpCapture). The
kernel's own VXLAN device and `tc ... mirred` copy a link's frames to the sensor, as cloud
traffic mirroring does; the records must match those of a local capture of the same link.
Decapsulation itself (VXLAN, TZSP, malformed datagrams) is checked on built datagrams."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from netnslib import NetnsSession, Tcpdump, netns_available, wait_for_port  # noqa: E402

from uinet_tap.live import decapsulate

EXE = Path(sys.executable).parent / "uinet-tap"
_ok, _why = netns_available()
FRAME = bytes(range(60))  # an inner Ethernet frame's bytes (content is not looked at here)


def vxlan(vni: int, frame: bytes = FRAME, flags: int = 0x08) -> bytes:
    return bytes((flags, 0, 0, 0)) + vni.to_bytes(3, "big") + b"\0" + frame


def tzsp(frame: bytes = FRAME, tags: bytes = b"") -> bytes:
    return bytes((1, 0, 0, 1)) + tags + b"\x01" + frame


def test_decapsulation():
    assert decapsulate(vxlan(42), 0) == (FRAME, 42)
    assert decapsulate(vxlan(0), 0) == (FRAME, 1 << 24)  # VNI 0 is a session too
    assert decapsulate(tzsp(tags=b"\x00\x00\x0a\x02ab"), 3) == (FRAME, (1 << 25) + 3)
    assert decapsulate(vxlan(7, flags=0x0C), 0) == "unknown_encapsulation"  # VXLAN-GPE bits
    assert decapsulate(b"\x08" + bytes(10), 0) == "short"
    assert decapsulate(tzsp(tags=b"\x0a\xff" + bytes(40))[:-1], 0) == "tzsp_truncated"
    assert decapsulate(bytes((1, 0, 0, 1)) + b"\x00" * 100, 0) == "tzsp_too_many_tags"
    assert decapsulate(b"\x45" + bytes(40), 0) == "unknown_encapsulation"


def test_bad_specs_are_one_line_errors():
    for spec, words in (("udp:4789", "expected udp:ADDR:PORT"),
                        ("udp:127.0.0.1:99999", "expected udp:ADDR:PORT")):  # fmt: skip
        r = subprocess.run([str(EXE), "watch", spec, "--no-tui"], capture_output=True,
                           text=True, timeout=30)  # fmt: skip
        assert r.returncode == 2 and "Traceback" not in r.stderr and words in r.stderr
    r = subprocess.run([str(EXE), "watch", "udp:127.0.0.1:4789", "--no-tui", "--workers", "2"],
                       capture_output=True, text=True, timeout=30)  # fmt: skip
    assert r.returncode == 2 and "cannot be shared by --workers" in r.stderr


def _streams(recs: list[dict]) -> list[tuple]:
    """What a record says of a connection itself, sorted (the capture times differ: the
    mirror stamps frames as they reach the sensor)."""
    return sorted(
        (r["client"], r["server"], r["close"], r["protocol"], r["handshake"],
         *((r[d]["bytes"], r[d]["sha256"], r[d]["gaps"], r[d]["packets"]) for d in ("c2s", "s2c")),
         json.dumps(r.get("transactions")))
        for r in recs
    )  # fmt: skip


@pytest.mark.skipif(not _ok, reason=_why or "network namespaces unavailable")
def test_vxlan_mirror_gives_the_records_of_a_local_capture(tmp_path: Path):
    with NetnsSession("vx") as s:
        cli, srv, sensor = s.ns("c", ipv6=False), s.ns("s", ipv6=False), s.ns("m", ipv6=False)
        s.veth(cli, "c0", srv, "s0")
        s.addr(cli, "c0", "10.71.0.1/24")
        s.addr(srv, "s0", "10.71.0.2/24")
        # The underlay to the sensor, and the kernel's VXLAN device mirroring s0 both ways.
        s.veth(srv, "u0", sensor, "m0")
        s.addr(srv, "u0", "10.72.0.1/24")
        s.addr(sensor, "m0", "10.72.0.2/24")
        s.sh(srv, "ip", "link", "add", "vx0", "type", "vxlan", "id", "4242", "dstport",
             "4789", "remote", "10.72.0.2", "local", "10.72.0.1", "dev", "u0")  # fmt: skip
        s.sh(srv, "ip", "link", "set", "vx0", "up")
        s.sh(srv, "tc", "qdisc", "add", "dev", "s0", "clsact")
        for way in ("ingress", "egress"):
            s.sh(srv, "tc", "filter", "add", "dev", "s0", way, "protocol", "all", "u32",
                 "match", "u32", "0", "0", "action", "mirred", "egress", "mirror", "dev",
                 "vx0")  # fmt: skip
        root = tmp_path / "www"
        root.mkdir()
        (root / "big.bin").write_bytes(os.urandom(400_000))
        (root / "small.txt").write_bytes(b"mirrored\n" * 100)
        s.popen(srv, sys.executable, "-m", "http.server", "8080", "--bind", "10.71.0.2",
                "--directory", str(root), stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)  # fmt: skip
        wait_for_port(s, srv, 8080)
        flows = tmp_path / "mirror.jsonl"
        watch = s.popen(sensor, str(EXE), "watch", "udp:10.72.0.2:4789", "--no-tui",
                        "--no-bypass", "-q", "--flows", str(flows), "--stats",
                        str(tmp_path / "stats.json"), stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE)  # fmt: skip
        local = Tcpdump(s, srv, "s0", tmp_path / "local.pcap").start()
        time.sleep(0.5)
        for name in ("big.bin", "small.txt", "big.bin"):
            s.sh(cli, "curl", "-s", "-o", "/dev/null", f"http://10.71.0.2:8080/{name}")
        local.stop()
        time.sleep(1.0)
        NetnsSession.stop(watch)
        _, err = watch.communicate(timeout=30)
        assert watch.returncode == 0, err
        mirrored = [json.loads(line) for line in flows.read_text().splitlines()]
        r = subprocess.run([str(EXE), "replay", "-q", "--flows", "-", str(tmp_path / "local.pcap")],
                           capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
        captured = [json.loads(line) for line in r.stdout.splitlines()]
        assert len(captured) == 3
        assert _streams(mirrored) == _streams(captured)
        assert {r["tunnel"] for r in mirrored} == {4242}  # the VNI keys the flows
        stats = json.loads((tmp_path / "stats.json").read_text())
        assert stats["capture"]["kernel_drops"] == 0
        assert stats["capture"]["undecapsulated"] == {}


@pytest.mark.parametrize("eager", [0, 4096])  # handshakes deferred in the compact table, or not
def test_two_sessions_with_one_tuple_are_two_connections(eager: int):
    from array import array

    from frames import Conversation, frames

    from uinet_tap.engine import Engine, Options
    from uinet_tap.pcapfile import Batch

    def conversation(body: bytes) -> list[bytes]:
        cv = Conversation()  # the same addresses, ports and ISNs each time
        segs = [*cv.handshake(), cv.c(b"GET / HTTP/1.1\r\n\r\n"), cv.s(body), cv.ack("c")]
        return [frame for _ts, frame in frames(segs)]

    a, b = conversation(b"HTTP/1.1 200 OK\r\n\r\nsession one"), conversation(b"x" * 77)
    order = [fr for pair in zip(a, b, strict=True) for fr in pair]  # interleaved
    tunnels = [7, 9] * len(a)
    offsets, pos = [], 0
    for fr in order:
        offsets.append(pos)
        pos += len(fr)
    recs: list[dict] = []
    engine = Engine(1, Options(eager_half_open=eager), recs.append)
    engine.feed_batch(Batch(
        b"".join(order), array("d", [1000.0 + i * 1e-3 for i in range(len(order))]),
        array("I", offsets), array("I", [len(f) for f in order]), 1, None, tunnels,
    ))  # fmt: skip
    engine.finish()
    by_tunnel = {r["tunnel"]: r for r in recs}
    assert sorted(by_tunnel) == [7, 9] and all(r["handshake"] for r in recs)
    assert by_tunnel[7]["s2c"]["bytes"] == len(b"HTTP/1.1 200 OK\r\n\r\nsession one")
    assert by_tunnel[9]["s2c"]["bytes"] == 77


SEND_GRE = """
import socket, sys
sys.path.insert(0, sys.argv[3])
from frames import erspan
import dpkt
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_GRE)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 24)
for _ts, frame in dpkt.pcap.Reader(open(sys.argv[1], "rb")):
    s.sendto(erspan(bytes(frame), version=int(sys.argv[4]), session=5), (sys.argv[2], 0))
"""


@pytest.mark.skipif(not _ok, reason=_why or "network namespaces unavailable")
@pytest.mark.parametrize("version", [2, 3])
def test_erspan_over_gre_gives_the_records_of_the_capture(tmp_path: Path, version: int):
    """watch gre:ADDR on a raw socket: every frame of a capture mirrored as ERSPAN (type II or
    III) in GRE by a sender namespace (this kernel has no erspan device, so the sender builds
    the headers); the records equal the capture's own, keyed by the session."""
    cap = Path(__file__).resolve().parent.parent / "captures" / "many-short.pcap"
    with NetnsSession("gre") as s:
        tx, sensor = s.ns("t", ipv6=False), s.ns("m", ipv6=False)
        s.veth(tx, "t0", sensor, "m0", mtu=9000)
        s.addr(tx, "t0", "10.73.0.1/24")
        s.addr(sensor, "m0", "10.73.0.2/24")
        flows = tmp_path / "gre.jsonl"
        watch = s.popen(sensor, str(EXE), "watch", "gre:10.73.0.2", "--no-tui", "--no-bypass",
                        "-q", "--flows", str(flows), stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE)  # fmt: skip
        time.sleep(1.0)
        s.sh(tx, sys.executable, "-c", SEND_GRE, str(cap), "10.73.0.2",
             str(Path(__file__).resolve().parent), str(version))  # fmt: skip
        time.sleep(1.0)
        NetnsSession.stop(watch)
        _, err = watch.communicate(timeout=30)
        assert watch.returncode == 0, err
    mirrored = [json.loads(line) for line in flows.read_text().splitlines()]
    r = subprocess.run([str(EXE), "replay", "-q", "--flows", "-", str(cap)],
                       capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    captured = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(captured) == 40
    assert _streams(mirrored) == _streams(captured)
    assert {rec["tunnel"] for rec in mirrored} == {(1 << 26) + 5}  # the ERSPAN session
