"""The live view (uinet_tap/tui.py): rendering from synthetic snapshots, key handling, the
terminal set-up on a pty, and a real run under tmux driven by tests/tui_driver.py."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console
from rich.segment import Segment

from uinet_tap.tui import LiveView, parse_keys, sparkline

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tui_driver import HTTP_REQ, HTTP_RESP, SSH_C, SSH_S, T0, snapshot_at  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DRIVER = ROOT / "tests" / "tui_driver.py"


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make_view(ticks: int = 10, flows: int = 5) -> tuple[LiveView, FakeClock]:
    """A view that has seen `ticks` snapshots, 0.1 s apart (by its clock and by capture time)."""
    clock = FakeClock()
    view = LiveView(title="eth0", clock=clock)
    for i in range(ticks):
        clock.t = i * 0.1
        view.update(snapshot_at(i, flows))
    return view, clock


def screen(view: LiveView, width: int = 120, height: int = 40) -> str:
    console = Console(
        record=True, width=width, height=height, file=io.StringIO(), color_system=None
    )
    console.print(view.render(None, width, height))
    return console.export_text()


def lines_of(view: LiveView, width: int = 120, height: int = 40) -> list[list[Segment]]:
    console = Console(width=width, height=height, file=io.StringIO(), color_system="truecolor")
    options = console.options.update_dimensions(width, height)
    return console.render_lines(view.render(None, width, height), options)


def table_ids(text: str) -> list[int]:
    """Flow ids of the table rows, top to bottom."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"\s*ID\b", line))
    ids = []
    for line in lines[start + 1 :]:
        m = re.match(r"\s*(\d+) ", line)
        if not m:
            break
        ids.append(int(m.group(1)))
    return ids


def row_line(text: str, flow_id: int) -> str:
    return next(line for line in text.splitlines() if re.match(rf"\s*{flow_id} ", line))


def press(view: LiveView, *keys: str) -> bool:
    quit_ = False
    for key in keys:
        quit_ = view.handle_key(key) or quit_
    return quit_


# ---------------------------------------------------------------------------------------------
# layout


@pytest.mark.parametrize("width,height", [(80, 24), (200, 50), (120, 40), (60, 15), (40, 10)])
def test_fits_the_terminal(width: int, height: int) -> None:
    view, _ = make_view(flows=30)
    text = screen(view, width, height)
    lines = text.splitlines()
    assert len(lines) == height
    assert max(len(line) for line in lines) <= width
    assert "quit" in lines[-1]  # the help line is the last line
    ids = table_ids(text)
    if height >= 30 + 7:
        assert len(ids) == 30
        assert "more" not in text
    else:
        assert ids and len(ids) < 30
        assert f"… {30 - len(ids)} more" in text


def test_totals_under_the_table_follow_the_filter() -> None:
    view, _ = make_view(ticks=1)  # tick 0: the driver's own byte counts
    line = next(x for x in screen(view).splitlines() if x.startswith(" total "))
    c2s = 517 + len(HTTP_REQ) + len(SSH_C) + 0 + 60  # flows 1..5 as the driver makes them
    s2c = 4096 + len(HTTP_RESP) + len(SSH_S) + 0 + 180
    assert (c2s, s2c) == (670, 4366)
    assert f"total 5 flows listed  c→s 670B  s→c 4.4KB  ({c2s:,} / {s2c:,} bytes)" in line
    press(view, "/", *"proto:tls", "enter")
    line = next(x for x in screen(view).splitlines() if x.startswith(" total "))
    assert "total 1 flow listed" in line and "(517 / 4,096 bytes)" in line


def test_sparkline_scales_to_its_peak() -> None:
    hist = [(0.0, 0, 0), (1.0, 100, 0), (2.0, 300, 0), (3.0, 300, 0)]
    assert sparkline(hist, 1, 10) == ("▅█▁", 200.0)
    assert sparkline(hist, 2, 10) == ("▁▁▁", 0.0)
    assert sparkline(hist, 1, 2) == ("█▁", 200.0)  # the latest that fit


def test_detail_shows_bytes_over_time() -> None:
    """Flow 1 sends 1,000 B/s for 5 s, then nothing for 3 s: its detail's sparkline rises,
    then falls to the floor; the peak is said."""
    clock = FakeClock()
    view = LiveView(clock=clock)
    snap = snapshot_at(0)
    for i in range(9):
        clock.t = float(i)
        sent = 1000 * min(i, 5)
        flows = (replace(snap.flows[0], c2s_bytes=sent, last_seen=T0 + min(i, 5)),)
        view.update(replace(snap, now=T0 + i, flows=flows))
    press(view, "enter")
    line = next(x for x in screen(view, 120, 60).splitlines() if "bytes/s →" in x)
    assert "█████▁▁▁" in line and "peak 1.0KB/s over 8s" in line


def test_top_names_and_servers_of_the_listed_flows() -> None:
    view, _ = make_view(ticks=1, flows=8)  # flows 100-102: more HTTP to 10.0.0.80:80
    press(view, "t")
    lines = [x.strip() for x in screen(view, 120, 40).splitlines()]
    servers = lines.index("bytes   flows  servers")
    assert lines[servers + 1 : servers + 5] == [
        "4.6KB       1  93.184.216.34:443",
        "520B       4  10.0.0.80:80",  # 4 x (72 + 58)
        "240B       1  10.0.0.25:25",
        "53B       1  192.168.1.1:22",
    ]
    names = lines.index("bytes   flows  names (TLS SNI, HTTP Host)")
    assert lines[names + 1] == "4.6KB       1  secure.example.org"
    assert "130B       1  shop.example.com" in lines[names + 2 : servers]
    press(view, "esc", "/", *"proto:http", "enter", "t")  # the top follows the filter
    text = screen(view, 120, 40)
    assert "of 4 flows listed" in text and "93.184.216.34" not in text
    press(view, "t")
    assert table_ids(screen(view, 120, 40))


def test_header_counters_and_rates() -> None:
    view, _ = make_view()
    text = screen(view, 200, 50)
    first = text.splitlines()[0]
    assert "eth0" in first
    assert "370 pkt/s" in first  # 37 packets per 0.1 s
    assert "4.00 Mbit/s" in first  # 50 kB per 0.1 s
    assert "5 active / 17 total" in text
    assert "kernel 0" in text and "iface 1" in text
    assert "undecodable 2" in text and "plugin errors 0" in text
    # flow 1 grows 100 B/tick client→server and 1000 B/tick server→client: 1 kB/s and 10 kB/s
    assert "1.0K/10K" in row_line(text, 1)


def test_columns_at_full_width() -> None:
    view, _ = make_view()
    text = screen(view, 200, 50)
    header = next(line for line in text.splitlines() if re.match(r"\s*ID\b", line))
    for name in ("State", "Client", "Server", "VLAN", "Proto", "Info", "Verdict", "Bytes", "Rate"):
        assert name in header
    assert "Dur" in header and "Seen" in header
    tls = row_line(text, 1)
    assert "10.0.0.5:51000" in tls and "93.184.216.34:443" in tls
    assert "tls" in tls and "secure.example.org" in tls
    assert "would-intercept (hosts)" in tls
    assert "100" in row_line(text, 2)  # VLAN
    assert "10.20" in row_line(text, 4)  # QinQ stack


def test_guessed_midstream_gaps_and_undecided_are_marked() -> None:
    view, _ = make_view()
    text = screen(view, 200, 50)
    ssh = row_line(text, 3)
    assert "ssh?" in ssh  # guessed protocol
    assert "EST*" in ssh  # picked up mid-stream
    assert re.search(r"EST\*\s+G\s", ssh)  # gap flag
    assert "G" not in row_line(text, 1).split()[2:3]
    assert "ssh?" not in row_line(text, 1) and "tls?" not in row_line(text, 1)
    syn = row_line(text, 4)
    assert "…" in syn  # protocol and verdict still undecided
    assert " B " in row_line(text, 5)  # bypassed


def test_narrow_terminal_drops_low_priority_columns() -> None:
    view, _ = make_view()
    wide = screen(view, 200, 30)
    narrow = screen(view, 60, 30)
    header = next(line for line in narrow.splitlines() if re.match(r"\s*ID\b", line))
    assert "Client" in header and "Server" in header and "Proto" in header
    assert "Dur" not in header and "VLAN" not in header
    assert "Dur" in wide
    assert "10.0.0.5:51000" in row_line(narrow, 1)  # addresses are kept whole when possible


# ---------------------------------------------------------------------------------------------
# keys


def test_sorting_by_digits_and_cycling() -> None:
    view, _ = make_view()
    assert table_ids(screen(view)) == [5, 4, 3, 2, 1]  # default: rate, biggest first
    press(view, "1")
    assert table_ids(screen(view)) == [1, 2, 3, 4, 5]
    assert "ID▲" in screen(view)
    press(view, "1")  # again: reversed
    assert table_ids(screen(view)) == [5, 4, 3, 2, 1]
    assert "ID▼" in screen(view)
    press(view, "3")  # client address: 10.0.0.5 (1, 2), 10.0.0.9 (5), 192.168.1.20 (3), v6 (4)
    assert table_ids(screen(view)) == [1, 2, 5, 3, 4]
    press(view, "r")
    assert table_ids(screen(view)) == [4, 3, 5, 2, 1]
    press(view, "6")  # verdict: pass, would-block, would-intercept, undecided last
    assert table_ids(screen(view))[:3] == [2, 5, 1]
    press(view, "s")  # next sort column after verdict: bytes
    assert view.sort_key == "bytes"
    assert table_ids(screen(view)) == [5, 4, 3, 2, 1]


def test_filter_prompt_apply_cancel_clear() -> None:
    view, _ = make_view()
    press(view, "/", "s", "h", "o")
    assert "filter: sho" in screen(view).splitlines()[-1]  # the prompt shows what is typed
    assert not press(view, "q")  # typed into the prompt, does not quit
    press(view, "backspace", "p")  # "shop"; "p" is text here, not pause
    assert not view.paused
    press(view, "enter")
    text = screen(view)
    assert table_ids(text) == [2]
    assert "listing 1 of 5" in text and "“shop”" in text
    press(view, "/", "x", "esc")  # cancelled: the old filter stays
    assert view.filter == "shop" and table_ids(screen(view)) == [2]
    press(view, "esc")  # clears the filter
    assert table_ids(screen(view)) == [5, 4, 3, 2, 1]
    for query, expected in [
        ("block", [5]),  # verdict
        ("ssh", [3]),  # protocol
        ("10.0.0.25", [5]),  # server
        ("192.168", [3]),  # client
        ("example", [5, 2, 1]),  # info
        ("nothing-matches", []),
    ]:
        press(view, "/", *query, "enter")
        assert table_ids(screen(view)) == expected, query
        press(view, "esc")
    press(view, "/", *"nothing", "enter")
    assert "no flows match the filter" in screen(view)


def test_field_filters_and_a_bad_term() -> None:
    view, _ = make_view()
    for query, expected in [
        ("proto:http", [2]),
        ("port:443", [1]),
        ("host:*.example.com", [2]),
        ("verdict:block", [5]),
        ("state:EST proto:s*", [3]),
    ]:
        press(view, "/", *query, "enter")
        assert table_ids(screen(view)) == expected, query
        press(view, "esc")
    press(view, "/", *"port:22", "enter")
    press(view, "/", "backspace", "backspace", "backspace", "backspace", "backspace",
          "backspace", "backspace", *"colour:red", "enter")  # fmt: skip
    prompt = screen(view).splitlines()[-1]
    assert "filter: colour:red" in prompt and "unknown field 'colour'" in prompt
    assert view.filter_edit is not None  # still open, to be corrected
    press(view, "esc")
    assert view.filter == "port:22" and table_ids(screen(view)) == [3]


def test_pause_freezes_the_picture() -> None:
    view, clock = make_view()
    before = screen(view)
    press(view, "p")
    for i in range(10, 15):
        clock.t = i * 0.1
        view.update(snapshot_at(i))
    text = screen(view)
    assert "PAUSED" in text and "5 updates held" in text
    assert "1,333 pkts" in text  # tick 9's count, not tick 14's
    assert table_ids(text) == table_ids(before)
    assert row_line(text, 1) == row_line(before, 1)
    press(view, "p")
    text = screen(view)
    assert "PAUSED" not in text
    assert f"{1000 + 14 * 37:,} pkts" in text


def test_selection_and_detail_view() -> None:
    view, _ = make_view()
    press(view, "1", "down", "j")  # by id; the first press selects the top row, then one down
    assert view.selected == 2
    press(view, "k", "down")
    assert view.selected == 2
    press(view, "enter")
    text = screen(view, 120, 50)
    assert "Flow #2" in text
    assert "client → server" in text and "server → client" in text
    assert "47 45 54 20 2f 69 6e 64" in text and "GET /index.html" in text  # client bytes
    assert "48 54 54 50 2f 31 2e 31 20 32 30 30" in text  # server bytes: HTTP/1.1 200
    assert "host: shop.example.com" in text and "method: GET" in text  # findings
    assert "mss=1460" in text and "handshake=seen" in text  # TCP facts
    assert "pass (port-policy)" in text  # verdict and who decided
    press(view, "tab")  # client side only
    text = screen(view, 120, 50)
    assert "client → server" in text and "server → client" not in text
    press(view, "tab", "tab")
    press(view, "esc")
    assert view.detail is None and "Flow #2" not in screen(view)
    press(view, "enter", "enter")  # Enter opens and closes too
    assert view.detail is None
    press(view, "enter")
    assert press(view, "q")  # q quits from the detail view as well


def test_detail_view_two_colours() -> None:
    view, _ = make_view()
    press(view, "1", "j", "j", "enter")
    colours: dict[str, set[str]] = {"client": set(), "server": set()}
    for line in lines_of(view, 120, 50):
        for seg in line:
            if seg.style is None or seg.style.color is None:
                continue
            if "47 45 54 20" in seg.text or "GET /index" in seg.text:
                colours["client"].add(seg.style.color.name)
            if "48 54 54 50 2f 31 2e 31 20 32" in seg.text or "HTTP/1.1 200 OK" in seg.text:
                colours["server"].add(seg.style.color.name)
    assert colours["client"] and colours["server"]
    assert colours["client"].isdisjoint(colours["server"])


def test_detail_view_fits_and_scrolls() -> None:
    view, _ = make_view()
    press(view, "1", "j", "enter")  # the TLS flow
    small = screen(view, 60, 12)
    assert len(small.splitlines()) == 12 and max(map(len, small.splitlines())) <= 60
    assert "Flow #1" in small
    press(view, *["j"] * 30)
    scrolled = screen(view, 60, 12)
    assert "Flow #1" not in scrolled and "server → client" in scrolled
    assert len(scrolled.splitlines()) == 12


def test_detail_keeps_an_ended_flow() -> None:
    view, clock = make_view()
    press(view, "1", "j", "enter")
    clock.t = 1.0
    snap = snapshot_at(10)
    view.update(replace(snap, flows=snap.flows[1:], closed=()))
    assert "Flow #1" in screen(view) and "ended" in screen(view)


def test_ended_flows_stay_listed_and_their_age_moves() -> None:
    """An ended flow stays as long as the snapshots carry it (they bound the list, not the
    view); its Seen column is now minus its last packet, its duration stops at its end."""
    clock = FakeClock()
    view = LiveView(clock=clock)
    snap = snapshot_at(0)
    ended = replace(snap.flows[0], state="RST", start=T0 - 2.0, last_seen=T0)
    view.update(
        replace(snap, flows=snap.flows[1:], flows_active=4, closed=(ended,), closed_dropped=3)
    )
    text = screen(view, 200)
    assert 1 in table_ids(text)
    assert "RST" in row_line(text, 1) and "0.0s" in row_line(text, 1)
    assert "4 active · 1 ended (3 dropped from the list) / 17 total" in text
    later = snapshot_at(450)  # 45 s on in capture time, nothing new from flow 1
    clock.t = 45.0
    view.update(replace(later, flows=later.flows[1:], closed=(ended,)))
    line = row_line(screen(view), 1)
    assert "45s" in line  # Seen moved with the clock
    assert " 2s " in line  # Dur stopped at the flow's end
    assert "–" in line  # an ended flow has no rate


def test_active_count_excludes_closed_flows() -> None:
    view, _ = make_view()
    snap = snapshot_at(10)
    flows = tuple(replace(r, state="CLOSED") if r.id in (1, 2) else r for r in snap.flows)
    view.update(replace(snap, flows=flows))
    assert "flows 3 active · 2 closed / 17 total" in screen(view, 200)


def test_question_mark_shows_the_legend() -> None:
    view, _ = make_view()
    assert "? legend" in screen(view, 160)
    press(view, "?")
    text = screen(view, 160)
    assert "Legend" in text
    assert "G gaps" in text and "B bypassed" in text  # the flag column's letters
    assert "mid-stream" in text and "a guess by port" in text
    for header in ("ID", "State", "Client", "Server", "VLAN", "Proto", "Info", "Verdict",
                   "Bytes→/←", "Rate→/←", "Dur", "Seen"):  # fmt: skip
        assert re.search(rf"^ {re.escape(header)} ", text, re.M), header
    press(view, "esc")
    assert "Legend" not in screen(view, 160) and table_ids(screen(view, 160))


def test_render_without_any_snapshot() -> None:
    view = LiveView(title="eth9")
    text = screen(view, 80, 24)
    assert "waiting for packets" in text and len(text.splitlines()) == 24
    assert not press(view, "j", "enter", "1", "p")  # nothing to select, nothing breaks


def test_render_an_explicit_snapshot() -> None:
    view = LiveView()
    snap = snapshot_at(3)
    console = Console(record=True, width=100, height=20, file=io.StringIO(), color_system=None)
    console.print(view.render(snap, 100, 20))
    assert table_ids(console.export_text()) == [5, 4, 3, 2, 1]  # no rates yet: ties by id


def test_parse_keys() -> None:
    assert parse_keys("ab/") == ["a", "b", "/"]
    assert parse_keys("\x1b[A\x1b[B\x1bOA\x1bOB") == ["up", "down", "up", "down"]
    assert parse_keys("\x1b[5~\x1b[6~\x1b[H\x1b[F") == ["pgup", "pgdn", "home", "end"]
    assert parse_keys("\x1b") == ["esc"]
    assert parse_keys("\x1bq") == ["esc", "q"]
    assert parse_keys("\r\n\t\x7f") == ["enter", "enter", "tab", "backspace"]
    assert parse_keys("\x1b[1;5A") == ["up"]
    assert parse_keys("\x01é") == ["é"]


# ---------------------------------------------------------------------------------------------
# terminal handling on a pseudo-terminal


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, int]]:
    master, slave = os.openpty()
    try:
        yield master, slave
    finally:
        os.close(master)
        os.close(slave)


def test_start_stop_on_a_pty(pty_pair: tuple[int, int]) -> None:
    master, slave = pty_pair
    before = termios.tcgetattr(slave)
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, height=30, color_system=None)
    clock = FakeClock()
    with LiveView(title="pty0", console=console, stdin_fd=slave, clock=clock) as view:
        lflag = termios.tcgetattr(slave)[3]
        assert not lflag & termios.ECHO and not lflag & termios.ICANON
        assert view.poll_keys() is False  # nothing pending, returns at once
        view.update(snapshot_at(0))
        os.write(master, b"1\x1b[B")  # sort by id, move down
        assert view.poll_keys() is False
        assert view.sort_key == "id" and view.selected == 1
        os.write(master, b"/ssh\r")
        view.poll_keys()
        assert view.filter == "ssh"
        os.write(master, b"q")
        assert view.poll_keys() is True
    assert termios.tcgetattr(slave) == before
    written = out.getvalue()
    assert "\x1b[?1049h" in written and "\x1b[?1049l" in written  # alternate screen on, off
    assert "\x1b[?25l" in written and written.rstrip().endswith("\x1b[?25h")  # cursor back


def test_terminal_restored_on_exception(pty_pair: tuple[int, int]) -> None:
    _, slave = pty_pair
    before = termios.tcgetattr(slave)
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80, height=24)
    with pytest.raises(RuntimeError), LiveView(console=console, stdin_fd=slave):
        raise RuntimeError("capture died")
    assert termios.tcgetattr(slave) == before
    assert "\x1b[?1049l" in out.getvalue() and out.getvalue().endswith("\x1b[?25h")


def test_redraws_are_throttled(pty_pair: tuple[int, int]) -> None:
    _, slave = pty_pair
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, height=30, color_system=None)
    clock = FakeClock()
    draws = 0
    with LiveView(console=console, stdin_fd=slave, clock=clock) as view:
        for i in range(20):  # 2 s of updates every 0.1 s: about 10 draws at 0.2 s
            clock.t = i * 0.1
            before = len(out.getvalue())
            view.update(snapshot_at(i))
            draws += len(out.getvalue()) > before
        assert 8 <= draws <= 11
        before = len(out.getvalue())
        view.update(snapshot_at(20), force=True)  # forced: drawn at once
        assert len(out.getvalue()) > before
        before = len(out.getvalue())
        clock.t += 0.01
        view.handle_key("p")
        view.poll_keys()  # a key that changed the view is drawn at once
        assert len(out.getvalue()) > before


# ---------------------------------------------------------------------------------------------
# a real terminal: tmux


class Tmux:
    def __init__(self, width: int, height: int, command: str) -> None:
        self.socket = f"uinet-tap-test-{uuid.uuid4().hex[:8]}"
        self.socket_path = ""
        self.run("-f", "/dev/null", "new-session", "-d", "-x", str(width), "-y", str(height),
                 "-s", "tui", command)  # fmt: skip
        self.run("set-option", "-s", "escape-time", "0")
        self.socket_path = self.run("display-message", "-p", "#{socket_path}").strip()

    def run(self, *args: str) -> str:
        proc = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "tui", *keys)

    def text(self) -> str:
        return self.run("capture-pane", "-p", "-t", "tui")

    def state(self) -> str:
        return self.run("display-message", "-p", "-t", "tui", "#{alternate_on} #{cursor_flag}")

    def wait(self, predicate: Callable[[str], bool], what: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.text()
            if predicate(text):
                return text
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; screen:\n{text}")

    def wait_for(self, needle: str, timeout: float = 15.0) -> str:
        return self.wait(lambda t: needle in t, repr(needle), timeout)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)
        if self.socket_path:
            Path(self.socket_path).unlink(missing_ok=True)


def packets_shown(text: str) -> str:
    m = re.search(r"([\d,]+) pkts", text)
    assert m, text
    return m.group(1)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_live_view_in_tmux() -> None:
    python = sys.executable
    command = (
        f"cd {ROOT} && before=$(stty -g) && "
        f"env -u COLUMNS -u LINES {python} {DRIVER} --tick 0.05; rc=$?; "
        '[ "$(stty -g)" = "$before" ] && echo TTY-RESTORED; echo "EXIT=$rc"; sleep 600'
    )
    tmux = Tmux(120, 40, command)
    try:
        text = tmux.wait_for("93.184.216.34:443")
        for needle in ("test0", "pkt/s", "Mbit/s", "ssh?", "EST*", "Client", "Verdict", "quit"):
            assert needle in text
        assert len(text.rstrip("\n").splitlines()) <= 40
        assert tmux.state().split() == ["1", "0"]  # alternate screen, cursor hidden

        tmux.keys("1")  # sort by id
        text = tmux.wait_for("ID▲")
        assert table_ids(text) == [1, 2, 3, 4, 5]
        tmux.keys("1")
        text = tmux.wait(lambda t: "ID▼" in t and table_ids(t) == [5, 4, 3, 2, 1], "reverse")

        tmux.keys("/", "s", "h", "o", "p")
        tmux.wait_for("filter: shop")
        tmux.keys("Enter")
        text = tmux.wait(lambda t: "“shop”" in t and table_ids(t) == [2], "the filter")
        assert "93.184.216.34:443" not in text
        tmux.keys("Escape")
        tmux.wait(lambda t: table_ids(t) == [5, 4, 3, 2, 1], "the filter cleared")

        tmux.keys("p")
        text = tmux.wait_for("PAUSED")
        frozen = packets_shown(text)
        tmux.wait_for("updates held")  # the driver goes on feeding snapshots
        held = tmux.wait(lambda t: re.search(r"([2-9]|\d\d+) updates held", t) is not None, "")
        assert packets_shown(held) == frozen
        tmux.keys("p")
        tmux.wait(lambda t: "PAUSED" not in t and packets_shown(t) != frozen, "resumed")

        tmux.keys("1", "j", "Enter")  # ascending ids; select the first row (flow 1, TLS)
        text = tmux.wait_for("Flow #1")
        assert "16 03 01 00 a5 01 00 00" in text  # the ClientHello, client → server
        assert "16 03 03 00 7a 02 00 00" in text  # the ServerHello, server → client
        assert "sni: secure.example.org" in text
        assert "would-intercept (hosts)" in text
        tmux.keys("Escape")
        text = tmux.wait(lambda t: "Flow #1" not in t and "Verdict" in t, "the table back")

        tmux.run("resize-window", "-t", "tui", "-x", "80", "-y", "24")  # SIGWINCH: redrawn to fit
        text = tmux.wait(lambda t: "Client" in t and "Dur" not in t, "the 80x24 layout")
        assert max(len(line) for line in text.splitlines()) <= 80
        assert "10.0.0.5:51000" in text and "tls" in text

        tmux.keys("q")
        text = tmux.wait_for("EXIT=")
        assert "bye" in text and "EXIT=0" in text and "TTY-RESTORED" in text
        assert "Verdict" not in text  # the alternate screen is gone
        assert tmux.state().split() == ["0", "1"]  # normal screen, cursor visible
    finally:
        tmux.close()
