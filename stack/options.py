"""TCP options (RFC 9293 §3.2): MSS, window scale and timestamps (RFC 7323), SACK (RFC 2018)."""

from __future__ import annotations

from typing import NamedTuple

_EOL, _NOP, _MSS, _WSCALE, _SACK_PERM, _SACK, _TS = 0, 1, 2, 3, 4, 5, 8


class TcpOptions(NamedTuple):  # a tuple: built for every SYN, so cheap to make
    mss: int | None = None
    wscale: int | None = None
    sack_permitted: bool = False
    tsval: int | None = None
    tsecr: int | None = None
    malformed: bool = False


def parse_options(raw: bytes) -> TcpOptions:
    """Parse the options bytes of one segment; a malformed list stops parsing and says so."""
    mss = wscale = tsval = tsecr = None
    sack_perm = False
    i = 0
    n = len(raw)
    while i < n:
        kind = raw[i]
        if kind == _EOL:
            break
        if kind == _NOP:
            i += 1
            continue
        if i + 1 >= n or raw[i + 1] < 2 or i + raw[i + 1] > n:
            return TcpOptions(mss, wscale, sack_perm, tsval, tsecr, malformed=True)
        length = raw[i + 1]
        body = raw[i + 2 : i + length]
        if kind == _MSS and length == 4:
            mss = int.from_bytes(body, "big")
        elif kind == _WSCALE and length == 3:
            wscale = min(body[0], 14)  # RFC 7323 §2.3: larger values are treated as 14
        elif kind == _SACK_PERM and length == 2:
            sack_perm = True
        elif kind == _TS and length == 10:
            tsval = int.from_bytes(body[:4], "big")
            tsecr = int.from_bytes(body[4:], "big")
        i += length
    return TcpOptions(mss, wscale, sack_perm, tsval, tsecr)


def timestamp(raw: bytes) -> int | None:
    """Just TSval, without building a TcpOptions: the common NOP NOP TS list first (only when
    that is the whole list: with more options, the last timestamp option wins, as in
    parse_options and Linux's tcp_parse_options)."""
    if len(raw) == 12 and raw[0] == _NOP and raw[1] == _NOP and raw[2] == _TS and raw[3] == 10:
        return int.from_bytes(raw[4:8], "big")
    return parse_options(raw).tsval if raw else None
