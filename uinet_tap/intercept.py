"""An intercepted connection: the two active endpoints of a cut-in, driven on asyncio, and the
stream-like ``conn.client`` / ``conn.server`` a plugin's ``intercept`` handler works with.

A third-party handler (``guarded``) runs step by step under the plugin guard
(plugins/guard.py): a step that holds the event loop past the time limit, or anything it
raises (BaseException included, only a reset is a normal end), fails the handler: both sides
are reset, the failure is reported (``on_error``) and the record says ``handler error: ...``.
At shutdown such a handler is not resumed again, even if it swallows the cancellation."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .plugins.api import FlowView
from .plugins.findings import type_name
from .plugins.guard import GUARD, GuardedCoroutine, PluginFailed, describe, locate
from .stack.active import Incoming, Outgoing, Takeover, Tcb, TcbState, parse_incoming
from .stack.decode import ACK, RST
from .stack.emit import PathTemplate, build

HIGH_WATER = 1 << 20  # drain() waits while more than this is queued towards a peer
LOW_WATER = 256 << 10

Handler = Callable[[Any], Awaitable[None]]
Send = Callable[[int, list[bytes]], None]  # (interface index, frames to send in order)
Build = Callable[..., bytes]  # stack/emit.py's build, or its C twin (stack/fastpath.py)
Cut = Callable[[bytes, int], list[bytes]]  # stack/emit.py's resegment, or its C twin
# New data a cut-in's endpoint sends in one pass, cut into MSS-sized frames as TSO cuts a
# super-segment (what a Linux sender hands its NIC, 64 KiB, less room for the headers).
BURST = 60_000


class ActiveEndpoint:
    """One real endpoint as the handler sees it (see plugins/conn.py for the contract)."""

    def __init__(self, session: InterceptSession, index: int) -> None:
        self._session = session
        self._tcb = session.tcbs[index]
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    async def read(self, n: int = 65536) -> bytes:
        tcb = self._tcb
        while True:
            if tcb.readable:
                data = tcb.read(n, time.time())
                self._session.pump()
                return data
            if tcb.reset:
                raise ConnectionResetError(tcb.error or "connection reset by peer")
            if tcb.fin_received or tcb.state is TcbState.CLOSED:
                return b""
            self._readable.clear()
            await self._readable.wait()

    def write(self, data: bytes) -> None:
        tcb = self._tcb
        if tcb.reset:
            raise ConnectionResetError(tcb.error or "connection reset by peer")
        if not data:
            return
        tcb.send(bytes(data), time.time())
        self._session.pump()

    async def drain(self) -> None:
        tcb = self._tcb
        while tcb.queued > HIGH_WATER and tcb.state is not TcbState.CLOSED:
            self._writable.clear()
            await self._writable.wait()
        if tcb.reset:
            raise ConnectionResetError(tcb.error or "connection reset by peer")

    def close(self) -> None:
        self._tcb.close(time.time())
        self._session.pump()

    def abort(self) -> None:
        self._tcb.abort(time.time())
        self._session.pump()

    def _wake(self) -> None:
        tcb = self._tcb
        if tcb.readable or tcb.fin_received or tcb.state is TcbState.CLOSED:
            self._readable.set()
        if tcb.queued <= LOW_WATER or tcb.state is TcbState.CLOSED:
            self._writable.set()


class Intercepted:
    """What ``Plugin.intercept(conn)`` gets."""

    def __init__(self, client: ActiveEndpoint, server: ActiveEndpoint, flow: FlowView) -> None:
        self.client = client
        self.server = server
        self.flow = flow


class InterceptSession:
    """Both halves of one cut-in connection. Index 0 faces the client (we are its server),
    index 1 the server (we are its client)."""

    def __init__(
        self,
        conn_id: int,
        halves: tuple[tuple[Takeover, PathTemplate], tuple[Takeover, PathTemplate]],
        ifaces: tuple[int, int],
        send: Send,
        flow: FlowView,
        handler: Handler,
        handler_name: str,
        on_settled: Callable[[InterceptSession], None],
        on_gone: Callable[[InterceptSession], None],
        on_error: Callable[[str, str, str | None], None],
        guarded: bool = False,
        build: Build = build,
        cut: Cut | None = None,
    ) -> None:
        """``on_settled``: the handler is done and both sides are closed or in TIME-WAIT (the
        record can be written); ``on_gone``: both active endpoints are CLOSED (the tuple can
        be released); ``on_error(handler name, reason, file:line or None)``: the handler
        failed; ``guarded``: the handler is a third party's (see the module doc); ``build``:
        what makes our frames; ``cut``: what cuts a burst of segments into frames as TSO
        would (stack/emit.py's resegment or its C twin): with it, the endpoints send new
        data in bursts of up to BURST bytes, one pass of their TCP for many frames."""
        now = time.time()
        self.conn_id = conn_id
        self.started = now
        burst = BURST if cut is not None else 0
        self.tcbs = (Tcb(halves[0][0], now, burst=burst), Tcb(halves[1][0], now, burst=burst))
        self._cut = cut
        self.templates = (halves[0][1], halves[1][1])
        self.ifaces = ifaces
        self._send = send
        self._build = build
        self.handler_name = handler_name
        self._on_settled = on_settled
        self._on_gone = on_gone
        self._loop = asyncio.get_running_loop()
        self._on_error = on_error
        self._guarded = guarded
        self._coro: GuardedCoroutine | None = None
        self.endpoints = (ActiveEndpoint(self, 0), ActiveEndpoint(self, 1))
        self.result: str | None = None
        self.handler_done = False
        self.settled = False
        self.gone = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.first_out: float | None = None  # when the first frame of ours left
        self.inflight_at_takeover = (len(halves[0][0].unacked), len(halves[1][0].unacked))
        conn = Intercepted(self.endpoints[0], self.endpoints[1], flow)
        self.task = self._loop.create_task(self._run(handler, conn))
        self.pump()

    async def _run(self, handler: Handler, conn: Intercepted) -> None:
        try:
            if self._guarded:
                await self._run_guarded(handler, conn)
            else:
                await handler(conn)
        except ConnectionResetError:
            self.result = "reset"
        except asyncio.CancelledError:
            if self.task.cancelling():  # shutdown: not the handler's failure
                raise
            self._failed("CancelledError", None)
        except KeyboardInterrupt:
            raise
        except PluginFailed as failed:
            self._failed(failed.reason, failed.where)
        except BaseException as exc:  # SystemExit, GeneratorExit, ... from a handler
            self._failed(self._describe(exc), locate(exc.__traceback__))
        self.handler_done = True
        # A handler that returned leaves no connection half-done: close what is still open.
        for ep, tcb in zip(self.endpoints, self.tcbs, strict=True):
            if tcb.state in (TcbState.ESTABLISHED, TcbState.CLOSE_WAIT):
                ep.close()
        self._check_done()

    async def _run_guarded(self, handler: Handler, conn: Intercepted) -> None:
        coro = GUARD.call(self.handler_name, handler, conn)
        if not inspect.iscoroutine(coro):
            what = f"intercept() returned a {type_name(coro)}, not a coroutine"
            raise PluginFailed(self.handler_name, what)
        self._coro = GuardedCoroutine(self.handler_name, coro)
        await self._coro

    def _describe(self, exc: BaseException) -> str:
        if not self._guarded:
            return describe(exc)
        try:  # its __str__ is the plugin's code too
            return GUARD.call(self.handler_name, describe, exc)
        except PluginFailed:
            return type_name(exc)

    def _failed(self, reason: str, where: str | None) -> None:
        self.result = f"handler error: {reason}"
        self._on_error(self.handler_name, reason, where)
        for ep in self.endpoints:
            ep.abort()

    def input(self, from_client: bool, seq: int, ack: int, flags: int, window: int,
              options: bytes, payload: bytes, recorded: bool = False) -> None:  # fmt: skip
        """A frame for one of our endpoints. ``recorded``: its bytes are in the flow's record
        already (the frame the verdict came with), so the endpoint does not count them again:
        the record's stream and the endpoints' ``bytes_in`` together hold each byte once."""
        seg: Incoming = parse_incoming(seq, ack, flags, window, options, payload)
        tcb = self.tcbs[0 if from_client else 1]
        counted = tcb.stats.bytes_in
        tcb.on_segment(seg, time.time())
        if recorded:
            tcb.stats.bytes_in = counted
        self.pump()

    def pump(self) -> None:
        """Send what the endpoints queued, wake the handler, re-arm the timer."""
        for i, tcb in enumerate(self.tcbs):
            if tcb.out:
                t, make = self.templates[i], self._build
                # one call for the lot: a batch of segments and their ACKs goes out together
                frames = [make(t, o.seq, o.ack, o.flags, o.window, o.options, o.payload)
                          for o in tcb.out]  # fmt: skip
                if self._cut is not None and tcb.burst:
                    frames = cut_bursts(self._cut, t, tcb.out, frames)
                self._send(self.ifaces[i], frames)
                tcb.out.clear()
                if self.first_out is None:
                    self.first_out = time.time()
        for ep in self.endpoints:
            ep._wake()
        self._arm()
        self._check_done()

    def _arm(self) -> None:
        """Keep one loop timer at or before the earliest deadline. Most deadline moves are an
        RTO pushed later by an ACK: the timer then fires early, finds nothing due and re-arms,
        which costs less than rescheduling on every segment."""
        times = [t for t in (tcb.deadline() for tcb in self.tcbs) if t is not None]
        if not times:
            return
        at = min(times)
        if self._timer_at is not None and self._timer_at <= at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_later(max(0.0, at - time.time()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        now = time.time()
        for tcb in self.tcbs:
            at = tcb.deadline()
            if at is not None and at <= now + 0.0005:
                tcb.on_timer(now)
        self.pump()

    def _check_done(self) -> None:
        if self.gone or not self.handler_done:
            return
        ended = (TcbState.TIME_WAIT, TcbState.CLOSED)
        if not self.settled and all(t.state in ended for t in self.tcbs):
            self.settled = True
            if self.result is None:
                self.result = "reset" if any(t.reset for t in self.tcbs) else "closed"
            self._on_settled(self)
        if all(t.state is TcbState.CLOSED for t in self.tcbs):
            self.gone = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._on_gone(self)

    def shutdown(self) -> None:
        """At exit: reset the real endpoints still open rather than leave them waiting for a
        tool that left; one in TIME-WAIT has nothing more to say."""
        if self.gone:
            return
        now = time.time()
        aborted = False
        for tcb in self.tcbs:
            if tcb.state is TcbState.TIME_WAIT:
                tcb.state = TcbState.CLOSED
            elif tcb.state is not TcbState.CLOSED:
                tcb.abort(now)
                aborted = True
        if aborted and not self.settled:
            self.result = "aborted at exit"
        if self._coro is not None:
            self._coro.stop()  # not resumed again, whatever it does with the cancellation
        if not self.task.done():
            self.task.cancel()
        self.handler_done = True
        self.pump()

    def record(self) -> dict:
        c, s = self.tcbs
        return {
            "handler": self.handler_name,
            "result": self.result or "open",
            "in_flight_at_takeover": {
                "s2c": self.inflight_at_takeover[0],
                "c2s": self.inflight_at_takeover[1],
            },
            "to_client": {"state": str(c.state), **c.stats.as_dict()},
            "to_server": {"state": str(s.state), **s.stats.as_dict()},
            "takeover_ms": round(((self.first_out or self.started) - self.started) * 1000, 3),
        }


def cut_bursts(cut: Cut, t: PathTemplate, out: list[Outgoing], frames: list[bytes]) -> list[bytes]:
    """``frames`` (built from ``out`` with ``t``) with each burst cut into its segments, as a
    NIC's TSO cuts a super-segment: the same headers and timestamps on each, sequence numbers
    and IPv4 IDs counting up, PSH and FIN on the last; ``t``'s next IPv4 ID goes past the
    pieces'. On the wire that is what the endpoint sends a segment at a time."""
    header = (40 if t.v6 else 20) + 20
    wire: list[bytes] = []
    for o, frame in zip(out, frames, strict=True):
        if not o.size or len(o.payload) <= o.size:
            wire.append(frame)
            continue
        pieces = cut(frame, o.size + header + len(o.options))
        wire += pieces
        if not t.v6:
            t.ip_id = (t.ip_id + len(pieces) - 1) & 0xFFFF
    return wire


def rst_frame(template: PathTemplate, seq: int, ack: int | None, make: Build = build) -> bytes:
    """A RST (RFC 9293 §3.10.7.1 / RFC 5961 §3.2: its sequence number is the one the receiver
    expects next); with an ACK when answering a segment that had none (a SYN). ``make``:
    stack/emit.py's build or its C twin."""
    flags = RST | (ACK if ack is not None else 0)
    return make(template, seq, ack or 0, flags, 0)
