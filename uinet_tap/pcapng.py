"""A streaming pcapng reader (the pcapng draft, IETF opsawg-pcapng) for what libpcap refuses:
sections whose interfaces differ in link type or snap length, nanosecond or custom time
resolution. Reads block by block; never holds the file.

Nothing in a block is trusted: each block's length is checked against its type's fixed fields,
against its trailing copy and against the file, each option against its block; whatever does
not fit is a :class:`PcapngError` naming the block, after every packet before it was yielded.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

SHB = 0x0A0D0D0A
IDB = 1
PB = 2  # obsolete Packet Block
SPB = 3
EPB = 6
_BOM = 0x1A2B3C4D
_OPT_TSRESOL = 9
_OPT_TSOFFSET = 14
_MAX_BLOCK = 256 << 20
_NAMES = {SHB: "section header", IDB: "interface description", PB: "packet",
          SPB: "simple packet", EPB: "enhanced packet"}  # fmt: skip
# Bytes of fixed fields after the 8-byte block header, before options or packet data
# (section header: byte-order magic, version, section length).
FIXED = {SHB: 16, IDB: 8, PB: 20, SPB: 4, EPB: 20}


class PcapngError(Exception):
    pass


class _Interface:
    __slots__ = ("linktype", "snaplen", "units", "offset")

    def __init__(self, linktype: int, snaplen: int, units: int, offset: int) -> None:
        self.linktype = linktype
        self.snaplen = snaplen
        self.units = units  # timestamp units per second
        self.offset = offset


def is_pcapng(head: bytes) -> bool:
    return len(head) >= 4 and int.from_bytes(head[:4], "little") == SHB


def read_packets(f: BinaryIO) -> Iterator[tuple[float, bytes, int, int]]:
    """Yield ``(ts, frame, wirelen, linktype)``; raise PcapngError on a cut or corrupt block,
    after everything before it was yielded."""
    endian = "<"
    ifaces: list[_Interface] = []
    while True:
        head = f.read(8)
        if not head:
            return
        if len(head) < 8:
            raise PcapngError("the file ends inside a block header")
        if int.from_bytes(head[:4], "little") == SHB:  # the same in either byte order
            endian = _section(f, head)
            ifaces = []
            continue
        btype, length = struct.unpack(endian + "II", head)
        body = _body(f, btype, length, endian)
        if btype == IDB:
            ifaces.append(_interface(body, endian))
        elif btype in (EPB, PB):
            if btype == EPB:
                iface_id, hi, lo, caplen, wirelen = struct.unpack_from(endian + "IIIII", body)
            else:
                iface_id, _drops, hi, lo, caplen, wirelen = struct.unpack_from(
                    endian + "HHIIII", body
                )
            if iface_id >= len(ifaces):
                raise PcapngError(f"{_NAMES[btype]} block names interface {iface_id}, "
                                  f"of {len(ifaces)} described")  # fmt: skip
            if caplen > len(body) - 20:
                raise PcapngError(f"{_NAMES[btype]} block of {length} bytes holds no "
                                  f"{caplen}-byte packet")  # fmt: skip
            iface = ifaces[iface_id]
            # Whole seconds and the fraction apart, as a classic pcap's (sec, usec) are read:
            # the same packet gets the same time from either format.
            sec, frac = divmod((hi << 32) | lo, iface.units)
            ts = (sec + iface.offset) + frac / iface.units
            yield ts, body[20 : 20 + caplen], wirelen, iface.linktype
        elif btype == SPB:
            if not ifaces:
                raise PcapngError("simple packet block before any interface")
            wirelen = struct.unpack_from(endian + "I", body)[0]
            iface = ifaces[0]
            caplen = min(wirelen, iface.snaplen or wirelen, len(body) - 4)
            yield 0.0, body[4 : 4 + caplen], wirelen, iface.linktype
        # other blocks (name resolution, statistics, custom) carry no packets


def _section(f: BinaryIO, head: bytes) -> str:
    """A section header block (its type already read): the section's byte order."""
    rest = f.read(4)
    if len(rest) < 4:
        raise PcapngError("the file ends inside a section header block")
    if int.from_bytes(rest, "little") == _BOM:
        endian = "<"
    elif int.from_bytes(rest, "big") == _BOM:
        endian = ">"
    else:
        raise PcapngError("section header block without the byte-order magic")
    length = struct.unpack(endian + "I", head[4:])[0]
    body = rest + _body(f, SHB, length, endian, already=4)
    major = struct.unpack_from(endian + "H", body, 4)[0]
    if major != 1:
        raise PcapngError(f"pcapng version {major} (only version 1 is defined)")
    return endian


def _body(f: BinaryIO, btype: int, length: int, endian: str, already: int = 0) -> bytes:
    """Read the rest of a block of total ``length`` whose 8-byte header (and ``already``
    more bytes) were read: the bytes between the header and the trailing length, checked."""
    name = _NAMES.get(btype, f"type {btype:#x}")
    if length % 4 or length > _MAX_BLOCK:
        raise PcapngError(f"{name} block with a bad length ({length})")
    if length < 12 + FIXED.get(btype, 0):
        raise PcapngError(f"{name} block of {length} bytes is shorter than its fixed fields")
    want = length - 8 - already
    data = f.read(want)
    if len(data) < want:
        raise PcapngError(f"the file ends inside a {name} block")
    if struct.unpack_from(endian + "I", data, want - 4)[0] != length:
        raise PcapngError(f"{name} block: its two lengths disagree")
    return data[:-4]


def _interface(body: bytes, endian: str) -> _Interface:
    linktype, _res, snaplen = struct.unpack_from(endian + "HHI", body)
    units, offset = 1_000_000, 0
    for code, value in _options(body, 8, endian):
        if code == _OPT_TSRESOL:
            if len(value) != 1:
                raise PcapngError(f"if_tsresol option of {len(value)} bytes (1 expected)")
            v = value[0]
            units = 2 ** (v & 0x7F) if v & 0x80 else 10**v
        elif code == _OPT_TSOFFSET:
            if len(value) != 8:
                raise PcapngError(f"if_tsoffset option of {len(value)} bytes (8 expected)")
            offset = struct.unpack(endian + "q", value)[0]
    return _Interface(linktype, snaplen, units, offset)


def _options(raw: bytes, pos: int, endian: str) -> Iterator[tuple[int, bytes]]:
    """The options from ``pos`` to the end of a block body. Each takes at least 4 bytes, so
    the loop is bounded by the block; one that overruns its block is an error."""
    end = len(raw)
    while pos < end:
        if end - pos < 4:
            raise PcapngError("an option header overruns its block")
        code, length = struct.unpack_from(endian + "HH", raw, pos)
        if code == 0:  # opt_endofopt
            return
        pos += 4
        if length > end - pos:
            raise PcapngError(f"option {code} of {length} bytes overruns its block")
        yield code, raw[pos : pos + length]
        pos += length + (-length % 4)
