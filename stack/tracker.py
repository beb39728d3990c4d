"""Passive tracking of every TCP connection seen: the flow table and both endpoints' state.

Each endpoint is judged as its peer would judge it: a segment moves the tracked state only where
the receiving TCP would accept it, so that the streams recorded are what each application read.
In the order RFC 9293 §3.10.7.4 checks them:

- PAWS (RFC 7323 §5): a segment carrying data or a FIN with a timestamp older than the one its
  receiver holds (TS.Recent, less Linux's one-tick allowance) is dropped. RSTs are exempt
  (RFC 7323 §5.3, and Linux accepts them regardless). Its data is held tentatively (below):
  past the capture point frames are still lost and reordered, so the receiver's TS.Recent may
  be older than the one tracked (a FIN on it is held the same way).
- The window (RFC 9293 §3.10.7.4): data that starts at or beyond the right edge its receiver
  advertised is held *tentatively*: it joins the stream only if the receiver's ACK later
  covers it (the capture may have missed the window update) and no acceptable copy came first.
- RST (RFC 5961 §3.2): only one at RCV.NXT resets; in the window it is a challenge ACK; outside
  it is dropped. After an accepted RST nothing more reaches either application.
- The ACK (RFC 9293 §3.10.7.4, RFC 5961 §5.2): a segment whose ACK acknowledges more than its
  receiver could have sent (the data seen, plus at most one advertised window in flight), or
  less than SND.UNA - MAX.SND.WND, is dropped whole; a segment with data and no ACK bit too.
  So an ACK can infer lost data (a gap) only within what was in flight, and never from a
  chain of ACKs alone.
- The handshake: data on a SYN (RFC 7413) is tentative until the SYN-ACK acknowledges it; a
  SYN-ACK that does not acknowledge the client's ISN is ignored, and of competing SYN-ACKs the
  one the client's ACK (or the server's data) confirms is followed (Suricata's
  max-synack-queued). Urgent data (RFC 6093) is taken out of band per the receiver's policy.

Sans-I/O: segments and capture timestamps in, events out; stream bytes leave through the sinks
the application hands in.

Bounded: ``max_flows`` connections (half-open ones first, then the stalest, are evicted);
half-open connections (a SYN, its SYN-ACKs) wait in a compact table until the handshake
completes or anything else arrives, a few hundred bytes each rather than a full connection;
``max_buffer`` held bytes over all streams (the stalest holders are forced past their holes,
found in O(1)); idle timeouts per state class. Every limit that bites is counted.
"""

from __future__ import annotations

import heapq
import math
import struct
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..reassembly.policy import OverlapPolicy
from ..reassembly.seq import MASK, seq_diff
from ..reassembly.stream import MAX_PIECES, Budget, ByteStream, StreamSink
from .connection import TIMEOUT_CLASS, Connection, ConnState, Endpoint, TimeoutClass, end_hint
from .decode import ACK, FIN, RST, SYN, URG, Segment
from .events import CloseReason, Direction, Event, FlowClosed, FlowEnded, FlowOpened
from .fastpath import CFastPath, SynFacts, keyed_in_c, learn_syn_facts, window_shift
from .hostos import HostPolicies
from .options import parse_options, timestamp

# A direction's sink: the connection, the direction, and the SHA-256 context C made for it
# (stack/fastpath.py Sha256: a flow C opened hands its own over; Digested, the digest C took,
# once it ended plain), else None.
SinkFactory = Callable[[Connection, Direction, Any], StreamSink]
# Both sinks of a connection C opened, from the SHA-256 contexts C hashed it into
# (Tracker.make_born_sinks): an application's faster way to make the pair (default:
# SinkFactory).
BornSinks = Callable[[Connection, tuple[Any, Any]], tuple[StreamSink, StreamSink]]

EPHEMERAL_LOW = 32768
CLOSED_MEMORY_CAP = 65536  # closed tuples remembered (two per connection)
MAX_SEQ_JUMP = 1 << 30  # where no window is known: data further than this is not this stream's
MIN_WINDOW = 65535  # in-flight bound before any window is known (the largest unscaled one)
MAX_SYNACKS = 5  # competing SYN-ACKs kept per connection (Suricata's max-synack-queued)
HALF_OPEN_SEGMENTS = 8  # segments a half-open entry defers before it becomes a connection
# What a connection costs in memory, measured (tests/test_hostile.py holds these above the
# Python heap growth, tracemalloc): a full one with its streams, sinks, SHA-256 contexts and
# inspection state; a half-open one's table entries (its deferred segments counted apart).
FULL_COST = 8192
HALF_COST = 512
EVENT_BATCH = 256  # closed connections held before the application is asked to take them
MAX_DOUBTFUL = 64  # segments per direction held for evidence of the peer data they ACK
PAWS_IDLE = 24 * 86400.0  # RFC 7323 §5.5: TS.Recent older than 24 days is not used
PAWS_WINDOW = 1  # Linux's TCP_PAWS_WINDOW: a TSval one tick older still passes
# A deferred segment of a half-open entry: time, seq, ack, flags, window, urgent pointer,
# missing bytes, TTL, from the entry's first sender, options length, MACs length; then the
# options, the MACs and the payload.
_DEFERRED = struct.Struct("<dIIBHHIBBBB")


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    overlap_policy: OverlapPolicy = OverlapPolicy.LINUX
    ignore_vlan: bool = False
    verify_checksums: bool = False
    max_flows: int = 1_000_000
    # What tracked connections may cost, estimated per connection (FULL_COST, HALF_COST and
    # the bytes a half-open one defers); held bytes have caps of their own.
    max_flow_memory: int = 1 << 30
    max_flow_buffer: int = 4 << 20
    max_buffer: int = 512 << 20
    timeout_half_open: float = 60.0
    timeout_established: float = 600.0
    timeout_closing: float = 60.0
    # Seconds a connection ended closed (both FINs, or an accepted RST) keeps its tuple
    # swallowing stragglers (counted, no second record) once its record is written; 0: none
    # (replay, where closed connections stay tracked for timeout_closing of capture time).
    closed_memory: float = 0.0
    host_policies: HostPolicies | None = None  # per-receiver policies (policy file)
    # Keep handshakes in the compact half-open table (off inline, where a SYN may be blocked
    # and a cut-in needs every handshake frame as it passes) once this many half-open
    # connections are tracked in full: a flood goes compact, everyday handshakes (which
    # complete at once) skip the detour. 0: always compact. The records are the same.
    defer_half_open: bool = True
    eager_half_open: int = 4096
    max_pieces: int = MAX_PIECES


class Born:
    """What a connection C opened (Tracker.open_born) keeps until its endpoints are made: its
    SYN's time, its sinks once made, and C's numbers when it ended without needing them
    (fastpath.CFastPath.detach). C keeps what its SYN and SYN-ACK told (born_facts), unless
    given here (``syn``: a connection opened without C). Anything that asks for the
    connection's c or s has them made first (Connection.__getattr__), and for its sinks
    (Connection.sinks) has them made: until then C hashes its streams into contexts of its
    own, and a reader of the sinks that C hands bytes to (the application's HTTP transaction
    follower, ``follower``) is kept here."""

    __slots__ = ("tracker", "syn", "ts", "sinks", "ended", "follower")

    def __init__(self, tracker: Tracker, syn: SynFacts | None, ts: float) -> None:
        self.tracker = tracker
        self.syn = syn
        self.ts = ts  # the SYN's time
        self.sinks: tuple[Any, Any] | None = None
        self.ended: bytes | None = None  # fastpath ut_ended (detach)
        self.follower: Any = None

    def make(self, conn: Connection) -> None:
        self.tracker.make_endpoints(conn, self)

    def make_sinks(self, conn: Connection) -> tuple[Any, Any]:
        return self.tracker.make_born_sinks(conn, self)

    def facts(self, conn: Connection) -> tuple[SynFacts, SynFacts | None]:
        """What its SYN told, and its SYN-ACK once C took it."""
        fast = self.tracker.fast
        if self.syn is not None or fast is None:
            assert self.syn is not None
            return self.syn, None
        return fast.born_facts(conn, self.ended)

    def syn_facts(self, conn: Connection) -> tuple[int | None, int | None, bool]:
        """Connection.syn_facts from the SYN and SYN-ACK."""
        fast = self.tracker.fast
        if self.syn is None and fast is not None:
            return fast.born_syn_facts(conn, self.ended)
        syn, synack = self.facts(conn)
        if synack is None:
            return syn.mss, None, False
        return syn.mss, synack.mss, syn.sack_permitted and synack.sack_permitted


class _NullSink:
    def data(self, offset: int, data: bytes) -> None:
        pass

    def gap(self, offset: int, length: int, hashed: bool = True) -> None:
        pass


def _null_factory(conn: Connection, direction: Direction, sha: Any = None) -> StreamSink:
    return _NullSink()


def guess_server_is_first(sport: int, dport: int) -> bool:
    """Mid-stream orientation: the side on a well-known port (< 1024), else the side below the
    ephemeral range, is the server. Returns True when the *sender* looks like the server."""
    if (sport < 1024) != (dport < 1024):
        return sport < 1024
    if (sport < EPHEMERAL_LOW) != (dport < EPHEMERAL_LOW):
        return sport < EPHEMERAL_LOW
    return False


class Tracker:
    def __init__(self, config: TrackerConfig | None = None, sinks: SinkFactory | None = None):
        self.config = config or TrackerConfig()
        self.sinks = sinks or _null_factory
        self.born_sinks: BornSinks = self._born_sinks
        # Whether a connection C opened gets its FlowOpened (an application whose handling of
        # it does nothing for such a connection may spare the event).
        self.announce_born = True
        # Called with each connection C opened as it is made, its sinks not yet made (the
        # application's per-connection state: conn.user).
        self.born_started: Callable[[Connection], Any] | None = None
        c = self.config
        # Retained (committed, unacknowledged) bytes have a global cap of their own.
        self.budget = Budget(retain_cap=c.max_buffer // 2)
        self.table: dict[bytes, tuple[Connection, bool]] = {}  # key -> (conn, sender is client)
        self.lrus: tuple[OrderedDict[Connection, None], ...] = (
            OrderedDict(),
            OrderedDict(),
            OrderedDict(),
        )
        # Half-open entries: first sender's key -> [id, vlans, deferred segment, ...], in
        # order of last activity; and the reverse key -> the first sender's key.
        self.half: OrderedDict[bytes, list] = OrderedDict()
        self.half_rev: dict[bytes, bytes] = {}
        self.half_bytes = 0  # what the deferred segments take
        self.timeouts = (c.timeout_half_open, c.timeout_established, c.timeout_closing)
        self.events: list[Event] = []
        self.anomalies: Counter[str] = Counter()
        self.limits: Counter[str] = Counter()  # limits that bit, over all connections
        self.next_id = 0
        self.active = 0
        self.evicted = 0
        self.buffer_forced = 0
        self.orphans = 0  # segments of no known connection that could not start one
        # Tuples of connections that ended closed -> until when their stragglers are
        # swallowed (closed_memory), oldest first, at most CLOSED_MEMORY_CAP.
        self.closed: OrderedDict[bytes, float] = OrderedDict()
        self.stragglers = 0  # segments those swallowed
        self.claim_closed = False  # those tuples are claimed in C (light_on)
        self.tcp_packets = 0
        self.last_expiry = float("-inf")
        self.now = 0.0
        self.fast: CFastPath | None = None  # set by the application to use the C fast path
        # The connection the last segment() went to (None: deferred, orphaned or dropped),
        # for an application that files frames by connection (per-flow pcaps).
        self.last_conn: Connection | None = None
        self.config_retain = 256 << 10  # bytes kept per direction for conflict checks
        self._policies = c.host_policies
        # Called when events pile up inside one call (the application drains them).
        self.on_events: Callable[[], None] | None = None
        # Set by an application that takes the records of light flows as C writes them
        # (CFastPath.end_lights): C ends those that end plain, at their timeouts and the end
        # of input, in batches; on_lines(reason) takes each batch's (CFastPath.lines), after
        # every event before it. No FlowEnded is made for them.
        self.on_lines: Callable[[CloseReason], None] | None = None

    def use_fast_path(self, fast: CFastPath) -> None:
        self.fast = fast
        fast.place = self._place
        fast.budget = self.budget
        c = self.config
        fast.caps = (c.max_buffer, c.max_flow_buffer, c.max_pieces)
        fast.key_config(not c.ignore_vlan)

    @property
    def half_open(self) -> int:
        return len(self.half)

    # -- flow table ----------------------------------------------------------------------------

    def key(self, seg: Segment) -> tuple[bytes, bytes]:
        """(this direction's key, the reverse direction's key) in the flow table."""
        return self._key(seg)

    def _key(self, seg: Segment) -> tuple[bytes, bytes]:
        sp = seg.sport.to_bytes(2, "big")
        dp = seg.dport.to_bytes(2, "big")
        prefix = key_prefix(seg.vlans, seg.tunnel, self.config.ignore_vlan)
        return (prefix + seg.src + seg.dst + sp + dp, prefix + seg.dst + seg.src + dp + sp)

    @property
    def flow_memory(self) -> int:
        """The estimated memory of the connections tracked (held bytes aside)."""
        return self.active * FULL_COST + len(self.half) * HALF_COST + self.half_bytes

    def _make_room(self, more: int = FULL_COST) -> None:
        """Room for one more connection costing ``more``: under both caps, the count and the
        memory, evicting (half-open ones first) until there is."""
        cfg = self.config
        while self.active + len(self.half):
            if self.active + len(self.half) >= cfg.max_flows:
                self._evict_stalest("max_flows")
            elif self.flow_memory + more > cfg.max_flow_memory:
                self._evict_stalest("max_flow_memory")
            else:
                return

    def _open(
        self,
        ts: float,
        seg: Segment,
        keys: tuple[bytes, bytes],
        sender_client: bool,
        conn_id: int | None = None,
    ) -> Connection:
        if conn_id is None:
            self._make_room()
            conn_id = self.next_id
            self.next_id += 1
        a = (seg.src, seg.sport)
        b = (seg.dst, seg.dport)
        client, server = (a, b) if sender_client else (b, a)
        ckey, skey = keys if sender_client else (keys[1], keys[0])
        cfg = self.config
        vlans = () if cfg.ignore_vlan else seg.vlans
        conn = Connection(
            conn_id,
            (ckey, skey),
            vlans,
            seg.v6,
            client,
            server,
            Endpoint(self._stream(server[0])),
            Endpoint(self._stream(client[0])),
            ts,
        )
        if cfg.ignore_vlan and seg.vlans:
            conn.vlans = seg.vlans  # reported, not keyed
        conn.tunnel = seg.tunnel
        fast = self.fast
        if fast is not None and fast.claiming and keyed_in_c(ckey):
            fast.claim((ckey, skey), True)  # a SYN on it is no longer C's to open a flow
        self._enter(conn, self.sinks)
        return conn

    def _enter(
        self, conn: Connection, sinks: SinkFactory | None, announce: bool = True, new: bool = True
    ) -> None:
        """A new connection's sinks (unless made already), its place in the table and timeout
        lists, its event (unless ``announce`` is false). ``new`` false: a light flow's, counted
        in ``active`` since C opened it."""
        ckey, skey = conn.keys
        if sinks is not None:
            conn.c.stream.sink = sinks(conn, Direction.C2S, None)
            conn.s.stream.sink = sinks(conn, Direction.S2C, None)
        self.table[ckey] = (conn, True)
        self.table[skey] = (conn, False)
        if new:
            self.active += 1
        self._place(conn)
        if announce:
            self.events.append(FlowOpened(conn))

    # -- flows C opened (stack/fastpath.py, ut_run) ----------------------------------------

    def born_ok(self) -> bool:
        """Whether C may open flows itself: every stream read by one policy final on
        arrival, as C's are (host policies may give another to some receivers)."""
        return self._policies is None and self._stream(b"").final

    def born_room(self) -> tuple[int, int]:
        """How many flows C may open in its next run: as many as _make_room would open
        without evicting, and segment() without deferring the handshake (a half-open entry
        pending, none: its SYN-ACK must find it); and the id the first one takes."""
        if self.half:
            return 0, self.next_id
        cfg = self.config
        room = min(
            cfg.max_flows - self.active,
            (cfg.max_flow_memory - self.flow_memory) // FULL_COST,
        )
        if cfg.defer_half_open:
            room = min(room, min(cfg.eager_half_open, cfg.max_flows // 4) - self._half_tracked())
        return max(room, 0), self.next_id

    def _half_tracked(self) -> int:
        """Half-open connections tracked in full (light flows among them)."""
        fast = self.fast
        if fast is not None and fast.light:
            return len(self.lrus[0]) + fast.light_count(TimeoutClass.HALF_OPEN)
        return len(self.lrus[0])

    def light_on(self) -> None:
        """The flows C opens are light (CFastPath.light_config): no connection is made for
        one until something asks for it (_adopt_light), and one that ends plain is made only
        for its record (_finish_light). Where closed tuples swallow stragglers, the tuples
        remembered stay claimed in C (CFastPath.keep_closed): C opens no light flow on one,
        so a SYN there reaches _new_connection, as every frame on one does."""
        fast = self.fast
        assert fast is not None
        fast.light_config()
        if self.config.closed_memory > 0:
            fast.keep_closed = self.claim_closed = True
        fast.on_light_born = self._light_born
        fast.on_adopt_holders = self._adopt_holders

    def light_off(self) -> None:
        """Every connection in the table and on the timeout lists from the flow's first frame
        on (a live view lists them): before any traffic."""
        if self.fast is not None and self.fast.light:
            self.fast.light_off()
            self.fast.keep_closed = self.claim_closed = False

    def _light_born(self, n: int) -> None:
        """C opened ``n`` light flows in its run, numbered from next_id on."""
        self.next_id += n
        self.active += n

    def open_born(
        self, ts: float, keys: tuple[bytes, bytes], syn: SynFacts | None = None
    ) -> Connection:
        """The connection of a flow C opened at the client's bare SYN: what _new_connection,
        _process and _take_syn make of that SYN. C holds the numbers it keeps (base, window,
        options, TS.Recent, counts, what the SYN told) until detach, and hashes its streams
        until its sinks are made (make_born_sinks); the rest is set here."""
        conn_id = self.next_id
        self.next_id += 1
        conn = self._born_connection(ts, keys, syn, conn_id)
        self._enter(conn, None, self.announce_born)
        return conn

    def _adopt_light(self, slot: int) -> Connection:
        """The connection of the light flow at ``slot``, made now as open_born made those of
        flows C opened, with what C and the fast path kept of it since (CFastPath.adopt): in
        the table, at the end of its state's timeout list (the frame being handled, if any,
        moves it there anyway)."""
        fast = self.fast
        assert fast is not None
        ts, keys, conn_id = fast.light_identity(slot)
        conn = self._born_connection(ts, keys, None, conn_id)
        fast.adopt(conn, slot)
        self._enter(conn, None, self.announce_born, new=False)
        return conn

    def _adopt_holders(self, slots: list[int]) -> None:
        """The connections of light flows holding pieces out of order (CFastPath.release_held),
        made where the general path keeps them on their timeout lists: in the order of the
        frames that last moved them, among the tracker's own."""
        fast = self.fast
        assert fast is not None
        made = []
        for slot in slots:
            moved = fast.light_moved(slot)
            conn = self._adopt_light(slot)  # _place put it last: merged in below
            conn.moved = moved
            made.append(conn)
        for lru in self.lrus:
            new = sorted((c for c in made if c.lru is lru), key=_moved)
            if new:
                old = list(lru)[: -len(new)]  # the tracker's own, in their order
                lru.clear()
                lru.update(dict.fromkeys(heapq.merge(old, new, key=_moved)))

    def _born_connection(
        self,
        ts: float,
        keys: tuple[bytes, bytes],
        syn: SynFacts | None,
        conn_id: int,
        reused: bool = True,
    ) -> Connection:
        """``reused``: a new connection takes the tuple (not one made of a flow that ended)."""
        closed = self.closed
        if closed and reused:  # a new connection on the tuple: the memory of the old one goes
            for key in keys:
                closed.pop(key, None)
        vlans, caddr, cport, saddr, sport = split_key(keys[0])
        conn = Connection(
            conn_id, keys, vlans, len(caddr) == 16, (caddr, cport), (saddr, sport),
            None, None, ts,  # type: ignore[arg-type]
        )  # fmt: skip
        # Its endpoints are made when first asked for (Born.make): a connection C carries to
        # its end unsurprised never needs them.
        del conn.c, conn.s
        conn.born = Born(self, syn, ts)
        conn.state = ConnState.SYN_SENT  # before _enter: it goes on the half-open list at once
        if self.born_started is not None:
            self.born_started(conn)
        return conn

    def _born_sinks(self, conn: Connection, shas: tuple[Any, Any]) -> tuple[Any, Any]:
        return self.sinks(conn, Direction.C2S, shas[0]), self.sinks(conn, Direction.S2C, shas[1])

    def make_born_sinks(self, conn: Connection, born: Born) -> tuple[Any, Any]:
        """The sinks of a connection C opened, made when first asked for: they take over the
        SHA-256 contexts C hashes its streams into (or, once it ended plain and C freed
        them, the digests C took of them)."""
        fast = self.fast
        shas = fast.born_shas(conn, born.ended) if fast is not None else (None, None)
        born.sinks = self.born_sinks(conn, shas)
        if fast is not None:
            fast.sinks_made(conn, born.sinks)
        return born.sinks

    def make_endpoints(self, conn: Connection, born: Born) -> None:
        """The endpoints of a connection C opened, as open_born would have made them and C's
        SYN-ACK (synack_taken) and end (fastpath.CFastPath.detach) would have left them."""
        sinks = conn.sinks()
        conn.born = None
        c = Endpoint(self._stream(conn.server[0]))
        s = Endpoint(self._stream(conn.client[0]))
        c.stream.sink, s.stream.sink = sinks
        conn.c, conn.s = c, s
        c.packets = 1
        syn, synack = born.facts(conn)
        learn_syn_facts(c, syn)
        c.ts_recent_at = born.ts
        if synack is not None:
            learn_syn_facts(s, synack)
        if born.ended is not None:
            assert self.fast is not None
            self.fast.apply_ended(conn, born.ended)

    def _stream(self, receiver: bytes) -> ByteStream:
        """A direction's stream, reassembled by the policy of the host that receives it."""
        cfg = self.config
        hosts = self._policies
        policy = hosts.lookup(receiver) if hosts is not None else cfg.overlap_policy
        return ByteStream(
            _NullSink(), policy, cfg.max_flow_buffer, self.budget, self.config_retain,
            cfg.max_pieces,
        )  # fmt: skip

    def _place(self, conn: Connection) -> None:
        """Put the connection on its state's timeout list; each list is kept in order of
        last_seen (every path that sees a packet moves the connection to the end)."""
        lru = self.lrus[TIMEOUT_CLASS[conn.state]]
        if conn.lru is not lru:
            if conn.lru is not None:
                del conn.lru[conn]  # type: ignore[attr-defined]
            lru[conn] = None
            conn.lru = lru
            conn.moved = self.tcp_packets

    def _finish(self, conn: Connection, reason: CloseReason) -> None:
        """Take a connection out of the table, flush its streams, emit FlowClosed."""
        fast = self.fast
        # Ended plain: a connection C opened and carried to its end with nothing for the
        # steps below to do (CFastPath.detach says), whose endpoints were never made.
        plain = False
        if fast is not None:
            if conn.fast_slot >= 0:
                plain = fast.detach(conn, ended=True)  # its keys unclaimed too
            elif fast.claiming and keyed_in_c(conn.keys[0]):
                fast.claim(conn.keys, False)
        for key in conn.keys:
            entry = self.table.get(key)
            if entry is not None and entry[0] is conn:
                del self.table[key]
        memory = self.config.closed_memory
        if memory > 0 and conn.state in (ConnState.CLOSED, ConnState.RESET):
            self._remember_closed(conn.keys, conn.last_seen + memory)
            claim = self.claim_closed and fast is not None and fast.claiming
            if claim and keyed_in_c(conn.keys[0]):
                fast.claim(conn.keys, True)  # type: ignore[union-attr]  # as light flows' stay
        self.active -= 1
        if not plain and not conn.bypassed and conn.state is not ConnState.RESET:
            # What the peers acknowledged beyond what the capture showed (within what was
            # in flight when they did: capture loss at the end) now stands: the trailing gap;
            # and data that rode on such ACKs had them.
            for ep in (conn.c, conn.s):
                if ep.ack_claim > ep.stream.acked:
                    self._ack_stream(ep, ep.ack_claim)
            for ep, peer in ((conn.c, conn.s), (conn.s, conn.c)):
                if ep.doubtful or ep.fin_needed is not None:
                    self._confirm_doubtful(conn, ep, peer, peer.stream.acked)
        if conn.lru is not None:  # after a held FIN confirmed above has moved it
            del conn.lru[conn]  # type: ignore[attr-defined]
            conn.lru = None
        for ep, peer in () if plain else ((conn.c, conn.s), (conn.s, conn.c)):
            stream = ep.stream
            if ep.syn and peer.isn is None and stream.tentative.held:
                # Data on a SYN no SYN-ACK ever answered: nothing says the receiver refused
                # it (a TFO cookie, or a SYN-ACK the capture missed), so it stands.
                stream.accept_tentative()
                ep.seen_end = max(ep.seen_end, stream.accepted_end)
            # A bypassed stream ends where reassembly stopped: nothing after it is a gap.
            # After a RST the receiver is gone: what it acknowledged is all there is.
            stream.flush(0 if conn.bypassed else self._end_hint(ep))
            if stream.acked_gaps:
                self._anomaly(conn, "ack_unseen", stream.acked_gaps)
            if ep.fin_held is not None and ep.fin_off is None and conn.state is not ConnState.RESET:
                # A FIN beyond the window or on an ACK of data never seen that no ACK covered.
                self._anomaly(conn, "fin_not_acknowledged")
            if stream.discarded:
                # Tentative bytes no ACK ever covered (beyond the window, or riding on an ACK
                # of data never seen) and no receiver took: not what the application read.
                self._anomaly(conn, "data_not_acknowledged")
            if stream.urgent:
                self._anomaly(conn, "urgent_oob", stream.urgent)
            if stream.urgent_ambiguous:
                self._anomaly(conn, "urgent_ambiguous", stream.urgent_ambiguous)
            if stream.limits:
                for kind, n in stream.limits.items():
                    self.limits[kind] += n
        conn.close = reason = _closed_by(conn.state, reason)
        self._emit(FlowClosed(conn, reason))

    def _emit(self, event: FlowClosed | FlowEnded) -> None:
        self.events.append(event)
        if len(self.events) >= EVENT_BATCH and self.on_events is not None:
            # Closing many at once (timeouts after a pause, the end of input, an eviction
            # storm): hand them over now rather than hold every closed connection.
            self.on_events()

    def _remember_closed(self, keys: tuple[bytes, bytes], until: float) -> None:
        """The tuples of a connection that ended closed swallow its stragglers until
        ``until``; the oldest remembered go past CLOSED_MEMORY_CAP. With claim_closed, the
        keys are claimed in C while remembered (light flows' keep their claims as they end:
        CFastPath.keep_closed; _finish claims the others')."""
        closed = self.closed
        for key in keys:
            closed.pop(key, None)
            closed[key] = until
        while len(closed) > CLOSED_MEMORY_CAP:
            key, _ = closed.popitem(last=False)
            self.limits["closed_memory"] += 1  # a tuple forgotten early, at the cap
            self._forget_closed(key)

    def _forget_closed(self, key: bytes) -> None:
        """A tuple no longer remembered closed: C's again to open a flow on (claim_closed),
        unless a connection the tracker holds has it (one key of a pair the cap split can
        stay remembered after a new connection took the tuple: _new_connection looks up the
        sender's)."""
        fast = self.fast
        if not self.claim_closed or fast is None or not fast.claiming or key in self.table:
            return
        if keyed_in_c(key):
            fast.claim((key,), False)

    def _finish_light(self, slot: int, reason: CloseReason) -> None:
        """_finish for a light flow: one that ends plain (CFastPath.end_light) ends as it is,
        its connection never made (FlowEnded: connection_of makes it for what needs it); any
        other has it made first (_adopt_light) and ends as every connection does."""
        fast = self.fast
        assert fast is not None
        got = fast.end_light(slot)
        if got is None:
            self._finish(self._adopt_light(slot), reason)
            return
        self._ended_plain(got, reason)

    def _ended_plain(self, got: tuple[bytes, Any, Any], reason: CloseReason) -> None:
        """A light flow C ended plain (CFastPath.end_light's ``got``): its FlowEnded."""
        assert self.fast is not None
        ended, user, follower = got
        self.active -= 1
        fast = self.fast
        state = fast.ended_state(ended)
        memory = self.config.closed_memory
        if memory > 0 and state in (ConnState.CLOSED, ConnState.RESET):
            _, keys, _ = fast.light_identity(ended)
            self._remember_closed(keys, fast.ended_seen(ended) + memory)
        self._emit(FlowEnded(ended, user, follower, _closed_by(state, reason)))

    def connection_of(self, event: FlowEnded) -> Connection:
        """The connection of a light flow that ended plain, made now (as open_born made those
        of flows C opened, and their end left them) for what reads one."""
        fast = self.fast
        assert fast is not None
        ts, keys, conn_id = fast.light_identity(event.ended)
        conn = self._born_connection(ts, keys, None, conn_id, reused=False)
        fast.adopt_ended(conn, event.ended, event.user, event.follower)
        conn.close = event.reason
        return conn

    def _head(self, cls: int) -> tuple[float, Connection | int] | None:
        """The head of timeout list ``cls``: (last_seen, the connection) of the one moved
        longest ago, or (last_seen, its slot) where that is a light flow on C's list."""
        lru = self.lrus[cls]
        conn = next(iter(lru)) if lru else None
        fast = self.fast
        if fast is not None and fast.light:
            slot, moved, seen = fast.light_head(cls)
            if slot >= 0 and (conn is None or moved < conn.moved):
                return seen, slot
        return None if conn is None else (conn.last_seen, conn)

    def _end(self, which: Connection | int, reason: CloseReason) -> None:
        """End a connection, or the light flow at a slot (_head's)."""
        if isinstance(which, int):
            self._finish_light(which, reason)
        else:
            self._finish(which, reason)

    @staticmethod
    def _end_hint(ep: Endpoint) -> int:
        """Where the stream ends: the sender's last byte or, past it, what the peer ACKed (data
        the capture never held). An ACK one past the last byte acknowledges a FIN (RFC 9293
        §3.4): when that FIN was not captured it is not a missing byte."""
        return end_hint(ep.seen_end, ep.stream.acked, ep.fin_off)

    def _evict_stalest(self, cap: str) -> None:
        """At a connection cap: a half-open entry goes first (a SYN flood must not push out
        established connections), else the stalest connection. Counted by cap."""
        self.evicted += 1
        half, eager = self.half, self._head(TimeoutClass.HALF_OPEN)
        if half or eager is not None:
            self.limits[f"{cap}_half_open"] += 1
            # The stalest half-open connection, compact or tracked in full.
            if half and (
                eager is None or _DEFERRED.unpack_from(half[next(iter(half))][-1])[0] <= eager[0]
            ):
                conn = self._promote(next(iter(half)))
                if conn is not None:
                    self._finish(conn, CloseReason.EVICTED)
            else:
                self._end(eager[1], CloseReason.EVICTED)  # type: ignore[index]
            return
        later = (self._head(TimeoutClass.ESTABLISHED), self._head(TimeoutClass.CLOSING))
        heads = [h for h in later if h is not None]
        if heads:
            self.limits[cap] += 1
            self._end(min(heads, key=lambda h: h[0])[1], CloseReason.EVICTED)

    def _enforce_buffer(self) -> None:
        """Over the global cap: the stalest streams holding bytes are forced past their holes
        (the budget keeps them in order: no scan of the connections)."""
        if self.budget.c_used:
            # Pieces the C fast path holds are forced like any: they come back first.
            self.fast.release_held()  # type: ignore[union-attr]
        forced = self.budget.enforce(self.config.max_buffer)
        self.buffer_forced += forced

    def expire(self, now: float) -> None:
        """Close connections idle longer than their state's timeout (capture time)."""
        closed = self.closed
        while closed and next(iter(closed.values())) < now:
            key, _ = closed.popitem(last=False)
            self._forget_closed(key)
        half = self.half
        limit = now - self.timeouts[0]
        while half:
            k0 = next(iter(half))
            entry = half[k0]
            if _DEFERRED.unpack_from(entry[-1])[0] >= limit:
                break
            conn = self._promote(k0)
            if conn is not None:
                self._finish(conn, CloseReason.TIMEOUT)
        for cls in TimeoutClass:
            self._expire_class(cls, now - self.timeouts[cls], CloseReason.TIMEOUT)

    def _expire_class(self, cls: TimeoutClass, limit: float, reason: CloseReason) -> None:
        """End what is on timeout list ``cls`` (the tracker's and C's light flows', in the
        order they moved) idle since before ``limit``."""
        while True:
            if self.on_lines is not None:
                self._end_lights(cls, limit, reason)
            head = self._head(cls)
            if head is None or not (head[0] < limit or limit == math.inf):
                return
            self._end(head[1], reason)

    def _end_lights(self, cls: TimeoutClass, limit: float, reason: CloseReason) -> None:
        """C ends the light flows at the head of its list ``cls`` that it can, with their
        records (on_lines), up to the tracker's own head or one whose end is Python's."""
        fast = self.fast
        take = self.on_lines
        assert fast is not None and take is not None
        lru = self.lrus[cls]
        bound = next(iter(lru)).moved if lru else 1 << 62
        while True:
            code, n, slot = fast.end_lights(cls, limit, bound, reason.value)
            if n:
                self.active -= n
                if self.events and self.on_events is not None:
                    self.on_events()  # what ended before them is written first
                take(reason)
                if self.claim_closed:  # their claims stay in C (keep_closed)
                    memory = self.config.closed_memory
                    for keys, seen in fast.closed_lines():
                        self._remember_closed(keys, seen + memory)
            if code == 3:  # ended plain, but its record is Python's to make
                self._ended_plain(fast.ended_light(slot), reason)
            elif code != 2:
                return

    def flush(self) -> None:
        """End of input: every connection still open ends with reason ``eof``."""
        while self.half:
            conn = self._promote(next(iter(self.half)))
            if conn is not None:
                self._finish(conn, CloseReason.EOF)
        for cls in TimeoutClass:
            self._expire_class(cls, math.inf, CloseReason.EOF)

    def drain_events(self) -> list[Event]:
        events, self.events = self.events, []
        return events

    # -- half-open entries ---------------------------------------------------------------------

    def _defer(self, ts: float, seg: Segment, keys: tuple[bytes, bytes]) -> None:
        """A SYN or SYN-ACK of an unknown tuple: a compact half-open entry, not a connection."""
        blob = _pack(ts, seg, True)
        self._make_room(HALF_COST + len(blob))
        entry = [self.next_id, (seg.vlans, seg.tunnel), blob]
        self.half_bytes += len(blob)
        self.next_id += 1
        self.half[keys[0]] = entry
        self.half_rev[keys[1]] = keys[0]

    def _half_segment(self, ts: float, seg: Segment, keys: tuple[bytes, bytes]) -> bool:
        """A segment of a half-open entry's tuple: deferred too (True) when it is one more
        handshake segment (a retransmission, a SYN-ACK to the SYN); otherwise the entry becomes
        a connection first and the caller processes the segment (False)."""
        k0 = keys[0]
        entry = self.half.get(k0)
        first = entry is not None
        if entry is None:
            k0 = self.half_rev.get(k0)  # type: ignore[assignment]
            if k0 is None:
                return False
            entry = self.half[k0]
        flags = seg.flags
        _ts, o_seq, _ack, o_flags = _DEFERRED.unpack_from(entry[2])[:4]
        same_kind = flags & (SYN | ACK | RST | FIN) == o_flags & (SYN | ACK | RST | FIN)
        if len(entry) < 2 + HALF_OPEN_SEGMENTS and flags & SYN and not flags & (RST | FIN):
            if first and same_kind and seg.seq == o_seq:
                blob = _pack(ts, seg, True)  # the opener, retransmitted
            elif not first and flags & ACK and not o_flags & ACK:
                blob = _pack(ts, seg, False)  # a SYN-ACK to the SYN
            else:
                blob = b""
            if blob:
                entry.append(blob)
                self.half_bytes += len(blob)
                self.half.move_to_end(k0)
                return True
        self._promote(k0)
        return False

    def _promote(self, k0: bytes) -> Connection | None:
        """Make a half-open entry a connection: its deferred segments replayed in order, as if
        they had been processed when they came (same id, times and counts)."""
        entry = self.half.pop(k0)
        self.half_bytes -= sum(len(blob) for blob in entry[2:])
        conn_id, (vlans, tunnel) = entry[0], entry[1]
        conn = None
        for i, blob in enumerate(entry[2:]):
            ts, seg = _unpack(blob, k0, vlans, tunnel, self.config.ignore_vlan)
            keys = self._key(seg)
            if i == 0:
                self.half_rev.pop(keys[1], None)
            conn = self._handle(ts, seg, keys, conn_id if i == 0 else None, attach=False)
        return conn

    # -- per segment ---------------------------------------------------------------------------

    def segment(self, ts: float, seg: Segment) -> None:
        self.last_conn = None
        self.tcp_packets += 1
        budget = self.budget
        budget.frame = self.tcp_packets
        budget.tick = 0
        self.now = ts
        if ts - self.last_expiry >= 1.0:
            self.last_expiry = ts
            self.expire(ts)
        if seg.checksum_ok is False:
            self.anomalies["bad_checksum"] += 1
            return
        keys = self._key(seg)
        if keys[0] not in self.table:
            fast = self.fast
            if fast is not None and fast.light:
                slot = fast.light_slot(keys[0])
                if slot >= 0:  # C's until now: its connection is made, and takes the segment
                    self._adopt_light(slot)
                    self._handle(ts, seg, keys)
                    return
            if self.half and self._half_segment(ts, seg, keys):
                return
            flags = seg.flags
            cfg = self.config
            if (
                flags & SYN
                and not flags & (RST | FIN)
                and cfg.defer_half_open
                and self._half_tracked() >= min(cfg.eager_half_open, cfg.max_flows // 4)
                and keys[0] not in self.table
            ):
                self._defer(ts, seg, keys)
                return
        self._handle(ts, seg, keys)

    def _handle(
        self,
        ts: float,
        seg: Segment,
        keys: tuple[bytes, bytes],
        conn_id: int | None = None,
        attach: bool = True,
    ) -> Connection | None:
        flags = seg.flags
        entry = self.table.get(keys[0])
        if entry is None:
            conn = self._new_connection(ts, seg, keys, conn_id)
            if conn is None:
                return None
            from_client = conn.keys[0] == keys[0]
        else:
            conn, from_client = entry
            if conn.fast_slot >= 0:
                self.fast.detach(conn)  # type: ignore[union-attr]
            if flags & SYN and not flags & ACK:
                conn, from_client = self._syn_on_known(ts, seg, keys, conn, from_client)
        conn.last_seen = ts
        lru = conn.lru
        if lru is not None:
            lru.move_to_end(conn)  # type: ignore[attr-defined]
            conn.moved = self.tcp_packets
        sender, peer = (conn.c, conn.s) if from_client else (conn.s, conn.c)
        self._process(conn, sender, peer, seg, from_client, ts)
        if self.budget.used + self.budget.c_used > self.config.max_buffer:
            self._enforce_buffer()
        fast = self.fast
        if attach and fast is not None and conn.lru is not None and fast.eligible(conn):
            fast.attach(conn)
        self.last_conn = conn
        return conn

    def _new_connection(
        self, ts: float, seg: Segment, keys: tuple[bytes, bytes], conn_id: int | None = None
    ) -> Connection | None:
        flags = seg.flags
        if self.closed:
            until = self.closed.get(keys[0])
            if until is not None:
                if (flags & SYN and not flags & ACK) or until < ts:
                    # a new connection on the tuple, or the memory of the old one ran out
                    for key in keys:
                        if self.closed.pop(key, None) is not None:
                            self._forget_closed(key)
                else:
                    self.stragglers += 1  # of a connection whose record is written
                    return None
        if flags & SYN:
            # SYN: the sender is the client. SYN-ACK with the SYN missed: the sender is the server.
            conn = self._open(ts, seg, keys, not flags & ACK, conn_id)
            conn.state = ConnState.SYN_SENT if not flags & ACK else ConnState.SYN_RECEIVED
            self._place(conn)
            return conn
        if flags & RST or not (seg.payload or seg.missing):
            # No SYN and nothing to reconstruct: a stray ACK, FIN or RST of a connection
            # that ended or was never seen. Counted; it cannot start a stream.
            self.orphans += 1
            return None
        server_first = guess_server_is_first(seg.sport, seg.dport)
        conn = self._open(ts, seg, keys, not server_first, conn_id)
        conn.midstream = True
        conn.state = ConnState.ESTABLISHED
        self._place(conn)
        return conn

    def _syn_on_known(
        self,
        ts: float,
        seg: Segment,
        keys: tuple[bytes, bytes],
        conn: Connection,
        from_client: bool,
    ) -> tuple[Connection, bool]:
        """A bare SYN on a known 4-tuple: a retransmission, the other half of a simultaneous
        open, the original SYN captured late, or a new connection reusing the tuple."""
        ep = conn.c if from_client else conn.s
        if ep.isn is not None and ep.isn == seg.seq:
            return conn, from_client  # retransmitted SYN
        if (
            ep.isn is None
            and ep.base is not None
            and not conn.closed
            and seq_diff(ep.base, seg.seq) == 1
        ):
            # The SYN of a connection picked up mid-stream, captured late (arkime PR #4019):
            # it sits just before the stream's first byte.
            return conn, from_client
        if ep.isn is None and ep.base is None and conn.state is ConnState.SYN_SENT:
            return conn, from_client  # simultaneous open: the peer's own SYN
        # A SYN with a new ISN on a tuple in use: RFC 9293 §3.10.7.4 would challenge it in
        # ESTABLISHED, but to a passive observer a fresh SYN with another ISN is the start of
        # the next connection (Suricata, Zeek and tcpflow all split here).
        self._finish(conn, CloseReason.TIMEOUT if not conn.closed else CloseReason.FIN)
        new = self._open(ts, seg, keys, sender_client=True)
        new.state = ConnState.SYN_SENT
        self._place(new)
        self._anomaly(new, "tuple_reuse")
        return new, True

    def _anomaly(self, conn: Connection, kind: str, n: int = 1) -> None:
        conn.anomalies[kind] = conn.anomalies.get(kind, 0) + n
        self.anomalies[kind] += n

    def _process(
        self,
        conn: Connection,
        ep: Endpoint,
        peer: Endpoint,
        seg: Segment,
        from_client: bool,
        ts: float,
    ) -> None:
        flags = seg.flags
        ep.packets += 1
        ep.ttl = seg.ttl
        if seg.macs and not ep.mac:
            ep.mac = seg.macs[6:12]  # the sender's own address (source MAC)
        nbytes = len(seg.payload) + seg.missing
        ep.payload_bytes += nbytes
        if conn.state is ConnState.SYN_SENT and from_client and flags & RST and not peer.syn:
            # The server has not answered: it is in LISTEN as far as anyone can tell, where a
            # RST is ignored (RFC 9293 §3.10.7.2).
            self._anomaly(conn, "invalid_in_handshake")
            return
        if (
            conn.state is ConnState.SYN_SENT
            and from_client
            and ep.syn
            and not peer.syn
            and flags & ACK
            and not flags & (SYN | RST)
        ):
            # A client in SYN-SENT leaves it only on a SYN-ACK, and ACKs nothing before
            # (RFC 9293 §3.10.7.3): its ACK says the capture missed the SYN-ACK. The server's
            # segments are taken from here on, its stream starting where this ACK says.
            self._anomaly(conn, "synack_unseen")
            conn.state = ConnState.ESTABLISHED
            self._place(conn)
        if conn.state is ConnState.SYN_SENT and not ep.syn and not flags & SYN:
            # The SYN's receiver has not answered yet. RFC 9293 §3.10.7.3: in SYN-SENT the
            # client drops any segment without SYN but a RST that ACKs its SYN; in LISTEN the
            # server ignores a RST. Injected RSTs and FINs ahead of the SYN-ACK land here.
            if flags & RST and not from_client and self._rst_answers_syn(conn, ep, peer, seg):
                conn.state = ConnState.RESET
                self._place(conn)
            else:
                self._anomaly(conn, "invalid_in_handshake")
            return
        if conn.bypassed:
            self._counted_only(conn, ep, peer, seg)
            return
        if conn.state is ConnState.RESET:
            # Both applications are gone: nothing more reaches either of them.
            if nbytes:
                self._anomaly(conn, "data_after_rst")
            return
        if flags & SYN:
            if not self._on_syn(conn, ep, peer, seg, ts):
                return
        elif ep.base is None:
            ep.base = seg.seq  # no SYN from this side: its stream starts at the first byte seen
        elif conn.alt_synacks and not from_client:
            self._confirm_synack(conn, seg.seq, ts)
        if flags & RST:
            self._on_rst(conn, ep, peer, seg, from_client, ts)
            return
        seq = seg.seq
        if flags & SYN:
            seq = (seq + 1) & MASK  # SYN data starts after the SYN (RFC 7413 §2)
        off = ep.offset(seq)
        if (nbytes or flags & FIN) and not flags & SYN:
            why = self._unacceptable(conn, ep, peer, seg, ts)
            if why is not None:
                self._anomaly(conn, why)
                if why == "paws_rejected":
                    self._hold_stale(ep, seg, off)
                return  # the receiver drops the whole segment, its ACK included
        aoff = None
        doubtful = False
        if flags & ACK:
            if (nbytes or flags & FIN) and not flags & SYN and self._acks_unseen(peer, seg.ack):
                # It acknowledges data of the peer's the capture never held: capture loss, or
                # an ACK of data never sent, which makes a receiver drop the segment (RFC 9293
                # §3.10.7.4). Its data waits, tentative, for the receiver's own ACK; its ACK
                # infers nothing (the peer's later ACKs will, if the loss was real).
                if self._acks_beyond_flight(peer, seg.ack):
                    self._anomaly(conn, "ack_out_of_range")
                    return
                doubtful = True
                aoff = peer.offset(seg.ack)
            else:
                ok, aoff = self._on_ack(conn, ep, peer, seg.ack, ts)
                if not ok and not flags & SYN:
                    return  # an unacceptable ACK: the segment is dropped
        if flags & URG and seg.urg and nbytes and not flags & SYN and not doubtful:
            # Before the data: Linux takes the pointer (tcp_urg) before queueing the bytes.
            ep.stream.set_urgent(off + seg.urg - 1)
        # Whether the receiver took this segment beyond doubt: only then does its timestamp
        # become TS.Recent (Linux stores it only past tcp_sequence and tcp_ack), or a
        # dropped segment's TSval could make later good ones look old.
        certain = not doubtful and (aoff is not None or not flags & ACK)
        if nbytes:
            if flags & SYN:
                # Tentative until the SYN-ACK (or any ACK of the peer) covers it.
                if seg.payload:
                    ep.stream.add_tentative(0, seg.payload)
            elif not self._on_data(conn, ep, peer, seg, off, nbytes, doubtful):
                certain = False
        elif off == ep.sent_end - 1 and not flags & (SYN | FIN | RST):
            # RFC 9293 §3.8.4 keepalive and the Linux zero-window probe: empty, at SND.NXT-1.
            self._anomaly(conn, "zero_window_probe" if peer.window == 0 else "keepalive")
        if flags & FIN:
            self._take_fin(conn, ep, off, nbytes, aoff if doubtful else None)
        ep.window = seg.window
        if doubtful:
            aoff = None  # its ACK infers nothing, and advertises nothing
        elif aoff is not None:
            self._advertise(conn, ep, peer, aoff, seg.window, bool(flags & SYN))
        if peer.doubtful or peer.fin_needed is not None:
            self._confirm_doubtful(conn, peer, ep)
        if ep.ack_claim > ep.stream.acked:
            # The peer acknowledged more than this side was seen sending; what its segments
            # now show is corroborated.
            seen = min(ep.ack_claim, self._seen_sent(ep))
            if seen > ep.stream.acked:
                self._ack_stream(ep, seen)
        if conn.ts_ok and certain and not flags & SYN:
            tsval = timestamp(seg.options)
            if tsval is not None and off <= ep.stream.acked:
                # TS.Recent follows segments at or before the last ACK the receiver sent
                # (RFC 7323 §4.3, Linux tcp_replace_ts_recent).
                ep.ts_recent = tsval
                ep.ts_recent_at = ts

    @staticmethod
    def _acks_unseen(peer: Endpoint, ack: int) -> bool:
        """Does ``ack`` acknowledge bytes of the peer's that neither its segments nor an
        earlier ACK account for? (One past the data is the ACK of a FIN, maybe unseen.)"""
        if peer.base is None or not peer.packets:
            return False
        off = peer.offset(ack)
        if peer.fin_off is not None:
            return off > peer.fin_off + 1
        if peer.fin_held is not None and off == peer.fin_held + 1:
            return False  # the ACK of a held FIN
        return off > max(peer.stream.acked, peer.claimed_end + 1)

    @staticmethod
    def _acks_beyond_flight(peer: Endpoint, ack: int) -> bool:
        """More than the peer could have had in flight beyond what it was seen sending: the
        data seen plus one window (RFC 5961 §5.2: no ACK of data never sent)."""
        return peer.offset(ack) > peer.claimed_end + max(peer.max_wnd, MIN_WINDOW)

    def _unacceptable(
        self, conn: Connection, ep: Endpoint, peer: Endpoint, seg: Segment, ts: float
    ) -> str | None:
        """Why the receiver would drop this data or FIN segment whole, or None."""
        if not seg.flags & ACK and conn.handshake:
            # RFC 9293 §3.10.7.4, fifth check: no synchronized receiver takes it. Only where
            # the handshake was seen is the receiver known to be synchronized.
            return "data_without_ack"
        if conn.ts_ok and ep.ts_recent is not None and ts - ep.ts_recent_at < PAWS_IDLE:
            tsval = timestamp(seg.options)
            if tsval is not None and seq_diff(tsval, ep.ts_recent) < -PAWS_WINDOW:
                return "paws_rejected"  # RFC 7323 §5.3 R1
        return None

    @staticmethod
    def _hold_stale(ep: Endpoint, seg: Segment, off: int) -> None:
        """A segment PAWS drops, judged by the frames in the order the capture saw them.
        Past the capture point a frame can still be lost or overtaken: the segment that made
        TS.Recent newer here may never have reached the receiver, or reached it later, and
        then it took these bytes. So they are held tentatively, as beyond the window: they
        join the stream only if the receiver's ACK later covers them and no acceptable copy
        came first (a forged stale copy loses to the sender's own). A FIN on it is held as one
        beyond the window is: taken once the receiver's ACK covers it."""
        payload = seg.payload
        edge = ep.edge
        reach = ep.seen_end + MAX_SEQ_JUMP if edge is None else edge + max(ep.max_wnd, MIN_WINDOW)
        fin_off = off + len(payload)
        if seg.flags & FIN and ep.fin_off is None and ep.stream.nxt <= fin_off <= reach:
            ep.fin_held = fin_off
            ep.fin_needed = None
        if off < 0:
            payload = payload[-off:]
            off = 0
        if ep.fin_off is not None:
            payload = payload[: max(0, ep.fin_off - off)]
        if payload and off <= reach:
            ep.stream.add_tentative(off, payload)

    def forget(self, conn: Connection) -> None:
        """Stop timing a connection out: inline mode's cut-in owns it and will end it."""
        if conn.lru is not None:
            del conn.lru[conn]  # type: ignore[attr-defined]
            conn.lru = None

    def end(self, conn: Connection, reason: CloseReason) -> None:
        """End a connection for a reason the capture does not show (inline mode: its own RSTs
        when it blocks a flow, or the end of a cut-in): its record is written now."""
        if reason is CloseReason.RST:
            conn.state = ConnState.RESET
        elif reason is CloseReason.FIN:
            conn.state = ConnState.CLOSED
        self._finish(conn, reason)

    def hand_over(self, conn: Connection, ends: tuple[int, int]) -> None:
        """Inline's cut-in takes the connection over. ``ends``: (the client's, the server's)
        sequence number after the last byte its forwarded frames carried. The receivers have
        those bytes, or the tool's own TCP holds them and delivers them: for the record they
        are acknowledged, so bytes held tentatively among them (beyond a window the tracker
        saw, an ACK it did not) join the stream instead of ending as a gap the receiving
        application never had."""
        if conn.fast_slot >= 0:
            return  # C's (a passed flow): nothing held tentatively
        for ep, end in zip((conn.c, conn.s), ends, strict=True):
            if ep.base is not None:
                off = ep.offset(end)
                if off > ep.stream.acked:
                    self._ack_stream(ep, off)

    def bypass(self, conn: Connection) -> None:
        """Stop reassembling a connection (a PASS verdict with --bypass): from now on its
        segments only move counters and its state; what was buffered is flushed at the end."""
        conn.bypassed = True
        if conn.fast_slot >= 0:
            self.fast.bypass(conn)  # type: ignore[union-attr]

    def _counted_only(self, conn: Connection, ep: Endpoint, peer: Endpoint, seg: Segment) -> None:
        flags = seg.flags
        if flags & ACK:
            ep.last_ack = seg.ack
        # The stream's end as the sequence numbers tell it (its true length in the record:
        # Connection.length); no further than MAX_SEQ_JUMP ahead, as where no window is known.
        nbytes = len(seg.payload) + seg.missing
        if ep.base is None:
            ep.base = (seg.seq + 1) & MASK if flags & SYN else seg.seq
        if nbytes and not flags & SYN:
            end = ep.seen_end + seq_diff(seg.seq, (ep.base + ep.seen_end) & MASK) + nbytes
            if ep.seen_end < end <= ep.seen_end + MAX_SEQ_JUMP:
                ep.seen_end = end
        # Without the byte stream no RST can be checked against it: any RST ends it.
        if flags & RST and not conn.closed:
            conn.state = ConnState.RESET
            self._place(conn)
        elif flags & FIN:
            self._on_fin(conn, ep, ep.seen_end, checked=False)
        ep.window = seg.window

    # -- the handshake -------------------------------------------------------------------------

    def _on_syn(
        self, conn: Connection, ep: Endpoint, peer: Endpoint, seg: Segment, ts: float
    ) -> bool:
        """A SYN or SYN-ACK from ``ep``; False when the segment is to be ignored."""
        if seg.flags & ACK and peer.isn is not None:
            # RFC 9293 §3.10.7.3: the client takes a SYN-ACK only if it acknowledges its SYN
            # (ISN+1, or more where the server took SYN data).
            acked = seq_diff(seg.ack, (peer.isn + 1) & MASK)
            if acked < 0 or acked > peer.claimed_end:
                self._anomaly(conn, "synack_bad_ack")
                return False
        if ep.isn is not None:
            if seg.seq == ep.isn or not seg.flags & ACK:
                return True  # retransmitted SYN or SYN-ACK
            # A SYN-ACK with another ISN: kept until the client says which one it took.
            if conn.state is ConnState.SYN_RECEIVED and not ep.stream.nxt:
                alts = conn.alt_synacks
                if alts is None:
                    alts = conn.alt_synacks = []
                if all(s.seq != seg.seq for s, _ in alts):
                    if len(alts) < MAX_SYNACKS:
                        alts.append((seg, ts))
                    else:
                        self._anomaly(conn, "synack_queue_full")
            else:
                self._anomaly(conn, "synack_competing")
            return False
        self._take_syn(conn, ep, peer, seg, ts)
        return True

    def _take_syn(
        self, conn: Connection, ep: Endpoint, peer: Endpoint, seg: Segment, ts: float
    ) -> None:
        opts = parse_options(seg.options)
        ep.learn_syn(seg.seq, opts.wscale, opts.mss, opts.sack_permitted, opts.tsval is not None)
        ep.ts_recent = opts.tsval
        ep.ts_recent_at = ts
        ep.last_opts = seg.options
        if seg.flags & ACK:
            if peer.syn:
                conn.handshake = True
                conn.wscale_ok = ep.wscale is not None and peer.wscale is not None
                conn.ts_ok = ep.ts_enabled and peer.ts_enabled
            if conn.state is ConnState.SYN_SENT:
                conn.state = ConnState.SYN_RECEIVED
                self._place(conn)
            if peer.isn is not None and peer.stream.tentative.held:
                acked = seq_diff(seg.ack, (peer.isn + 1) & MASK)
                if acked == 0:
                    # The SYN-ACK takes the SYN but not its data (no TFO cookie): the client
                    # sends it again after the handshake (RFC 7413 §4.2.2).
                    peer.stream.flush_tentative()
                    self._anomaly(conn, "syn_data_rejected")
        elif peer.syn and peer.isn != seg.seq:
            self._anomaly(conn, "simultaneous_open")  # RFC 9293 §3.5, figure 8
        if seg.payload:
            self._anomaly(conn, "syn_data")

    def _confirm_synack(self, conn: Connection, value: int, ts: float) -> None:
        """``value`` is where the server's stream starts as the client's ACK or the server's
        data has it: if it fits one of the competing SYN-ACKs rather than the one followed so
        far, follow that one (the client took it; the other was injected or stale)."""
        alts = conn.alt_synacks
        s = conn.s
        if not alts or s.isn is None:
            return
        if 0 <= seq_diff(value, (s.isn + 1) & MASK) <= MIN_WINDOW:
            conn.alt_synacks = None  # the one followed so far is confirmed
            return
        for seg, seg_ts in alts:
            if 0 <= seq_diff(value, (seg.seq + 1) & MASK) <= MIN_WINDOW:
                conn.alt_synacks = None
                self._anomaly(conn, "synack_switched")
                s.stream.flush_tentative()
                s.seen_end = 0
                c = conn.c
                c.edge = None
                c.max_wnd = 0
                self._take_syn(conn, s, c, seg, seg_ts)
                s.window = seg.window
                if seg.payload:
                    s.stream.add_tentative(0, seg.payload)
                if c.isn is not None:
                    self._advertise(conn, s, c, seq_diff(seg.ack, (c.isn + 1) & MASK),
                                    seg.window, True)  # fmt: skip
                return

    # -- ACKs, data, FIN, RST ------------------------------------------------------------------

    def _on_ack(
        self, conn: Connection, ep: Endpoint, peer: Endpoint, ack: int, ts: float
    ) -> tuple[bool, int | None]:
        """``ep`` acknowledges ``ack`` of the peer's stream. Returns whether a receiver would
        accept it, and the ACK's offset in that stream (clamped to a FIN; None where the
        peer's stream is not in view)."""
        if peer.base is None:
            # The peer's first byte is what this side acknowledges (its SYN-ACK was not seen).
            peer.base = ack
            ep.last_ack = ack
            return True, 0
        if not peer.packets:
            # The capture holds no segment of the peer at all (an asymmetric tap, a one-sided
            # capture): its ACKs say bytes flowed, but that direction was never in view, so it
            # is reported empty rather than as one long gap (Suricata's async-oneside).
            ep.last_ack = ack
            return True, None
        if conn.alt_synacks and ep is conn.c:
            self._confirm_synack(conn, ack, ts)
        off = peer.offset(ack)
        stream = peer.stream
        if off > stream.acked:
            # What the peer could have sent: up to its FIN, else the data seen plus at most
            # one window in flight (RFC 5961 §5.2: no ACK of data never sent).
            if peer.fin_off is not None:
                beyond = off > peer.fin_off + 1
            else:
                beyond = self._acks_beyond_flight(peer, ack)
            if beyond:
                self._anomaly(conn, "ack_out_of_range")
                return False, None
        held = peer.fin_held
        if held is not None and off > held:
            # The receiver took the FIN it might have dropped.
            peer.fin_held = peer.fin_needed = None
            if peer.fin_off is None:
                self._on_fin(conn, peer, held)
        # An ACK older than SND.UNA - MAX.SND.WND moves nothing; its segment's data is still
        # taken (Linux queues in-order data before tcp_ack rejects the ACK).
        ep.last_ack = ack
        if peer.fin_off is not None:
            if off > peer.fin_off:
                off = peer.fin_off  # the ACK of a FIN covers no byte
        elif off == peer.seen_end + 1 and off > stream.acked:
            off = peer.seen_end  # most likely the ACK of a FIN the capture missed
        if conn.state is ConnState.SYN_RECEIVED and off >= 0 and ep is conn.c:
            conn.state = ConnState.ESTABLISHED
            self._place(conn)
        seen = self._seen_sent(peer)
        if off > seen:
            # It acknowledges bytes the peer was not seen sending: capture loss (the peer's
            # later segments will show it, and the gap is made then) or an ACK of data never
            # sent. Held as a claim; it moves nothing yet, and advertises nothing.
            if off > peer.ack_claim:
                peer.ack_claim = off
            if seen > stream.acked:
                self._ack_stream(peer, seen)
            return True, None
        self._ack_stream(peer, off)
        return True, off

    @staticmethod
    def _seen_sent(ep: Endpoint) -> int:
        """How far ``ep``'s own segments show it sent: its data (tentative included), and its
        FIN's sequence number."""
        end = ep.claimed_end
        return end if ep.fin_off is None else max(end, ep.fin_off)

    @staticmethod
    def _ack_stream(ep: Endpoint, off: int) -> None:
        stream = ep.stream
        stream.ack(off)
        if stream.accepted_end > ep.seen_end:
            ep.seen_end = stream.accepted_end  # tentative bytes the receiver took

    def _advertise(
        self, conn: Connection, ep: Endpoint, peer: Endpoint, aoff: int, window: int, syn: bool
    ) -> None:
        """``ep`` advertised ``window`` at ``aoff`` of the peer's stream: the peer may send up to
        the right edge (RFC 9293 §3.8.6; the window of a SYN is never scaled, RFC 7323 §2.2)."""
        wnd = window if syn else window << window_shift(conn, ep)
        if peer.edge is None or aoff >= peer.edge_ack:  # a newer ACK, or a window update
            peer.edge = aoff + wnd
            peer.edge_ack = aoff
        if wnd > peer.max_wnd:
            peer.max_wnd = wnd

    def _on_data(
        self,
        conn: Connection,
        ep: Endpoint,
        peer: Endpoint,
        seg: Segment,
        off: int,
        nbytes: int,
        doubtful: bool = False,
    ) -> bool:
        """Take a data segment's bytes; False when they are held tentatively or dropped."""
        stream = ep.stream
        payload = seg.payload
        if (
            nbytes == 1
            and off == ep.seen_end - 1
            and stream.nxt >= ep.seen_end
            and peer.last_ack == ep.seq_at(ep.seen_end)
        ):
            # A keepalive with one garbage byte at SND.NXT-1 (RFC 9293 §3.8.4), sent only when
            # everything is acknowledged, or a zero-window probe re-sending that byte: already
            # in the stream and not compared. Unacknowledged, the same segment is a
            # retransmission and is compared like any other.
            self._anomaly(conn, "zero_window_probe" if peer.window == 0 else "keepalive")
            return True
        if off < 0:
            if off + nbytes <= 0:
                self._anomaly(conn, "data_before_start")
                return False
            payload = payload[-off:]
            nbytes += off
            off = 0
        if ep.fin_off is not None and off + nbytes > ep.fin_off:
            # Past the sender's FIN: no receiver takes it.
            self._anomaly(conn, "data_after_fin")
            keep = ep.fin_off - off
            if keep <= 0:
                return False
            payload = payload[:keep]
            nbytes = keep
        edge = ep.edge
        beyond = edge is not None and off >= edge
        if beyond:
            if off - edge > max(ep.max_wnd, MIN_WINDOW):  # type: ignore[operator]
                self._anomaly(conn, "seq_out_of_range")
                return False
        elif edge is None and off - ep.seen_end > MAX_SEQ_JUMP:
            self._anomaly(conn, "seq_out_of_range")
            return False
        if beyond or doubtful:
            # Beyond the window the receiver advertised, or riding on an ACK of data never
            # seen: a receiver drops this (an evasion), unless the capture missed a window
            # update or the peer's data; the receiver's ACK will tell. A zero-window probe is
            # expected and sent again as data once the window opens (RFC 9293 §3.8.6.1).
            if beyond and peer.window == 0 and nbytes == 1:
                self._anomaly(conn, "zero_window_probe")
            elif payload:
                if stream.add_tentative(off, payload):
                    self._anomaly(conn, "overlap_conflict")
                if doubtful and not beyond:
                    held = ep.doubtful
                    if held is None:
                        held = ep.doubtful = []
                    if len(held) < MAX_DOUBTFUL:
                        held.append((peer.offset(seg.ack), off, payload))
            return False
        end = off + nbytes
        if end > ep.seen_end:
            ep.seen_end = end
            ep.last_opts = seg.options
        if seg.missing:
            self._anomaly(conn, "truncated_segment")
        if payload and stream.add(off, payload):
            self._anomaly(conn, "overlap_conflict")
        return True

    def _confirm_doubtful(
        self, conn: Connection, ep: Endpoint, peer: Endpoint, acked: int = 0
    ) -> None:
        """``peer`` was seen sending up to what ``ep``'s held segments acknowledged: they were
        acceptable when they came (capture loss, not an evasion) and take their place now,
        among later copies as the first."""
        sent = max(self._seen_sent(peer) + 1, acked)
        keep = []
        stream = ep.stream
        for needed, off, data in ep.doubtful or ():
            if off + len(data) <= stream.nxt:
                continue  # settled meanwhile (its ACK came, or a copy)
            if needed <= sent:
                if stream.confirm_tentative(off, data):
                    self._anomaly(conn, "overlap_conflict")
                end = off + len(data)
                if end > ep.seen_end:
                    ep.seen_end = end
            else:
                keep.append((needed, off, data))
        ep.doubtful = keep or None
        held = ep.fin_held
        if held is not None and ep.fin_needed is not None and ep.fin_needed <= sent:
            ep.fin_held = ep.fin_needed = None
            if ep.fin_off is None:
                self._on_fin(conn, ep, held)

    def _take_fin(
        self, conn: Connection, ep: Endpoint, off: int, nbytes: int, needed: int | None
    ) -> None:
        """The FIN of a segment at ``off`` with ``nbytes`` of data, judged as its data is, by
        where the segment starts (RFC 9293 §3.10.7.4; Linux's tcp_sequence): beyond the
        window the receiver advertised, or riding on an ACK of data never seen, the receiver
        may have dropped it, and it is held until the receiver's ACK covers it (or, on an ACK
        of unseen data, ``needed``, until the peer is seen to have sent that much, as for
        doubtful data); further than a window beyond, or out of all reach, it is dropped."""
        fin_off = off + nbytes
        edge = ep.edge
        held = needed is not None
        if edge is not None and (off >= edge if nbytes else off > edge):
            if off - edge > max(ep.max_wnd, MIN_WINDOW):
                self._anomaly(conn, "fin_out_of_range")
                return
            held, needed = True, None  # only the receiver's ACK can say
        elif edge is None and fin_off - ep.seen_end > MAX_SEQ_JUMP:
            self._anomaly(conn, "fin_out_of_range")
            return
        if not held:
            self._on_fin(conn, ep, fin_off)
        elif ep.fin_off is None and fin_off >= ep.stream.nxt:
            ep.fin_held = fin_off
            ep.fin_needed = needed

    def _on_fin(self, conn: Connection, ep: Endpoint, fin_off: int, checked: bool = True) -> None:
        """A FIN at ``fin_off``; ``checked`` False where the stream is no longer followed
        (bypass: the FIN is placed where reassembly stopped)."""
        if checked and (fin_off < 0 or fin_off < ep.stream.nxt):
            # A FIN before bytes already delivered is an old segment's (RFC 9293 §3.10.7.4).
            self._anomaly(conn, "fin_out_of_range")
            return
        if ep.fin_off is None:
            ep.fin_off = fin_off
            if fin_off > ep.seen_end:
                ep.seen_end = fin_off
        if conn.state is ConnState.RESET or conn.state is ConnState.CLOSED:
            return
        other = conn.s if ep is conn.c else conn.c
        conn.state = ConnState.CLOSED if other.fin_off is not None else ConnState.HALF_CLOSED
        self._place(conn)

    def _on_rst(
        self,
        conn: Connection,
        ep: Endpoint,
        peer: Endpoint,
        seg: Segment,
        from_client: bool,
        ts: float,
    ) -> None:
        accepted = self._rst_acceptable(conn, ep, peer, seg)
        if accepted:
            if conn.state is ConnState.CLOSED:
                # Both FINs were exchanged: the connection already ended cleanly; a RST now
                # (a kernel answering a late duplicate ACK on a closed socket) does not make
                # it a reset one.
                self._anomaly(conn, "rst_after_fin")
            else:
                conn.state = ConnState.RESET
                self._place(conn)
        if accepted and (seg.payload or seg.missing):
            # RFC 9293 §3.5.3 lets a RST carry diagnostic text. No receiving stack hands it to
            # the application (Suricata leaves it out too); the observer policies keep it in
            # the stream as tshark and tcpflow do.
            self._anomaly(conn, "rst_with_data")
            if not ep.stream.policy.models_receiver:
                off = ep.offset(seg.seq)
                nbytes = len(seg.payload) + seg.missing
                self._on_data(conn, ep, peer, seg, off, nbytes)

    def _rst_answers_syn(
        self, conn: Connection, ep: Endpoint, peer: Endpoint, seg: Segment
    ) -> bool:
        """RFC 9293 §3.10.7.3: in SYN-SENT a RST counts only if it ACKs the SYN. Linux also
        drops it when its TSecr does not echo a timestamp the client sent (PAWS on the
        handshake; the bug-3286 evasion)."""
        if not seg.flags & ACK or peer.isn is None or seg.ack != (peer.isn + 1) & MASK:
            self._anomaly(conn, "rst_out_of_window")
            return False
        if peer.ts_enabled:
            opts = parse_options(seg.options)
            syn_ts = timestamp(peer.last_opts)
            if opts.tsecr and syn_ts is not None and seq_diff(opts.tsecr, syn_ts) < 0:
                self._anomaly(conn, "rst_paws")
                return False
        return True

    def _rst_acceptable(self, conn: Connection, ep: Endpoint, peer: Endpoint, seg: Segment) -> bool:
        """Would the receiver act on this RST? RFC 5961 §3.2 / RFC 9293 §3.10.7.4: only one
        at exactly RCV.NXT resets; one elsewhere in the window draws a challenge ACK; one
        outside the window is dropped. Timestamps do not matter (RFC 7323 §5.3)."""
        seq = seg.seq
        # A FIN takes one sequence number (RFC 9293 §3.4): after it, SND.NXT is one past it.
        snd_nxt = ep.seq_at(ep.sent_end if ep.fin_off is None else ep.fin_off + 1)
        rcv_nxt = peer.last_ack if peer.last_ack is not None else snd_nxt
        if seq in (rcv_nxt, snd_nxt):
            return True
        shift = (peer.wscale or 0) if conn.wscale_ok else 0
        window = max(peer.window, 1) << shift
        if 0 < seq_diff(seq, rcv_nxt) < window:
            self._anomaly(conn, "rst_inexact")
        else:
            self._anomaly(conn, "rst_out_of_window")
        return False


def _moved(conn: Connection) -> int:
    return conn.moved


def _closed_by(state: ConnState, reason: CloseReason) -> CloseReason:
    """Why a connection ended, in the state it ended in: a reset or both FINs say, whatever
    ended it (``reason``) otherwise."""
    if state is ConnState.RESET:
        return CloseReason.RST
    if state is ConnState.CLOSED:
        return CloseReason.FIN
    return reason


def _pack(ts: float, seg: Segment, first: bool) -> bytes:
    """A deferred handshake segment in one bytes object (a few dozen bytes, not a Segment's
    few hundred): what replaying it needs, the addresses aside (they are in the key)."""
    opts = seg.options[:255]
    return (
        _DEFERRED.pack(
            ts, seg.seq, seg.ack, seg.flags, seg.window, seg.urg, seg.missing, seg.ttl,
            first, len(opts), len(seg.macs),
        )
        + opts
        + seg.macs
        + seg.payload
    )  # fmt: skip


def key_prefix(vlans: tuple[int, ...], tunnel: int, ignore_vlan: bool) -> bytes:
    """What a flow key holds before the addresses: the VLAN stack (unless ignored) as its
    depth and each 12-bit ID in two bytes, and the mirror session a tunnelled copy came in.
    C's parse_frame (stack/_fast.c) builds the same bytes."""
    prefix = b""
    if vlans and not ignore_vlan:
        prefix = bytes((len(vlans),)) + b"".join(v.to_bytes(2, "big") for v in vlans)
    return prefix + (b"t%d|" % tunnel if tunnel else b"")


def split_key(key: bytes) -> tuple[tuple[int, ...], bytes, int, bytes, int]:
    """A key C made (no tunnel; see key_prefix): (its VLAN IDs, source address and port,
    destination address and port)."""
    if len(key) in (12, 36):  # untagged
        return ((), *_endpoints(key, 0))
    tags = key[0]
    vlans = tuple(int.from_bytes(key[1 + 2 * i : 3 + 2 * i], "big") for i in range(tags))
    return (vlans, *_endpoints(key, 1 + 2 * tags))


def _endpoints(key: bytes, prefix: int) -> tuple[bytes, int, bytes, int]:
    """A key's first direction past its prefix: (source address, port, destination address,
    port)."""
    alen = (len(key) - prefix - 4) // 2
    return (
        key[prefix : prefix + alen],
        int.from_bytes(key[-4:-2], "big"),
        key[prefix + alen : prefix + 2 * alen],
        int.from_bytes(key[-2:], "big"),
    )


def _unpack(
    blob: bytes, key0: bytes, vlans: tuple[int, ...], tunnel: int, ignore_vlan: bool
) -> tuple[float, Segment]:
    ts, seq, ack, flags, window, urg, missing, ttl, first, olen, mlen = _DEFERRED.unpack_from(blob)
    pos = _DEFERRED.size
    options = blob[pos : pos + olen]
    macs = blob[pos + olen : pos + olen + mlen]
    payload = blob[pos + olen + mlen :]
    a, pa, b, pb = _endpoints(key0, len(key_prefix(vlans, tunnel, ignore_vlan)))
    src, dst, sport, dport = (a, b, pa, pb) if first else (b, a, pb, pa)
    seg = Segment(
        vlans, len(a) == 16, src, dst, sport, dport, seq, ack, flags, window, options, payload,
        missing, ttl, None, macs, urg, tunnel,
    )  # fmt: skip
    return ts, seg
