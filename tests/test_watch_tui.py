"""`uinet-tap watch` in a real terminal (tmux) on a veth in a network namespace, while curl
fetches from python's http.server: the flow appears with its protocol and bytes; sorting,
filtering, pause and the detail view work; q quits; the flow records are complete."""

from __future__ import annotations

import json
import re
import shutil
import struct
import sys
import time
from pathlib import Path

import pytest

from uinet_tap.replay_view import CHUNK

sys.path.insert(0, str(Path(__file__).resolve().parent))
from netnslib import NetnsSession, Tmux, netns_available, web_pair  # noqa: E402

BIN = Path(sys.executable).parent
# pytest exports COLUMNS=80 and LINES=24, which rich would take over the tmux window's size
SIZED = "env -u COLUMNS -u LINES"
pytestmark = pytest.mark.netns


def _age(text: str) -> float:
    """A Seen cell ("1.7s", "17s", "2m", "1h") in seconds."""
    m = re.fullmatch(r"([\d.]+)([smh])", text)
    assert m, text
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]


def _row(screen: str, needle: str) -> str:
    return next((line for line in screen.splitlines() if needle in line), "")


def test_watch_live_view_in_tmux_on_real_traffic(tmp_path: Path):
    ok, why = netns_available()
    if not ok:
        pytest.skip(f"needs network namespaces: {why}")
    for prog in ("tmux", "curl"):
        if shutil.which(prog) is None:
            pytest.skip(f"needs {prog}")
    www = tmp_path / "www"
    www.mkdir()
    body = bytes(range(256)) * 800  # 204,800 bytes
    (www / "blob.bin").write_bytes(body)
    flows = tmp_path / "flows.jsonl"
    with NetnsSession("tui") as s, Tmux("tui") as term:
        web = web_pair(s, "utc0", "uts0", "10.91.0", www)
        term.start(f"ip netns exec {web.client_ns} {SIZED} {BIN / 'uinet-tap'} watch utc0 "
                   f"--no-bypass --flows {flows} -q")  # fmt: skip
        term.wait(lambda t: "utc0" in t, "the live view")
        web.fetch("blob.bin", tmp_path / "got")
        assert (tmp_path / "got").read_bytes() == body
        screen = term.wait(lambda t: "http" in t and "10.91.0.1" in t, "the flow")
        assert "10.91.0.2:8000" in screen
        # sort by bytes (key 7), twice to reverse: the view stays up, the flow stays
        term.keys("7")
        term.keys("7")
        term.wait(lambda t: "http" in t, "the flow after sorting")
        # a filter that matches nothing, then one that matches the flow
        term.keys("/", "nomatch-xyz", "Enter")
        term.wait(lambda t: "10.91.0.1:" not in t, "the filter to hide the flow")
        term.keys("Escape")
        term.keys("/", "8000", "Enter")
        term.wait(lambda t: "10.91.0.1:" in t, "the filter to show the flow")
        # pause and resume
        term.keys("p")
        term.wait(lambda t: "PAUSED" in t, "PAUSED")
        term.keys("p")
        term.wait(lambda t: "PAUSED" not in t, "resume")
        # the detail view: both directions' early bytes, as hex and ASCII
        term.keys("Home", "Enter")
        detail = term.wait(lambda t: "GET /blob.bin" in t or "47 45 54" in t,
                           "the detail view")  # fmt: skip
        assert "200" in detail
        term.keys("Escape")
        # curl is done: the flow is over, not active; its age keeps moving with the clock
        # while no packet comes (two screens some seconds apart)
        screen = term.wait(lambda t: " flows 0 active" in t and "8000" in t,
                           "the header to count the closed flow apart")  # fmt: skip
        first = _age(_row(screen, "10.91.0.2:8000").split()[-1])
        later = term.wait(
            lambda t: _age(_row(t, "10.91.0.2:8000").split()[-1]) >= first + 2,
            "the Seen column to move",
        )
        line = _row(later, "10.91.0.2:8000")
        assert "http" in line and ("CLOSED" in line or "FIN" in line), line
        # ? shows the legend of every column and flag; Esc goes back
        term.keys("?")
        legend = term.wait(lambda t: "Legend" in t, "the legend")
        assert "G gaps" in legend and "B bypassed" in legend and "mid-stream" in legend
        term.keys("Escape")
        term.wait(lambda t: "10.91.0.2:8000" in t, "the table again")
        term.keys("q")
        done = term.wait_exit("watch to exit")
        assert "EXITED=0" in done, done
    records = [json.loads(line) for line in flows.read_text().splitlines()]
    http = [r for r in records if r["server"] == "10.91.0.2:8000"]
    assert len(http) == 1, records
    rec = http[0]
    assert rec["protocol"] == "http" and rec["findings"]["path"] == "/blob.bin"
    assert rec["s2c"]["payload_bytes"] > len(body)  # headers + body
    assert rec["client"].startswith("10.91.0.1:")


@pytest.mark.parametrize("speed", ["0", "50"])
def test_replay_tui_shows_the_file_and_quits(tmp_path: Path, speed: str):
    if shutil.which("tmux") is None:
        pytest.skip("needs tmux")
    flows = tmp_path / "flows.jsonl"
    capture = Path(__file__).resolve().parents[1] / "captures" / "http-keepalive.pcap"
    cmd = f"{BIN / 'uinet-tap'} replay {capture} --tui --speed {speed} --flows {flows} -q"
    with Tmux("rtui") as term:
        term.start(cmd)
        screen = term.wait(lambda t: "http" in t and "10.99.0.2:8080" in t, "the flow")
        assert "10.99.0.1:41000" in screen
        term.keys("q")
        done = term.wait_exit("replay to exit")
        assert "EXITED=0" in done, done
    (rec,) = [json.loads(line) for line in flows.read_text().splitlines()]
    assert rec["protocol"] == "http" and rec["close"] == "fin"


@pytest.mark.parametrize(("key", "said"), [("q", "stopped at q"), ("C-c", "interrupted")])
def test_replay_tui_q_before_the_end_of_the_file_exits_130_and_says_how_far(
    tmp_path: Path, key: str, said: str
):
    """q (or Ctrl-C, alike) while the file is still being read (paced at 1/10,000 of capture
    time, the 66 ms of many-short.pcap take 11 minutes): exit 130, one line saying how far it
    got, every record written and valid, the summary's read time apart from the view's."""
    if shutil.which("tmux") is None:
        pytest.skip("needs tmux")
    flows, err = tmp_path / "flows.jsonl", tmp_path / "stderr.txt"
    capture = Path(__file__).resolve().parents[1] / "captures" / "many-short.pcap"
    cmd = (f"{BIN / 'uinet-tap'} replay {capture} --tui --speed 0.0001 --flows {flows} "
           f"2>{err}")  # fmt: skip
    with Tmux("rq") as term:
        term.start(cmd)
        term.wait(lambda t: "10.99.0.2:7000" in t, "the first flows")
        term.keys(key)
        done = term.wait_exit("replay to exit")
        assert "EXITED=130" in done, done
    records = [json.loads(line) for line in flows.read_text().splitlines()]
    assert 0 < len(records) < 40  # the capture has 40 connections
    lines = err.read_text().splitlines()
    stopped = [line for line in lines if line.startswith(f"{said}: ")]
    assert len(stopped) == 1, lines
    m = re.fullmatch(rf"{said}: (\d+) connections, ([\d,]+) packets read "
                     r"\((\d+)% of the file\); every record written", stopped[0])  # fmt: skip
    assert m is not None, stopped
    assert int(m[1]) == len(records)
    assert 0 < int(m[2].replace(",", "")) < 1068 and int(m[3]) < 100  # 1,068 in the file
    assert "Traceback" not in err.read_text()
    read = re.search(r"read in\s+([\d.]+) s .*; view open ([\d.]+) s", err.read_text())
    assert read is not None, lines
    assert float(read[1]) < float(read[2])  # the pacing waits and the user's time are apart


def test_replay_tui_summary_leaves_the_time_after_the_end_out_of_the_rate(tmp_path: Path):
    """q after the end of the file: exit 0, no "stopped" line, and the summary's read time is
    the file's, the view's open time said apart."""
    if shutil.which("tmux") is None:
        pytest.skip("needs tmux")
    err = tmp_path / "stderr.txt"
    capture = Path(__file__).resolve().parents[1] / "captures" / "http-keepalive.pcap"
    cmd = f"{BIN / 'uinet-tap'} replay {capture} --tui 2>{err}"
    with Tmux("rs") as term:
        term.start(cmd)
        # "0 active": the file's one connection ended, so the end of the file was read
        term.wait(lambda t: "10.99.0.2:8080" in t and " 0 active" in t, "the file's end")
        term.keys("q")
        done = term.wait_exit("replay to exit")
        assert "EXITED=0" in done, done
    read, viewed = _read_and_view_times(err)
    assert read < viewed


def _read_and_view_times(err: Path) -> tuple[float, float]:
    """The summary's read time and view-open time, from a clean run's stderr."""
    text = err.read_text()
    assert "stopped" not in text and "Traceback" not in text, text
    read = re.search(r"read in\s+([\d.]+) s\s+\(([\d,]+) packets/s\); view open ([\d.]+) s",
                     text)  # fmt: skip
    assert read is not None, text
    return float(read[1]), float(read[3])


def _paced_seconds(pcap: Path, speed: float) -> float:
    """The least time --speed waits over the file, from its packets' times read off the
    classic pcap headers here (not by the tool): the tool paces each run of CHUNK frames by
    its first, so the wait lasts at least to the earliest of the last CHUNK frames."""
    data = pcap.read_bytes()
    order = {b"\xd4\xc3\xb2\xa1": "<", b"\x4d\x3c\xb2\xa1": "<",
             b"\xa1\xb2\xc3\xd4": ">", b"\xa1\xb2\x3c\x4d": ">"}[data[:4]]  # fmt: skip
    frac = 1e-9 if data[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1e-6
    times, off = [], 24
    while off + 16 <= len(data):
        sec, sub, incl, _ = struct.unpack(order + "IIII", data[off : off + 16])
        times.append(sec + sub * frac)
        off += 16 + incl
    return (min(times[-CHUNK:]) - times[0]) / speed


def test_replay_tui_pause_holds_the_file_and_is_view_time_not_read_time(tmp_path: Path):
    """p mid-file (many-short.pcap paced at 1/100 of capture time: 6.6 s) for 3 s, then p
    again: the replay stood still while paused (the end of the file comes no sooner than the
    paced file plus the pause, by the test's own clock), and the summary's read time leaves
    the pause out (under the pause's length) while the view's open time covers it."""
    if shutil.which("tmux") is None:
        pytest.skip("needs tmux")
    err = tmp_path / "stderr.txt"
    capture = Path(__file__).resolve().parents[1] / "captures" / "many-short.pcap"
    speed = 0.01
    paced = _paced_seconds(capture, speed)
    assert paced > 5  # time enough to press p mid-file
    cmd = f"{SIZED} {BIN / 'uinet-tap'} replay {capture} --tui --speed {speed} 2>{err}"
    started = time.monotonic()  # before the tool starts: its reading starts later
    with Tmux("rp") as term:
        term.start(cmd)
        term.wait(lambda t: "10.99.0.2:7000" in t, "the first flows")
        term.keys("p")
        held_from = time.monotonic()
        screen = term.wait(lambda t: "PAUSED" in t, "PAUSED")
        assert "/ 40 total" not in screen or " 0 active" not in screen  # mid-file
        time.sleep(3.0)
        term.keys("p")
        held = time.monotonic() - held_from  # at least the pause the tool saw, and a bit
        term.wait(lambda t: "PAUSED" not in t, "resume")
        term.wait(lambda t: "/ 40 total" in t and " 0 active" in t, "the file's end",
                  timeout=paced + 20)  # fmt: skip
        # the key's way to the tool (tmux, a poll every 50 ms) is the margin
        assert time.monotonic() - started >= paced + held - 0.5
        term.keys("q")
        done = term.wait_exit("replay to exit")
        assert "EXITED=0" in done, done
    read, viewed = _read_and_view_times(err)
    assert read < 3.0 <= viewed
    assert viewed >= paced + 3.0 - 0.5


CUT_AFTER_FIRST_MB = """
from uinet_tap.plugins import Plugin, Verdict

class CutAfterFirstMegabyte(Plugin):
    name = "cut-after-1mb"

    def decide(self, flow):
        return Verdict.INTERCEPT if flow.s2c_bytes >= 1_000_000 else Verdict.NEED_MORE
"""


def test_inline_live_view_shows_a_cut_in_while_it_runs(topology, tmp_path: Path):
    """`uinet-tap inline --tui` in tmux, client -- tool -- server: a paced download is cut
    into after its first megabyte; the view lists it as intercepted while it runs; q ends
    the tool, the file is exact and the record says what happened."""
    for prog in ("tmux", "curl"):
        if shutil.which(prog) is None:
            pytest.skip(f"needs {prog}")
    t = topology()
    www = tmp_path / "www"
    www.mkdir()
    body = bytes(range(256)) * 4096 * 8  # 8 MiB
    (www / "big.bin").write_bytes(body)
    url = t.http_server(www)
    plugin = tmp_path / "cut.py"
    plugin.write_text(CUT_AFTER_FIRST_MB)
    flows = tmp_path / "flows.jsonl"
    cmd = (f"ip netns exec {t.tool_ns} {BIN / 'uinet-tap'} inline {t.if_a} {t.if_b} --tui "
           f"--plugin-file {plugin} --flows {flows} -q")  # fmt: skip
    with Tmux("itui") as term:
        term.start(cmd)
        term.wait(lambda s: "inline" in s, "the live view")
        t.wait_path(10)
        got = tmp_path / "got"
        curl = t.popen("client", "curl", "-s", "--limit-rate", "1M", "-o", str(got),
                       f"{url}/big.bin")  # fmt: skip
        screen = term.wait(lambda s: "intercept" in s and "http" in s, "the cut-in")
        assert "10.77.0.2:8080" in screen
        assert curl.wait(60) == 0
        term.keys("q")
        done = term.wait_exit("inline to exit")
        assert "EXITED=0" in done, done
    assert got.read_bytes() == body
    (rec,) = [json.loads(line) for line in flows.read_text().splitlines()
              if '"10.77.0.2:8080"' in line]  # fmt: skip
    assert rec["verdict"] == "intercept" and rec["decided_by"] == "cut-after-1mb"


def _expected_connections(*names: str) -> int:
    captures = Path(__file__).resolve().parents[1] / "captures"
    return sum(len(json.loads((captures / n).read_text())["connections"]) for n in names)


def test_replay_tui_keeps_every_flow_and_its_first_bytes(tmp_path: Path):
    """Three captures made at different times (40 short connections, then SMTP, then HTTP)
    replayed as one under the view: at the end every connection is listed, an ended flow's
    detail shows the bytes it carried (the SMTP greeting and EHLO of the capture's making),
    field filters narrow the list to the expected flows."""
    if shutil.which("tmux") is None:
        pytest.skip("needs tmux")
    names = ("many-short", "app/smtp", "app/http")
    total = _expected_connections(*(f"{n}.expected.json" for n in names))
    assert total == 42
    root = Path(__file__).resolve().parents[1] / "captures"
    files = " ".join(str(root / f"{n}.pcap") for n in names)
    flows = tmp_path / "flows.jsonl"
    cmd = f"{SIZED} {BIN / 'uinet-tap'} replay {files} --tui --flows {flows} -q"
    with Tmux("rall") as term:
        term.start(cmd)
        screen = term.wait(lambda t: f"listing {total} of {total}" in t, "every flow")
        assert f"0 active · {total} ended / {total} total" in screen
        # field filters: the SMTP flow alone, then the 40 short ones
        term.keys("/", "proto:smtp port:25", "Enter")
        screen = term.wait(lambda t: f"listing 1 of {total}" in t, "proto:smtp")
        assert "10.77.0.2:25" in screen and "10.99.0.2:7000" not in screen
        # the ended SMTP flow's detail: its first bytes each way, as hex and ASCII
        term.keys("Home", "Enter")
        detail = term.wait(lambda t: "Flow #" in t, "the detail view")
        assert "ended" in detail
        greeting = b"220 localhost Py"  # aiosmtpd 1.4.6's greeting, first 16 bytes
        assert " ".join(f"{b:02x}" for b in greeting) in detail
        assert greeting.decode() in detail
        assert "EHLO client.test" in detail.replace("\n", "")  # swaks --helo client.test
        assert re.search(r"server → client\s+first [1-9]", detail)
        term.keys("Escape")
        term.keys("Escape")  # clears the filter
        term.keys("/", "port:7000 state:FIN", "Enter")
        screen = term.wait(lambda t: f"listing 40 of {total}" in t, "port:7000")
        assert "10.77.0.2" not in screen
        # a bad term: a one-line error in the prompt, the view goes on
        term.keys("/", "C-u", " colour:red", "Enter")
        term.wait(lambda t: "unknown field 'colour'" in t, "the filter's error")
        term.keys("Escape")
        term.keys("q")
        done = term.wait_exit("replay to exit")
        assert "EXITED=0" in done, done
    assert len(flows.read_text().splitlines()) == total


def test_replay_tui_keep_ended_bounds_the_list_and_says_so(tmp_path: Path):
    """--keep-ended 30 on the same 42 connections: the 30 that ended last are listed (the
    SMTP and HTTP flows, which came after the 40 short ones) and the header counts 12 dropped."""
    if shutil.which("tmux") is None:
        pytest.skip("needs tmux")
    root = Path(__file__).resolve().parents[1] / "captures"
    files = " ".join(str(root / f"{n}.pcap") for n in ("many-short", "app/smtp", "app/http"))
    cmd = f"{SIZED} {BIN / 'uinet-tap'} replay {files} --tui --keep-ended 30 -q"
    with Tmux("rcap") as term:
        term.start(cmd)
        screen = term.wait(lambda t: "/ 42 total" in t and "0 active" in t, "the end")
        assert "30 ended (12 dropped from the list) / 42 total" in screen
        assert "listing 30 of 30" in screen
        term.keys("/", "proto:smtp", "Enter")
        term.wait(lambda t: "listing 1 of 30" in t and "10.77.0.2:25" in t, "smtp")
        term.keys("Escape", "q")
        done = term.wait_exit("replay to exit")
        assert "EXITED=0" in done, done
