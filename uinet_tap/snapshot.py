"""What the live view shows: a frozen picture of the engine, taken a few times a second.

The view never touches engine state; it renders these."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class FlowRow:
    id: int
    state: str  # "SYN", "SYN-ACK", "EST", "FIN", "CLOSED", "RST"
    midstream: bool
    client: str  # "ip:port" / "[v6]:port"
    server: str
    vlan: tuple[int, ...]
    protocol: str | None  # None while detection is under way
    confidence: str | None  # "detected" | "guessed" | None
    info: str  # SNI, Host, banner, greeting...: the most telling finding, "" if none
    verdict: str | None  # "pass", "would-intercept", "would-block", or None (undecided)
    decided_by: str | None
    c2s_bytes: int  # payload bytes seen each way (retransmissions included)
    s2c_bytes: int
    c2s_packets: int
    s2c_packets: int
    start: float  # capture time
    last_seen: float
    gaps: bool  # a hole in either stream
    bypassed: bool
    findings: dict = field(default_factory=dict)
    c2s_head: bytes = b""  # the early bytes each way (the inspection budget's worth)
    s2c_head: bytes = b""
    tcp: dict = field(default_factory=dict)  # mss, window scale, sack, timestamps, handshake


@dataclass(frozen=True, slots=True)
class Snapshot:
    now: float  # the view's clock: capture time in replay, the wall clock in watch
    packets: int  # frames read
    bytes: int
    tcp_packets: int
    flows_active: int
    flows_total: int
    undecodable: int  # malformed frames (not counting well-formed non-TCP)
    not_tcp: int
    plugin_errors: int
    kernel_drops: int  # pcap stats: dropped by the kernel (buffer full)
    interface_drops: int  # dropped by the interface / driver
    flows: tuple[FlowRow, ...]  # the active flows, unsorted
    closed: tuple[FlowRow, ...] = ()  # ended flows, oldest first (bounded: ended.py)
    closed_dropped: int = 0  # ended flows the bound took off the list
    bytes_released: int = 0  # listed ended flows whose early bytes the byte budget released
