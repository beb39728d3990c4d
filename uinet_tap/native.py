"""First-bytes detection in C: the inspection of a connection the C fast path carries, for
the common cases of the built-in HTTP/1.x and TLS detectors, without a Python call per
segment (stack/_detect.c).

Only where it cannot change a result: the loaded plugins are exactly the built-in detectors,
the policy has no rules and the default budget, and the sinks only hash (no --export, no kept
streams). Then, for a connection that C carries from before its first byte:

* C names the protocol when the client's first segment holds a whole HTTP/1.x request head
  or a whole TLS ClientHello (and the port's detector order asks no other detector first
  that could take it), reads the response's status line or ServerHello as it arrives, and
  applies the default verdict exactly when the inspector would (detection complete and both
  sides spoke, or the budget spent); with --bypass and default = pass it then only counts.
* Anything else (the server speaks first, a split request head or hello, another protocol)
  is not applied by C: the segment goes the general way and the Python inspector takes the
  connection, after replaying the data events C already applied (their early bytes, lengths
  and times), so its state is what it would have been all along. The same replay happens
  when the connection leaves the C table undecided (out-of-order data, a close, a timeout).
* A decided connection's findings come back from C once, when it leaves the table.

tests/test_fastpath.py runs the same captures through this, the Python inspector with the
Python fast path, and the general path, and compares every record.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import orjson

from .inspection import PASSIVE_NAMES, InspectionGlue
from .plugins.api import Verdict
from .plugins.detectors import DETECTORS
from .plugins.detectors.http import METHODS, Http
from .plugins.detectors.tls import Tls, cipher_name, version_name
from .plugins.findings import FINDINGS
from .plugins.policy import Budget, Policy
from .plugins.registry import Loaded
from .stack.connection import Connection
from .stack.fastpath import NATIVE_HTTP, NATIVE_TLS, NativeEvents, NativeReport
from .stack.tracker import Tracker


def native_eligible(plugins: list[Loaded], policy: Policy | None) -> bool:
    """May C inspect here? Exactly the built-in detectors, no rules, the default budget."""
    if policy is not None and (policy.rules or policy.budget != Budget()):
        return False
    return [type(p.plugin) for p in plugins] == DETECTORS and all(
        p.origin == "built-in" for p in plugins
    )


class NativeState:
    """conn.user of a connection no Python inspection was made for (yet): empty until C's
    verdict comes back, then the record fields. The live view reads it as an Inspection
    (``view``, ``verdict``, ``decided_by``)."""

    __slots__ = ("protocol", "_findings", "findings_json", "plain", "verdict", "offsets", "early")

    def __init__(self) -> None:
        self.protocol = ""
        self._findings: dict[str, Any] | None = {}
        # The findings as C wrote them (JSON text), where it did: their dict is made from it
        # only if something reads it (a record written as its line embeds the text).
        self.findings_json: bytes | None = None
        self.plain = False  # the findings are known plain (_findings)
        self.verdict: Verdict | None = None
        self.offsets = (0, 0)
        self.early = (b"", b"")  # kept only for a live view (NativeGlue.keep_early)

    @property
    def findings(self) -> dict[str, Any]:
        if self._findings is None:
            assert self.findings_json is not None
            self._findings = orjson.loads(self.findings_json)
        return self._findings

    @findings.setter
    def findings(self, findings: dict[str, Any]) -> None:
        self._findings = findings

    def written(self, protocol: str, text: bytes) -> None:
        """Findings C wrote as JSON text, plain (within the string limit): their dict is
        made from it only if something reads it."""
        self.protocol, self.findings_json, self.plain, self._findings = protocol, text, True, None

    @property
    def decided(self) -> bool:
        return self.verdict is not None

    @property
    def decided_by(self) -> str | None:
        return "default" if self.verdict is not None else None

    @property
    def view(self) -> SimpleNamespace | None:
        if self.verdict is None:
            return None  # C has not named it yet
        return SimpleNamespace(
            protocol=self.protocol, confidence="detected", findings=self.findings,
            c2s=self.early[0], s2c=self.early[1],
        )  # fmt: skip


class NativeGlue(InspectionGlue):
    """InspectionGlue with the connections C can inspect left to C (see the module doc)."""

    def __init__(
        self,
        tracker: Tracker,
        plugins: list[Loaded],
        policy: Policy | None,
        bypass: bool,
        on_error: Callable[[str, str], None] | None = None,
        on_verdict: Callable[[Connection, Any], None] | None = None,
    ) -> None:
        assert on_verdict is None, "verdicts C decides are not reported one by one"
        super().__init__(tracker, plugins, policy, bypass, on_error)
        fast = tracker.fast
        assert fast is not None
        policy = self.inspector.policy
        self.default = policy.default
        self._pass_bypasses = bypass and policy.default is Verdict.PASS
        fast.native_config(
            sorted(METHODS), policy.budget.packets, policy.budget.seconds, self._pass_bypasses
        )
        fast.native_allow = self._allow
        fast.on_native_detach = self._detached
        fast.on_native_decided = self._decided
        fast.on_native_held = self._held
        fast.on_native_state = self._state
        fast.on_native_adopt = self._adopt
        self._allowed: dict[int, int] = {}
        self.fast = fast
        self.decided_in_c = 0  # connections C named and decided (for tests and profiling)
        self.handed_back = 0  # connections C began and left to the Python inspector

    @property
    def keep_early(self) -> bool:
        """A live view shows each flow's early bytes: then C's are copied at the verdict."""
        return self.fast.native_early

    @keep_early.setter
    def keep_early(self, keep: bool) -> None:
        self.fast.native_early = keep

    # -- the engine's calls ----------------------------------------------------------------

    def start(self, conn: Connection) -> Any:  # type: ignore[override]
        conn.user = NativeState()
        return conn.user

    def opened(self, conn: Connection) -> None:
        if type(conn.user) is not NativeState:
            super().opened(conn)

    def data(self, conn: Connection, direction: int, data: bytes | None) -> None:
        user = conn.user
        if type(user) is NativeState:
            if user.verdict is not None or conn.fast_slot >= 0:
                return  # decided, or C inspects it (bytes handed over for another reader)
            self._materialize(conn)
        super().data(conn, direction, data)

    def finish(self, conn: Connection) -> dict:
        user = conn.user
        if type(user) is not NativeState:
            return super().finish(conn)
        if user.verdict is None:
            self._materialize(conn)
            return super().finish(conn)
        conn.user = None
        return self.finish_decided(user, conn.bypassed)

    def finish_decided(self, user: NativeState, bypassed: bool, text: bool = False) -> dict:
        """finish() of a connection C decided, from its state (that of a light flow,
        whose connection was never made, too). ``text``: the record is written as JSON
        (Engine.on_line): findings C wrote go in as their text (orjson.Fragment)."""
        assert user.verdict is not None
        verdict = PASSIVE_NAMES[user.verdict]
        self.protocols[user.protocol] += 1
        self.verdicts[verdict] += 1
        raw = user.findings_json
        findings: Any
        if text and raw is not None and len(raw) <= _SIZE:  # plain: record_findings' test
            findings, truncated = orjson.Fragment(raw), False
        else:
            findings, truncated = self.record_findings(user.findings, user.plain)
        rec = {
            "protocol": user.protocol,
            "confidence": "detected",
            "findings": findings,
            "verdict": verdict,
            "decided_by": "default",
            "verdict_offset": {"c2s": user.offsets[0], "s2c": user.offsets[1]},
            "bypassed": bypassed,
        }
        if truncated:  # a hostile hello's 2,000 ALPN names: cut as in Python
            rec["findings_truncated"] = True
        return rec

    @property
    def verdict_name(self) -> str:
        """The name records give the verdict C applies (the default)."""
        return PASSIVE_NAMES[self.default]

    def finished_in_c(self, http: int, tls: int, first: int) -> None:
        """finish_decided's counts for records C wrote whole (Engine._lines): ``http`` and
        ``tls`` of each, ``first`` the protocol of the first (NATIVE_*)."""
        named = [("http", http), ("tls", tls)]
        if first == NATIVE_TLS:
            named.reverse()
        for protocol, n in named:
            if n:
                self.protocols[protocol] += n
        if http + tls:
            self.verdicts[self.verdict_name] += http + tls

    # -- C's side ---------------------------------------------------------------------------

    def _allow(self, conn: Connection) -> int:
        """Which protocols C may name on this connection (0: C does not inspect it)."""
        user = conn.user
        if type(user) is not NativeState or user.verdict is not None:
            return 0
        port = conn.server[1]
        allow = self._allowed.get(port)
        if allow is None:
            allow = self._allowed[port] = self._port_allow(port)
            if allow and self.tracker.fast.opens_flows:  # type: ignore[union-attr]
                self.tracker.fast.born_port(port, allow)  # type: ignore[union-attr]
        if not allow:
            self._materialize(conn)  # the Python inspector's from the start
        return allow

    def _port_allow(self, port: int) -> int:
        """C names HTTP only where every detector asked before Http is Tls (which declines a
        request line), and TLS only where every one asked before Tls is Http (which declines
        a handshake record); Inspector.open() orders them."""
        ordered = self.inspector.order(port)
        kinds = [type(p.plugin) for p in ordered]
        allow = 0
        if Http in kinds and all(k is Tls for k in kinds[: kinds.index(Http)]):
            allow |= NATIVE_HTTP
        if Tls in kinds and all(k is Http for k in kinds[: kinds.index(Tls)]):
            allow |= NATIVE_TLS
        return allow

    def _decided(self, conn: Connection | None, report: NativeReport) -> NativeState:
        """C applied the default verdict (at the run's frame that decided it): its findings,
        into the connection's state, or (``conn`` None: a light flow, whose connection is not
        made yet) into one _adopt gives it once it is. InspectionGlue._verdict is not called
        for it: a verdict hook that acts (inline intercept/block) must be called here too, or
        the engine must not use NativeGlue."""
        self._held(1)
        user = self._state(report)
        if conn is not None:
            self._adopt(conn, user)
        return user

    def _held(self, n: int) -> None:
        """C decided ``n`` connections (light flows whose decisions C holds: _state makes
        each one's state only if Python needs it)."""
        self.decided_in_c += n
        if self._pass_bypasses:
            self.bypassed += n

    def _state(self, report: NativeReport) -> NativeState:
        """The decided state of what C found (uncounted: _held counts)."""
        user = NativeState()
        if report.findings_json is not None:  # C wrote them
            user.written("http" if report.proto == NATIVE_HTTP else "tls", report.findings_json)
        else:
            user.protocol, user.findings, user.plain = _findings(report)
        user.verdict = self.default
        user.offsets = report.verdict_offsets
        if self.fast.native_early:
            user.early = report.early
        return user

    def _adopt(self, conn: Connection, user: NativeState) -> None:
        """A decided state (_decided's) becomes the connection's."""
        conn.user = user
        for sink in conn.made_sinks() or ():
            sink.inspect = None  # type: ignore[attr-defined]  # decided: C hashes
        if self._pass_bypasses:
            conn.bypassed = True  # C counts it only since the verdict (Tracker.bypass)

    def _detached(self, conn: Connection, begun: NativeEvents) -> None:
        """The connection leaves the C table undecided: the Python inspector takes it, after
        the data events C applied."""
        self.handed_back += 1
        insp = self._materialize(conn)
        early = begun.early
        pos = [0, 0]
        for d, n, ts in begun.events:
            chunk = early[d][pos[d] : pos[d] + n]
            pos[d] += len(chunk)
            if len(chunk) < n:  # past the budget: only its length counts
                chunk += bytes(n - len(chunk))
            self._refresh(conn, insp.view)
            self.inspector.data(insp, d, chunk, ts)

    def _materialize(self, conn: Connection) -> Any:
        """From here on the Python inspector has this connection, as if from the start."""
        conn.user = None
        insp = super().start(conn)
        super().opened(conn)
        for sink in conn.sinks():
            sink.c_hash = None  # type: ignore[attr-defined]  # bytes come back
        return insp


_STRING, _ITEMS = FINDINGS.string or 1 << 62, FINDINGS.items or 1 << 62  # None: unbounded
_SIZE = FINDINGS.size or 1 << 62
_VERSION_LISTS: dict[tuple[int, ...], list[str]] = {}  # offered versions -> their names


def _text(raw: bytes) -> str:
    return raw.decode("ascii", "backslashreplace")


def _findings(report: NativeReport) -> tuple[str, dict[str, Any], bool]:
    """The protocol and findings C found, as the Python detectors give them (same keys, same
    order, same text), and whether they are plain (plugins/findings.py: every string and
    list within the limits), so the record need not walk them to know."""
    out: dict[str, Any] = {}
    found = report.found
    if report.proto == NATIVE_HTTP:
        early = report.early[0]
        out["method"] = early[found[0] : found[0] + found[1]].decode("latin-1")
        out["path"] = early[found[2] : found[2] + found[3]].decode("latin-1")
        if found[5] >= 0:
            out["host"] = early[found[4] : found[4] + found[5]].decode("latin-1")
        if found[7] >= 0:
            out["user_agent"] = early[found[6] : found[6] + found[7]].decode("latin-1")
        if found[8] >= 0:
            out["status"] = found[8]  # three digits (_detect.c)
        return "http", out, max(found[1], found[3], found[5], found[7]) <= _STRING
    sni_off, sni_len, alpn_off, alpn_len, legacy, nv = found[9:15]
    tls_version, cipher, ja3, ja4 = found[31:35]
    fbuf = report.fbuf
    if sni_len >= 0:
        out["sni"] = _text(fbuf[sni_off : sni_off + sni_len])
    if alpn_len >= 0:
        vec = fbuf[alpn_off : alpn_off + alpn_len]
        alpn = []
        i = 0
        while i < alpn_len:
            k = vec[i]
            alpn.append(_text(vec[i + 1 : i + 1 + k]))
            i += 1 + k
        out["alpn"] = alpn
    versions = found[15 : 15 + nv] if nv else (legacy,)
    names = _VERSION_LISTS.get(versions)
    if names is None:
        names = [version_name(v) for v in versions]
        if len(_VERSION_LISTS) < 256:  # a handful of client kinds; never grown by traffic
            _VERSION_LISTS[versions] = names
    out["client_versions"] = list(names)
    out["ja3"] = ja3.partition(b"\0")[0].decode()
    out["ja4"] = ja4.partition(b"\0")[0].decode()
    if tls_version >= 0:
        out["tls_version"] = version_name(tls_version)
        out["cipher"] = cipher_name(cipher)
    # An ALPN name has an 8-bit length: 255 bytes are at most 1,020 characters escaped,
    # within the limit. The other strings are measured.
    plain = (
        max(len(out.get("sni", "")), len(out["ja3"]), len(out["ja4"])) <= _STRING
        and len(out.get("alpn", ())) <= _ITEMS
        and len(names) <= _ITEMS
    )
    return "tls", out, plain
