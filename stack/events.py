"""What the passive stack reports. Stream bytes go straight to per-direction sinks (the hot path,
see :class:`uinet_tap.reassembly.stream.StreamSink`); lifecycle facts are these events."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import TYPE_CHECKING

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


Event = FlowOpened | FlowClosed
