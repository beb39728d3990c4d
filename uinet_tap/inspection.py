"""Wiring the plugin inspector into the engine: views of tracked connections, bytes from the
sinks, verdicts back to the tracker (bypass) and to the flow records."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from .plugins.api import FlowView, Verdict
from .plugins.findings import record_findings
from .plugins.inspector import Inspection, Inspector
from .plugins.policy import Policy
from .plugins.registry import Loaded
from .records import format_ip
from .stack.connection import Connection
from .stack.tracker import Tracker

# What a verdict is called where nothing can be done about it (a tap, a file).
PASSIVE_NAMES = {
    Verdict.PASS: "pass",
    Verdict.INTERCEPT: "would-intercept",
    Verdict.BLOCK: "would-block",
}
# Inline, where it is carried out.
ACTIVE_NAMES = {Verdict.PASS: "pass", Verdict.INTERCEPT: "intercept", Verdict.BLOCK: "block"}


class InspectionGlue:
    def __init__(
        self,
        tracker: Tracker,
        plugins: list[Loaded],
        policy: Policy | None,
        bypass: bool,
        on_error: Callable[[str, str], None] | None = None,
        on_verdict: Callable[[Connection, Inspection], None] | None = None,
    ) -> None:
        """``on_verdict``: inline mode acts on verdicts (and names them as done, not "would")."""
        self.tracker = tracker
        self.bypass = bypass
        self.on_verdict = on_verdict
        self.names = ACTIVE_NAMES if on_verdict is not None else PASSIVE_NAMES
        self.inspector = Inspector(plugins, policy, self._verdict, on_error)
        self.protocols: Counter[str] = Counter()
        self.verdicts: Counter[str] = Counter()
        self.bypassed = 0
        self.findings_truncated = 0  # records whose findings were cut to the limits

    def start(self, conn: Connection) -> Inspection:
        """At the connection's first packet, before any of its bytes."""
        view = FlowView(
            conn.id,
            (format_ip(conn.client[0]), conn.client[1]),
            (format_ip(conn.server[0]), conn.server[1]),
            vlan=tuple(conn.vlans),
        )
        insp = self.inspector.open(view)
        insp.context = conn
        conn.user = insp
        return insp

    def opened(self, conn: Connection) -> None:
        """The first packet was processed: orientation and handshake facts are known."""
        insp: Inspection = conn.user  # type: ignore[assignment]
        self._refresh(conn, insp.view)
        self.inspector.started(insp)

    def reads(self, conn: Connection) -> bool:
        """Whether the connection's bytes still go to its inspection (not once decided)."""
        insp = conn.user
        return insp is not None and not insp.decided  # type: ignore[attr-defined]

    def data(self, conn: Connection, direction: int, data: bytes | None) -> None:
        """Bytes of one direction, in order; None for a gap."""
        insp: Inspection = conn.user  # type: ignore[assignment]
        if insp.decided:
            return
        if data is None:
            self.inspector.gap(insp, direction)
            return
        self._refresh(conn, insp.view)
        self.inspector.data(insp, direction, data, conn.last_seen)

    @staticmethod
    def _refresh(conn: Connection, view: FlowView) -> None:
        view.midstream = conn.midstream
        view.handshake = conn.handshake
        view.mss = (conn.c.mss, conn.s.mss)
        view.window_scale = (conn.c.wscale, conn.s.wscale) if conn.wscale_ok else (None, None)
        view.sack_permitted = conn.c.sack_permitted and conn.s.sack_permitted
        view.timestamps = conn.ts_ok
        view.gaps = bool(conn.c.stream.gaps or conn.s.stream.gaps)
        view.macs = (conn.c.mac, conn.s.mac)

    def _verdict(self, insp: Inspection) -> None:
        conn: Connection = insp.context
        for ep in (conn.c, conn.s):
            ep.stream.sink.stop_inspecting()  # type: ignore[attr-defined]
        live = conn.close is None and not conn.closed
        if self.bypass and insp.verdict is Verdict.PASS and live:
            self.tracker.bypass(conn)
            self.bypassed += 1
        elif conn.fast_slot >= 0 and self.tracker.fast is not None:
            self.tracker.fast.hash_in_place(conn)
        if self.on_verdict is not None:
            self.on_verdict(conn, insp)

    def finish(self, conn: Connection) -> dict:
        """The record fields of an ended connection."""
        insp: Inspection = conn.user  # type: ignore[assignment]
        self.inspector.close(insp)
        view = insp.view
        verdict = self.names[insp.verdict]  # type: ignore[index]
        protocol = view.protocol or "unknown"
        self.protocols[protocol] += 1
        self.verdicts[verdict] += 1
        findings, truncated = self.record_findings(view.findings)
        rec = {
            "protocol": protocol,
            "confidence": view.confidence,
            "findings": findings,
            "verdict": verdict,
            "decided_by": insp.decided_by,
            "verdict_offset": {"c2s": insp.offsets[0], "s2c": insp.offsets[1]},
            "bypassed": conn.bypassed,
        }
        if truncated:
            rec["findings_truncated"] = True
        if insp.reason is not None:
            rec["reason"] = insp.reason
        if insp.errors:
            rec["plugin_errors"] = insp.errors
            rec["plugin_failures"] = insp.failures
        # Connection and inspection point at each other: cut the loop so reference counting
        # frees both now, rather than the cyclic collector later.
        insp.context = None
        conn.user = None
        return rec

    def record_findings(self, findings: dict, plain: bool = False) -> tuple[dict, bool]:
        """A record's findings as JSON within the limits (made once a flow: findings.py),
        and whether they had to be cut."""
        clean, truncated = record_findings(findings, plain)
        self.findings_truncated += truncated
        return clean, truncated

    def stats(self) -> dict:
        return {
            "protocols": dict(self.protocols.most_common()),
            "verdicts": dict(self.verdicts.most_common()),
            "bypassed": self.bypassed,
            "plugin_errors": dict(self.inspector.errors),
            "plugin_failures": dict(self.inspector.first_failures),
            "findings_truncated": self.findings_truncated,
        }
