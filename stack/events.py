"""What the passive stack reports. Stream bytes go straight to per-direction sinks (the hot path,
see :class:`uinet_tap.reassembly.stream.StreamSink`); lifecycle facts are these events."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .connection import Connection


class CloseReason(StrEnum):
    FIN = "fin"
    RST = "rst"
    TIMEOUT = "timeout"
    EOF = "eof"
    EVICTED = "evicted"


class Direction(int, Enum):
    C2S = 0
    S2C = 1


@dataclass(frozen=True, slots=True)
class FlowOpened:
    conn: Connection


@dataclass(frozen=True, slots=True)
class FlowClosed:
    conn: Connection
    reason: CloseReason


@dataclass(frozen=True, slots=True)
class FlowEnded:
    """The end of a light flow that ended plain (Tracker._finish_light): no connection was
    ever made for it. ``ended``: the flow as C ended it (stack/fastpath.py ended_facts reads
    it; Tracker.connection_of makes its connection, for whatever needs one); ``user``: what
    its inspection decided, None if nothing; ``follower``: its HTTP transaction follower,
    or the header blocks C logged for it (stack/fastpath.py HeadLog: C writes the
    transactions from them, or Python replays them into a follower), None if nothing."""

    ended: bytes
    user: Any
    follower: Any
    reason: CloseReason


Event = FlowOpened | FlowClosed | FlowEnded
