"""Per-direction stream sinks (hash, export file, kept bytes) and the JSON flow record."""

from __future__ import annotations

import functools
import hashlib
import math
import os
import socket
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from .community_id import community_id
from .isotime import utc_second
from .plugins.http_transactions import HttpTransactions
from .stack.connection import Connection
from .stack.events import CloseReason, Direction
from .stack.fastpath import Digested, EndedDirection, EndedFacts, Sha256, ended_directions
from .stack.tracker import split_key

_ZEROS = bytes(1 << 16)


@functools.lru_cache(maxsize=65536)
def format_ip(addr: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6 if len(addr) == 16 else socket.AF_INET, addr)


def format_endpoint(addr: bytes, port: int) -> str:
    if len(addr) == 16:
        return f"[{format_ip(addr)}]:{port}"
    return f"{format_ip(addr)}:{port}"


def flow_filename(src: tuple[bytes, int], dst: tuple[bytes, int]) -> str:
    """tcpflow's naming: ``SRCIP.SPORT-DSTIP.DPORT``, IPv4 octets and ports zero-padded."""

    def part(addr: bytes, port: int) -> str:
        if len(addr) == 4:
            ip = ".".join(f"{b:03d}" for b in addr)
        else:
            ip = ":".join(addr[i : i + 2].hex() for i in range(0, 16, 2))
        return f"{ip}.{port:05d}"

    return f"{part(*src)}-{part(*dst)}"


class FilePool:
    """Writes stream files at offsets through a bounded set of open handles, so 20,000
    concurrent connections never need 40,000 descriptors (tcpflow's FD-limit problem)."""

    def __init__(self, max_open: int = 128) -> None:
        self.max_open = max_open
        self._open: OrderedDict[Path, BinaryIO] = OrderedDict()

    def write(self, path: Path, offset: int, data: bytes) -> None:
        f = self._open.get(path)
        if f is None:
            if len(self._open) >= self.max_open:
                self._open.popitem(last=False)[1].close()
            f = open(path, "r+b" if path.exists() else "w+b")  # noqa: SIM115 (pooled)
            self._open[path] = f
        else:
            self._open.move_to_end(path)
        f.seek(offset)
        f.write(data)

    def finish(self, path: Path, length: int) -> None:
        """Close the file and give it its full length (a trailing gap reads as zeros)."""
        f = self._open.pop(path, None)
        if f is not None:
            f.close()
        if not path.exists():
            path.touch()
        if path.stat().st_size != length:
            os.truncate(path, length)

    def close(self) -> None:
        while self._open:
            self._open.popitem()[1].close()


class DirectionSink:
    """Receives one direction's bytes in order: hashes them (gaps as zeros), optionally keeps
    them, optionally writes them to an export file."""

    __slots__ = ("sha", "hashed", "length", "chunks", "path", "pool", "c_hash", "inspect",
                 "follower", "direction")  # fmt: skip

    def __init__(
        self,
        keep: bool = False,
        path: Path | None = None,
        pool: FilePool | None = None,
        c_hash: bool = False,
        inspect: Callable[[bytes | None], None] | None = None,
        sha: Sha256 | None = None,
    ):
        # While a flow is inspected its bytes also go to the inspector (and C hands them
        # back rather than hashing in place); the verdict ends that with resume_c_hash().
        self.inspect = inspect
        # With the C fast path the hash lives in a C context C can update; c_hash is that
        # context when hashing is all this sink does, so C need not hand bytes back. ``sha``:
        # the context C already hashes this direction into (a flow C opened), to take over.
        self.c_hash: Any = None
        if c_hash:
            if sha is None:
                sha = Sha256()
            self.sha: Any = sha
            if not keep and pool is None:
                self.c_hash = sha.ctx
        else:
            self.sha = hashlib.sha256()
        if inspect is not None:
            self.c_hash = None
        self.hashed = True  # False once a gap was too long to hash (MAX_HASHED_GAP)
        self.length = 0
        self.chunks: list[bytes] | None = [] if keep else None
        self.path = path
        self.pool = pool
        # The connection's HTTP transaction follower (both sinks share it), fed in order.
        self.follower: HttpTransactions | None = None
        self.direction = 0

    @classmethod
    def hashing(cls, sha: Any, inspect: Callable[[bytes | None], None] | None) -> DirectionSink:
        """A sink that only hashes, into ``sha``, the context C hashes its bytes into (or,
        for a stream that ended, the digest C took: fastpath.Digested): what __init__ makes
        of (c_hash=True, sha), C kept hashing in place (c_hash) even while the bytes also go
        to ``inspect`` (C's own inspection: uinet_tap/native.py), made in fewer steps."""
        sink = cls.__new__(cls)
        sink.inspect = inspect
        sink.sha = sha
        sink.c_hash = sha.ctx
        sink.hashed = True
        sink.length = 0
        sink.chunks = sink.path = sink.pool = sink.follower = None
        sink.direction = 0
        return sink

    def data(self, offset: int, data: bytes) -> None:
        self.sha.update(data)
        self.length = offset + len(data)
        if self.chunks is not None:
            self.chunks.append(bytes(data))
        if self.pool is not None:
            self.pool.write(self.path, offset, data)  # type: ignore[arg-type]
        if self.inspect is not None:
            self.inspect(data)
        if self.follower is not None:
            self.follower.data(self.direction, offset, data)

    def stop_inspecting(self) -> None:
        self.inspect = None
        if isinstance(self.sha, Sha256) and self.chunks is None and self.pool is None:
            self.c_hash = self.sha.ctx

    def gap(self, offset: int, length: int, hashed: bool = True) -> None:
        if self.inspect is not None:
            self.inspect(None)  # the inspector's early bytes stop at a hole
        if self.follower is not None:
            self.follower.gap(self.direction, offset, length)
        if not hashed:
            self.hashed = False
        if not self.hashed:
            pass  # the hash is given up: no zeros to spend time on
        elif isinstance(self.sha, Sha256):
            self.sha.update_zeros(length)
        else:
            left = length
            while left > 0:
                n = min(left, len(_ZEROS))
                self.sha.update(_ZEROS[:n])
                left -= n
        if self.chunks is not None:
            self.chunks.append(bytes(length))
        self.length = offset + length

    def finish(self) -> None:
        if self.pool is not None and self.path is not None:
            self.pool.finish(self.path, self.length)


def direction_record(conn: Connection, direction: Direction, export_dir: Path | None) -> dict:
    ep = conn.c if direction is Direction.C2S else conn.s
    stream = ep.stream
    return _direction(
        conn.bypassed, ep.stream.sink, conn.length(ep), stream.delivered,  # type: ignore[arg-type]
        [list(g) for g in stream.gaps], stream.gap_count, stream.gap_bytes, ep.packets,
        ep.payload_bytes, stream.retransmitted, stream.conflicts, export_dir,
    )  # fmt: skip


class _HashOnly:
    """What a record reads of the sink of a connection C opened whose sinks were never
    made: it only hashed, in C (the digest C took is given)."""

    hashed = True
    path = chunks = None
    sha = Digested(None)  # the digest is always given: failing here is C's out of memory


_HASH_ONLY = (_HashOnly(), _HashOnly())


def _ended_direction_records(
    directions: tuple[EndedDirection, EndedDirection], bypassed: bool,
    sinks: tuple[Any, Any] | None, export_dir: Path | None,
) -> tuple[dict, dict]:  # fmt: skip
    """Both direction records of a connection that ended plain, from C's numbers
    (stack/fastpath.py ended_directions), its endpoints never made (and its sinks, unless
    given). Nothing went to Python's reassembly: no gap, no overlap conflict."""
    out = []
    for (length, delivered, packets, payload, retransmitted, digest), sink in zip(
        directions, sinks or _HASH_ONLY, strict=True
    ):
        out.append(_direction(
            bypassed, sink, length, delivered, [], 0, 0, packets, payload, retransmitted, 0,
            export_dir, digest,
        ))  # fmt: skip
    return out[0], out[1]


def _direction(
    bypassed: bool, sink: DirectionSink, length: int, delivered: int, gaps: list[list[int]],
    gap_count: int, gap_bytes: int, packets: int, payload_bytes: int, retransmitted: int,
    conflicts: int, export_dir: Path | None, digest: str | None = None,
) -> dict:  # fmt: skip
    """A direction's record from the numbers it reads (``digest``: the sink's SHA-256 in
    hex, where it was taken already)."""
    # Bypassed, the hash covers the prefix reassembled before the verdict: a digest of part
    # of a stream would pass for the whole one's, so it is given only if nothing followed.
    whole = length == delivered
    rec: dict[str, Any] = {
        "bytes": length,
        "sha256": (digest or sink.sha.hexdigest()) if sink.hashed and whole else None,
        "gaps": gaps,
        "gap_count": gap_count,
        "gap_bytes": gap_bytes,
        "packets": packets,
        "payload_bytes": payload_bytes,
        "retransmitted_bytes": retransmitted,
        "overlap_conflicts": conflicts,
    }
    if bypassed:
        rec["hashed_bytes"] = delivered if sink.hashed else 0
    if sink.path is not None and export_dir is not None:
        rec["file"] = str(sink.path.relative_to(export_dir))
    if sink.chunks is not None:
        rec["data"] = b"".join(sink.chunks)
    return rec


def _limits(conn: Connection) -> dict[str, int]:
    """The limits that bit this connection (kind -> times), both directions together."""
    if not (conn.c.stream.limits or conn.s.stream.limits):
        return {}
    out: dict[str, int] = {}
    for ep in (conn.c, conn.s):
        for kind, n in (ep.stream.limits or {}).items():
            out[kind] = out.get(kind, 0) + n
    return dict(sorted(out.items()))


def iso_time(ts: float) -> str:
    """Capture time as EVE writes it (ISO 8601, microseconds, UTC offset without a colon),
    which Filebeat's suricata module and jq recipes parse."""
    whole = math.floor(ts)
    micro = round((ts - whole) * 1e6)
    if micro == 1_000_000:
        whole, micro = whole + 1, 0
    return f"{_iso_second(whole)}.{micro:06d}+0000"


@functools.lru_cache(maxsize=4096)
def _iso_second(whole: int) -> str:
    return utc_second(whole)


def flow_record(conn: Connection, export_dir: Path | None = None, seed: int = 0) -> dict:
    """The JSON object of one finished connection (schema in README.md)."""
    assert conn.close is not None
    born = conn.born
    if born is not None and born.ended is not None:  # ended plain (stack/fastpath.py detach)
        c2s, s2c = _ended_direction_records(
            ended_directions(born.ended, conn.bypassed), conn.bypassed, born.sinks, export_dir
        )  # fmt: skip
        limits: dict[str, int] = {}
    else:
        c2s = direction_record(conn, Direction.C2S, export_dir)
        s2c = direction_record(conn, Direction.S2C, export_dir)
        limits = _limits(conn)
    client_mss, server_mss, sack = conn.syn_facts()
    rec = _record(
        conn.id, conn.start, conn.client, conn.server, seed, conn.midstream, conn.vlans,
        conn.last_seen, conn.close, conn.handshake, c2s, s2c,
        dict(sorted(conn.anomalies.items())) if conn.anomalies else {}, limits,
        (client_mss, server_mss, conn.wscale_ok, conn.ts_ok, sack),
    )  # fmt: skip
    if conn.tunnel:
        rec["tunnel"] = conn.tunnel
    return rec


def ended_record(facts: EndedFacts, close: CloseReason, seed: int = 0) -> dict:
    """flow_record of a light flow that ended plain (stack/events.py FlowEnded), from its
    facts (stack/fastpath.py ended_facts): no connection made, no sinks, no tunnel, no
    anomaly or limit (it would not have ended plain)."""
    vlans, caddr, cport, saddr, sport = split_key(facts.keys[0])
    c2s, s2c = _ended_direction_records(facts.directions, facts.bypassed, None, None)
    return _record(
        facts.conn_id, facts.start, (caddr, cport), (saddr, sport), seed, False, vlans,
        facts.last_seen, close, facts.handshake, c2s, s2c, {}, {},
        (facts.client_mss, facts.server_mss, facts.wscale_ok, facts.ts_ok,
         facts.sack_permitted),
    )  # fmt: skip


def _record(
    conn_id: int, start: float, client: tuple[bytes, int], server: tuple[bytes, int],
    seed: int, midstream: bool, vlans: tuple[int, ...], end: float, close: CloseReason,
    handshake: bool, c2s: dict, s2c: dict, anomalies: dict[str, int], limits: dict[str, int],
    tcp: tuple[int | None, int | None, bool, bool, bool],
) -> dict:  # fmt: skip
    """The record's object from what it reads (tcp: the client's and server's MSS, whether
    window scaling and timestamps were in force, whether SACK was permitted both ways)."""
    (caddr, cport), (saddr, sport) = client, server
    client_mss, server_mss, wscale_ok, ts_ok, sack = tcp
    return {
        "id": conn_id,
        "timestamp": iso_time(start),
        "client": format_endpoint(caddr, cport),
        "server": format_endpoint(saddr, sport),
        "community_id": community_id(caddr, cport, saddr, sport, seed),
        "midstream": midstream,
        "vlan": list(vlans),
        "start": start,
        "end": end,
        "close": close.value,
        "handshake": handshake,
        "c2s": c2s,
        "s2c": s2c,
        "anomalies": anomalies,
        "limits": limits,
        "tcp": {
            "client_mss": client_mss,
            "server_mss": server_mss,
            "window_scaling": wscale_ok,
            "timestamps": ts_ok,
            "sack_permitted": sack,
        },
    }
