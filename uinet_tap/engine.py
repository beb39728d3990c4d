"""The engine: frames in (from any driver), decoded, tracked, reassembled; records out."""

from __future__ import annotations

import functools
import itertools
import os
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import orjson

from .flowpcap import FlowPcaps
from .inspection import InspectionGlue
from .native import NativeGlue, native_eligible
from .pcapfile import Batch
from .plugins.detectors.http import METHODS as HTTP_METHODS
from .plugins.detectors.tls import CIPHER_NAMES, VERSION_NAMES
from .plugins.findings import FINDINGS
from .plugins.http_transactions import HttpTransactions
from .plugins.policy import Policy
from .plugins.registry import Loaded
from .reassembly.policy import OverlapPolicy
from .records import DirectionSink, FilePool, ended_record, flow_filename, flow_record
from .stack import fastpath
from .stack.connection import Connection
from .stack.decode import DLT_EN10MB, Decoder
from .stack.events import CloseReason, Direction, FlowClosed, FlowEnded
from .stack.hostos import HostPolicies
from .stack.tracker import Tracker, TrackerConfig


@dataclass(frozen=True, slots=True)
class Options:
    overlap_policy: OverlapPolicy = OverlapPolicy.LINUX
    ignore_vlan: bool = False
    verify_checksums: bool = False
    max_flows: int = 1_000_000
    max_flow_memory: int = 1 << 30
    # Half-open connections tracked in full before handshakes go to the compact table (0:
    # always). Not a command-line option: the records are the same either way.
    eager_half_open: int = 4096
    max_flow_buffer: int = 4 << 20
    max_buffer: int = 512 << 20
    timeout_half_open: float = 60.0
    timeout_established: float = 600.0
    timeout_closing: float = 60.0
    closed_memory: float = 0.0  # see TrackerConfig (watch and inline: 60)
    community_id_seed: int = 0  # the Community ID's seed (records' community_id)
    # Follow every HTTP/1.x request and response (records' transactions); off: only what
    # the detectors find in the early bytes, and no segment handed to Python for it.
    transactions: bool = True
    # "c": the C data plane (built by cffi at install) where it can take a frame, the general
    # path for the rest; "off": the general path only (the reference, and the fallback where
    # C is not built); "auto": c where built. The environment's UINET_TAP_FASTPATH wins, so
    # a whole test suite can be run through each.
    fastpath: str = "auto"

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> Options:
        known = {f.name for f in fields(cls)}
        unknown = set(kwargs) - known
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
        if "overlap_policy" in kwargs:
            kwargs["overlap_policy"] = OverlapPolicy(kwargs["overlap_policy"])
        return cls(**kwargs)

    def fastpath_mode(self) -> str:
        mode = os.environ.get("UINET_TAP_FASTPATH") or self.fastpath
        if mode not in ("auto", "c", "off"):
            raise ValueError(f"unknown fast path {mode!r}: auto, c or off")
        if mode == "auto":
            mode = "c" if fastpath.AVAILABLE else "off"
        if mode == "c" and not fastpath.AVAILABLE:
            raise RuntimeError("the C fast path is not built (reinstall with a C compiler)")
        return mode

    def tracker_config(self, **extra: Any) -> TrackerConfig:
        own = {f.name for f in fields(self)}
        shared = {f.name: getattr(self, f.name) for f in fields(TrackerConfig) if f.name in own}
        return TrackerConfig(**shared, **extra)


@dataclass(slots=True)
class Totals:
    packets: int = 0
    bytes: int = 0
    connections: int = 0
    gaps: int = 0
    gap_bytes: int = 0
    largest: list[tuple[int, dict]] = field(default_factory=list)


class Engine:
    """Wires decoder → tracker → sinks → record callback. One per link type."""

    def __init__(
        self,
        linktype: int,
        options: Options | None = None,
        on_record: Callable[[dict], None] | None = None,
        export_dir: Path | None = None,
        keep_streams: bool = False,
        largest: int = 5,
        plugins: list[Loaded] | None = None,
        policy: Policy | None = None,
        bypass: bool = False,
        on_plugin_error: Callable[[str, str], None] | None = None,
        on_verdict: Callable[[Connection, Any], None] | None = None,
        flow_pcaps: FlowPcaps | None = None,
    ) -> None:
        """``plugins`` None: no inspection at all (records carry no protocol fields).
        ``flow_pcaps``: each connection's frames to its own pcap file; every frame then takes
        the general path (C takes frames without saying whose they are) and no handshake is
        deferred (a deferred one keeps its segments, not its frames)."""
        self.options = options or Options()
        self.flow_pcaps = flow_pcaps
        self._follower: HttpTransactions | None = None  # the connection whose sinks are made
        self.decoder = Decoder(linktype, self.options.verify_checksums)
        # Inline acts on verdicts frame by frame and a cut-in needs every handshake frame as
        # it passes: no deferred half-open connections there.
        hosts = None
        if policy is not None and (policy.target_os or policy.target_os_default):
            hosts = HostPolicies(
                policy.target_os_default or self.options.overlap_policy, policy.target_os
            )
        self.tracker = Tracker(
            self.options.tracker_config(
                defer_half_open=on_verdict is None and flow_pcaps is None, host_policies=hosts
            ),
            self._make_sink,
        )
        self.tracker.on_events = self._drain
        self.on_record = on_record
        self._on_line: Callable[[bytes, str], None] | None = None
        # Takes many lines at once (their text, and how many closed for each reason), where C
        # writes them so (_lines); else on_line takes each.
        self.on_lines: Callable[[bytes, dict[str, int]], None] | None = None
        self._on_closing: Callable[[Connection], None] | None = None
        self.export_dir = export_dir
        self.keep_streams = keep_streams
        self.pool = FilePool() if export_dir is not None else None
        self._names: Counter[str] = Counter()
        self.totals = Totals()
        self._largest_n = largest
        self.truncated_file = False
        # The fast paths skip nothing but what checksum verification would look at.
        self.fastpath = (
            "off"
            if self.options.verify_checksums or flow_pcaps is not None
            else self.options.fastpath_mode()
        )
        if self.fastpath == "c":
            fast = fastpath.CFastPath(self.tracker.config_retain)
            if plugins is not None and self.options.transactions:
                fast.follow_config(sorted(HTTP_METHODS))  # C reads the followers' framing
            self.tracker.use_fast_path(fast)
        # C inspects what it can itself where that cannot change a result (native.py).
        self._native = (
            plugins is not None
            and self.fastpath == "c"
            and export_dir is None
            and not keep_streams
            and on_verdict is None  # inline acts on every verdict as it falls
            and native_eligible(plugins, policy)
        )
        glue = NativeGlue if self._native else InspectionGlue
        self.inspection = (
            glue(self.tracker, plugins, policy, bypass, on_plugin_error, on_verdict)
            if plugins is not None
            else None
        )
        if (
            self.fastpath == "c"
            and (plugins is None or self._native)
            and not keep_streams
            and export_dir is None
            and self.tracker.born_ok()
        ):
            self._let_c_open_flows(plugins is None)

    @property
    def on_line(self) -> Callable[[bytes, str], None] | None:
        """Takes a finished record as its JSON line instead, where one is made as a line (a
        light flow's, in C: _ended), with its close reason; for a caller that only writes
        records out (replay's writer, with no EVE output). on_record takes every other."""
        return self._on_line

    @on_line.setter
    def on_line(self, take: Callable[[bytes, str], None] | None) -> None:
        self._on_line = take
        if self.tracker.fast is not None:  # C writes what it can of the records
            self.tracker.fast.write_records(
                take is not None, FINDINGS.string or 1 << 62, FINDINGS.items or 1 << 62,
                (VERSION_NAMES, CIPHER_NAMES), FINDINGS.size or 1 << 30,
            )  # fmt: skip
        self._wire_lines()

    @property
    def on_closing(self) -> Callable[[Connection], None] | None:
        """The live view's: called as a connection ends, before inspection lets go of its
        bytes (every ending connection is made for it: C then writes no whole line)."""
        return self._on_closing

    @on_closing.setter
    def on_closing(self, closing: Callable[[Connection], None] | None) -> None:
        self._on_closing = closing
        self._wire_lines()

    def _wire_lines(self) -> None:
        """C ends light flows with their whole record lines (Tracker.on_lines) where records
        are taken as lines, nothing reads their connections, and inspection is C's if any."""
        fast = self.tracker.fast
        inspection = self.inspection
        whole = (
            fast is not None and fast.light and self._on_line is not None
            and self._on_closing is None
            and (inspection is None or isinstance(inspection, NativeGlue))
        )  # fmt: skip
        if whole:
            assert fast is not None
            verdict = inspection.verdict_name if isinstance(inspection, NativeGlue) else None
            fast.lines_config(self.options.community_id_seed, verdict)
        self.tracker.on_lines = self._lines if whole else None

    def _lines(self, reason: CloseReason) -> None:
        """The record lines of light flows C ended and wrote whole (Tracker._end_lights),
        counted and handed on as _ended hands on one."""
        fast = self.tracker.fast
        assert fast is not None and self._on_line is not None
        text, (n, http, tls, given, rst, fin, most, first) = fast.lines()
        self.totals.connections += n  # no gap: they ended plain
        lg = self.totals.largest
        if len(lg) < self._largest_n or most > lg[-1][0]:
            start = 0
            for end, size, *_ in fast.line_ends():
                self._largest(size, text[start:end])
                start = end
        if isinstance(self.inspection, NativeGlue):
            self.inspection.finished_in_c(http, tls, first)
        names = (reason.value, "rst", "fin")
        if self.on_lines is not None:
            counts = (given, rst, fin)
            order: list[int] = [k for k in range(3) if counts[k]]
            if len(order) > 1:  # in the order the lines first close so (Counter's order)
                order = list(dict.fromkeys(line[2] for line in fast.line_ends()))
            self.on_lines(text, {names[k]: counts[k] for k in order})
            return
        take = self._on_line
        start = 0
        for end, _, close, *_ in fast.line_ends():
            take(text[start:end], names[close])
            start = end

    def _let_c_open_flows(self, every_port: bool) -> None:
        """C opens a flow at its client's bare SYN itself (ut_run) where every sink of a new
        connection only hashes: without inspection, or with C's own first-bytes detection
        (NativeGlue then names each server port C may open flows to, as it learns the port's
        detector order)."""
        fast = self.tracker.fast
        assert fast is not None
        wants, hstates = (fastpath.NEVER, fastpath.NEVER), (0, 0)
        if self.inspection is not None and self.options.transactions:
            fresh = HttpTransactions()  # where a new connection's follower starts
            wants = (fresh.want(0), fresh.want(1))
            state = fresh.c_state() if fast.follows else None
            if state is not None:
                hstates = (state[0], state[1])
        fast.born_config(wants, hstates)
        self.tracker.born_sinks = self._born_sinks
        if self.inspection is not None:
            self.tracker.born_started = self.inspection.start
            if self.options.transactions:
                fast.new_follower = HttpTransactions
        # _drain would do nothing with their FlowOpened: there is no inspection, or it is C's
        # (NativeGlue.opened passes over a connection C inspects; one C hands over to the
        # Python inspector is opened for it then: NativeGlue._materialize).
        self.tracker.announce_born = False
        fast.born_room = self.tracker.born_room
        fast.on_born = self.tracker.open_born
        if every_port:
            fast.born_all_ports()
        # Until a live view lists the connections (list_connections), a connection is made
        # only when asked for.
        self.tracker.light_on()

    def _make_sink(self, conn: Connection, direction: Direction, sha: Any = None) -> DirectionSink:
        path = None
        if self.export_dir is not None:
            src, dst = (
                (conn.client, conn.server)
                if direction is Direction.C2S
                else (conn.server, conn.client)
            )
            name = flow_filename(src, dst)
            if conn.vlans:
                name += "--vlan" + ".".join(str(v) for v in conn.vlans)
            seen = self._names[name]
            self._names[name] += 1
            path = self.export_dir / (name if not seen else f"{name}c{seen}")
        inspect = None
        if self.inspection is not None:
            if direction is Direction.C2S:
                self.inspection.start(conn)
            inspect = functools.partial(self.inspection.data, conn, int(direction))
        sink = DirectionSink(self.keep_streams, path, self.pool, self.fastpath == "c", inspect, sha)
        if self.inspection is not None and self.options.transactions:
            # Every request and response of HTTP/1.x, whatever the detector decided.
            if direction is Direction.C2S:
                self._follower = HttpTransactions()
            sink.follower = self._follower
            sink.direction = int(direction)
        if self._native:
            sink.c_hash = sink.sha.ctx  # C hashes while it inspects (NativeGlue takes it back)
        return sink

    def list_connections(self) -> None:
        """A live view lists the connections from the tracker's table and timeout lists as
        they go: each has its connection made from its first frame (no light flows: see
        Tracker.light_on). Before any traffic."""
        self.tracker.light_off()
        self._wire_lines()

    def _born_sinks(self, conn: Connection, shas: tuple[Any, Any]) -> tuple[Any, Any]:
        """_make_sink's two sinks of a connection C opened (Tracker.make_born_sinks), where
        they only hash (_let_c_open_flows) into C's contexts, C inspecting (NativeGlue) if
        anything: its inspection began as C opened it (Tracker.born_started), and its
        transaction follower may be there already (Born.follower: C handed it bytes)."""
        inspection = self.inspection
        if inspection is None:
            return DirectionSink.hashing(shas[0], None), DirectionSink.hashing(shas[1], None)
        if inspection.reads(conn):
            data = inspection.data
            c = DirectionSink.hashing(shas[0], functools.partial(data, conn, 0))
            s = DirectionSink.hashing(shas[1], functools.partial(data, conn, 1))
        else:  # C decided it before they were made (NativeGlue._decided)
            c, s = DirectionSink.hashing(shas[0], None), DirectionSink.hashing(shas[1], None)
        if self.options.transactions:
            born = conn.born
            if born.follower is None:
                born.follower = HttpTransactions()
            c.follower = s.follower = born.follower
            s.direction = 1
        return c, s

    def feed(self, ts: float, frame: bytes, wirelen: int | None = None) -> None:
        totals = self.totals
        totals.packets += 1
        totals.bytes += len(frame)
        seg = self.decoder.decode(ts, frame, wirelen)
        if seg is not None:
            self.tracker.segment(ts, seg)
            if self.flow_pcaps is not None and self.tracker.last_conn is not None:
                self.flow_pcaps.write(
                    self.tracker.last_conn, ts, frame, self.decoder.linktype, wirelen or len(frame)
                )
            if self.tracker.events:
                self._drain()

    def feed_batch(self, batch: Batch) -> None:
        """The hot loop: one call per batch of frames from a driver."""
        fast_ok = batch.linktype == DLT_EN10MB and batch.wirelens is None and not batch.tunnels
        if fast_ok and self.fastpath == "c":
            self._feed_ethernet_c(batch)
        else:
            decode = self.decoder.decode
            segment = self.tracker.segment
            tracker = self.tracker
            data = batch.data
            lt = batch.linktype
            wirelens = batch.wirelens or itertools.repeat(None)
            pcaps = self.flow_pcaps
            tunnels = batch.tunnels or itertools.repeat(0)
            for ts, off, n, wl, tunnel in zip(
                batch.times, batch.offsets, batch.lengths, wirelens, tunnels, strict=False
            ):
                frame = bytes(data[off : off + n])
                seg = decode(ts, frame, wl, lt)
                if seg is not None:
                    if tunnel:
                        seg = seg._replace(tunnel=tunnel)
                    segment(ts, seg)
                    if pcaps is not None and tracker.last_conn is not None:
                        pcaps.write(tracker.last_conn, ts, frame, lt, wl or n)
                    if tracker.events:
                        self._drain()
        self.totals.packets += len(batch.lengths)
        self.totals.bytes += sum(batch.lengths)

    def _feed_ethernet_c(self, batch: Batch) -> None:
        """C takes every frame it can; each frame it stops at goes the general way."""
        fast = self.tracker.fast
        assert fast is not None
        data = batch.data
        times, offsets, lengths = batch.times, batch.offsets, batch.lengths
        if not isinstance(times, array):
            times = array("d", times)
        if not isinstance(offsets, array):
            offsets, lengths = array("I", offsets), array("I", lengths)
        count = len(lengths)
        fast.load(data, offsets, lengths, times)
        try:
            self._run_c(fast, data, times, offsets, lengths, count)
        finally:
            fast.unload()

    def _run_c(
        self, fast: fastpath.CFastPath, data: Any, times: Any, offsets: Any, lengths: Any,
        count: int,
    ) -> None:  # fmt: skip
        tracker = self.tracker
        decode = self.decoder.decode
        i = 0
        while i < count:
            stop, handled, full = fast.run(i, count, tracker.last_expiry + 1.0, tracker.tcp_packets)
            tracker.tcp_packets += handled
            if stop >= count:
                break
            if full:
                i = stop
                continue
            off = offsets[stop]
            ts = times[stop]
            # The batch's link type: a pcapng's first interface may be another (raw IP, SLL).
            seg = decode(ts, bytes(data[off : off + lengths[stop]]), None, DLT_EN10MB)
            if seg is not None:
                tracker.segment(ts, seg)
                if tracker.events:
                    self._drain()
            i = stop + 1

    def expire(self, now: float) -> None:
        """Close the connections idle past their timeout at ``now`` (live capture's clock)."""
        self.tracker.expire(now)
        if self.tracker.events:
            self._drain()

    def let_go(self) -> None:
        """Hold nothing of any batch given: the hashing thread is done with their bytes, and
        a reader may reuse its buffers (watch's capture ring, when idle)."""
        if self.tracker.fast is not None:
            self.tracker.fast.settle()

    def finish(self) -> None:
        self.tracker.flush()
        self._drain()
        if self.tracker.fast is not None:
            self.tracker.fast.settle()
        if self.pool is not None:
            self.pool.close()
        if self.flow_pcaps is not None:
            self.flow_pcaps.close()

    def _drain(self) -> None:
        for event in self.tracker.drain_events():
            if isinstance(event, FlowClosed):
                self._closed(event.conn)
            elif isinstance(event, FlowEnded):
                self._ended(event)
            elif self.inspection is not None:
                self.inspection.opened(event.conn)

    def _closed(self, conn: Connection) -> None:
        if self.on_closing is not None:
            self.on_closing(conn)
        sinks = conn.made_sinks()
        if sinks is None:  # a connection C opened whose sinks were never needed
            follower = conn.born.follower
        else:
            follower = sinks[0].follower  # type: ignore[attr-defined]
            if self.pool is not None:  # only an export file has anything to finish
                for sink in sinks:
                    sink.finish()  # type: ignore[attr-defined]
        rec = flow_record(conn, self.export_dir, self.options.community_id_seed)
        if self.inspection is not None:
            rec.update(self.inspection.finish(conn))
        self._followed(rec, follower)
        if self.flow_pcaps is not None:
            self.flow_pcaps.finish(conn, rec)
        self._recorded(rec)

    def _ended(self, event: FlowEnded) -> None:
        """The record of a light flow that ended plain, made from C's numbers and what its
        inspection decided, no connection made; unless something reads the connection (the
        live view's on_closing) or its inspection has to end in Python (nothing decided).
        With on_line, C writes the record's JSON, and the transactions from the flow's logged
        header blocks; Python adds what was decided (the findings as C wrote them) and joins
        the parts (records.ended_record's object is not made). Most light flows never come
        here where records are lines: C ends them and writes their whole lines (_lines)."""
        inspection = self.inspection
        if self.on_closing is not None or (inspection is not None and event.user is None):
            self._closed(self.tracker.connection_of(event))
            return
        ended = event.ended
        seed = self.options.community_id_seed
        fast = self.tracker.fast
        assert fast is not None
        follower = event.follower
        take = self._on_line
        made = None if take is None else fast.ended_line(ended, seed, event.reason.value)
        decided: dict = {}
        if inspection is not None:
            assert isinstance(inspection, NativeGlue)  # light flows are C's to inspect
            decided = inspection.finish_decided(
                event.user, fastpath.ended_bypassed(ended), text=made is not None
            )  # fmt: skip
        logged = None  # the transactions' fields as C wrote them from the flow's log
        if made is not None and isinstance(follower, fastpath.HeadLog):
            logged = fast.transactions_line(follower, made[1], made[2])
        if isinstance(follower, fastpath.HeadLog) and logged is None:  # Python reads the log
            follower = fast.follower_of(follower)
        if made is None or take is None:
            rec = ended_record(fastpath.ended_facts(ended), event.reason, seed)
            rec.update(decided)
            self._followed(rec, follower)
            self._recorded(rec)
            return
        head, c2s_bytes, s2c_bytes = made
        rest = (
            decided
            if logged is not None
            else (decided | self._transactions(follower, c2s_bytes, s2c_bytes))
        )
        try:
            tail = orjson.dumps(rest) if rest else b"{}"
        except orjson.JSONEncodeError:  # the writer converts it (cli._RecordWriter)
            rec = orjson.loads(head + b"}")
            rec.update(rest)
            if isinstance(rec.get("findings"), orjson.Fragment):  # the object's way: a dict
                rec["findings"] = event.user.findings
            if logged:
                rec.update(orjson.loads(b"{" + logged + b"}"))
            self._recorded(rec)
            return
        # The record's object with these keys last (the transactions' after the decision's),
        # as orjson writes it.
        parts = [head]
        if rest:
            parts.append(b"," + tail[1:-1])
        if logged:
            parts.append(b"," + logged)
        parts.append(b"}\n")
        line = b"".join(parts)
        self.totals.connections += 1  # no gap: it ended plain
        self._largest(c2s_bytes + s2c_bytes, line)
        take(line, event.reason.value)

    def _followed(self, rec: dict, follower: HttpTransactions | None) -> None:
        """The connection's HTTP transactions into its record."""
        rec.update(self._transactions(follower, rec["c2s"]["bytes"], rec["s2c"]["bytes"]))

    @staticmethod
    def _transactions(follower: HttpTransactions | None, c2s: int, s2c: int) -> dict:
        """A record's fields of its connection's HTTP transactions (none: no follower, or no
        transaction), its streams ``c2s`` and ``s2c`` bytes long."""
        if follower is None:
            return {}
        follower.finish((c2s, s2c))
        if not follower.transactions:
            return {}
        out: dict[str, Any] = {"transactions": follower.transactions}
        if follower.dropped:
            out["transactions_dropped"] = follower.dropped
        if follower.stopped:  # why later exchanges, if any, are not listed
            out["transactions_stopped"] = follower.stopped
        return out

    def _recorded(self, rec: dict) -> None:
        """A finished record: counted, and handed on."""
        t = self.totals
        t.connections += 1
        for d in ("c2s", "s2c"):
            t.gaps += rec[d]["gap_count"]
            t.gap_bytes += rec[d]["gap_bytes"]
        self._largest(rec["c2s"]["bytes"] + rec["s2c"]["bytes"], rec)
        if self.on_record is not None:
            self.on_record(rec)

    def _largest(self, size: int, rec: dict | bytes) -> None:
        """The summary's largest connections, with this one (``rec``: its record, or its
        JSON line) if it is among them."""
        lg = self.totals.largest
        if len(lg) < self._largest_n or size > lg[-1][0]:
            obj: dict = orjson.loads(rec) if isinstance(rec, bytes) else rec
            lg.append((size, {k: obj[k] for k in ("id", "client", "server", "close")}))
            lg.sort(key=lambda x: -x[0])
            del lg[self._largest_n :]

    def stats(self) -> dict:
        t = self.totals
        tr = self.tracker
        d = self.decoder
        return {
            "packets": t.packets,
            "bytes": t.bytes,
            "tcp_packets": tr.tcp_packets,
            "connections": t.connections,
            "gaps": t.gaps,
            "gap_bytes": t.gap_bytes,
            "anomalies": dict(sorted(tr.anomalies.items())),
            "undecodable": dict(sorted(d.undecodable.items())),
            "orphan_segments": tr.orphans,
            "stragglers": tr.stragglers,
            "evicted": tr.evicted,
            "buffer_forced": tr.buffer_forced,
            "limits": dict(sorted(tr.limits.items())),
            "fragments_reassembled": d.defrag.reassembled,
            "fragment_overlaps": d.defrag.overlaps,
            # partial datagrams dropped by a bound of stack/defrag.py
            "fragment_evictions": d.defrag.evicted,
            "fragment_memcap_evictions": d.defrag.memcap_evicted,
            "fragment_timeouts": d.defrag.timed_out,
            "fragment_oversize": d.defrag.oversize,
            "fragment_too_many": d.defrag.too_many,
            "truncated_file": self.truncated_file,
            "largest": [rec | {"bytes": size} for size, rec in t.largest],
            **(self.inspection.stats() if self.inspection is not None else {}),
        }
