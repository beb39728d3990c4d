"""Per-connection pcap files (``--export-pcap DIR``): each connection's own frames, both
directions, with their capture times and link type, through a bounded set of open files; and
``--pcap-for``, which keeps only the files of connections whose record matches."""

from __future__ import annotations

import fnmatch
import ipaddress
import struct
from collections import Counter, OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .records import flow_filename
from .stack.connection import Connection

SNAPLEN = 262144
_HEADER = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")


class SelectorError(ValueError):
    """A --pcap-for expression that does not parse: the message names the bad term."""


def _ip(endpoint: str) -> str:
    return endpoint.rpartition(":")[0].strip("[]")


def _port(endpoint: str) -> int:
    return int(endpoint.rpartition(":")[2])


def _names(rec: dict) -> list[str]:
    """Host names a record knows: TLS SNI, HTTP Host (without a port)."""
    f = rec.get("findings") or {}
    out = []
    for key in ("sni", "host"):
        v = f.get(key)
        if isinstance(v, str):
            out.append(v.rsplit(":", 1)[0] if key == "host" and "]" not in v else v)
    return out


def _host_term(value: str) -> Callable[[dict], bool]:
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        pattern = value.lower()
        return lambda rec: any(fnmatch.fnmatchcase(n.lower(), pattern) for n in _names(rec))

    def match(rec: dict) -> bool:
        return any(ipaddress.ip_address(_ip(rec[side])) in net for side in ("client", "server"))

    return match


def _port_term(value: str) -> Callable[[dict], bool]:
    if not value.isdigit() or int(value) > 65535:
        raise SelectorError(f"port:{value}: not a port number")
    port = int(value)
    return lambda rec: port in (_port(rec["client"]), _port(rec["server"]))


def _field_term(key: str) -> Callable[[str], Callable[[dict], bool]]:
    def make(value: str) -> Callable[[dict], bool]:
        return lambda rec: str(rec.get(key)) == value

    return make


_TERMS: dict[str, Callable[[str], Callable[[dict], bool]]] = {
    "proto": _field_term("protocol"),
    "verdict": _field_term("verdict"),
    "close": _field_term("close"),
    "host": _host_term,
    "port": _port_term,
}


def parse_selector(expr: str) -> Callable[[dict], bool]:
    """``key:value`` terms, all of which must hold: ``proto:tls`` (the record's protocol),
    ``port:443`` (either end), ``host:10.0.0.0/8`` (either address in the network) or
    ``host:*.example.com`` (the SNI or HTTP Host, shell wildcards), ``verdict:would-block``,
    ``close:rst``. A term may be negated with a leading ``!``."""
    tests: list[tuple[bool, Callable[[dict], bool]]] = []
    for term in expr.split():
        negate = term.startswith("!")
        key, sep, value = term.lstrip("!").partition(":")
        if not sep or not value or key not in _TERMS:
            raise SelectorError(f"{term!r}: expected one of {', '.join(_TERMS)} as key:value")
        tests.append((negate, _TERMS[key](value)))
    if not tests:
        raise SelectorError("an empty expression")
    return lambda rec: all(t(rec) != negate for negate, t in tests)


class FlowPcaps:
    """Writes each connection's frames to DIR/<client>-<server>.pcap (tcpflow's naming, as the
    stream files), at most ``max_open`` files open at once (one reopened to append)."""

    def __init__(
        self, directory: Path, keep: Callable[[dict], bool] | None = None, max_open: int = 128
    ) -> None:
        self.dir = directory
        self.keep = keep
        self.max_open = max_open
        self._open: OrderedDict[int, BinaryIO] = OrderedDict()
        self._paths: dict[int, Path] = {}
        self._names: Counter[str] = Counter()
        self.written = 0  # files kept
        self.dropped = 0  # files removed because the record did not match --pcap-for

    def write(self, conn: Connection, ts: float, frame: bytes, linktype: int, wirelen: int) -> None:
        f = self._open.get(conn.id)
        if f is None:
            f = self._reopen(conn, linktype)
        else:
            self._open.move_to_end(conn.id)
        sec = int(ts)
        usec = min(round((ts - sec) * 1e6), 999_999)
        f.write(_RECORD.pack(sec & 0xFFFFFFFF, usec, len(frame), max(wirelen, len(frame))))
        f.write(frame)

    def _reopen(self, conn: Connection, linktype: int) -> BinaryIO:
        if len(self._open) >= self.max_open:
            self._open.popitem(last=False)[1].close()
        path = self._paths.get(conn.id)
        if path is None:
            name = flow_filename(conn.client, conn.server)
            if conn.vlans:
                name += "--vlan" + ".".join(str(v) for v in conn.vlans)
            seen = self._names[name]
            self._names[name] += 1
            path = self.dir / (f"{name}c{seen}.pcap" if seen else f"{name}.pcap")
            self._paths[conn.id] = path
            f: BinaryIO = open(path, "wb")  # noqa: SIM115 (pooled)
            # A connection's frames share one link type: the file takes the first one's.
            f.write(_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, linktype))
        else:
            f = open(path, "ab")  # noqa: SIM115 (pooled)
        self._open[conn.id] = f
        return f

    def finish(self, conn: Connection, rec: dict) -> None:
        """The connection ended: close its file, and keep it only if the record matches."""
        f = self._open.pop(conn.id, None)
        if f is not None:
            f.close()
        path = self._paths.pop(conn.id, None)
        if path is None:
            return
        if self.keep is not None and not self.keep(rec):
            path.unlink(missing_ok=True)
            self.dropped += 1
            return
        self.written += 1
        rec["pcap"] = path.name

    def close(self) -> None:
        while self._open:
            self._open.popitem()[1].close()
