"""MQTT: the client's first packet is CONNECT.

    0x10, remaining length (varint, 1-4 bytes),
    protocol name: 00 04 "MQTT" (level 4 = 3.1.1, level 5 = 5.0) or 00 06 "MQIsdp" (level 3),
    level (1), connect flags (1, bit 0 reserved = 0), keep alive (2),
    [MQTT 5: properties length (varint) + properties],
    payload: client id (2-byte length + UTF-8), ...
Findings: client_id, protocol_level.
"""

from __future__ import annotations

from ..api import NEED_MORE, NO_MATCH, Detection, FlowView, Match, Plugin

CONNECT = 0x10
NAMES = {b"\x00\x04MQTT": (4, 5), b"\x00\x06MQIsdp": (3,)}
MAX_REMAINING = 268_435_455  # the largest 4-byte varint


class _Short(Exception):
    """The bytes end before the packet does: a valid prefix so far."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """MQTT variable byte integer at ``pos``: (value, position after). At most four bytes."""
    value = 0
    for i in range(4):
        if pos + i >= len(buf):
            raise _Short
        b = buf[pos + i]
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            return value, pos + i + 1
    raise ValueError("varint longer than four bytes")


def parse_connect(buf: bytes) -> tuple[str, int]:
    """(client_id, protocol_level) of a CONNECT at the start of ``buf``.
    Raises _Short for a valid prefix, ValueError when it is not one."""
    if not buf:
        raise _Short
    if buf[0] != CONNECT:  # the low nibble (flags) of CONNECT must be zero
        raise ValueError("not CONNECT")
    remaining, pos = _varint(buf, 1)
    end = pos + remaining  # the packet's end; every field must fit inside it
    name = buf[pos : pos + 8]
    # The first candidate consistent with the bytes so far (both start 00 0x, so a partial
    # name keeps the first; a complete one selects exactly one).
    proto = next((p for p in NAMES if p.startswith(name[: len(p)])), None)
    if proto is None:
        raise ValueError("bad protocol name")
    levels = NAMES[proto]
    header = len(proto) + 4  # name, level, flags, keep alive
    if remaining < header + 2:
        raise ValueError("too short for CONNECT")
    if len(buf) < pos + len(proto) + 1:
        raise _Short
    pos += len(proto)
    level = buf[pos]
    if level not in levels:
        raise ValueError("bad protocol level")
    if len(buf) < pos + 4:
        raise _Short
    if buf[pos + 1] & 0x01:
        raise ValueError("reserved connect flag set")
    pos += 4  # level, flags, keep alive
    if level == 5:
        props, pos = _varint(buf, pos)
        pos += props  # properties are skipped, not parsed: only their length matters
        if pos + 2 > end:
            raise ValueError("properties overrun the packet")
    if len(buf) < pos + 2:
        raise _Short
    id_len = int.from_bytes(buf[pos : pos + 2], "big")
    pos += 2
    if pos + id_len > end:
        raise ValueError("client id overruns the packet")
    if len(buf) < pos + id_len:
        raise _Short
    raw = buf[pos : pos + id_len]
    try:
        client_id = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("client id is not UTF-8") from None
    if "\0" in client_id:
        raise ValueError("NUL in client id")  # forbidden in MQTT UTF-8 strings
    return client_id, level


class Mqtt(Plugin):
    name = "mqtt"
    ports = {1883, 8883}

    def detect(self, flow: FlowView) -> Match | Detection:
        if flow.first_speaker == "server":
            return NO_MATCH  # the broker never speaks before CONNECT
        if not flow.c2s:
            return NEED_MORE if not flow.s2c else NO_MATCH
        try:
            client_id, level = parse_connect(flow.c2s)
        except _Short:
            return NEED_MORE
        except ValueError:
            return NO_MATCH
        return self.match("mqtt", client_id=client_id, protocol_level=level)
