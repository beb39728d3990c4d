"""``uinet-tap inline``: a layer-2 bump in the wire between two interfaces.

Every frame read on one port is sent out of the other unchanged (ARP, ND, UDP, anything),
except for the TCP flows the tool has taken over (cut-in: their frames go to the active
endpoints, which answer with frames of their own) or blocked (dropped, answered with RSTs).
TCP frames are also shown to the passive engine, whose plugins decide each flow's verdict.

Order for a TCP frame: a flow the bump knows is looked up once and its mode says what becomes
of the frame (stack/bridge.py); a flow already passed is forwarded first and counted after
(the shortest path); an undecided flow's frame is tracked first, because the verdict may fall
on this very frame, and a frame that triggers a cut-in is not forwarded: its bytes belong to
the handler.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import functools
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .engine import Engine, Options
from .intercept import InterceptSession, rst_frame
from .plugins.api import Verdict
from .plugins.guard import one_line
from .plugins.handlers import make_handler
from .plugins.inspector import Inspection
from .plugins.policy import Policy
from .plugins.registry import Loaded
from .ports import Port, RxBatch, disable_receive_offloads
from .stack import fastpath
from .stack.bridge import Act, Bridge, BridgeFlow, FlowMode, Reset
from .stack.connection import Connection
from .stack.cutin import NotReady, l2_header
from .stack.decode import DLT_EN10MB, MAX_LAYERS, Segment
from .stack.emit import PathTemplate, build, complete_checksums, resegment
from .stack.events import CloseReason
from .stack.options import timestamp

BATCH = 128  # frames read from one port before the other gets a turn


# New tuples tracked a second at most, by default (--max-new-flows): each costs the frame
# loop some 100 microseconds of Python, which a flood must not take from the passed flows.
NEW_FLOW_RATE = 1000.0
MERGE_BYTES = 65_000  # payload of frames merged into one segment, as a receive offload's


@dataclass(slots=True)
class InlineStats:
    forwarded: int = 0
    forwarded_in_c: int = 0  # of those, frames of passed flows C counted and sent on itself
    resegmented: int = 0
    checksums_completed: int = 0
    too_big: int = 0
    owned_frames_in: int = 0
    blocked_frames: int = 0
    rst_sent: int = 0
    intercepts: int = 0
    intercept_failed: dict[str, int] = field(default_factory=dict)
    tombstone_dropped: int = 0
    cut_in_held: int = 0  # frames an armed cut-in dropped: they would have opened a hole
    not_selected: int = 0  # frames of connections --filter leaves out: forwarded, untracked
    # Frames of tuples not tracked yet (a new connection's SYN, mostly) dropped while frames
    # piled up unread or over --max-new-flows (shedding): their senders send them again, and
    # the passed flows' frames are not held up behind them.
    shed_new: int = 0
    # Frames of owned flows taken with the one before them: data merged into one segment, as
    # a receive offload merges it (RxBatch.follow_on), or pure ACKs the last of a run
    # supersedes (RxBatch.ack_run): one pass of the cut-in's TCP for many frames.
    merged: int = 0
    internal_errors: int = 0


class Inline:
    """The frame loop. Runs on asyncio so intercept handlers can run beside it."""

    def __init__(
        self,
        ports: tuple[Port, Port],
        plugins: list[Loaded],
        policy: Policy | None,
        options: Options,
        on_record: Callable[[dict], None],
        on_plugin_error: Callable[[str, str], None],
        bpf: str | None = None,
        shed: bool = True,
        new_flow_rate: float = NEW_FLOW_RATE,
    ) -> None:
        """``bpf``: only connections whose first frame it keeps are tracked and inspected;
        the others are forwarded untouched (CaptureError if libpcap cannot compile it).
        ``shed``: drop (and count) the frames of tuples not tracked yet while frames pile up
        unread, or beyond ``new_flow_rate`` a second (0: no such limit): a flood of new
        connections must not starve the flows already passed."""
        self.ports = ports
        self.select: Callable[[bytes], int] | None = None
        if bpf is not None:
            from .inputs import _Filter

            self.select = _Filter(bpf).program(DLT_EN10MB).filter
        self.on_plugin_error = on_plugin_error
        self._write_record = on_record
        # The general path only: per-frame verdicts need every segment in Python.
        opts = Options(**{**{f: getattr(options, f) for f in options.__dataclass_fields__},
                          "fastpath": "off"})  # fmt: skip
        self.engine = Engine(
            DLT_EN10MB, opts, self._record, plugins=plugins, policy=policy, bypass=True,
            on_plugin_error=on_plugin_error, on_verdict=self._verdict,
        )  # fmt: skip
        self.tracker = self.engine.tracker
        self.decoder = self.engine.decoder
        # Passed flows go to C (stack/_fast.c: counted only, as bypassed), whose frames C
        # then sends on itself (ports.py RxBatch); every other frame is Python's, as before.
        self.fast: fastpath.CFastPath | None = None
        # Cut-in sessions' frames made while a batch is read go out together after it, per
        # port in order (one sendmmsg, not a call each); None: outside a batch, at once.
        self._held: tuple[list[bytes], list[bytes]] | None = None
        self._rx: tuple[RxBatch, RxBatch] | None = None
        # The batch and index of the frame being handled, whose owned flow's frames after it
        # may merge with it, and how many did.
        self._ahead: tuple[RxBatch, int] | None = None
        self._merged = 0
        self.shed = shed
        self.new_flow_rate = new_flow_rate
        # A token bucket of new tuples to track: new_flow_rate a second, as many at once.
        self._tokens = new_flow_rate
        self._refilled = time.monotonic()
        self._behind = False  # the batch being read was read with frames piling up behind it
        if options.fastpath_mode() == "c":
            self.fast = fastpath.CFastPath(self.tracker.config_retain, bypassed_only=True)
            self.tracker.use_fast_path(self.fast)
            # C sheds a SYN only on a key the tracker does not hold, and only where every
            # connection is tracked (it cannot run --filter's program).
            self.fast.claiming = shed and bpf is None
            self._rx = (RxBatch(ports[0].use_ring()), RxBatch(ports[1].use_ring()))
        # Each flow's mode (inspecting, armed, passed, blocked, owned, closed) and what its
        # frames become: stack/bridge.py. What follows is the records' bookkeeping.
        self.bridge = Bridge(on_release=self._undrop_in_c)
        self.sessions: dict[int, InterceptSession] = {}  # cut-ins whose outcome is not in yet
        self.owned_conns: dict[int, Connection] = {}
        self.held: dict[int, dict] = {}  # records of connections whose cut-in still runs
        self.session_info: dict[int, dict] = {}  # cut-ins that ended before their record
        self.failed: dict[int, str] = {}
        self.handler_errors: dict[int, dict] = {}  # conn id -> its handler's failure
        self.stats = InlineStats()
        self._decided: list[tuple[Connection, Inspection]] = []
        self.on_closed_record: Callable[[dict], None] | None = None  # the live view's

    # -- records -------------------------------------------------------------------------

    def _record(self, rec: dict) -> None:
        cid = rec["id"]
        self.bridge.ended(cid)
        why = self.failed.pop(cid, None)
        if why is not None:
            rec["intercept_failed"] = why
        if cid in self.sessions:
            self.held[cid] = rec
            return
        info = self.session_info.pop(cid, None)
        if info is not None:
            self._attach(rec, info)
        self._emit(rec)

    def _attach(self, rec: dict, info: dict | None) -> None:
        """A cut-in's outcome on its record: the session, and a failed handler's name."""
        if info is not None:
            rec["intercept"] = info
        failed = self.handler_errors.pop(rec["id"], None)
        if failed is not None:
            rec["plugin_errors"] = [*rec.get("plugin_errors", ()), failed["plugin"]]
            rec["plugin_failures"] = [*rec.get("plugin_failures", ()), failed]

    def _handler_failed(self, cid: int, name: str, reason: str, where: str | None) -> None:
        """Counted and reported with the plugins' other failures (once a plugin)."""
        failure = {"plugin": name, "hook": "intercept", "at": where, "error": one_line(reason)}
        self.handler_errors[cid] = failure
        assert self.engine.inspection is not None
        self.engine.inspection.inspector.count_failure(name, failure)

    def _emit(self, rec: dict) -> None:
        self._write_record(rec)
        if self.on_closed_record is not None:
            self.on_closed_record(rec)

    def _session_gone(self, session: InterceptSession) -> None:
        flow = self.bridge.by_id.get(session.conn_id)
        if flow is not None and flow.owner is session:
            self.bridge.owner_gone(flow, time.time())
            self._drop_in_c(flow, fastpath.DROP_TOMBSTONE)  # its stragglers: C swallows them

    def _drop_in_c(self, flow: BridgeFlow, reason: int) -> None:
        """C drops (and counts) the flow's frames from now on, until its tuple is let go,
        where C parses them itself (fastpath.keyed_in_c)."""
        if self.fast is not None and fastpath.keyed_in_c(flow.keys[0]):
            self.fast.drop(flow.keys, flow.until, reason)

    def _undrop_in_c(self, flow: BridgeFlow) -> None:
        if self.fast is not None and fastpath.keyed_in_c(flow.keys[0]):
            self.fast.undrop(flow.keys)

    def _session_settled(self, session: InterceptSession) -> None:
        cid = session.conn_id
        self.sessions.pop(cid, None)
        self.session_info[cid] = session.record()
        conn = self.owned_conns.pop(cid, None)
        if conn is not None and conn.close is None:
            # The tracker stopped seeing this flow at the cut-in; it ends with the cut-in.
            reset = any(t.reset for t in session.tcbs)
            self.tracker.end(conn, CloseReason.RST if reset else CloseReason.FIN)
            self.engine._drain()
        rec = self.held.pop(cid, None)
        if rec is not None:
            self._attach(rec, self.session_info.pop(cid))
            self._emit(rec)

    # -- verdicts ------------------------------------------------------------------------

    def _verdict(self, conn: Connection, insp: Inspection) -> None:
        self._decided.append((conn, insp))

    # -- frames --------------------------------------------------------------------------

    def on_readable(self, side: int) -> None:
        port = self.ports[side]
        if self._rx is not None:
            for _ in range(BATCH // RxBatch.SLOTS):
                if not self._batch(side, port, self._rx[side]):
                    break
            return
        frames = port.recv(BATCH)
        self._behind = self.shed and port.behind()
        self._refill()
        for frame, partial in frames:
            try:
                self.frame(side, frame, partial)
            except Exception as exc:  # a bug must not stop the bridge or lose the batch
                self.internal_error(exc)
        self._behind = False

    def _batch(self, side: int, port: Port, batch: RxBatch) -> int:
        """One batch read in C: C completes the checksums the senders' offloads left partial,
        counts the frames of passed flows and sends them on from its buffer (a GSO
        super-frame cut to the MTU), in order, between the frames Python takes (any other
        flow's, anything that is not plain TCP)."""
        n = port.recv_batch(batch, self.ports[1 - side].mtu)
        if not n:
            return 0
        fast, tracker = self.fast, self.tracker
        assert fast is not None
        out = self.ports[1 - side]
        st = self.stats
        st.checksums_completed += batch.complete_partial()
        fast.load_frames(batch)
        self._behind = self.shed and port.behind()
        self._refill()
        held: tuple[list[bytes], list[bytes]] = ([], [])
        self._held = held
        try:
            i = 0
            while i < n:  # C takes frames from i on, up to one Python must take
                shedding = fast.claiming and self._shedding()
                fast.shed(batch.flags if shedding else None)
                stop, handled, full = fast.run(i, n, tracker.last_expiry + 1.0,
                                               tracker.tcp_packets)  # fmt: skip
                tracker.tcp_packets += handled
                shed = fast.shed_taken() if shedding else 0
                st.shed_new += shed
                blocked, tombstone = fast.dropped_taken()
                st.blocked_frames += blocked
                st.tombstone_dropped += tombstone
                if stop > i:
                    self._send_in_c(out, batch, i, stop, shed + blocked + tombstone)
                if tracker.events:
                    self.engine._drain()
                i = stop
                if full or i >= n:
                    continue  # C's output arrays filled: run again from there
                plain, unsupported, not_tcp = fast.plain_non_tcp(i, n, MAX_LAYERS)
                if plain:  # ARP, UDP, ...: on from C, counted as the decoder counts them
                    self._send_in_c(out, batch, i, i + plain)
                    undecodable = self.decoder.undecodable
                    if unsupported:
                        undecodable["unsupported_ethertype"] += unsupported
                    if not_tcp:
                        undecodable["non_tcp"] += not_tcp
                    i += plain
                    continue
                frame, partial = batch.frame(i)
                self._ahead = (batch, i)
                i += 1
                try:
                    self.frame(side, frame, partial)
                except Exception as exc:  # a bug must not stop the bridge
                    self.internal_error(exc)
                finally:
                    self._ahead = None
                i += self._merged  # frames the one before took with it
                self._merged = 0
        finally:
            fast.unload()
            fast.shed(None)
            self._behind = False
            port.release_batch()
            self._held = None
            for k in (0, 1):
                if held[k]:
                    self.ports[k].send_frames(held[k])
        return n

    def _refill(self) -> None:
        now = time.monotonic()
        rate = self.new_flow_rate
        self._tokens = min(rate, self._tokens + rate * (now - self._refilled))
        self._refilled = now

    def _shedding(self) -> bool:
        """Whether a frame of a tuple not tracked yet is dropped now."""
        return self.shed and (self._behind or (self.new_flow_rate > 0 and self._tokens < 1))

    def _send_in_c(self, out: Port, batch: RxBatch, start: int, stop: int, shed: int = 0) -> None:
        """Frames [start, stop) of the batch out of ``out`` from C's buffer, counted; ``shed``
        of them C dropped (flagged, not sent)."""
        out.send_batch(batch, start, stop)
        st, totals = self.stats, self.engine.totals
        st.forwarded += stop - start - shed
        st.forwarded_in_c += stop - start - shed
        st.resegmented += out.batch_cut
        st.too_big += out.batch_whole
        totals.packets += stop - start
        totals.bytes += out.batch_bytes

    def internal_error(self, exc: BaseException) -> None:
        """Count it; say it once on stderr, in one line (the stats keep the count)."""
        self.stats.internal_errors += 1
        if self.stats.internal_errors == 1:
            print(f"warning: internal error: {type(exc).__name__}: {exc} (the bridge goes on; "
                  "later ones are counted in the stats)", file=sys.stderr, flush=True)  # fmt: skip

    def forward(self, side: int, frame: bytes, partial: bool) -> None:
        """Send a frame read on ``side`` out of the other port, as it was; a super-frame is
        cut to the MTU and a partial checksum completed first (the sender's offloads)."""
        out = self.ports[1 - side]
        st = self.stats
        if partial:
            frame = complete_checksums(frame)
            st.checksums_completed += 1
        if len(frame) - len(l2_header(frame)) > out.mtu:
            pieces = resegment(frame, out.mtu)
            if len(pieces) > 1:
                st.resegmented += 1
                for p in pieces:
                    out.send(p)
                st.forwarded += 1
                return
            st.too_big += 1  # sent anyway: the port counts the error if the kernel refuses
        if out.send(frame):
            st.forwarded += 1

    def send(self, side: int, frames: list[bytes]) -> None:
        """A cut-in session's frames, out of one port in order (after the batch being read)."""
        if self._held is not None:
            self._held[side].extend(frames)
        else:
            self.ports[side].send_frames(frames)

    def frame(self, side: int, frame: bytes, partial: bool) -> None:
        now = time.time()
        totals = self.engine.totals
        totals.packets += 1
        totals.bytes += len(frame)
        seg = self.decoder.decode(now, frame)
        if seg is None:
            self.forward(side, frame, partial)
            return
        key = self.tracker.key(seg)[0]
        flow = self.bridge.by_key.get(key)
        if flow is not None:
            cmd = self.bridge.frame(flow, seg, now)
            act = cmd.act
            if act is Act.FORWARD:  # passed: forwarded first, counted after
                self.forward(side, frame, partial)
                self._track(now, seg)
                return
            if act is Act.HAND_UP:
                merged = 0
                ahead = self._ahead
                if ahead is not None and not partial:
                    seg, merged = self._merge(seg, *ahead)
                self._hand_up(flow, key == flow.keys[0], seg, now, frames=1 + merged)
                return
            if act is Act.DROP or act is Act.RESET:
                if cmd.reason == "blocked":
                    self.stats.blocked_frames += 1  # not tracked: the flow's record is written
                    if flow.answered >= self.bridge.answers:
                        # Its RST answers are spent: C drops its later frames itself.
                        self._drop_in_c(flow, fastpath.DROP_BLOCKED)
                else:
                    self.stats.tombstone_dropped += 1
                self._send_resets(side, frame, seg, cmd.resets, None)
                return
            # Act.INSPECT: on to the tracker; Act.UNKNOWN: a new connection on the tuple
        if self.select is not None and key not in self.tracker.table and not self.select(frame):
            # Not a connection the operator selected: forwarded as it came, never tracked
            # (a frame of one already tracked goes on below whatever the filter says).
            self.stats.not_selected += 1
            self.forward(side, frame, partial)
            return
        if self.shed and flow is None and key not in self.tracker.table:
            # A tuple not tracked yet: tracked only within the rate of new ones, and not while
            # frames pile up (C sheds what it parses itself; here the rest: tagged, IPv6,
            # what --filter selects), before the costly part.
            if self._shedding():
                self.stats.shed_new += 1
                return
            self._tokens -= 1
        armed = flow is not None and flow.mode is FlowMode.ARMED
        if armed:
            assert flow is not None
            if self._opens_hole(flow, seg, now):
                self.stats.cut_in_held += 1  # not tracked either: for both, lost before the tool
                return
            entry = self.tracker.table.get(key)
            if entry is not None and self._cut_in(flow, entry[1], seg, now):
                # Not tracked: the record's stream ends where the tool's own TCP takes over,
                # so no byte is in both (nor is a frame past a hole the tracker would keep).
                return
        self._track(now, seg)
        entry = self.tracker.table.get(key)
        if entry is None:
            self.forward(side, frame, partial)
            return
        conn, from_client = entry
        flow = self.bridge.track(conn)
        insp: Inspection | None = conn.user  # type: ignore[assignment]
        verdict = insp.verdict if insp is not None else None
        if verdict is Verdict.BLOCK:
            self._block(flow, from_client, side, frame, seg, now)
            return
        if verdict is Verdict.INTERCEPT and not armed:  # armed before: tried above already
            self.bridge.arm(flow)
            if self._cut_in(flow, from_client, seg, now, recorded=True):
                return
        self.forward(side, frame, partial)
        if flow.mode is FlowMode.INSPECTING or flow.mode is FlowMode.ARMED:
            watch = self.bridge.watch(flow)
            watch.forwarded(from_client, side, frame, seg, timestamp(seg.options), now)
        elif verdict is Verdict.PASS:
            self._pass(conn)

    def _merge(self, seg: Segment, batch: RxBatch, i: int) -> tuple[Segment, int]:
        """An owned flow's frame ``i`` of the batch, with the frames after it that a receive
        offload would merge into one segment, or with the run of pure ACKs it starts, of which
        only the last tells its TCP anything: (the segment to hand up, frames taken with it)."""
        if seg.payload:
            more, merged, size, flags = batch.follow_on(i, MERGE_BYTES)
            if merged:
                seg = seg._replace(payload=seg.payload + more, flags=flags)
        else:
            merged, ack, window, options = batch.ack_run(i)
            if merged:
                lengths = batch.lengths
                size = sum([lengths[j] for j in range(i + 1, i + 1 + merged)])
                seg = seg._replace(ack=ack, window=window, options=options)
        if merged:
            self._merged = merged
            self.stats.merged += merged
            totals = self.engine.totals
            totals.packets += merged
            totals.bytes += size
        return seg, merged

    def _hand_up(self, flow: BridgeFlow, from_client: bool, seg: Segment, now: float,
                 recorded: bool = False, frames: int = 1) -> None:  # fmt: skip
        """A frame of an owned flow (or ``frames`` of them, merged): to the cut-in session's
        endpoint it is addressed to (``recorded``: the tracker counted it already)."""
        self.stats.owned_frames_in += frames
        conn = self.owned_conns.get(flow.conn_id)
        if conn is not None and not recorded:  # counters for the live view and the record
            ep = conn.c if from_client else conn.s
            ep.packets += frames
            ep.payload_bytes += len(seg.payload)
            conn.last_seen = now
        flow.owner.input(from_client, seg.seq, seg.ack, seg.flags, seg.window, seg.options,
                         seg.payload, recorded)  # fmt: skip

    def _opens_hole(self, flow: BridgeFlow, seg: Segment, now: float) -> bool:
        """An armed cut-in's frame that would open a hole (CutInWatch.opens_hole)."""
        entry = self.tracker.table.get(self.tracker.key(seg)[0])
        if entry is None or flow.watch is None:
            return False
        conn, from_client = entry
        return flow.watch.opens_hole(conn, from_client, seg, now)

    def _track(self, now: float, seg: Segment) -> None:
        self.tracker.segment(now, seg)
        if self.tracker.events:
            self.engine._drain()
        if self._decided:
            decided, self._decided = self._decided, []
            for conn, insp in decided:
                if insp.verdict is Verdict.PASS:
                    self._pass(conn)

    def _pass(self, conn: Connection) -> None:
        if conn.close is not None:
            self.bridge.ended(conn.id)  # decided and ended by the same frame: its record is out
            return
        self.bridge.pass_(self.bridge.track(conn))

    # -- block ---------------------------------------------------------------------------

    def _templates(self, flow: BridgeFlow, from_client: bool, frame: bytes, seg: Segment):  # type: ignore[no-untyped-def]
        """(towards the sender of ``seg``, towards its peer): what frames impersonating the
        other side look like. Without a frame from the peer yet, its MACs are the sender's
        swapped."""
        l2 = l2_header(frame)
        peer_l2 = b""
        peer_ttl = 64
        if flow.watch is not None:
            peer = flow.watch.sides[1 if from_client else 0]
            peer_l2, peer_ttl = peer.l2, peer.ttl
        if not peer_l2:
            peer_l2 = _swap_macs(l2)
        to_sender = PathTemplate(peer_l2, seg.dst, seg.src, seg.dport, seg.sport, ttl=peer_ttl)
        to_peer = PathTemplate(l2, seg.src, seg.dst, seg.sport, seg.dport, ttl=seg.ttl)
        return to_sender, to_peer

    def _block(self, flow: BridgeFlow, from_client: bool, side: int, frame: bytes,
               seg: Segment, now: float) -> None:  # fmt: skip
        """Drop the flow and reset both ends (RFC 9293 §3.10.7.1; the RSTs' sequence numbers:
        stack/bridge.py)."""
        conn = flow.conn
        templates = self._templates(flow, from_client, frame, seg)
        resets = self.bridge.block(flow, seg, from_client, conn.handshake, now)
        self._send_resets(side, frame, seg, resets, templates)
        self.stats.blocked_frames += 1
        self.tracker.end(conn, CloseReason.RST)
        self.engine._drain()

    def _send_resets(self, side: int, frame: bytes, seg: Segment, resets: tuple[Reset, ...],
                     templates: tuple[PathTemplate, PathTemplate] | None) -> None:  # fmt: skip
        """Send ``resets``: back out of ``side`` to the frame's sender, or on to its peer.
        Without templates, one towards the sender looks like the frame, MACs swapped."""
        for r in resets:
            if templates is not None:
                template = templates[0] if r.to_sender else templates[1]
            else:
                template = PathTemplate(_swap_macs(l2_header(frame)), seg.dst, seg.src,
                                        seg.dport, seg.sport)  # fmt: skip
            make = fastpath.build if self.fast is not None else build
            self.ports[side if r.to_sender else 1 - side].send(
                rst_frame(template, r.seq, r.ack, make)
            )
            self.stats.rst_sent += 1

    # -- cut-in --------------------------------------------------------------------------

    def _cut_in(self, flow: BridgeFlow, from_client: bool, seg: Segment, now: float,
                recorded: bool = False) -> bool:  # fmt: skip
        """Take the armed flow over at this frame if it can be; False: forward it (still
        armed, or the cut-in failed and the flow is passed). ``recorded``: the frame was
        tracked (the verdict came with it, so it is the handler's to see and the record's)."""
        conn = flow.conn
        watch = flow.watch
        insp: Inspection | None = conn.user  # type: ignore[assignment]
        if watch is None or insp is None:
            return False  # decided at its first frame: nothing seen yet
        mtus = (self.ports[0].mtu, self.ports[1].mtu)
        if watch.not_ready(conn) is None:
            watch.clock(from_client, timestamp(seg.options), now)
        halves = watch.takeover(conn, now, mtus)
        if isinstance(halves, NotReady):
            if halves.final:
                self._fail(conn, halves.reason)
            return False  # armed: the next frames may bring what is missing
        c = watch.sides[0]
        s = watch.sides[1]
        try:
            handler, name, guarded = self._handler(insp)
        except ValueError as exc:
            self._fail(conn, str(exc))
            return False
        # The handler gets its own copy of the view: what it does to it stays out of the record.
        view = dataclasses.replace(insp.view, findings=copy.deepcopy(insp.view.findings))
        session = InterceptSession(
            conn.id, halves, (c.iface, s.iface), self.send, view, handler, name,
            self._session_settled, self._session_gone,
            functools.partial(self._handler_failed, conn.id), guarded,
            fastpath.build if self.fast is not None else build,
            fastpath.resegment if self.fast is not None else None,
        )  # fmt: skip
        self.bridge.own(flow, session)
        self.sessions[conn.id] = session
        self.owned_conns[conn.id] = conn
        self.tracker.hand_over(conn, (c.nxt, s.nxt))  # type: ignore[arg-type]
        self.tracker.bypass(conn)
        self.tracker.forget(conn)  # its frames go to the session from now on, not the tracker
        self.stats.intercepts += 1
        self._hand_up(flow, from_client, seg, now, recorded)
        return True

    def _fail(self, conn: Connection, why: str) -> None:
        self.failed[conn.id] = why
        self.stats.intercept_failed[why] = self.stats.intercept_failed.get(why, 0) + 1
        self._pass(conn)

    def _handler(self, insp: Inspection):  # type: ignore[no-untyped-def]
        """(handler, its name, whether it is a third party's: run under the guard)."""
        decider = insp.decider
        if isinstance(decider, Loaded):
            guarded = decider.custom_intercept and not decider.trusted
            return decider.intercept, decider.name, guarded
        handler = getattr(decider, "handler", None) or "relay"
        options = getattr(decider, "options", None) or {}
        return make_handler(handler, options), handler, False

    # -- lifecycle -----------------------------------------------------------------------

    def tick(self) -> None:
        """Time moves on for flows that see no frame. While frames wait to be read, they move
        it themselves: the clock would be ahead of them, and would end their connections
        before their last frames were read (watch's SingleBackend.step does the same)."""
        now = time.time()
        if any(p.waiting() for p in self.ports):
            now = min(now, self.tracker.now)
        self.engine.expire(now)
        self.bridge.expire(now)

    def status_line(self, uptime: float) -> str:
        st = self.stats
        totals = self.engine.totals
        failed = sum(st.intercept_failed.values())
        drops = sum(p.drops() for p in self.ports)
        return (
            f"inline {self.ports[0].name} <-> {self.ports[1].name}: {uptime:.0f}s "
            f"frames={totals.packets} forwarded={st.forwarded} flows active="
            f"{self.tracker.active} total={self.tracker.next_id} cut-ins={st.intercepts} "
            f"live={len(self.sessions)} failed={failed} blocked-frames={st.blocked_frames} "
            f"kernel-drops={drops}"
        )

    def shutdown(self) -> None:
        """While the loop still runs: end every cut-in (see InterceptSession.shutdown)."""
        for flow in list(self.bridge.by_id.values()):
            if flow.mode is FlowMode.OWNED:
                flow.owner.shutdown()

    def finish(self) -> dict:
        self.engine.finish()
        for cid, rec in list(self.held.items()):
            self.held.pop(cid)
            self._attach(rec, None)
            self._emit(rec)
        stats = self.engine.stats()
        st = self.stats
        stats["inline"] = {
            "ports": {
                p.name: {
                    "received": p.received,
                    "sent": p.sent,
                    "kernel_drops": p.drops(),
                    "send_errors": p.send_errors,
                    "ring": p.in_ring,  # reads a receive ring (to the end)
                    "ring_cut": p.ring_cut,
                }
                for p in self.ports
            },
            "forwarded": st.forwarded,
            "forwarded_in_c": st.forwarded_in_c,
            "resegmented": st.resegmented,
            "checksums_completed": st.checksums_completed,
            "too_big": st.too_big,
            "intercepts": st.intercepts,
            "intercept_failed": st.intercept_failed,
            "owned_frames_in": st.owned_frames_in,
            "merged": st.merged,
            "blocked_frames": st.blocked_frames,
            "rst_sent": st.rst_sent,
            "tombstone_dropped": st.tombstone_dropped,
            "cut_in_held": st.cut_in_held,
            "not_selected": st.not_selected,
            "shed_new": st.shed_new,
            "internal_errors": st.internal_errors,
        }
        return stats


def _swap_macs(l2: bytes) -> bytes:
    """An Ethernet header for the way back: destination and source swapped, tags kept."""
    return l2[6:12] + l2[0:6] + l2[12:]


async def run_inline(
    inline: Inline,
    duration: float | None,
    ready: Callable[[], None],
    view: Any = None,
    status: Callable[[str], None] | None = None,
    status_interval: float = 5.0,
) -> None:
    """The frame loop until SIGINT/SIGTERM, ``duration`` or (with a live ``view``) q."""
    loop = asyncio.get_running_loop()

    # Anything else that raises in a callback or a task (a timer, a handler nobody awaits)
    # is reported the same way, not as asyncio's multi-line traceback.
    def report(_loop: asyncio.AbstractEventLoop, ctx: dict[str, Any]) -> None:
        inline.internal_error(ctx.get("exception") or RuntimeError(ctx["message"]))

    loop.set_exception_handler(report)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    for side, port in enumerate(inline.ports):
        loop.add_reader(port.fileno(), inline.on_readable, side)
    ready()
    started = time.monotonic()

    async def ticker() -> None:
        last = 0.0
        maker = None
        if view is not None:
            from .live_view_data import SnapshotMaker

            maker = SnapshotMaker(
                inline.engine, extra=inline.owned_conns.values, clock=time.time
            )  # ages move with the clock, not only with packets
            inline.on_closed_record = maker.closed_record
        last_status = started
        while True:
            await asyncio.sleep(0.1 if view is not None else 0.5)
            now = time.monotonic()
            if now - last >= 0.5:
                last = now
                inline.tick()
            if status is not None and now - last_status >= status_interval:
                last_status = now
                status(inline.status_line(now - started))
            if view is not None and maker is not None:
                if view.due():
                    view.update(maker.snapshot())
                if view.poll_keys():
                    stop.set()

    tick_task = loop.create_task(ticker())
    try:
        if duration is not None:
            await asyncio.wait_for(stop.wait(), timeout=duration)
        else:
            await stop.wait()
    except TimeoutError:
        pass
    finally:
        inline.shutdown()
        tick_task.cancel()
        if status is not None:  # the totals at the end, however short the run
            status(inline.status_line(time.monotonic() - started))
        for port in inline.ports:
            loop.remove_reader(port.fileno())
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def log_stderr(message: str) -> None:
    print(f"uinet-tap: {message}", file=sys.stderr, flush=True)


def open_ports(names: tuple[str, str], log: Callable[[str], None]) -> tuple[Port, Port]:
    if names[0] == names[1]:
        from .ports import PortError

        raise PortError(f"the two interfaces must differ (both are {names[0]})")
    ports = (Port(names[0], 0), Port(names[1], 1))
    for p in ports:
        log(disable_receive_offloads(p.name))
    return ports
