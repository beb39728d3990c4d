"""The live view's filter: space-separated terms, all of which must match a flow.

    proto:tls port:443 host:*.example.com verdict:block state:EST  shop

``field:value`` compares one field; a plain word is a substring of the client, server,
protocol, info, verdict or decider, as before fields existed. Case does not matter.

- ``proto``: the protocol (a glob: ``proto:http*``); ``proto:none`` while undetected
- ``port``: either side's port
- ``host``: a glob over the flow's names (HTTP Host, TLS SNI) and both addresses
- ``sni``: a glob over the TLS server name only
- ``verdict``: ``pass``, ``block`` (also ``would-block``), ``intercept``, ``none`` (undecided)
- ``state``: the state as listed (``EST``, ``FIN``, ``RST``, ``CLOSED``, ``TIMEOUT``, …)
- ``client``, ``server``: a glob over that side's ``ip:port``

Pure: text in, a predicate out; a bad term is a :class:`FilterError` with a one-line message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from .snapshot import FlowRow

FIELDS = ("proto", "port", "host", "sni", "verdict", "state", "client", "server")


class FilterError(ValueError):
    """A term the filter cannot read; str() is the one line to show."""


@dataclass(frozen=True, slots=True)
class Term:
    field: str  # one of FIELDS, or "" for a plain word
    value: str  # lower case


@dataclass(frozen=True, slots=True)
class Filter:
    terms: tuple[Term, ...]

    def __call__(self, row: FlowRow) -> bool:
        return all(_MATCH[t.field](row, t.value) for t in self.terms)


def parse(text: str) -> Filter:
    terms = []
    for word in text.lower().split():
        field, sep, value = word.partition(":")
        if not sep or field not in FIELDS and _looks_like_address(word):
            terms.append(Term("", word))  # "10.0.0.1:443", "[::1]:80", "fe80::1": plain words
            continue
        if field not in FIELDS:
            raise FilterError(f"unknown field {field!r} in {word!r} (fields: {' '.join(FIELDS)})")
        if not value:
            raise FilterError(f"{field}: needs a value, as {field}:{_EXAMPLE[field]}")
        if field == "port" and not (value.isdigit() and int(value) <= 65535):
            raise FilterError(f"port: {value!r} is not a port number (0-65535)")
        terms.append(Term(field, value))
    return Filter(tuple(terms))


def _looks_like_address(word: str) -> bool:
    field = word.partition(":")[0]
    return word.count(":") > 1 or not field.isalpha()


_EXAMPLE = {"proto": "tls", "port": "443", "host": "*.example.com", "sni": "*.example.com",
            "verdict": "block", "state": "EST", "client": "10.0.0.5:*",
            "server": "*:443"}  # fmt: skip


def _port(endpoint: str) -> int:
    port = endpoint.rpartition(":")[2]
    return int(port) if port.isdigit() else -1


def _host(endpoint: str) -> str:
    return endpoint.rpartition(":")[0].strip("[]").lower()


def _names(row: FlowRow) -> list[str]:
    out = [_host(row.client), _host(row.server)]
    for key in ("host", "sni"):
        value = row.findings.get(key)
        if isinstance(value, str):
            out.append(value.lower())
    return out


def _substring(row: FlowRow, word: str) -> bool:
    hay = " ".join(
        (row.client, row.server, row.protocol or "", row.info, row.verdict or "",
         row.decided_by or "")
    ).lower()  # fmt: skip
    return word in hay


def _verdict(row: FlowRow, value: str) -> bool:
    if row.verdict is None:
        return value in ("none", "undecided")
    v = row.verdict.lower()
    return fnmatchcase(v, value) or v.removeprefix("would-") == value


def _sni(row: FlowRow, value: str) -> bool:
    sni = row.findings.get("sni")
    return isinstance(sni, str) and fnmatchcase(sni.lower(), value)


_MATCH: dict[str, Callable[[FlowRow, str], bool]] = {
    "": _substring,
    "proto": lambda r, v: fnmatchcase((r.protocol or "none").lower(), v),
    "port": lambda r, v: int(v) in (_port(r.client), _port(r.server)),
    "host": lambda r, v: any(fnmatchcase(n, v) for n in _names(r)),
    "sni": _sni,
    "verdict": _verdict,
    "state": lambda r, v: fnmatchcase(r.state.lower(), v),
    "client": lambda r, v: fnmatchcase(r.client.lower(), v),
    "server": lambda r, v: fnmatchcase(r.server.lower(), v),
}
