#!/usr/bin/env python3
"""Where a `uinet-tap replay` run spends its time, by phase: each named method is wrapped
with a clock (perf_counter), the run is made in this process, and the totals are printed:
each phase's time with its callees (s) and without the other phases it called (own s: a
connection's record is made while the tracker ends it, when 256 have ended). The wrappers
cost a little (some 100,000 calls): read the shares, not the last digit. Nested phases are
listed under their parent (``run/take_born`` is part of ``run``).

    .venv/bin/python bench/replay_phases.py BENCH.pcap [replay options...]

Needs the C data plane (the phases are its Python side's)."""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uinet_tap.stack import fastpath, tracker

from uinet_tap import cli, engine, native

# (class, method, label): the phases, parents before their parts
PHASES: list[tuple[type, str, str]] = [
    (engine.Engine, "feed_batch", "feed_batch (everything after start-up but the end)"),
    (fastpath.CFastPath, "run", "run (C's run and the Python after it)"),
    (fastpath.CFastPath, "_take_born", "run/take_born (objects of the flows C opened)"),
    (native.NativeGlue, "_decided", "run/decided (C's findings taken back)"),
    (fastpath.CFastPath, "unload", "unload (waiting for the hashing thread)"),
    (tracker.Tracker, "segment", "segment (frames C did not take, and expiry)"),
    (tracker.Tracker, "_finish", "finish (connections ended)"),
    (fastpath.CFastPath, "detach", "finish/detach (C's numbers taken back)"),
    (tracker.Tracker, "_finish_light", "finish_light (light flows ended)"),
    (fastpath.CFastPath, "end_light", "finish_light/end_light (C ends one plain)"),
    (tracker.Tracker, "_end_lights", "end_lights (light flows C ended, lines and all)"),
    (fastpath.CFastPath, "end_lights", "end_lights/C (ut_end_lights: ends and lines)"),
    (engine.Engine, "_lines", "end_lights/lines (the lines counted and written)"),
    (engine.Engine, "_closed", "closed (records of connections, built and written)"),
    (engine.Engine, "_ended", "ended (records of light flows, built and written)"),
    (fastpath.CFastPath, "ended_line", "ended/ended_line (C writes a light flow's record)"),
    (cli._RecordWriter, "__call__", "write (JSON and the file, in closed and ended)"),
    (cli._RecordWriter, "line", "write_line (a line C made, to the file, in ended)"),
    (cli._RecordWriter, "lines", "write_lines (C's lines, to the file, in end_lights)"),
    (engine.Engine, "finish", "engine.finish (the end of input)"),
]


def wrap(
    cls: type, name: str, label: str, spent: dict[str, float], own: dict[str, float],
    calls: Counter[str], inside: list[float],
) -> None:  # fmt: skip
    """Time ``cls.name`` under ``label``: all of it (spent), and without the time of the
    phases it called (own; ``inside`` holds, per phase running, the time its callees took)."""
    inner: Callable[..., Any] = getattr(cls, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        inside.append(0.0)
        try:
            return inner(*args, **kwargs)
        finally:
            took = time.perf_counter() - t
            nested = inside.pop()
            spent[label] += took
            own[label] += took - nested
            calls[label] += 1
            if inside:
                inside[-1] += took

    setattr(cls, name, timed)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    if not fastpath.AVAILABLE:
        print("error: the C data plane is not built", file=sys.stderr)
        return 2
    spent: dict[str, float] = dict.fromkeys((label for _c, _n, label in PHASES), 0.0)
    own = dict(spent)
    calls: Counter[str] = Counter()
    inside: list[float] = []
    for cls, name, label in PHASES:
        wrap(cls, name, label, spent, own, calls, inside)
    with tempfile.TemporaryDirectory() as tmp:
        sys.argv = ["uinet-tap", "replay", argv[0], "--flows", str(Path(tmp) / "f.jsonl"), "-q"]
        sys.argv += argv[1:]
        started = time.perf_counter()
        try:
            cli.main()
        except SystemExit as exc:
            if exc.code:
                return int(exc.code) if isinstance(exc.code, int) else 1
        total = time.perf_counter() - started
    print(f"{'phase':60s} {'s':>7s} {'own s':>7s} {'calls':>9s}")
    for _cls, _name, label in PHASES:
        print(f"{label:60s} {spent[label]:7.3f} {own[label]:7.3f} {calls[label]:9,}")
    print(f"{'the run (after imports)':60s} {total:7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
