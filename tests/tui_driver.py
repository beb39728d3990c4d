"""Feeds `LiveView` synthetic snapshots in a loop, as `uinet-tap watch` will; test_tui.py runs it
under tmux. Quits when the view says so (q), then prints "bye".

    python tests/tui_driver.py [--tick SECONDS] [--flows N]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from uinet_tap.snapshot import FlowRow, Snapshot  # noqa: E402
from uinet_tap.tui import LiveView  # noqa: E402

T0 = 1_700_000_000.0

TLS_HELLO = bytes.fromhex("160301") + b"\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(32))
HTTP_REQ = b"GET /index.html HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: curl/8\r\n\r\n"
HTTP_RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: nginx\r\n\r\nhello"
SSH_C = b"SSH-2.0-OpenSSH_9.6\r\n"
SSH_S = b"SSH-2.0-OpenSSH_8.9p1 Ubuntu-3\r\n"


def base_flows() -> list[FlowRow]:
    """A small, varied set of flows: detected, guessed, undecided, mid-stream, gaps, VLAN."""
    return [
        FlowRow(
            id=1,
            state="EST",
            midstream=False,
            client="10.0.0.5:51000",
            server="93.184.216.34:443",
            vlan=(),
            protocol="tls",
            confidence="detected",
            info="secure.example.org",
            verdict="would-intercept",
            decided_by="hosts",
            c2s_bytes=517,
            s2c_bytes=4096,
            c2s_packets=3,
            s2c_packets=5,
            start=T0,
            last_seen=T0,
            gaps=False,
            bypassed=False,
            findings={"sni": "secure.example.org", "alpn": ["h2", "http/1.1"], "version": "1.3"},
            c2s_head=TLS_HELLO,
            s2c_head=bytes.fromhex("160303007a0200007603035a"),
            tcp={"mss": 1460, "wscale": 7, "sack": True, "handshake": "seen"},
        ),
        FlowRow(
            id=2,
            state="EST",
            midstream=False,
            client="10.0.0.5:51002",
            server="10.0.0.80:80",
            vlan=(100,),
            protocol="http",
            confidence="detected",
            info="shop.example.com",
            verdict="pass",
            decided_by="port-policy",
            c2s_bytes=len(HTTP_REQ),
            s2c_bytes=len(HTTP_RESP),
            c2s_packets=1,
            s2c_packets=1,
            start=T0,
            last_seen=T0,
            gaps=False,
            bypassed=False,
            findings={"host": "shop.example.com", "method": "GET", "path": "/index.html"},
            c2s_head=HTTP_REQ,
            s2c_head=HTTP_RESP,
            tcp={"mss": 1460, "handshake": "seen"},
        ),
        FlowRow(
            id=3,
            state="EST",
            midstream=True,
            client="192.168.1.20:40022",
            server="192.168.1.1:22",
            vlan=(),
            protocol="ssh",
            confidence="guessed",
            info="OpenSSH_8.9p1",
            verdict=None,
            decided_by=None,
            c2s_bytes=len(SSH_C),
            s2c_bytes=len(SSH_S),
            c2s_packets=1,
            s2c_packets=1,
            start=T0,
            last_seen=T0,
            gaps=True,
            bypassed=False,
            findings={"banner": "SSH-2.0-OpenSSH_8.9p1 Ubuntu-3"},
            c2s_head=SSH_C,
            s2c_head=SSH_S,
            tcp={"handshake": "missed"},
        ),
        FlowRow(
            id=4,
            state="SYN",
            midstream=False,
            client="[2001:db8::7]:60000",
            server="[2001:db8::1]:5432",
            vlan=(10, 20),
            protocol=None,
            confidence=None,
            info="",
            verdict=None,
            decided_by=None,
            c2s_bytes=0,
            s2c_bytes=0,
            c2s_packets=1,
            s2c_packets=0,
            start=T0,
            last_seen=T0,
            gaps=False,
            bypassed=False,
        ),
        FlowRow(
            id=5,
            state="FIN",
            midstream=False,
            client="10.0.0.9:33333",
            server="10.0.0.25:25",
            vlan=(),
            protocol="smtp",
            confidence="detected",
            info="220 mail.example.net ESMTP",
            verdict="would-block",
            decided_by="rules",
            c2s_bytes=60,
            s2c_bytes=180,
            c2s_packets=2,
            s2c_packets=3,
            start=T0,
            last_seen=T0,
            gaps=False,
            bypassed=True,
            findings={"banner": "220 mail.example.net ESMTP"},
            c2s_head=b"EHLO client\r\n",
            s2c_head=b"220 mail.example.net ESMTP\r\n",
        ),
    ]


def snapshot_at(tick: int, flows: int = 5, dt: float = 0.1) -> Snapshot:
    """The capture `tick` steps in: every flow's byte counts grow at its own pace."""
    now = T0 + tick * dt
    rows = []
    extra = [
        replace(
            base_flows()[1],
            id=100 + i,
            client=f"10.0.1.{i % 250 + 1}:{40000 + i}",
            info=f"host{i}.example.com",
            findings={"host": f"host{i}.example.com"},
        )
        for i in range(max(0, flows - 5))
    ]
    for k, f in enumerate(base_flows()[:flows] + extra):
        rows.append(
            replace(
                f,
                c2s_bytes=f.c2s_bytes + tick * 100 * (k + 1),
                s2c_bytes=f.s2c_bytes + tick * 1000 * (k + 1),
                c2s_packets=f.c2s_packets + tick,
                s2c_packets=f.s2c_packets + tick,
                last_seen=now - 0.05 * k,
            )
        )
    return Snapshot(
        now=now,
        packets=1000 + tick * 37,
        bytes=100_000 + tick * 50_000,
        tcp_packets=990 + tick * 36,
        flows_active=len(rows),
        flows_total=len(rows) + 12,
        undecodable=2,
        not_tcp=40,
        plugin_errors=0,
        kernel_drops=0,
        interface_drops=1,
        flows=tuple(rows),
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tick", type=float, default=0.1)
    ap.add_argument("--flows", type=int, default=5)
    ap.add_argument("--max-seconds", type=float, default=120.0)
    args = ap.parse_args()
    deadline = time.monotonic() + args.max_seconds
    tick = 0
    with LiveView(title="test0") as view:
        while time.monotonic() < deadline:
            view.update(snapshot_at(tick, args.flows, args.tick))
            if view.poll_keys():
                break
            tick += 1
            time.sleep(args.tick / 2)
            if view.poll_keys():
                break
            time.sleep(args.tick / 2)
        else:
            return 3  # nobody pressed q
    print("bye")
    return 0


if __name__ == "__main__":
    sys.exit(main())
