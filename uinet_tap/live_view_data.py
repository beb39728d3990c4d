"""Building the live view's Snapshot from the engine (see snapshot.py)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from itertools import chain, islice

from .ended import BYTES_BUDGET, KEEP_BYTES, KEEP_ENDED_WATCH, EndedFlows
from .engine import Engine
from .inspection import PASSIVE_NAMES
from .native import NativeGlue
from .records import format_endpoint
from .snapshot import FlowRow, Snapshot
from .stack.connection import Connection
from .stack.decode import NOT_TCP_REASONS

_INFO_KEYS = ("sni", "host", "server_banner", "client_banner", "greeting", "server_version",
              "target", "queries", "user", "client_id", "command", "cookie")  # fmt: skip


def _info(findings: dict) -> str:
    for key in _INFO_KEYS:
        value = findings.get(key)
        if value:
            return ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return ""


class SnapshotMaker:
    """Rows for the most recently active flows (a live view shows a screenful: building every
    row of 100,000 flows five times a second would cost more than the capture), and for the
    ended flows, kept in a bounded list (ended.py) with their first bytes."""

    def __init__(
        self,
        engine: Engine,
        max_rows: int = 2000,
        keep_ended: int = KEEP_ENDED_WATCH,
        keep_bytes: int = KEEP_BYTES,
        bytes_budget: int = BYTES_BUDGET,
        extra: Callable[[], Iterable[Connection]] = tuple,
        clock: Callable[[], float] | None = None,
        incremental: bool = False,
        rows: bool = True,
    ) -> None:
        """``extra``: connections the tracker no longer times (inline mode's cut-ins).
        ``clock``: the view's now when it runs ahead of the packets (watch: the wall clock).
        ``incremental``: each snapshot carries only the flows ended since the one before (a
        capture worker's, whose parent keeps the list). ``rows``: False where only the counts
        are read (watch's status lines): no flow rows, and the connections are not listed
        (C keeps its flows light: Engine.list_connections)."""
        self.engine = engine
        self.rows = rows
        self.extra = extra
        self.clock = clock
        self.names = engine.inspection.names if engine.inspection is not None else PASSIVE_NAMES
        if isinstance(engine.inspection, NativeGlue) and rows:
            engine.inspection.keep_early = True  # C's inspection keeps the bytes the detail shows
        self.max_rows = max_rows
        self.keep_bytes = keep_bytes
        self.ended = EndedFlows(keep_ended, bytes_budget)
        self.incremental = incremental
        self._fresh: deque[FlowRow] = deque()
        self._fresh_dropped = 0
        # what a connection showed as it ended, until its record comes (same call chain)
        self._closing: dict[int, tuple[bytes, bytes, dict]] = {}
        self._tcp_shared: dict[tuple, dict] = {}
        if rows:
            engine.on_closing = self.closing
            engine.list_connections()

    def row(self, conn: Connection) -> FlowRow:
        fast = self.engine.tracker.fast
        if conn.fast_slot >= 0 and fast is not None:
            cp, cb, sp, sb, last = fast.counters(conn)
        else:
            cp, cb = conn.c.packets, conn.c.payload_bytes
            sp, sb, last = conn.s.packets, conn.s.payload_bytes, conn.last_seen
        insp = conn.user
        view = getattr(insp, "view", None)
        verdict = getattr(insp, "verdict", None)
        findings = dict(view.findings) if view is not None else {}
        return FlowRow(
            id=conn.id,
            state=conn.state.value,
            midstream=conn.midstream,
            client=format_endpoint(*conn.client),
            server=format_endpoint(*conn.server),
            vlan=tuple(conn.vlans),
            protocol=view.protocol if view is not None else None,
            confidence=view.confidence if view is not None else None,
            info=_info(findings),
            verdict=self.names[verdict] if verdict is not None else None,
            decided_by=getattr(insp, "decided_by", None),
            c2s_bytes=cb,
            s2c_bytes=sb,
            c2s_packets=cp,
            s2c_packets=sp,
            start=conn.start,
            last_seen=max(last, conn.last_seen),
            gaps=conn.has_gaps,
            bypassed=conn.bypassed,
            findings=findings,
            c2s_head=bytes(view.c2s[: self.keep_bytes]) if view is not None else b"",
            s2c_head=bytes(view.s2c[: self.keep_bytes]) if view is not None else b"",
            tcp=_tcp(conn),
        )

    def closing(self, conn: Connection) -> None:
        """A connection ends: keep what its record will not carry (early bytes, TCP facts)."""
        if len(self._closing) > 4096:  # records always follow at once; never let this grow
            self._closing.clear()
        view = getattr(conn.user, "view", None)
        k = self.keep_bytes
        c2s = bytes(view.c2s[:k]) if view is not None else b""
        s2c = bytes(view.s2c[:k]) if view is not None else b""
        tcp = _tcp(conn)
        # Most flows' TCP facts are alike: an ended row shares one dict (the rows are frozen),
        # a few hundred bytes less for each of the thousands listed.
        key = tuple(tcp.values())
        shared = self._tcp_shared.get(key)
        if shared is None:
            if len(self._tcp_shared) > 1024:
                self._tcp_shared.clear()
            shared = self._tcp_shared[key] = tcp
        self._closing[conn.id] = (c2s, s2c, shared)

    def closed_record(self, rec: dict) -> None:
        """Keep a row for a flow that just ended, in the bounded list."""
        c2s_head, s2c_head, tcp = self._closing.pop(rec["id"], (b"", b"", {}))
        row = FlowRow(
                id=rec["id"], state=rec["close"].upper(), midstream=rec["midstream"],
                client=rec["client"], server=rec["server"], vlan=tuple(rec["vlan"]),
                protocol=rec.get("protocol"), confidence=rec.get("confidence"),
                info=_info(rec.get("findings") or {}), verdict=rec.get("verdict"),
                decided_by=rec.get("decided_by"),
                c2s_bytes=rec["c2s"]["payload_bytes"], s2c_bytes=rec["s2c"]["payload_bytes"],
                c2s_packets=rec["c2s"]["packets"], s2c_packets=rec["s2c"]["packets"],
                start=rec["start"], last_seen=rec["end"],
                gaps=bool(rec["c2s"]["gaps"] or rec["s2c"]["gaps"]),
                bypassed=rec.get("bypassed", False), findings=rec.get("findings") or {},
                c2s_head=c2s_head, s2c_head=s2c_head, tcp=tcp,
        )  # fmt: skip
        if self.incremental:
            self._fresh.append(row)
            if len(self._fresh) > self.ended.keep:
                self._fresh.popleft()
                self._fresh_dropped += 1
        else:
            self.ended.add(row)

    def snapshot(self, drops: tuple[int, int] = (0, 0)) -> Snapshot:
        engine = self.engine
        tracker = engine.tracker
        per_list = self.max_rows // 3
        recent = (islice(reversed(lru), per_list) for lru in tracker.lrus)  # latest first
        rows = [self.row(conn) for conn in chain(self.extra(), *recent)] if self.rows else []
        undecodable = engine.decoder.undecodable
        not_tcp = sum(undecodable.get(k, 0) for k in NOT_TCP_REASONS)
        inspection = engine.inspection
        now = tracker.now if self.clock is None else max(tracker.now, self.clock())
        if self.incremental:
            closed, dropped, released = tuple(self._fresh), self._fresh_dropped, 0
            self._fresh.clear()
            self._fresh_dropped = 0
        else:
            closed, dropped = self.ended.rows(), self.ended.dropped
            released = self.ended.released
        return Snapshot(
            now=now,
            packets=engine.totals.packets,
            bytes=engine.totals.bytes,
            tcp_packets=tracker.tcp_packets,
            flows_active=tracker.active,
            flows_total=tracker.next_id,
            undecodable=sum(undecodable.values()) - not_tcp,
            not_tcp=not_tcp,
            plugin_errors=sum(inspection.inspector.errors.values()) if inspection else 0,
            kernel_drops=drops[0],
            interface_drops=drops[1],
            flows=tuple(rows),
            closed=closed,
            closed_dropped=dropped,
            bytes_released=released,
        )


def _tcp(conn: Connection) -> dict:
    client_mss, server_mss, sack = conn.syn_facts()
    return {
        "handshake": conn.handshake,
        "mss": (client_mss, server_mss),
        "window_scaling": conn.wscale_ok,
        "timestamps": conn.ts_ok,
        "sack_permitted": sack,
    }
