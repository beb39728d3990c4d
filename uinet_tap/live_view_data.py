"""Building the live view's Snapshot from the engine (see snapshot.py)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from itertools import chain, islice

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
    row of 100,000 flows five times a second would cost more than the capture)."""

    def __init__(
        self,
        engine: Engine,
        max_rows: int = 2000,
        keep_closed: int = 200,
        extra: Callable[[], Iterable[Connection]] = tuple,
    ) -> None:
        """``extra``: connections the tracker no longer times (inline mode's cut-ins)."""
        self.engine = engine
        self.extra = extra
        self.names = engine.inspection.names if engine.inspection is not None else PASSIVE_NAMES
        if isinstance(engine.inspection, NativeGlue):
            engine.inspection.keep_early = True  # C's inspection keeps the bytes the detail shows
        self.max_rows = max_rows
        self.closed: deque[FlowRow] = deque(maxlen=keep_closed)

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
            gaps=bool(conn.c.stream.gaps or conn.s.stream.gaps),
            bypassed=conn.bypassed,
            findings=findings,
            c2s_head=view.c2s if view is not None else b"",
            s2c_head=view.s2c if view is not None else b"",
            tcp={
                "handshake": conn.handshake,
                "mss": (conn.c.mss, conn.s.mss),
                "window_scaling": conn.wscale_ok,
                "timestamps": conn.ts_ok,
                "sack_permitted": conn.c.sack_permitted and conn.s.sack_permitted,
            },
        )

    def closed_record(self, rec: dict) -> None:
        """Keep a row for a flow that just ended (the view shows them for a while)."""
        self.closed.append(
            FlowRow(
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
            )
        )  # fmt: skip

    def snapshot(self, drops: tuple[int, int] = (0, 0)) -> Snapshot:
        engine = self.engine
        tracker = engine.tracker
        per_list = self.max_rows // 3
        recent = (islice(reversed(lru), per_list) for lru in tracker.lrus)  # latest first
        rows = [self.row(conn) for conn in chain(self.extra(), *recent)]
        undecodable = engine.decoder.undecodable
        not_tcp = sum(undecodable.get(k, 0) for k in NOT_TCP_REASONS)
        inspection = engine.inspection
        return Snapshot(
            now=tracker.now,
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
            closed=tuple(self.closed),
        )
