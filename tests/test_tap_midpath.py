"""A tap in the middle of a lossy path: frames are lost and reordered both before the capture
point and after it, so the capture holds segments a receiver never got (lost after the tap),
misses some it got in the end (lost before the tap, sent again), and shows others in an order
the receiver did not see. The record of each direction must still be what the receiving
application read: real kernels at both ends (their own timestamps, SACK, retransmissions),
socat's files as the ground truth, the capture replayed through both data planes.

Reordering as heavy as here (a fifth of the frames held back, each stage) makes the case PAWS
gets wrong at a tap common: a segment the tracker saw raise TS.Recent never reached the
receiver, or reached it after an older one, which the receiver then took. Before the tracker
held such data tentatively, one run in three here left a segment-sized gap.

The topology is tests/inlinelib.py's: client -- imp-a -- tool ns -- imp-b -- server, both
stages impairing both directions; in the tool ns the stand-in (captures/bridge.py, no
impairment) forwards, and tcpdump captures on its client-side interface.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inlinecheck import MB, blob, need, settled, sha  # noqa: E402
from netnslib import wait_for_port  # noqa: E402
from uinet_tap.stack import fastpath  # noqa: E402

pytestmark = [pytest.mark.netns, pytest.mark.timeout(240)]

MODES = ["c", "off"] if fastpath.AVAILABLE else ["off"]


@pytest.mark.parametrize(
    "kw",
    [
        dict(loss=0.05, reorder=0.2, seed=11),
        dict(ipv6=True, loss=0.05, reorder=0.2, seed=12),
    ],
    ids=["v4", "v6"],
)
def test_a_tap_between_lossy_hops_records_what_each_application_read(topology, tmp_path, kw):
    need("socat", "tcpdump")
    t = topology(**kw)
    standin, _stats = t.start_standin()
    fam = "TCP6" if t.ipv6 else "TCP4"
    host = f"[{t.server_ip}]" if t.ipv6 else t.server_ip
    want: dict[int, tuple[str, str]] = {}  # port -> (direction, sha256 of what was read)
    with t.capture("a") as pcap:
        for port, upload in ((9000, True), (9001, False)):
            src, dst = tmp_path / f"src{port}", tmp_path / f"dst{port}"
            digest = blob(src, 4 * MB, port)
            if upload:  # client -> server: the server's socat writes what it read
                srv = t.popen("server", "socat", "-u", f"{fam}-LISTEN:{port},reuseaddr",
                              f"OPEN:{dst},creat,trunc")  # fmt: skip
                wait_for_port(t.session, t.server_ns, port)
                t.client("socat", "-u", f"OPEN:{src}", f"{fam}:{host}:{port}")
            else:  # server -> client: the client's socat writes what it read
                srv = t.popen("server", "socat", "-u", f"OPEN:{src}",
                              f"{fam}-LISTEN:{port},reuseaddr")  # fmt: skip
                wait_for_port(t.session, t.server_ns, port)
                t.client("socat", "-u", f"{fam}:{host}:{port}", f"OPEN:{dst},creat,trunc")
            assert srv.wait(60) == 0
            assert sha(dst) == digest  # what the application read is the file sent
            want[port] = ("c2s" if upload else "s2c", digest)
        for side in ("client", "server"):
            assert settled(t, side, timeout=10) == [], t.ss(side)
    rc, err = t.stop_tool(standin)
    assert rc == 0, err
    stages = t.stop_stages()
    # The path did lose and reorder on both sides of the tap (else this proves nothing).
    for name, st in stages.items():
        total = {k: sum(d.get(k, 0) for d in st.values() if isinstance(d, dict)) for k in
                 ("lost", "reordered")}  # fmt: skip
        assert total["lost"] > 0 and total["reordered"] > 0, (name, st)
    for mode in MODES:
        out = tmp_path / f"flows-{mode}.jsonl"
        env = {**os.environ, "UINET_TAP_FASTPATH": mode}
        run = subprocess.run(
            [sys.executable, "-m", "uinet_tap", "replay", str(pcap), "--flows", str(out), "-q"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        records = {int(r["server"].rsplit(":", 1)[1]): r for r in map(json.loads, out.open())}
        assert sorted(records) == [9000, 9001], records.keys()
        for port, (direction, digest) in want.items():
            rec = records[port]
            why = (mode, port, {k: rec[k] for k in ("anomalies", "limits", "close")})
            got = rec[direction]
            assert got["gaps"] == [] and got["bytes"] == 4 * MB, (why, got)
            assert got["sha256"] == digest, why
            other = rec["c2s" if direction == "s2c" else "s2c"]
            assert other["bytes"] == 0 and other["gaps"] == [], (why, other)
            assert rec["close"] == "fin" and rec["handshake"] and rec["tcp"]["timestamps"], why
