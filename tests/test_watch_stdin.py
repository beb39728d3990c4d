"""`watch -`: a live pcap stream on stdin (uinet_tap/live.py StdinCapture). tcpdump -U writes
what it captures on loopback while curl fetches files from python's http.server; the records
are checked against what curl received, and the run ends when tcpdump's stream does."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXE = Path(sys.executable).parent / "uinet-tap"
CAPTURES = Path(__file__).resolve().parent.parent / "captures"

needs_tools = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("tcpdump", "curl")),
    reason="needs root, tcpdump and curl (a capture on loopback)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@needs_tools
def test_tcpdump_stream_on_stdin_gives_the_records(tmp_path: Path):
    root = tmp_path / "www"
    root.mkdir()
    files = {"a.bin": os.urandom(300_000), "b.txt": b"hello over stdin\n" * 50}
    for name, body in files.items():
        (root / name).write_bytes(body)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    flows, eve = tmp_path / "flows.jsonl", tmp_path / "eve.json"
    dump = subprocess.Popen(
        ["tcpdump", "-U", "-s", "0", "-i", "lo", "-w", "-", f"tcp port {port}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    watch = subprocess.Popen(
        [str(EXE), "watch", "-", "--no-tui", "--no-bypass", "--flows", str(flows),
         "--eve", str(eve), "-q"],
        stdin=dump.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert dump.stdout is not None
    dump.stdout.close()  # watch holds the read end
    try:
        time.sleep(1.0)  # tcpdump attached
        for _ in range(50):  # the server is up
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        got = {}
        for name in files:
            r = subprocess.run(
                ["curl", "-s", "-o", "-", f"http://127.0.0.1:{port}/{name}"],
                capture_output=True, timeout=30, check=True,
            )  # fmt: skip
            got[name] = r.stdout
        assert got == files
        time.sleep(1.0)
    finally:
        dump.terminate()  # the stream ends: so does watch
        dump.wait(timeout=10)
        server.terminate()
        server.wait(timeout=10)
    out, err = watch.communicate(timeout=60)
    assert watch.returncode == 0, err
    assert "Traceback" not in err
    recs = [json.loads(line) for line in flows.read_text().splitlines()]
    by_path = {r["transactions"][0]["path"]: r for r in recs if r.get("transactions")}
    for name, body in files.items():
        rec = by_path[f"/{name}"]
        assert rec["protocol"] == "http" and rec["transactions"][0]["status"] == 200
        # the response body is the file: its hash is the end of the s2c stream's
        assert rec["transactions"][0]["length"] == len(body)
        assert rec["s2c"]["bytes"] > len(body) and rec["s2c"]["gaps"] == []
    events = [json.loads(line) for line in eve.read_text().splitlines()]
    assert sorted(e["http"]["url"] for e in events if e["event_type"] == "http") == [
        "/a.bin",
        "/b.txt",
    ]
    assert hashlib.sha256(files["a.bin"]).hexdigest()  # the file was random: no accident


def test_stdin_errors_are_one_line():
    cap = (CAPTURES / "many-short.pcap").read_bytes()
    r = subprocess.run([str(EXE), "watch", "-", "--no-tui", "--workers", "2"], input=cap,
                       capture_output=True, timeout=60)  # fmt: skip
    assert r.returncode != 0 and b"Traceback" not in r.stderr
    assert r.stderr.decode().strip().splitlines()[-1].startswith("error: -: one stream on stdin")
    r = subprocess.run([str(EXE), "watch", "-", "--no-tui"], input=b"not a capture at all",
                       capture_output=True, timeout=60)  # fmt: skip
    assert r.returncode == 2 and b"Traceback" not in r.stderr
    assert b"is not a pcap or pcapng capture" in r.stderr


def test_a_stream_on_stdin_ends_the_run_at_its_end(tmp_path: Path):
    """A finished stream (here a file's bytes) is read to its end and the run ends by itself,
    every connection recorded (closed at the end, as at the end of a replay)."""
    flows = tmp_path / "f.jsonl"
    cap = (CAPTURES / "http-keepalive.pcap").read_bytes()
    r = subprocess.run([str(EXE), "watch", "-", "--no-tui", "-q", "--no-bypass", "--flows",
                        str(flows)], input=cap, capture_output=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    (rec,) = [json.loads(line) for line in flows.read_text().splitlines()]
    assert len(rec["transactions"]) == 3
    assert rec["s2c"]["bytes"] == 254205 and rec["s2c"]["gaps"] == []


def test_ctrl_c_ends_a_run_started_with_sigint_ignored():
    """A background job of a non-interactive shell starts with SIGINT ignored (CI's, a
    script's `&`): Ctrl-C must still end the run cleanly."""
    import signal

    p = subprocess.Popen(
        [str(EXE), "watch", "-", "--no-tui", "-q"],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    assert p.stdin is not None and p.stderr is not None
    p.stdin.write((CAPTURES / "vlan.pcap").read_bytes()[:24])  # a header, then nothing more
    p.stdin.flush()
    line = p.stderr.readline().decode()
    assert "ready" in line, line
    p.send_signal(signal.SIGINT)
    try:
        rc = p.wait(timeout=20)
    finally:
        p.kill()
    assert rc in (0, 130) and b"Traceback" not in p.stderr.read()


@pytest.mark.parametrize(
    "inspect", [["--no-inspect"], [], ["--bypass"]], ids=["none", "plugins", "bypass"]
)
def test_watch_without_a_view_writes_the_general_paths_records(tmp_path: Path, inspect):
    """watch without the live view keeps C's flows light and writes the lines C makes
    whole, remembering closed tuples all the same: on every shipped capture its records and
    stats are the general path's (UINET_TAP_FASTPATH=off), byte for byte."""
    captures = sorted(CAPTURES.glob("*.pcap")) + sorted(CAPTURES.glob("app/*.pcap"))
    assert len(captures) >= 10
    for cap in captures:
        outs = []
        for mode in ("off", "c"):
            flows, stats = tmp_path / f"{mode}.jsonl", tmp_path / f"{mode}.json"
            r = subprocess.run(
                [str(EXE), "watch", "-", "--no-tui", "-q", "--flows", str(flows),
                 "--stats", str(stats), *inspect],
                input=cap.read_bytes(), capture_output=True, timeout=120,
                env={**os.environ, "UINET_TAP_FASTPATH": mode},
            )  # fmt: skip
            assert r.returncode == 0, (cap.name, r.stderr)
            st = json.loads(stats.read_text())
            st.pop("capture", None)  # the run's own read times
            outs.append((flows.read_bytes(), st))
        assert outs[1] == outs[0], cap.name
        assert outs[0][0], cap.name  # not vacuous: records were written
