"""A streaming pcapng reader (the pcapng draft, IETF opsawg-pcapng) for what libpcap refuses:
sections whose interfaces differ in link type or snap length, nanosecond or custom time
resolution. Reads block by block; never holds the file."""

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


class PcapngError(Exception):
    pass


class _Interface:
    __slots__ = ("linktype", "snaplen", "scale", "offset")

    def __init__(self, linktype: int, snaplen: int, scale: float, offset: int) -> None:
        self.linktype = linktype
        self.snaplen = snaplen
        self.scale = scale  # seconds per timestamp unit
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
            raise PcapngError("truncated block header")
        btype = struct.unpack(endian + "I", head[:4])[0]
        if btype == SHB or int.from_bytes(head[:4], "little") == SHB:
            bom = f.read(4)
            if len(bom) < 4:
                raise PcapngError("truncated section header")
            endian = "<" if struct.unpack("<I", bom)[0] == _BOM else ">"
            if struct.unpack(endian + "I", bom)[0] != _BOM:
                raise PcapngError("bad byte-order magic")
            length = struct.unpack(endian + "I", head[4:])[0]
            if length < 28 or length > _MAX_BLOCK:
                raise PcapngError("bad section header length")
            rest = f.read(length - 12)
            if len(rest) < length - 12:
                raise PcapngError("truncated section header")
            ifaces = []
            continue
        length = struct.unpack(endian + "I", head[4:])[0]
        if length < 12 or length % 4 or length > _MAX_BLOCK:
            raise PcapngError(f"bad block length {length}")
        body = f.read(length - 8)
        if len(body) < length - 8:
            raise PcapngError("file ends inside a block")
        body = body[:-4]  # trailing copy of the length
        if btype == IDB:
            linktype, _res, snaplen = struct.unpack_from(endian + "HHI", body)
            scale, offset = 1e-6, 0
            for code, value in _options(body[8:], endian):
                if code == _OPT_TSRESOL and value:
                    v = value[0]
                    scale = 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0**-v
                elif code == _OPT_TSOFFSET and len(value) == 8:
                    offset = struct.unpack(endian + "q", value)[0]
            ifaces.append(_Interface(linktype, snaplen, scale, offset))
        elif btype in (EPB, PB):
            if btype == EPB:
                iface_id, hi, lo, caplen, wirelen = struct.unpack_from(endian + "IIIII", body)
            else:
                iface_id, _drops, hi, lo, caplen, wirelen = struct.unpack_from(
                    endian + "HHIIII", body
                )
            if iface_id >= len(ifaces) or 20 + caplen > len(body):
                raise PcapngError("packet block names an unknown interface or overruns")
            iface = ifaces[iface_id]
            ts = ((hi << 32) | lo) * iface.scale + iface.offset
            yield ts, body[20 : 20 + caplen], wirelen, iface.linktype
        elif btype == SPB:
            if not ifaces:
                raise PcapngError("simple packet block before any interface")
            wirelen = struct.unpack_from(endian + "I", body)[0]
            iface = ifaces[0]
            caplen = min(wirelen, iface.snaplen or wirelen, len(body) - 4)
            yield 0.0, body[4 : 4 + caplen], wirelen, iface.linktype
        # other blocks (name resolution, statistics, custom) carry no packets


def _options(raw: bytes, endian: str) -> Iterator[tuple[int, bytes]]:
    pos = 0
    while pos + 4 <= len(raw):
        code, length = struct.unpack_from(endian + "HH", raw, pos)
        if code == 0:
            return
        yield code, raw[pos + 4 : pos + 4 + length]
        pos += 4 + length + (-length % 4)
