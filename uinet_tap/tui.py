"""The live terminal view of `uinet-tap watch`: a flow table in the style of iftop and bandwhich.

Single-threaded and driven by the caller's loop::

    with LiveView(title="eth0") as view:
        while True:
            if view.due():                       # a redraw is due (every ~0.2 s)
                view.update(engine_snapshot())   # stored and drawn
            if view.poll_keys():                 # non-blocking; True once the user pressed q
                break

The view only ever reads `Snapshot`s (see `uinet_tap.snapshot`). Rates (packets/s, Mbit/s and
per-flow bytes/s) come from successive snapshots over a short window. `render()` builds the whole
screen for a given size without a terminal, which is what the tests use; `handle_key()` feeds one
decoded key ("q", "enter", "esc", "up", ...) as `poll_keys()` would.
"""

from __future__ import annotations

import codecs
import contextlib
import ipaddress
import os
import select
import sys
import termios
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

from rich.console import Console, Group, RenderableType
from rich.region import Region
from rich.table import Table
from rich.text import Text

from uinet_tap.snapshot import FlowRow, Snapshot
from uinet_tap.viewfilter import Filter, FilterError, parse

__all__ = ["LiveView", "SORT_KEYS", "parse_keys"]

REFRESH_INTERVAL = 0.2  # seconds between two redraws caused by update()
# With many flows listed an update (sort, filter, draw) costs: the next one waits this many
# times as long, so the view takes at most about a fifth of the loop it shares with capture.
COST_FACTOR = 4.0
RATE_WINDOW = 3.0  # seconds of history behind every rate
SPARK_STEP = 1.0  # seconds between two samples of a flow's bytes for the detail's sparkline
SPARK_POINTS = 60  # samples kept a flow (a minute)
SPARK_ENDED = 2000  # ended flows whose samples are kept (most recent)
_SPARKS = "▁▂▃▄▅▆▇█"

CLIENT_STYLE = "cyan"
SERVER_STYLE = "magenta"

# Sort keys in the order of the digit keys: 1..9, then 0.
SORT_KEYS: tuple[str, ...] = (
    "id",
    "state",
    "client",
    "server",
    "proto",
    "verdict",
    "bytes",
    "rate",
    "seen",
    "dur",
)
_DESCENDING_FIRST = {"bytes", "rate", "dur"}  # numbers: biggest first; "seen": most recent first
_STATE_ORDER = {"SYN": 0, "SYN-ACK": 1, "EST": 2, "FIN": 3, "CLOSED": 4, "RST": 5}
_CLOSED_STATES = frozenset({"CLOSED", "RST"})  # tracked still, but over: not "active"
_VERDICT_STYLE = {"pass": "green", "would-intercept": "yellow", "would-block": "bold red"}


# ---------------------------------------------------------------------------------------------
# formatting


def human(n: float) -> str:
    """1234 -> "1.2K", 12_345_678 -> "12M" (SI units)."""
    if n < 1000:
        return str(int(n))
    for unit in ("K", "M", "G", "T", "P"):
        n /= 1000.0
        if n < 999.5:
            return f"{n:.1f}{unit}" if n < 9.95 else f"{n:.0f}{unit}"
    return f"{n:.0f}E"


def fmt_duration(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def fmt_age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m"
    return f"{seconds // 3600:.0f}h"


def fmt_uptime(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def fmt_state(row: FlowRow) -> str:
    return row.state + ("*" if row.midstream else "")


def fmt_vlan(row: FlowRow) -> str:
    return ".".join(str(v) for v in row.vlan)


def is_guessed(row: FlowRow) -> bool:
    return row.protocol is not None and row.confidence not in (None, "detected")


def fmt_proto(row: FlowRow) -> Text:
    if row.protocol is None:
        return Text("…", style="dim")
    if is_guessed(row):
        return Text(row.protocol + "?", style="italic yellow")
    return Text(row.protocol, style="bold")


def fmt_verdict(row: FlowRow) -> Text:
    if row.verdict is None:
        return Text("…", style="dim")
    text = Text(row.verdict, style=_VERDICT_STYLE.get(row.verdict, ""))
    if row.decided_by:
        text.append(f" ({row.decided_by})", style="dim")
    return text


def fmt_flags(row: FlowRow) -> Text:
    text = Text()
    if row.gaps:
        text.append("G", style="bold red")
    if row.bypassed:
        text.append("B", style="blue")
    return text


def hexdump(data: bytes, style: str, per_line: int = 16, offset_width: int = 4) -> list[Text]:
    """Hex + ASCII lines, all in one colour (the direction's)."""
    lines: list[Text] = []
    for off in range(0, len(data), per_line):
        chunk = data[off : off + per_line]
        hexpart = " ".join(f"{b:02x}" for b in chunk).ljust(per_line * 3 - 1)
        ascii_part = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        line = Text(f"{off:0{offset_width}x}  ", style="dim")
        line.append(hexpart, style=style)
        line.append("  ")
        line.append(ascii_part, style=style)
        lines.append(line)
    return lines


# ---------------------------------------------------------------------------------------------
# keys

_CSI_KEYS = {
    "A": "up",
    "B": "down",
    "C": "right",
    "D": "left",
    "H": "home",
    "F": "end",
    "1~": "home",
    "7~": "home",
    "4~": "end",
    "8~": "end",
    "5~": "pgup",
    "6~": "pgdn",
    "3~": "delete",
    "Z": "backtab",
}


def parse_keys(data: str) -> list[str]:
    """Split terminal input into key names: printable characters stand for themselves; special
    keys are "up", "down", "left", "right", "pgup", "pgdn", "home", "end", "enter", "esc",
    "backspace", "tab", "delete". A lone ESC (nothing after it in the same read) is "esc"."""
    keys: list[str] = []
    i, n = 0, len(data)
    while i < n:
        ch = data[i]
        if ch == "\x1b":
            if i + 1 < n and data[i + 1] in "[O":
                j = i + 2
                while j < n and data[j] in "0123456789;?":
                    j += 1
                if j < n:
                    params, final = data[i + 2 : j], data[j]
                    name = _CSI_KEYS.get(final if not params else params.split(";")[0] + final)
                    if name is None and final in "ABCDHF":  # modified arrows: ESC [1;5A
                        name = _CSI_KEYS.get(final)
                    if name:
                        keys.append(name)
                    i = j + 1
                    continue
            keys.append("esc")
            i += 1
            continue
        if ch in "\r\n":
            keys.append("enter")
        elif ch in "\x7f\x08":
            keys.append("backspace")
        elif ch == "\t":
            keys.append("tab")
        elif ch.isprintable():
            keys.append(ch)
        i += 1
    return keys


# ---------------------------------------------------------------------------------------------
# the view


@dataclass(frozen=True, slots=True)
class _Column:
    key: str
    header: str
    min: int
    max: int
    priority: int  # columns with the lowest priority are dropped first on narrow terminals
    justify: Literal["left", "right"] = "left"
    flex: bool = False  # shrinks (with an ellipsis) before anything is dropped


_COLUMNS: tuple[_Column, ...] = (
    _Column("id", "ID", 2, 8, 100, "right"),
    _Column("state", "State", 3, 8, 90),
    _Column("flags", "G", 1, 2, 75),
    _Column("client", "Client", 15, 47, 97, flex=True),
    _Column("server", "Server", 15, 47, 96, flex=True),
    _Column("vlan", "VLAN", 4, 12, 25),
    _Column("proto", "Proto", 4, 14, 92),
    _Column("info", "Info", 8, 40, 71, flex=True),
    _Column("verdict", "Verdict", 7, 32, 85, flex=True),
    _Column("bytes", "Bytes→/←", 7, 13, 70, "right"),
    _Column("rate", "Rate→/←", 7, 15, 72, "right"),
    _Column("dur", "Dur", 3, 6, 30, "right"),
    _Column("seen", "Seen", 4, 5, 40, "right"),
)


@dataclass(slots=True)
class _Frame:
    """One snapshot plus what the view derived from it when it arrived."""

    snapshot: Snapshot
    rows: tuple[FlowRow, ...]
    closed_ids: frozenset[int]  # the ended flows (no longer tracked)
    pps: float | None = None
    mbps: float | None = None
    rates: dict[int, tuple[float, float]] = field(default_factory=dict)


class LiveView:
    """Live flow table. See the module docstring for the loop that drives it.

    Keys: 1-9/0 sort by a column (again: reverse), s next sort column, r reverse, / filter
    (Enter applies, Esc cancels; Esc later clears it), p pause, ↑↓/j k/PgUp PgDn/Home End move
    the selection, Enter opens the selected flow (Esc or Enter closes it; there ↑↓ scroll and Tab
    shows both/client/server bytes), ? the legend of columns and flags, q quits.

    Ended flows are listed as long as the snapshots carry them (they bound the list); ages are
    the snapshot's ``now`` (the view's clock) minus the flow's last packet.
    """

    def __init__(
        self,
        title: str = "",
        console: Console | None = None,
        *,
        refresh_interval: float = REFRESH_INTERVAL,
        rate_window: float = RATE_WINDOW,
        clock: Callable[[], float] = time.monotonic,
        stdin_fd: int | None = None,
    ) -> None:
        self.title = title
        self.console = console if console is not None else Console()
        self.refresh_interval = refresh_interval
        self.rate_window = rate_window
        self._clock = clock
        self._stdin_fd = stdin_fd
        self._started_at = clock()
        # data
        self._latest: _Frame | None = None
        self._shown: _Frame | None = None  # == _latest unless paused
        self._totals: deque[tuple[float, int, int]] = deque()
        self._flow_hist: dict[int, deque[tuple[float, int, int]]] = {}
        self._visible: tuple[object, ...] | None = None  # (frame, filter, sort, reverse, rows)
        self._spark: dict[int, deque[tuple[float, int, int]]] = {}
        self._spark_ended: OrderedDict[int, deque[tuple[float, int, int]]] = OrderedDict()
        self._held = 0  # updates received while paused
        # interaction state
        self.sort_key = "rate"
        self.sort_reverse = True
        self.filter = ""
        self.filter_edit: str | None = None  # the prompt's text while typing a filter
        self.filter_error = ""  # why the prompt's text was not applied (one line)
        self._parsed: tuple[str, Filter] = ("", parse(""))
        self.paused = False
        self.legend = False  # the ? screen
        self.top = False  # the t screen: top names and servers of the listed flows
        self.selected: int | None = None  # flow id
        self.detail: int | None = None  # flow id shown in the detail view
        self._detail_row: FlowRow | None = None
        self.detail_scroll = 0
        self.detail_side: Literal["both", "client", "server"] = "both"
        self._top = 0  # first table row on screen
        # terminal state
        self._fd: int | None = None
        self._saved_tty: list | None = None
        self._alt = False
        self._running = False
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._dirty = True
        self._keyed = False  # a key changed the view since the last draw
        self._last_draw = float("-inf")
        self._cost = 0.0  # seconds the last update took (derive, sort, draw)
        self._last_size: tuple[int, int] | None = None

    # -- terminal lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Alternate screen, hidden cursor, stdin in cbreak mode without echo."""
        if self._running:
            return
        self._running = True
        self._started_at = self._clock()
        fd = self._stdin_fd
        if fd is None:
            try:
                fd = sys.stdin.fileno()
            except (AttributeError, OSError, ValueError):
                fd = None
        if fd is not None and os.isatty(fd):
            self._fd = fd
            self._saved_tty = termios.tcgetattr(fd)
            mode = termios.tcgetattr(fd)
            mode[3] &= ~(termios.ECHO | termios.ICANON)  # lflag: no echo, byte at a time
            mode[6][termios.VMIN] = 1
            mode[6][termios.VTIME] = 0
            termios.tcsetattr(fd, termios.TCSADRAIN, mode)
        try:
            self._alt = self.console.set_alt_screen(True)
            self.console.show_cursor(False)
        except BaseException:
            self.stop()
            raise
        self._dirty = True
        self._draw()

    def stop(self) -> None:
        """Restore the terminal. Safe to call twice, or without start()."""
        if not self._running:
            return
        self._running = False
        try:
            if self._alt:
                self.console.set_alt_screen(False)
                self._alt = False
            self.console.show_cursor(True)
        finally:
            if self._fd is not None and self._saved_tty is not None:
                with contextlib.suppress(termios.error, OSError):
                    termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved_tty)
            self._fd = None
            self._saved_tty = None

    def __enter__(self) -> LiveView:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- data ----------------------------------------------------------------------------------

    def update(self, snapshot: Snapshot, *, at: float | None = None, force: bool = False) -> None:
        """Store the newest snapshot (`at`: when it was taken, default: the clock). Drawn now if
        the last draw is older than the refresh interval or `force`; otherwise on a later call."""
        started = time.perf_counter()
        t = self._clock() if at is None else at
        self._latest = self._derive(snapshot, t)
        if self.paused:
            self._held += 1
        else:
            self._shown = self._latest
        self._dirty = True
        self._maybe_draw(force)
        self._cost = time.perf_counter() - started

    def _derive(self, snap: Snapshot, t: float) -> _Frame:
        # totals
        self._totals.append((t, snap.packets, snap.bytes))
        _trim(self._totals, t - self.rate_window)
        pps = mbps = None
        t0, p0, b0 = self._totals[0]
        if t > t0:
            pps = max(0, snap.packets - p0) / (t - t0)
            mbps = max(0, snap.bytes - b0) * 8 / (t - t0) / 1e6
        rows, closed_ids = _rows_of(snap)
        # per-flow rates: of the flows still tracked (an ended flow moves no more)
        rates: dict[int, tuple[float, float]] = {}
        for r in snap.flows:
            hist = self._flow_hist.get(r.id)
            if hist is None:
                hist = self._flow_hist[r.id] = deque()
            hist.append((t, r.c2s_bytes, r.s2c_bytes))
            _trim(hist, t - self.rate_window)
            ht, hc, hs = hist[0]
            if t > ht:
                rates[r.id] = (
                    max(0, r.c2s_bytes - hc) / (t - ht),
                    max(0, r.s2c_bytes - hs) / (t - ht),
                )
        listed = {r.id for r in snap.flows}
        for fid in [f for f in self._flow_hist if f not in listed]:
            del self._flow_hist[fid]
        self._sample(snap, t, listed)
        return _Frame(snap, rows, closed_ids, pps, mbps, rates)

    def _sample(self, snap: Snapshot, t: float, listed: set[int]) -> None:
        """A flow's bytes every SPARK_STEP for its sparkline; an ended flow's are kept a while."""
        for r in snap.flows:
            hist = self._spark.get(r.id)
            if hist is None:
                hist = self._spark[r.id] = deque(maxlen=SPARK_POINTS + 1)
            if not hist or t - hist[-1][0] >= SPARK_STEP:
                hist.append((t, r.c2s_bytes, r.s2c_bytes))
        for fid in [f for f in self._spark if f not in listed]:
            self._spark_ended[fid] = self._spark.pop(fid)
            if len(self._spark_ended) > SPARK_ENDED:
                self._spark_ended.popitem(last=False)

    def _frame_for(self, snapshot: Snapshot | None) -> _Frame | None:
        if snapshot is None:
            return self._shown
        for frame in (self._shown, self._latest):
            if frame is not None and frame.snapshot is snapshot:
                return frame
        return _Frame(snapshot, *_rows_of(snapshot))

    # -- keys ----------------------------------------------------------------------------------

    def poll_keys(self) -> bool:
        """Read every pending key without blocking; True when the user asked to quit."""
        quit_ = False
        fd = self._fd
        while fd is not None:
            try:
                ready, _, _ = select.select([fd], [], [], 0)
            except InterruptedError:
                continue
            if not ready:
                break
            try:
                data = os.read(fd, 4096)
            except InterruptedError:
                continue
            if not data:
                break
            for key in parse_keys(self._decoder.decode(data)):
                if self.handle_key(key):
                    quit_ = True
        if self._running and not quit_:
            self._maybe_draw(force=self._keyed)  # what a key changed is shown at once
        return quit_

    def handle_key(self, key: str) -> bool:
        """Apply one key (as named by `parse_keys`). Returns True for quit."""
        self._dirty = self._keyed = True
        if self.filter_edit is not None:
            return self._filter_key(key)
        if key == "q":
            return True
        if self.legend:
            if key in ("?", "esc", "enter"):
                self.legend = False
            return False
        if self.top:
            if key in ("t", "esc", "enter"):
                self.top = False
            return False
        if key == "?":
            self.legend = True
            return False
        if key == "t" and self.detail is None:
            self.top = True
            return False
        if self.detail is not None:
            self._detail_key(key)
            return False
        if key == "p":
            self.paused = not self.paused
            if not self.paused:
                self._shown = self._latest
                self._held = 0
        elif key in "1234567890" and len(key) == 1:
            self._set_sort(SORT_KEYS[(int(key) - 1) % 10])
        elif key == "s":
            self._set_sort(SORT_KEYS[(SORT_KEYS.index(self.sort_key) + 1) % len(SORT_KEYS)])
        elif key == "r":
            self.sort_reverse = not self.sort_reverse
        elif key == "/":
            self.filter_edit = self.filter
        elif key == "esc":
            self.filter = ""
        elif key in ("up", "k", "down", "j", "pgup", "pgdn", "home", "end", "g", "G"):
            self._move(key)
        elif key == "enter":
            rows = self.visible_rows()
            if self.selected is None and rows:
                self.selected = rows[0].id
            row = next((r for r in rows if r.id == self.selected), None)
            if row is not None:
                self.detail = row.id
                self._detail_row = row
                self.detail_scroll = 0
        else:
            self._keyed = False
        return False

    def _filter_key(self, key: str) -> bool:
        assert self.filter_edit is not None
        if key == "enter":
            text = self.filter_edit.strip()
            try:
                self._parsed = (text, parse(text))
            except FilterError as exc:
                self.filter_error = str(exc)  # the prompt stays open, saying why
                return False
            self.filter = text
            self.filter_edit = None
            self.filter_error = ""
            self._top = 0
        elif key == "esc":
            self.filter_edit = None
            self.filter_error = ""
        elif key == "backspace":
            self.filter_edit = self.filter_edit[:-1]
            self.filter_error = ""
        elif len(key) == 1:
            self.filter_edit += key
            self.filter_error = ""
        return False

    def _detail_key(self, key: str) -> None:
        if key in ("esc", "enter"):
            self.detail = None
            self._detail_row = None
        elif key in ("down", "j"):
            self.detail_scroll += 1
        elif key in ("up", "k"):
            self.detail_scroll = max(0, self.detail_scroll - 1)
        elif key == "pgdn":
            self.detail_scroll += 10
        elif key == "pgup":
            self.detail_scroll = max(0, self.detail_scroll - 10)
        elif key in ("home", "g"):
            self.detail_scroll = 0
        elif key == "tab":
            sides: tuple[Literal["both", "client", "server"], ...] = ("both", "client", "server")
            self.detail_side = sides[(sides.index(self.detail_side) + 1) % 3]
            self.detail_scroll = 0

    def _set_sort(self, key: str) -> None:
        if key == self.sort_key:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_key = key
            self.sort_reverse = key in _DESCENDING_FIRST or key == "seen"

    def _move(self, key: str) -> None:
        rows = self.visible_rows()
        if not rows:
            self.selected = None
            return
        ids = [r.id for r in rows]
        idx = ids.index(self.selected) if self.selected in ids else -1
        page = max(1, (self._last_size[1] if self._last_size else 24) - 7)
        step = {"up": -1, "k": -1, "down": 1, "j": 1, "pgup": -page, "pgdn": page}.get(key)
        if step is not None:
            idx = 0 if idx < 0 else idx + step
        elif key in ("home", "g"):
            idx = 0
        else:
            idx = len(ids) - 1
        self.selected = ids[max(0, min(len(ids) - 1, idx))]

    # -- rows ----------------------------------------------------------------------------------

    def visible_rows(self, snapshot: Snapshot | None = None) -> list[FlowRow]:
        """The flows as listed: filtered, then sorted."""
        frame = self._frame_for(snapshot)
        if frame is None:
            return []
        # cached: the header, the table and the keys all ask, and 100,000 ended flows are a
        # few hundred milliseconds to filter and sort
        key = (frame, self.filter, self.sort_key, self.sort_reverse)
        cached = self._visible
        if cached is not None and all(a is b or a == b for a, b in zip(cached, key, strict=False)):
            return list(cached[4])  # type: ignore[call-overload]
        rows = self._sorted(self._filtered(frame.rows), frame)
        self._visible = (*key, rows)
        return list(rows)

    def _filtered(self, rows: Iterable[FlowRow]) -> list[FlowRow]:
        if self._parsed[0] != self.filter:  # set other than by the prompt
            try:
                self._parsed = (self.filter, parse(self.filter))
            except FilterError:
                self._parsed = (self.filter, Filter(()))
        match = self._parsed[1]
        if not match.terms:
            return list(rows)
        return [r for r in rows if match(r)]

    def _sorted(self, rows: list[FlowRow], frame: _Frame) -> list[FlowRow]:
        key = self.sort_key
        now = frame.snapshot.now
        rates = frame.rates

        closed = frame.closed_ids
        no_rate = (0.0, 0.0)
        if key == "rate":
            # Most listed flows (the ended ones) move no bytes: sorting them by id alone, and
            # only the moving ones by rate, keeps 100,000 ended flows cheap to list.
            speed = {fid: a + b for fid, (a, b) in rates.items() if a + b > 0}
            moving = [r for r in rows if r.id in speed]
            still = [r for r in rows if r.id not in speed]
            still.sort(key=_by_id, reverse=self.sort_reverse)
            moving.sort(key=lambda r: (speed[r.id], r.id), reverse=self.sort_reverse)
            return moving + still if self.sort_reverse else still + moving
        primary: Callable[[FlowRow], object] = {
            "id": lambda r: r.id,
            "state": lambda r: (_STATE_ORDER.get(r.state, 9), r.midstream),
            "client": lambda r: _addr_key(r.client),
            "server": lambda r: _addr_key(r.server),
            "proto": lambda r: (r.protocol is None, r.protocol or "", is_guessed(r)),
            "verdict": lambda r: (r.verdict or "~", r.decided_by or ""),
            "bytes": lambda r: r.c2s_bytes + r.s2c_bytes,
            "rate": lambda r: sum(rates.get(r.id, no_rate)),
            "seen": lambda r: r.last_seen,
            "dur": lambda r: _end(r, now, closed) - r.start,
        }[key]
        return sorted(rows, key=lambda r: (primary(r), r.id), reverse=self.sort_reverse)

    # -- rendering -----------------------------------------------------------------------------

    def render(
        self, snapshot: Snapshot | None = None, width: int = 80, height: int = 24
    ) -> RenderableType:
        """The whole screen for `snapshot` (default: the one on show) at width x height."""
        frame = self._frame_for(snapshot)
        width, height = max(20, width), max(6, height)
        if self.legend:
            return self._render_legend(width, height)
        if self.top:
            return self._render_top(frame, width, height)
        if self.detail is not None:
            return self._render_detail(frame, width, height)
        header = self._render_header(frame, width)
        rows = self.visible_rows(snapshot) if frame is not None else []
        totals = height >= 10  # a line of totals under the table, where there is room
        avail = max(1, height - len(header) - 2 - totals)  # table header + help line
        table = self._render_table(frame, rows, width, avail)
        if not totals:
            return Group(*header, table, self._render_help(width))
        return Group(*header, table, _totals_line(rows), self._render_help(width))

    def _render_header(self, frame: _Frame | None, width: int) -> list[Text]:
        snap = frame.snapshot if frame else None
        l1 = Text(no_wrap=True, overflow="ellipsis")
        l1.append(" uinet-tap ", style="bold reverse")
        l1.append(f" {self.title} " if self.title else " ", style="bold")
        l1.append(f" up {fmt_uptime(self._clock() - self._started_at)}")
        if frame is not None and frame.pps is not None and frame.mbps is not None:
            l1.append(f"  {frame.pps:,.0f} pkt/s  {frame.mbps:.2f} Mbit/s", style="bold")
        else:
            l1.append("  – pkt/s  – Mbit/s", style="bold")
        if snap is not None:
            l1.append(f"  {snap.packets:,} pkts {human(snap.bytes)}B", style="dim")
        if self.paused:
            l1.append("  ")
            l1.append(" PAUSED ", style="bold black on yellow")
            if self._held:
                l1.append(f" {self._held} updates held", style="yellow")
        l2 = Text(no_wrap=True, overflow="ellipsis")
        if snap is None:
            l2.append(" waiting for packets…", style="dim")
        else:
            closing = sum(1 for r in snap.flows if r.state in _CLOSED_STATES)
            l2.append(f" flows {max(0, snap.flows_active - closing):,} active")
            if closing:
                l2.append(f" · {closing:,} closed")
            if snap.closed or snap.closed_dropped:
                l2.append(f" · {len(snap.closed):,} ended")
            if snap.closed_dropped:
                l2.append(f" ({snap.closed_dropped:,} dropped from the list)", style="yellow")
            l2.append(f" / {snap.flows_total:,} total")
            l2.append("  drops ")
            _count(l2, "kernel", snap.kernel_drops)
            l2.append(" ")
            _count(l2, "iface", snap.interface_drops)
            l2.append("  ")
            _count(l2, "undecodable", snap.undecodable)
            l2.append("  ")
            _count(l2, "plugin errors", snap.plugin_errors)
            l2.append(f"  non-TCP {snap.not_tcp:,}", style="dim")
        l3 = Text(no_wrap=True, overflow="ellipsis")
        total = len(frame.rows) if frame else 0
        shown = len(self._filtered(frame.rows)) if frame else 0
        l3.append(f" listing {shown} of {total}")
        arrow = "▼" if self.sort_reverse else "▲"
        l3.append(f"  sort {self.sort_key} {arrow}", style="cyan")
        if self.filter:
            l3.append("  filter ")
            l3.append(f"“{self.filter}”", style="bold yellow")
        return [l1, l2, l3]

    def _render_table(
        self, frame: _Frame | None, rows: list[FlowRow], width: int, avail: int
    ) -> RenderableType:
        now = frame.snapshot.now if frame else 0.0
        rates = frame.rates if frame else {}
        closed = frame.closed_ids if frame else frozenset()
        # which rows fit: keep the selection on screen, and a line for "… N more"
        if self.selected is not None and all(r.id != self.selected for r in rows):
            self.selected = None
        slots = avail
        if len(rows) > avail:
            slots = max(1, avail - 1)
        sel_idx = next((i for i, r in enumerate(rows) if r.id == self.selected), None)
        if sel_idx is not None:
            if sel_idx < self._top:
                self._top = sel_idx
            elif sel_idx >= self._top + slots:
                self._top = sel_idx - slots + 1
        self._top = max(0, min(self._top, max(0, len(rows) - slots)))
        page = rows[self._top : self._top + slots]
        cells = [self._cells(r, now, rates, closed) for r in page]
        columns = self._fit_columns(cells, page, width)
        table = Table(
            box=None,
            padding=(0, 1, 0, 0),
            pad_edge=False,
            show_edge=False,
            expand=False,
            header_style="bold reverse",
            collapse_padding=False,
        )
        for col, w in columns:
            header = col.header
            if self.sort_key == col.key:
                header = header + ("▼" if self.sort_reverse else "▲")
            table.add_column(
                header,
                width=w,
                min_width=w,
                max_width=w,
                no_wrap=True,
                overflow="ellipsis",
                justify=col.justify,
            )
        for r, row_cells in zip(page, cells, strict=True):
            style = ""
            if r.id in closed or r.state in ("CLOSED", "RST"):
                style = "dim"
            if r.id == self.selected:
                style = "reverse"
            table.add_row(*(row_cells[c.key] for c, _ in columns), style=style)
        parts: list[RenderableType] = [table]
        hidden_above, hidden_below = self._top, len(rows) - self._top - len(page)
        if hidden_above or hidden_below:
            more = Text(no_wrap=True, overflow="ellipsis", style="dim")
            more.append(f"… {hidden_above + hidden_below} more")
            if hidden_above:
                more.append(f" ({hidden_above} above, {hidden_below} below)")
            parts.append(more)
        elif not rows:
            parts.append(Text(" no flows" + (" match the filter" if self.filter else ""), "dim"))
        # pad so the help line sits on the last line of the screen
        used = 1 + len(page) + (len(parts) - 1)
        parts.extend(Text("") for _ in range(max(0, avail + 1 - used)))
        return Group(*parts)

    def _cells(
        self,
        r: FlowRow,
        now: float,
        rates: dict[int, tuple[float, float]],
        closed: frozenset[int] = frozenset(),
    ) -> dict[str, Text]:
        rate = rates.get(r.id)
        end = _end(r, now, closed)
        return {
            "id": Text(str(r.id)),
            "state": Text(fmt_state(r), style="yellow" if r.midstream else ""),
            "flags": fmt_flags(r),
            "client": Text(r.client, style=CLIENT_STYLE),
            "server": Text(r.server, style=SERVER_STYLE),
            "vlan": Text(fmt_vlan(r)),
            "proto": fmt_proto(r),
            "info": Text(r.info),
            "verdict": fmt_verdict(r),
            "bytes": Text(f"{human(r.c2s_bytes)}/{human(r.s2c_bytes)}"),
            "rate": Text(f"{human(rate[0])}/{human(rate[1])}" if rate else "–", style="bold"),
            "dur": Text(fmt_duration(end - r.start), style="dim"),
            "seen": Text(fmt_age(now - r.last_seen), style="dim"),
        }

    def _fit_columns(
        self, cells: list[dict[str, Text]], rows: list[FlowRow], width: int
    ) -> list[tuple[_Column, int]]:
        """Fixed columns get their natural width; flexible ones (addresses, info, verdict) share
        what is left, between their minimum and natural widths. When even that does not fit,
        columns are dropped, lowest priority first; as a last resort everything shrinks."""
        cols = list(_COLUMNS)
        if not any(r.vlan for r in rows):
            cols = [c for c in cols if c.key != "vlan"]
        if not any(r.gaps or r.bypassed for r in rows):
            cols = [c for c in cols if c.key != "flags"]
        sorted_col = self.sort_key
        natural = {}
        for c in cols:
            header = len(c.header) + (c.key == sorted_col)
            n = max([header] + [row[c.key].cell_len for row in cells])
            natural[c.key] = max(c.min, min(c.max, n)) if c.flex else max(header, min(c.max, n))

        def floor(c: _Column) -> int:
            return min(c.min, natural[c.key]) if c.flex else natural[c.key]

        while len(cols) > 1 and sum(floor(c) for c in cols) + len(cols) - 1 > width:
            cols.remove(min(cols, key=lambda c: c.priority))
        widths = {c.key: floor(c) for c in cols}
        spare = width - (sum(widths.values()) + len(cols) - 1)
        flex = sorted((c for c in cols if c.flex), key=lambda c: -c.priority)
        for c in flex:  # share the room out: the addresses first, then the others evenly
            if c.key in ("client", "server"):
                grow = max(0, min(spare, natural[c.key] - widths[c.key]))
                widths[c.key] += grow
                spare -= grow
        while spare > 0:
            wanting = [c for c in flex if widths[c.key] < natural[c.key]]
            if not wanting:
                break
            for c in wanting[:spare]:
                widths[c.key] += 1
                spare -= 1
        while spare < 0:  # a very narrow terminal: shrink the widest column
            c = max(cols, key=lambda c: widths[c.key])
            if widths[c.key] <= 1:
                break
            widths[c.key] -= 1
            spare += 1
        return [(c, widths[c.key]) for c in cols]

    def _render_legend(self, width: int, height: int) -> RenderableType:
        lines = [Text(" Legend ", style="bold reverse")]
        for name, what in LEGEND:
            t = Text(f" {name:<9} ", style="bold")
            t.append(what)
            lines.append(t)
        return _panel(lines, height, "?/Esc")

    def _render_top(self, frame: _Frame | None, width: int, height: int) -> RenderableType:
        rows = self.visible_rows(frame.snapshot) if frame is not None else []
        title = Text(" Top ", style="bold reverse")
        title.append(f"  of {len(rows):,} flows listed", style="dim")
        if self.filter:
            title.append("  filter ")
            title.append(f"“{self.filter}”", style="bold yellow")
        lines = [title]
        each = max(1, (height - 4) // 2)
        for heading, key in (("names (TLS SNI, HTTP Host)", _name), ("servers", _server)):
            top = top_counts(rows, key, each)
            head = Text(f" {'bytes':>9} {'flows':>7}  {heading}", style="bold")
            lines.append(head)
            for name, flows, nbytes in top:
                lines.append(Text(f" {human(nbytes) + 'B':>9} {flows:>7,}  {name}"))
            if not top:
                lines.append(Text("   none", style="dim"))
        return _panel(lines, height, "t/Esc")

    def _render_help(self, width: int) -> Text:
        line = Text(no_wrap=True, overflow="ellipsis", style="on grey15")
        if self.filter_edit is not None:
            line.append(" filter: ", style="bold yellow")
            line.append(self.filter_edit)
            line.append("▏", style="blink")
            if self.filter_error:
                line.append(f"  {self.filter_error}", style="bold red")
                return line
            line.append(
                "   Enter apply · Esc cancel · words match client server proto info verdict;"
                " fields: proto: port: host: sni: verdict: state: client: server:",
                style="dim",
            )
            return line
        keys: list[tuple[str, str]] = [
            ("q", "quit"),
            ("↑↓/jk", "select"),
            ("Enter", "details"),
            ("?", "legend"),
            ("/", "filter"),
            ("t", "top"),
            ("p", "resume" if self.paused else "pause"),
            ("1-9,0", "sort"),
        ]
        if self.filter:
            keys.append(("Esc", "clear filter"))
        keys += [("s", "next sort"), ("r", "reverse")]
        for k, what in keys:
            if line.cell_len + len(k) + len(what) + 3 > width:
                break
            line.append(f" {k}", style="bold")
            line.append(f" {what} ")
        legend = "  sort: " + " ".join(f"{(i + 1) % 10}={k}" for i, k in enumerate(SORT_KEYS))
        if line.cell_len + len(legend) <= width:
            line.append(legend, style="dim")
        return line

    def _render_detail(self, frame: _Frame | None, width: int, height: int) -> RenderableType:
        row = None
        if frame is not None:
            row = next((r for r in frame.rows if r.id == self.detail), None)
        ended = row is None or (frame is not None and row.id in frame.closed_ids)
        if row is None:
            row = self._detail_row
        else:
            self._detail_row = row
        assert row is not None
        now = frame.snapshot.now if frame else row.last_seen
        lines: list[Text] = []

        def kv(label: str, value: Text | str, style: str = "") -> None:
            t = Text(f" {label:<10} ", style="bold")
            t.append_text(value if isinstance(value, Text) else Text(value, style=style))
            lines.append(t)

        title = Text(f" Flow #{row.id} ", style="bold reverse")
        title.append(" ")
        title.append(row.client, style=CLIENT_STYLE)
        title.append(" → ")
        title.append(row.server, style=SERVER_STYLE)
        title.append(f"  {fmt_state(row)}", style="bold")
        if row.midstream:
            title.append(" (picked up mid-stream)", style="yellow")
        if ended:
            title.append("  ended", style="dim")
        if self.paused:
            title.append("  ")
            title.append(" PAUSED ", style="bold black on yellow")
        lines.append(title)
        proto = fmt_proto(row)
        if row.confidence:
            proto.append(f"  ({row.confidence})", style="dim")
        kv("protocol", proto)
        if row.info:
            kv("info", row.info)
        verdict = fmt_verdict(row) if row.verdict else Text("undecided", style="dim")
        kv("verdict", verdict)
        kv("vlan", fmt_vlan(row) or "none")
        traffic = Text()
        traffic.append(f"c→s {row.c2s_bytes:,} B in {row.c2s_packets:,} pkts", style=CLIENT_STYLE)
        traffic.append("   ")
        traffic.append(f"s→c {row.s2c_bytes:,} B in {row.s2c_packets:,} pkts", style=SERVER_STYLE)
        kv("traffic", traffic)
        rate = frame.rates.get(row.id) if frame else None
        if rate:
            kv("rate", f"c→s {human(rate[0])}B/s   s→c {human(rate[1])}B/s")
        hist = self._spark.get(row.id) or self._spark_ended.get(row.id)
        if hist is not None and len(hist) >= 2:
            for label, index, style in (
                ("bytes/s →", 1, CLIENT_STYLE),
                ("bytes/s ←", 2, SERVER_STYLE),
            ):
                line, peak = sparkline(hist, index, max(8, width - 32))
                text = Text(line, style=style)
                span = fmt_duration(hist[-1][0] - hist[0][0])
                text.append(f"  peak {human(peak)}B/s over {span}", style="dim")
                kv(label, text)
        end = _end(row, now, None if ended or frame is None else frame.closed_ids)
        kv(
            "time",
            f"duration {fmt_duration(end - row.start)}"
            f"   last seen {fmt_age(now - row.last_seen)} ago",
        )
        flags = []
        if row.gaps:
            flags.append(Text("G gaps in the stream", style="bold red"))
        if row.bypassed:
            flags.append(Text("B bypassed", style="blue"))
        if flags:
            kv("flags", Text("  ").join(flags))
        if row.tcp:
            kv("tcp", "  ".join(f"{k}={_short(v, 40)}" for k, v in row.tcp.items()))
        lines.append(Text(" findings", style="bold"))
        if row.findings:
            for k, v in row.findings.items():
                lines.append(Text(f"   {k}: {_short(v, max(20, width - 8 - len(str(k))))}"))
        else:
            lines.append(Text("   none", style="dim"))
        # the early bytes, one colour per direction
        per_line = 16 if width >= 78 else 8 if width >= 46 else 4
        for side, data, style, label in (
            ("client", row.c2s_head, CLIENT_STYLE, "client → server"),
            ("server", row.s2c_head, SERVER_STYLE, "server → client"),
        ):
            if self.detail_side not in ("both", side):
                continue
            head = Text(f" {label}", style=f"bold {style}")
            head.append(f"  first {len(data):,} bytes", style="dim")
            lines.append(head)
            lines.extend(hexdump(data, style, per_line) or [Text("   (nothing yet)", "dim")])
        for t in lines:
            t.no_wrap = True
            t.overflow = "ellipsis"
        avail = height - 1
        self.detail_scroll = max(0, min(self.detail_scroll, len(lines) - avail))
        body = lines[self.detail_scroll : self.detail_scroll + avail]
        body.extend(Text("") for _ in range(avail - len(body)))
        help_ = Text(no_wrap=True, overflow="ellipsis", style="on grey15")
        for k, what in (
            ("Esc/Enter", "close"),
            ("↑↓/jk PgUp/PgDn", "scroll"),
            ("Tab", f"bytes: {self.detail_side}"),
            ("q", "quit"),
        ):
            help_.append(f" {k}", style="bold")
            help_.append(f" {what} ")
        legend = Text(" client→server", style=CLIENT_STYLE)
        legend.append(" server→client", style=SERVER_STYLE)
        help_.append_text(legend)
        if len(lines) > avail:
            help_.append(
                f"  [{self.detail_scroll + 1}-{self.detail_scroll + len(body)}/{len(lines)}]",
                style="dim",
            )
        return Group(*body, help_)

    # -- drawing -------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Draw now."""
        self._dirty = True
        self._maybe_draw(force=True)

    def due(self) -> bool:
        """Would an update be drawn now? Callers take a snapshot only then: a snapshot walks
        the flows, and taken for every batch it cost the live view most of a busy link."""
        interval = max(self.refresh_interval, COST_FACTOR * self._cost)
        if self._clock() - self._last_draw >= interval - 0.01:
            return True
        return (self.console.size.width, self.console.size.height) != self._last_size

    def _maybe_draw(self, force: bool) -> None:
        if not self._running:
            return
        size = (self.console.size.width, self.console.size.height)
        if size != self._last_size:
            force = True
        if not self._dirty and not force:
            return
        # a little slack, so that a caller updating exactly every interval is drawn every time
        due = self._clock() - self._last_draw >= self.refresh_interval - 0.01
        if force or due:
            self._draw()

    def _draw(self) -> None:
        if not self._running:
            return
        w, h = self.console.size.width, self.console.size.height
        self._last_size = (w, h)
        renderable = self.render(None, w, h)
        if self._alt:
            self.console.update_screen(renderable, region=Region(0, 0, w, h))
        else:
            self.console.print(renderable)
        self._last_draw = self._clock()
        self._dirty = self._keyed = False


def sparkline(hist: Iterable[tuple[float, int, int]], side: int, width: int) -> tuple[str, float]:
    """The bytes/s between successive samples (side 1: client→server, 2: server→client), the
    latest ``width`` of them as block characters scaled to their peak; and that peak."""
    points = list(hist)
    rates = [
        max(0, b[side] - a[side]) / (b[0] - a[0])
        for a, b in zip(points, points[1:], strict=False)
        if b[0] > a[0]
    ][-width:]
    peak = max(rates, default=0.0)
    if peak <= 0:
        return _SPARKS[0] * len(rates), 0.0
    top = len(_SPARKS) - 1
    return "".join(_SPARKS[min(top, round(r / peak * top))] for r in rates), peak


def _name(r: FlowRow) -> str | None:
    for key in ("sni", "host"):
        value = r.findings.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _server(r: FlowRow) -> str | None:
    return r.server


def top_counts(
    rows: Iterable[FlowRow], key: Callable[[FlowRow], str | None], n: int
) -> list[tuple[str, int, int]]:
    """(name, flows, bytes both ways) of the n names with the most bytes (then flows)."""
    acc: dict[str, list[int]] = {}
    for r in rows:
        name = key(r)
        if name is None:
            continue
        slot = acc.setdefault(name, [0, 0])
        slot[0] += 1
        slot[1] += r.c2s_bytes + r.s2c_bytes
    best = sorted(acc.items(), key=lambda kv: (-kv[1][1], -kv[1][0], kv[0]))[:n]
    return [(name, flows, nbytes) for name, (flows, nbytes) in best]


def _totals_line(rows: list[FlowRow]) -> Text:
    """What the listed (filtered) flows add up to."""
    c2s = sum(r.c2s_bytes for r in rows)
    s2c = sum(r.s2c_bytes for r in rows)
    line = Text(no_wrap=True, overflow="ellipsis", style="bold")
    line.append(f" total {len(rows):,} flow{'s' if len(rows) != 1 else ''} listed  ")
    line.append(f"c→s {human(c2s)}B", style=CLIENT_STYLE)
    line.append("  ")
    line.append(f"s→c {human(s2c)}B", style=SERVER_STYLE)
    line.append(f"  ({c2s:,} / {s2c:,} bytes)", style="dim")
    return line


def _by_id(r: FlowRow) -> int:
    return r.id


def _rows_of(snap: Snapshot) -> tuple[tuple[FlowRow, ...], frozenset[int]]:
    """The rows listed: the tracked flows, then the ended ones (an id in both: the tracked)."""
    if not snap.closed:
        return snap.flows, frozenset()
    active = {r.id for r in snap.flows}
    closed = snap.closed
    if active and any(r.id in active for r in closed):
        closed = tuple(r for r in closed if r.id not in active)
    return snap.flows + closed, frozenset(r.id for r in closed)


def _end(r: FlowRow, now: float, closed: frozenset[int] | None) -> float:
    """Where a flow's duration stops: its last packet once it is over, else now."""
    if closed is None or r.id in closed or r.state in _CLOSED_STATES:
        return r.last_seen
    return max(r.last_seen, now)


LEGEND: tuple[tuple[str, str], ...] = (
    ("ID", "the flow's number, in order of its first packet"),
    ("State", "SYN, SYN-ACK, EST (established), FIN (one side closed), CLOSED, RST; an ended "
              "flow shows why it ended: FIN, RST, TIMEOUT, EOF (end of capture), EVICTED"),
    ("  *", "after the state: picked up mid-stream (no handshake seen)"),
    ("G", "flags: G gaps (bytes of a stream never seen), B bypassed (passed: only counted)"),
    ("Client", "the side that opened the connection (ip:port), in cyan"),
    ("Server", "the side that accepted it, in magenta"),
    ("VLAN", "802.1Q/802.1ad tags, outer first (shown when any flow has one)"),
    ("Proto", "the detected protocol; proto? a guess by port; … detection under way"),
    ("Info", "the most telling finding: SNI, Host, banner, greeting, …"),
    ("Verdict", "pass, would-intercept, would-block (intercept, block inline), and who "
                "decided; … undecided"),
    ("Bytes→/←", "payload bytes client→server / server→client (retransmissions included)"),
    ("Rate→/←", f"bytes/s each way over the last {RATE_WINDOW:.0f} s; – for an ended flow"),
    ("Dur", "first packet to last, or to now while the flow is live"),
    ("Seen", "time since the flow's last packet (now: the clock in watch, capture time in "
             "replay)"),
    ("dim row", "the flow is closed or has ended"),
    ("t", "top names (SNI, Host) and servers of the listed flows, by bytes"),
    ("header", "active flows exclude closed ones; ended: flows listed after their end "
               "(dropped: the oldest, taken off the bounded list)"),
)  # fmt: skip


def _panel(lines: list[Text], height: int, close: str) -> RenderableType:
    """A full-screen overlay (legend, top): its lines cut to the screen, padded, and a help
    line with the keys that close it and quit."""
    for t in lines:
        t.no_wrap = True
        t.overflow = "ellipsis"
    body = lines[: height - 1]
    body.extend(Text("") for _ in range(height - 1 - len(body)))
    help_ = Text(no_wrap=True, overflow="ellipsis", style="on grey15")
    for k, what in ((close, "close"), ("q", "quit")):
        help_.append(f" {k}", style="bold")
        help_.append(f" {what} ")
    return Group(*body, help_)


def _trim(hist: deque[tuple[float, int, int]], cutoff: float) -> None:
    """Drop samples older than cutoff, keeping one at or before it (so the window is covered)."""
    while len(hist) > 1 and hist[1][0] <= cutoff:
        hist.popleft()


def _addr_key(addr: str) -> tuple:
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    try:
        ip = ipaddress.ip_address(host)
        return (ip.version, int(ip), int(port) if port.isdigit() else 0)
    except ValueError:
        return (9, 0, addr)


def _count(text: Text, label: str, n: int) -> None:
    text.append(f"{label} ")
    text.append(f"{n:,}", style="bold red" if n else "green")


def _short(value: object, limit: int) -> str:
    s = value.hex() if isinstance(value, bytes | bytearray) else str(value)
    return s if len(s) <= limit else s[: max(1, limit - 1)] + "…"
