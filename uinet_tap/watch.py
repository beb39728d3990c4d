"""`uinet-tap watch IFACE`: live capture, the engine(s), the live view or status lines.

One process, or with ``--workers N`` N capture processes joined in a PACKET_FANOUT group in
hash mode (the kernel keeps a flow on one socket, so each worker sees whole flows), each with
its own engine, sending records and snapshots to this process, which merges them. Every
capture handle is opened by this process before the workers exist (:func:`open_captures`),
so with ``--user`` the workers are forked after the drop and never hold root.

Watch only listens: capture handles are opened and read; no frame is ever sent."""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import queue
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol, TextIO

from . import logs
from .ended import BYTES_BUDGET, KEEP_BYTES, KEEP_ENDED_WATCH, EndedFlows
from .engine import Engine
from .live import GreCapture, LiveCapture, StdinCapture, UdpCapture
from .live_view_data import SnapshotMaker
from .pcapfile import CaptureError
from .ringcapture import RingCapture, live_capture
from .snapshot import Snapshot

VIEW_WAITS_BEHIND = 1.0  # seconds the live view may wait while the capture is behind

# What starting the workers imports, for importing before a --user drop.
WORKER_MODULES = (
    "multiprocessing.connection",
    "multiprocessing.popen_fork",
    "multiprocessing.queues",
    "multiprocessing.synchronize",
    "multiprocessing.util",
)


class Backend(Protocol):
    iface: str

    def step(self) -> None: ...  # take what arrived (waits at most a few tens of ms)

    def snapshot(self) -> Snapshot: ...

    def finish(self) -> dict: ...  # end capture; every record written; the run's stats

    def behind(self) -> bool: ...  # frames pile up in the capture, where it can tell


@dataclasses.dataclass(frozen=True, slots=True)
class ViewLimits:
    """What the live view keeps of ended flows (--keep-ended, --keep-bytes)."""

    keep_ended: int = KEEP_ENDED_WATCH
    keep_bytes: int = KEEP_BYTES
    bytes_budget: int = BYTES_BUDGET


class SingleBackend:
    """Capture and engine in this process."""

    def __init__(
        self,
        capture: LiveCapture | RingCapture,
        engine: Engine,
        limits: ViewLimits = ViewLimits(),
        incremental: bool = False,
        rows: bool = True,
    ) -> None:
        """``rows``: False where no live view shows flows (status lines count them)."""
        self.iface = capture.iface
        self.capture = capture
        self.engine = engine
        self.maker = SnapshotMaker(
            engine, keep_ended=limits.keep_ended, keep_bytes=limits.keep_bytes,
            bytes_budget=limits.bytes_budget, clock=self._clock, incremental=incremental,
            rows=rows,
        )  # fmt: skip
        self._last_expiry = 0.0

    def _clock(self) -> float:
        """Now, as packet times count it (a stream on stdin may carry its own)."""
        clock = getattr(self.capture, "clock", None)
        return clock() if clock is not None else time.time()

    def on_record(self, writer: Callable[[dict], None]) -> Callable[[dict], None]:
        def record(rec: dict) -> None:
            writer(rec)
            self.maker.closed_record(rec)

        return record

    def step(self) -> None:
        batch = self.capture.poll(0.05)
        if batch is not None:
            # Frames move time on themselves. Behind the capture, the clock would be ahead
            # of the frames still queued: it would end their connections before them (a
            # bypassed direction's record short of its last ACKs, the rest as stragglers).
            self.engine.feed_batch(batch)
            return
        idle = getattr(self.capture, "idle", None)
        if idle is not None:  # the ring's blocks go back once the engine holds none of them
            self.engine.let_go()
            idle()
        now = time.monotonic()
        if now - self._last_expiry >= 1.0:
            # Idle flows time out on the clock too, not only when packets move time on.
            self._last_expiry = now
            self.engine.expire(self._clock())

    @property
    def ended(self) -> bool:
        """The capture can give nothing more (watch -: the writer closed the stream)."""
        return bool(getattr(self.capture, "ended", False))

    def behind(self) -> bool:
        """Frames pile up in the capture (where it can tell: the ring)."""
        behind = getattr(self.capture, "behind", None)
        return bool(behind()) if behind is not None else False

    def snapshot(self) -> Snapshot:
        _recv, drop, ifdrop = self.capture.stats()
        return self.maker.snapshot((drop, ifdrop))

    def finish(self) -> dict:
        self.engine.finish()
        recv, drop, ifdrop = self.capture.stats()
        self.capture.close()
        stats = self.engine.stats()
        stats["capture"] = {"received": recv, "kernel_drops": drop, "interface_drops": ifdrop}
        undecapsulated = getattr(self.capture, "undecapsulated", None)
        if undecapsulated is not None:  # watch udp:: datagrams that carried no mirrored frame
            stats["capture"]["undecapsulated"] = dict(sorted(undecapsulated.items()))
        return stats


def open_captures(capture_args: dict[str, Any], workers: int) -> list[LiveCapture | RingCapture]:
    """The capture handles: one, or one per worker in one PACKET_FANOUT group. Opened here,
    where the privileges are, before any worker starts; each worker inherits its own."""
    if capture_args["iface"].startswith("udp:"):
        if workers != 1:
            raise CaptureError(f"{capture_args['iface']}: one socket cannot be shared by --workers")
        udp = UdpCapture(
            capture_args["iface"], capture_args.get("bpf"), capture_args["buffer_size"]
        )
        return [udp]  # type: ignore[list-item]
    if capture_args["iface"].startswith("gre:"):
        if workers != 1:
            raise CaptureError(f"{capture_args['iface']}: one socket cannot be shared by --workers")
        args = capture_args
        return [GreCapture(args["iface"], args.get("bpf"), args["buffer_size"])]  # type: ignore[list-item]
    if capture_args["iface"] == "-":
        if workers != 1:
            raise CaptureError("-: one stream on stdin cannot be shared by --workers")
        return [StdinCapture(capture_args.get("bpf"))]  # type: ignore[list-item]
    if workers == 1:
        return [live_capture(**capture_args)]
    group = (os.getpid() & 0x7FFF) or 1
    captures: list[LiveCapture | RingCapture] = []
    try:
        for _ in range(workers):
            captures.append(live_capture(**capture_args, fanout_group=group))
    except CaptureError:
        for c in captures:
            c.close()
        raise
    return captures


# (linktype, on_record, on_plugin_error) -> a new engine
EngineFactory = Callable[[int, Callable[[dict], None], Callable[[str, str], None]], Engine]


def _worker(
    index: int,
    captures: list[LiveCapture | RingCapture],
    make_engine: EngineFactory,
    out: Any,
    stop: Any,
    limits: ViewLimits = ViewLimits(),
    lines: bool = False,
) -> None:
    """One capture process: its share of the flows, records and snapshots to the parent,
    and its plugin failures, which the parent reports once for the whole run. A bug here is
    sent as one line too, and every record of this worker is still written. ``lines``: no
    view shows flows, and records may go as the JSON lines C writes (Engine.on_lines), as
    (text, closes) among the records."""
    # Ctrl-C and a stop by signal reach the whole process group. Here they only ask this
    # worker to end: raised as KeyboardInterrupt, one could land inside stop.is_set() or
    # out.put() while this process holds their lock, which it shares with the parent and
    # never let go of (the parent then waited on it for good, the run's records unwritten).
    asked = [False]
    parent = os.getppid()

    def end_asked(_signum: int, _frame: Any) -> None:
        asked[0] = True

    signal.signal(signal.SIGINT, end_asked)
    signal.signal(signal.SIGTERM, end_asked)
    # The parent logs what a worker would: only it knows whether the view holds the terminal.
    logs.forward_to(lambda level, message: out.put(("log", index, (level, message))))
    capture = captures[index]
    for other in captures:
        if other is not capture:
            # The other workers' sockets are theirs to read. Closing this process's copy
            # leaves the socket and its ring (still mapped elsewhere) alone.
            other.close()
    # The records of a step go to the parent in one message: a message per record cost this
    # process a lock, a wake-up of the queue's feeder thread and a pickling each.
    records: list[dict | tuple[bytes, dict[str, int]]] = []

    def send_records() -> None:
        if records:
            out.put(("records", index, records[:]))
            records.clear()

    engine = make_engine(
        capture.linktype,
        records.append,
        lambda name, message: out.put(("plugin_error", index, (name, message))),
    )
    if lines:
        engine.on_line = lambda text, close: records.append((text, {close: 1}))
        engine.on_lines = lambda text, closes: records.append((text, closes))
    backend = SingleBackend(capture, engine, limits, incremental=True, rows=not lines)
    out.put(("ready", index, None))
    last_snapshot = 0.0
    try:
        # A parent gone without a word (killed) leaves this worker to its init process.
        while not asked[0] and not stop.is_set() and os.getppid() == parent:
            backend.step()
            send_records()
            now = time.monotonic()
            if now - last_snapshot >= 0.25:
                last_snapshot = now
                out.put(("snapshot", index, backend.snapshot()))
    except Exception as exc:  # a bug must not lose this worker's records
        out.put(("internal_error", index, f"{type(exc).__name__}: {exc}"))
    send_records()
    try:
        stats = backend.finish()
    except Exception as exc:
        out.put(("internal_error", index, f"{type(exc).__name__}: {exc}"))
        stats = {}
    send_records()  # the flows still open, ended by the end of capture: before the stats
    out.put(("stats", index, stats))


class WorkerPool:
    """N capture processes in one fanout group; this process merges what they send."""

    def __init__(
        self,
        iface: str,
        captures: list[LiveCapture | RingCapture],
        make_engine: EngineFactory,
        writer: Callable[[dict], None],
        on_plugin_error: Callable[[str, str], None],
        on_error: Callable[[str], None] | None = None,
        limits: ViewLimits = ViewLimits(),
        lines: Callable[[bytes, dict[str, int]], None] | None = None,
    ) -> None:
        """``on_plugin_error``: a plugin's failure in any worker (reported once a run);
        ``on_error``: a worker's internal error, one line (default: stderr). The workers send
        the flows that ended since their last snapshot; the list of them is kept here."""
        self.ended = EndedFlows(limits.keep_ended, limits.bytes_budget)
        self.iface = iface
        self.writer = writer
        self.lines = lines  # records as the lines C wrote (_worker's): no view shows flows
        self.on_plugin_error = on_plugin_error
        self.on_error = on_error or (lambda m: print(f"error: {m}", file=sys.stderr, flush=True))
        self.failed = False  # a worker met a bug: the run ends with status 1
        # fork: the capture handles and the engine factory (plugins, policy) are inherited
        ctx = mp.get_context("fork")
        self.out = ctx.Queue()
        self.stop = ctx.Event()
        workers = len(captures)
        self.procs = [
            ctx.Process(
                target=_worker,
                args=(i, captures, make_engine, self.out, self.stop, limits, lines is not None),
                daemon=True,
            )
            for i in range(workers)
        ]
        self.snapshots: dict[int, Snapshot] = {}
        self.stats: dict[int, dict] = {}
        for p in self.procs:
            p.start()
        for c in captures:
            c.close()  # each worker has its own now; this process reads none
        ready = 0
        deadline = time.monotonic() + 15
        while ready < workers:
            kind, index, payload = self._get(max(0.1, deadline - time.monotonic()))
            if kind == "ready":
                ready += 1
            elif kind is None and time.monotonic() > deadline:
                self._abort()
                raise CaptureError(f"capture workers on {iface} did not start")

    def _get(self, timeout: float) -> tuple[Any, Any, Any]:
        try:
            return self.out.get(timeout=timeout)  # type: ignore[no-any-return]
        except queue.Empty:
            return None, None, None

    def _handle(self, kind: Any, index: Any, payload: Any) -> None:
        if kind == "records":
            for record in payload:
                if isinstance(record, tuple):
                    self.lines(*record)  # type: ignore[misc]
                else:
                    self.writer(record)
        elif kind == "snapshot":
            n = len(self.procs)
            for row in payload.closed:  # renumbered as the active flows are (see snapshot)
                self.ended.add(dataclasses.replace(row, id=row.id * n + index))
            self.ended.dropped += payload.closed_dropped
            self.snapshots[index] = payload
        elif kind == "stats":
            self.stats[index] = payload
        elif kind == "plugin_error":
            self.on_plugin_error(*payload)
        elif kind == "log":
            level, message = payload
            logs.log.log(level, "worker %d: %s", index, message)
        elif kind == "internal_error":
            self.failed = True
            self.on_error(f"internal error in capture worker {index}: {payload} (its records "
                          "are still written)")  # fmt: skip

    def _abort(self) -> None:
        self.stop.set()
        for p in self.procs:
            p.join(2)
            if p.is_alive():
                p.kill()  # a worker ends at SIGTERM only as asked: at its loop's next turn

    def step(self) -> None:
        kind, index, payload = self._get(0.05)
        while kind is not None:
            self._handle(kind, index, payload)
            kind, index, payload = self._get(0)

    def behind(self) -> bool:
        """The workers' captures are theirs: this process cannot tell."""
        return False

    def snapshot(self) -> Snapshot:
        snaps = list(self.snapshots.values())
        if not snaps:
            return Snapshot(0.0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ())
        total = {f.name: 0 for f in dataclasses.fields(Snapshot)
                 if f.name not in ("now", "flows", "closed", "closed_dropped",
                                   "bytes_released")}  # fmt: skip
        for s in snaps:
            for name in total:
                total[name] += getattr(s, name)
        # Each worker holds its own flows: ids are per worker, so they are renumbered apart.
        flows = tuple(
            dataclasses.replace(row, id=row.id * len(self.procs) + i)
            for i, s in sorted(self.snapshots.items())
            for row in s.flows
        )
        return Snapshot(
            now=max(s.now for s in snaps), flows=flows, closed=self.ended.rows(),
            closed_dropped=self.ended.dropped, bytes_released=self.ended.released, **total,
        )  # fmt: skip

    def finish(self) -> dict:
        self.stop.set()
        deadline = time.monotonic() + 60
        while len(self.stats) < len(self.procs) and time.monotonic() < deadline:
            kind, index, payload = self._get(0.5)
            if kind is not None:
                self._handle(kind, index, payload)
            elif not any(p.is_alive() for p in self.procs):
                break
        self.step()  # records sent just before a worker's stats
        for p in self.procs:
            p.join(5)
        return _merge_stats(list(self.stats.values()), len(self.procs))


def _merge_stats(parts: list[dict], workers: int) -> dict:
    merged: dict[str, Any] = {"workers": workers}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, bool):
                merged[key] = merged.get(key, False) or value
            elif isinstance(value, int | float):
                merged[key] = merged.get(key, 0) + value
            elif isinstance(value, dict):
                acc = merged.setdefault(key, Counter())
                for k, v in value.items():
                    if isinstance(v, int | float):
                        acc[k] += v
            elif isinstance(value, list):
                merged.setdefault(key, []).extend(value)
    for key, value in merged.items():
        if isinstance(value, Counter):
            merged[key] = dict(value)
    if "largest" in merged:
        merged["largest"] = sorted(merged["largest"], key=lambda r: -r["bytes"])[:5]
    return merged


class Watch:
    """The foreground loop: the live view on a terminal, else a ready line and status lines."""

    def __init__(
        self,
        backend: Backend,
        tui: bool,
        status_interval: float = 5.0,
        duration: float | None = None,
        err: TextIO = sys.stderr,
        flush: Callable[[], None] = lambda: None,
    ) -> None:
        self.backend = backend
        self.tui = tui
        self.status_interval = status_interval
        self.duration = duration
        self.err = err
        self.flush = flush
        self.started = time.monotonic()
        self._last_status = self.started
        self._last_packets = 0
        self._last_flush = self.started
        self.stop_asked = False  # SIGINT or SIGTERM came (run)
        self._last_view = self.started

    def run(self) -> None:
        """Capture until q, SIGINT or SIGTERM, or the duration ends."""
        view: Any = None
        if self.tui:
            from .tui import LiveView  # rich's live machinery only where a terminal is

            view = LiveView(title=self.backend.iface)
            view.start()
        else:
            print(f"uinet-tap watch: capturing on {self.backend.iface}: ready",
                  file=self.err, flush=True)  # fmt: skip

        # While capturing, a stop signal only marks the run to end, and the loop ends it
        # between steps. Raised as KeyboardInterrupt, it could land anywhere: inside the
        # engine's handling of a batch, or (with --workers, where Ctrl-C reaches every
        # process) inside a read of the workers' queue, where it left half a message in the
        # pipe and the next read waited for good for the rest. Once the loop is over, a
        # second signal interrupts as usual.
        def asked(_signum: int, _frame: Any) -> None:
            self.stop_asked = True

        held = {sig: signal.signal(sig, asked) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._loop(view)
        finally:
            for sig, handler in held.items():
                signal.signal(sig, handler)
            if view is not None:
                view.stop()

    def _loop(self, view: Any) -> None:
        while not self.stop_asked:
            self.backend.step()
            now = time.monotonic()
            if now - self._last_flush >= 1.0:
                self._last_flush = now
                self.flush()
            if view is not None:
                # Behind its traffic, the capture comes first: the view (a snapshot and a
                # draw, tens of milliseconds) waits, a second at most.
                if view.due() and (
                    now - self._last_view >= VIEW_WAITS_BEHIND or not self.backend.behind()
                ):
                    self._last_view = now
                    view.update(self.backend.snapshot())
                if view.poll_keys():
                    return
            elif now - self._last_status >= self.status_interval:
                self._status(now, self.backend.snapshot())
            if self.duration is not None and now - self.started >= self.duration:
                return
            if getattr(self.backend, "ended", False):
                return

    def _status(self, now: float, s: Snapshot) -> None:
        rate = (s.packets - self._last_packets) / max(now - self._last_status, 1e-6)
        self._last_packets, self._last_status = s.packets, now
        print(
            f"uinet-tap watch {self.backend.iface}: {now - self.started:.0f}s "
            f"packets={s.packets} ({rate:.0f}/s) flows active={s.flows_active} "
            f"total={s.flows_total} drops kernel={s.kernel_drops} "
            f"interface={s.interface_drops} not-tcp={s.not_tcp} undecodable={s.undecodable} "
            f"plugin-errors={s.plugin_errors}",
            file=self.err,
            flush=True,
        )
