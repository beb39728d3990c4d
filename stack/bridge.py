"""Inline mode's flows, sans I/O: one mode per flow in one table, and for each frame of a
flow the bump knows, what becomes of it (forward, drop, answer with RSTs, hand to the tool's
own TCP, or go on to inspection). ``uinet_tap/inline.py`` does the I/O the commands name.

A flow enters the table at its first tracked frame, INSPECTING, and leaves it when its record
is written (or, BLOCKED and CLOSED, when its tuple's time is up)::

    INSPECTING --pass--> PASSED
        |  \\--block--> BLOCKED  (until: a later bare SYN starts a new connection)
        |--intercept--> ARMED --takeover--> OWNED --session over--> CLOSED (a tombstone)
                          \\--cut-in failed--> PASSED

Which sequence numbers the RSTs carry is decided here (RFC 5961 §3.2: a RST is accepted only
at exactly the next sequence number its receiver expects).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any

from ..reassembly.seq import MASK
from .cutin import CutInWatch
from .decode import ACK, RST, SYN, Segment

TOMBSTONE = 60.0  # seconds a finished cut-in's tuple keeps swallowing stragglers
BLOCK_ANSWERS = 16  # RSTs sent back per blocked flow at most


class FlowMode(StrEnum):
    INSPECTING = "inspecting"  # tracked, forwarded, its verdict not given yet
    ARMED = "armed"  # to be intercepted: forwarded until a takeover point comes
    PASSED = "passed"  # forwarded first, only counted after
    BLOCKED = "blocked"  # dropped; a later frame is answered with a RST
    OWNED = "owned"  # the tool's own TCP holds both halves (a cut-in)
    CLOSED = "closed"  # a cut-in ended: the old connection's stragglers are dropped


class Act(Enum):
    FORWARD = "forward"  # send it on as it came
    DROP = "drop"  # nothing goes out; counted by the command's reason
    RESET = "reset"  # dropped, and the command's RSTs sent
    HAND_UP = "hand up"  # to the flow's owner (the cut-in session)
    INSPECT = "inspect"  # the tracker and the inspection decide (INSPECTING, ARMED)
    UNKNOWN = "unknown"  # no flow of the bump's any more: a new connection on the tuple


@dataclass(frozen=True, slots=True)
class Reset:
    """A RST impersonating the other end: towards the frame's sender, or towards its peer.
    ``ack`` not None: a RST|ACK acknowledging up to it (the answer to a SYN)."""

    to_sender: bool
    seq: int
    ack: int | None = None


@dataclass(frozen=True, slots=True)
class Command:
    act: Act
    reason: str = ""
    resets: tuple[Reset, ...] = ()


FORWARD = Command(Act.FORWARD)
HAND_UP = Command(Act.HAND_UP)
INSPECT = Command(Act.INSPECT)
UNKNOWN = Command(Act.UNKNOWN)


@dataclass(slots=True, eq=False)
class BridgeFlow:
    conn_id: int
    keys: tuple[bytes, bytes]
    mode: FlowMode = FlowMode.INSPECTING
    conn: Any = None  # the tracker's Connection
    watch: CutInWatch | None = None  # INSPECTING, ARMED: what a takeover needs
    owner: Any = None  # OWNED: the cut-in session
    until: float = 0.0  # BLOCKED, CLOSED: when the tuple is let go
    answered: int = 0  # BLOCKED: RSTs sent back so far


def reset_to_sender(seg: Segment) -> Reset:
    """The RST that ends the sender of ``seg``: at the sequence number its ACK names, or,
    for a segment without ACK (a SYN), a RST|ACK acknowledging it (RFC 9293 §3.10.7.1)."""
    if seg.flags & ACK:
        return Reset(True, seg.ack)
    return Reset(True, 0, (seg.seq + len(seg.payload) + 1) & MASK)


def block_resets(seg: Segment, sender_nxt: int | None, handshake: bool) -> tuple[Reset, ...]:
    """Both ends' RSTs when a flow is blocked at ``seg``: its sender's, and its peer's at the
    sender's next sequence number (what the peer expects next, where the flow was followed
    from its handshake; else the frame's own, the best guess)."""
    resets = [reset_to_sender(seg)]
    if handshake and sender_nxt is not None:
        resets.append(Reset(False, sender_nxt))
    elif handshake and seg.flags & ACK:
        resets.append(Reset(False, seg.seq))
    return tuple(resets)


def _bare_syn(seg: Segment) -> bool:
    return bool(seg.flags & SYN and not seg.flags & ACK)


class Bridge:
    """Every flow the bump knows, by both its keys and by connection id."""

    def __init__(
        self,
        tombstone: float = TOMBSTONE,
        answers: int = BLOCK_ANSWERS,
        on_release: Callable[[BridgeFlow], None] | None = None,
    ) -> None:
        """``on_release``: told of each flow let go (a data plane that drops its frames
        stops)."""
        self.tombstone = tombstone
        self.answers = answers
        self.on_release = on_release
        self.by_key: dict[bytes, BridgeFlow] = {}
        self.by_id: dict[int, BridgeFlow] = {}
        self._timed: dict[int, BridgeFlow] = {}  # BLOCKED and CLOSED: expire() looks only here

    def __len__(self) -> int:
        return len(self.by_id)

    def count(self, mode: FlowMode) -> int:
        return sum(1 for f in self.by_id.values() if f.mode is mode)

    def track(self, conn: Any) -> BridgeFlow:
        """The bump's flow for a tracked connection (INSPECTING when new)."""
        flow = self.by_id.get(conn.id)
        if flow is None:
            flow = BridgeFlow(conn.id, conn.keys, conn=conn)
            self.by_id[conn.id] = flow
            for key in conn.keys:
                self.by_key[key] = flow
        return flow

    def frame(self, flow: BridgeFlow, seg: Segment, now: float) -> Command:
        """What becomes of ``seg``, a frame of ``flow``."""
        mode = flow.mode
        if mode is FlowMode.PASSED:
            return FORWARD
        if mode is FlowMode.OWNED:
            return HAND_UP
        if mode is FlowMode.BLOCKED:
            if _bare_syn(seg) and now > flow.until - self.tombstone + 2:
                self.release(flow)  # a new connection on the same tuple
                return UNKNOWN
            if seg.flags & RST or flow.answered >= self.answers:
                return Command(Act.DROP, "blocked")
            flow.answered += 1
            return Command(Act.RESET, "blocked", (reset_to_sender(seg),))
        if mode is FlowMode.CLOSED:
            if now < flow.until and not _bare_syn(seg):
                return Command(Act.DROP, "tombstone")
            self.release(flow)
            return UNKNOWN
        return INSPECT

    # -- transitions ---------------------------------------------------------------------------

    def watch(self, flow: BridgeFlow) -> CutInWatch:
        if flow.watch is None:
            flow.watch = CutInWatch()
        return flow.watch

    def arm(self, flow: BridgeFlow) -> None:
        if flow.mode is FlowMode.INSPECTING:
            flow.mode = FlowMode.ARMED

    def pass_(self, flow: BridgeFlow) -> None:
        flow.mode = FlowMode.PASSED
        flow.watch = None

    def block(
        self, flow: BridgeFlow, seg: Segment, from_client: bool, handshake: bool, now: float
    ) -> tuple[Reset, ...]:
        """Block the flow at ``seg``; the RSTs that end both sides."""
        sender_nxt = None
        if flow.watch is not None:
            sender_nxt = flow.watch.sides[0 if from_client else 1].nxt
        flow.mode = FlowMode.BLOCKED
        flow.watch = None
        flow.until = now + self.tombstone
        self._timed[flow.conn_id] = flow
        return block_resets(seg, sender_nxt, handshake)

    def own(self, flow: BridgeFlow, session: Any) -> None:
        flow.mode = FlowMode.OWNED
        flow.owner = session
        flow.watch = None

    def owner_gone(self, flow: BridgeFlow, now: float) -> None:
        """The cut-in ended: the tuple swallows the old connection's stragglers a while."""
        flow.mode = FlowMode.CLOSED
        flow.owner = None
        flow.until = now + self.tombstone
        self._timed[flow.conn_id] = flow

    def ended(self, conn_id: int) -> None:
        """The connection's record is written: an inspected or passed flow is done with; a
        blocked, owned or closed one keeps its tuple until its time is up."""
        flow = self.by_id.get(conn_id)
        if flow is not None and flow.mode in (
            FlowMode.INSPECTING, FlowMode.ARMED, FlowMode.PASSED
        ):  # fmt: skip
            self.release(flow)

    def release(self, flow: BridgeFlow) -> None:
        if self.on_release is not None and flow.mode in (FlowMode.BLOCKED, FlowMode.CLOSED):
            self.on_release(flow)
        if self.by_id.get(flow.conn_id) is flow:
            del self.by_id[flow.conn_id]
        if self._timed.get(flow.conn_id) is flow:
            del self._timed[flow.conn_id]
        for key in flow.keys:
            if self.by_key.get(key) is flow:
                del self.by_key[key]

    def expire(self, now: float) -> None:
        """Blocked and closed tuples whose time is up are let go."""
        for flow in [f for f in self._timed.values() if f.until < now]:
            self.release(flow)
