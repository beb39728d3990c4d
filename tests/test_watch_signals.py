"""A stop signal (SIGINT, SIGTERM) in watch only marks the run to end; the loop, and each
capture worker, ends it between steps. Raised as KeyboardInterrupt it could land anywhere:
inside the engine's handling of a batch, or inside a read or write of the workers' queue,
where half a message left in the pipe (or a shared lock never let go of) hung the run for
good. Here the signal is sent from inside a step, and the step must finish what it does."""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from uinet_tap.engine import Engine
from uinet_tap.pcapfile import Batch, PcapFile
from uinet_tap.snapshot import Snapshot
from uinet_tap.watch import ViewLimits, Watch, _worker

CAPTURE = Path(__file__).resolve().parents[1] / "captures" / "many-short.pcap"


class StepBackend:
    """Steps until the third, which signals this process and then goes on working."""

    iface = "fake0"

    def __init__(self, sig: int) -> None:
        self.sig = sig
        self.steps = 0
        self.after = 0  # work done in a step after its signal

    def step(self) -> None:
        self.steps += 1
        if self.steps == 3:
            os.kill(os.getpid(), self.sig)
            for _ in range(1000):  # bytecodes enough for a pending handler to run
                self.after += 1

    def behind(self) -> bool:
        return False

    def snapshot(self) -> Snapshot:
        return Snapshot(0.0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ())

    def finish(self) -> dict:
        return {}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_ends_the_loop_between_steps(sig: int):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    # as `uinet-tap watch` has them: both raise KeyboardInterrupt outside the loop
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        backend = StepBackend(sig)
        try:
            Watch(backend, tui=False, status_interval=1e9, err=io.StringIO()).run()
        except KeyboardInterrupt:
            pytest.fail(f"raised in step {backend.steps}, {backend.after} bytecodes on")
        assert backend.steps == 3 and backend.after == 1000
        assert signal.getsignal(signal.SIGINT) is before[signal.SIGINT]  # given back
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def _slices(size: int) -> list[Batch]:
    """The capture's frames in batches of ``size``."""
    out = []
    for b in PcapFile(str(CAPTURE)).batches():
        for at in range(0, len(b.lengths), size):
            end = at + size
            out.append(Batch(b.data, b.times[at:end], b.offsets[at:end], b.lengths[at:end],
                             b.linktype))  # fmt: skip
    return out


class SignallingCapture:
    """The capture's frames; the poll that gives the last batch signals the process first."""

    iface = "fake0"
    linktype = 1

    def __init__(self, sig: int | None) -> None:
        self.batches = _slices(100)
        self.sig = sig

    def poll(self, timeout: float) -> Batch | None:
        if not self.batches:
            return None
        if len(self.batches) == 1 and self.sig is not None:
            os.kill(os.getpid(), self.sig)
        return self.batches.pop(0)

    def stats(self) -> tuple[int, int, int]:
        return (0, 0, 0)

    def close(self) -> None:
        pass


def _make_engine(linktype: int, on_record: Any, on_plugin_error: Any) -> Engine:
    return Engine(linktype, on_record=on_record, bypass=True, on_plugin_error=on_plugin_error)


def _run_worker(sig: int | None) -> list[dict]:
    """A capture worker run as watch runs it (forked), to its stats; its records."""
    ctx = mp.get_context("fork")
    out, stop = ctx.Queue(), ctx.Event()
    p = ctx.Process(target=_worker, args=(0, [SignallingCapture(sig)], _make_engine, out, stop,
                                          ViewLimits(), False))  # fmt: skip
    p.start()
    records: list[dict] = []
    try:
        while True:
            kind, _index, payload = out.get(timeout=30)
            if kind == "records":
                records.extend(payload)
            elif kind == "internal_error":
                pytest.fail(payload)
            elif kind == "stats":
                break
            elif kind == "snapshot" and sig is None and payload.packets == 1068:
                stop.set()  # without a signal, the parent's word ends the worker
    finally:
        stop.set()
        p.join(10)
    assert p.exitcode == 0
    return sorted(records, key=lambda r: r["id"])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_worker_signalled_mid_poll_still_takes_the_batch(sig: int):
    """The worker's poll signals the process, then hands over the last batch: the worker
    must take it (and end after): its records are those of a run that was not signalled."""
    plain = _run_worker(None)
    assert len(plain) == 40
    assert _run_worker(sig) == plain
