"""The plugin API: what a plugin author writes against.

    from uinet_tap.plugins import Plugin, Verdict

    class Redis(Plugin):
        name = "redis"
        ports = {6379}                     # ordering hint only, never a gate

        def detect(self, flow):            # -> self.match(...) | NEED_MORE | NO_MATCH
            if flow.c2s[:1] == b"*":
                return self.match("redis")
            return NEED_MORE if not flow.c2s else NO_MATCH

        def decide(self, flow):            # -> Verdict, self.decision(Verdict, reason) or None
            return Verdict.PASS

Detection and decisions follow nDPI / Suricata probing parsers (match, need more, no match, per
protocol; ports order the probes but never gate them) and mitmproxy's ``next_layer`` (a plugin
may keep asking for more bytes before it decides).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from .conn import InterceptedConnection


class Verdict(StrEnum):
    NEED_MORE = "need-more"  # undecided: keep asking as data arrives
    PASS = "pass"  # stop inspecting, forward untouched
    INTERCEPT = "intercept"  # inline: cut in and hand the connection to intercept()
    BLOCK = "block"  # inline: reset both sides


class Detection(StrEnum):
    NEED_MORE = "need-more"
    NO_MATCH = "no-match"


NEED_MORE = Detection.NEED_MORE
NO_MATCH = Detection.NO_MATCH


MAX_REASON = 256  # characters of a decision's reason kept in the record


@dataclass(frozen=True, slots=True)
class Decision:
    """A verdict with the plugin's reason for it (``reason`` lands in the flow record)."""

    verdict: Verdict
    reason: str


@dataclass(frozen=True, slots=True)
class Match:
    """A detector's positive answer: the protocol and what it found."""

    protocol: str
    findings: dict[str, Any] = field(default_factory=dict)
    plugin: str = ""
    # False while findings the protocol soon gives are still to come (a SOCKS target after
    # the method exchange, a TLS ServerHello, an HTTP status): the detector is asked again
    # as data arrives, and the default verdict waits (within the budget).
    complete: bool = True


class Plugin:
    """Base class of every plugin. Subclasses set ``name`` and override what they need."""

    name: ClassVar[str] = ""
    ports: ClassVar[frozenset[int] | set[int]] = frozenset()
    # The protocol a detector names; a guess by port reports it (defaults to ``name``).
    protocol: ClassVar[str | None] = None
    # The options this plugin takes and their defaults, as strings: ``--plugin-option
    # NAME.KEY=VALUE`` sets one (an undeclared KEY is an error), ``self.options`` reads them.
    option_defaults: ClassVar[dict[str, str]] = {}

    @property
    def options(self) -> dict[str, str]:
        return self.__dict__.get("_options") or dict(self.option_defaults)

    def decision(self, verdict: Verdict, reason: str) -> Decision:
        """decide()'s answer with a reason the record keeps (``reason``)."""
        return Decision(verdict, reason)

    def match(self, protocol: str, complete: bool = True, **findings: Any) -> Match:
        kept = {k: v for k, v in findings.items() if v is not None}
        return Match(protocol, kept, self.name, complete)

    def detect(self, flow: FlowView) -> Match | Detection:
        """Look at the early bytes; say what protocol this is, or ask for more, or decline."""
        return NO_MATCH

    def decide(self, flow: FlowView) -> Verdict | Decision | None:
        """Called as data arrives while the flow is undecided; None abstains. A Decision
        (``self.decision(verdict, reason)``) gives the record a reason too."""
        return None

    async def intercept(self, conn: InterceptedConnection) -> None:
        """Inline only, after INTERCEPT: by default relay both ways unchanged."""
        from .handlers import relay

        await relay(conn)


@dataclass(slots=True)
class FlowView:
    """What a plugin sees of a flow. Plugins treat it as read-only; the inspector updates it
    as data arrives. ``c2s``/``s2c`` hold the early bytes (capped by the inspection budget);
    ``c2s_bytes``/``s2c_bytes`` count everything seen so far."""

    id: int
    client: tuple[str, int]
    server: tuple[str, int]
    midstream: bool = False
    vlan: tuple[int, ...] = ()
    macs: tuple[bytes, bytes] = (b"", b"")  # client's, server's source MAC (b"" if unknown)
    handshake: bool = False
    mss: tuple[int | None, int | None] = (None, None)  # client's, server's
    window_scale: tuple[int | None, int | None] = (None, None)
    sack_permitted: bool = False
    timestamps: bool = False
    c2s: bytes = b""
    s2c: bytes = b""
    c2s_bytes: int = 0
    s2c_bytes: int = 0
    gaps: bool = False  # a hole in the early bytes of either direction
    first_speaker: str | None = None  # "client" or "server"
    protocol: str | None = None
    confidence: str | None = None  # "detected" or "guessed"
    budget_spent: bool = False  # a detector's last call: match on what there is, or not
    findings: dict[str, Any] = field(default_factory=dict)

    @property
    def server_port(self) -> int:
        return self.server[1]

    @property
    def client_port(self) -> int:
        return self.client[1]

    @classmethod
    def from_bytes(
        cls,
        c2s: bytes = b"",
        s2c: bytes = b"",
        client: tuple[str, int] = ("10.0.0.1", 40000),
        server: tuple[str, int] = ("10.0.0.2", 80),
        first_speaker: str | None = None,
        **kw: Any,
    ) -> FlowView:
        """A view over two byte strings (tests and plugin authors)."""
        if first_speaker is None:
            first_speaker = "client" if c2s else "server" if s2c else None
        return cls(
            0, client, server, c2s=c2s, s2c=s2c, c2s_bytes=len(c2s), s2c_bytes=len(s2c),
            first_speaker=first_speaker, **kw,
        )  # fmt: skip
