"""The C fast path's Python side: which connections it may carry, and handing their numbers
over and back (see _fast.c). Whatever C takes, it takes exactly as the general path
(:meth:`Tracker.segment`) would; the test suite runs through both (``UINET_TAP_FASTPATH``)
and tests/test_differential.py fuzzes one against the other."""

from __future__ import annotations

import contextlib
import os
import struct
from array import array
from collections.abc import Callable
from typing import Any, NamedTuple

from ..reassembly.stream import CHARGES_PER_FRAME, PIECE_COST, Budget, StreamSink
from .connection import Connection, ConnState, Endpoint, stream_length
from .emit import check_build

UNKNOWN_SHIFT = 14  # the window scale assumed where the handshake was not seen

try:
    from ._fast import ffi, lib  # type: ignore[import-not-found]
except ImportError:  # not built (no compiler at install time): the Python path stays
    ffi = lib = None

AVAILABLE = lib is not None
NO_FIN = lib.UT_NO_FIN if lib is not None else 0  # ut_dir.fin of a direction without FIN
OUT_CAP = 8192
_LINE_CAP = 2048  # a record _record.c writes: under 1 KB with IPv6 endpoints and two tags
_TX_CAP = 1 << 16  # transactions _record.c writes; more (64 hostile ones can be) go Python's way
HLOG_FLOW_CAP = 4096  # a light flow's header block log (ut_hlog_config); past it, blocks as before
HLOG_TOTAL_CAP = 64 << 20  # all light flows' logs together (and the decisions C holds)
_LINES_CAP = 1 << 20  # the record lines of light flows ended together (end_lights)
_MAX_LINES = 4096
_CODES = {
    "int32_t": "i", "uint32_t": "I", "int64_t": "q", "uint64_t": "Q", "double": "d",
    "uint16_t": "H", "uint8_t": "B",
}  # fmt: skip


def c_view(ctype: str, names: tuple[str, ...]) -> struct.Struct:
    """A packed view of the named fields of a C structure of _fast.h, offsets and types as
    cffi reads them from the compiled header (padding skipped): records move between C and
    Python in one memmove or iter_unpack, and no layout is written down here."""
    fields = dict(ffi.typeof(ctype).fields)
    fmt, pos = "=", 0
    for name in names:
        field = fields[name]
        if field.offset < pos:
            raise ValueError(f"{ctype}.{name}: fields must be named in their order")
        if field.offset > pos:
            fmt += f"{field.offset - pos}x"
        t = field.type
        if t.kind == "array" and t.item.cname in ("uint8_t", "char"):
            fmt += f"{t.length}s"
        elif t.kind == "array" and t.item.kind == "array" and t.item.item.cname == "uint8_t":
            fmt += f"{ffi.sizeof(t)}s"  # rows of bytes (keys), read whole
        elif t.kind == "array":
            fmt += _CODES[t.item.cname] * t.length
        elif t.kind == "pointer":
            fmt += {4: "I", 8: "Q"}[ffi.sizeof(t)]  # read as an address: NULL or not
        else:
            fmt += _CODES[t.cname]
        pos = field.offset + ffi.sizeof(t)
    return struct.Struct(fmt)


if lib is not None:
    _OUT = c_view("ut_out", ("sink", "data_off", "data_len", "hashed", "offset"))
    _TOUCH = c_view("ut_touch", ("last_seen", "slot", "order"))
    _HEAD = c_view("ut_head", ("method", "path", "proto", "host", "ua", "status", "length"))
    _HEAD_READ = lib.UT_OUT_HEAD  # ut_out.hashed of a header block C read (_follow.c)
    # A header block logged for a light flow (ut_hlog): its header, its ut_head, its bytes.
    _HLOG = c_view("ut_hlog", ("at", "dir", "size"))
    _HLOG_HEAD = ffi.offsetof("ut_hlog", "head")
    _HLOG_SIZE = ffi.sizeof("ut_hlog")
    # ut_dir up to its tail buffer: one memmove per direction to attach, one read to detach.
    _DIR_FIELDS = (
        "base", "nxt", "acked", "seen_end", "fin", "window", "last_ack", "has_last_ack",
        "packets", "payload_bytes", "ttl", "opts_len", "opts", "edge", "edge_ack", "max_wnd",
        "has_edge", "ts_recent", "has_ts_recent", "shift", "ts_recent_at", "retransmitted",
        "want", "want_run",
    )  # fmt: skip
    _DIR = c_view("ut_dir", _DIR_FIELDS)
    assert _DIR.size == ffi.offsetof("ut_dir", "tail"), "attach writes ut_dir up to its tail"
    # Detach reads a whole flow at once: both directions to their last field, and the flow's.
    _DIR_OUT = c_view(
        "ut_dir",
        (*_DIR_FIELDS, "tail_len", "sha", "retain_drops", "ooo_off", "ooo_len", "charged_at"),
    )
    _FLOW_OUT = c_view("ut_flow", ("last_seen", "native", "syn_sent"))
    # A flow ut_end_plain ended (ut_ended: the flow as it ended, at offset 0, so every view
    # of ut_flow reads it; then the digests): what detach hands on of a direction
    # (_END_HAND), what its record reads (_END_REC), the digests C took (_ENDED_DIGESTS).
    _END_HAND = c_view("ut_dir", ("nxt", "want", "sha"))
    _END_REC = c_view(
        "ut_dir",
        ("base", "nxt", "seen_end", "last_ack", "has_last_ack", "packets", "payload_bytes",
         "retransmitted"),
    )  # fmt: skip
    _ENDED_DIGESTS = c_view("ut_ended", ("digested", "digest"))
    _ENDED_STATE = c_view("ut_ended", ("state",))
    # Who a light flow is (light_identity); its keys are at offset 0.
    _LIGHT = c_view("ut_flow", ("id", "start"))
    _BYPASS = c_view("ut_flow", ("bypass",))
    # A decision C held for a light flow (ut_hold_config): dec_proto 0 for none.
    _HELD = c_view("ut_flow", ("dec_len", "dec_proto", "dec_off"))
    _LINE = c_view("ut_line", ("end", "bytes", "close", "pad", "last_seen", "keys"))
    assert ffi.offsetof("ut_ended", "flow") == 0
    # What the client's SYN told of a flow C opened (born_facts; its base is at _D0).
    _BORN = c_view("ut_flow", ("c_wscale", "c_ts", "c_mss", "c_sack", "c_mac"))
    # What a SYN-ACK C took settles of the handshake (_synack_taken): both sides' options.
    _HANDSHAKE = c_view("ut_flow", ("c_wscale", "c_ts", "s_wscale", "s_ts"))
    # What a record reads of the SYN and SYN-ACK (born_syn_facts)
    _SYN_RECORD = c_view("ut_flow", ("syn_sent", "s_mss", "s_sack", "c_mss", "c_sack"))
    _BORN_BASE = struct.Struct("=I")  # ut_dir.base of the client's direction, at _D0
    # What a SYN-ACK C took said (read with the server's base, at _D1)
    _SYNACK = c_view("ut_flow", ("s_mss", "s_wscale", "s_sack", "s_ts", "s_mac"))
    assert ffi.offsetof("ut_flow", "key") == 0 and ffi.offsetof("ut_dir", "base") == 0
    _FLOW_SIZE = ffi.sizeof("ut_flow")
    _D0 = ffi.offsetof("ut_flow", "d")
    _D1 = _D0 + ffi.sizeof("ut_dir")
    _FACTS_END = max(_SYNACK.size, _BORN.size, _SYN_RECORD.size, _D1 + _BORN_BASE.size)
    assert lib.UT_PIECE_COST == PIECE_COST and lib.UT_CHARGES_PER_FRAME == CHARGES_PER_FRAME
    # iter_unpack steps by the view's size: it must be the record's.
    assert _OUT.size == ffi.sizeof("ut_out") and _TOUCH.size == ffi.sizeof("ut_touch")
    assert _HEAD.size == ffi.sizeof("ut_head") and _LINE.size == ffi.sizeof("ut_line")
    # ut_native read in two unpacks (one connection's worth of cffi field reads costs more):
    # the state and counters, then the findings (_native_report).
    _NAT_HEAD = c_view(
        "ut_native",
        ("state", "allow", "proto", "complete", "seg", "early_len", "early_cap", "bytes",
         "first_data", "verdict_off"),
    )  # fmt: skip
    _NAT_FOUND = c_view("ut_native", ("method", "path", "host", "ua", "status", "sni", "alpn",
                                      "legacy", "nversions", "versions", "tls_version",
                                      "cipher", "ja3", "ja4", "flen"))  # fmt: skip
_ATTACHABLE = (
    ConnState.SYN_RECEIVED,
    ConnState.ESTABLISHED,
    ConnState.HALF_CLOSED,
    ConnState.CLOSED,
)


def window_shift(conn: Connection, ep: Endpoint) -> int:
    """The scale of the windows ``ep`` advertises (Tracker._advertise, outside a SYN)."""
    if conn.handshake:
        return (ep.wscale or 0) if conn.wscale_ok else 0
    return UNKNOWN_SHIFT


DROP_BLOCKED, DROP_TOMBSTONE = 0, 1  # why C drops a tuple's frames (ut_drop_key)
# The flow keys C's tables hold (_fast.h UT_KEY): a length byte, then the tracker's key.
KEY_BYTES = lib.UT_KEY if lib is not None else 44
KEY_TAGS = lib.UT_KEY_TAGS if lib is not None else 2


def keyed_in_c(key: bytes) -> bool:
    """Whether C parses the frames of this flow key (parse_frame in _fast.c; the key's shape
    in stack/tracker.py key_prefix): an Ethernet frame with up to KEY_TAGS VLAN tags (keyed,
    or ignored and left out of the key), IPv4 or IPv6, no tunnel."""
    n = len(key)
    if n in (12, 36):  # two IPv4 or IPv6 addresses and two ports
        return True
    tags = key[0] if n else 0  # a tunnel's prefix starts with b"t": no count C makes
    return 1 <= tags <= KEY_TAGS and n - 1 - 2 * tags in (12, 36)


def c_key(key: bytes) -> bytes:
    """The tracker's key as C's tables hold it (its length, it, zeros to UT_KEY)."""
    return bytes((len(key),)) + key + bytes(KEY_BYTES - 1 - len(key))


def py_key(raw: bytes) -> bytes:
    """The tracker's key of a key C holds (its UT_KEY bytes, as c_key makes them)."""
    return raw[1 : 1 + raw[0]]


class CFastPath:
    def __init__(self, retain: int, bypassed_only: bool = False) -> None:
        """``bypassed_only``: C takes only connections that are bypassed (their segments only
        move counters): inline mode forwards those frames from C and every other frame goes
        through Python."""
        if lib is None:
            raise RuntimeError("the C fast path is not built")
        self.bypassed_only = bypassed_only
        self.table = ffi.gc(lib.ut_new(retain), lib.ut_free)
        self._not_tcp = ffi.new("int64_t[2]")  # plain_non_tcp's counts
        self._dropped = ffi.new("int64_t[]", lib.UT_DROP_REASONS)
        self.conns: dict[int, Connection] = {}
        self.sinks: list[StreamSink | None] = []
        self.out = ffi.new("ut_out[]", OUT_CAP)
        self.heads = ffi.new("ut_head[]", OUT_CAP)  # beside out: the header blocks C read
        self._heads_mv = memoryview(ffi.buffer(self.heads))
        self.follows = False  # C reads the HTTP transaction follower's framing (follow_config)
        self.touched = ffi.new("ut_touch[]", OUT_CAP)
        self.changed = ffi.new("int32_t[]", 2 * OUT_CAP)  # (slot, UT_CH_* state) pairs
        self._changed_mv = memoryview(ffi.buffer(self.changed)).cast("i")
        self._n_changed = ffi.new("uint32_t *")
        # Set by the tracker: moves a connection to its state's timeout list.
        self.place: Callable[[Connection], None] = lambda conn: None
        # First-bytes detection in C (_detect.c), set up by the application (native_config):
        # native_allow(conn) says which protocols C may name on a connection about to be
        # attached (0: none, C does not inspect it); on_native_detach(conn, events) takes back
        # the data events C applied to a connection it began and leaves undecided, when it
        # leaves the table; on_native_decided(conn, report) takes the findings of a connection
        # C decided (after the run that decided it; the connection stays in the table, C
        # counting or hashing; for a light flow, conn is None and what it returns is kept for
        # on_native_adopt). native_early: a report carries both directions' early bytes.
        self.native_allow: Callable[[Connection], int] | None = None
        self.on_native_detach: Callable[[Connection, NativeEvents], None] | None = None
        self.on_native_decided: Callable[[Connection | None, NativeReport], Any] | None = None
        # A light flow's decision C held (_hold) rather than listed: on_native_held(n)
        # counts the n held in a run as on_native_decided counts one; on_native_state(report)
        # makes the state on_native_decided(None, report) returns, uncounted, once Python
        # needs it (the flow's connection made, or its end left to Python).
        self.on_native_held: Callable[[int], None] | None = None
        self.on_native_state: Callable[[NativeReport], Any] | None = None
        self._native_early = False
        self.decided = ffi.new("int32_t[]", OUT_CAP)
        self._n_decided = ffi.new("uint32_t *")
        # Flows C opens itself at a client's bare SYN (born_config): how many it may open in
        # a run (the tracker's caps) and the id the first takes, and who makes their
        # connections after it.
        self.born_room: Callable[[], tuple[int, int]] | None = None
        self.on_born: Callable[[float, tuple[bytes, bytes]], Connection] | None = None
        # Light flows (light_config): no connection is made after the run, only the count
        # told (on_light_born); C keeps each on its own timeout lists until the tracker asks
        # for its connection (adopt) or ends it (end_light, or end_lights: C alone). What
        # Python keeps of one until then: what its inspection decided where C did not hold
        # it (on_native_decided's return, given back to on_native_adopt) and its transaction
        # follower.
        self.light = False
        self.on_light_born: Callable[[int], None] | None = None
        # Makes the connections of the light flows at these slots, holding pieces out of
        # order (Tracker._adopt_holders), when release_held takes every held piece back.
        self.on_adopt_holders: Callable[[list[int]], None] | None = None
        self.on_native_adopt: Callable[[Connection, Any], None] | None = None
        self.light_users: dict[int, Any] = {}
        self.light_ended = 0  # light flows that ended plain (for tests and profiling)
        self.adopted = 0  # light flows whose connections were made before their end
        self.light_followers: dict[int, Any] = {}
        self._head_moved = ffi.new("int64_t *")
        self._head_seen = ffi.new("double *")
        # What reads the sinks' bytes C hands over (HTTP transactions), for a connection C
        # opened whose sinks are not made (Born.follower).
        self.new_follower: Callable[[], Any] | None = None
        self.born = ffi.new("int32_t[]", 2 * OUT_CAP)
        self._born_shas = ffi.new("void *[2]")
        self._n_born = ffi.new("uint32_t *")
        self.opened = 0  # flows C opened (for tests and profiling)
        self.ended_plain = 0  # connections that ended plain (detach)
        self.sinks_built = 0  # connections C opened whose sinks were made (sinks_made)
        self._ended = ffi.new("ut_ended *")  # where ut_end_plain copies a flow's numbers
        self._ended_buf = ffi.buffer(self._ended)
        self._ended_flow = ffi.addressof(self._ended[0], "flow")
        self._line = ffi.new("char[]", _LINE_CAP)  # ut_ended_record's text
        self._line_buf = ffi.buffer(self._line)
        self._line_lengths = ffi.new("int64_t[2]")
        self._tx = ffi.new("char[]", _TX_CAP)  # ut_transactions_record's text
        self.findings_text = False  # write_records
        self._max_string = self._max_items = self._max_size = 0
        # Light flows ended together, each with its record line (end_lights): the lines, each
        # one's (end, bytes, close, last_seen, keys), read once a batch (line_ends), and the
        # counts (lines, decided HTTP, TLS; closed by the reason given, by RST, by FINs; the
        # most bytes of one).
        self._lines_text = ffi.new("char[]", _LINES_CAP)
        self._lines_buf = ffi.buffer(self._lines_text)
        self._lines = ffi.new("ut_line[]", _MAX_LINES)
        self._lines_mv = memoryview(ffi.buffer(self._lines))
        self._line_ends: list[tuple[int, int, int, int, float, bytes]] | None = None
        self._line_counts = ffi.new("int64_t[8]")
        self._line_slot = ffi.new("int32_t *")
        self._lines_verdict: bytes | None = None
        self._lines_seed = 0
        self._tx_buf = ffi.buffer(self._tx)
        # The tracker claims every key it holds in C (a SYN on one is Python's): needed where
        # C opens flows or sheds SYNs of new ones.
        self.claiming = False
        # ...and the tuples it remembers closed (Tracker.closed), where light flows end in C:
        # C then opens no flow on one; the tracker lets each go as it forgets it.
        self.keep_closed = False
        self._n_touched = ffi.new("uint32_t *")
        self._n_out = ffi.new("uint32_t *")
        self._handled = ffi.new("int64_t *")
        self._stop = ffi.new("int32_t *")
        self._yielded = ffi.new("int32_t *")
        self._out_mv = memoryview(ffi.buffer(self.out))
        self._touched_mv = memoryview(ffi.buffer(self.touched))
        self._args: tuple[Any, ...] = ()
        self._data: bytes | memoryview = b""
        # The last batch unloaded, kept until the hashing thread is done with it (unload)
        self._kept: bytes | memoryview = b""
        self._hash_mark = 0
        self._deferred = False
        # The tracker's budget: retained and held bytes here and in Python share its caps
        # (caps: the global held-byte cap, the per-direction one and the pieces per direction).
        self.budget: Budget | None = None
        self.caps = (0, 0, 0)  # nothing held out of order in C unless the tracker says

    def eligible(self, conn: Connection) -> bool:
        """Plain enough for C: established, a key C makes (keyed_in_c), a policy final on arrival,
        nothing buffered out of order, no hole, both directions seen; or a bare SYN seen,
        nothing else (C takes the SYN-ACK that answers it)."""
        if self.bypassed_only and not conn.bypassed:
            return False
        if conn.state is ConnState.SYN_SENT:
            c, s = conn.c, conn.s
            return (
                keyed_in_c(conn.keys[0])
                and c.syn
                and c.isn is not None
                and s.isn is None
                and s.base is None
                and not s.packets
                and not c.seen_end
                and c.stream.plain
                and c.stream.final
                and c.fin_off is None
                and c.fin_held is None
                and not c.doubtful
                and len(c.last_opts) <= 40
                and not conn.alt_synacks
                and not conn.bypassed
            )
        if conn.state not in _ATTACHABLE:
            return False
        for ep in (conn.c, conn.s):
            if ep.doubtful or ep.ack_claim > ep.stream.acked or ep.fin_held is not None:
                return False  # held data, a held ACK or FIN that a segment may confirm
        if not keyed_in_c(conn.keys[0]):
            return False
        if conn.bypassed:  # only counters move: the stream need not be plain
            return all(ep.base is not None for ep in (conn.c, conn.s))
        if conn.alt_synacks:
            return False  # the next segment may say which SYN-ACK the client took
        for ep in (conn.c, conn.s):
            st = ep.stream
            if (
                ep.base is None
                or not ep.packets
                or not st.final
                or not st.plain
                or st.nxt != ep.seen_end
                or len(ep.last_opts) > 40
            ):
                return False
        return True

    def attach(self, conn: Connection) -> None:
        # Asked first: a connection C will not inspect gets sinks that hand bytes back.
        allow = self.native_allow(conn) if self.native_allow is not None else 0
        c, s = conn.c, conn.s
        # A sink that only hashes lends its SHA-256 context: C hashes in place.
        sha_c = getattr(c.stream.sink, "c_hash", None) or ffi.NULL
        sha_s = getattr(s.stream.sink, "c_hash", None) or ffi.NULL
        native = bool(allow) and sha_c != ffi.NULL and sha_s != ffi.NULL
        # Unless C decides itself, hand back after every payload of a flow under inspection:
        # the inspector sees it at its frame's time (conn.last_seen, for the budget's
        # seconds) and a verdict takes effect at once (--bypass).
        inspect = not native and any(getattr(ep.stream.sink, "inspect", None) for ep in (c, s))
        state = conn.state
        slot = lib.ut_attach(
            self.table, c_key(conn.keys[0]), c_key(conn.keys[1]),
            _dir_image(conn, c) + _dir_image(conn, s),
            sha_c, sha_s, conn.last_seen, conn.ts_ok, state is ConnState.SYN_SENT,
            state is ConnState.SYN_RECEIVED, -1 if c.wscale is None else c.wscale,
            c.ts_enabled, conn.bypassed, inspect,
        )  # fmt: skip
        if slot < 0:
            return  # out of memory in C: the connection simply stays in Python
        for i, ep in enumerate((c, s)):
            st = ep.stream
            if st.tail:
                # The retained bytes move to C, and out of Python's count.
                d = ffi.addressof(lib.ut_flow_at(self.table, slot).d[i])
                lib.ut_tail_set(self.table, d, bytes(st.tail), len(st.tail))
                st.budget.retained -= len(st.tail)
                st.budget.c_retained += len(st.tail)
                st.tail = bytearray()
        follower = getattr(c.stream.sink, "follower", None)
        if self.follows and follower is not None and sha_c != ffi.NULL and sha_s != ffi.NULL:
            follow = follower.c_state()
            if follow is not None:
                f = lib.ut_flow_at(self.table, slot)
                f.d[0].hstate, f.d[1].hstate, f.hpend, f.hheads = follow
        if native and lib.ut_native_begin(self.table, slot, allow) != 0:
            raise MemoryError("first-bytes detection")
        conn.fast_slot = slot
        self.conns[slot] = conn
        need = 2 * slot + 2
        if len(self.sinks) < need:
            self.sinks.extend([None] * (need - len(self.sinks)))
        self.sinks[2 * slot] = c.stream.sink
        self.sinks[2 * slot + 1] = s.stream.sink

    def key_config(self, vlans_keyed: bool) -> None:
        """Whether the tracker keys flows by their VLAN tags (not with --ignore-vlan): if
        not, C takes no tagged frame (its key would hold the tags)."""
        lib.ut_key_config(self.table, vlans_keyed)

    def born_config(self, wants: tuple[int, int], hstates: tuple[int, int]) -> None:
        """Let C open flows itself at a client's bare SYN (see ut_run): the sinks of a new
        connection hash only (C makes SHA-256 contexts until they exist), and these are their
        reader's first wants and the HTTP framing state C starts in. No port yet: born_port
        says where (born_all_ports: everywhere)."""
        if lib.ut_born_config(self.table, 1, wants[0], wants[1], hstates[0], hstates[1]):
            raise MemoryError("flows opened in C")
        self.claiming = True

    def light_config(self) -> None:
        """The flows C opens are light (see __init__): for a tracker whose closed tuples
        swallow no stragglers (TrackerConfig.closed_memory) and whose connections no live view
        lists."""
        lib.ut_light_config(self.table, 1)
        self.light = True

    def light_off(self) -> None:
        """No more light flows: the flows C opens have their connections made after the run
        (before any traffic only: those C keeps light would stay so)."""
        if any(self.light_count(cls) for cls in range(3)):
            raise RuntimeError("light flows are kept already")
        lib.ut_light_config(self.table, 0)
        self.light = False

    def light_head(self, cls: int) -> tuple[int, int, float]:
        """The light flow at the head of C's timeout list ``cls`` (TimeoutClass): its slot
        (-1: none), the frame that last moved it (Connection.moved) and its last_seen."""
        slot = lib.ut_light_head(self.table, cls, self._head_moved, self._head_seen)
        return slot, self._head_moved[0], self._head_seen[0]

    def light_count(self, cls: int) -> int:
        return int(lib.ut_light_count(self.table, cls))

    def light_moved(self, slot: int) -> int:
        """The frame that last moved the light flow at ``slot`` (Connection.moved)."""
        return int(lib.ut_flow_at(self.table, slot).lmoved)

    def light_slot(self, key: bytes) -> int:
        """The slot of the light flow with this key (either direction's), else -1."""
        return int(lib.ut_light_slot(self.table, c_key(key))) if keyed_in_c(key) else -1

    def light_identity(self, src: int | bytes) -> tuple[float, tuple[bytes, bytes], int]:
        """(SYN time, keys, id) of a light flow: in C's table at slot ``src``, or as it
        ended (end_light's bytes)."""
        raw = (
            src
            if isinstance(src, bytes)
            else ffi.buffer(lib.ut_flow_at(self.table, src), _FLOW_SIZE)
        )
        conn_id, start = _LIGHT.unpack_from(raw)
        return start, (py_key(raw[:KEY_BYTES]), py_key(raw[KEY_BYTES : 2 * KEY_BYTES])), conn_id

    def adopt(self, conn: Connection, slot: int) -> None:
        """The connection of the light flow at ``slot`` was made (Tracker._adopt_light, as
        open_born makes one): what C and this side kept of the flow go into it, and from now
        on C lists it in touched and changed like any flow it carries."""
        raw = ffi.buffer(lib.ut_flow_at(self.table, slot), _FLOW_SIZE)
        self._adopt_numbers(conn, raw, lib.ut_state_code(self.table, slot))
        f = lib.ut_flow_at(self.table, slot)
        user = self._light_user(slot, f)
        lib.ut_held_clear(self.table, slot)
        _adopt_kept(
            conn, user, self._logged(slot, self.light_followers.pop(slot, None)),
            self.on_native_adopt,
        )  # fmt: skip
        lib.ut_materialize(self.table, slot)
        self.adopted += 1
        conn.fast_slot = slot
        self.conns[slot] = conn
        need = 2 * slot + 2
        if len(self.sinks) < need:
            self.sinks.extend([None] * (need - len(self.sinks)))
        self.sinks[2 * slot] = self.sinks[2 * slot + 1] = None  # made when asked for

    def end_light(self, slot: int) -> tuple[bytes, Any, Any] | None:
        """End the light flow at ``slot`` if it ends plain (ut_end_plain, as detach ends a
        connection C opened): the flow as it ended (ut_ended, which ended_facts reads), and
        what this side kept of it (what its inspection decided, its transaction follower,
        None for none), as stack/events.py FlowEnded carries them. None: it does not, and
        nothing changed (its connection must be made and ended as any other)."""
        f = lib.ut_flow_at(self.table, slot)
        hand_back = self.on_native_detach is not None
        if not lib.ut_end_plain(self.table, slot, f.bypass, hand_back, self._unclaim, self._ended):
            return None
        return self._ended_light(slot)

    def _ended_light(self, slot: int) -> tuple[bytes, Any, Any]:
        """end_light's, once ut_end_plain ended the light flow at ``slot`` into _ended."""
        self._lights_ended(1)
        ended: bytes = self._ended_buf[:]
        follower = self.light_followers.pop(slot, None)
        unread = _unread(ended)
        logged = self._ended.flow.hlog_len
        if logged:  # header blocks C logged: kept to write from, unless Python reads them
            log = HeadLog(ffi.buffer(self._ended.flow.hlog, logged)[:])
            if follower is None and not unread:
                return ended, self._light_user(slot, self._ended_flow), log
            follower = self.follower_of(log, follower)
        if follower is not None:  # as _ended_plain stops it
            for i in unread:
                _stop_follower(follower, i)
        return ended, self._light_user(slot, self._ended_flow), follower

    def _light_user(self, slot: int, f: Any) -> Any:
        """What a light flow's inspection decided (None: nothing yet): the state Python
        kept of it, or made now of the decision C held (flow ``f``: in the table, or as it
        ended)."""
        user = self.light_users.pop(slot, None)
        if user is None:
            dec_len, proto, c2s, s2c = _HELD.unpack_from(ffi.buffer(f, _FLOW_SIZE))
            if proto:
                assert self.on_native_state is not None
                text = ffi.buffer(f.dec, dec_len)[:]
                user = self.on_native_state(
                    NativeReport(proto, (c2s, s2c), (), (b"", b""), b"", text)
                )  # fmt: skip
        return user

    def lines_config(self, seed: int, verdict: str | None) -> None:
        """What end_lights writes: the Community ID's seed, and the name of the verdict C's
        decisions carry (None: no inspection, nothing decided in the records)."""
        self._lines_seed = seed
        self._lines_verdict = None if verdict is None else verdict.encode()

    def end_lights(self, cls: int, limit: float, bound: int, close: str) -> tuple[int, int, int]:
        """End the light flows at the head of C's timeout list ``cls`` idle since before
        ``limit`` and moved before ``bound``, each with its whole record line written in C
        (ut_end_lights), as far as C can: (how it stopped: 0 none left to end here, 1 the
        head's end is Python's (end_light), 2 full, 3 the head ended but its record is
        Python's (ended_light); the lines written (lines); the head's slot, for 1 and 3)."""
        verdict = self._lines_verdict
        code = lib.ut_end_lights(
            self.table, cls, limit, bound, self._lines_seed, close.encode(),
            verdict is not None, verdict or b"", self.on_native_detach is not None,
            self._unclaim, self._lines_text, _LINES_CAP, self._lines, _MAX_LINES,
            self._line_counts, self._line_slot, self._ended,
        )  # fmt: skip
        self._line_ends = None
        n = self._line_counts[0]
        if n:
            self._lights_ended(n)
        return code, n, self._line_slot[0]

    @property
    def _unclaim(self) -> int:
        """ut_end_plain's ``unclaim`` for a light flow: its keys stay claimed where it ended
        closed and the tracker remembers closed tuples (keep_closed)."""
        return (2 if self.keep_closed else 1) if self.claiming else 0

    def _lights_ended(self, n: int) -> None:
        """C ended ``n`` light flows plain: what they retained and held is let go."""
        if self.budget is not None:
            self.budget.c_retained = lib.ut_retained(self.table)
            self.budget.c_used = lib.ut_held(self.table)
        self.ended_plain += n
        self.light_ended += n

    def ended_light(self, slot: int) -> tuple[bytes, Any, Any]:
        """What end_light returns, for the head end_lights ended but left to Python (3)."""
        return self._ended_light(slot)

    def lines(self) -> tuple[bytes, tuple[int, ...]]:
        """The lines end_lights wrote last, and its counts: lines, decided HTTP and TLS,
        closed by each reason (the one given, rst, fin), the most bytes of one's streams,
        the protocol of the first decided (NATIVE_*; 0: none)."""
        c = self._line_counts
        n = c[0]
        text = self._lines_buf[: self._lines[n - 1].end] if n else b""
        return text, tuple(c[0:8])

    def line_ends(self) -> list[tuple[int, int, int, int, float, bytes]]:
        """Each line's (end in the text, its streams' bytes, close: 0 the reason given, 1
        rst, 2 fin; 0; its flow's last_seen; its keys as C holds them, one after the other),
        of the lines end_lights wrote last (read once: the engine and the tracker both ask)."""
        if self._line_ends is None:
            n = self._line_counts[0]
            self._line_ends = list(_LINE.iter_unpack(self._lines_mv[: n * _LINE.size]))
        return self._line_ends

    def closed_lines(self) -> list[tuple[tuple[bytes, bytes], float]]:
        """The keys and last_seen of the flows of the lines end_lights wrote last that ended
        closed (reset, or both FINs), in their order: what Tracker.closed remembers."""
        c = self._line_counts
        if not (c[4] or c[5]):
            return []
        k = KEY_BYTES
        return [
            ((py_key(keys[:k]), py_key(keys[k : 2 * k])), seen)
            for _, _, close, _, seen, keys in self.line_ends()
            if close
        ]

    def ended_line(self, ended: bytes, seed: int, close: str) -> tuple[bytes, int, int] | None:
        """The record of a light flow that ended plain (end_light's bytes) as the JSON text
        orjson makes of records.ended_record's object, written in C (_record.c), less its
        closing brace; and both streams' lengths. None: C leaves it to records.py."""
        n = lib.ut_ended_record(
            ffi.from_buffer("ut_ended *", ended), seed, close.encode(), self._line, _LINE_CAP,
            self._line_lengths,
        )  # fmt: skip
        if n < 0:
            return None
        lengths = self._line_lengths
        return self._line_buf[:n], lengths[0], lengths[1]

    def transactions_line(self, log: HeadLog, c2s: int, s2c: int) -> bytes | None:
        """A light flow's HTTP transactions as its record's JSON fields ("transactions",
        "transactions_dropped"), written in C from its header block log (end_light's) and
        its streams' lengths, as plugins/http_transactions.py would make them of the same
        blocks: b"" for none. None: C leaves them to Python (replay the log)."""
        data = log.data
        n = lib.ut_transactions_record(data, len(data), c2s, s2c, self._tx, _TX_CAP)
        return None if n < 0 else self._tx_buf[:n]

    def write_records(
        self, on: bool, max_string: int, max_items: int,
        tls_names: tuple[dict[int, str], dict[int, str]] = ({}, {}), max_size: int = 0,
    ) -> None:  # fmt: skip
        """Whether C writes what it can of records (on where the engine's are only written
        out: Engine.on_line): it logs a light flow's header blocks (ut_hlog_config) rather
        than hand them over, and writes the findings of an HTTP request or TLS hello as
        JSON text where no string is longer than ``max_string`` and no list than
        ``max_items`` (the findings' limits: past them Python cuts), with these names of
        TLS versions and cipher suites; and holds a light flow's decision whose text is
        ``max_size`` bytes at most (the findings' size limit; 0: none held) in C
        (ut_hold_config)."""
        lib.ut_hlog_config(self.table, HLOG_FLOW_CAP if on else 0, HLOG_TOTAL_CAP)
        self.findings_text = on
        self._max_string, self._max_items, self._max_size = max_string, max_items, max_size
        for kind, names in enumerate(tls_names):
            blob = b"".join(name.encode() + b"\0" for name in names.values())
            codes = ffi.new("uint16_t[]", list(names))
            if lib.ut_tls_names(self.table, kind, codes, len(names), blob, len(blob)):
                self.findings_text = False  # names C cannot keep: Python writes findings
        self._hold()

    @property
    def native_early(self) -> bool:
        return self._native_early

    @native_early.setter
    def native_early(self, keep: bool) -> None:
        self._native_early = keep
        self._hold()

    def _hold(self) -> None:
        """C holds light flows' decisions where it writes their findings (_native_report's
        test) and Python's side takes them so (on_native_state)."""
        on = (
            self.findings_text and not self._native_early and self._max_size > 0
            and self.on_native_state is not None and self.on_native_held is not None
        )  # fmt: skip
        lib.ut_hold_config(
            self.table, on, min(self._max_string, 1 << 62), min(self._max_items, 1 << 62),
            min(self._max_size, (1 << 31) - 1),
        )  # fmt: skip

    def _native_report(self, nat: Any, both_early: bool) -> NativeReport:
        """What C found on a connection it decided (C writes the findings as JSON where
        write_records says so and no live view wants the early bytes)."""
        head = _NAT_HEAD.unpack_from(ffi.buffer(nat))
        if self.findings_text and not both_early:
            proto = head[2]
            if proto == NATIVE_HTTP:
                n = lib.ut_http_findings(nat, self._max_string, self._tx, _TX_CAP)
            else:
                n = lib.ut_tls_findings(
                    self.table, nat, self._max_string, self._max_items, self._tx, _TX_CAP
                )  # fmt: skip
            if n >= 0:
                return NativeReport(
                    proto, (head[13], head[14]), (), (b"", b""), b"", self._tx_buf[:n]
                )  # fmt: skip
        return _native_report(nat, both_early, head)

    def _logged(self, slot: int, follower: Any) -> Any:
        """A light flow's follower (None: none yet), with the header blocks C logged for it
        since (ut_hlog) read into it now, its log then cleared: from here on the follower
        is Python's to keep current. None where there is neither."""
        f = lib.ut_flow_at(self.table, slot)
        n = f.hlog_len
        if not n:
            return follower
        log = HeadLog(ffi.buffer(f.hlog, n)[:])
        lib.ut_hlog_clear(self.table, slot)
        return self.follower_of(log, follower)

    def follower_of(self, log: HeadLog, follower: Any = None) -> Any:
        """The follower that has read a light flow's logged header blocks: ``follower``
        (which read every block before them), else a new one."""
        if follower is None:
            assert self.new_follower is not None
            follower = self.new_follower()
        return log.replayed(follower)

    @staticmethod
    def ended_seen(ended: bytes) -> float:
        """The last_seen of a light flow as it ended (end_light's bytes)."""
        seen: float = _FLOW_OUT.unpack_from(ended)[0]
        return seen

    @staticmethod
    def ended_state(ended: bytes) -> ConnState:
        """The state a light flow ended in (end_light's bytes)."""
        code = _ENDED_STATE.unpack_from(ended)[0]
        if code & _CH_SYN_SENT:
            return ConnState.SYN_SENT
        return ConnState.RESET if code & _CH_RESET else _CHANGED_STATES[code & 3]

    def adopt_ended(self, conn: Connection, ended: bytes, user: Any, follower: Any) -> None:
        """The connection of a light flow that ended plain (end_light), made now for
        whatever needs one (Tracker.connection_of): as _ended_plain leaves one whose
        connection was made at its SYN."""
        self._adopt_numbers(conn, ended, _ENDED_STATE.unpack_from(ended)[0])
        if isinstance(follower, HeadLog):
            follower = self.follower_of(follower)
        _adopt_kept(conn, user, follower, self.on_native_adopt)
        conn.born.ended = ended

    @staticmethod
    def _adopt_numbers(conn: Connection, raw: Any, code: int) -> None:
        """What the runs' changed and touched lists would have given the connection of a
        light flow, from the flow (``raw``; ``code``: its UT_CH_* state)."""
        if not code & _CH_SYN_SENT:  # C took the SYN-ACK (_synack_taken)
            c_wscale, c_ts, s_wscale, s_ts = _HANDSHAKE.unpack_from(raw)
            conn.wscale_ok = c_wscale >= 0 and s_wscale >= 0
            conn.ts_ok = bool(c_ts and s_ts)
            conn.handshake = True
            conn.state = ConnState.RESET if code & _CH_RESET else _CHANGED_STATES[code & 3]
        conn.last_seen = _FLOW_OUT.unpack_from(raw)[0]

    @property
    def opens_flows(self) -> bool:
        return self.born_room is not None

    def born_port(self, port: int, allow: int) -> None:
        """C may open flows to this server port, and name the protocols ``allow`` says on
        them (first-bytes detection: 0 none)."""
        lib.ut_born_port(self.table, port, 1 + allow)

    def born_all_ports(self) -> None:
        lib.ut_born_port(self.table, -1, 1)

    def claim(self, keys: tuple[bytes, ...], on: bool) -> None:
        """Python tracks (or no longer tracks) the connection of these keys: a SYN on one
        is Python's to judge (a retransmission, a reused tuple)."""
        for key in keys:
            if lib.ut_claim(self.table, c_key(key), on):
                # Out of memory: C opens no flow and sheds no SYN any more.
                self.born_room = None
                self.claiming = False

    def shed(self, flags: Any) -> None:
        """Inline mode behind its traffic: C drops the bare SYNs of new connections in the
        batch whose ``flags`` it is given (and ut_tx skips them); None: it drops none."""
        lib.ut_set_shed(self.table, ffi.NULL if flags is None else flags)

    def drop(self, keys: tuple[bytes, ...], until: float, reason: int) -> None:
        """Inline: C drops the frames on these keys (but a bare SYN, and those at or past
        ``until``), counted under ``reason`` (DROP_BLOCKED, DROP_TOMBSTONE). Out of memory, it
        drops nothing more than before: Python does, as it did."""
        for key in keys:
            lib.ut_drop_key(self.table, c_key(key), until, reason)

    def undrop(self, keys: tuple[bytes, ...]) -> None:
        for key in keys:
            lib.ut_drop_key(self.table, c_key(key), -1.0, 0)

    def dropped_taken(self) -> tuple[int, int]:
        """Frames C dropped since the last call: (a blocked flow's, a finished cut-in's)."""
        out = self._dropped
        lib.ut_dropped_taken(self.table, out)
        return int(out[DROP_BLOCKED]), int(out[DROP_TOMBSTONE])

    def shed_taken(self) -> int:
        """SYNs C shed since the last call."""
        return int(lib.ut_shed_taken(self.table))

    def native_config(
        self, methods: list[bytes], packets: int, seconds: float, bypass: bool
    ) -> None:
        """Turn on first-bytes detection in C (see _detect.c): the HTTP methods a request line
        may start with, the inspection budget, and whether the default verdict bypasses."""
        joined = b"\0".join(methods)
        if lib.ut_native_config(
            self.table, joined, len(joined), max(map(len, methods)), packets, seconds, bypass
        ):
            raise MemoryError("first-bytes detection")

    def follow_config(self, methods: list[bytes]) -> None:
        """Let C read the header blocks of HTTP transaction followers (stack/_follow.c): the
        methods a request line may start with (http.METHODS)."""
        joined = b"\0".join(methods)
        if lib.ut_follow_config(self.table, joined, len(joined), max(map(len, methods))):
            raise MemoryError("HTTP framing")
        self.follows = True

    def bypass(self, conn: Connection) -> None:
        f = lib.ut_flow_at(self.table, conn.fast_slot)
        f.bypass = 1
        f.inspect = 0

    def hash_in_place(self, conn: Connection) -> None:
        """The sinks became hash-only (inspection ended): let C hash their bytes itself."""
        f = lib.ut_flow_at(self.table, conn.fast_slot)
        f.inspect = 0
        for i, ep in enumerate((conn.c, conn.s)):
            f.d[i].sha = getattr(ep.stream.sink, "c_hash", None) or ffi.NULL

    def detach(self, conn: Connection, ended: bool = False) -> bool:
        """C's numbers back into the connection's objects, and its flow out of C's table.
        ``ended``: the connection is over (Tracker._finish), and its keys are no longer
        Python's (claim). Returns whether it ended plain: a connection C opened whose
        endpoints were never made, with nothing left for Python to do at its end but drop
        what C retained (no piece held out of order, no limit bit, no trailing gap, no
        inspection handed back: ut_end_plain says). Its numbers are then kept as they are
        (Born.ended): the record reads them, and the endpoints are made from them only if
        something asks."""
        born = conn.born
        slot = conn.fast_slot
        if ended and born is not None:
            hand_back = self.on_native_detach is not None
            if lib.ut_end_plain(
                self.table, slot, conn.bypassed, hand_back, self.claiming, self._ended
            ):
                self._ended_plain(conn, born, slot)
                return True
        f = lib.ut_flow_at(self.table, slot)
        image = ffi.buffer(f, _FLOW_SIZE)[:]
        last_seen, native, syn_sent = _FLOW_OUT.unpack_from(image)
        # Still waiting for the SYN-ACK: C has not touched the server's side.
        dirs = (
            (_DIR_OUT.unpack_from(image, _D0),)
            if syn_sent
            else (_DIR_OUT.unpack_from(image, _D0), _DIR_OUT.unpack_from(image, _D1))
        )
        begun = native and self.on_native_detach is not None and f.nat.state == _NATIVE_BEGUN
        sinks = conn.sinks()
        for i, numbers in enumerate(dirs):
            ep = conn.c if i == 0 else conn.s
            _apply_dir(ep, numbers)
            nxt, want_now, tail_len, sha, retain_drops, ooo_off, ooo_len, charged_at = (
                numbers[1],
                *numbers[_DIR_WANT:_DIR_RUN],
                *numbers[_DIR_TAIL_LEN:],
            )
            sink = sinks[i]
            if want_now == NEVER:
                _stop_follower(getattr(sink, "follower", None), i)
            if sha:
                sink.length = nxt
            st = ep.stream
            if tail_len:
                d = f.d[i]
                st.tail = bytearray(ffi.buffer(d.tail, tail_len))
                # Back in Python's count (ut_detach takes it off C's).
                st.budget.retained += tail_len
                st.budget.c_retained -= tail_len
            elif st.tail:
                st.tail = bytearray()
            if retain_drops:
                st.count_limit("retain", retain_drops)
            if ooo_len:
                # The piece C held joins Python's store as it would have when it came, and
                # takes its place among the holders by when it was last charged.
                st.add(ooo_off, bytes(ffi.buffer(f.d[i].ooo, ooo_len)))
                st.charged_at = charged_at
                st.budget.unsorted = True
        if last_seen > conn.last_seen:
            conn.last_seen = last_seen
        if begun:
            self.on_native_detach(conn, _native_events(f.nat))  # type: ignore[misc]
        lib.ut_end(self.table, slot, ended and self.claiming)
        self._let_go(conn, slot)
        return False

    def _ended_plain(self, conn: Connection, born: Any, slot: int) -> None:
        """detach's end of a connection ut_end_plain ended: its numbers kept (Born.ended),
        and the two effects that are not no-ops. Retained bytes are dropped at the end
        (ByteStream.flush): ut_end took them off C's count, and never Python's."""
        raw = self._ended_buf[:]
        born.ended = raw
        last_seen, _native, syn_sent = _FLOW_OUT.unpack_from(raw)
        sinks = born.sinks
        for i in range(1 if syn_sent else 2):
            nxt, want_now, sha = _END_HAND.unpack_from(raw, _D0 if i == 0 else _D1)
            if want_now == NEVER:
                follower = born.follower if sinks is None else getattr(sinks[i], "follower", None)
                _stop_follower(follower, i)
            if sha and sinks is not None:
                sinks[i].length = nxt
        if last_seen > conn.last_seen:
            conn.last_seen = last_seen
        if self.budget is not None:
            self.budget.c_retained = lib.ut_retained(self.table)
        self._let_go(conn, slot)
        self.ended_plain += 1

    def _let_go(self, conn: Connection, slot: int) -> None:
        """The flow is out of C's table: out of this side's too."""
        if self.budget is not None:
            self.budget.c_used = lib.ut_held(self.table)
        del self.conns[slot]
        self.sinks[2 * slot] = self.sinks[2 * slot + 1] = None
        conn.fast_slot = -1

    @staticmethod
    def apply_ended(conn: Connection, ended: bytes) -> None:
        """The numbers a connection ended plain with (detach: ut_ended) into its endpoints,
        made now."""
        _apply_dir(conn.c, _DIR_OUT.unpack_from(ended, _D0))
        if not _FLOW_OUT.unpack_from(ended)[2]:  # the SYN-ACK came
            _apply_dir(conn.s, _DIR_OUT.unpack_from(ended, _D1))

    def release_held(self) -> None:
        """Take back every connection holding a piece out of order (the global cap is about
        to force the stalest holders, and these are among them): the light flows holding
        one get their connections first."""
        if self.light and (n := sum(self.light_count(cls) for cls in range(3))):
            slots = ffi.new("int32_t[]", n)
            k = lib.ut_light_holders(self.table, slots, n)
            if k:
                assert self.on_adopt_holders is not None
                self.on_adopt_holders(list(slots[0:k]))
        for conn in [
            c for c in self.conns.values() if _holds(lib.ut_flow_at(self.table, c.fast_slot))
        ]:
            self.detach(conn)

    def counters(self, conn: Connection) -> tuple[int, int, int, int, float]:
        """(client packets, client payload bytes, server packets, server payload bytes,
        last seen) as C has them now, for a live view of an attached connection."""
        f = lib.ut_flow_at(self.table, conn.fast_slot)
        c, s = f.d[0], f.d[1]
        return c.packets, c.payload_bytes, s.packets, s.payload_bytes, f.last_seen

    def load(self, data: bytes | memoryview, offsets: Any, lengths: Any, times: Any) -> None:
        """Hand C one batch (buffers it may read until the next load; ``data`` stays good
        until the batch after next is loaded, as uinet_tap/pcapfile.py Batch says)."""
        self._deferred = True
        self._data = data
        self._args = (
            data if isinstance(data, bytes) else ffi.from_buffer(data),
            ffi.from_buffer("uint32_t[]", offsets),
            ffi.from_buffer("uint32_t[]", lengths),
            ffi.from_buffer("double[]", times),
        )

    def load_frames(self, batch: Any) -> None:
        """Hand C one batch received into C's own buffers (uinet_tap/ports.py RxBatch)."""
        self._deferred = False
        self._data = batch.data
        self._args = (batch.buf, batch.offsets, batch.lengths, batch.times)
        if self.bypassed_only:  # inline: the frames C drops are flagged in the batch
            lib.ut_set_rx_flags(self.table, batch.flags)

    def plain_non_tcp(self, start: int, count: int, layers: int) -> tuple[int, int, int]:
        """Inline: how many frames of the loaded batch from ``start`` on are plainly not TCP
        (ARP, UDP, ...: sent on from C as they are, up to ``layers`` encapsulations deep), and
        of those how many the decoder counts as unsupported_ethertype and as non_tcp."""
        counts = self._not_tcp
        buf, offsets, lengths = self._args[:3]
        n = lib.ut_plain_non_tcp(buf, offsets, lengths, start, count, layers, counts)
        found = (n, counts[0], counts[1])
        counts[0] = counts[1] = 0
        return found  # type: ignore[return-value]

    def unload(self) -> None:
        """Let go of the batch: a C view of a memoryview must not outlive it, or the garbage
        collector may clear the memoryview while the view still holds it (a crash). The
        hashing thread (_hashq.c) may still be hashing bytes of it C handed over: a batch
        given to load() is good until the batch after next is loaded, so its bytes are kept
        alive here and the next unload waits for them (this batch's hashing goes on while
        the next is read: settle() waits for all); one received into C's own buffers
        (load_frames) is waited for now."""
        if self._deferred:
            lib.ut_hash_wait_to(self._hash_mark)  # the batch before this one
            self._hash_mark = lib.ut_hash_mark()
            self._kept = self._data
        else:
            lib.ut_hash_wait()
            self._kept = b""
        self._args = ()
        self._data = b""
        if self.bypassed_only:
            lib.ut_set_rx_flags(self.table, ffi.NULL)

    def settle(self) -> None:
        """Every byte handed to the hashing thread hashed, and the last batch let go."""
        lib.ut_hash_wait()
        self._kept = b""

    def run(
        self, start: int, count: int, expiry_at: float, frame: int = 0
    ) -> tuple[int, int, bool]:
        """Run C over frames [start, count) of the loaded batch; deliver payloads to their
        sinks. Returns (index of the first frame not handled, frames handled, whether it
        stopped only to hand back: output arrays full, or a flow under inspection got
        payload, so the frame it stopped at is no slow frame)."""
        cdata, offsets, lengths, times = self._args
        budget = self.budget
        if budget is not None:
            lib.ut_set_retain(self.table, budget.retained, budget.retain_cap)
            lib.ut_set_buffer(self.table, budget.used, *self.caps, frame)
        room = self.born_room
        if room is not None:
            lib.ut_set_born(self.table, *room())
        stop = lib.ut_run(
            self.table, cdata, offsets, lengths, times, start, count, expiry_at,
            self.out, self.heads, OUT_CAP, self._n_out, self.touched, self._n_touched,
            self.changed, self._n_changed, self._handled, self._stop, self._yielded,
            self.decided, self._n_decided, self.born, self._n_born,
        )  # fmt: skip
        if budget is not None:
            budget.c_retained = lib.ut_retained(self.table)
            budget.c_used = lib.ut_held(self.table)
        nb = self._n_born[0]
        conns = self.conns
        if nb:  # first: everything below may be about these connections
            if self.light:
                self.opened += nb
                self.on_light_born(nb)  # type: ignore[misc]
            else:
                self._take_born(nb, times)
        nd = self._n_decided[0]
        if nd:
            decided = self.on_native_decided
            assert decided is not None
            table = self.table
            early = self.native_early
            for k in range(nd):
                slot = self.decided[k]
                report = self._native_report(lib.ut_flow_at(table, slot).nat, early)
                conn = conns.get(slot)
                if conn is None:  # a light flow: kept for its connection (adopt)
                    self.light_users[slot] = decided(None, report)
                else:
                    decided(conn, report)
                lib.ut_native_release(table, slot)
        if self.on_native_held is not None and (held := lib.ut_held_taken(self.table)):
            self.on_native_held(held)  # decisions C kept in light flows (_hold)
        nt = self._n_touched[0]
        touched = self._touched_mv[: nt * _TOUCH.size]
        n = self._n_out[0]
        if n:
            # Before the state changes below, as Tracker.segment hands bytes over before its
            # _on_fin(): a verdict on a FIN's payload finds the connection still open.
            sinks = self.sinks
            data = self._data
            copy = type(data) is memoryview  # a sink keeps what it gets: bytes, not a view
            table = self.table
            nsinks = len(sinks)  # a light flow's slot may be past the last connection's
            for k, (sink_id, off, length, hashed, offset) in enumerate(
                _OUT.iter_unpack(self._out_mv[: n * _OUT.size])
            ):
                piece = data[off : off + length]
                sink = sinks[sink_id] if sink_id < nsinks else None
                if hashed == _HEAD_READ:
                    # A header block C read for the sink's reader: it takes C's fields.
                    follower = sink.follower if sink is not None else self._follower(sink_id)
                    d = sink_id & 1
                    block = bytes(piece)
                    head = _HEAD.unpack_from(self._heads_mv, k * _HEAD.size)
                    follower.read_head(d, offset, block, _head_fields(block, off, head))
                elif hashed:
                    # Hashed by C already: only the sink's reader (plugins/http_transactions)
                    # wanted these bytes. It reads them, and C hashes in place again up to
                    # where it next wants any (the end of the body it skips).
                    follower = sink.follower if sink is not None else self._follower(sink_id)
                    follower.data(sink_id & 1, offset, bytes(piece) if copy else piece)
                    if sink is None or sink_id >> 1 in conns:  # not ended by a verdict hook
                        f = lib.ut_flow_at(table, sink_id >> 1)
                        f.d[0].want, f.d[1].want = follower.want(0), follower.want(1)
                else:
                    if sink is None:  # a connection C opened: its sinks are made now
                        sink = conns[sink_id >> 1].sinks()[sink_id & 1]
                    if getattr(sink, "inspect", None) is not None:
                        # An inspector reads the time: its connection's last frame in the
                        # run (C hands back after each payload of a connection under
                        # inspection), which the touched list below gives the others.
                        conns[sink_id >> 1].last_seen = lib.ut_flow_at(
                            table, sink_id >> 1
                        ).last_seen
                    sink.data(offset, bytes(piece) if copy else piece)  # type: ignore[union-attr]
        nc = self._n_changed[0]
        pairs = self._changed_mv[: 2 * nc]
        for slot, code in zip(pairs[0::2], pairs[1::2], strict=True):
            # The handshake's last ACK (Tracker._on_ack) or a FIN (Tracker._on_fin) moved the
            # connection on: to the state C says it is in now, and that state's timeout list.
            moved = conns.get(slot)
            if moved is None:
                continue  # a verdict hook ended it while it took its bytes
            if moved.state is ConnState.SYN_SENT and not code & _CH_SYN_SENT:
                _synack_taken(moved, lib.ut_flow_at(self.table, slot))
            moved.state = ConnState.RESET if code & _CH_RESET else _CHANGED_STATES[code & 3]
            self.place(moved)
        # Each touched connection's last time, and its place at the end of its timeout list
        # in the order the other paths move them in: after the state changes above moved some
        # to another list. Nothing above reads either (expiry and eviction do), but for the
        # time an inspector reads, given it above.
        for last_seen, slot, order in _TOUCH.iter_unpack(touched):
            moved = conns.get(slot)
            if moved is not None:
                moved.last_seen = last_seen
                moved.lru.move_to_end(moved)  # type: ignore[attr-defined]
                moved.moved = order
        full = OUT_CAP in (n, nt, self._n_changed[0], nd) and self._stop[0] < 0
        return stop, self._handled[0], full or bool(self._yielded[0])

    def _take_born(self, nb: int, times: Any) -> None:
        """The connections of the flows C opened in the run, in the order of their SYNs
        (the tracker numbers them so). C keeps hashing their streams into its own contexts
        until their sinks are made (born_shas)."""
        on_born = self.on_born
        assert on_born is not None
        self.opened += nb
        table, born, conns, sinks = self.table, self.born, self.conns, self.sinks
        need = 2 * max(born[2 * k] for k in range(nb)) + 2
        if len(sinks) < need:
            sinks.extend([None] * (need - len(sinks)))
        for k in range(nb):
            slot = born[2 * k]
            raw = ffi.buffer(lib.ut_flow_at(table, slot), 2 * KEY_BYTES)  # read in place
            keys = (py_key(raw[:KEY_BYTES]), py_key(raw[KEY_BYTES:]))
            try:
                conn = on_born(times[born[2 * k + 1]], keys)
            except BaseException:
                lib.ut_detach(table, slot)  # C frees the contexts it hashed into
                raise
            conn.fast_slot = slot
            conns[slot] = conn
            sinks[2 * slot] = sinks[2 * slot + 1] = None  # made when asked for

    def _follower(self, sink_id: int) -> Any:
        """The reader C hands a sink's bytes to, for a connection C opened whose sinks are not
        made (or a light flow's): the one it keeps (made now if it has none)."""
        conn = self.conns.get(sink_id >> 1)
        if conn is None:
            slot = sink_id >> 1
            follower = self._logged(slot, self.light_followers.get(slot))  # logged blocks first
            if follower is None:
                assert self.new_follower is not None
                follower = self.new_follower()
            self.light_followers[slot] = follower
            return follower
        born = conn.born
        if born.follower is None:
            assert self.new_follower is not None
            born.follower = self.new_follower()
        return born.follower

    def born_facts(self, conn: Connection, ended: bytes | None) -> tuple[SynFacts, SynFacts | None]:
        """What the SYN of a connection C opened told, and its SYN-ACK once C took it, as C
        keeps them (in its table, or as the connection ended plain)."""
        raw = self._born_image(conn, ended)
        wscale, ts, mss, sack, mac = _BORN.unpack_from(raw)
        syn = _syn_facts(_BORN_BASE.unpack_from(raw, _D0)[0], wscale, mss, sack, ts, mac)
        if _FLOW_OUT.unpack_from(raw)[2]:  # still waiting for the SYN-ACK
            return syn, None
        mss, wscale, sack, ts, mac = _SYNACK.unpack_from(raw)
        return syn, _syn_facts(_BORN_BASE.unpack_from(raw, _D1)[0], wscale, mss, sack, ts, mac)

    def born_syn_facts(
        self, conn: Connection, ended: bytes | None
    ) -> tuple[int | None, int | None, bool]:
        """Connection.syn_facts of a connection C opened, read at once from C's numbers."""
        syn_sent, s_mss, s_sack, c_mss, c_sack = _SYN_RECORD.unpack_from(
            self._born_image(conn, ended)
        )
        c = None if c_mss < 0 else c_mss
        if syn_sent:  # the SYN-ACK never came
            return c, None, False
        return c, None if s_mss < 0 else s_mss, bool(c_sack and s_sack)

    def _born_image(self, conn: Connection, ended: bytes | None) -> Any:
        """Where a connection C opened keeps what its SYN and SYN-ACK told: the flow as it
        ended plain (ut_ended starts with it), else C's table, read in place."""
        if ended is not None:
            return ended
        return ffi.buffer(lib.ut_flow_at(self.table, conn.fast_slot), _FACTS_END)

    def born_shas(self, conn: Connection, ended: bytes | None) -> tuple[Any, Any]:
        """The SHA-256 contexts C hashed a connection it opened into, for the sinks being
        made now (Tracker.make_born_sinks): C's own, handed over (ut_born_take), while the
        flow is in C's table; once it ended plain (C freed them), the digests C took."""
        if conn.fast_slot < 0:
            assert ended is not None, "a connection C opened left C's table without its sinks"
            c_digest, s_digest = _ended_digests(ended)
            return Digested(c_digest), Digested(s_digest)
        taken = self._born_shas
        if lib.ut_born_take(self.table, conn.fast_slot, taken):
            raise RuntimeError("a born flow without its SHA-256 contexts")
        return Sha256.adopt(taken[0]), Sha256.adopt(taken[1])

    def sinks_made(self, conn: Connection, sinks: tuple[Any, Any]) -> None:
        """A connection's sinks were made (Tracker.make_born_sinks): C's hand-overs go there."""
        self.sinks_built += 1
        slot = conn.fast_slot
        if slot >= 0:
            self.sinks[2 * slot], self.sinks[2 * slot + 1] = sinks


_NATIVE_BEGUN = 1  # ut_native.state of a connection C inspects and has not decided (_detect.c)
# ut_native.proto, and the bits of ut_native.allow (_detect.c UD_HTTP, UD_TLS)
NATIVE_HTTP, NATIVE_TLS = 1, 2


class NativeReport(NamedTuple):
    """What C found on a connection it named and decided (stack/_detect.c's ut_native)."""

    proto: int  # NATIVE_HTTP or NATIVE_TLS
    verdict_offsets: tuple[int, int]  # each direction's stream offset at the verdict
    # HTTP: offsets and lengths into early[0] of method, path, host, user agent (length -1:
    # absent), then the status (-1: none). TLS: offsets and lengths into fbuf of the SNI and
    # the ALPN list (-1: absent), the legacy version, the count of offered versions, the
    # versions, the chosen version (-1: none), the cipher, JA3 and JA4 (NUL-padded).
    found: tuple[Any, ...]
    # The early bytes C kept of each direction: both where native_early asks (a live view
    # shows them), else only the client's of an HTTP connection (its findings point there).
    early: tuple[bytes, bytes]
    fbuf: bytes  # TLS: the hello's strings the offsets above point into
    # Where C wrote them (CFastPath.write_records): the findings as JSON text, as orjson
    # writes the dict uinet_tap/native.py _findings makes (found, early and fbuf are empty)
    findings_json: bytes | None


class NativeEvents(NamedTuple):
    """The data events C applied to a connection it began inspecting and left undecided:
    each direction's early bytes, and (direction, length, time) of each payload in order."""

    early: tuple[bytes, bytes]
    events: list[tuple[int, int, float]]


def _adopt_kept(
    conn: Connection, user: Any, follower: Any,
    adopt_user: Callable[[Connection, Any], None] | None,
) -> None:  # fmt: skip
    """What the fast path kept of a light flow, into its connection made now."""
    conn.born.follower = follower
    if user is not None:
        assert adopt_user is not None
        adopt_user(conn, user)


class EndedFacts(NamedTuple):
    """What the record of a light flow that ended plain reads (ended_facts)."""

    conn_id: int
    start: float  # its SYN's time
    keys: tuple[bytes, bytes]
    last_seen: float
    bypassed: bool
    handshake: bool  # the SYN-ACK came (C took it)
    wscale_ok: bool
    ts_ok: bool
    client_mss: int | None
    server_mss: int | None
    sack_permitted: bool
    directions: tuple[EndedDirection, EndedDirection]


def ended_bypassed(ended: bytes) -> bool:
    """Whether a light flow that ended plain (end_light's bytes) was bypassed."""
    return bool(_BYPASS.unpack_from(ended)[0])


def ended_facts(ended: bytes) -> EndedFacts:
    """The facts of a light flow's record, read at once from the flow as it ended
    (CFastPath.end_light's bytes): what its connection, were it made (adopt_ended), would
    give flow_record."""
    conn_id, start = _LIGHT.unpack_from(ended)
    last_seen, _native, syn_sent = _FLOW_OUT.unpack_from(ended)
    bypassed = bool(_BYPASS.unpack_from(ended)[0])
    _syn, s_mss, s_sack, c_mss, c_sack = _SYN_RECORD.unpack_from(ended)
    keys = (py_key(ended[:KEY_BYTES]), py_key(ended[KEY_BYTES : 2 * KEY_BYTES]))
    directions = ended_directions(ended, bypassed)
    client_mss = None if c_mss < 0 else c_mss
    if syn_sent:  # the SYN-ACK never came
        return EndedFacts(
            conn_id, start, keys, last_seen, bypassed, False, False, False, client_mss, None,
            False, directions,
        )  # fmt: skip
    c_wscale, c_ts, s_wscale, s_ts = _HANDSHAKE.unpack_from(ended)
    return EndedFacts(
        conn_id, start, keys, last_seen, bypassed, True, c_wscale >= 0 and s_wscale >= 0,
        bool(c_ts and s_ts), client_mss, None if s_mss < 0 else s_mss, bool(c_sack and s_sack),
        directions,
    )  # fmt: skip


def _native_report(nat: Any, both_early: bool, head: tuple[Any, ...] | None = None) -> NativeReport:
    raw = ffi.buffer(nat)
    if head is None:
        head = _NAT_HEAD.unpack_from(raw)
    found = _NAT_FOUND.unpack_from(raw)
    proto = head[2]
    lens = (head[6], head[7])  # early_len of each direction
    early = tuple(
        bytes(ffi.buffer(nat.early[d], lens[d])) if lens[d] and (both_early or (
            d == 0 and proto == NATIVE_HTTP)) else b""
        for d in (0, 1)
    )  # fmt: skip
    flen = found[-1]
    fbuf = bytes(ffi.buffer(nat.fbuf, flen)) if proto == NATIVE_TLS and flen else b""
    return NativeReport(proto, (head[13], head[14]), found[:-1], early, fbuf, None)  # type: ignore[arg-type]


def _native_events(nat: Any) -> NativeEvents:
    lens = (nat.early_len[0], nat.early_len[1])
    early = tuple(bytes(ffi.buffer(nat.early[d], lens[d])) if lens[d] else b"" for d in (0, 1))
    events = [(ev.dir, ev.len, ev.ts) for ev in (nat.ev[k] for k in range(nat.nev))]
    return NativeEvents(early, events)  # type: ignore[arg-type]


class SynFacts(NamedTuple):
    """What a SYN C took told that only Python keeps (C keeps the rest: base, window,
    options, TS.Recent, counts): the client's, for a flow C opened, or the server's SYN-ACK
    (CFastPath.born_facts, _synack_taken)."""

    isn: int
    wscale: int | None
    mss: int | None
    sack_permitted: bool
    ts_enabled: bool
    mac: bytes


def _head_fields(block: bytes, at: int, head: tuple[int, ...]) -> tuple[Any, ...]:
    """A ut_head's fields as the follower takes them (HttpTransactions.read_head), from the
    block C read (at ``at`` in the batch buffer, where the ut_head's offsets point)."""
    m0, m1, p0, p1, v0, v1, h0, h1, u0, u1, status, cl = head
    length = None if cl < 0 else cl
    if status >= 0:
        return status, length
    text = block.decode("latin-1")  # once: each field is a slice of it
    m0, p0, v0, h0, u0 = m0 - at, p0 - at, v0 - at, h0 - at, u0 - at
    return (
        text[m0 : m0 + m1],
        text[p0 : p0 + p1],
        text[v0 : v0 + v1],
        None if h1 < 0 else text[h0 : h0 + h1],
        None if u1 < 0 else text[u0 : u0 + u1],
        length,
    )


# ut_run's state codes (_fast.h UT_CH_*), the low two bits, and the flag of a flow still
# awaiting its SYN-ACK.
_CHANGED_STATES = (
    ConnState.ESTABLISHED, ConnState.SYN_RECEIVED, ConnState.HALF_CLOSED, ConnState.CLOSED
)  # fmt: skip
_CH_SYN_SENT = 4
_CH_RESET = 8  # an accepted RST, whatever the low bits say
assert lib is None or (
    lib.UT_CH_ESTABLISHED, lib.UT_CH_SYN_RECEIVED, lib.UT_CH_HALF_CLOSED, lib.UT_CH_CLOSED,
    lib.UT_CH_SYN_SENT, lib.UT_CH_RESET,
) == (0, 1, 2, 3, _CH_SYN_SENT, _CH_RESET)  # fmt: skip

NEVER = 1 << 62  # ut_dir.want of a sink that wants no byte handed over once it hashes
assert lib is None or lib.UT_WANT_NEVER == NEVER


def _want(sink: Any, server: bool) -> int:
    """ut_dir.want: from where the sink's transaction follower needs the bytes again."""
    follower = getattr(sink, "follower", None)
    return NEVER if follower is None else follower.want(int(server))  # type: ignore[no-any-return]


def _holds(f: Any) -> bool:
    return bool(f.d[0].ooo_len or f.d[1].ooo_len)


if lib is not None:
    _DIR_WANT = len(_DIR_FIELDS) - 2  # want, want_run, then the _DIR_OUT-only fields
    _DIR_RUN = _DIR_WANT + 1
    _DIR_TAIL_LEN = len(_DIR_FIELDS)
    assert _DIR_FIELDS[_DIR_WANT] == "want" and _DIR_FIELDS[-1] == "want_run"


# A direction of a connection that ended plain, as its record reads it (ended_directions):
# (length, delivered, packets, payload bytes, retransmitted bytes, the SHA-256 of its stream
# in hex where C digested it, else None).
EndedDirection = tuple[int, int, int, int, int, str | None]


def ended_directions(ended: bytes, bypassed: bool) -> tuple[EndedDirection, EndedDirection]:
    """Both directions' record numbers of a connection that ended plain (Born.ended: the
    ut_ended detach kept). The server's, when its SYN-ACK never came, are as open_born made
    them: nothing."""
    c_digest, s_digest = _ended_digests(ended)
    c_hex = None if c_digest is None else c_digest.hex()
    s_hex = None if s_digest is None else s_digest.hex()
    c = _END_REC.unpack_from(ended, _D0)
    if _FLOW_OUT.unpack_from(ended)[2]:  # the SYN-ACK never came
        return _ended_direction(c, None, bypassed, c_hex), (0, 0, 0, 0, 0, s_hex)
    s = _END_REC.unpack_from(ended, _D1)
    return _ended_direction(c, s, bypassed, c_hex), _ended_direction(s, c, bypassed, s_hex)


def _ended_direction(
    d: tuple[int, ...], peer: tuple[int, ...] | None, bypassed: bool, digest: str | None
) -> EndedDirection:
    base, nxt, seen_end, _last_ack, _has_last_ack, packets, payload, retransmitted = d
    length = nxt
    if bypassed:
        last_ack = peer[3] if peer is not None and peer[4] else None
        length = stream_length(True, nxt, base, seen_end, last_ack)
    return length, nxt, packets, payload, retransmitted, digest


class HeadLog:
    """The header blocks C read of a light flow and logged (ut_hlog entries), in order: what
    its transaction follower would have been handed, for C to write its transactions from
    (CFastPath.transactions_line) or for Python to read (replayed)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def replayed(self, follower: Any) -> Any:
        """``follower`` (a fresh one, or the flow's, which read every block before these)
        having read the logged blocks, as each would have been handed over (run)."""
        data = self.data
        pos, end = 0, len(data)
        while pos < end:
            at, d, size = _HLOG.unpack_from(data, pos)
            start = pos + _HLOG_SIZE
            block = data[start : start + size]
            head = _HEAD.unpack_from(data, pos + _HLOG_HEAD)
            follower.read_head(d, at, block, _head_fields(block, 0, head))
            pos += (_HLOG_SIZE + size + 7) & ~7
        return follower


def _unread(ended: bytes) -> list[int]:
    """The directions of a flow that ended plain whose follower stops there (C saw they are
    not HTTP from their first byte: want NEVER; end_light)."""
    state = _ENDED_STATE.unpack_from(ended)[0]
    return [
        i
        for i in range(1 if state & _CH_SYN_SENT else 2)
        if _END_HAND.unpack_from(ended, _D0 if i == 0 else _D1)[1] == NEVER
    ]


def _stop_follower(follower: Any, d: int) -> None:
    """C saw direction ``d`` is not HTTP from its first byte (ut_run: want NEVER): the
    sinks' transaction follower (None: none), still reading there, stops."""
    if follower is not None and follower.want(d) != NEVER:
        follower.stop("TLS from the first byte")


class Digested:
    """The SHA-256 of a stream that ended, as C took it (ut_end_plain): what a sink made
    after C freed the context (Tracker.make_born_sinks) holds for it."""

    __slots__ = ("digest",)
    ctx = None  # no context left for C to hash into

    def __init__(self, digest: bytes | None) -> None:
        self.digest = digest

    def hexdigest(self) -> str:
        if self.digest is None:
            raise MemoryError("SHA-256 digest")  # ut_sha_digest failed (ut_end_plain)
        return self.digest.hex()

    def update(self, data: bytes) -> None:
        raise RuntimeError("the stream ended")


def _ended_digests(ended: bytes) -> tuple[bytes | None, bytes | None]:
    """Each stream's SHA-256 as C took it at a plain end (None: not taken)."""
    c_digested, s_digested, digests = _ENDED_DIGESTS.unpack_from(ended)
    return digests[:32] if c_digested else None, digests[32:] if s_digested else None


def _apply_dir(ep: Endpoint, numbers: tuple[Any, ...]) -> None:
    """A direction's numbers C kept, into its endpoint and stream (detach)."""
    st = ep.stream
    (
        ep.base, st.nxt, st.acked, ep.seen_end, fin, ep.window, last_ack, has_last_ack,
        ep.packets, ep.payload_bytes, ep.ttl, opts_len, opts,
        edge, ep.edge_ack, ep.max_wnd, has_edge, ts_recent, has_ts_recent, _shift,
        ep.ts_recent_at, st.retransmitted,
    ) = numbers[:_DIR_WANT]  # fmt: skip
    ep.fin_off = None if fin == NO_FIN else fin
    ep.edge = edge if has_edge else None
    ep.ts_recent = ts_recent if has_ts_recent else None
    ep.last_ack = last_ack if has_last_ack else None
    ep.last_opts = opts[:opts_len]


def _dir_image(conn: Connection, ep: Endpoint) -> bytes:
    """A direction's numbers as C's ut_dir holds them, up to its tail buffer."""
    st = ep.stream
    opts = ep.last_opts
    return _DIR.pack(
        ep.base or 0, st.nxt, st.acked, ep.seen_end,
        NO_FIN if ep.fin_off is None else ep.fin_off, ep.window,
        ep.last_ack or 0, ep.last_ack is not None, ep.packets, ep.payload_bytes,
        ep.ttl, len(opts), opts,
        ep.edge or 0, ep.edge_ack, ep.max_wnd, ep.edge is not None,
        ep.ts_recent or 0, ep.ts_recent is not None, window_shift(conn, ep),
        ep.ts_recent_at, st.retransmitted, _want(st.sink, ep is conn.s), 0,
    )  # fmt: skip


def _synack_taken(conn: Connection, f: Any) -> None:
    """C took the server's SYN-ACK (see ut_run): what Tracker._take_syn learns from it that
    only Python keeps (for a connection C opened whose endpoints are not made, C keeps it:
    CFastPath.born_facts). The numbers C keeps come back with detach."""
    raw = ffi.buffer(f, _FACTS_END)  # read in place
    if conn.born is not None:
        c_wscale, c_ts, s_wscale, s_ts = _HANDSHAKE.unpack_from(raw)
        conn.wscale_ok = c_wscale >= 0 and s_wscale >= 0
        conn.ts_ok = bool(c_ts and s_ts)
    else:
        mss, wscale, sack, ts, mac = _SYNACK.unpack_from(raw)
        synack = _syn_facts(_BORN_BASE.unpack_from(raw, _D1)[0], wscale, mss, sack, ts, mac)
        learn_syn_facts(conn.s, synack)
        conn.wscale_ok = synack.wscale is not None and conn.c.wscale is not None
        conn.ts_ok = synack.ts_enabled and conn.c.ts_enabled
    conn.handshake = True  # the client's SYN was seen: it is attached only then


def _syn_facts(base: int, wscale: int, mss: int, sack: int, ts: int, mac: bytes) -> SynFacts:
    """SynFacts from C's numbers: the side's base (its ISN + 1), its options (-1: absent)."""
    return SynFacts(
        (base - 1) & 0xFFFFFFFF, None if wscale < 0 else wscale, None if mss < 0 else mss,
        bool(sack), bool(ts), mac,
    )  # fmt: skip


def learn_syn_facts(ep: Endpoint, facts: SynFacts) -> None:
    """What a side's SYN C took told of it, into its endpoint (Tracker._take_syn's part)."""
    ep.learn_syn(facts.isn, facts.wscale, facts.mss, facts.sack_permitted, facts.ts_enabled)
    ep.mac = facts.mac


def index_pcap(
    buf: Any, pos: int, swap: bool, nsec: bool, snaplen: int, limit: int
) -> tuple[int, array, array, array, str, int]:
    """Index up to ``limit`` pcap records of ``buf`` (bytes, or a mapped file) from ``pos`` in
    C (stack/_pcap.c): (records, payload offsets from ``pos``, captured lengths, times, why
    the index stopped: "full" at ``limit``, "more" at a record the buffer does not hold
    whole, "bad" at one not plainly well formed; and where it stopped)."""
    offsets = array("I", bytes(4 * limit))
    lengths = array("I", bytes(4 * limit))
    times = array("d", bytes(8 * limit))
    at = ffi.new("uint64_t *", pos)
    stop = ffi.new("int32_t *")
    n = lib.ut_pcap_index(
        ffi.from_buffer(buf), len(buf), at, swap, nsec, snaplen, limit,
        ffi.from_buffer("uint32_t[]", offsets), ffi.from_buffer("uint32_t[]", lengths),
        ffi.from_buffer("double[]", times), stop,
    )  # fmt: skip
    del offsets[n:], lengths[n:], times[n:]
    why = _PCAP_STOPS.get(stop[0], "bad")
    return n, offsets, lengths, times, why, at[0]


_PCAP_STOPS = {lib.UT_PCAP_FULL: "full", lib.UT_PCAP_MORE: "more"} if lib is not None else {}


def meta_times(meta: array) -> array:
    """Capture times from libpcap's (sec, usec, offset, caplen) records, in C."""
    n = len(meta) // 4
    times = array("d", bytes(8 * n))
    lib.ut_meta_times(ffi.from_buffer("uint32_t[]", meta), n, ffi.from_buffer("double[]", times))
    return times


class RxRing:
    """A TPACKET_V3 receive ring on an AF_PACKET socket, read in place by C (uinet_tap/_ports.c
    ut_ring3_*): watch's live capture with no copy of a frame. ``rx`` gives the frames that
    arrived as a batch of offsets into ``data`` (the whole ring); the blocks they lie in go
    back to the kernel one batch late, as uinet_tap/pcapfile.py Batch allows."""

    def __init__(
        self, fd: int, block_size: int, block_nr: int, frame_size: int, retire_ms: int,
        slots: int, snaplen: int, skip_outgoing: bool,
    ) -> None:  # fmt: skip
        """Raises OSError (the kernel's errno) where the ring cannot be made.
        ``skip_outgoing``: leave out the frames this host sends (loopback sees them twice)."""
        self._ring = ffi.new("ut_ring3 *")
        err = lib.ut_ring3_open(
            fd, self._ring, block_size, block_nr, frame_size, retire_ms, snaplen
        )
        if err < 0:
            raise OSError(-err, os.strerror(-err))
        self._ring.skip_outgoing = skip_outgoing
        self.data = memoryview(ffi.buffer(self._ring.map, self._ring.size))
        self._slots = slots
        self._offsets = ffi.new("uint32_t[]", slots)
        self._lengths = ffi.new("uint32_t[]", slots)
        self._times = ffi.new("double[]", slots)
        self._last_start: int | None = None  # the block the last batch given out starts in

    def rx(self) -> tuple[array, array, array] | None:
        """(offsets, captured lengths, times) of the frames waiting, at most ``slots``; None
        where none. The batch before the last one given out is let go first."""
        ring = self._ring
        if self._last_start is not None:
            lib.ut_ring3_release(ring, self._last_start)
        n = lib.ut_ring3_rx(ring, self._slots, self._offsets, self._lengths, self._times)
        if n == 0:
            return None
        self._last_start = ring.start
        offsets, lengths, times = array("I"), array("I"), array("d")
        offsets.frombytes(ffi.buffer(self._offsets, 4 * n))
        lengths.frombytes(ffi.buffer(self._lengths, 4 * n))
        times.frombytes(ffi.buffer(self._times, 8 * n))
        return offsets, lengths, times

    def behind(self) -> bool:
        """Whether a whole block more waits past the one being read."""
        return bool(lib.ut_ring3_behind(self._ring))

    def release_all(self) -> None:
        """Every block back to the kernel: the batches given out are no longer read. (Holding
        the block before the kernel's current one keeps the socket readable for poll and
        select: an idle reader waiting on it would spin.)"""
        lib.ut_ring3_release(self._ring, self._ring.cur)
        self._last_start = None

    def close(self) -> None:
        """Unmap the ring (its socket is closed by its owner). No batch may be read after."""
        with contextlib.suppress(BufferError):  # a view C still holds: nothing reads it now
            self.data.release()
        lib.ut_ring3_close(self._ring)


def complete_checksums(frame: bytes) -> bytes:
    """stack/emit.py's complete_checksums, done by C (_offload.c) on a copy."""
    out = bytearray(frame)
    lib.ut_complete_checksums(ffi.from_buffer(out), len(out))
    return bytes(out)


def resegment(frame: bytes, mtu: int) -> list[bytes]:
    """stack/emit.py's resegment, done by C (_offload.c) as ut_tx does it: a room of pieces
    at a time."""
    cap = lib.UT_TX_ROOM
    out = bytearray(cap)
    view = ffi.from_buffer(out)
    lengths = ffi.new("uint32_t[]", lib.UT_TX_PIECES)
    total = ffi.new("uint32_t *")
    pieces: list[bytes] = []
    while True:
        n = lib.ut_resegment(frame, len(frame), mtu, len(pieces), view, cap, lengths,
                             lib.UT_TX_PIECES, total)  # fmt: skip
        if n <= 0:
            return pieces or [frame]
        at = 0
        for i in range(n):
            pieces.append(bytes(out[at : at + lengths[i]]))
            at += lengths[i]
        if len(pieces) >= total[0]:
            return pieces


_FRAME = bytearray(lib.UT_RX_SLOT) if lib is not None else bytearray()
_FRAME_C = ffi.from_buffer(_FRAME) if lib is not None else None


def build(t: Any, seq: int, ack: int, flags: int, window: int, options: bytes = b"",
          payload: bytes = b"") -> bytes:  # fmt: skip
    """stack/emit.py's build (a frame from an impersonated endpoint), done by C."""
    check_build(t, options)
    v6 = t.v6
    if len(t.l2) + 60 + len(options) + len(payload) > len(_FRAME):
        raise ValueError("frame longer than a receive slot")
    ip_id = t.ip_id & 0xFFFF
    if not v6:
        t.ip_id = (ip_id + 1) & 0xFFFF
    n = lib.ut_build(
        t.l2, len(t.l2), t.src, t.dst, len(t.src), t.sport, t.dport, t.ttl, t.tos,
        t.flow_label, ip_id, t.df, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags, window,
        options, len(options), payload, len(payload), _FRAME_C,
    )  # fmt: skip
    return bytes(_FRAME[:n])


class Sha256:
    """SHA-256 in a C context that the fast path can also update (hashlib's interface)."""

    __slots__ = ("ctx",)

    def __init__(self) -> None:
        ctx = lib.ut_sha_new()
        if ctx == ffi.NULL:
            raise MemoryError("SHA-256 context")
        self.ctx = ffi.gc(ctx, lib.ut_sha_free)

    @classmethod
    def adopt(cls, ctx: Any) -> Sha256:
        """A context C made (a born flow's, ut_born_take): this object frees it."""
        sha = cls.__new__(cls)
        sha.ctx = ffi.gc(ctx, lib.ut_sha_free)
        return sha

    def update(self, data: bytes) -> None:
        lib.ut_sha_update(self.ctx, data, len(data))

    def update_zeros(self, n: int) -> None:
        lib.ut_sha_zeros(self.ctx, n)

    def hexdigest(self) -> str:
        out = ffi.new("uint8_t[32]")
        if lib.ut_sha_digest(self.ctx, out) != 0:
            raise MemoryError("SHA-256 digest")
        return bytes(ffi.buffer(out)).hex()
