"""CLI input handling: `uinet-tap replay` on bad and good capture files (docs/CONTRACT.md).

Runs the console script installed next to the interpreter, in a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from frames import (  # noqa: E402
    DLT_USER0,
    Conversation,
    frames,
    pcap_bytes,
    pcapng_bytes,
    tcpflow_name,
    write_pcap,
    write_pcapng,
)

EXE = Path(sys.executable).parent / "uinet-tap"


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(EXE), "replay", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def assert_one_line_error(p: subprocess.CompletedProcess) -> None:
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("error:"), p.stderr
    assert p.stdout == ""


def json_lines(text: str) -> list[dict]:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return [json.loads(ln) for ln in lines]


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def conversation_frames(cv: Conversation, req: bytes, resp: bytes, close: bool = True):
    segs = cv.handshake() + [cv.c(req), cv.s(resp), cv.ack("c")]
    if close:
        segs += [cv.fin("c"), cv.fin("s"), cv.ack("c")]
    return frames(segs)


REQ = b"GET /index.html HTTP/1.1\r\nHost: example\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody"


@pytest.fixture
def simple_pcap(tmp_path) -> Path:
    p = tmp_path / "simple.pcap"
    write_pcap(p, conversation_frames(Conversation(), REQ, RESP))
    return p


def test_console_script_exists():
    assert EXE.exists(), EXE


# --------------------------------------------------------------------------- bad input


def test_missing_file_is_one_line_error(tmp_path):
    assert_one_line_error(cli(tmp_path / "does-not-exist.pcap", "-q"))


def test_capture_ring_beyond_what_libpcap_takes_is_refused():
    """libpcap takes the ring size as an int: a larger --buffer-size was an OverflowError
    traceback; it is refused as a bad option before any capture opens."""
    p = subprocess.run(
        [str(EXE), "watch", "lo", "--no-tui", "--buffer-size", str(1 << 40)],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr
    assert "--buffer-size" in p.stderr and "2147483647" in p.stderr, p.stderr


def test_text_file_is_not_a_capture(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("this is not a capture file\n" * 20)
    assert_one_line_error(cli(p, "-q"))


def test_unsupported_link_type_user0(tmp_path):
    p = tmp_path / "user0.pcap"
    fr = conversation_frames(Conversation(), REQ, RESP)
    write_pcap(p, fr, linktype=DLT_USER0)
    assert_one_line_error(cli(p, "-q", "--flows", "-"))


def test_unsupported_link_type_in_pcapng(tmp_path):
    p = tmp_path / "user0.pcapng"
    write_pcapng(p, conversation_frames(Conversation(), REQ, RESP), linktype=DLT_USER0)
    assert_one_line_error(cli(p, "-q"))


def test_errors_without_quiet_are_still_one_line(tmp_path):
    p = tmp_path / "garbage.pcap"
    p.write_bytes(b"\x00\x01\x02\x03" * 100)
    assert_one_line_error(cli(p))


# --------------------------------------------------------------------------- truncation


@pytest.mark.parametrize("where", ["in_record_data", "in_record_header"])
def test_truncated_capture_warns_and_keeps_what_was_read(tmp_path, where):
    cv = Conversation()
    segs = cv.handshake() + [cv.c(b"KEPT"), cv.ack("s"), cv.c(b"LOST-IN-TRUNCATION")]
    fr = frames(segs)
    raw = pcap_bytes(fr)
    last = len(fr[-1][1])
    cut = len(raw) - last // 2 if where == "in_record_data" else len(raw) - last - 8
    p = tmp_path / "truncated.pcap"
    p.write_bytes(raw[:cut])
    stats = tmp_path / "stats.json"
    r = cli(p, "-q", "--flows", "-", "--stats", stats)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    warn = [ln for ln in r.stderr.splitlines() if "warning" in ln.lower()]
    assert len(warn) == 1, r.stderr
    assert "truncated" in warn[0].lower()
    recs = json_lines(r.stdout)
    assert len(recs) == 1
    rec = recs[0]
    assert rec["client"] == "10.0.0.1:40000" and rec["server"] == "10.0.0.2:80"
    assert rec["c2s"]["bytes"] == 4
    assert rec["c2s"]["sha256"] == sha(b"KEPT")
    assert rec["close"] == "eof"
    st = json.loads(stats.read_text())
    assert st["truncated_file"] is True
    assert st["packets"] == len(fr) - 1


# --------------------------------------------------------------------------- formats


def test_pcapng_file_reconstructed(tmp_path):
    p = tmp_path / "simple.pcapng"
    write_pcapng(p, conversation_frames(Conversation(), REQ, RESP))
    r = cli(p, "-q", "--flows", "-")
    assert r.returncode == 0, r.stderr
    (rec,) = json_lines(r.stdout)
    assert rec["close"] == "fin"
    assert rec["c2s"]["sha256"] == sha(REQ) and rec["c2s"]["bytes"] == len(REQ)
    assert rec["s2c"]["sha256"] == sha(RESP) and rec["s2c"]["bytes"] == len(RESP)
    assert rec["start"] == pytest.approx(1000.0, abs=1e-5)


@pytest.mark.parametrize("byteorder,nano", [(">", False), ("<", True), (">", True)])
def test_pcap_byte_order_and_nanosecond_variants(tmp_path, byteorder, nano):
    p = tmp_path / "variant.pcap"
    write_pcap(
        p, conversation_frames(Conversation(), REQ, RESP), byteorder=byteorder, nanosecond=nano
    )
    r = cli(p, "-q", "--flows", "-")
    assert r.returncode == 0, r.stderr
    (rec,) = json_lines(r.stdout)
    assert rec["c2s"]["sha256"] == sha(REQ)
    assert rec["s2c"]["sha256"] == sha(RESP)
    assert rec["start"] == pytest.approx(1000.0, abs=1e-5)
    assert rec["end"] == pytest.approx(1000.008, abs=1e-5)


# --------------------------------------------------------------------------- outputs


def test_flows_stdout_is_json_lines_only(tmp_path):
    # no -q: the progress bar and the summary must go to stderr, never stdout
    fr = conversation_frames(Conversation(cport=40001), REQ, RESP)
    fr += conversation_frames(Conversation(cport=40002, t0=1001.0), b"second", b"reply")
    p = tmp_path / "two.pcap"
    write_pcap(p, fr)
    r = cli(p, "--flows", "-")
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines()]
    assert len(lines) == 2, r.stdout
    recs = [json.loads(ln) for ln in lines]
    assert all(isinstance(x, dict) for x in recs)
    assert {x["client"] for x in recs} == {"10.0.0.1:40001", "10.0.0.1:40002"}
    for x in recs:
        assert set(x) >= {
            "id",
            "client",
            "server",
            "midstream",
            "vlan",
            "start",
            "end",
            "close",
            "c2s",
            "s2c",
            "anomalies",
        }
        for d in ("c2s", "s2c"):
            assert "data" not in x[d]
            assert set(x[d]) >= {
                "bytes",
                "sha256",
                "gaps",
                "packets",
                "retransmitted_bytes",
                "overlap_conflicts",
            }


def test_stats_stdout_is_one_json_object(simple_pcap):
    r = cli(simple_pcap, "-q", "--stats", "-")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["connections"] == 1
    assert st["packets"] == 9 and st["tcp_packets"] == 9
    assert st["truncated_file"] is False
    assert st["gaps"] == 0


def test_overlap_policy_option_reaches_the_engine(tmp_path):
    cv = Conversation()
    segs = cv.handshake() + [cv.c(b"GOOD", rel=0), cv.c(b"EVIL", rel=0), cv.ack("s")]
    p = tmp_path / "overlap.pcap"
    write_pcap(p, frames(segs))
    for policy, want in (("first", b"GOOD"), ("last", b"EVIL")):
        r = cli(p, "-q", "--flows", "-", "--overlap-policy", policy)
        assert r.returncode == 0, r.stderr
        (rec,) = json_lines(r.stdout)
        assert rec["c2s"]["sha256"] == sha(want), policy
        assert rec["c2s"]["overlap_conflicts"] == 1


def test_export_dir_tcpflow_names_hashes_and_flows_jsonl(tmp_path):
    a = Conversation(cisn=1000, sisn=5000, t0=1000.0)
    b = Conversation(cisn=77_000_000, sisn=99_000_000, t0=1001.0)  # same tuple, reused
    fr = conversation_frames(a, REQ, RESP) + conversation_frames(b, b"again", b"re-reply")
    p = tmp_path / "reuse.pcap"
    write_pcap(p, fr)
    out = tmp_path / "out"
    r = cli(p, "-q", "--export", out)
    assert r.returncode == 0, r.stderr
    recs = json_lines((out / "flows.jsonl").read_text())
    assert len(recs) == 2
    recs.sort(key=lambda x: x["id"])
    c2s_name = tcpflow_name("10.0.0.1", 40000, "10.0.0.2", 80)
    s2c_name = tcpflow_name("10.0.0.2", 80, "10.0.0.1", 40000)
    assert c2s_name == "010.000.000.001.40000-010.000.000.002.00080"
    assert s2c_name == "010.000.000.002.00080-010.000.000.001.40000"
    first, second = recs
    assert first["c2s"]["file"] == c2s_name
    assert first["s2c"]["file"] == s2c_name
    # the reused tuple gets the same base name plus a suffix (tcpflow: "c1")
    for d, base in (("c2s", c2s_name), ("s2c", s2c_name)):
        f2 = second[d]["file"]
        assert f2 != base and f2.startswith(base), f2
    expected = {
        (0, "c2s"): REQ,
        (0, "s2c"): RESP,
        (1, "c2s"): b"again",
        (1, "s2c"): b"re-reply",
    }
    for (i, d), data in expected.items():
        rel = recs[i][d]["file"]
        assert not Path(rel).is_absolute()
        content = (out / rel).read_bytes()
        assert content == data
        assert sha(content) == recs[i][d]["sha256"]
        assert len(content) == recs[i][d]["bytes"]


def test_export_file_gap_bytes_are_zeros(tmp_path):
    cv = Conversation()
    segs = cv.handshake() + [cv.c(b"A" * 10)]
    cv.c(b"B" * 10)  # never captured
    segs += [cv.c(b"C" * 10), cv.ack("s"), cv.s(b"ok"), cv.ack("c")]
    p = tmp_path / "gap.pcap"
    write_pcap(p, frames(segs))
    out = tmp_path / "out"
    r = cli(p, "-q", "--export", out)
    assert r.returncode == 0, r.stderr
    (rec,) = json_lines((out / "flows.jsonl").read_text())
    content = (out / rec["c2s"]["file"]).read_bytes()
    assert content == b"A" * 10 + bytes(10) + b"C" * 10
    assert rec["c2s"]["gaps"] == [[10, 10]]
    assert sha(content) == rec["c2s"]["sha256"]


def test_flows_to_file_path(tmp_path, simple_pcap):
    dest = tmp_path / "flows.jsonl"
    r = cli(simple_pcap, "-q", "--flows", dest)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    (rec,) = json_lines(dest.read_text())
    assert rec["c2s"]["sha256"] == sha(REQ)
    assert rec["client"] == "10.0.0.1:40000"


def test_linktype_recorded_in_pcap_header_is_used(tmp_path):
    # same conversation as raw IP (DLT 101): no Ethernet header in the frames
    cv = Conversation()
    segs = cv.handshake() + [cv.c(REQ), cv.s(RESP), cv.ack("c")]
    p = tmp_path / "raw.pcap"
    write_pcap(p, [(s.ts, s.l3()) for s in segs], linktype=101)
    r = cli(p, "-q", "--flows", "-")
    assert r.returncode == 0, r.stderr
    (rec,) = json_lines(r.stdout)
    assert rec["c2s"]["sha256"] == sha(REQ)


# -- diagnostics: -v / --log-level ------------------------------------------------------------

CAPTURES = Path(__file__).resolve().parents[1] / "captures"


@pytest.mark.parametrize("where", ["before the command", "after it"])
def test_verbose_logs_debug_lines_on_stderr_and_changes_nothing_else(tmp_path, where):
    """-v: info and debug lines on stderr (the input, the outputs, the plugins and where
    from, closes by reason); the records and stdout are those of a run without it."""
    flows, flows_v = tmp_path / "plain.jsonl", tmp_path / "verbose.jsonl"
    capture = CAPTURES / "many-short.pcap"
    plain = cli(capture, "--flows", flows, "-q")
    argv = [str(EXE), "-v", "replay"] if where == "before the command" else [str(EXE), "replay"]
    argv += [str(capture), "--flows", str(flows_v), "-q"]
    if where == "after it":
        argv.append("-v")
    verbose = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL)  # fmt: skip
    assert plain.returncode == verbose.returncode == 0, verbose.stderr
    assert plain.stderr == "" and plain.stdout == verbose.stdout == ""
    lines = verbose.stderr.splitlines()
    assert lines and all(x.startswith(("debug: ", "info: ")) for x in lines), lines
    assert f"debug: input {capture}" in lines
    assert f"info: input {capture}: 1 file(s), link type 1, 630,080 bytes" in lines
    assert f"info: writing flow records to {flows_v}" in lines
    assert "info: plugins: 18 loaded (18 built-in detectors)" in lines
    # the capture's 40 connections all end with both FINs (captures/README.md)
    assert "info: connections closed by reason: fin 40" in lines
    assert flows.read_bytes() == flows_v.read_bytes()


def test_log_level_info_leaves_debug_out(tmp_path):
    p = cli(CAPTURES / "many-short.pcap", "-q", "--log-level", "INFO")
    assert p.returncode == 0
    lines = p.stderr.splitlines()
    assert lines and all(x.startswith("info: ") for x in lines), lines


@pytest.mark.parametrize("level", ["bad", "verbose", ""])
def test_an_unknown_log_level_is_one_line_error(level):
    p = cli(CAPTURES / "many-short.pcap", "-q", "--log-level", level)
    assert_one_line_error(p)
    assert "--log-level" in p.stderr and "debug, info, warning or error" in p.stderr


def test_a_time_past_year_9999_is_recorded_not_a_crash(tmp_path):
    """A pcapng interface's if_tsoffset may put its packets billions of years out (found by
    the fuzzer): the record and the EVE event give the time as the calendar has it, a year
    of more than four digits, and the run ends normally."""
    plain = pcapng_bytes(conversation_frames(Conversation(), REQ, RESP))
    shb_len = struct.unpack_from("<I", plain, 4)[0]
    idb_len = struct.unpack_from("<I", plain, shb_len + 4)[0]
    idb = plain[shb_len : shb_len + idb_len]
    body = idb[8:-4]
    # if_tsoffset (option 14): 5 * 10**18 seconds added to every timestamp
    body = body[:8] + struct.pack("<HHq", 14, 8, 5 * 10**18) + body[8:]
    idb = struct.pack("<II", 1, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))
    path = tmp_path / "far.pcapng"
    path.write_bytes(plain[:shb_len] + idb + plain[shb_len + idb_len :])
    eve = tmp_path / "eve.json"
    p = cli(path, "--flows", "-", "--eve", eve, "-q")
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    (rec,) = json_lines(p.stdout)
    year = rec["timestamp"].split("-", 1)[0]
    assert len(year) > 4 and rec["timestamp"].endswith("+0000"), rec["timestamp"]
    assert rec["c2s"]["sha256"] == sha(REQ) and rec["s2c"]["sha256"] == sha(RESP)
    flows = [e for e in json_lines(eve.read_text()) if e["event_type"] == "flow"]
    assert flows and all(e["timestamp"].split("-", 1)[0] == year for e in flows)
