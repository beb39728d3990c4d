"""The evasion cases: crafted client segment scripts whose outcome a real Linux receiver
decides (run by tests/evasionlib.py, written out by captures/make_evasion.py).

Offsets (``rel``) are stream offsets relative to the first data byte (client ISN + 1).
Bytes that carry a case's point are letters: chunk A is ``AAAA``, chunk B ``BBBB``...;
bytes that only fill a hole are the digits of their offset (``0123456789012``), so a
mismatch shows at a glance which copy and which offset ended up where.  ``EVIL`` marks a
copy a correct receiver must not deliver, ``GOOD`` the copy it must.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Send:
    """One client segment.

    anchor "start": ``rel`` counts from the first data byte; "window": from the right
    edge of the server's receive window (RCV.NXT + RCV.WND as it last advertised).
    ``ack`` is added to the server's SND.NXT in the ACK field; ``tsval`` overrides the
    client's timestamp clock and ``ts=False`` leaves the option out (timestamps cases).
    wait: "ack" = until the server acknowledges the segment's end, "reply" = until the
    server sends anything (a challenge or duplicate ACK); a wait that times out is noted
    in the truth, it does not stop the case."""

    rel: int
    data: bytes = b""
    flags: str = "PA"
    anchor: str = "start"
    ack: int = 0
    urg: int = 0
    tsval: int | None = None
    ts: bool = True
    wait: str = ""
    note: str = ""


@dataclass(frozen=True)
class Drain:
    """The server application reads everything readable now (the other reads happen only
    after the last step, so they never race the segments)."""

    note: str = ""


@dataclass(frozen=True)
class WaitWindow:
    """Wait until the server's advertised window reaches stream offset ``rel_end``."""

    rel_end: int


Step = Send | Drain | WaitWindow


@dataclass(frozen=True)
class Case:
    """steps: a tuple, or a function of the window the SYN-ACK advertised (bytes)."""

    name: str
    family: str
    description: str
    steps: tuple[Step, ...] | Callable[[int], tuple[Step, ...]]
    syn_data: bytes = b""
    timestamps: bool = False
    wscale: int | None = None  # window scale the client offers (None: no option)
    rcvbuf: int = 0
    params: dict = field(default_factory=dict)

    def script(self, window: int) -> tuple[Step, ...]:
        return self.steps(window) if callable(self.steps) else self.steps


def digits(start: int, end: int) -> bytes:
    """Hole filler: the last digit of each byte's offset."""
    return bytes(48 + i % 10 for i in range(start, end))


def chunk(letter: str, n: int) -> bytes:
    return letter.encode() * n


def fin(rel: int, wait: bool = True) -> Send:
    """FIN at ``rel``; wait=False where the connection is expected to be gone."""
    return Send(rel, flags="FA", wait="ack" if wait else "", note="FIN")


def uncovered(pieces: Sequence[tuple[int, bytes]], end: int) -> list[tuple[int, int]]:
    """Maximal runs of [0, end) that no piece covers."""
    covered = bytearray(end)
    for start, data in pieces:
        for i in range(start, min(end, start + len(data))):
            covered[i] = 1
    runs: list[tuple[int, int]] = []
    i = 0
    while i < end:
        if covered[i]:
            i += 1
            continue
        j = i
        while j < end and not covered[j]:
            j += 1
        runs.append((i, j))
        i = j
    return runs


def overlap_script(pieces: Sequence[tuple[int, bytes]]) -> tuple[Step, ...]:
    """Send the pieces in order, then fill every hole (digits), the one at offset 0 last,
    so pieces that do not start at 0 meet in the out-of-order queue; FIN after the end."""
    end = max(s + len(d) for s, d in pieces)
    steps: list[Step] = [Send(s, d) for s, d in pieces]
    holes = uncovered(pieces, end)
    holes.sort(key=lambda r: r[0] == 0)  # the head hole (if any) last
    steps += [Send(a, digits(a, b), note="hole filler") for a, b in holes]
    steps.append(fin(end))
    return tuple(steps)


# --------------------------------------------------------------------------- named cases

# Two-segment overlap shapes in the out-of-order queue: A = 8 bytes at [8, 16) sent first,
# then B; bytes [0, first start) are filled last, so A and B meet in the OOO queue.
TWO = [
    ("ooo-b-same-start-same-len", "B same start, same length as A", 8, 8),
    ("ooo-b-same-start-longer", "B same start as A, ends 4 bytes after A", 8, 12),
    ("ooo-b-same-start-shorter", "B same start as A, ends 4 bytes before A's end", 8, 4),
    ("ooo-b-before-ends-inside", "B starts 2 bytes before A, ends inside A", 6, 6),
    ("ooo-b-inside-ends-after", "B starts inside A (offset 12), ends 4 bytes after A", 12, 8),
    ("ooo-b-strictly-inside", "B strictly inside A ([10, 14))", 10, 4),
    ("ooo-b-covers-a", "B covers A strictly ([6, 18))", 6, 12),
    ("ooo-b-same-end-earlier", "B ends with A, starts 2 bytes earlier ([6, 16))", 6, 10),
    ("ooo-b-same-end-later", "B ends with A, starts 4 bytes later ([12, 16))", 12, 4),
]

# Three segments: A and B first (adjacent or overlapping), then C.
THREE = [
    (
        "ooo3-ab-adjacent-c-same-span",
        "A [8,12), B [12,16) adjacent; C exactly [8,16)",
        (8, 4),
        (12, 4),
        (8, 8),
    ),
    (
        "ooo3-ab-adjacent-c-covers",
        "A [8,12), B [12,16) adjacent; C covers both [6,18)",
        (8, 4),
        (12, 4),
        (6, 12),
    ),
    (
        "ooo3-c-straddles-boundary",
        "A [8,12), B [12,16) adjacent; C [10,14) over the boundary",
        (8, 4),
        (12, 4),
        (10, 4),
    ),
    (
        "ooo3-c-from-a-start-into-b",
        "A [8,12), B [12,16) adjacent; C [8,14) from A's start",
        (8, 4),
        (12, 4),
        (8, 6),
    ),
    (
        "ooo3-c-inside-a-to-b-end",
        "A [8,12), B [12,16) adjacent; C [10,16) to B's end",
        (8, 4),
        (12, 4),
        (10, 6),
    ),
    (
        "ooo3-ab-overlap-c-covers-overlap",
        "A [8,14), B [12,18) overlapping; C [11,15)",
        (8, 6),
        (12, 6),
        (11, 4),
    ),
    (
        "ooo3-ab-gap-c-bridges",
        "A [8,11), B [13,16) with a gap; C [10,14) bridges it",
        (8, 3),
        (13, 3),
        (10, 4),
    ),
    (
        "ooo3-c-appends-to-a-over-b",
        "A [5,16), B [9,18) over A's end; C [16,23) starts where A ends",
        (5, 11),
        (9, 9),
        (16, 7),
    ),
    (
        "ooo3-c-replaces-a-after-b",
        "A [11,16), then B [3,10) before it; C [11,20): A's start, longer",
        (11, 5),
        (3, 7),
        (11, 9),
    ),
]


def _overlap_cases() -> list[Case]:
    out = []
    for name, what, b_start, b_len in TWO:
        pieces = [(8, chunk("A", 8)), (b_start, chunk("B", b_len))]
        out.append(
            Case(
                name,
                "overlap-ooo",
                f"A = [8, 16) sent first, then {what}; the hole from offset 0 is "
                f"filled last, so A and B meet in the out-of-order queue",
                overlap_script(pieces),
            )
        )
    for name, what, a, b, c in THREE:
        pieces = [(a[0], chunk("A", a[1])), (b[0], chunk("B", b[1])), (c[0], chunk("C", c[1]))]
        out.append(
            Case(
                name,
                "overlap-ooo",
                f"{what}; sent A, B, C, then the hole from offset 0 last",
                overlap_script(pieces),
            )
        )
    # The same shape as ooo3-c-straddles-boundary with 1000-byte A and B: too big for the
    # kernel to merge B into A's buffer (see captures/evasion/README.md, coalescing).
    pieces = [(8, chunk("A", 1000)), (1008, chunk("B", 1000)), (1000, chunk("C", 16))]
    out.append(
        Case(
            "ooo3-c-straddles-boundary-large",
            "overlap-ooo",
            "A [8,1008), B [1008,2008) adjacent, 1000 bytes each; C [1000,1016) over "
            "the boundary; sent A, B, C, then the hole from offset 0 last",
            overlap_script(pieces),
        )
    )
    return out


def _inorder_cases() -> list[Case]:
    first = Send(0, chunk("A", 8), wait="ack", note="first copy, in order, ACKed")
    return [
        Case(
            "inorder-rexmit-same",
            "overlap-inorder",
            "A = [0, 8) in order (ACKed), then a retransmission B = [0, 8) with other bytes",
            (first, Send(0, chunk("B", 8)), fin(8)),
        ),
        Case(
            "inorder-rexmit-longer",
            "overlap-inorder",
            "A = [0, 8) in order (ACKed), then B = [0, 12): same start, 4 new bytes",
            (first, Send(0, chunk("B", 12)), fin(12)),
        ),
        Case(
            "inorder-rexmit-straddle",
            "overlap-inorder",
            "A = [0, 8) in order (ACKed), then B = [4, 12) over A's end",
            (first, Send(4, chunk("B", 8)), fin(12)),
        ),
        Case(
            "inorder-rexmit-unacked",
            "overlap-inorder",
            "A = [0, 8) in order, B = [0, 12) sent right after without waiting for the ACK",
            (Send(0, chunk("A", 8)), Send(0, chunk("B", 12)), fin(12)),
        ),
        Case(
            "ooo-covered-by-inorder",
            "overlap-inorder",
            "B = [4, 8) out of order first, then in-order A = [0, 12) covering it",
            (Send(4, chunk("B", 4)), Send(0, chunk("A", 12)), fin(12)),
        ),
        Case(
            "ooo-partly-covered-by-inorder",
            "overlap-inorder",
            "B = [4, 16) out of order first, then in-order A = [0, 8) covering B's head",
            (Send(4, chunk("B", 12)), Send(0, chunk("A", 8)), fin(16)),
        ),
    ]


MAX_PAYLOAD = 1400  # below the 1500-byte veth MTU with room for options
HEAD = b"GET /a"  # 6 bytes of ordinary in-order data before the point of a case


def _control_cases() -> list[Case]:
    head = Send(0, HEAD, wait="ack")
    evil, good = b"EVIL!!", b"GOOD!!"
    return [
        Case(
            "rst-exact-then-data",
            "rst",
            "in-order data, RST|ACK at exactly RCV.NXT (offset 6), then data at offset 6",
            (head, Send(6, flags="RA", note="RST at RCV.NXT"), Send(6, evil), fin(12, False)),
        ),
        Case(
            "rst-exact-noack-then-data",
            "rst",
            "in-order data, bare RST (no ACK flag) at exactly RCV.NXT, then data",
            (head, Send(6, flags="R", note="bare RST at RCV.NXT"), Send(6, evil), fin(12, False)),
        ),
        Case(
            "rst-inexact-then-data",
            "rst",
            "in-order data, RST|ACK inside the window but 100 bytes past RCV.NXT (RFC 5961 "
            "challenge ACK), then data at offset 6",
            (
                head,
                Send(106, flags="RA", wait="reply", note="in-window inexact RST"),
                Send(6, good),
                fin(12),
            ),
        ),
        Case(
            "rst-outside-window-then-data",
            "rst",
            "in-order data, RST|ACK 1000 bytes beyond the right edge of the window, then data",
            (
                head,
                Send(1000, flags="RA", anchor="window", note="RST beyond the window"),
                Send(6, good),
                fin(12),
            ),
        ),
        Case(
            "rst-outside-scaled-window-then-data",
            "rst",
            "window scaling negotiated (client offers 7); in-order data, RST|ACK 1000 bytes "
            "beyond the right edge of the scaled window, then data",
            (
                head,
                Send(1000, flags="RA", anchor="window", note="RST beyond the window"),
                Send(6, good),
                fin(12),
            ),
            wscale=7,
        ),
        Case(
            "rst-inside-scaled-window-then-data",
            "rst",
            "window scaling negotiated; in-order data, RST|ACK 20000 bytes past RCV.NXT: "
            "beyond the raw window field, inside the scaled window; then data",
            (
                head,
                Send(20006, flags="RA", wait="reply", note="inexact RST in the window"),
                Send(6, good),
                fin(12),
            ),
            wscale=7,
        ),
        Case(
            "rst-before-rcvnxt-then-data",
            "rst",
            "in-order data, RST|ACK 3 bytes before RCV.NXT (old sequence), then data",
            (head, Send(3, flags="RA", note="RST below RCV.NXT"), Send(6, good), fin(12)),
        ),
        Case(
            "syn-data-no-cookie",
            "syn",
            "SYN carrying EVIL!!EVIL!! without a TFO cookie option; after the handshake "
            "different bytes at the same sequence numbers",
            (Send(0, b"GOOD!!GOOD!!", wait="ack"), fin(12)),
            syn_data=b"EVIL!!EVIL!!",
        ),
        Case(
            "ack-unsent-data",
            "ack",
            "in-order data, then EVIL at offset 6 whose ACK field acknowledges 1000 bytes the "
            "server never sent, then GOOD at offset 6 with a proper ACK",
            (head, Send(6, evil, ack=1000, note="ACK > SND.NXT"), Send(6, good), fin(12)),
        ),
        Case(
            "ack-too-old",
            "ack",
            "in-order data, then EVIL at offset 6 whose ACK field is 100000 below SND.UNA "
            "(older than the max window), then GOOD at offset 6",
            (
                head,
                Send(6, evil, ack=-100000, note="ACK far below SND.UNA"),
                Send(6, good),
                fin(12),
            ),
        ),
        Case(
            "data-without-ack-flag",
            "ack",
            "in-order data, then EVIL at offset 6 with PSH only (no ACK flag), then GOOD",
            (head, Send(6, evil, flags="P", note="no ACK flag"), Send(6, good), fin(12)),
        ),
        Case(
            "paws-old-timestamp",
            "paws",
            "timestamps negotiated; in-order data (TSval 1000+), then EVIL at offset 6 with "
            "TSval 100 (older than TS.Recent), then GOOD with a current TSval",
            (head, Send(6, evil, tsval=100, note="old TSval"), Send(6, good), fin(12)),
            timestamps=True,
        ),
        Case(
            "timestamp-missing",
            "paws",
            "timestamps negotiated; in-order data, then EVIL at offset 6 without the "
            "timestamp option, then GOOD with it",
            (head, Send(6, evil, ts=False, note="no timestamp option"), Send(6, good), fin(12)),
            timestamps=True,
        ),
        Case(
            "data-after-fin",
            "fin",
            "in-order data, FIN at offset 6 (ACKed), then EVIL past the FIN (offset 7)",
            (head, fin(6), Send(7, b"EVIL")),
        ),
        Case(
            "data-over-fin",
            "fin",
            "in-order data, FIN at offset 6 (ACKed), then EVIL at offset 6 (where the FIN was)",
            (head, fin(6), Send(6, b"EVIL")),
        ),
    ]


def _urgent_cases() -> list[Case]:
    return [
        Case(
            "urg-one-byte",
            "urgent",
            "GET /adXmin in one segment, URG with urgent pointer 8 (Linux: byte seq+8-1 = X)",
            (Send(0, b"GET /adXmin", flags="PAU", urg=8), fin(11)),
        ),
        Case(
            "urg-two-byte-xy",
            "urgent",
            "GET_ then a 2-byte segment XY with URG, urgent pointer 2, then /x",
            (
                Send(0, b"GET_", wait="ack"),
                Send(4, b"XY", flags="PAU", urg=2, wait="ack"),
                Send(6, b"/x"),
                fin(8),
            ),
        ),
        Case(
            "urg-two-segments",
            "urgent",
            "aaXaa (URG, pointer 3 -> X) then bbYbb (URG, pointer 3 -> Y) before the "
            "application reads anything",
            (
                Send(0, b"aaXaa", flags="PAU", urg=3, wait="ack"),
                Send(5, b"bbYbb", flags="PAU", urg=3, wait="ack"),
                fin(10),
            ),
        ),
        Case(
            "urg-two-segments-read-between",
            "urgent",
            "aaXaa (URG -> X), the application reads, then bbYbb (URG -> Y)",
            (
                Send(0, b"aaXaa", flags="PAU", urg=3, wait="ack"),
                Drain(note="the application reads"),
                Send(5, b"bbYbb", flags="PAU", urg=3, wait="ack"),
                fin(10),
            ),
        ),
        Case(
            "urg-pointer-beyond-segment",
            "urgent",
            "abcd with URG and urgent pointer 8 (-> offset 7, not in this segment), then "
            "efgZijkl at [4, 12) without URG",
            (Send(0, b"abcd", flags="PAU", urg=8, wait="ack"), Send(4, b"efgZijkl"), fin(12)),
        ),
        Case(
            "urg-in-ooo-segment",
            "urgent",
            "abXd at [4, 8) out of order with URG, pointer 3 (-> X); then the hole [0, 4)",
            (Send(4, b"abXd", flags="PAU", urg=3), Send(0, digits(0, 4)), fin(8)),
        ),
    ]


def _window_steps(window: int, straddle: bool) -> tuple[Step, ...]:
    # EVIL placed relative to the window the SYN-ACK advertised: entirely beyond it, or
    # starting 4 bytes inside.  The application then reads the in-order fill, the window
    # opens, GOOD goes to the same place out of order, and the hole before it is filled.
    at = window - 4 if straddle else window + 8
    evil, good = (b"EVILEVIL", b"GOODGOOD") if straddle else (b"EVIL", b"GOOD")
    steps: list[Step] = [Send(at, evil, note="EVIL vs the initial window")]
    fill_end = min(window, at)
    for a in range(0, fill_end, MAX_PAYLOAD):
        b = min(fill_end, a + MAX_PAYLOAD)
        steps.append(
            Send(
                a,
                digits(a, b),
                wait="ack" if b == fill_end else "",
                note="fills the initial window",
            )
        )
    end = at + len(good)
    steps += [
        Drain(note="the application reads; the window opens"),
        WaitWindow(end),
        Send(at, good),
    ]
    if at > window:
        steps.append(Send(window, digits(window, at), note="hole filler"))
    steps.append(fin(end))
    return tuple(steps)


def _window_cases() -> list[Case]:
    return [
        Case(
            "beyond-window",
            "window",
            "server SO_RCVBUF 2048 and not reading; EVIL 8 bytes past the right edge of the "
            "window the SYN-ACK advertised (W); W bytes in order; the application reads; "
            "GOOD at EVIL's place out of order; the hole before it filled",
            lambda w: _window_steps(w, straddle=False),
            rcvbuf=2048,
        ),
        Case(
            "straddles-window",
            "window",
            "as beyond-window, but EVILEVIL starts 4 bytes inside the window (W-4) and ends "
            "4 bytes beyond it; GOODGOOD later at the same place",
            lambda w: _window_steps(w, straddle=True),
            rcvbuf=2048,
        ),
    ]


def named_cases() -> list[Case]:
    return (
        _overlap_cases() + _inorder_cases() + _control_cases() + _urgent_cases() + _window_cases()
    )


# --------------------------------------------------------------------------- random family

SPAN = 24  # random chunks live in [0, SPAN)


def random_cases(n: int, seed: int) -> list[Case]:
    """n cases of 2-4 chunks (random offset, length 1-12, send order = letter order A, B,
    C, D).  mode "ooo": no chunk covers offset 0, so everything meets in the out-of-order
    queue and the head is filled last; mode "inorder": the first chunk starts at 0.  Holes
    are filled (digits) after the chunks."""
    rng = random.Random(f"uinet-tap/evasion/{seed}")
    out = []
    for i in range(n):
        mode = rng.choice(("ooo", "inorder"))
        pieces = []
        for j in range(rng.randint(2, 4)):
            ln = rng.randint(1, 12)
            lo = 0 if (mode == "inorder" and j == 0) else 1
            start = 0 if lo == 0 else rng.randint(lo, SPAN - ln)
            pieces.append((start, chunk("ABCD"[j], ln)))
        params = {
            "seed": seed,
            "index": i,
            "mode": mode,
            "chunks": [[s, len(d), d[:1].decode()] for s, d in pieces],
        }
        shape = ", ".join(f"{d[:1].decode()}=[{s},{s + len(d)})" for s, d in pieces)
        out.append(
            Case(
                f"random-s{seed}-{i:03d}",
                "random",
                f"random ({mode}): {shape}, then the holes",
                overlap_script(pieces),
                params=params,
            )
        )
    return out
