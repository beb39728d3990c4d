"""What a person sees on stderr: a progress bar while reading, a summary at the end."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress
from rich.table import Table

from .stack import defrag
from .stack.decode import NOT_TCP_REASONS

_console = Console(stderr=True)

# Partial IP datagrams dropped by a bound of the defragmenter (stack/defrag.py).
_FRAGMENT_LIMITS = (
    ("fragment_evictions", f"evicted (over {defrag.MAX_DATAGRAMS:,} datagrams)"),
    ("fragment_memcap_evictions", f"evicted (over {defrag.MEMCAP >> 20} MiB held)"),
    ("fragment_timeouts", f"timed out ({defrag.TIMEOUT:g} s)"),
    ("fragment_oversize", f"over {defrag.MAX_DATAGRAM:,} bytes"),
    ("fragment_too_many", f"over {defrag.MAX_FRAGMENTS} fragments"),
)


class Progress:
    """A progress bar over the file's bytes, shown only on a terminal."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._bar: RichProgress | None = None
        self._task: Any = None
        self.total = total

    def __enter__(self) -> Progress:
        if self.enabled:
            self._bar = RichProgress(
                TextColumn("[bold]replay"),
                BarColumn(),
                DownloadColumn(),
                TextColumn("{task.fields[packets]:,} packets"),
                TimeRemainingColumn(),
                console=_console,
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("replay", total=self.total, packets=0)
        return self

    def update(self, done: int, packets: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, packets=packets)  # type: ignore[arg-type]

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(et, ev, tb)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def render_summary(
    stats: dict, capture: str, elapsed: float, command: str = "replay",
    viewing: float | None = None,
) -> None:  # fmt: skip
    """``elapsed``: seconds of reading, what packets/s is over; ``viewing``: replay --tui's
    time with the view open in all (the user's time in it after the end of the file too)."""
    totals = Table(box=box.SIMPLE, show_header=False, title=f"{command} summary",
                   title_style="bold")  # fmt: skip
    totals.add_column(style="bold")
    totals.add_column(justify="right", overflow="fold")
    not_tcp = sum(v for k, v in stats["undecodable"].items() if k in NOT_TCP_REASONS)
    malformed = sum(stats["undecodable"].values()) - not_tcp
    rate = stats["packets"] / elapsed if elapsed > 0 else 0.0
    rows = [
        ("capture", capture),
        (
            "read in",
            f"{elapsed:.2f} s  ({rate:,.0f} packets/s)"
            + (f"; view open {viewing:.1f} s" if viewing is not None else ""),
        ),
        ("packets", f"{stats['packets']:,}  ({_human(stats['bytes'])})"),
        ("TCP segments", f"{stats['tcp_packets']:,}"),
        ("connections", f"{stats['connections']:,}"),
        ("gaps", f"{stats['gaps']:,}  ({_human(stats['gap_bytes'])} missing)"),
        ("anomalies", f"{sum(stats['anomalies'].values()):,}"),
        ("not TCP", f"{not_tcp:,}"),
        ("undecodable", f"{malformed:,}"),
    ]
    if stats.get("protocols"):
        rows.append(("protocols", ", ".join(f"{k} {v:,}" for k, v in stats["protocols"].items())))
        rows.append(("verdicts", ", ".join(f"{k} {v:,}" for k, v in stats["verdicts"].items())))
        if stats.get("bypassed"):
            rows.append(("bypassed", f"{stats['bypassed']:,}"))
    loaded = stats.get("plugins") or []
    if loaded:
        own = [f"{p['name']} ({p['origin']})" for p in loaded if p["origin"] != "built-in"]
        builtin = len(loaded) - len(own)
        rows.append(("plugins", ", ".join([*own, f"{builtin} built-in detectors"])))
    if stats.get("policy"):
        rows.append(("policy", stats["policy"]))
    if stats.get("version"):
        rows.append(("version", stats["version"]))
    if stats.get("plugin_errors"):
        first = stats.get("plugin_failures") or {}

        def where(name: str) -> str:  # the first failure's hook and place
            f = first.get(name)
            return f" (first in {f['hook']}{', ' + f['at'] if f['at'] else ''})" if f else ""

        errors = ", ".join(f"{k} {v:,}{where(k)}" for k, v in stats["plugin_errors"].items())
        rows.append(("plugin errors", errors))
    if stats.get("findings_truncated"):
        rows.append(("findings cut", f"{stats['findings_truncated']:,} records (to the limits)"))
    limits = stats.get("limits") or {}
    if limits:
        rows.append(("limits hit", ", ".join(f"{k} {v:,}" for k, v in limits.items())))
    elif stats["evicted"] or stats["buffer_forced"]:
        rows.append(
            ("limits hit", f"{stats['evicted']:,} evicted, {stats['buffer_forced']:,} forced")
        )
    dropped = [f"{stats.get(key, 0):,} {what}" for key, what in _FRAGMENT_LIMITS if stats.get(key)]
    if dropped:
        rows.append(("fragments dropped", ", ".join(dropped)))
    inline = stats.get("inline")
    if inline:
        rows.append(
            (
                "forwarded",
                f"{inline['forwarded']:,} frames  ({inline['resegmented']:,} "
                f"super-frames cut, {inline['checksums_completed']:,} checksums completed)",
            )
        )
        failed = sum(inline["intercept_failed"].values())
        rows.append(("cut-ins", f"{inline['intercepts']:,}  ({failed:,} failed)"))
        rows.append(("RSTs sent", f"{inline['rst_sent']:,}"))
        ports = inline["ports"].values()
        send_errors = {k: v for p in ports for k, v in p["send_errors"].items()}
        if send_errors or inline["too_big"]:
            lost = ", ".join(f"{k} {v:,}" for k, v in send_errors.items())
            rows.append(("send errors", f"{lost or 0}; too big {inline['too_big']:,}"))
        drops = sum(p["kernel_drops"] for p in ports)
        if drops:
            rows.append(("kernel drops", f"{drops:,} (the tool fell behind)"))
    for k, v in rows:
        totals.add_row(k, v)
    _console.print(totals)
    if stats["anomalies"]:
        t = Table(box=box.SIMPLE, title="anomalies")
        t.add_column("kind")
        t.add_column("count", justify="right")
        for k, v in sorted(stats["anomalies"].items(), key=lambda kv: -kv[1]):
            t.add_row(k, f"{v:,}")
        _console.print(t)
    if malformed:
        t = Table(box=box.SIMPLE, title="undecodable packets")
        t.add_column("reason")
        t.add_column("count", justify="right")
        for k, v in sorted(stats["undecodable"].items(), key=lambda kv: -kv[1]):
            if k not in NOT_TCP_REASONS:
                t.add_row(k, f"{v:,}")
        _console.print(t)
    if stats["largest"]:
        t = Table(box=box.SIMPLE, title="largest connections")
        for col in ("id", "client", "server", "bytes", "close"):
            t.add_column(col, justify="right" if col in ("id", "bytes") else "left")
        for r in stats["largest"]:
            t.add_row(str(r["id"]), r["client"], r["server"], _human(r["bytes"]), r["close"])
        _console.print(t)
